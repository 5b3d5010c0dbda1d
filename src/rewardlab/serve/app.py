"""The HTTP routes: OpenAI's model list, chat and text completions, and vLLM's runtime adapter routes.

Routes only validate, tokenize and shape answers; the engine decides what is generated together. Every route
but ``/health`` checks the API key when one is set.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from jinja2 import TemplateError

from rewardlab.errors import ResponseFormatError
from rewardlab.sampling.base import Generation
from rewardlab.serve import responses
from rewardlab.serve.batching import Job
from rewardlab.serve.disconnects import answered_before_leaving
from rewardlab.serve.engine import Engine
from rewardlab.serve.errors import (
    APIError,
    GuardedRoute,
    UnknownModelError,
    error_body,
    install_error_handlers,
)
from rewardlab.serve.limits import RequestLimits, ServeLimits, too_busy
from rewardlab.serve.openapi import (
    ADAPTERS,
    GENERATION,
    UNAUTHORIZED,
    ChatCompletion,
    Health,
    Metrics,
    ModelList,
    TextCompletion,
    documented,
    install_openapi,
)
from rewardlab.serve.registry import confined_adapter_path
from rewardlab.serve.schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    LoadAdapterRequest,
    UnloadAdapterRequest,
)
from rewardlab.serve.streaming import TextDeltas

TEXT_COMPLETION_MAX_TOKENS = (
    16  # OpenAI's default for /v1/completions; chat defaults to the rest of the context
)


def key_checker(api_key: str):
    """A dependency that lets a request through only with ``Authorization: Bearer <api_key>`` (declared in
    the OpenAPI schema as an HTTP bearer scheme)."""
    bearer = HTTPBearer(auto_error=False)  # a missing or malformed header is ours to answer, as a 401

    async def check(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        token = credentials.credentials.strip() if credentials else ""
        # compare_digest: the time taken must not tell how much of a guessed key was right.
        if not credentials or not hmac.compare_digest(token.encode(), api_key.encode()):
            raise APIError(401, "Incorrect API key provided.", code="invalid_api_key")

    return check


def create_app(
    engine: Engine,
    api_key: str | None = None,
    limits: ServeLimits | None = None,
    adapter_dirs: list[str] | None = None,
) -> FastAPI:
    """The app over ``engine``. ``adapter_dirs``: the directories runtime adapter loads may read from;
    ``None`` turns the load and unload routes off."""
    limits = limits or ServeLimits()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine.start()  # the batching loop lives on the server's event loop
        yield
        await engine.stop()

    app = FastAPI(title="rewardlab serve", lifespan=lifespan)
    app.router.route_class = GuardedRoute
    install_error_handlers(app)
    install_openapi(app, limits, getattr(engine.models.model.config, "vocab_size", None))
    app.add_middleware(RequestLimits, limits=limits)
    # Without a key nothing is checked, and the schema declares no security for the routes.
    keyed = {"dependencies": [Depends(key_checker(api_key))]} if api_key else {}
    protected = APIRouter(route_class=GuardedRoute, **keyed)
    key_answers = UNAUTHORIZED if api_key else {}
    models = engine.models
    started = int(time.time())

    @app.get("/health", response_model=None, responses=documented(ok=Health, protected=False))
    async def health() -> dict:
        return {"status": "ok"}

    @protected.get(
        "/metrics", response_model=None, responses=documented(key_answers, ok=Metrics, protected=True)
    )
    async def metrics() -> dict:
        return {**engine.metrics.as_dict(), "models": models.names}

    @protected.get(
        "/v1/models", response_model=None, responses=documented(key_answers, ok=ModelList, protected=True)
    )
    async def list_models() -> dict:
        data = [
            {
                "id": name,
                "object": "model",
                "created": started,
                "owned_by": "rewardlab",
                "root": models.paths.get(name, name),
                "parent": None if name == models.base_name else models.base_name,
            }
            for name in models.names
        ]
        return {"object": "list", "data": data}

    @protected.post(
        "/v1/chat/completions",
        responses=documented(GENERATION, key_answers, ok=ChatCompletion, protected=True),
    )
    async def chat_completions(request: ChatCompletionRequest, http: Request):
        models.adapter_of(request.model)  # an unknown model is a 404 before any work
        try:
            prompt = engine.sampler.renderer.prompt_ids([m.as_dict() for m in request.messages])
        except TemplateError as error:
            raise APIError(
                400, f"messages: the chat template refused them: {error}", param="messages"
            ) from None
        max_tokens = token_budget(engine, [prompt], request, None, "messages", limits)
        await check_response_format(engine, request)
        job = submit(engine, request, [prompt], max_tokens, limits)
        if request.stream:
            events = stream_events(engine, job, request, [prompt], chat=True)
            return StreamingResponse(events, media_type="text/event-stream")
        outputs = outputs_of(engine, await completions_of(job, http.receive), request.return_token_ids)
        return responses.completion(
            responses.new_id("chatcmpl"),
            request.model,
            outputs,
            responses.usage([prompt], outputs),
            _logprobs(engine, outputs, request, chat=True),
            chat=True,
            token_ids=request.return_token_ids,
        )

    @protected.post(
        "/v1/completions", responses=documented(GENERATION, key_answers, ok=TextCompletion, protected=True)
    )
    async def completions(request: CompletionRequest, http: Request):
        models.adapter_of(request.model)
        prompts = [tokenize_prompt(engine, prompt) for prompt in request.prompts()]
        max_tokens = token_budget(engine, prompts, request, TEXT_COMPLETION_MAX_TOKENS, "prompt", limits)
        await check_response_format(engine, request)
        job = submit(engine, request, prompts, max_tokens, limits)
        if request.stream:
            events = stream_events(engine, job, request, prompts, chat=False)
            return StreamingResponse(events, media_type="text/event-stream")
        outputs = outputs_of(engine, await completions_of(job, http.receive), request.return_token_ids)
        return responses.completion(
            responses.new_id("cmpl"),
            request.model,
            outputs,
            responses.usage(prompts, outputs),
            _logprobs(engine, outputs, request, chat=False),
            chat=False,
            token_ids=request.return_token_ids,
        )

    def runtime_adapters_allowed() -> list[str]:
        if adapter_dirs is None:
            raise APIError(
                403,
                "loading and unloading adapters at runtime is off on this server (start it with "
                "--allow-runtime-adapters --adapter-dir DIR)",
                code="runtime_adapters_disabled",
            )
        return adapter_dirs

    adapter_answers = documented(ADAPTERS, key_answers, protected=True)

    @protected.post("/v1/load_lora_adapter", response_class=PlainTextResponse, responses=adapter_answers)
    async def load_lora_adapter(request: LoadAdapterRequest):
        path = confined_adapter_path(request.lora_path, runtime_adapters_allowed())
        await engine.load_adapter(request.lora_name, path)
        return PlainTextResponse(f"Success: LoRA adapter '{request.lora_name}' added successfully.")

    @protected.post(
        "/v1/unload_lora_adapter",
        response_class=PlainTextResponse,
        responses={**adapter_answers, 404: GENERATION[404]},
    )
    async def unload_lora_adapter(request: UnloadAdapterRequest):
        runtime_adapters_allowed()
        await engine.unload_adapter(request.lora_name)
        return PlainTextResponse(f"Success: LoRA adapter '{request.lora_name}' removed successfully.")

    app.include_router(protected)
    return app


def tokenize_prompt(engine: Engine, prompt: str | list[int]) -> list[int]:
    """A text prompt as the tokenizer encodes it (with its BOS token, if it has one); ids as given."""
    if isinstance(prompt, str):
        ids = engine.models.tokenizer(prompt)["input_ids"]
    else:
        vocab_size = getattr(engine.models.model.config, "vocab_size", None)
        if vocab_size is not None and any(not 0 <= token < vocab_size for token in prompt):
            raise APIError(400, f"prompt: token ids must lie in [0, {vocab_size})", param="prompt")
        ids = list(prompt)
    if not ids:
        raise APIError(400, "prompt: the prompt is empty (it has no tokens)", param="prompt")
    return ids


def token_budget(
    engine: Engine, prompts: list[list[int]], request, default: int | None, param: str, limits: ServeLimits
) -> int:
    """``max_tokens`` for the request: as requested (at most ``limits.max_tokens``), else ``default``, else
    the rest of the context, at most ``limits.max_tokens``.

    Prompt plus completion must fit the model's context (``max_position_embeddings``): beyond it the
    position embeddings run out, so the request is refused rather than answered with nonsense.
    """
    requested = getattr(request, "token_limit", request.max_tokens)
    if requested is not None and requested > limits.max_tokens:
        name = "max_tokens" if request.max_tokens is not None else "max_completion_tokens"
        raise APIError(
            400,
            f"{name}: at most {limits.max_tokens} tokens per completion on this server, got {requested}",
            code="invalid_request",
            param=name,
        )
    limit = engine.models.context_length
    longest = max(len(ids) for ids in prompts)
    if requested is not None:
        max_tokens = requested
    elif default is not None:
        max_tokens = default
    else:
        max_tokens = max(limit - longest, 1) if limit else 256
    max_tokens = min(max_tokens, limits.max_tokens)
    if limit is not None and longest + max_tokens > limit:
        raise APIError(
            400,
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{longest + max_tokens} tokens ({longest} in the {param}, {max_tokens} for the completion). "
            f"Please reduce the length of the {param} or max_tokens.",
            code="context_length_exceeded",
            param=param,
        )
    return max_tokens


def format_error(error: ResponseFormatError) -> APIError:
    return APIError(400, f"response_format: {error}", code="invalid_request", param="response_format")


async def check_response_format(engine: Engine, request) -> None:
    try:
        await engine.check_response_format(request.response_format)
    except ResponseFormatError as error:
        raise format_error(error) from None


def submit(engine: Engine, request, prompts: list[list[int]], max_tokens: int, limits: ServeLimits) -> Job:
    vocab_size = getattr(engine.models.model.config, "vocab_size", None)
    if vocab_size is not None and any(token >= vocab_size for token in request.logit_bias):
        raise APIError(
            400,
            f"logit_bias: token ids must lie in [0, {vocab_size})",
            code="invalid_request",
            param="logit_bias",
        )
    if request.n > limits.max_n:
        raise APIError(
            400,
            f"n: at most {limits.max_n} completions per prompt on this server, got {request.n}",
            code="invalid_request",
            param="n",
        )
    rows = len(prompts) * request.n
    if rows > limits.max_queued_completions:
        raise APIError(
            400,
            f"this request asks for {rows} completions ({len(prompts)} prompts, n = {request.n}); the server "
            f"takes at most {limits.max_queued_completions} at once",
            code="invalid_request",
            param="n",
        )
    if engine.queued_completions + rows > limits.max_queued_completions:
        raise too_busy(
            f"the queue is full ({engine.queued_completions} completions waiting, at most "
            f"{limits.max_queued_completions}); retry later"
        )
    return engine.submit(
        model=request.model,
        prompts=prompts,
        n=request.n,
        temperature=request.temperature,
        top_p=request.top_p,
        top_k=max(request.top_k, 0),
        max_tokens=max_tokens,
        stop=request.stop,
        seed=request.seed,
        stream=request.stream,
        logprobs=request.wants_logprobs,
        top_logprobs=request.alternatives if request.wants_logprobs else 0,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
        logit_bias=request.logit_bias,
        response_format=request.response_format,
    )


async def completions_of(job: Job, receive) -> list[Generation]:
    if not await answered_before_leaving(job, receive):
        # Nobody reads this answer; the job was cancelled so that the engine does not generate it.
        raise APIError(499, "the client closed the request before its answer", code="client_closed_request")
    try:
        return await job.future
    except UnknownModelError:
        raise  # unloaded while the request waited: still a 404
    except ResponseFormatError as error:  # found while decoding: text the tokenizer cannot write
        raise format_error(error) from None
    except Exception as error:
        raise APIError(
            500, f"generation failed: {type(error).__name__}: {error}", code="generation_failed"
        ) from error


def outputs_of(
    engine: Engine, generations: list[Generation], every_token: bool = False
) -> list[responses.Output]:
    stop_ids = set(engine.sampler.stop_ids)
    return [responses.output(g, engine.models.tokenizer, stop_ids, every_token) for g in generations]


def _logprobs(engine: Engine, outputs: list[responses.Output], request, chat: bool) -> list[dict] | None:
    if not request.wants_logprobs:
        return None
    listed = [responses.listed_tokens(o, engine.models.tokenizer, request.alternatives) for o in outputs]
    if chat:
        return [responses.chat_logprobs(tokens) for tokens in listed]
    return [responses.text_logprobs(tokens, request.alternatives) for tokens in listed]


async def stream_events(
    engine: Engine, job: Job, request, prompts: list[list[int]], chat: bool
) -> AsyncIterator[str]:
    """Server-sent events: text deltas while the batch generates, then each choice's finish, then [DONE].

    A stream that ends early (its client left: the server cancels the stream) cancels its job, as
    :mod:`rewardlab.serve.disconnects` says."""
    try:
        async for event in _events(engine, job, request, prompts, chat):
            yield event
    finally:
        if not job.future.done():
            job.future.cancel()


async def _events(
    engine: Engine, job: Job, request, prompts: list[list[int]], chat: bool
) -> AsyncIterator[str]:
    request_id = responses.new_id("chatcmpl" if chat else "cmpl")
    kind = "chat.completion.chunk" if chat else "text_completion"
    stop_ids = set(engine.sampler.stop_ids)

    def send(chunk: dict) -> str:
        if request.include_usage:
            chunk["usage"] = None  # as OpenAI: every chunk has the field; only the last one fills it
        return responses.sse(chunk)

    def piece(index: int, text: str, finish_reason: str | None = None, choice_logprobs=None) -> str:
        if chat:
            delta = {"content": text} if text or finish_reason is None else {}
            return send(
                responses.chat_chunk(request_id, request.model, index, delta, finish_reason, choice_logprobs)
            )
        return send(
            responses.text_chunk(request_id, request.model, index, text, finish_reason, choice_logprobs)
        )

    deltas = [TextDeltas(engine.models.tokenizer, stop_ids, job.stop) for _ in range(job.rows)]
    if chat:
        for index in range(job.rows):
            role = {"role": "assistant", "content": ""}
            yield send(responses.chat_chunk(request_id, request.model, index, role))
    while (item := await job.stream.get()) is not None:
        first_row, tokens = item
        for offset, token in enumerate(tokens):
            if text := deltas[first_row + offset].push(token):
                yield piece(first_row + offset, text)
    try:
        generations = await job.future
    except ResponseFormatError as error:
        failed = format_error(error)
        yield responses.sse(error_body(400, failed.message, failed.code, failed.param))
        yield responses.sse("[DONE]")
        return
    except Exception as error:
        status, code = (404, "model_not_found") if isinstance(error, UnknownModelError) else (500, None)
        yield responses.sse(error_body(status, f"generation failed: {error}", code))
        yield responses.sse("[DONE]")
        return
    outputs = outputs_of(engine, generations)
    logprobs = _logprobs(engine, outputs, request, chat)
    for index, output in enumerate(outputs):
        if rest := deltas[index].finish(output.text):
            yield piece(index, rest)
        yield piece(index, "", output.finish_reason, logprobs[index] if logprobs else None)
    if request.include_usage:
        yield responses.sse(
            responses.usage_chunk(request_id, request.model, kind, responses.usage(prompts, outputs))
        )
    yield responses.sse("[DONE]")
