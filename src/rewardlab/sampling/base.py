"""The Sampler protocol: anything that turns prompts into completions.

The local sampler (batched KV-cache generation from a Hugging Face model) returns the generated token
ids; an HTTP sampler for OpenAI-compatible endpoints returns text only. Environments and evaluation
only use this protocol, so either can drive them; training needs ``token_ids``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from rewardlab.types import Example, Messages


@dataclass
class SamplingParams:
    """How to sample. ``n`` completions are drawn for every prompt.

    ``logprobs`` asks for each sampled token's log-probability in ``Generation.logprobs``; it costs a pass
    over the vocabulary per step, so only callers that read them ask (training recomputes its own).
    """

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: bool = False


@dataclass
class Prompt:
    """A prompt as messages; local samplers may be handed the exact ``token_ids`` to continue from.

    ``state`` and ``example`` are the episode's, for scripted policies that play from the true state (a
    maze's walls); model samplers ignore them.
    """

    messages: Messages
    token_ids: list[int] | None = None
    state: dict | None = None
    example: Example | None = None


@dataclass
class Generation:
    """One completion. ``token_ids`` include the stop token when generation stopped on one; ``logprobs``
    (of each of them, under the temperature-scaled distribution) only when ``SamplingParams.logprobs``."""

    text: str
    token_ids: list[int] | None = None
    prompt_ids: list[int] | None = None
    logprobs: list[float] | None = None
    finish_reason: str = "stop"  # "stop" (EOS or stop string) or "length"
    latency_s: float = 0.0


@runtime_checkable
class Sampler(Protocol):
    """Draws ``params.n`` completions for each prompt; returns one list per prompt, in order."""

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Generation]]: ...
