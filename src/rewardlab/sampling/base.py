"""The Sampler protocol: anything that turns prompts into completions.

The local sampler (batched KV-cache generation from a Hugging Face model) returns the generated token
ids; an HTTP sampler for OpenAI-compatible endpoints returns text only. Environments and evaluation
only use this protocol, so either can drive them; training needs ``token_ids``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rewardlab.types import Example, Messages


@dataclass
class SamplingParams:
    """How to sample. ``n`` completions are drawn for every prompt.

    ``logprobs`` asks for each sampled token's log-probability in ``Generation.logprobs``; it costs a pass
    over the vocabulary per step, so only callers that read them ask (training recomputes its own).
    ``top_logprobs`` (with ``logprobs``) adds the most likely tokens of every step.

    ``presence_penalty`` and ``frequency_penalty`` are OpenAI's: before each step, the logit of every token
    the row has generated so far drops by ``presence_penalty`` once and by ``frequency_penalty`` per
    occurrence; ``logit_bias`` (token id -> bias) is added to the logits. At their defaults nothing is added,
    and the logits, the random stream and the tokens are exactly those of plain sampling.

    ``top_k`` keeps the k likeliest tokens of each step before ``top_p`` takes its nucleus (0: all).

    ``draw`` is how the local sampler picks a token from the distribution: ``"multinomial"``
    (``torch.multinomial``) or ``"inverse_cdf"`` (one uniform number per row and step); the same
    distribution, other random streams. Endpoints sample as their server does.

    ``response_format`` is OpenAI's (``{"type": "json_schema", "json_schema": {"name", "schema"}}`` or
    ``{"type": "json_object"}``): the local sampler enforces it by grammar-constrained decoding (see
    :mod:`rewardlab.sampling.structured`), an endpoint sampler sends it along. ``None`` (or ``{"type":
    "text"}``) samples freely, exactly as without the field.
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    max_new_tokens: int = 64
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    response_format: dict | None = None
    draw: str = "multinomial"


@dataclass
class Prompt:
    """A prompt as messages; local samplers may be handed the exact ``token_ids`` to continue from.

    ``state`` and ``example`` are the episode's, for scripted policies that play from the true state (a
    maze's walls); model samplers ignore them.

    ``seed`` gives the prompt a random stream of its own: the local sampler draws sample ``j`` of it from a
    generator seeded with ``derived_seed(seed, j)``, so what it samples does not depend on the other prompts
    of the batch, on the batch's size or on how it is chunked (a data-parallel trainer relies on it). Without
    it a batch draws from one stream (``SamplingParams.seed``, or torch's global one). Samplers that cannot
    seed a prompt ignore it.
    """

    messages: Messages
    token_ids: list[int] | None = None
    state: dict | None = None
    example: Example | None = None
    seed: int | None = None


def derived_seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of ``parts`` (ints and strings), the same in every process and
    every Python (``hash`` of a string is salted per process)."""
    digest = hashlib.blake2b(":".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


@dataclass
class Generation:
    """One completion. ``token_ids`` include the stop token when generation stopped on one; ``logprobs``
    (of each of them, under the distribution sampled from: penalties and bias applied, divided by the
    temperature) only when ``SamplingParams.logprobs``; ``top_logprobs`` holds, for each of them, the
    ``SamplingParams.top_logprobs`` likeliest (token id, log-prob) pairs of its step, likeliest first."""

    text: str
    token_ids: list[int] | None = None
    prompt_ids: list[int] | None = None
    logprobs: list[float] | None = None
    top_logprobs: list[list[tuple[int, float]]] | None = None
    finish_reason: str = "stop"  # "stop" (EOS or stop string) or "length"
    latency_s: float = 0.0


@runtime_checkable
class Sampler(Protocol):
    """Draws ``params.n`` completions for each prompt; returns one list per prompt, in order."""

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Generation]]: ...
