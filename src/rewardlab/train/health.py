"""Live run health: alerts raised while a train run goes, from the metrics it has logged so far.

After each step the trainer hands the step's metrics to :meth:`RunHealth.after_step`, which judges the
history so far by the rules below (thresholds in :class:`~rewardlab.config.sections.HealthConfig`):

* ``entropy_collapse``: ``entropy`` below a fraction of its early level, or below an absolute floor;
* ``clip_spike``: ``clip/low_fraction + clip/high_fraction`` above a ceiling;
* ``kl_blowup``: ``kl`` (logged with ``beta > 0``) above a ceiling;
* ``grad_norm_spike``: ``grad_norm`` above a multiple of its own recent median;
* ``length_explosion`` and ``truncation_surge``: ``completion/mean_length`` a multiple of its early level,
  ``completion/truncated_fraction`` well above its early level;
* ``no_signal``: every group scored alike (``groups/zero_std_fraction == 1``) for several steps in a row;
* ``reward_hacking``: the audit's test (:func:`rewardlab.rubrics.audit.audit_series`) on the steps so far.

An alert fires when its condition starts to hold: one warning line, the metric ``alerts/<name>`` = 1 at that
step and an entry in the run summary's ``alerts``. It fires again only after its condition was clear for
``rearm_steps`` steps, so one that keeps holding prints once. Its action (``warn``, ``checkpoint``, ``stop``)
comes back to the trainer as :class:`StepOrders`. The judgement is a pure function of the metric history, so
a resumed run replays the history it kept and goes on exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from rich.markup import escape

from rewardlab.config.sections import HealthConfig
from rewardlab.console import say
from rewardlab.rubrics.audit import audit_series, flag_component
from rewardlab.runs import RunStore

Metrics = Mapping[str, float]


@dataclass
class StepOrders:
    """What the trainer does after a step: save a checkpoint now, and whether (and why) it stops."""

    checkpoint: bool = False
    stop: str | None = None  # the reason, a line

    def __or__(self, other: StepOrders) -> StepOrders:
        return StepOrders(self.checkpoint or other.checkpoint, self.stop or other.stop)


@dataclass
class Alert:
    name: str
    step: int
    message: str
    action: str

    def record(self) -> dict:
        return {"name": self.name, "step": self.step, "message": self.message, "action": self.action}


@dataclass
class Finding:
    """A rule that holds at this step: which alert, what for (a component, for reward hacking), the text."""

    name: str
    message: str
    key: str = ""  # tells apart findings of one alert (the component); debounced separately


@dataclass
class History:
    """Each metric's values so far: ``series`` in step order (NaN where a step did not log it), and
    ``values`` without the gaps."""

    steps: int = 0
    series: dict[str, list[float]] = field(default_factory=dict)
    logged: dict[str, list[float]] = field(default_factory=dict)

    def add(self, metrics: Metrics) -> None:
        self.steps += 1
        for name in metrics.keys() | self.series.keys():
            values = self.series.setdefault(name, [math.nan] * (self.steps - 1))
            value = metrics.get(name)
            value = math.nan if value is None else float(value)
            values.append(value)
            if not math.isnan(value):
                self.logged.setdefault(name, []).append(value)

    def values(self, name: str) -> list[float]:
        return self.logged.get(name, [])


def _early(values: list[float], baseline_steps: int) -> float | None:
    """The early level the last value is judged against: the mean of the first ``baseline_steps`` values,
    or of all values before the last while the run is younger than that."""
    before = values[: min(baseline_steps, len(values) - 1)]
    return sum(before) / len(before) if before else None


def entropy_collapse(history: History, config: HealthConfig) -> list[Finding]:
    values = history.values("entropy")
    if not values:
        return []
    now, early = values[-1], _early(values, config.baseline_steps)
    if now < config.entropy_min:
        return [Finding("entropy_collapse", f"entropy {now:.3g} is below the floor {config.entropy_min:g}")]
    if early and now < config.entropy_min_fraction * early:
        return [
            Finding(
                "entropy_collapse",
                f"entropy {now:.3g} is below {config.entropy_min_fraction:g} x its early level {early:.3g} "
                f"(threshold {config.entropy_min_fraction * early:.3g})",
            )
        ]
    return []


def clip_spike(history: History, config: HealthConfig) -> list[Finding]:
    low, high = history.series.get("clip/low_fraction", []), history.series.get("clip/high_fraction", [])
    if not low or not high or math.isnan(low[-1] + high[-1]):
        return []
    clipped = low[-1] + high[-1]
    if clipped > config.clip_fraction_max:
        return [
            Finding(
                "clip_spike",
                f"clipped fraction {clipped:.3g} (low + high) is above {config.clip_fraction_max:g}",
            )
        ]
    return []


def kl_blowup(history: History, config: HealthConfig) -> list[Finding]:
    values = history.series.get("kl", [])
    if values and values[-1] > config.kl_max:
        return [Finding("kl_blowup", f"kl {values[-1]:.3g} is above {config.kl_max:g}")]
    return []


def grad_norm_spike(history: History, config: HealthConfig) -> list[Finding]:
    values = history.values("grad_norm")
    before = values[:-1][-config.grad_norm_window :]
    if len(before) < config.baseline_steps:
        return []
    median = statistics.median(before)
    limit = config.grad_norm_factor * median
    if median > 0 and values[-1] > limit:
        return [
            Finding(
                "grad_norm_spike",
                f"grad_norm {values[-1]:.3g} is above {config.grad_norm_factor:g} x its recent median "
                f"{median:.3g} (threshold {limit:.3g})",
            )
        ]
    return []


def length_and_truncation(history: History, config: HealthConfig) -> list[Finding]:
    found = []
    lengths = history.values("completion/mean_length")
    early = _early(lengths, config.baseline_steps) if lengths else None
    if early and lengths[-1] > config.length_factor * early:
        found.append(
            Finding(
                "length_explosion",
                f"completion/mean_length {lengths[-1]:.3g} is above {config.length_factor:g} x its early "
                f"level {early:.3g} (threshold {config.length_factor * early:.3g})",
            )
        )
    cut = history.values("completion/truncated_fraction")
    early = _early(cut, config.baseline_steps) if cut else None
    if early is not None and cut[-1] >= early + config.truncation_rise:
        found.append(
            Finding(
                "truncation_surge",
                f"completion/truncated_fraction {cut[-1]:.3g} is {config.truncation_rise:g} or more above "
                f"its early level {early:.3g} (threshold {early + config.truncation_rise:.3g})",
            )
        )
    return found


def no_signal(history: History, config: HealthConfig) -> list[Finding]:
    values = history.series.get("groups/zero_std_fraction", [])
    recent = values[-config.no_signal_steps :]
    if len(recent) == config.no_signal_steps and all(value == 1.0 for value in recent):
        return [
            Finding(
                "no_signal",
                f"for {config.no_signal_steps} steps every group scored the same (groups/zero_std_fraction "
                "= 1), so there is nothing to learn from; if rewards are all zero, prime the model first "
                "(rewardlab sft)",
            )
        ]
    return []


def reward_hacking(history: History, config: HealthConfig, rubric: Mapping | None) -> list[Finding]:
    """The audit's trend test (``rewardlab audit``) on the steps so far: a rewarded auxiliary that rose more
    than the primary, or a measurement that doubled while the primary stayed flat, both beyond noise. The
    audit's share flag (a component that is most of the reward) describes a rubric, not a change, and is not
    an alert."""
    if not rubric or history.steps < config.hacking_min_steps:
        return []
    weights, primary = rubric["weights"], rubric["primary"]
    series = {  # steps a component was not logged at are left out, as the audit does
        name: {
            step: value
            for step, value in enumerate(history.series.get(f"reward/{name}", []), 1)
            if not math.isnan(value)
        }
        for name in weights
    }
    if not series.get(primary):
        return []
    components, _ = audit_series(series, weights, primary)
    primary_trend = next(c.trend for c in components if c.name == primary)
    found = []
    for component in components:
        if component.name == primary or component.trend.se is None or primary_trend.se is None:
            continue
        judged = replace(component, flags=[])
        flag_component(judged, primary, primary_trend)
        found += [
            Finding("reward_hacking", f"reward/{component.name} {flag}", component.name)
            for flag in judged.flags
        ]
    return found


RULES: tuple[Callable[[History, HealthConfig], list[Finding]], ...] = (
    entropy_collapse,
    clip_spike,
    kl_blowup,
    grad_norm_spike,
    length_and_truncation,
    no_signal,
)


THEN = {"warn": "", "checkpoint": " (checkpoint saved)", "stop": " (checkpoint saved, run stopped)"}


class Judge:
    """The rules and their debouncing over one run's history: no store, no printing (the benchmark in
    ``benchmarks/health_alerts.py`` runs it on simulated runs)."""

    def __init__(self, config: HealthConfig, rubric: Mapping | None):
        self.config, self.rubric = config, rubric
        self.history = History()
        self.alerts: list[Alert] = []
        self._armed: dict[str, bool] = {}
        self._held: dict[str, int] = {}  # steps in a row each finding has held
        self._clear: dict[str, int] = {}  # steps in a row since it last held

    def step(self, step: int, metrics: Metrics) -> list[Alert]:
        """Add a step's metrics; the alerts that fire at it."""
        if not self.config.enabled:
            return []
        self.history.add(metrics)
        findings = [f for rule in RULES for f in rule(self.history, self.config)]
        findings += reward_hacking(self.history, self.config, self.rubric)
        holding = {f"{f.name}:{f.key}": f for f in findings}
        fired = []
        for key in self._armed.keys() | holding.keys():
            if key not in holding:
                self._held[key] = 0
                self._clear[key] = self._clear.get(key, 0) + 1
                if self._clear[key] >= self.config.rearm_steps:
                    self._armed[key] = True
                continue
            finding = holding[key]
            self._clear[key] = 0
            self._held[key] = self._held.get(key, 0) + 1
            # A trend test judged afresh every step would, by chance alone, pass now and then: reward hacking
            # must hold several steps in a row (benchmarks/health_alerts.py measures the difference).
            needed = self.config.hacking_hold_steps if finding.name == "reward_hacking" else 1
            if self._armed.get(key, True) and self._held[key] >= needed:
                self._armed[key] = False
                fired.append(Alert(finding.name, step, finding.message, self.config.action(finding.name)))
        fired.sort(key=lambda alert: (alert.name, alert.message))
        self.alerts += fired
        return fired


class RunHealth:
    """The alerts of one train run. ``after_step`` judges, prints, records and returns what to do."""

    def __init__(
        self,
        config: HealthConfig,
        store: RunStore,
        run_id: str,
        resumed_after: int = 0,
        also_log: Callable[[int, Metrics], None] | None = None,
    ):
        """``also_log(step, metrics)`` gets the ``alerts/<name>`` metrics the store gets (the trackers)."""
        self.config, self.store, self.run_id = config, store, run_id
        self.also_log = also_log
        self.judge = Judge(config, (store.get(run_id).summary or {}).get("rubric"))
        if resumed_after:
            self._replay(resumed_after)
        elif config.enabled:
            store.update_summary(run_id, {"alerts": []})  # watched, and nothing fired yet

    @property
    def alerts(self) -> list[Alert]:
        return self.judge.alerts

    def _replay(self, last_step: int) -> None:
        """Judge the kept history again, silently, so that debouncing and the alerts list are as they were
        when the run reached ``last_step`` (alerts of steps after it, which are re-run, are dropped)."""
        for row in self.store.metric_table(self.run_id):
            if row["step"] <= last_step:
                logged = {k: v for k, v in row.items() if k != "step" and v is not None}
                self.judge.step(row["step"], {k: v for k, v in logged.items() if not k.startswith("alerts/")})
        kept = {"alerts": [alert.record() for alert in self.alerts]}
        stops = (self.store.get(self.run_id).summary or {}).get("stops")
        if stops:
            kept["stops"] = [stop for stop in stops if stop["step"] <= last_step]
        self.store.update_summary(self.run_id, kept)

    def after_step(self, step: int, metrics: Metrics) -> StepOrders:
        """Judge the history with this step's metrics; print and record what fired; what to do now."""
        fired = self.judge.step(step, metrics)
        if not fired:
            return StepOrders()
        fired_metrics = {f"alerts/{alert.name}": 1.0 for alert in fired}
        self.store.log_metrics(self.run_id, step, fired_metrics)
        if self.also_log is not None:
            self.also_log(step, fired_metrics)
        self.store.update_summary(self.run_id, {"alerts": [a.record() for a in self.alerts]})
        orders = StepOrders()
        for alert in fired:
            said = f"{alert.name} at step {step}: {alert.message}{THEN[alert.action]}"
            say(f"[yellow]warning:[/] {escape(said)}", soft_wrap=True)
            orders = orders | StepOrders(checkpoint=alert.action in ("checkpoint", "stop"))
            if alert.action == "stop" and not orders.stop:
                orders.stop = f"health alert {alert.name} at step {step}: {alert.message}"
                record_stop(self.store, self.run_id, step, f"health.{alert.name}", orders.stop)
        return orders


def record_stop(store: RunStore, run_id: str, step: int, cause: str, reason: str) -> None:
    """Note in the summary's ``stops`` why the run stopped at ``step``: ``cause`` names the alert or limit
    (``health.entropy_collapse``, ``budget.max_usd``), ``reason`` says it in a line. A resumed run keeps
    the notes of its earlier stops: they are its history."""
    stops = (store.get(run_id).summary or {}).get("stops") or []
    store.update_summary(run_id, {"stops": [*stops, {"step": step, "cause": cause, "reason": reason}]})
