"""An LLM as judge: an async reward function that asks a chat model for a score in [0, 1].

Any OpenAI-compatible endpoint works (OpenAI, vLLM, llama.cpp's server) through the official ``openai``
client. The judge is honest about failure: an endpoint that keeps failing, or a reply without a score,
raises, so the rubric records an errored component rather than a silent 0.

The expected reply ends with a line ``SCORE: <number between 0 and 1>`` (the default template asks for
it); the last such line wins. A reply whose last line is just "yes" or "no" also counts (1.0 or 0.0).
Pass ``parse`` to read any other format.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import weakref
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

from rewardlab.errors import RewardlabError
from rewardlab.types import Messages

DEFAULT_TEMPLATE = """You are grading an answer to a question, given the reference answer.

Question:
{question}

Reference answer:
{answer}

Answer to grade:
{completion}

Decide whether the answer to grade is correct and complete with respect to the reference answer. Reason \
briefly, then end your reply with one line of the form
SCORE: <a number between 0 and 1>
where 1 means fully correct and 0 means wrong."""

TEMPLATE_FIELDS = ("question", "answer", "completion")
LOCAL_API_KEY = "not-needed-for-a-local-server"
_LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
_SCORE = re.compile(r"score[\s*]{0,4}[:=][\s*]{0,4}([-+]?(?:\d+(?:\.\d*)?|\.\d+))", re.IGNORECASE)
_RETRYABLE_STATUS = (408, 409, 429)  # timeouts, conflicts and rate limits pass; so do 5xx


class JudgeError(Exception):
    """The judge could not produce a score (the endpoint kept failing, or the reply had none)."""


def _excerpt(text: str, limit: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def parse_score(reply: str) -> float:
    """The score in a judge's reply: the last ``SCORE: x`` (x in [0, 1]), else a final yes/no line."""
    matches = _SCORE.findall(reply)
    if matches:
        score = float(matches[-1])
        if not 0.0 <= score <= 1.0:
            raise JudgeError(f"judge score {score:g} is outside [0, 1]")
        return score
    lines = [line for line in reply.strip().splitlines() if line.strip()]
    last = re.sub(r"[^a-z]", "", lines[-1].lower()) if lines else ""
    if last in ("yes", "no"):
        return 1.0 if last == "yes" else 0.0
    raise JudgeError(f"judge reply has no 'SCORE: <0..1>' line and is not yes/no: '{_excerpt(reply)}'")


def _is_local(base_url: str | None) -> bool:
    if not base_url:
        return False
    host = urlparse(base_url).hostname or ""
    return host in _LOCAL_HOSTS or host.endswith(".localhost")


def _question(prompt: Messages) -> str:
    for message in reversed(prompt):
        if message.get("role") == "user":
            return message.get("content") or ""
    return ""


def _retryable(error: Exception) -> bool:
    import openai

    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return True
    if isinstance(error, openai.APIStatusError):
        return error.status_code in _RETRYABLE_STATUS or error.status_code >= 500
    return False


def _check_template(template: str) -> None:
    try:
        template.format(**dict.fromkeys(TEMPLATE_FIELDS, ""))
    except (KeyError, IndexError, ValueError) as error:
        raise RewardlabError(
            f"judge prompt_template has an unknown or malformed field ({type(error).__name__}: {error}); "
            f"it may use {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}, and literal braces are doubled"
        ) from error


def llm_judge(
    model: str,
    base_url: str | None = None,
    api_key_env: str = "OPENAI_API_KEY",
    prompt_template: str = DEFAULT_TEMPLATE,
    parse: Callable[[str], float] = parse_score,
    retries: int = 3,
    timeout: float = 30,
    max_concurrency: int = 8,
    name: str = "judge",
    *,
    backoff: float = 1.0,
    temperature: float | None = 0.0,
) -> Callable[..., Any]:
    """An async reward function ``name(prompt, completion, answer)`` that asks ``model`` for a score.

    ``prompt_template`` is filled with ``{question}`` (the last user message of the prompt), ``{answer}``
    (the reference) and ``{completion}``. Rate limits (429), server errors (5xx), timeouts and lost
    connections are retried up to ``retries`` times, waiting ``backoff``, then twice as long each time;
    other errors (a 400, a wrong key) are not. Each request gets ``timeout`` seconds, and at most
    ``max_concurrency`` requests are in flight per event loop. The key is read from ``api_key_env`` now;
    a ``base_url`` on localhost needs none (a placeholder is sent).

    The function carries ``reward_timeout = inf``: it bounds its own time (per request, per retry), so
    the rubric's per-call timeout does not also count the time it waits for a free slot.
    """
    import openai  # only a judge needs the client; importing it costs a few hundred milliseconds

    if not isinstance(retries, int) or retries < 0:
        raise RewardlabError(f"judge retries must be a non-negative integer, got {retries!r}")
    if not isinstance(max_concurrency, int) or max_concurrency < 1:
        raise RewardlabError(f"judge max_concurrency must be a positive integer, got {max_concurrency!r}")
    if not timeout > 0:
        raise RewardlabError(f"judge timeout must be a positive number of seconds, got {timeout!r}")
    _check_template(prompt_template)
    api_key = os.environ.get(api_key_env) or (LOCAL_API_KEY if _is_local(base_url) else None)
    if not api_key:
        raise RewardlabError(
            f"the judge needs an API key in the environment variable {api_key_env} "
            "(or a base_url on localhost, which needs none)"
        )
    options: dict[str, Any] = {} if temperature is None else {"temperature": temperature}
    attempts = retries + 1
    # A client and a semaphore belong to one event loop (Rubric.score starts a new loop per call).
    per_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[Any, asyncio.Semaphore]] = (
        weakref.WeakKeyDictionary()
    )

    def resources() -> tuple[Any, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if loop not in per_loop:
            # the client's own retries are off: ours count attempts and free the slot while waiting
            client = openai.AsyncOpenAI(api_key=api_key, base_url=base_url, timeout=timeout, max_retries=0)
            per_loop[loop] = (client, asyncio.Semaphore(max_concurrency))
        return per_loop[loop]

    async def ask(content: str) -> str:
        client, slots = resources()
        last_error: Exception | None = None
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(backoff * 2 ** (attempt - 1))
            try:
                async with slots:
                    response = await client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": content}], **options
                    )
            except openai.OpenAIError as error:
                if not _retryable(error):
                    raise JudgeError(f"judge request failed: {_excerpt(str(error), 200)}") from error
                last_error = error
                continue
            if not response.choices or response.choices[0].message.content is None:
                raise JudgeError("judge reply has no text")
            return response.choices[0].message.content
        raise JudgeError(
            f"judge endpoint failed {attempts} times; last: {type(last_error).__name__}: "
            f"{_excerpt(str(last_error), 200)}"
        )

    async def judge(prompt: Messages, completion: str, answer: str) -> float:
        content = prompt_template.format(question=_question(prompt), answer=answer, completion=completion)
        return parse(await ask(content))

    judge.__name__ = judge.__qualname__ = name
    judge.reward_timeout = math.inf  # type: ignore[attr-defined]
    return judge
