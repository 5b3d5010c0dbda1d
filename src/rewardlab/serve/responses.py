"""Completions in OpenAI's response shapes: chat and text completions, their stream chunks, usage, log-probs.

Log-probabilities are those the sampler computed while sampling: of the sampled token under the
temperature-scaled distribution (the policy the trainer optimises), raw at temperature 0. The token that ended
the completion (end of turn) counts in ``completion_tokens`` but is not listed, as OpenAI does.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from rewardlab.sampling.base import Generation


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompts: list[list[int]], generations: list[Generation]) -> dict:
    """Every prompt counts once however many completions it has, as OpenAI counts it."""
    prompt_tokens = sum(len(ids) for ids in prompts)
    completion_tokens = sum(len(g.token_ids or []) for g in generations)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass
class ListedToken:
    """A completion token as the log-probs list it: its text, its log-prob, the likeliest alternatives."""

    text: str
    logprob: float
    top: list[tuple[str, float]]  # (text, log-prob), likeliest first


def listed_tokens(
    generation: Generation, tokenizer, stop_ids: set[int], alternatives: int = 0
) -> list[ListedToken]:
    """The completion's tokens, without the token that ended it, each with ``alternatives`` alternatives."""
    ids, logprobs = generation.token_ids or [], generation.logprobs or []
    if ids and ids[-1] in stop_ids:
        ids, logprobs = ids[:-1], logprobs[:-1]
    top = generation.top_logprobs or [[] for _ in ids]
    return [
        ListedToken(
            tokenizer.decode([token]),
            logprob,
            [(tokenizer.decode([other]), value) for other, value in others[:alternatives]],
        )
        for token, logprob, others in zip(ids, logprobs, top[: len(ids)], strict=True)
    ]


def chat_logprobs(tokens: list[ListedToken]) -> dict:
    def entry(text: str, logprob: float) -> dict:
        return {"token": text, "logprob": logprob, "bytes": list(text.encode())}

    content = [
        {**entry(t.text, t.logprob), "top_logprobs": [entry(text, value) for text, value in t.top]}
        for t in tokens
    ]
    return {"content": content, "refusal": None}


def text_logprobs(tokens: list[ListedToken], alternatives: int = 0) -> dict:
    """OpenAI's legacy shape. ``top_logprobs`` maps text to log-prob: the ``alternatives`` likeliest tokens
    and the sampled one (so up to ``alternatives + 1`` entries); tokens that read alike keep the likeliest."""
    offsets, position = [], 0
    for token in tokens:
        offsets.append(position)
        position += len(token.text)
    top = None
    if alternatives:
        top = []
        for token in tokens:
            step: dict[str, float] = {}
            for text, value in [*token.top, (token.text, token.logprob)]:
                step.setdefault(text, value)
            top.append(step)
    return {
        "tokens": [token.text for token in tokens],
        "token_logprobs": [token.logprob for token in tokens],
        "top_logprobs": top,
        "text_offset": offsets,
    }


def completion(
    request_id: str,
    model: str,
    generations: list[Generation],
    usage_: dict,
    logprobs: list[dict] | None,
    chat: bool,
) -> dict:
    """A chat completion (``message`` per choice) or a text completion (``text`` per choice)."""
    choices = []
    for index, generation in enumerate(generations):
        output = (
            {"message": {"role": "assistant", "content": generation.text}}
            if chat
            else {"text": generation.text}
        )
        choices.append(
            {
                "index": index,
                **output,
                "logprobs": logprobs[index] if logprobs else None,
                "finish_reason": generation.finish_reason,
            }
        )
    return {
        **_chunk(request_id, "chat.completion" if chat else "text_completion", model, choices),
        "usage": usage_,
    }


def chat_chunk(
    request_id: str,
    model: str,
    index: int,
    delta: dict,
    finish_reason: str | None = None,
    logprobs: dict | None = None,
) -> dict:
    choice = {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
    return _chunk(request_id, "chat.completion.chunk", model, [choice])


def text_chunk(
    request_id: str,
    model: str,
    index: int,
    text: str,
    finish_reason: str | None = None,
    logprobs: dict | None = None,
) -> dict:
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
    return _chunk(request_id, "text_completion", model, [choice])


def usage_chunk(request_id: str, model: str, kind: str, usage_: dict) -> dict:
    """The last chunk when ``stream_options.include_usage`` is set: no choices, only usage."""
    return {**_chunk(request_id, kind, model, []), "usage": usage_}


def _chunk(request_id: str, kind: str, model: str, choices: list[dict]) -> dict:
    return {"id": request_id, "object": kind, "created": int(time.time()), "model": model, "choices": choices}


def sse(payload: dict | str) -> str:
    """One server-sent event; the stream ends with the literal ``[DONE]``."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n"
