"""Completions in OpenAI's response shapes: chat and text completions, their stream chunks, usage, log-probs.

The numbers describe the text returned. A completion's tokens are those behind its text: up to, and not
including, the first token that carries any of a stop string (the stop string is not returned, so neither are
its tokens), and without the token that ended the turn, which ``completion_tokens`` counts (the model
generated it, as OpenAI counts it) but the log-probs do not list, as OpenAI does. So ``completion_tokens`` is
the number of tokens listed, plus one for a completion that ended on its end-of-turn token.

Each listed token's text is what it adds to the content. The content is decoded without special tokens (as
vLLM's ``skip_special_tokens`` does), so a special token the model generated (``<pad>``, ``<unk>``, a role
marker) is listed, with its log-probability, as the empty string, and the listed texts always join to the
content. Alternatives (``top_logprobs``) read the same way: their text is what they would have added.

Log-probabilities are those the sampler computed while sampling: of the sampled token under the distribution
it was sampled from (penalties and bias applied, divided by the temperature: the policy the trainer
optimises; raw at temperature 0).

A request with vLLM's ``return_token_ids`` gets every token the model generated instead, as vLLM reports them:
``token_ids`` on each choice (the end-of-turn token and the tokens of a stop string included) and the prompt's
ids beside them, and the log-probs list each of those tokens, so that a trainer can score exactly what was
sampled (the end-of-turn token is listed as the empty string: its text is not in the content).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass

from rewardlab.sampling.base import Generation


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


@dataclass
class Output:
    """A generation as a response reports it."""

    text: str
    finish_reason: str
    token_ids: list[int]  # the tokens behind ``text``
    texts: list[str]  # what each of them adds to ``text``
    logprobs: list[float] | None
    top_logprobs: list[list[tuple[int, float]]] | None
    ended_on_token: bool  # the end-of-turn token that ended it: counted, not listed
    prompt_ids: list[int] | None = None  # the prompt it continues

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids) + self.ended_on_token


def token_texts(ids: list[int], tokenizer) -> list[str]:
    """What each token adds to ``tokenizer.decode(ids, skip_special_tokens=True)`` ("" for special tokens)."""
    texts = [tokenizer.decode([token], skip_special_tokens=True) for token in ids]
    if "".join(texts) == tokenizer.decode(ids, skip_special_tokens=True):
        return texts
    # Tokens that decode differently alone (a piece of a multi-byte character, a word-initial space):
    # each gets what it adds to the text decoded so far; an unfinished character waits for its last piece.
    texts, settled = [], ""
    for end in range(1, len(ids) + 1):
        text = tokenizer.decode(ids[:end], skip_special_tokens=True)
        if end < len(ids):
            text = text.rstrip("\ufffd")
        added = text[len(settled) :] if text.startswith(settled) else ""
        texts.append(added)
        settled += added
    return texts


def output(generation: Generation, tokenizer, stop_ids: set[int], every_token: bool = False) -> Output:
    """``generation`` as reported: its tokens cut to those behind its text (see the module's docstring), or
    with ``every_token`` (``return_token_ids``) all of them."""
    ids = list(generation.token_ids or [])
    if every_token:
        return Output(
            generation.text,
            generation.finish_reason,
            ids,
            token_texts(ids, tokenizer),
            generation.logprobs,
            generation.top_logprobs,
            False,
            generation.prompt_ids,
        )
    ended = bool(ids) and ids[-1] in stop_ids
    if ended:
        ids = ids[:-1]
    texts = token_texts(ids, tokenizer)
    decoded = "".join(texts)
    if generation.text != decoded and decoded.startswith(generation.text):
        # A stop string cut the text: keep the tokens that end before it begins.
        kept, position = 0, 0
        for text in texts:
            position += len(text)
            if position > len(generation.text):
                break
            kept += 1
        ids, texts = ids[:kept], texts[:kept]
    logprobs = generation.logprobs[: len(ids)] if generation.logprobs is not None else None
    top = generation.top_logprobs[: len(ids)] if generation.top_logprobs is not None else None
    return Output(
        generation.text, generation.finish_reason, ids, texts, logprobs, top, ended, generation.prompt_ids
    )


def usage(prompts: list[list[int]], outputs: list[Output]) -> dict:
    """Every prompt counts once however many completions it has, as OpenAI counts it."""
    prompt_tokens = sum(len(ids) for ids in prompts)
    completion_tokens = sum(o.completion_tokens for o in outputs)
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


def listed_tokens(output_: Output, tokenizer, alternatives: int = 0) -> list[ListedToken]:
    """The tokens behind the completion's text, each with ``alternatives`` alternatives."""
    top = output_.top_logprobs or [[] for _ in output_.token_ids]
    return [
        ListedToken(
            text,
            logprob,
            [
                (tokenizer.decode([other], skip_special_tokens=True), value)
                for other, value in others[:alternatives]
            ],
        )
        for text, logprob, others in zip(output_.texts, output_.logprobs or [], top, strict=True)
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
    outputs: list[Output],
    usage_: dict,
    logprobs: list[dict] | None,
    chat: bool,
    token_ids: bool = False,
) -> dict:
    """A chat completion (``message`` per choice) or a text completion (``text`` per choice); with
    ``token_ids`` (vLLM's ``return_token_ids``) the ids as vLLM places them: ``token_ids`` on each choice,
    ``prompt_token_ids`` on each choice of a text completion and once beside the choices of a chat one."""
    choices = []
    for index, output_ in enumerate(outputs):
        text = {"message": {"role": "assistant", "content": output_.text}} if chat else {"text": output_.text}
        ids = {}
        if token_ids:
            ids = {"token_ids": output_.token_ids}
            if not chat:
                ids["prompt_token_ids"] = output_.prompt_ids
        choices.append(
            {
                "index": index,
                **text,
                "logprobs": logprobs[index] if logprobs else None,
                "finish_reason": output_.finish_reason,
                **ids,
            }
        )
    answer = {
        **_chunk(request_id, "chat.completion" if chat else "text_completion", model, choices),
        "usage": usage_,
    }
    if token_ids and chat:
        answer["prompt_token_ids"] = outputs[0].prompt_ids if outputs else None
    return answer


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
