"""What the server answers, as its OpenAPI schema (``GET /openapi.json``) declares it.

Every route lists each status it can answer with, and the body of each: the 200 bodies in OpenAI's shapes
(the models below mirror :mod:`rewardlab.serve.responses`), and every error in OpenAI's
``{"error": {...}}`` shape. FastAPI's own 422 is dropped from the schema: this server answers validation
errors with 400, as OpenAI does. A stream (``"stream": true``) is ``text/event-stream``, each event's ``data``
a JSON chunk (or an error, for a stream that fails after it started), then the literal ``[DONE]``.

The schema is checked against the server by ``tests/test_serve_fuzz.py``, which fuzzes every route from it.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict
from pydantic.json_schema import models_json_schema

from rewardlab.serve.limits import ServeLimits

REF = "#/components/schemas/{model}"


class Answer(BaseModel):
    # Forbidding extra fields makes the schema say exactly which fields an answer has.
    model_config = ConfigDict(extra="forbid")


class ErrorDetail(Answer):
    message: str
    type: Literal["invalid_request_error", "server_error"]
    code: str | None
    param: str | None


class ErrorResponse(Answer):
    error: ErrorDetail


class Health(Answer):
    status: Literal["ok"]


class Model(Answer):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    parent: str | None


class ModelList(Answer):
    object: Literal["list"]
    data: list[Model]


class Metrics(Answer):
    requests: int
    batches: int
    mixed_batches: int
    completions: int
    prompt_tokens: int
    completion_tokens: int
    largest_batch: int
    failed_batches: int
    abandoned: int
    decode_steps: int
    joined_running: int
    generation_seconds: float
    models: list[str]


class Usage(Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


FinishReason = Literal["stop", "length"]


class TopLogprob(Answer):
    token: str
    logprob: float
    bytes: list[int]


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Answer):
    content: list[TokenLogprob]
    refusal: None


class TextLogprobs(Answer):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class AssistantMessage(Answer):
    role: Literal["assistant"]
    content: str


class ChatChoice(Answer):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason
    token_ids: list[int] | None = None  # with return_token_ids: every generated token


class TextChoice(Answer):
    index: int
    text: str
    logprobs: TextLogprobs | None
    finish_reason: FinishReason
    token_ids: list[int] | None = None  # with return_token_ids: every generated token, and the prompt's
    prompt_token_ids: list[int] | None = None


class ChatCompletion(Answer):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    prompt_token_ids: list[int] | None = None  # with return_token_ids


class TextCompletion(Answer):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage


class ChatDelta(Answer):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChatChunkChoice(Answer):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(Answer):
    """One event of a chat stream; with ``include_usage`` every chunk has ``usage`` (null but the last)."""

    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class TextChunkChoice(Answer):
    index: int
    text: str
    logprobs: TextLogprobs | None
    finish_reason: FinishReason | None


class TextCompletionChunk(Answer):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[TextChunkChoice]
    usage: Usage | None = None


def _error(description: str, headers: dict | None = None) -> dict[str, Any]:
    # Written out rather than as ``"model"``: FastAPI would give an error the route's own media type, and the
    # adapter routes answer text/plain when they succeed, JSON when they do not.
    content = {"application/json": {"schema": {"$ref": REF.format(model=ErrorResponse.__name__)}}}
    return {"description": description, "content": content, **({"headers": headers} if headers else {})}


RETRY_AFTER = {
    "Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "string"}}
}
UNAUTHORIZED = {401: _error("no API key, or the wrong one (`invalid_api_key`)")}
LIMITED = {
    413: _error("the body is over `max_request_bytes` (`request_too_large`)"),
    429: _error("too many requests in flight, or the queue is full (`rate_limit_exceeded`)", RETRY_AFTER),
}
BAD_REQUEST = {400: _error("a field out of range, of the wrong type, or over a limit; `param` names it")}
GENERATION = {
    **BAD_REQUEST,
    404: _error("the model named is not served (`model_not_found`)"),
    500: _error("generation failed (`generation_failed`)"),
}
ADAPTERS = {
    **BAD_REQUEST,
    403: _error("runtime adapters are off, or `lora_path` lies outside the adapter directories"),
}


def documented(*groups: dict, protected: bool, ok: type[BaseModel] | None = None, **extra) -> dict:
    """The ``responses=`` of a route: its 200 (``ok``: its JSON body) and every error it can answer with."""
    declared: dict = {}
    if ok is not None:
        declared[200] = {"model": ok, **extra}
    for group in groups:
        declared.update(group)
    if protected:
        declared.update(LIMITED)
    return declared


STREAMS = {
    "/v1/chat/completions": ChatCompletionChunk,
    "/v1/completions": TextCompletionChunk,
}


def install_openapi(app: FastAPI, limits: ServeLimits, vocab_size: int | None) -> None:
    """Serve the schema as declared, without FastAPI's 422, with the events of each stream and this
    server's own bounds: its limits on ``n`` and ``max_tokens``, and the token ids of its vocabulary."""

    def build() -> dict:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, routes=app.routes)
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name in ("HTTPValidationError", "ValidationError"):
            components.pop(name, None)
        answers = [(model, "serialization") for model in (ErrorResponse, *STREAMS.values())]
        _, definitions = models_json_schema(answers, ref_template=REF)
        components.update(definitions.get("$defs", {}))
        caps = {
            "n": limits.max_n,
            "max_tokens": limits.max_tokens,
            "max_completion_tokens": limits.max_tokens,
        }
        for request in ("ChatCompletionRequest", "CompletionRequest"):
            fields = components[request]["properties"]
            for name, most in caps.items():
                for option in fields.get(name, {}).get("anyOf", []):
                    if option.get("type") == "integer":
                        option["maximum"] = min(option.get("maximum", most), most)
        if vocab_size is not None:
            for option in components["CompletionRequest"]["properties"]["prompt"]["anyOf"]:
                ids = option.get("items", {})
                ids = ids.get("items", ids)  # a list of prompts of token ids, or one
                if ids.get("type") == "integer":
                    ids["maximum"] = vocab_size - 1
        for path, operations in schema["paths"].items():
            for operation in operations.values():
                operation["responses"].pop("422", None)
                if path in STREAMS:
                    operation["responses"]["200"]["content"]["text/event-stream"] = stream_of(STREAMS[path])
        app.openapi_schema = schema
        return schema

    app.openapi = build


def stream_of(chunk: type[BaseModel]) -> dict:
    """One server-sent event (OpenAPI 3.1 describes a stream by its events): a chunk, an error, or [DONE]."""
    data = {
        "anyOf": [
            {"const": "[DONE]"},
            {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {
                    "anyOf": [
                        {"$ref": REF.format(model=chunk.__name__)},
                        {"$ref": REF.format(model="ErrorResponse")},
                    ]
                },
            },
        ]
    }
    return {"schema": {"type": "object", "required": ["data"], "properties": {"data": data}}}


def stream_errors(openapi: dict, path: str, text: str) -> list[str]:
    """What is wrong with a stream the route at ``path`` sent, by the schema ``openapi`` declares: each event
    JSON matching its chunk (or error) schema, the last one ``[DONE]``. OpenAPI 3.1 tools read the events'
    ``contentSchema`` as a comment; the fuzzing tests and benchmark check it with this."""
    import jsonschema

    data = openapi["paths"][path]["post"]["responses"]["200"]["content"]["text/event-stream"]["schema"]
    chunk = next(
        option["contentSchema"] for option in data["properties"]["data"]["anyOf"] if "contentSchema" in option
    )
    validator = jsonschema.Draft202012Validator({**chunk, "components": openapi["components"]})
    events = [event.removeprefix("data: ") for event in text.split("\n\n") if event]
    errors = [] if events and events[-1] == "[DONE]" else ["the stream does not end with [DONE]"]
    for event in events[:-1]:
        try:
            problem = jsonschema.exceptions.best_match(validator.iter_errors(json.loads(event)))
        except json.JSONDecodeError as error:
            errors.append(f"an event is not JSON ({error}): {event[:200]}")
            continue
        if problem is not None:
            errors.append(f"an event does not match the schema ({problem.message}): {event[:200]}")
    return errors
