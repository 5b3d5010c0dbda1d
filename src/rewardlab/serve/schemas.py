"""Request bodies of the OpenAI-compatible routes, validated by pydantic.

Anything out of range (temperature < 0, n < 1, no messages, an empty stop string) fails validation and is
answered 400 in OpenAI's error shape. Unknown fields (``user``, ``metadata``) are ignored, as vLLM does,
except the few that would change what is sampled (penalties, tools, a response format): silently dropping
those would hand back completions the client did not ask for, so a non-neutral value is refused instead.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_N = 128  # completions per prompt; a bound so one request cannot take the whole server's memory
NO_ALTERNATIVES = "top log-probabilities are not supported: only the sampled token's log-probability is known"

# Fields that change sampling and are not implemented, with the value that means "off".
UNSUPPORTED = {
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "repetition_penalty": 1,
    "logit_bias": {},
    "tools": [],
    "functions": [],
    "response_format": {"type": "text"},
    "best_of": 1,
    "echo": False,
    "suffix": "",
}


class StreamOptions(BaseModel):
    include_usage: bool = False


class SamplingRequest(BaseModel):
    """Fields shared by chat and text completions."""

    model_config = ConfigDict(extra="ignore")

    model: str
    n: int = Field(1, ge=1, le=MAX_N)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_tokens: int | None = Field(None, ge=1)
    stop: list[str] = Field(default_factory=list)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls_and_refuse_unsupported(cls, data):
        if not isinstance(data, dict):
            return data
        for name, off in UNSUPPORTED.items():
            value = data.get(name)
            if value is not None and value != off:
                raise ValueError(f"'{name}' is not supported by rewardlab serve")
        # Clients send null for "use the default"; pydantic would otherwise reject null for a number.
        return {key: value for key, value in data.items() if value is not None}

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
    model_config = ConfigDict(extra="ignore")

    role: str = Field(min_length=1)
    content: str | list[ContentPart] | None = None

    def as_dict(self) -> dict[str, str]:
        """The message as the chat template takes it: content parts joined into one string."""
        if isinstance(self.content, list):
            return {"role": self.role, "content": "".join(part.text for part in self.content)}
        return {"role": self.role, "content": self.content or ""}


class ChatCompletionRequest(SamplingRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)  # the newer name of max_tokens
    logprobs: bool = False
    top_logprobs: int = Field(0, ge=0)

    @field_validator("top_logprobs")
    @classmethod
    def _no_alternatives(cls, value: int) -> int:
        if value:
            raise ValueError(NO_ALTERNATIVES)
        return value

    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    # OpenAI's completions take the number of alternatives to list: 0 asks for the sampled tokens' only.
    logprobs: int | None = Field(None, ge=0)

    @field_validator("logprobs")
    @classmethod
    def _no_alternatives(cls, value: int | None) -> int | None:
        if value:
            raise ValueError(NO_ALTERNATIVES)
        return value

    @property
    def wants_logprobs(self) -> bool:
        return self.logprobs is not None

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return value

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
    lora_path: str = Field(min_length=1)


class UnloadAdapterRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    lora_name: str = Field(min_length=1)
