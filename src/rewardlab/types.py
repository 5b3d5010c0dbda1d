"""The shared vocabulary: small dataclasses every stage passes along.

dataset row -> Example -> Rollout (what the model said, with its token ids) -> ScoredRollout (plus the
reward breakdown). Nothing here knows about torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

Message = dict[str, str]  # {"role": "system" | "user" | "assistant" | "tool", "content": "..."}
Messages = list[Message]


@dataclass
class Example:
    """One task instance: the rendered prompt messages, the reference answer and free-form info."""

    id: str
    prompt: Messages
    answer: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def question(self) -> str:
        """The last user message, for tables and debug output."""
        for message in reversed(self.prompt):
            if message["role"] == "user":
                return message["content"]
        return ""


@dataclass
class Rollout:
    """One episode: the model's turns (and the environment's replies) after the prompt.

    ``completion_ids`` are exactly the ids the sampler produced, with the environment's tokens spliced
    in for multi-turn episodes; ``completion_mask`` is 1 on model-generated tokens and 0 on environment
    tokens, so the trainer never re-tokenizes text and never trains on what the environment said.
    """

    example: Example
    sample_index: int
    completion: Messages
    state: dict[str, Any] = field(default_factory=dict)
    prompt_ids: list[int] | None = None
    completion_ids: list[int] | None = None
    completion_mask: list[int] | None = None
    # The sampling policy's log-prob of each completion token (0 on environment tokens), when the sampler
    # was asked for them (``SamplingParams.logprobs``): a trainer sampling through a server uses them.
    completion_logprobs: list[float] | None = None
    turn_tokens: list[int] = field(default_factory=list)  # tokens the model generated in each of its turns
    truncated: bool = False
    num_turns: int = 0
    latency_s: float = 0.0
    error: str | None = None  # the rollout itself failed (environment raised, endpoint unreachable...)

    @property
    def completion_text(self) -> str:
        """The model's last reply: what most reward functions look at."""
        for message in reversed(self.completion):
            if message["role"] == "assistant":
                return message["content"]
        return ""

    @property
    def num_completion_tokens(self) -> int:
        return sum(self.completion_mask) if self.completion_mask else 0


@dataclass
class ScoredRollout:
    """A rollout with its reward: the weighted total and every component.

    A component whose function raised has value ``None`` and its reason in ``errors``; the total is
    then computed over the components that did run and ``errored`` is set, so callers can leave the
    rollout out instead of silently counting it as zero.
    """

    rollout: Rollout
    reward: float
    components: dict[str, float | None]
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def errored(self) -> bool:
        return bool(self.errors) or self.rollout.error is not None
