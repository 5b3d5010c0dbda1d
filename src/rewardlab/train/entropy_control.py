"""Entropy control: an adaptive entropy bonus (Skywork-OR1) and the token selections of Clip-Cov and
KL-Cov (Cui et al. 2025). The math is in :mod:`rewardlab.train.grpo`; this holds the state between steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rewardlab.config.sections import EntropyControlConfig
from rewardlab.train.grpo import clip_cov_selection, kl_cov_selection, token_covariance


@dataclass
class AdaptiveEntropyBonus:
    """Skywork-OR1's adaptive entropy control: the coefficient climbs by ``step`` while the sampled
    entropy is below ``target`` and falls by ``step`` (not below 0) while it is above; the bonus applies
    only while the entropy is below the target. The entropy it reacts to is the previous step's (the
    coefficient must be fixed before the step's backward passes), so it is one step behind."""

    target: float | None
    step: float
    ceiling: float
    coef: float = 0.0
    last_entropy: float | None = None

    @property
    def active(self) -> bool:
        return self.target is not None and self.last_entropy is not None and self.last_entropy < self.target

    @property
    def current(self) -> float:
        """The coefficient this step's loss uses."""
        return self.coef if self.active else 0.0

    def update(self, entropy: float) -> None:
        """After a step: move the coefficient by what that step's sampled entropy says."""
        if self.target is None:
            return
        change = self.step if entropy < self.target else -self.step
        self.coef = min(self.ceiling, max(0.0, self.coef + change))
        self.last_entropy = entropy

    def state(self) -> dict[str, float]:
        """For the checkpoint's counters (floats), so a resumed run continues with the same coefficient."""
        if self.target is None:
            return {}
        state = {"entropy_coef": self.coef}
        if self.last_entropy is not None:
            state["entropy_last"] = self.last_entropy
        return state

    def restore(self, totals: dict[str, float]) -> None:
        self.coef = float(totals.get("entropy_coef", 0.0))
        self.last_entropy = totals.get("entropy_last")


def bonus_for(config: EntropyControlConfig) -> AdaptiveEntropyBonus:
    return AdaptiveEntropyBonus(config.target, config.coef_step, config.coef_max)


def covariance_selections(
    config: EntropyControlConfig,
    logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    draw: tuple[int, ...],
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The (Clip-Cov, KL-Cov) token selections of one micro-batch, None for a method that is off.

    ``draw`` (seed, step, pass, micro-batch) seeds Clip-Cov's random choice, so a resumed run draws the same
    tokens; the generator is only made when Clip-Cov is on."""
    if not (config.clip_cov_fraction or config.kl_cov_fraction):
        return None, None
    covariance = token_covariance(logprobs, advantages, mask)
    clip = None
    if config.clip_cov_fraction:
        clip = clip_cov_selection(
            covariance,
            mask,
            config.clip_cov_fraction,
            config.cov_low,
            config.cov_high,
            torch.Generator().manual_seed(hash(draw)),
        )
    kl = kl_cov_selection(covariance, mask, config.kl_cov_fraction) if config.kl_cov_fraction else None
    return clip, kl
