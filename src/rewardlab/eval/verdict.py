"""The verdict on a comparison: is B better than A by a margin worth paying for, on data neither saw?

PASS when, on held-out data and on fresh data, the relative gain of B over A on the rubric's primary
component reaches the bar (``CompareConfig.verdict_min_relative_gain``, 10% by default) and the lower bound
of its paired 95% interval is above 0. Any condition missed is a FAIL that names it, with its numbers. A
comparison without both modes gets no verdict: the held-out split is the one settings get chosen on, and
fresh data, generated for the comparison, is the one nothing could have been tuned to.

Beside the verdict, what producing B cost per point of improvement: the training runs B descends from that
A does not (:func:`rewardlab.runs.lineage.lineage`), their recorded ``cost`` (dollars, when priced) or
their wall clock, divided by the held-out difference of the primary component's mean, times 100.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rewardlab.config import CompareConfig
from rewardlab.errors import RewardlabError
from rewardlab.eval.compare import DATA_MODES, Comparison, ModeComparison
from rewardlab.runs import Run, RunStore
from rewardlab.runs.store import DB_NAME

VERDICT_MODES = ("held-out", "fresh")
DEFAULT_BAR = CompareConfig.model_fields["verdict_min_relative_gain"].default  # the demo's bar too
TRAINING_KINDS = ("sft", "train")  # the runs whose cost produced a model
# From means 0.4 to 0.44 the gain computes as 0.09999999999999987: exactly at a 10% bar, not below it.
_ROUNDING = 1e-12


@dataclass
class ModeCheck:
    """One data mode against the bar: the gain and its interval, or why it could not be judged."""

    mode: str
    relative: float | None = None
    ci95: tuple[float, float] | None = None
    failed: list[str] = field(default_factory=list)  # the conditions it missed; empty when it passes
    missing: str | None = None  # not run, or skipped (why)

    def line(self, bar: float) -> str:
        """``held-out: +7.0% [-2.0%, +15.0%] — below the 10% bar``."""
        if self.missing is not None:
            return f"{self.mode}: {self.missing}"
        gain = "n/a" if self.relative is None else f"{self.relative:+.1%}"
        interval = f" [{self.ci95[0]:+.1%}, {self.ci95[1]:+.1%}]" if self.ci95 else ""
        outcome = "; ".join(self.failed) if self.failed else f"at least {percent(bar)}, CI above 0"
        return f"{self.mode}: {gain}{interval} — {outcome}"


@dataclass
class TrainingCost:
    """What the training runs behind B cost, summed; ``unknown`` says why there is nothing to sum."""

    runs: list[str] = field(default_factory=list)
    usd: float | None = None  # None unless every run was priced
    wall_seconds: float | None = None  # None unless every run recorded its wall clock
    tokens: int | None = None
    flops: float | None = None
    unknown: str | None = None


@dataclass
class Verdict:
    outcome: str  # "pass", "fail" or "none"
    bar: float
    component: str | None  # the primary component the gains are taken on
    checks: list[ModeCheck]
    hint: str | None = None  # how to add a mode that was not run
    points: float | None = None  # held-out improvement of the primary component's mean, × 100
    cost: TrainingCost | None = None

    @property
    def reasons(self) -> list[str]:
        return [check.line(self.bar) for check in self.checks]

    @property
    def usd_per_point(self) -> float | None:
        return self._per_point(self.cost.usd if self.cost else None)

    @property
    def minutes_per_point(self) -> float | None:
        seconds = self.cost.wall_seconds if self.cost else None
        return self._per_point(None if seconds is None else seconds / 60)

    def _per_point(self, amount: float | None) -> float | None:
        if amount is None or self.points is None or self.points <= 0:
            return None
        return amount / self.points

    def to_dict(self) -> dict:
        """The verdict as the compare (or demo) run's summary records it."""
        return {
            "outcome": self.outcome,
            "bar": self.bar,
            "component": self.component,
            "reasons": self.reasons,
            "modes": {
                c.mode: {"relative": c.relative, "ci95": c.ci95, "missing": c.missing} for c in self.checks
            },
            "hint": self.hint,
            "improvement_points": self.points,
            "cost": asdict(self.cost) if self.cost else None,
            "usd_per_point": self.usd_per_point,
            "minutes_per_point": self.minutes_per_point,
        }


def percent(fraction: float) -> str:
    """``10%``, ``12.5%``: a bar as people write it."""
    return f"{fraction * 100:g}%"


def data_flag(modes_run: list[str]) -> str:
    """The ``--data`` value that keeps the modes run and adds the ones a verdict needs."""
    wanted = set(modes_run) | set(VERDICT_MODES)
    return "--data " + ",".join(mode for mode in DATA_MODES if mode in wanted)


def check_mode(mode: str, comparison: Comparison, bar: float) -> ModeCheck:
    """One mode against the bar: the relative gain on the primary component, and its interval."""
    gain = comparison.relative
    if gain is None:
        return ModeCheck(mode, failed=["no relative gain: the runs record no primary component"])
    if gain.value is None:
        return ModeCheck(mode, failed=[f"no relative gain: {gain.reason.removeprefix('n/a: ')}"])
    failed = []
    if gain.value < bar - _ROUNDING:
        failed.append(f"below the {percent(bar)} bar")
    if gain.ci95 is None:
        failed.append(f"no 95% CI to show it is above 0 ({gain.reason})")
    elif gain.ci95[0] <= 0:
        failed.append("the 95% CI's lower bound is not above 0")
    return ModeCheck(mode, gain.value, gain.ci95, failed)


def judge(
    results: list[ModeComparison],
    bar: float = DEFAULT_BAR,
    hint: str | None = None,
    cost: TrainingCost | None = None,
) -> Verdict:
    """The verdict on a comparison's modes (``ModeComparison`` per data mode; other modes are ignored).

    ``hint`` says how to add a mode that was not run (``add it with --data held-out,fresh``); ``cost`` is what
    producing B took (:func:`training_cost`), priced per point of the held-out improvement.
    """
    by_mode = {result.mode: result for result in results}
    checks = []
    for mode in VERDICT_MODES:
        result = by_mode.get(mode)
        if result is None:
            checks.append(ModeCheck(mode, missing="not run" + (f"; {hint}" if hint else "")))
        elif result.skipped or result.comparison is None:
            checks.append(ModeCheck(mode, missing=f"skipped ({result.skipped})"))
        else:
            checks.append(check_mode(mode, result.comparison, bar))
    if any(check.missing for check in checks):
        outcome = "none"
    else:
        outcome = "fail" if any(check.failed for check in checks) else "pass"
    held_out = by_mode.get("held-out")
    comparison = held_out.comparison if held_out is not None else None
    component = next(
        (r.comparison.relative.component for r in results if r.comparison and r.comparison.relative), None
    )
    hint = hint if any(mode not in by_mode for mode in VERDICT_MODES) else None
    return Verdict(outcome, bar, component, checks, hint, _points(comparison, component), cost)


def verdict_of_models(
    store: RunStore, results: list[ModeComparison], config: CompareConfig, side_a: dict, side_b: dict
) -> Verdict:
    """``compare A B`` of two models: its modes judged, B's training priced (an endpoint's is unknown)."""
    cost = training_cost(store, _local(side_b), _local(side_a), config.label_a, config.label_b)
    hint = "add it with " + data_flag([result.mode for result in results])
    return judge(results, config.verdict_min_relative_gain, hint, cost)


_MODE_OF_SPLIT = {"eval": "held-out", "fresh": "fresh"}


def verdict_of_runs(store: RunStore, comparison: Comparison, config: CompareConfig) -> Verdict:
    """``compare RUN_A RUN_B`` of two eval runs: one split, so no verdict, but what B's model cost."""
    run_a, run_b = store.get(comparison.run_a), store.get(comparison.run_b)
    model_a, model_b = (_local(run.config.get("model") or {}) for run in (run_a, run_b))
    cost = training_cost(store, model_b, model_a, config.label_a, config.label_b)
    split = run_b.config.get("split")
    result = ModeComparison(_MODE_OF_SPLIT.get(split, split), comparison)
    hint = "compare the two models themselves with --data held-out,fresh"
    return judge([result], config.verdict_min_relative_gain, hint, cost)


def _local(model: dict) -> str | None:
    """A local model's name or path; None for an endpoint, whose training is not on record."""
    return None if model.get("base_url") else model.get("name_or_path")


def _points(comparison: Comparison | None, component: str | None) -> float | None:
    """The held-out difference of the primary component's mean, in points (× 100)."""
    if comparison is None or component not in comparison.components:
        return None
    return comparison.components[component].mean_diff * 100


def training_cost(
    store: RunStore, model_b: str | None, model_a: str | None, label_a: str = "A", label_b: str = "B"
) -> TrainingCost:
    """The cost of the training runs (SFT and GRPO) ``model_b`` descends from and ``model_a`` does not: what
    it took to go from A to B. ``model_b`` None is an endpoint, whose training is not on record."""
    from rewardlab.runs.lineage import lineage

    if model_b is None:
        return TrainingCost(unknown=f"{label_b} is an endpoint: the runs that trained it are not on record")
    shared = set(lineage(model_a, store)) if model_a else set()
    runs = [_run_of(store, path) for path in lineage(model_b, store) if path not in shared]
    runs = [run for run in runs if run is not None and run.kind in TRAINING_KINDS]
    if not runs:
        beyond = f" beyond {label_a}'s" if shared else ""
        return TrainingCost(unknown=f"{label_b} has no training runs{beyond} in this run store")
    recorded = [_recorded(run) for run in runs]
    cost = TrainingCost(
        [run.id for run in runs],
        *(
            _total([values.get(key) for values in recorded])
            for key in ("usd", "wall_seconds", "tokens", "flops")
        ),
    )
    if cost.usd is None and cost.wall_seconds is None:
        unfinished = ", ".join(
            f"{run.id} ({run.status})" for run in runs if "wall_seconds" not in run.summary
        )
        cost.unknown = f"{label_b}'s training runs record neither a price nor a wall clock: {unfinished}"
    return cost


def _recorded(run: Run) -> dict:
    """A run's ``cost`` (its dollars only when the run had a price: a machine at $0/hour and free tokens is
    unpriced, not free), with the wall clock every finished run records."""
    cost = dict(run.summary.get("cost") or {})
    prices = [cost[key] for key in ("usd_per_hour", "usd_per_million_tokens") if key in cost]
    if prices and not any(prices):
        cost["usd"] = None
    return {**cost, "wall_seconds": run.summary.get("wall_seconds", cost.get("wall_seconds"))}


def _run_of(store: RunStore, path: Path) -> Run | None:
    """The run recorded for a run directory: in this store, or in the store the directory lives in (a model
    trained under another ``--runs-dir``)."""
    try:
        return store.get(path)
    except RewardlabError:
        if not (path.parent / DB_NAME).exists():
            return None
    with RunStore(path.parent) as own:
        try:
            return own.get(path)
        except RewardlabError:
            return None


def _total(values: list) -> float | int | None:
    """The sum, when every run recorded the value (a partial sum would understate the cost)."""
    if not values or any(not isinstance(v, int | float) or isinstance(v, bool) for v in values):
        return None
    return sum(values)


def render(verdict: Verdict, label_b: str = "B") -> list[str]:
    """What ``compare`` prints after its table: the verdict, each mode against the bar, the cost line."""
    component = verdict.component or "the primary component"
    needs = f"{percent(verdict.bar)} relative gain on {component}, its 95% CI above 0"
    headline = {
        "pass": f"verdict: PASS — {label_b} clears the bar on held-out and fresh ({needs})",
        "fail": f"verdict: FAIL — bar: {needs}, on held-out and on fresh",
        "none": "no verdict: needs held-out and fresh",
    }[verdict.outcome]
    return [headline, *(f"  {reason}" for reason in verdict.reasons), cost_line(verdict)]


def cost_line(verdict: Verdict) -> str:
    """``cost: $0.42 (12.3 min of training) → $0.02 per point (+21.0 points on held-out)``."""
    cost = verdict.cost
    if cost is None or cost.unknown:
        return f"cost: unknown — {cost.unknown if cost else 'not looked up'}"
    spent = (
        f"{'unpriced' if cost.usd is None else _usd(cost.usd)} ({_wall(cost.wall_seconds)}, {_n_runs(cost)})"
    )
    if verdict.points is None:
        return f"cost: {spent}; per point: n/a (no held-out difference on the primary component)"
    if verdict.points <= 0:
        return f"cost: {spent} — no improvement to price ({verdict.points:+.1f} points on held-out)"
    if verdict.usd_per_point is not None:
        per_point = f"{_usd(verdict.usd_per_point)} per point"
    else:
        per_point = f"{_amount(verdict.minutes_per_point)} min of training per point"
    return f"cost: {spent} → {per_point} ({verdict.points:+.1f} points on held-out)"


def _wall(seconds: float | None) -> str:
    if seconds is None:
        return "wall clock unknown"
    return f"{seconds:.0f} s of training" if seconds < 60 else f"{seconds / 60:.1f} min of training"


def _usd(amount: float) -> str:
    return f"${_amount(amount)}"


def _amount(value: float) -> str:
    """Two decimals, or two significant digits below 0.1 (a cent per point is 0.0042 at small scale), never
    in scientific notation."""
    if value >= 0.1 or value <= 0:
        return f"{value:,.2f}"
    return f"{value:.{1 - math.floor(math.log10(value))}f}"


def _n_runs(cost: TrainingCost) -> str:
    return f"{len(cost.runs)} run{'s' if len(cost.runs) != 1 else ''}: {', '.join(cost.runs)}"
