"""What a run costs: tokens, an estimate of its floating-point operations, wall time, and their price; and
the limits (``budget.max_usd``, ``budget.max_minutes``) that stop it.

Counts, cumulative over the run (resumed parts included):

* ``prompt_tokens``: tokens the run's rollouts read without writing them (the prompt, and in multi-turn
  episodes the environment's turns); SFT: the prompts of the sequences it trained on;
* ``completion_tokens``: tokens the model generated (0 in SFT);
* ``trained_tokens``: tokens in the loss, once per optimizer pass (``num_iterations`` passes a GRPO step);
* ``tokens`` = prompt + completion tokens (SFT: prompt + trained): what the rollouts hold, and what
  ``usd_per_million_tokens`` prices;
* ``flops``, an estimate by the usual rule of 2 x parameters per token for a forward pass and 6 x parameters
  per token for a forward and backward pass (attention's own cost, padding and the sampler's reuse of work
  are left out):

      sampling (GRPO)   2 N (prompt_tokens + completion_tokens)
      update (GRPO)     6 N S num_iterations + 2 N S (one pass for the old log-probs when num_iterations > 1,
                        one more for the reference when beta > 0), S = the batch's prompt + completion tokens
      SFT               6 N S

  N counts every parameter of the model (a LoRA run's frozen base included: its activations are computed
  and back-propagated through, though it gets no weight gradient, so 6 N overstates a LoRA update, whose
  true cost is nearer 4 N). The sampler prefills a prompt once for its whole group (less work than counted)
  and reads a multi-turn conversation again at every turn (more).
* ``wall_seconds``: from the call that started (or resumed) the run to the end of each step; time lost to a
  crash after the last checkpoint is not counted.

``usd = usd_per_hour x wall hours + usd_per_million_tokens x tokens / 10^6``. An LLM judge's endpoint tokens
are not counted (the judge does not report its usage yet), nor is evaluation.

The totals live in the trainer's checkpoint totals (``totals["cost"]``), so a resumed run continues them
exactly; the run summary's ``cost`` holds them at the end: ``{usd, tokens, flops, wall_seconds, usd_per_hour,
...}``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from rewardlab.config.sections import BudgetConfig
from rewardlab.errors import RewardlabError
from rewardlab.train.health import StepOrders, record_stop
from rewardlab.types import Rollout

COUNTS = ("prompt_tokens", "completion_tokens", "trained_tokens", "tokens", "flops", "wall_seconds")


def parameter_count(model) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


class Budget:
    """A run's running costs. ``totals`` is the trainer's checkpointed totals; the counts live in it."""

    def __init__(self, config: BudgetConfig, totals: dict, parameters: int, started: float):
        """``started``: ``time.perf_counter()`` when this call to train (or resume) began."""
        self.config, self.parameters, self.started = config, parameters, started
        self.counts: dict[str, float] = totals.setdefault("cost", {})
        for name in COUNTS:
            self.counts.setdefault(name, 0.0)
        self.wall_before = self.counts["wall_seconds"]  # what earlier parts of a resumed run took

    @property
    def usd(self) -> float:
        return (
            self.config.usd_per_hour * self.counts["wall_seconds"] / 3600
            + self.config.usd_per_million_tokens * self.counts["tokens"] / 1e6
        )

    def add(self, prompt: int, completion: int, trained: int, tokens: int, flops: float) -> dict[str, float]:
        """Count one step; returns the step's ``cost/*`` metrics (cumulative)."""
        counts = self.counts
        counts["prompt_tokens"] += prompt
        counts["completion_tokens"] += completion
        counts["trained_tokens"] += trained
        counts["tokens"] += tokens
        counts["flops"] += flops
        counts["wall_seconds"] = self.wall_before + time.perf_counter() - self.started
        return {
            "cost/usd": self.usd,
            "cost/tokens": counts["tokens"],
            "cost/flops": counts["flops"],
            "cost/wall_seconds": counts["wall_seconds"],
        }

    def grpo_step(
        self, rollouts: Sequence[Rollout], trained_tokens: int, num_iterations: int, reference: bool
    ) -> dict[str, float]:
        """Count a GRPO step: its rollouts, and an update of ``num_iterations`` passes over them that trained
        on ``trained_tokens`` tokens per pass (``reference``: a forward with the adapters off, for KL)."""
        prompt = sum(
            len(r.prompt_ids or []) + len(r.completion_ids or []) - r.num_completion_tokens for r in rollouts
        )
        completion = sum(r.num_completion_tokens for r in rollouts)
        sequences = prompt + completion  # what the training batch holds, besides padding
        forwards = (num_iterations > 1) + reference
        flops = (
            2 * self.parameters * sequences
            + (6 * num_iterations + 2 * forwards) * self.parameters * sequences
        )
        return self.add(prompt, completion, trained_tokens * num_iterations, sequences, flops)

    def sft_step(self, prompt_tokens: int, trained_tokens: int) -> dict[str, float]:
        """Count an SFT step over sequences of ``prompt_tokens`` context and ``trained_tokens`` targets."""
        sequences = prompt_tokens + trained_tokens
        return self.add(prompt_tokens, 0, trained_tokens, sequences, 6 * self.parameters * sequences)

    def reached(self) -> tuple[str, str] | None:
        """The limit the run has reached, as (field, what it says), or None."""
        config, wall = self.config, self.counts["wall_seconds"]
        if config.max_usd is not None and self.usd >= config.max_usd:
            return "budget.max_usd", f"spent ${self.usd:.4g} of budget.max_usd ${config.max_usd:g}"
        if config.max_minutes is not None and wall / 60 >= config.max_minutes:
            return (
                "budget.max_minutes",
                f"ran {wall / 60:.3g} minutes of budget.max_minutes {config.max_minutes:g}",
            )
        return None

    def check(self, store, run_id: str, step: int) -> StepOrders:
        """After a step: a checkpoint and a stop when a limit is reached (noted in the run's ``stops``)."""
        reached = self.reached()
        if reached is None:
            return StepOrders()
        cause, said = reached
        reason = f"{said} at step {step}"
        record_stop(store, run_id, step, cause, reason)
        return StepOrders(checkpoint=True, stop=reason)

    def summary(self) -> dict[str, float]:
        """The run summary's ``cost``: ``usd``, ``tokens``, ``flops``, ``wall_seconds`` and the prices."""
        return {
            "usd": self.usd,
            **{name: self.counts[name] for name in COUNTS},
            "usd_per_hour": self.config.usd_per_hour,
            "usd_per_million_tokens": self.config.usd_per_million_tokens,
        }


def refuse_if_spent(config: BudgetConfig, totals: dict, run_id: str) -> None:
    """A run resumed under a limit it already reached would stop again after one step: say so instead."""
    reached = Budget(config, {"cost": dict(totals.get("cost") or {})}, 0, 0.0).reached()
    if reached is not None:
        cause, said = reached
        flag = "--budget-usd" if cause == "budget.max_usd" else "--budget-minutes"
        raise RewardlabError(f"run '{run_id}' already {said}: resume it with a larger {cause} ({flag})")
