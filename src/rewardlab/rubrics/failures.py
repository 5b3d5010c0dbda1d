"""When every rollout errored: a broken reward function or environment, not a model that scored badly.

Some errored rollouts are counted and left out of the statistics. All of them erroring leaves nothing to
average or learn from, so evaluation and training stop with one line naming the component and its message.
"""

from __future__ import annotations

from collections.abc import Sequence

from rewardlab.errors import RewardlabError
from rewardlab.types import ScoredRollout


class AllRolloutsErrored(RewardlabError):
    """Every rollout of an evaluation, or of a training run so far, errored."""


def describe_failure(scored: ScoredRollout) -> str:
    """``reward function 'name' raised ValueError: ...`` or the rollout's own error, for one rollout."""
    if scored.rollout.error is not None:
        return scored.rollout.error
    name, message = next(iter(scored.errors.items()))
    return f"reward function '{name}': {message}"


def raise_if_all_errored(scored: Sequence[ScoredRollout], what: str = "rollouts") -> None:
    if scored and all(s.errored for s in scored):
        raise AllRolloutsErrored(
            f"all {len(scored)} {what} errored, so there is nothing to score; "
            f"the first: {' '.join(describe_failure(scored[0]).split())}"
        )
