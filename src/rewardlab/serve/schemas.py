"""Request bodies of the OpenAI-compatible routes, validated by pydantic.

Anything out of range (temperature < 0, n < 1, no messages, an empty stop string, a seed beyond 64 bits,
text that is not valid Unicode, a role OpenAI does not know, a malformed ``response_format``) fails
validation and is answered 400 in OpenAI's error shape, naming the field. Unknown fields (``user``,
``metadata``) are ignored, as vLLM does, except the few that would change what is sampled and are not
implemented (tools, ...): silently dropping those would hand back completions the client did not ask for, so
a value other than "off" is refused.

The JSON Schemas these models give the server's OpenAPI schema say the same (``WithJsonSchema`` where a
validator accepts more than the type says: a stop string alone, token ids as JSON's string keys); what only
the running server knows (its limits, the vocabulary, the context length) it answers with a 400.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from rewardlab.sampling.structured import parse_response_format

MAX_N = 128  # completions per prompt; a bound so one request cannot take the whole server's memory
MAX_TOP_LOGPROBS = 20  # alternatives listed per token, as vLLM allows by default
MAX_BIAS = 100  # logit_bias values lie in [-100, 100], as OpenAI's do
# torch.Generator.manual_seed takes any integer from -2**63 to 2**64 - 1.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1
# OpenAI's roles ("function" belongs to the function calling that is refused below).
Role = Literal["system", "developer", "user", "assistant", "tool"]

# Fields that change sampling and are not implemented, with the value that means "off".
UNSUPPORTED = {
    "repetition_penalty": 1,
    "tools": [],
    "functions": [],
    "best_of": 1,
    "echo": False,
    "suffix": "",
}


TOKEN_ID_KEY = r"^\s*[0-9]+\s*$"  # logit_bias keys: JSON object keys are strings
STOP = {
    "anyOf": [
        {"type": "string", "minLength": 1},
        {"type": "array", "items": {"type": "string", "minLength": 1}},
    ]
}
BIASES = {
    "type": "object",
    "propertyNames": {"pattern": TOKEN_ID_KEY},
    "additionalProperties": {"type": "number", "minimum": -MAX_BIAS, "maximum": MAX_BIAS},
}
RESPONSE_FORMAT = {
    "anyOf": [
        {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["text", "json_object"]}}},
        {
            "type": "object",
            "required": ["type", "json_schema"],
            "properties": {
                "type": {"const": "json_schema"},
                "json_schema": {
                    "type": "object",
                    "required": ["schema"],
                    "properties": {
                        "name": {"type": "string"},
                        "strict": {"type": ["boolean", "null"]},
                        "schema": {"type": "object"},
                    },
                },
            },
        },
    ]
}
TOKEN_IDS = {"type": "array", "minItems": 1, "items": {"type": "integer", "minimum": 0}}
PROMPT = {
    "anyOf": [
        {"type": "string"},
        {"type": "array", "minItems": 1, "items": {"type": "string"}},
        TOKEN_IDS,
        {"type": "array", "minItems": 1, "items": TOKEN_IDS},
    ]
}


def null_means_default(schema: dict) -> None:
    """The JSON Schema of a request whose optional fields also take null (``_drop_nulls``)."""
    required = set(schema.get("required", []))
    for name, field in schema.get("properties", {}).items():
        if name not in required:
            described = ("title", "default", "description")
            options = field.pop("anyOf", None) or [
                {k: field.pop(k) for k in list(field) if k not in described}
            ]
            for option in options:
                if "default" in option:
                    field["default"] = option.pop("default")
            if {"type": "null"} not in options:
                options.append({"type": "null"})
            field["anyOf"] = options


def valid_text(value):
    """``value`` (a string, or lists and content parts holding strings) if every string is valid Unicode.

    JSON can carry a lone surrogate (``"\\ud800"``), which no tokenizer and no UTF-8 encoder accepts.
    """
    if isinstance(value, str):
        for char in value:
            if "\ud800" <= char <= "\udfff":
                raise ValueError(
                    f"contains a lone surrogate (U+{ord(char):04X}), which is not valid Unicode text"
                )
    elif isinstance(value, list):
        for item in value:
            valid_text(item)
    elif isinstance(value, ContentPart):
        valid_text(value.text)
    return value


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore", json_schema_extra=null_means_default)

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    # vLLM's extension: keep the k likeliest tokens before top_p; 0 or -1 (vLLM's 'off') keep all.
    top_k: int = Field(0, ge=-1)
    max_tokens: int | None = Field(None, ge=1)
    stop: Annotated[list[str], WithJsonSchema(STOP)] = Field(default_factory=list)
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(0.0, ge=-2.0, le=2.0)
    # Token id -> bias; JSON keys are strings. Ids beyond the vocabulary are refused by the route.
    logit_bias: Annotated[dict[int, float], WithJsonSchema(BIASES)] = Field(default_factory=dict)
    # OpenAI's response_format, checked and normalised (None: plain text); enforced while decoding.
    response_format: Annotated[dict | None, WithJsonSchema(RESPONSE_FORMAT)] = None
    # Accepted only at the value that means "off" (UNSUPPORTED).
    repetition_penalty: Annotated[Any, WithJsonSchema({"const": UNSUPPORTED["repetition_penalty"]})] = None
    tools: Annotated[Any, WithJsonSchema({"const": UNSUPPORTED["tools"]})] = None
    functions: Annotated[Any, WithJsonSchema({"const": UNSUPPORTED["functions"]})] = None
    best_of: Annotated[Any, WithJsonSchema({"const": UNSUPPORTED["best_of"]})] = None
    echo: Annotated[Any, WithJsonSchema({"const": UNSUPPORTED["echo"]})] = None
    suffix: Annotated[Any, WithJsonSchema({"const": UNSUPPORTED["suffix"]})] = None
    # vLLM's extension: the answer also carries the prompt's token ids and each completion's, and its
    # log-probs then list every generated token (the end-of-turn token included), as vLLM's do. Not with
    # a stream (validated even when absent).
    return_token_ids: bool = Field(False, validate_default=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data):
        # Clients send null for "use the default"; pydantic would otherwise reject null for a number.
        if not isinstance(data, dict):
            return data
        return {key: value for key, value in data.items() if value is not None}

    @field_validator(*UNSUPPORTED)
    @classmethod
    def _refuse_unsupported(cls, value, info: ValidationInfo):
        off = UNSUPPORTED[info.field_name]
        # true == 1 and 0 == false in Python; in JSON they differ, and only the value meaning "off" is off.
        if value != off or isinstance(value, bool) != isinstance(off, bool):
            raise ValueError(f"not supported by rewardlab serve (only its default, {json.dumps(off)})")
        return value

    @field_validator("model", "stop")
    @classmethod
    def _valid_text(cls, value):
        return valid_text(value)

    @field_validator("return_token_ids")
    @classmethod
    def _no_token_ids_in_streams(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("stream"):
            raise ValueError("not supported with stream: true on rewardlab serve")
        return value

    @field_validator("response_format", mode="before")
    @classmethod
    def _response_format(cls, value):
        return parse_response_format(value)  # a ResponseFormatError is a ValueError: 400 naming the field

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _token_biases(cls, value):
        if not isinstance(value, dict):
            raise ValueError("must map token ids to biases")
        biases = {}
        for key, bias in value.items():
            token = key if isinstance(key, int) and not isinstance(key, bool) else None
            if isinstance(key, str) and re.fullmatch(TOKEN_ID_KEY, key):  # ASCII digits: int() reads those
                token = int(key)
            if token is None or token < 0:
                raise ValueError(f"keys must be token ids (integers from 0), got {key!r}")
            number = isinstance(bias, int | float) and not isinstance(bias, bool)
            if not number or not -MAX_BIAS <= bias <= MAX_BIAS:
                raise ValueError(f"the bias of token {token} must be a number from -100 to 100, got {bias!r}")
            biases[token] = float(bias)
        return biases

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_list(cls, value):
        return [value] if isinstance(value, str) else value

    @field_validator("stop")
    @classmethod
    def _no_empty_stop(cls, value: list[str]) -> list[str]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must not be empty")
        return value

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "if": {"required": ["role"], "properties": {"role": {"const": "tool"}}},
            "then": {
                "required": ["tool_call_id"],
                "properties": {"tool_call_id": {"type": "string", "minLength": 1}},
            },
        },
    )

    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    # A tool message answers one tool call and has to say which (validated even when absent).
    tool_call_id: str | None = Field(None, validate_default=True)

    @field_validator("content", "name")
    @classmethod
    def _valid_text(cls, value):
        return valid_text(value)

    @field_validator("tool_call_id")
    @classmethod
    def _tool_messages_name_their_call(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("role") == "tool" and not value:
            raise ValueError("a message with role 'tool' needs the tool_call_id of the call it answers")
        return valid_text(value)

    def as_dict(self) -> dict[str, str]:
        """The message as the chat template takes it: content parts joined into one string."""
        if isinstance(self.content, list):
            return {"role": self.role, "content": "".join(part.text for part in self.content)}
        return {"role": self.role, "content": self.content or ""}


def chat_request_schema(schema: dict) -> None:
    null_means_default(schema)
    schema["if"] = {
        "required": ["top_logprobs"],
        "properties": {"top_logprobs": {"type": "integer", "minimum": 1}},
    }
    schema["then"] = {"required": ["logprobs"], "properties": {"logprobs": {"const": True}}}


class ChatCompletionRequest(SamplingRequest):
    model_config = ConfigDict(json_schema_extra=chat_request_schema)

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens
    logprobs: bool = False
    # Alternatives listed for each token; needs logprobs (validated even when absent).
    top_logprobs: int = Field(0, ge=0, le=MAX_TOP_LOGPROBS, validate_default=True)

    @field_validator("top_logprobs")
    @classmethod
    def _only_with_logprobs(cls, value: int, info: ValidationInfo) -> int:
        if value and not info.data.get("logprobs"):
            raise ValueError("needs logprobs: true")
        return value

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs

    @property
    def alternatives(self) -> int:
        return self.top_logprobs


class CompletionRequest(SamplingRequest):
    prompt: Annotated[str | list[str] | list[int] | list[list[int]], WithJsonSchema(PROMPT)]
    # The number of alternatives to list for each token: 0 lists the sampled tokens' log-probabilities only.
    logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs is not None

    @property
    def alternatives(self) -> int:
        return self.logprobs or 0

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return valid_text(value)

    def prompts(self) -> list[str | list[int]]:
        """One entry per prompt: a string, or token ids."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(item, int) for item in self.prompt):
            return [list(self.prompt)]
        return list(self.prompt)


class LoadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lora_name: str = Field(min_length=1)
    lora_path: str = Field(min_length=1, json_schema_extra={"pattern": "^[^\\u0000]*$"})  # see _no_nul

    @field_validator("lora_name", "lora_path")
    @classmethod
    def _valid_text(cls, value: str) -> str:
        return valid_text(value)

    @field_validator("lora_path")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        # No path can hold one; the operating system refuses it with a ValueError, not an OSError.
        if "\x00" in value:
            raise ValueError("contains a NUL character, which no path can hold")
        return value


class UnloadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lora_name: str = Field(min_length=1)

    @field_validator("lora_name")
    @classmethod
    def _valid_text(cls, value: str) -> str:
        return valid_text(value)
