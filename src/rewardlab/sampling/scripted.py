"""Scripted players as samplers: ``scripted:oracle``, ``scripted:random`` and whatever an environment ships.

They go through the same rollout path as a model, so an oracle's mean reward near the maximum, and clearly
above a random player's, is evidence that a rubric rewards what it claims to.
"""

from __future__ import annotations

import random
import time

from rewardlab.envs.base import Environment
from rewardlab.errors import RewardlabError
from rewardlab.sampling.base import Generation, Prompt, SamplingParams

PREFIX = "scripted:"


def is_scripted(name: str) -> bool:
    return name.startswith(PREFIX)


class ScriptedSampler:
    """Replies with ``env.policies()[name]``; text only (scripted players cannot be trained)."""

    def __init__(self, env: Environment, name: str, seed: int = 0):
        policy_name = name.removeprefix(PREFIX)
        policies = env.policies()
        if policy_name not in policies:
            known = ", ".join(PREFIX + p for p in policies) or "none"
            raise RewardlabError(
                f"environment '{env.name}' has no scripted policy '{policy_name}' (it has: {known})"
            )
        self.policy = policies[policy_name]
        self.rng = random.Random(seed)

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Generation]]:
        results = []
        for prompt in prompts:
            if prompt.example is None:
                raise RewardlabError(
                    "scripted policies need the episode's example; use them through an environment"
                )
            row = []
            for _ in range(params.n):
                started = time.perf_counter()
                text = self.policy(prompt.messages, prompt.state or {}, prompt.example, self.rng)
                row.append(Generation(text=text, latency_s=time.perf_counter() - started))
            results.append(row)
        return results
