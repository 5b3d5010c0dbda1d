"""Comparing two evaluation runs on the same examples, paired.

Per example, each side's reward is the mean over its rollouts; the difference (B - A) is bootstrapped
over examples for a 95% interval. An errored rollout scores 0 (a model that crashes the environment on
hard problems must not look better for it); when there are errors, the comparison without them is kept
beside. The relative gain is taken on the primary component (correctness), not on the weighted total,
whose format bonuses and sign would change its meaning. Debug samples put the reference answer next to
both outputs, largest disagreements first, so a person can see *what* changed, not only by how much.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from rewardlab.errors import RewardlabError
from rewardlab.eval.stats import PairedComparison, RelativeGain, paired_comparison, relative_gain
from rewardlab.runs import Run, RunStore
from rewardlab.runs.overlap import Overlap

if TYPE_CHECKING:
    from rewardlab.eval.verdict import Verdict


@dataclass
class DebugSample:
    example_id: str
    question: str
    answer: str
    output_a: str
    reward_a: float
    output_b: str
    reward_b: float


@dataclass
class Comparison:
    run_a: str
    run_b: str
    reward: PairedComparison  # errored rollouts scored 0
    components: dict[str, PairedComparison] = field(default_factory=dict)
    samples: list[DebugSample] = field(default_factory=list)
    relative: RelativeGain | None = None  # on the primary component
    reward_without_errors: PairedComparison | None = None  # only when a side has errored rollouts
    errors_a: int = 0
    errors_b: int = 0
    warnings: list[str] = field(default_factory=list)
    overlap_a: Overlap | None = None  # the compared records in each run's model's training data
    overlap_b: Overlap | None = None

    def to_dict(self) -> dict:
        out = {
            "run_a": self.run_a,
            "run_b": self.run_b,
            "reward": paired_dict(self.reward),
            "components": {k: paired_dict(v) for k, v in self.components.items()},
            "relative": relative_dict(self.relative),
            "errors_a": self.errors_a,
            "errors_b": self.errors_b,
            "warnings": self.warnings,
            "overlap_a": self.overlap_a.__dict__ if self.overlap_a else None,
            "overlap_b": self.overlap_b.__dict__ if self.overlap_b else None,
            "samples": [s.__dict__ for s in self.samples],
        }
        if self.reward_without_errors is not None:
            out["reward_without_errors"] = paired_dict(self.reward_without_errors)
        return out


def paired_dict(p: PairedComparison) -> dict:
    return {
        "n": p.n,
        "mean_a": p.mean_a,
        "mean_b": p.mean_b,
        "mean_diff": p.mean_diff,
        "ci95": list(p.ci95),
        "wins": p.wins,
        "ties": p.ties,
        "losses": p.losses,
        "p_value_sign": p.p_value_sign,
        "method": p.method,
    }


def relative_dict(gain: RelativeGain | None) -> dict | None:
    if gain is None:
        return None
    return {
        "component": gain.component,
        "value": gain.value,
        "ci95": list(gain.ci95) if gain.ci95 else None,
        "note": gain.reason,
    }


def _eval_rows(store: RunStore, run: Run) -> list[dict]:
    if run.kind != "eval":
        raise RewardlabError(f"run '{run.id}' is a {run.kind} run; compare needs two eval runs")
    rows = store.rollouts(run.id, phase="eval")
    if not rows:
        raise RewardlabError(f"eval run '{run.id}' has no rollouts")
    return rows


def _total(row: dict) -> float:
    return row["reward"]


def _per_example(rows: list[dict], key=_total, errors_as_zero: bool = True) -> dict[str, float]:
    """Each example's mean score over its rollouts. An errored rollout scores 0 (a component that errored
    is 0 too); with ``errors_as_zero=False`` it is left out, and an example with only errored rollouts
    with it."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        errored = bool(row["errors"]) or bool(row.get("error"))
        value = key(row)
        if errored and errors_as_zero:
            value = 0.0 if key is _total or value is None else value
        if value is not None and (errors_as_zero or not errored):
            grouped[row["example_id"]].append(value)
    return {k: statistics.fmean(v) for k, v in grouped.items() if v}


def _errored(rows: list[dict]) -> int:
    return sum(bool(row["errors"]) or bool(row.get("error")) for row in rows)


# Settings that must match for two eval runs' rollouts to be paired example by example.
PAIRED_SETTINGS = {
    "environment": lambda c: (c.get("env") or {}).get("name"),
    "environment arguments": lambda c: (c.get("env") or {}).get("args") or {},
    "split": lambda c: c.get("split"),
    "temperature": lambda c: (c.get("sampling") or {}).get("temperature"),
    "response format": lambda c: (c.get("sampling") or {}).get("response_format"),
    "rollouts per example": lambda c: c.get("rollouts_per_example"),
}


def settings_mismatch(config_a: dict, config_b: dict) -> str | None:
    """What two eval runs' configs disagree on, of the settings a paired comparison needs equal."""
    differences = [
        f"{name} {get(config_a)!r} vs {get(config_b)!r}"
        for name, get in PAIRED_SETTINGS.items()
        if get(config_a) != get(config_b)
    ]
    return "; ".join(differences) or None


def _text(row: dict) -> str:
    messages = [m for m in row["completion"] if m["role"] == "assistant"]
    return messages[-1]["content"] if messages else ""


def compare_runs(
    store: RunStore,
    a: str,
    b: str,
    num_samples: int = 6,
    seed: int = 0,
    force: bool = False,
    check_overlap: bool = True,
) -> Comparison:
    """Pair eval runs ``a`` and ``b`` by example. Runs whose environment, split, temperature, response format
    or rollouts per example differ are refused (``force`` pairs them anyway, with a warning). Each run's
    records are checked against its model's training data (``check_overlap``; a model comparison checks its
    own)."""
    run_a, run_b = store.get(a), store.get(b)
    rows_a, rows_b = _eval_rows(store, run_a), _eval_rows(store, run_b)
    warnings = []
    mismatch = settings_mismatch(run_a.config, run_b.config)
    if mismatch and not force:
        raise RewardlabError(
            f"eval runs '{run_a.id}' and '{run_b.id}' were not run alike ({mismatch}): their rollouts "
            "cannot be paired; --force pairs them anyway"
        )
    if mismatch:
        warnings.append(f"paired despite different settings: {mismatch}")
    per_a, per_b = _per_example(rows_a, _total), _per_example(rows_b, _total)
    reward = paired_comparison(per_a, per_b, seed=seed)
    only_a, only_b = len(per_a.keys() - per_b.keys()), len(per_b.keys() - per_a.keys())
    if only_a or only_b:
        warnings.append(
            f"{only_a + only_b} examples evaluated on one side only were left out "
            f"(A only: {only_a}, B only: {only_b}); {reward.n} are paired"
        )
    warnings.extend(reward.warnings)
    errors_a, errors_b = _errored(rows_a), _errored(rows_b)
    reward_without_errors = None
    if errors_a or errors_b:
        clean_a = _per_example(rows_a, _total, errors_as_zero=False)
        clean_b = _per_example(rows_b, _total, errors_as_zero=False)
        if clean_a.keys() & clean_b.keys():
            reward_without_errors = paired_comparison(clean_a, clean_b, seed=seed)
        warnings.append(
            f"errored rollouts scored 0: A {errors_a} of {len(rows_a)}, B {errors_b} of {len(rows_b)}"
            + (
                f"; without them the difference is {reward_without_errors.mean_diff:+.3f} "
                f"on {reward_without_errors.n} examples"
                if reward_without_errors
                else "; no example has a clean rollout on both sides"
            )
        )
    primary = run_a.summary.get("primary") or run_b.summary.get("primary")
    components = {}
    names = sorted(
        {name for row in rows_a for name in row["components"]}
        & {name for row in rows_b for name in row["components"]}
    )
    for name in names:
        getter = lambda row, name=name: row["components"].get(name)  # noqa: E731
        scores_a, scores_b = _per_example(rows_a, getter), _per_example(rows_b, getter)
        if scores_a.keys() & scores_b.keys():
            components[name] = paired_comparison(scores_a, scores_b, seed=seed)
    relative = None
    if primary is not None:
        getter = lambda row: row["components"].get(primary)  # noqa: E731
        scores_a, scores_b = _per_example(rows_a, getter), _per_example(rows_b, getter)
        if scores_a.keys() & scores_b.keys():
            relative = relative_gain(scores_a, scores_b, primary, seed=seed)

    first_a = {row["example_id"]: row for row in rows_a if row["sample_index"] == 0}
    first_b = {row["example_id"]: row for row in rows_b if row["sample_index"] == 0}
    # Largest disagreements first: that is where a reader learns what changed.
    ranked = sorted(reward.per_example, key=lambda item: -abs(item[3]))
    samples = []
    for example_id, mean_a, mean_b, _ in ranked[:num_samples]:
        row_a, row_b = first_a.get(example_id), first_b.get(example_id)
        if row_a is None or row_b is None:
            continue
        question = next((m["content"] for m in reversed(row_a["prompt"]) if m["role"] == "user"), "")
        samples.append(
            DebugSample(example_id, question, row_a["answer"], _text(row_a), mean_a, _text(row_b), mean_b)
        )
    overlaps = []
    for run, rows in ((run_a, rows_a), (run_b, rows_b)):
        overlaps.append(_run_overlap(store, run, rows) if check_overlap else None)
        if overlaps[-1] is not None and (overlaps[-1].exact or overlaps[-1].near):
            warnings.append(overlaps[-1].describe(f"{run.id}'s model") + ": this measures memory")
    return Comparison(
        run_a.id,
        run_b.id,
        reward,
        components,
        samples,
        relative=relative,
        reward_without_errors=reward_without_errors,
        errors_a=errors_a,
        errors_b=errors_b,
        warnings=warnings,
        overlap_a=overlaps[0],
        overlap_b=overlaps[1],
    )


def _run_overlap(store: RunStore, run: Run, rows: list[dict]) -> Overlap:
    """The eval run's records found in its model's training data (unchecked for an endpoint, or a model
    that no run trained)."""
    from rewardlab.runs.lineage import training_data_of

    records = list({row["example_id"]: (row["prompt"], row["answer"]) for row in rows}.values())
    model = run.config.get("model") or {}
    if model.get("base_url") or not model.get("name_or_path"):
        return Overlap(False, len(records))
    return _overlap(training_data_of(model["name_or_path"], store), records)


def breakdown(store: RunStore, runs: dict[str, str], key: str, component: str | None = None) -> dict:
    """Mean reward (or ``component``) per value of ``info[key]`` for each labelled eval run.

    Returns ``{value: {label: (mean, count)}}``: e.g. accuracy on problems that need a carry, before and
    after training.
    """
    table: dict[str, dict[str, tuple[float, int]]] = defaultdict(dict)
    for label, run in runs.items():
        grouped: dict[str, list[float]] = defaultdict(list)
        for row in store.rollouts(store.get(run).id, phase="eval"):
            if row["errors"] or key not in (row.get("info") or {}):
                continue
            value = row["components"].get(component) if component else row["reward"]
            if value is not None:
                grouped[str(row["info"][key])].append(value)
        for category, values in grouped.items():
            table[category][label] = (statistics.fmean(values), len(values))
    return dict(table)


DATA_MODES = ("held-out", "fresh", "adversarial")
_SPLIT_OF_MODE = {"held-out": "eval", "fresh": "fresh", "adversarial": "adversarial"}


_COLLECTIONS = (list, tuple, set, frozenset)


def as_id_list(value) -> list | None:
    """A list of ids from an answer: a JSON list (or a list, tuple or set), or an object holding exactly
    one list, such as ``{"selected_event_ids": [...]}``."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    if isinstance(value, dict):
        lists = [v for v in value.values() if isinstance(v, _COLLECTIONS)]
        value = lists[0] if len(lists) == 1 else None
    if isinstance(value, set | frozenset):
        value = sorted(value, key=lambda v: (isinstance(v, str), v))  # a set has no order to show
    if isinstance(value, list | tuple) and all(isinstance(v, str | int | float) for v in value):
        return list(value)
    return None


def gold_view(gold) -> str:
    """The reference answer as shown next to the outputs: its ids for an id-set answer, else as is."""
    ids = as_id_list(gold)
    if ids is not None:
        return str(ids)
    return gold if isinstance(gold, str) else json.dumps(gold)


def answer_view(parser, gold, completion: str) -> str:
    """What a model answered, and for id-set answers which ids it shared with the gold set."""
    parsed = parser.parse_answer(completion) if parser is not None else completion
    predicted, reference = as_id_list(parsed), as_id_list(gold)
    if predicted is not None and reference is not None:
        shared = [i for i in predicted if i in set(reference)]
        return f"{predicted} overlap {shared}"
    if parsed is None:
        return "(no answer)"
    return parsed if isinstance(parsed, str) else json.dumps(parsed)


QUESTION_CHARS = 120  # an event list or a maze board is too long to repeat on every debug line


def debug_line(question: str, gold: str, label_a: str, view_a: str, label_b: str, view_b: str) -> str:
    """``'question'  gold: [3, 7] / base: [3, 9] overlap [3] / tuned: [3, 7] overlap [3, 7]``."""
    question = " ".join(question.split())
    if len(question) > QUESTION_CHARS:
        question = question[: QUESTION_CHARS - 1] + "…"
    return f"{question!r}  gold: {gold} / {label_a}: {view_a} / {label_b}: {view_b}"


@dataclass
class ModeComparison:
    """One data mode of a model-vs-model comparison."""

    mode: str
    comparison: Comparison | None
    summary_a: dict = field(default_factory=dict)
    summary_b: dict = field(default_factory=dict)
    examples: int = 0
    overlap_a: Overlap | None = None  # the records in that side's training data (exact and near)
    overlap_b: Overlap | None = None
    traced_a: bool = True  # False for an endpoint: no run lineage, so its training data is unknown
    traced_b: bool = True

    @property
    def seen_in_training_a(self) -> int | None:
        return self.overlap_a.exact if self.overlap_a else None

    @property
    def seen_in_training_b(self) -> int | None:
        return self.overlap_b.exact if self.overlap_b else None

    views: list[tuple[str, str, str, str]] = field(default_factory=list)  # (question, gold, view a, view b)
    skipped: str | None = None  # why this mode could not run


def check_modes(modes: tuple[str, ...]) -> None:
    """A one-line error for an unknown or missing data mode, before anything is evaluated."""
    unknown = [mode for mode in modes if mode not in _SPLIT_OF_MODE]
    if unknown or not modes:
        named = f"unknown data mode '{unknown[0]}'" if unknown else "no data mode given"
        raise RewardlabError(f"{named} (use: {', '.join(DATA_MODES)}, or all)")


def comparison_environment(config_a, config_b):
    """The environment both sides are evaluated on, its prompts worded for the baseline (for the candidate
    when the baseline is a scripted player)."""
    from rewardlab.envs.registry import load_environment_for

    model = config_a.model if not config_a.model.name_or_path.startswith("scripted:") else config_b.model
    return load_environment_for(config_a.env.name, config_a.env.args, model.name_or_path, model.base_url)


def compare_models(
    store: RunStore,
    config_a,
    config_b,
    modes: tuple[str, ...] = DATA_MODES,
    num_samples: int = 6,
    parent: str | None = None,
    env=None,
) -> list[ModeComparison]:
    """Evaluate two models on exactly the same records in each data mode and compare them paired.

    ``config_a``/``config_b`` are :class:`~rewardlab.config.EvalConfig` objects that differ in the model
    (and endpoint); the environment, sampling, counts and seed come from ``config_a``. A mode the
    environment cannot produce (no adversarial set, say) is skipped with a note in the result list's place.
    Overlap with each side's training data is judged by content (:mod:`rewardlab.runs.overlap`). An
    endpoint's training data cannot be traced (it has no run lineage), nor can a model's that no rewardlab
    run trained: their overlap is "unchecked" (``Overlap.checked``), never zero.
    """
    from rewardlab.eval.evaluate import evaluate, select_examples
    from rewardlab.runs.lineage import training_data_of

    check_modes(modes)
    env = env if env is not None else comparison_environment(config_a, config_b)
    traced_a, traced_b = config_a.model.base_url is None, config_b.model.base_url is None
    trained_a = training_data_of(config_a.model.name_or_path, store) if traced_a else None
    trained_b = training_data_of(config_b.model.name_or_path, store) if traced_b else None
    results: list[ModeComparison] = []
    for mode in modes:
        template = config_a.model_copy(update={"split": _SPLIT_OF_MODE[mode]})
        try:
            examples = select_examples(env, template)
        except RewardlabError as error:
            if mode == "held-out":
                raise
            results.append(
                ModeComparison(mode, None, skipped=str(error), traced_a=traced_a, traced_b=traced_b)
            )
            continue
        records = [(e.prompt, e.answer) for e in examples]
        evals = []
        for config in (config_a, config_b):
            side = config.model_copy(update={"split": template.split, "run_name": f"compare {mode}"})
            side.env = config_a.env
            side.sampling = config_a.sampling
            side.rollouts_per_example = config_a.rollouts_per_example
            side.seed = config_a.seed
            evals.append(evaluate(side, store, parent=parent, env=env, examples=examples))
        comparison = compare_runs(
            store, evals[0].run_id, evals[1].run_id, num_samples=num_samples, check_overlap=False
        )
        views = _views(env, store, evals[0].run_id, evals[1].run_id, comparison)
        results.append(
            ModeComparison(
                mode,
                comparison,
                evals[0].summary,
                evals[1].summary,
                len(examples),
                _overlap(trained_a, records),
                _overlap(trained_b, records),
                traced_a,
                traced_b,
                views,
            )
        )
    return results


def _overlap(trained, records) -> Overlap:
    return trained.check(records) if trained is not None else Overlap(False, len(records))


def _views(
    env, store: RunStore, run_a: str, run_b: str, comparison: Comparison
) -> list[tuple[str, str, str, str]]:
    first = {}
    for run in (run_a, run_b):
        first[run] = {r["example_id"]: r for r in store.rollouts(run, phase="eval") if r["sample_index"] == 0}
    views = []
    for sample in comparison.samples:
        row_a, row_b = first[run_a].get(sample.example_id), first[run_b].get(sample.example_id)
        if row_a is None or row_b is None:
            continue
        gold = sample.answer
        views.append(
            (
                sample.question,
                gold_view(gold),
                answer_view(env.parser, gold, _text(row_a)),
                answer_view(env.parser, gold, _text(row_b)),
            )
        )
    return views


# -- the compare command ---------------------------------------------------------------------------------


@dataclass
class CompareResult:
    """What ``rewardlab compare`` found: two eval runs compared on the examples they share (``runs``), or two
    models evaluated on the same records in each data mode (``modes``), recorded as the compare run
    ``run_id``."""

    runs: Comparison | None = None
    modes: list[ModeComparison] = field(default_factory=list)
    run_id: str | None = None
    verdict: Verdict | None = None  # B against the bar on held-out and fresh, and what B cost per point


def run_compare(store: RunStore, config) -> CompareResult:
    """Compare ``config.a`` with ``config.b`` (a :class:`~rewardlab.config.CompareConfig`).

    Two eval runs are compared as they are. Otherwise each side is a model: an endpoint (``base_url_a``/``_b``
    or an alias of ``endpoints``), or a model, run or scripted player loaded here; the environment is
    ``config.env``, or the one the models' runs were trained on, and both are evaluated on the same records
    in every data mode of ``config.data``, recorded as one compare run.
    """
    from rewardlab.config import EvalConfig, load_endpoints, served_model
    from rewardlab.eval.verdict import verdict_of_models, verdict_of_runs
    from rewardlab.models.loading import locate

    if config.a is None or config.b is None:
        raise RewardlabError("compare needs two models or eval runs: rewardlab compare A B")
    served_a = served_model(config.a, config.base_url_a, config.endpoints)
    served_b = served_model(config.b, config.base_url_b, config.endpoints)
    if config.endpoints is not None and served_a is None and served_b is None:
        known = ", ".join(load_endpoints(config.endpoints))
        raise RewardlabError(
            f"{config.endpoints}: neither '{config.a}' nor '{config.b}' is an endpoint alias; it has: {known}"
        )
    both_local = served_a is None and served_b is None
    if both_local and _is_eval_run(store, config.a) and _is_eval_run(store, config.b):
        runs = compare_runs(store, config.a, config.b, num_samples=config.samples, force=config.force)
        return CompareResult(runs=runs, verdict=verdict_of_runs(store, runs, config))
    side_a = served_a or {"name_or_path": locate(config.a, store.root), "dtype": config.dtype}
    side_b = served_b or {"name_or_path": locate(config.b, store.root), "dtype": config.dtype}
    common = {
        "env": _environment(store, config, side_a, side_b),
        "num_examples": config.num_examples,
        "rollouts_per_example": config.rollouts_per_example,
        "sampling": config.sampling.model_dump(),
        "seed": config.seed,
        "runs_dir": str(store.root),
    }
    named = tuple(mode.strip() for mode in config.data.split(",") if mode.strip())
    modes = DATA_MODES if config.data == "all" else named
    recorded = {
        "a": side_a["name_or_path"],
        "b": side_b["name_or_path"],
        "endpoint_a": side_a.get("base_url"),
        "endpoint_b": side_b.get("base_url"),
        "modes": list(modes),
        **common,
    }
    config_a = EvalConfig.model_validate({**common, "model": side_a})
    config_b = EvalConfig.model_validate({**common, "model": side_b})
    # Bad input (a data mode, an environment or its arguments) fails here, before a run is recorded.
    check_modes(modes)
    env = comparison_environment(config_a, config_b)
    run = store.create_run("compare", recorded)
    with store.failure_recorded(run.id):
        results = compare_models(
            store, config_a, config_b, modes, num_samples=config.samples, parent=run.id, env=env
        )
        verdict = verdict_of_models(store, results, config, side_a, side_b)
    summary = {result.mode: _mode_summary(result) for result in results}
    store.finish(run.id, summary={**summary, "verdict": verdict.to_dict()})
    return CompareResult(modes=results, run_id=run.id, verdict=verdict)


def _is_eval_run(store: RunStore, ref: str) -> bool:
    try:
        return store.get(ref).kind == "eval"
    except RewardlabError:
        return False


def _environment(store: RunStore, config, side_a: dict, side_b: dict) -> dict:
    """The environment to compare on: the config's, or the one the nearest run either model descends from
    was trained on (an endpoint has no runs to ask)."""
    from rewardlab.runs.lineage import trained_env

    if config.env is not None:
        return config.env.model_dump()
    local = [side["name_or_path"] for side in (side_a, side_b) if side.get("base_url") is None]
    found = next(filter(None, (trained_env(model, store) for model in local)), None)
    if found is None:
        raise RewardlabError(
            "name the environment with --env: neither model comes from a run that records one"
        )
    return found


def _mode_summary(result: ModeComparison) -> dict:
    """One data mode as the compare run's summary records it."""
    if result.skipped:
        return {"skipped": result.skipped}
    reward = result.comparison.reward
    return {
        "mean_a": reward.mean_a,
        "mean_b": reward.mean_b,
        "mean_diff": reward.mean_diff,
        "ci95": list(reward.ci95),
        "n": reward.n,
        "seen_in_training_a": result.seen_in_training_a,
        "seen_in_training_b": result.seen_in_training_b,
        "near_duplicates_a": result.overlap_a.near if result.overlap_a else None,
        "near_duplicates_b": result.overlap_b.near if result.overlap_b else None,
        **{
            f"{key}_{side}": summary[key]
            for side, summary in (("a", result.summary_a), ("b", result.summary_b))
            for key in ("latency_mean_s", "latency_p50_s", "latency_p95_s", "requests_retried")
            if key in summary
        },
    }
