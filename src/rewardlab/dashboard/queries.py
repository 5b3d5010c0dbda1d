"""What the dashboard shows, as pure functions over a :class:`~rewardlab.runs.RunStore` returning plain dicts.

Every page is one of these read back from the store (nothing is kept in memory between requests), so a run
that is still training shows its newest step, and the same numbers are what ``rewardlab runs``, ``compare``
and ``audit`` print: the comparison is :func:`rewardlab.eval.compare.compare_runs`, the audit
:func:`rewardlab.rubrics.audit.audit_run`. Curves are thinned on the server (:mod:`.downsample`) and
rollouts are paged in SQL, so a store of thousands of steps and rollouts answers as fast as a small one.
"""

from __future__ import annotations

import json
import math
import statistics
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from rewardlab.dashboard.downsample import DEFAULT_POINTS, thinned
from rewardlab.errors import RewardlabError
from rewardlab.runs import Run, RunStore
from rewardlab.runs.store import to_jsonable


class RunNotFound(RewardlabError):
    """No run answers to the reference (the API answers 404)."""


def get_run(store: RunStore, ref: str) -> Run:
    try:
        return store.get(ref)
    except RewardlabError as error:
        raise RunNotFound(str(error)) from None


def clean(value: Any) -> Any:
    """JSON-able, with NaN and infinities as ``None`` (JSON has neither)."""
    return _finite(to_jsonable(value))


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


def _number(value: Any, spec: str) -> str:
    """A summary number formatted, or "n/a" when it is missing or not a number."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return format(value, spec)
    return "n/a"


# ------------------------------------------------------------------------------------------- runs list


def _model_name(config: dict) -> str | None:
    model = config.get("model")
    if isinstance(model, dict):
        return model.get("name_or_path")
    if "a" in config and "b" in config:  # a compare run: two models
        return f"{config['a']} vs {config['b']}"
    return None


def _env_name(config: dict) -> str | None:
    env = config.get("env")
    return env.get("name") if isinstance(env, dict) else None


def _source_run(name: str | None, root: Path, ids: set[str]) -> str | None:
    """The run a model name points at: a run id, or a path inside the store (``<run>``, ``<run>/final``)."""
    if not name:
        return None
    if name in ids:
        return name
    path = Path(name)
    for base in (root, root.resolve()):
        try:
            first = path.relative_to(base).parts[0] if path.is_absolute() else None
        except (ValueError, IndexError):
            continue
        if first in ids:
            return first
    return None


def _sources(run: Run, root: Path, ids: set[str]) -> list[str]:
    """The runs whose models this run used (a compare run has two)."""
    config = run.config
    names = [config.get("a"), config.get("b")] if run.kind == "compare" else [_model_name(config)]
    found = [_source_run(name, root, ids) for name in names]
    return [run_id for run_id in dict.fromkeys(found) if run_id]


def _display_model(name: str | None, root: Path, ids: set[str]) -> str | None:
    """A model as a person reads it: a path into the store becomes the run's id (and what part of it)."""
    run_id = _source_run(name, root, ids)
    if run_id is None or name == run_id:
        return name
    rest = Path(name).name
    return run_id if rest == run_id else f"{run_id}/{rest}"


def _duration(run: Run, now: float) -> float | None:
    if run.finished_at is not None:
        return run.finished_at - run.created_at
    return now - run.created_at if run.status == "running" else None


def _row(run: Run, root: Path, ids: set[str], now: float) -> dict:
    config = run.config
    if run.kind == "compare":
        model = " vs ".join(str(_display_model(config.get(side), root, ids)) for side in ("a", "b"))
    else:
        model = _display_model(_model_name(config), root, ids)
    return {
        "id": run.id,
        "kind": run.kind,
        "name": run.name,
        "status": run.status,
        "model": model,
        "env": _env_name(config),
        "created_at": run.created_at,
        "finished_at": run.finished_at,
        "duration_s": _duration(run, now),
        "parent": run.parent,
        "children": [],
        "model_from": _sources(run, root, ids),
        "used_by": [],
        "headline": _headline(run),
    }


def _headline(run: Run) -> str:
    """The one number a runs table shows for each kind of run."""
    summary = run.summary or {}
    if summary.get("error") and run.status != "completed":
        return str(summary["error"])
    if run.kind == "eval" and "mean_reward" in summary:
        mean, std = _number(summary["mean_reward"], ".3f"), _number(summary.get("std_reward"), ".3f")
        return f"reward {mean} ± {std}"
    if run.kind == "train" and "final_reward" in summary:
        alerts = len(summary.get("alerts") or [])
        return f"final reward {_number(summary['final_reward'], '.3f')}" + (
            f", {alerts} alert{'s' if alerts > 1 else ''}" if alerts else ""
        )
    if run.kind == "sft" and "final_loss" in summary:
        return f"final loss {_number(summary['final_loss'], '.4f')}"
    if run.kind == "demo" and isinstance(summary.get("difference"), dict):
        return f"tuned - base {_number(summary['difference'].get('mean'), '+.3f')}"
    if run.kind == "compare":
        modes = [value for value in summary.values() if isinstance(value, dict) and "mean_diff" in value]
        held = summary.get("held-out") if isinstance(summary.get("held-out"), dict) else None
        chosen = held if held and "mean_diff" in held else (modes[0] if modes else None)
        if chosen:
            return f"B - A {_number(chosen['mean_diff'], '+.3f')}"
    return ""


def list_runs(
    store: RunStore, kind: str | None = None, status: str | None = None, query: str | None = None
) -> dict:
    """Every run, newest first, with its lineage both ways: ``parent``/``children`` (the run that started
    it, as a demo starts its stages) and ``model_from``/``used_by`` (the runs whose model it started from:
    an eval of a train run, a train run from an SFT run). Filters apply after lineage is known."""
    runs = store.list()
    ids = {run.id for run in runs}
    now = time.time()
    rows = {run.id: _row(run, store.root, ids, now) for run in runs}
    for row in rows.values():
        if row["parent"] in rows:
            rows[row["parent"]]["children"].append(row["id"])
        for source in row["model_from"]:
            rows[source]["used_by"].append(row["id"])
    needle = (query or "").strip().lower()
    text = {run_id: " ".join(str(row[k] or "") for k in ("id", "name", "model", "env")).lower()
            for run_id, row in rows.items()}  # fmt: skip
    shown = [
        row
        for row in rows.values()
        if (not kind or row["kind"] == kind)
        and (not status or row["status"] == status)
        and (not needle or needle in text[row["id"]])
    ]
    return {
        "root": str(store.root),
        "total": len(rows),
        "kinds": sorted({row["kind"] for row in rows.values()}),
        "statuses": sorted({row["status"] for row in rows.values()}),
        "runs": clean(shown),
    }


# ------------------------------------------------------------------------------------------- one run


def _ancestors(row_of: dict[str, dict], run_id: str) -> list[str]:
    """The runs a run's model descends from, nearest first (``model_from`` followed back)."""
    chain, current = [], run_id
    while True:
        sources = row_of[current]["model_from"]
        if not sources or sources[0] in chain or sources[0] == run_id:
            return chain
        current = sources[0]
        chain.append(current)


def run_detail(store: RunStore, ref: str) -> dict:
    """A run's row, config, manifest and summary, its lineage, what it stored and the files it wrote."""
    run = get_run(store, ref)
    listing = list_runs(store)["runs"]
    row_of = {row["id"]: row for row in listing}
    row = row_of[run.id]
    files = (
        sorted(str(path.relative_to(run.dir)) for path in run.dir.glob("*") if path.is_file())
        if run.dir.is_dir()
        else []
    )
    return clean(
        {
            **row,
            "ancestors": _ancestors(row_of, run.id),
            "config": run.config,
            "manifest": run.manifest,
            "summary": run.summary,
            "rollouts": store.rollout_counts(run.id),
            "metrics": list(store.metric_spans(run.id)),
            "files": files,
            "dir": str(run.dir),
            "pages": _pages(run),
        }
    )


def _pages(run: Run) -> list[str]:
    """The views that make sense for a run of this kind."""
    pages = {"train": ["curves", "rollouts", "audit"], "sft": ["curves"], "eval": ["eval", "rollouts"]}
    return pages.get(run.kind, []) + (["compare"] if run.kind in ("compare", "demo") else [])


# ------------------------------------------------------------------------------------------- curves

# (panel id, title, y-axis label, metric names); "reward/*" expands to each component.
PANELS = (
    ("reward", "Reward", "reward", ("reward/mean", "reward/*")),
    ("entropy", "Policy entropy", "nats per token", ("entropy",)),
    ("clip", "Clipped tokens", "fraction of tokens", ("clip/low_fraction", "clip/high_fraction")),
    ("kl", "KL to the reference", "nats per token", ("kl",)),
    ("grad_norm", "Gradient norm", "norm (before clipping)", ("grad_norm",)),
    ("length", "Completion length", "tokens", ("completion/mean_length", "completion/max_length")),
    ("truncation", "Truncated completions", "fraction of rollouts", ("completion/truncated_fraction",)),
    ("zero_signal", "Groups without signal", "fraction of groups", ("groups/zero_std_fraction",)),
    ("loss", "Loss", "loss", ("loss",)),
    ("learning_rate", "Learning rate", "learning rate", ("learning_rate",)),
)
# Which panel marks each alert (it also shows on the reward panel).
ALERT_PANELS = {
    "entropy_collapse": "entropy",
    "clip_spike": "clip",
    "kl_blowup": "kl",
    "grad_norm_spike": "grad_norm",
    "length_explosion": "length",
    "truncation_surge": "truncation",
    "no_signal": "zero_signal",
    "reward_hacking": "reward",
}
_SERIES_LABELS = {
    "reward/mean": "mean",
    "clip/low_fraction": "low (ratio < 1-ε)",
    "clip/high_fraction": "high (ratio > 1+ε)",
    "completion/mean_length": "mean",
    "completion/max_length": "max",
}


def _panels(names: list[str]) -> list[dict]:
    """The standard panels a run's metrics fill, then one panel for each other metric (``more``)."""
    present, used, panels = set(names), set(), []
    for panel_id, title, ylabel, wanted in PANELS:
        series = []
        for name in wanted:
            if name.endswith("/*"):
                prefix = name[:-1]
                skip = {"reward/mean", "reward/std"}
                series += [n for n in names if n.startswith(prefix) and n not in skip]
            elif name in present:
                series.append(name)
        if series:
            used.update(series)
            panels.append(_panel(panel_id, title, ylabel, series, more=False))
    for name in names:
        if name not in used and not name.startswith("alerts/") and name != "reward/std":
            panels.append(_panel(name, name, name.rsplit("/", 1)[-1], [name], more=True))
    return panels


def _panel(panel_id: str, title: str, ylabel: str, series: list[str], more: bool) -> dict:
    labels = [_SERIES_LABELS.get(name, name.removeprefix("reward/")) for name in series]
    return {"id": panel_id, "title": title, "ylabel": ylabel, "series": series, "labels": labels,
            "more": more}  # fmt: skip


def _alerts(run: Run, metrics: dict[str, list[tuple[int, float]]]) -> list[dict]:
    """The run's alerts with their messages (the summary's), or from ``alerts/<name>`` metrics alone."""
    recorded = [a for a in (run.summary or {}).get("alerts") or [] if isinstance(a, dict) and "step" in a]
    alerts = [
        {"name": a.get("name", "alert"), "step": a["step"], "message": a.get("message", ""),
         "action": a.get("action", "")}
        for a in recorded
    ]  # fmt: skip
    seen = {(a["name"], a["step"]) for a in alerts}
    for name, points in metrics.items():
        if name.startswith("alerts/"):
            alert = name.removeprefix("alerts/")
            for step, value in points:
                if value and not math.isnan(value) and (alert, step) not in seen:
                    alerts.append({"name": alert, "step": step, "message": "", "action": ""})
    for alert in alerts:
        alert["panel"] = ALERT_PANELS.get(alert["name"], "reward")
    return sorted(alerts, key=lambda a: (a["step"], a["name"]))


def curves(store: RunStore, ref: str, max_points: int = DEFAULT_POINTS, only: str | None = None) -> dict:
    """A run's curves grouped into panels, each series thinned to at most ``max_points`` (min/max per
    bucket, in SQL), and its alerts (never thinned) with the panel that marks them. ``only="main"`` reads the
    series of the standard panels alone, ``only="more"`` the others' (a page loads them when opened)."""
    run = get_run(store, ref)
    spans = store.metric_spans(run.id)
    alert_names = [name for name in spans if name.startswith("alerts/")]
    panels = _panels(list(spans))
    wanted = {name for panel in panels if only is None or panel["more"] == (only == "more")
              for name in panel["series"]}  # fmt: skip
    curves_spans = {name: span for name, span in spans.items() if name in wanted}
    series = {
        name: {"steps": [step for step, _ in points], "values": [value for _, value in points],
               "points": curves_spans[name][0]}
        for name, points in thinned(store, run.id, curves_spans, max_points).items()
    }  # fmt: skip
    alerts = _alerts(run, store.metrics(run.id, alert_names) if alert_names else {})
    return {
        "run": run.id,
        "kind": run.kind,
        "status": run.status,
        "last_step": max(
            (last for name, (_, _, last) in spans.items() if name not in alert_names), default=None
        ),
        "panels": panels,
        "series": series,  # already JSON-safe: no pass of clean() over thousands of points
        "alerts": clean(alerts),
    }


# ------------------------------------------------------------------------------------------- rollouts


def _content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI-style parts
        texts = [part.get("text", "") for part in content if isinstance(part, dict)]
        if all(isinstance(part, dict) for part in content) and any(texts):
            return "".join(texts)
    return json.dumps(content, ensure_ascii=False)


def _token_turns(row: dict) -> list[list[dict]]:
    """Per-token statistics of each model turn, when the rollout was stored with them.

    A rollout row may carry ``metrics["tokens"]``: one list per model (assistant) turn, in order, of
    ``{"text": str, "logprob": float | None, "entropy": float | None}``. The trainer stores them for the
    rollouts it keeps (its first pass's values); eval does not, so this is empty for eval's rollouts.
    """
    tokens = (row.get("metrics") or {}).get("tokens") if isinstance(row.get("metrics"), dict) else None
    if not isinstance(tokens, list):
        return []
    turns = []
    for turn in tokens:
        if not isinstance(turn, list):
            return []
        turns.append(
            [
                {
                    "text": str(token.get("text", "")),
                    "logprob": token.get("logprob"),
                    "entropy": token.get("entropy"),
                }
                for token in turn
                if isinstance(token, dict)
            ]
        )
    return turns


def transcript(row: dict) -> list[dict]:
    """The whole conversation, each message told by who wrote it: ``system``, ``prompt`` (the task's own
    messages), ``model`` (the policy's turns) or ``environment`` (its replies between the model's turns)."""
    turns = []
    for message in row.get("prompt") or []:
        role = message.get("role", "user")
        turns.append({"who": "system" if role == "system" else "prompt", "role": role,
                      "content": _content(message.get("content"))})  # fmt: skip
    token_turns = iter(_token_turns(row))
    for message in row.get("completion") or []:
        role = message.get("role", "assistant")
        turn = {"who": "model" if role == "assistant" else "environment", "role": role,
                "content": _content(message.get("content"))}  # fmt: skip
        if role == "assistant":
            tokens = next(token_turns, None)
            if tokens:
                turn["tokens"] = tokens
        turns.append(turn)
    return turns


def _question(row: dict) -> str:
    users = [m for m in row.get("prompt") or [] if m.get("role") == "user"]
    return _content(users[-1].get("content")) if users else ""


def _rollout(row: dict) -> dict:
    return {
        "id": row["id"],
        "step": row["step"],
        "phase": row["phase"],
        "example_id": row["example_id"],
        "sample_index": row["sample_index"],
        "question": _question(row),
        "answer": row["answer"],
        "reward": row["reward"],
        "components": row["components"],
        "errors": row["errors"],
        "error": row.get("error"),
        "truncated": row["truncated"],
        "num_turns": row["num_turns"],
        "num_completion_tokens": row["num_completion_tokens"],
        "info": row.get("info") or {},
        "transcript": transcript(row),
    }


def rollouts_page(
    store: RunStore,
    ref: str,
    phase: str | None = None,
    step: int | None = None,
    page: int = 1,
    per_page: int = 20,
) -> dict:
    """One page of a run's stored rollouts (``page`` from 1), filtered by phase and step, paged in SQL; with
    the phases and steps there are to filter by and how many rollouts match."""
    run = get_run(store, ref)
    per_page = max(1, min(int(per_page), 200))
    index = store.rollout_index(run.id)
    phases: dict[str, int] = defaultdict(int)
    for name, _, count in index:
        phases[name] += count
    steps = sorted({s for name, s, _ in index if phase in (None, name)})
    total = sum(n for name, s, n in index if phase in (None, name) and step in (None, s))
    pages = max(1, math.ceil(total / per_page))
    page = max(1, min(int(page), pages))
    rows = store.rollouts(run.id, phase=phase, step=step, limit=per_page, offset=(page - 1) * per_page)
    return clean(
        {
            "run": run.id,
            "kind": run.kind,
            "status": run.status,
            "phase": phase,
            "step": step,
            "phases": dict(phases),
            "steps": steps,
            "total": total,
            "page": page,
            "pages": pages,
            "per_page": per_page,
            "rollouts": [_rollout(row) for row in rows],
        }
    )


# ------------------------------------------------------------------------------------------- eval


def _example_means(rows: list[dict]) -> dict[str, float]:
    """Each example's mean reward over its rollouts, an errored rollout scoring 0 (as the summary does)."""
    grouped: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        errored = bool(row["errors"]) or bool(row.get("error"))
        reward = row["reward"]
        grouped[row["example_id"]].append(0.0 if errored or reward is None or math.isnan(reward) else reward)
    return {example: statistics.fmean(values) for example, values in grouped.items()}


def eval_view(store: RunStore, ref: str, worst: int = 8) -> dict:
    """An eval run's summary (reward ± std and a bootstrap 95% interval over examples, pass@k, each
    component, errors, latency) and its lowest-scoring examples."""
    from rewardlab.eval.stats import bootstrap_ci

    run = get_run(store, ref)
    if run.kind != "eval":
        raise RewardlabError(f"run '{run.id}' is a {run.kind} run; this page shows eval runs")
    summary = run.summary or {}
    rows = store.rollouts(run.id, phase="eval")
    per_example = _example_means(rows)
    ci = bootstrap_ci(list(per_example.values()), num_resamples=2000) if len(per_example) > 1 else None
    pass_at = {key.removeprefix("pass@"): value for key, value in summary.items() if key.startswith("pass@")}
    ordered = sorted(per_example.items(), key=lambda item: item[1])[:worst]
    first = {}
    for row in rows:
        first.setdefault(row["example_id"], row)
    lowest = [
        {"example_id": example, "mean_reward": value, "question": _question(first[example]),
         "answer": first[example]["answer"]}
        for example, value in ordered
    ]  # fmt: skip
    latency = {key: value for key, value in summary.items() if key.startswith(("latency", "rollouts_per"))}
    return clean(
        {
            "run": run.id,
            "status": run.status,
            "name": run.name,
            "model": summary.get("model") or _model_name(run.config),
            "env": summary.get("env") or _env_name(run.config),
            "split": run.config.get("split"),
            "reward": {
                "mean": summary.get("mean_reward"),
                "std": summary.get("std_reward"),
                "ci95": list(ci) if ci else None,
                "without_errors": summary.get("mean_reward_without_errors"),
                "examples": summary.get("num_examples", len(per_example)),
                "rollouts": summary.get("num_rollouts", len(rows)),
                "rollouts_per_example": summary.get("rollouts_per_example"),
            },
            "primary": summary.get("primary"),
            "pass_at": pass_at,
            "components": summary.get("components") or {},
            "errors": summary.get("errors", 0),
            "error_samples": summary.get("error_samples") or [],
            "error": summary.get("error"),
            "truncated_fraction": summary.get("truncated_fraction"),
            "mean_completion_tokens": summary.get("mean_completion_tokens"),
            "latency": latency,
            "wall_seconds": summary.get("wall_seconds"),
            "lowest": lowest,
        }
    )


# ------------------------------------------------------------------------------------------- compare


def _ids(value: Any) -> list | None:
    """An id-set answer from a text (a JSON list or an object holding one, bare or inside other text)."""
    from rewardlab.eval.compare import as_id_list
    from rewardlab.rubrics.parsers import JSONParser

    found = as_id_list(value)
    if found is None and isinstance(value, str):
        parsed = JSONParser().parse_answer(value)
        found = as_id_list(parsed) if parsed is not None else None
    return found


def _id_sets(gold: Any, output_a: str, output_b: str) -> dict | None:
    """Gold, A and B as id sets with what each shares with gold, when the answer is an id set."""
    reference = _ids(gold)
    if reference is None:
        return None
    sides = {}
    for side, output in (("a", output_a), ("b", output_b)):
        predicted = _ids(output)
        sides[side] = None if predicted is None else {
            "ids": predicted,
            "overlap": [i for i in predicted if i in set(reference)],
            "extra": [i for i in predicted if i not in set(reference)],
            "missed": [i for i in reference if i not in set(predicted)],
        }  # fmt: skip
    return {"gold": reference, **sides}


def compare_pair(store: RunStore, a: str, b: str, samples: int = 8) -> dict:
    """Two eval runs compared paired, as ``rewardlab compare A B`` does: the difference with its 95% interval,
    win/tie/loss, each component, and debug samples (gold next to A and B; id sets with their overlap)."""
    from rewardlab.eval.compare import compare_runs

    run_a, run_b = get_run(store, a), get_run(store, b)
    comparison = compare_runs(store, run_a.id, run_b.id, num_samples=samples)
    out = comparison.to_dict()
    for sample in out["samples"]:
        sample["id_sets"] = _id_sets(sample["answer"], sample["output_a"], sample["output_b"])
    ids = {run.id for run in store.list()}
    out["summary_a"] = _side(run_a, store.root, ids)
    out["summary_b"] = _side(run_b, store.root, ids)
    return clean(out)


def _side(run: Run, root: Path, ids: set[str]) -> dict:
    summary = run.summary or {}
    return {
        "run": run.id,
        "name": run.name,
        "model": _display_model(summary.get("model") or _model_name(run.config), root, ids),
        "mean_reward": summary.get("mean_reward"),
        "std_reward": summary.get("std_reward"),
        "pass@1": summary.get("pass@1"),
        "errors": summary.get("errors"),
    }


def _pairs(store: RunStore, run: Run) -> list[tuple[str, str, str]]:
    """The (label, A, B) eval runs a compare or demo run paired."""
    summary = run.summary or {}
    if run.kind == "demo":
        runs, fresh = summary.get("runs") or {}, (summary.get("fresh") or {}).get("runs") or {}
        pairs = [("held-out", runs.get("eval_base"), runs.get("eval_tuned"))]
        pairs.append(("fresh", fresh.get("base"), fresh.get("tuned")))
        return [(label, a, b) for label, a, b in pairs if a and b]
    by_mode: dict[str, list[Run]] = defaultdict(list)
    for child in sorted(store.list(kind="eval"), key=lambda r: r.created_at):
        if child.parent == run.id and (child.name or "").startswith("compare "):
            by_mode[child.name.removeprefix("compare ")].append(child)
    return [(mode, evals[0].id, evals[1].id) for mode, evals in by_mode.items() if len(evals) >= 2]


def compare_view(store: RunStore, ref: str, samples: int = 8) -> dict:
    """A compare run (or a demo): its recorded summary and verdict, and each data mode's pair of eval runs
    compared in full."""
    run = get_run(store, ref)
    if run.kind not in ("compare", "demo"):
        raise RewardlabError(f"run '{run.id}' is a {run.kind} run; compare two eval runs with ?a=…&b=…")
    modes = []
    for label, a, b in _pairs(store, run):
        try:
            modes.append({"mode": label, "a": a, "b": b, "comparison": compare_pair(store, a, b, samples)})
        except RewardlabError as error:
            modes.append({"mode": label, "a": a, "b": b, "error": str(error)})
    summary = run.summary or {}
    skipped = {mode: value["skipped"] for mode, value in summary.items()
               if isinstance(value, dict) and "skipped" in value}  # fmt: skip
    return clean(
        {
            "run": run.id,
            "kind": run.kind,
            "status": run.status,
            "config": run.config,
            "verdict": summary.get("verdict"),
            "skipped": skipped,
            "modes": modes,
        }
    )


# ------------------------------------------------------------------------------------------- audit


def audit_view(store: RunStore, ref: str) -> dict:
    """``rewardlab audit``'s report of a train run: each component's rise with its 90% interval, share and
    change correlation, the flags, and the rubric's static warnings."""
    from rewardlab.rubrics.audit import Z, audit_run

    run = get_run(store, ref)
    report = audit_run(store, run)
    components = []
    for component in report.components:
        interval = component.interval
        components.append(
            {
                "name": component.name,
                "weight": component.weight,
                "primary": component.name == report.primary,
                "start": component.start,
                "end": component.end,
                "rise": component.rise,
                "interval": list(interval) if interval else None,
                "share": component.share,
                "correlation": component.correlation,
                "steps": component.steps,
                "flags": component.flags,
            }
        )
    return clean(
        {
            "run": report.run_id,
            "status": run.status,
            "primary": report.primary,
            "steps": report.steps,
            "z": Z,
            "components": components,
            "static_warnings": report.static_warnings,
            "notes": report.notes,
            "flags": report.flags,
        }
    )
