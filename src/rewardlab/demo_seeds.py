"""The demo over several training seeds: the spread a single run's interval does not show.

A paired 95% interval says how sure one trained model's difference is, on these examples. It says nothing
of how a second training run from another seed would do. ``rewardlab demo --seeds K`` runs the whole chain
K times (seeds ``seed``, ``seed + 1``, ...) under one parent run, and reports each seed's result and the
spread between them in ``seeds.json`` and ``seeds.md``.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from rewardlab import atomic
from rewardlab.config import DemoConfig, to_toml
from rewardlab.console import say
from rewardlab.demo import DemoResult, run_demo
from rewardlab.runs import RunStore, collect_manifest
from rewardlab.runs.store import to_jsonable


@dataclass
class SeedSpread:
    run_id: str
    run_dir: Path
    results: list[DemoResult]
    summary_path: Path | None = None
    report_path: Path | None = None

    def rows(self) -> list[dict]:
        """One row per seed: the held-out (and fresh) difference, its interval, the relative gain."""
        rows = []
        for result in self.results:
            summary = result.summary()
            held = summary["difference"]
            row = {
                "seed": result.config.seed,
                "run": result.run_id,
                "base": result.base.summary["mean_reward"],
                "tuned": result.tuned.summary["mean_reward"],
                "difference": held["mean"],
                "ci95": held["ci95"],
                "relative": held["relative"],
                "relative_component": held["relative_component"],
            }
            fresh = summary.get("fresh")
            if fresh and "mean" in fresh:
                row["fresh_difference"] = fresh["mean"]
                row["fresh_ci95"] = fresh["ci95"]
            rows.append(row)
        return rows

    def spread(self) -> dict:
        """Mean, sample standard deviation and range over seeds of each per-seed number."""
        rows = self.rows()
        out = {"seeds": len(rows)}
        for key in ("difference", "relative", "fresh_difference", "base", "tuned"):
            values = [row[key] for row in rows if row.get(key) is not None]
            if values:
                out[key] = {
                    "mean": statistics.fmean(values),
                    "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "min": min(values),
                    "max": max(values),
                }
        return out


def run_demo_seeds(config: DemoConfig, store: RunStore | None = None) -> SeedSpread:
    """The demo once per training seed, under one parent run; writes ``seeds.json`` and ``seeds.md``."""
    store = store or RunStore(config.runs_dir)
    parent = store.create_run(
        "demo", config.model_dump(), collect_manifest(config.seed), name=f"demo over {config.seeds} seeds"
    )
    atomic.write_text(parent.dir / "demo.toml", to_toml(config, header="rewardlab demo --config demo.toml"))
    results = []
    with store.failure_recorded(parent.id):
        for offset in range(config.seeds):
            seed = config.seed + offset
            say(f"[bold]seed {seed}[/] ({offset + 1} of {config.seeds})")
            results.append(run_demo(config.model_copy(update={"seed": seed, "seeds": 1}), store, parent.id))
        spread = SeedSpread(parent.id, parent.dir, results)
        summary = {"per_seed": spread.rows(), "spread": spread.spread()}
        spread.summary_path = parent.dir / "seeds.json"
        atomic.write_text(spread.summary_path, json.dumps(to_jsonable(summary), indent=2))
        spread.report_path = parent.dir / "seeds.md"
        atomic.write_text(spread.report_path, "\n".join(report_lines(spread)) + "\n")
    store.finish(parent.id, summary=summary)
    return spread


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{value:+.0%}"


def report_lines(spread: SeedSpread) -> list[str]:
    rows, over = spread.rows(), spread.spread()
    component = next((row["relative_component"] for row in rows if row["relative_component"]), None)
    lines = [
        f"# The demo over {len(rows)} training seeds",
        "",
        "Each seed runs the whole chain (priming, GRPO, evaluations). The 95% interval of each row is the "
        "paired bootstrap for that one trained model; the spread between rows is what another training run "
        "would move the result by.",
        "",
        f"| seed | base | tuned | difference | 95% CI | relative ({component or 'primary'}) "
        "| fresh difference |",
        "|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        fresh = f"{row['fresh_difference']:+.3f}" if "fresh_difference" in row else "–"
        lines.append(
            f"| {row['seed']} | {row['base']:.3f} | {row['tuned']:.3f} | {row['difference']:+.3f} | "
            f"[{row['ci95'][0]:+.3f}, {row['ci95'][1]:+.3f}] | {_pct(row['relative'])} | {fresh} |"
        )
    lines += ["", *spread_lines(over)]
    return lines


def spread_lines(over: dict) -> list[str]:
    """``difference over 3 seeds: mean +0.250, sd 0.040, range [+0.210, +0.290]`` and the like."""
    lines = []
    labels = {
        "difference": "held-out difference",
        "relative": "relative gain",
        "fresh_difference": "fresh-data difference",
    }
    for key, label in labels.items():
        if key not in over:
            continue
        s = over[key]
        if key == "relative":
            lines.append(
                f"{label} over {over['seeds']} seeds: mean {s['mean']:+.0%}, sd {s['sd']:.0%}, "
                f"range [{s['min']:+.0%}, {s['max']:+.0%}]"
            )
        else:
            lines.append(
                f"{label} over {over['seeds']} seeds: mean {s['mean']:+.3f}, sd {s['sd']:.3f}, "
                f"range [{s['min']:+.3f}, {s['max']:+.3f}]"
            )
    return lines


def closing_lines_over_seeds(spread: SeedSpread) -> list[str]:
    """What ``rewardlab demo --seeds K`` prints at the end: the spread, the report, ``seeds.json`` last."""
    return [*spread_lines(spread.spread()), f"report: {spread.report_path}", str(spread.summary_path)]
