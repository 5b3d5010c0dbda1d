"""A curriculum for ``rewardlab train``: which difficulty level each step's prompts come from.

Levels are read from every training example's ``info["level"]`` (a number; lower is easier, as in every
built-in environment). The run starts on the easiest level and moves up one level at a time:

* ``fixed``: after ``steps_per_level`` steps (by default ``max_steps`` shared equally among the levels);
* ``adaptive``: once the pass rate on the current level, over its rollouts of the last ``window`` steps,
  reaches ``promote_at``. A rollout passes when the rubric's primary component (correctness) is at least
  ``pass_threshold``; an errored rollout fails, so a level whose reward breaks is never passed.

Either way ``review_share`` of each step's prompts (rounded down) come from the levels already left behind,
each review prompt's level drawn uniformly among them with a generator seeded by (seed, step).

Within a level, examples are drawn as consecutive slices of seeded per-epoch shuffles of that level's
examples, as the trainer draws from the whole pool without a curriculum. Everything a draw depends on (the
step, the seed, the current level, how many examples of each level were drawn so far, the pass-rate window)
is in :meth:`Curriculum.state`, which rides in the checkpoint's counters: a resumed run draws the same
prompts and promotes at the same steps as an uninterrupted one.
"""

from __future__ import annotations

import functools
import math
import random
from collections import defaultdict
from typing import Any

from rewardlab.config import TrainConfig
from rewardlab.config.sections import CurriculumConfig
from rewardlab.console import say
from rewardlab.errors import RewardlabError
from rewardlab.types import Example, ScoredRollout

STATE_KEY = "curriculum"  # where the state lives in the checkpoint's counters, and in the run summary


def example_levels(pool: list[Example], env_name: str, mode: str) -> list[Any]:
    """Each example's level, or a one-line error naming the environment and the field."""
    levels = []
    for example in pool:
        if "level" not in example.info:
            raise RewardlabError(
                f"curriculum.mode = '{mode}' needs info['level'] on every training example; environment "
                f"'{env_name}' has none on example '{example.id}'"
            )
        level = example.info["level"]
        if isinstance(level, bool) or not isinstance(level, int | float):
            raise RewardlabError(
                f"curriculum orders levels by info['level'], a number (lower is easier); environment "
                f"'{env_name}' has {level!r} on example '{example.id}'"
            )
        levels.append(level)
    return levels


@functools.lru_cache(maxsize=16)
def level_order(size: int, seed: int, level: Any, epoch: int) -> tuple[int, ...]:
    """The seeded shuffle of one level's examples for one epoch."""
    order = list(range(size))
    random.Random(f"{seed}:level-{level}:{epoch}").shuffle(order)
    return tuple(order)


class Curriculum:
    """Draws each step's examples level by level and moves up on a schedule or on the pass rate."""

    def __init__(
        self,
        config: CurriculumConfig,
        pool: list[Example],
        env_name: str,
        per_step: int,
        seed: int,
        max_steps: int,
        primary: str | None,
    ):
        self.config = config
        self.per_step = per_step
        self.seed = seed
        self.primary = primary
        by_level: dict[Any, list[Example]] = defaultdict(list)
        for example, level in zip(pool, example_levels(pool, env_name, config.mode), strict=True):
            by_level[level].append(example)
        if not by_level:
            raise RewardlabError(f"environment '{env_name}' has no training examples to make a curriculum of")
        self.by_level = dict(by_level)
        self.levels = sorted(by_level)
        self.steps_per_level = config.steps_per_level or math.ceil(max_steps / len(self.levels))
        self.current = 0  # index into self.levels
        self.window: list[tuple[int, int]] = []  # (passed, rollouts) on the current level, one per step
        self.drawn: dict[Any, int] = dict.fromkeys(self.levels, 0)
        self.promotions: list[dict[str, Any]] = []
        self._totals: dict | None = None
        self._store = None
        self._run_id: str | None = None

    @classmethod
    def for_run(cls, config: TrainConfig, pool: list[Example], env) -> Curriculum | None:
        """The run's curriculum, or ``None`` when ``curriculum.mode`` is off (the trainer's own order)."""
        if config.curriculum.mode == "off":
            return None
        return cls(
            config.curriculum,
            pool,
            env.name,
            config.prompts_per_step,
            config.seed,
            config.max_steps,
            env.rubric.primary,
        )

    # -- state: in the checkpoint, so a resumed run goes on exactly ------------------------------------

    def state(self) -> dict[str, Any]:
        return {
            "mode": self.config.mode,
            "level": self.levels[self.current],
            "window": [list(entry) for entry in self.window],
            "drawn": [[level, count] for level, count in self.drawn.items()],
            "promotions": [dict(event) for event in self.promotions],
        }

    def load_state(self, state: dict[str, Any]) -> None:
        if state["mode"] != self.config.mode or state["level"] not in self.levels:
            raise RewardlabError(
                f"this run's checkpoint holds a '{state['mode']}' curriculum at level {state['level']!r}; "
                f"resume it with curriculum.mode = '{state['mode']}' and the same environment levels"
            )
        self.current = self.levels.index(state["level"])
        self.window = [(passed, count) for passed, count in state["window"]]
        self.drawn = {**dict.fromkeys(self.levels, 0), **{level: count for level, count in state["drawn"]}}
        self.promotions = [dict(event) for event in state["promotions"]]

    def restore(self, totals: dict, start_step: int, run_id: str) -> None:
        """Go on from a checkpoint's counters; refused (before the run is touched) when the checkpoint holds
        no curriculum, or another mode's."""
        if STATE_KEY not in totals:
            raise RewardlabError(
                f"run {run_id} trained {start_step} steps without a curriculum; resume it with "
                "curriculum.mode = 'off'"
            )
        self.load_state(totals[STATE_KEY])

    def attach(self, totals: dict, store, run_id: str) -> None:
        """Keep the state in the run's counters (saved with every checkpoint) from now on, and the run
        summary's ``curriculum`` list equal to this history's promotions."""
        self._totals, self._store, self._run_id = totals, store, run_id
        totals[STATE_KEY] = self.state()
        store.update_summary(run_id, {STATE_KEY: self.promotions})

    # -- drawing -------------------------------------------------------------------------------------------

    @property
    def level(self) -> Any:
        return self.levels[self.current]

    def review_count(self) -> int:
        return int(self.config.review_share * self.per_step) if self.current > 0 else 0

    def examples_for_step(self, step: int) -> list[Example]:
        """``step``'s examples: the current level's, then the review prompts from easier levels."""
        reviews = self.review_count()
        chosen = self._take(self.level, self.per_step - reviews)
        rng = random.Random(f"{self.seed}:review:{step}")
        for _ in range(reviews):
            chosen += self._take(rng.choice(self.levels[: self.current]), 1)
        return chosen

    def _take(self, level: Any, count: int) -> list[Example]:
        examples = self.by_level[level]
        start = self.drawn[level]
        self.drawn[level] = start + count
        taken = []
        for position in range(start, start + count):
            epoch, index = divmod(position, len(examples))
            taken.append(examples[level_order(len(examples), self.seed, level, epoch)[index]])
        return taken

    # -- after scoring ---------------------------------------------------------------------------------

    def passed(self, scored: ScoredRollout) -> bool:
        value = scored.components.get(self.primary) if self.primary else scored.reward
        return not scored.errored and value is not None and value >= self.config.pass_threshold

    def observe(self, step: int, scored: list[ScoredRollout]) -> dict[str, float]:
        """Take in ``step``'s scored rollouts: per-level metrics, and a promotion when it is due."""
        rewards: dict[Any, list[float]] = defaultdict(list)
        passes: dict[Any, list[bool]] = defaultdict(list)
        for rollout in scored:
            level = rollout.rollout.example.info["level"]
            passes[level].append(self.passed(rollout))
            if not rollout.errored:
                rewards[level].append(rollout.reward)
        level = self.level
        self.window = [*self.window, (sum(passes[level]), len(passes[level]))][-self.config.window :]
        rate = sum(p for p, _ in self.window) / max(sum(c for _, c in self.window), 1)
        metrics: dict[str, float] = {"curriculum/level": float(level), "curriculum/pass_rate": rate}
        for each in sorted(passes):
            metrics[f"pass/level_{each}"] = sum(passes[each]) / len(passes[each])
            if rewards[each]:
                metrics[f"reward/level_{each}"] = sum(rewards[each]) / len(rewards[each])
        if self.current + 1 < len(self.levels) and self._due(step, rate):
            self._promote(step, rate)
        if self._totals is not None:
            self._totals[STATE_KEY] = self.state()
        return metrics

    def _due(self, step: int, rate: float) -> bool:
        if self.config.mode == "fixed":
            return step // self.steps_per_level > self.current
        return len(self.window) == self.config.window and rate >= self.config.promote_at

    def _promote(self, step: int, rate: float) -> None:
        event = {"step": step, "from": self.level, "to": self.levels[self.current + 1], "pass_rate": rate}
        say(
            f"curriculum: level {event['from']} -> {event['to']} after step {step} "
            f"(pass rate {rate:.2f} over its last {len(self.window)} step{'s' * (len(self.window) != 1)})"
        )
        self.current += 1
        self.window = []
        self.promotions.append(event)
        if self._store is not None:
            self._store.update_summary(self._run_id, {STATE_KEY: self.promotions})
