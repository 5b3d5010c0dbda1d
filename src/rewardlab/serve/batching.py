"""Which waiting requests may share one ``LocalSampler.generate`` call.

``generate`` takes one ``SamplingParams`` for the whole batch, so requests are grouped by what sampling
depends on: temperature, top_p, top_k, max_tokens, stop strings, penalties, logit bias and response format,
and by default by model too (log-probs are computed for the whole batch when any request asks for them, with
as many alternatives as the request that asks for most). A batch of one model runs the model's own forward
(the fused one, with its adapter folded into the weights); a batch that mixes the base and adapters
(``mix_adapters``: peft routes each row to its adapter, see :mod:`rewardlab.serve.routing`) needs
transformers' forward with peft's per-row dispatch, which on the tiny models costs more than running the two
batches one after the other (docs/serving.md has the measurements). A request with a seed is always a batch of
its own: every row draws from one random generator, so its completions would otherwise depend on whatever else
happened to be in flight.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field

from rewardlab.sampling.base import Generation


@dataclass(eq=False)
class Job:
    """One request: its prompts (token ids), ``n`` completions of each, the model it names."""

    model: str
    prompts: list[list[int]]
    n: int
    temperature: float
    top_p: float
    max_tokens: int
    stop: list[str]
    seed: int | None
    arrived: float
    future: asyncio.Future[list[Generation]]
    # Streaming jobs receive (first row, token of each row from there) after every decoding step.
    stream: asyncio.Queue | None = None
    logprobs: bool = False  # the request lists its tokens' log-probabilities
    top_logprobs: int = 0  # ... and this many alternatives of each
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[int, float] = field(default_factory=dict)
    response_format: dict | None = None  # parsed (None: plain text)
    top_k: int = 0  # 0: no top-k cut

    @property
    def rows(self) -> int:
        return len(self.prompts) * self.n


def batch_key(job: Job, mix_adapters: bool) -> tuple:
    key = (job.temperature, job.top_p, job.top_k, job.max_tokens, tuple(job.stop))
    key += (job.presence_penalty, job.frequency_penalty, tuple(sorted(job.logit_bias.items())))
    key += (json.dumps(job.response_format, sort_keys=True),)
    if job.seed is not None:
        key += (id(job),)  # never shared
    if not mix_adapters:
        key += (job.model,)
    return key


def take_batch(pending: list[Job], max_rows: int, mix_adapters: bool) -> list[Job]:
    """Remove and return the oldest job and every later compatible one that still fits in ``max_rows``.

    The oldest job always goes, even when it alone has more rows than ``max_rows`` (the sampler splits it),
    so nothing waits forever behind a limit it can never meet.
    """
    key = batch_key(pending[0], mix_adapters)
    batch, rows = [], 0
    for job in list(pending):
        if batch_key(job, mix_adapters) != key:
            continue
        if batch and rows + job.rows > max_rows:
            break
        batch.append(job)
        rows += job.rows
        pending.remove(job)
    return batch


def compatible_rows(pending: list[Job], mix_adapters: bool) -> int:
    """Rows waiting that could join the oldest job's batch."""
    key = batch_key(pending[0], mix_adapters)
    return sum(job.rows for job in pending if batch_key(job, mix_adapters) == key)
