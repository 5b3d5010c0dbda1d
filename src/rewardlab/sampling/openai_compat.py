"""The Sampler for any OpenAI-compatible chat-completions endpoint: our own server, vLLM, a hosted API.

Text only (no token ids, no log-probs): it can drive evaluation and comparison, not training. The prompts
of one ``generate`` call are sent concurrently, at most ``max_concurrency`` requests in flight. A request
that meets a rate limit (429), a server error (5xx), a timeout or a dropped connection is retried with
exponential backoff and jitter; any other refusal (400, 401, 404...) fails at once. Either way a failure
is one line naming the endpoint, the status and the server's message. The openai client's own retries are
switched off, so every retry is ours, and counted in :class:`RequestStats`.

The client lives on a private event loop in a daemon thread. ``generate`` is called from sync code (the
rollout loop), and must also work where an event loop is already running (a notebook), where
``asyncio.run`` would refuse.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

import openai

from rewardlab.errors import RewardlabError
from rewardlab.sampling.base import Generation, Prompt, SamplingParams
from rewardlab.types import Messages

T = TypeVar("T")

PLACEHOLDER_KEY = "no-key"  # key-less local servers ignore it; the client refuses to start without one
RETRYABLE_STATUS = {408, 409, 429}  # and every 5xx: the same request may succeed a moment later
MAX_MESSAGE_CHARS = 300


class EndpointError(RewardlabError):
    """An endpoint refused a request, or kept failing until the retries ran out."""


@dataclass
class RequestStats:
    """What the endpoint did: one latency per successful request (its last attempt), and the retries."""

    latencies_s: list[float] = field(default_factory=list)
    retried: int = 0  # requests that needed at least one retry
    retries: int = 0  # retry attempts in all
    failed: int = 0  # requests given up on: their error was raised
    prompt_tokens: int = 0  # as the server's usage counts them (servers that send none add nothing)
    completion_tokens: int = 0

    @property
    def requests(self) -> int:
        return len(self.latencies_s) + self.failed

    def copy(self) -> RequestStats:
        return RequestStats(
            list(self.latencies_s), self.retried, self.retries, self.failed,
            self.prompt_tokens, self.completion_tokens,
        )  # fmt: skip

    def since(self, earlier: RequestStats) -> RequestStats:
        """The requests made after ``earlier`` (a :meth:`copy` of these stats) was taken."""
        return RequestStats(
            self.latencies_s[len(earlier.latencies_s) :],
            self.retried - earlier.retried,
            self.retries - earlier.retries,
            self.failed - earlier.failed,
            self.prompt_tokens - earlier.prompt_tokens,
            self.completion_tokens - earlier.completion_tokens,
        )


class _LoopThread:
    """An event loop running in a daemon thread; coroutines are submitted to it from the caller's thread."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="rewardlab-openai", daemon=True)
        self._thread.start()

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()  # Ctrl-C in the caller stops the requests too
            raise

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


def _server_message(error: openai.APIStatusError) -> str:
    """The server's own explanation, on one line: OpenAI-style ``{"error": {"message"}}`` or FastAPI's
    ``{"detail"}``, else the raw body."""
    body = error.body
    message = None
    if isinstance(body, dict):
        message = body.get("message") or body.get("detail") or body.get("error")
    message = str(message if message is not None else body if body is not None else error.message)
    message = " ".join(message.split())
    return message if len(message) <= MAX_MESSAGE_CHARS else message[: MAX_MESSAGE_CHARS - 1] + "…"


def _retry_after(error: Exception) -> float | None:
    """Seconds a 429/503 asked us to wait (``Retry-After``), when given as a number."""
    response = getattr(error, "response", None)
    value = response.headers.get("retry-after") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None  # an HTTP date: rare, and our own backoff is a fine substitute


class OpenAISampler:
    """The :class:`~rewardlab.sampling.base.Sampler` for an OpenAI-compatible chat-completions endpoint.

    ``model`` is the name the server knows the model by. The API key is read from ``api_key_env`` (or
    given as ``api_key``); a key-less local server gets a placeholder. There is no ``renderer``, so
    rollouts through this sampler carry text only. ``seed`` seeds the retry jitter, not the model.
    Call :meth:`close` (or use ``with``) to stop the private event loop.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        api_key: str | None = None,
        max_concurrency: int = 16,
        timeout_s: float = 120.0,
        max_retries: int = 4,
        backoff_s: float = 0.25,
        max_backoff_s: float = 30.0,
        seed: int | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise EndpointError(f"endpoint '{base_url}' must start with http:// or https://")
        if max_concurrency < 1:
            raise EndpointError(f"max_concurrency must be at least 1, got {max_concurrency}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.stats = RequestStats()
        self._jitter = random.Random(seed)
        # Cleared the first time the server returns fewer choices than asked: it ignores ``n``.
        self._server_honours_n = True
        # One semaphore for the sampler's lifetime; it binds to the private loop on first use.
        self._slots = asyncio.Semaphore(max_concurrency)
        self._client = openai.AsyncOpenAI(
            base_url=self.base_url,
            api_key=api_key or os.environ.get(api_key_env) or PLACEHOLDER_KEY,
            max_retries=0,  # ours are the retries: counted, tested, with jitter
            timeout=timeout_s,
        )
        self._loop: _LoopThread | None = _LoopThread()  # last: nothing after it can fail and leak the thread

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Generation]]:
        return self.generate_each([(prompt, params) for prompt in prompts])

    def generate_each(self, requests: list[tuple[Prompt, SamplingParams]]) -> list[list[Generation]]:
        """:meth:`generate` with each prompt's own parameters (its own response format, say), all of them
        in flight together within ``max_concurrency``."""
        if not requests:
            return []
        if self._loop is None:
            raise EndpointError(f"endpoint {self.base_url}: the sampler was closed")
        return self._loop.run(self._generate(requests))

    def close(self) -> None:
        if self._loop is None:
            return
        self._loop.run(self._client.close())
        self._loop.close()
        self._loop = None

    def __enter__(self) -> OpenAISampler:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- on the private loop ------------------------------------------------------------------------

    async def _generate(self, requests: list[tuple[Prompt, SamplingParams]]) -> list[list[Generation]]:
        tasks = [
            asyncio.ensure_future(self._completions(prompt.messages, params, index))
            for index, (prompt, params) in enumerate(requests)
        ]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            # One request gave up: the evaluation fails, so the others need not go on.
            for task in tasks:
                task.cancel()
            raise

    async def _completions(self, messages: Messages, params: SamplingParams, index: int) -> list[Generation]:
        """``params.n`` completions of one prompt: one request asking for ``n``, topped up with single
        requests when the server returns fewer choices (some ignore ``n``)."""
        # The r rollouts of an example arrive as r identical prompts: one seed for all of them would make
        # them identical on a server that honours seeds, so every prompt and choice gets its own.
        seed = None if params.seed is None else params.seed + index * params.n
        generations: list[Generation] = []
        if params.n == 1 or self._server_honours_n:
            generations = await self._request(messages, params, params.n, seed)
        if params.n > 1 and len(generations) < params.n:
            self._server_honours_n = False
            missing = range(len(generations), params.n)
            singles = await asyncio.gather(
                *(self._request(messages, params, 1, None if seed is None else seed + k) for k in missing)
            )
            for single in singles:
                generations.extend(single[:1])
        if len(generations) < params.n:
            raise EndpointError(
                f"endpoint {self.base_url}: asked for {params.n} completions, got {len(generations)}"
            )
        return generations[: params.n]

    async def _request(
        self, messages: Messages, params: SamplingParams, n: int, seed: int | None
    ) -> list[Generation]:
        arguments: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_tokens": params.max_new_tokens,
        }
        if n > 1:
            arguments["n"] = n
        if params.stop:
            arguments["stop"] = params.stop
        if seed is not None:
            arguments["seed"] = seed
        if params.response_format is not None:
            arguments["response_format"] = params.response_format
        if params.top_k:  # not in OpenAI's API: vLLM and rewardlab serve read it from the body
            arguments["extra_body"] = {"top_k": params.top_k}
        # A request keeps its slot while it backs off, so a rate-limited server sees fewer requests, not
        # the same number from fresh ones.
        async with self._slots:
            for attempt in range(self.max_retries + 1):
                started = time.perf_counter()
                try:
                    response = await asyncio.wait_for(
                        self._client.chat.completions.create(**arguments), self.timeout_s
                    )
                except (asyncio.TimeoutError, openai.APIError) as error:
                    problem, retryable = self._describe(error)
                    if not retryable or attempt == self.max_retries:
                        self.stats.failed += 1
                        tries = f"gave up after {attempt + 1} attempts: " if attempt else ""
                        raise EndpointError(f"endpoint {self.base_url}: {tries}{problem}") from None
                    if attempt == 0:
                        self.stats.retried += 1
                    self.stats.retries += 1
                    await asyncio.sleep(self._delay(attempt, _retry_after(error)))
                    continue
                latency = time.perf_counter() - started
                self.stats.latencies_s.append(latency)
                if response.usage is not None:
                    self.stats.prompt_tokens += response.usage.prompt_tokens or 0
                    self.stats.completion_tokens += response.usage.completion_tokens or 0
                return [
                    Generation(
                        text=choice.message.content or "",
                        finish_reason="length" if choice.finish_reason == "length" else "stop",
                        latency_s=latency,
                    )
                    for choice in sorted(response.choices or [], key=lambda choice: choice.index or 0)
                ]
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _describe(self, error: Exception) -> tuple[str, bool]:
        """(what went wrong in a few words, whether trying again may help)."""
        if isinstance(error, asyncio.TimeoutError | openai.APITimeoutError):
            return f"no response within {self.timeout_s:g}s (timeout)", True
        if isinstance(error, openai.APIConnectionError):
            cause = error.__cause__ or error
            return f"cannot connect ({' '.join(str(cause).split()) or type(cause).__name__})", True
        if not isinstance(error, openai.APIStatusError):
            return f"unexpected response ({type(error).__name__}): {' '.join(str(error).split())}", False
        status, message = error.status_code, _server_message(error)
        if status == 401:
            what = f"unauthorized (401): {message}; is ${self.api_key_env} set to this endpoint's key?"
        elif status == 404 and self.model in message:
            what = f"model '{self.model}' not found (404): {message}"
        elif status == 404:
            what = f"not found (404): {message}; does base_url name the API root (often ending in /v1)?"
        else:
            what = f"{'rejected the request' if status < 500 else 'server error'} ({status}): {message}"
        return what, status in RETRYABLE_STATUS or status >= 500

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter: requests that failed together do not retry in lockstep."""
        ceiling = min(self.max_backoff_s, self.backoff_s * 2**attempt)
        delay = ceiling / 2 + self._jitter.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.max_backoff_s))
        return delay
