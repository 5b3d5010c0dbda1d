"""Which groups a step trains on: all it drew, or, with DAPO's dynamic sampling, only those with signal.

A group whose rewards are all equal has advantage 0 everywhere: it teaches nothing, yet it counts in the
loss's token and sequence normalisers, so a batch that is half silent takes half a step, and the step size
drifts with the silent fraction. Dynamic sampling drops such groups and draws more prompts until
``prompts_per_step`` groups with signal are in hand, or ``max_draws`` rounds have been sampled.

Every draw is a pure function of (seed, step, round): the first round is the step's regular slice of the
epoch order, later rounds a seeded sample of the pool. A resumed run draws the same prompts, and the
regular epoch order of later steps is not disturbed by how many extra prompts a step needed.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

import torch

from rewardlab.config import TrainConfig
from rewardlab.envs.base import Environment
from rewardlab.sampling.base import Sampler, SamplingParams
from rewardlab.train.grpo import group_advantages
from rewardlab.types import Example, Rollout, ScoredRollout


@dataclass
class Drawn:
    """What one step sampled, and the part of it that it trains on."""

    rollouts: list[Rollout]  # every rollout sampled this step, all rounds
    scored: list[ScoredRollout]  # the same, scored
    zero_std: torch.Tensor  # (groups drawn,) True where a group's rewards were all equal
    train: list[ScoredRollout]  # whole groups, in draw order: what the update sees
    draws: int  # rounds of sampling this step took


def extra_examples(pool: list[Example], step: int, draw: int, per_step: int, seed: int) -> list[Example]:
    """The prompts of round ``draw`` (2, 3, ...) of ``step``: a seeded sample of the pool."""
    return random.Random(f"{seed}:{step}:draw{draw}").sample(pool, min(per_step, len(pool)))


def rewards_of(scored: list[ScoredRollout]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards and validity (the reward could be computed) as the advantage functions take them."""
    rewards = torch.tensor([s.reward for s in scored], dtype=torch.float32)
    valid = torch.tensor([not s.errored for s in scored])
    return rewards, valid


def draw_groups(
    env: Environment,
    sampler: Sampler,
    params: SamplingParams,
    config: TrainConfig,
    pool: list[Example],
    step: int,
    first: list[Example],
    check: Callable[[list[ScoredRollout]], None],
    seeds: Callable[[int, int], list[int]] | None = None,
) -> Drawn:
    """Sample and score the step's groups (``first`` are its regular prompts); ``check`` sees each round's
    scored rollouts first (the trainer stops a run whose rewards all error). ``seeds(round, count)``, when
    given, are the round's group seeds (see ``Environment.rollout``); without, a round is one stream."""
    size = config.group_size
    wanted = config.prompts_per_step * size
    dynamic = config.dynamic_sampling.enabled
    rollouts: list[Rollout] = []
    scored: list[ScoredRollout] = []
    silent: list[torch.Tensor] = []
    with_signal: list[ScoredRollout] = []
    examples, draws = first, 0
    while True:
        draws += 1
        new_rollouts = env.rollout(sampler, examples, params, seeds(draws, len(examples)) if seeds else None)
        new_scored = env.rubric.score(new_rollouts)
        check(new_scored)
        rewards, valid = rewards_of(new_scored)
        _, zero_std = group_advantages(rewards, size, valid=valid)
        rollouts += new_rollouts
        scored += new_scored
        silent.append(zero_std)
        for group, no_signal in enumerate(zero_std.tolist()):
            if not no_signal:
                with_signal += new_scored[group * size : (group + 1) * size]
        if not dynamic or len(with_signal) >= wanted or draws >= config.dynamic_sampling.max_draws:
            break
        examples = extra_examples(pool, step, draws + 1, config.prompts_per_step, config.seed)
    # Without dynamic sampling, everything drawn; with it, the groups with signal (a full batch when found;
    # if no group had any, the first round's, as a step without dynamic sampling would).
    train = scored if not dynamic else (with_signal[:wanted] or scored[:wanted])
    return Drawn(rollouts, scored, torch.cat(silent), train, draws)
