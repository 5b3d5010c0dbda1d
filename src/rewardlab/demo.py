"""The demo as a pipeline; :mod:`rewardlab.demo_report` writes what it found.

1. prime the model with SFT on the environment's demonstrations;
2. evaluate the primed model (the base) on the held-out split;
3. train it with GRPO + LoRA against the environment's rubric;
4. evaluate the tuned model on the same held-out split (and both greedily);
5. control: as many more SFT sequences as GRPO sampled, evaluated the same way;
6. compare tuned with base on freshly generated data too;
7. compare (paired bootstrap) and write ``report.md`` and ``summary.json``.

Every stage is the library call its command makes (``run_sft``, ``train``, ``evaluate``, ``compare_models``),
configured from :class:`~rewardlab.config.DemoConfig`. By default that is the tiny model on two-digit
arithmetic, primed by a careless teacher that forgets to carry: demonstrations that are right only part of
the time, which more SFT can only copy, against an exact checker, which reinforcement learning can learn
from (docs/ARCHITECTURE.md, "The demo's design"). ``rewardlab demo --config FILE.toml`` runs the same
pipeline on another model and environment.
"""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rewardlab import atomic
from rewardlab.config import DemoConfig, EvalConfig, SFTConfig, TrainConfig, to_toml
from rewardlab.console import say
from rewardlab.envs.registry import load_environment_for
from rewardlab.eval.compare import Comparison, ModeComparison, breakdown, compare_models, compare_runs
from rewardlab.eval.evaluate import evaluate
from rewardlab.eval.verdict import DEFAULT_BAR, Verdict, judge, training_cost
from rewardlab.models.adapters import is_adapter_dir
from rewardlab.runs import RunStore, collect_manifest
from rewardlab.runs.store import to_jsonable
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import train

# DemoConfig lived here before the configs were gathered in rewardlab.config.
__all__ = ["DemoConfig", "DemoResult", "Evaluated", "run_demo", "timed"]


@dataclass
class Evaluated:
    """One model evaluated on the held-out split."""

    label: str
    model: str
    run_id: str
    summary: dict


@dataclass
class DemoResult:
    """What the demo found, and where it recorded it."""

    config: DemoConfig
    run_id: str
    run_dir: Path
    env_name: str
    env_description: str
    runs: dict[str, str]  # stage -> run id
    base: Evaluated
    tuned: Evaluated
    held_out: Comparison  # tuned (B) against base (A), paired by example
    control: Evaluated | None = None
    control_vs_base: Comparison | None = None
    control_sequences: int = 0
    greedy: dict[str, dict] = field(default_factory=dict)  # label -> eval summary at temperature 0
    fresh: ModeComparison | None = None  # None: not asked for; .skipped: the environment cannot generate
    breakdowns: dict[str, dict] = field(default_factory=dict)  # info key -> {value: {label: (mean, n)}}
    timings: dict[str, float] = field(default_factory=dict)
    wall_seconds: float = 0.0
    report_path: Path | None = None
    summary_path: Path | None = None
    verdict: Verdict | None = None  # tuned against the bar on held-out and fresh, and its cost per point

    @property
    def primary(self) -> str | None:
        """The rubric's primary component (correctness), which pass@k and the breakdowns read."""
        return self.base.summary.get("primary")

    def summary(self) -> dict[str, Any]:
        """``summary.json``: the headline numbers and every run id."""
        out: dict[str, Any] = {
            "base": {"run": self.base.run_id, **headline(self.base.summary)},
            "tuned": {"run": self.tuned.run_id, **headline(self.tuned.summary)},
            "difference": paired(self.held_out),
        }
        if self.greedy:
            out["greedy"] = {label: headline(summary) for label, summary in self.greedy.items()}
        out.update(wall_seconds=self.wall_seconds, timings=self.timings, seed=self.config.seed)
        out["runs"] = self.runs
        if self.control is not None and self.control_vs_base is not None:
            out["control"] = {
                "run": self.control.run_id,
                **headline(self.control.summary),
                "difference_vs_base": {
                    "mean": self.control_vs_base.reward.mean_diff,
                    "ci95": list(self.control_vs_base.reward.ci95),
                },
            }
        if self.fresh is not None:
            out["fresh"] = (
                {"skipped": self.fresh.skipped}
                if self.fresh.skipped
                else {
                    "runs": {"base": self.fresh.comparison.run_a, "tuned": self.fresh.comparison.run_b},
                    **paired(self.fresh.comparison),
                }
            )
        if self.verdict is not None:
            out["verdict"] = self.verdict.to_dict()
        if self.report_path is not None:
            out["report"] = str(self.report_path)
        return out


def headline(summary: dict) -> dict:
    """An eval summary's numbers worth repeating: reward, pass@1 and pass@r, errors, component means."""
    keep = ["mean_reward", "std_reward", "pass@1", f"pass@{summary['rollouts_per_example']}", "errors"]
    out = {k: summary[k] for k in keep if k in summary}
    out["components"] = {k: v["mean"] for k, v in summary["components"].items()}
    return out


def paired(comparison: Comparison) -> dict:
    """A paired difference as the summary records it: the weighted total's difference, and the relative
    gain on the primary component (``relative``, None when it has no meaning) with its interval."""
    reward = comparison.reward
    gain = comparison.relative
    return {
        "mean": reward.mean_diff,
        "ci95": list(reward.ci95),
        "relative": gain.value if gain else None,
        "relative_ci95": list(gain.ci95) if gain and gain.ci95 else None,
        "relative_component": gain.component if gain else None,
        "warnings": comparison.warnings,
        "wins": reward.wins,
        "ties": reward.ties,
        "losses": reward.losses,
        "n": reward.n,
    }


@contextmanager
def timed(timings: dict[str, float], stage: str):
    """Record how long the block took as ``timings[stage]`` (seconds)."""
    started = time.perf_counter()
    try:
        yield
    finally:
        timings[stage] = time.perf_counter() - started


def stage_config(kind, config: DemoConfig, settings, model: str, run_name: str, **changes: Any):
    """A stage's own config (``SFTConfig``, ``TrainConfig``, ``EvalConfig``): the demo's settings for it,
    the demo's model (as ``model``), environment, seed and run store, and ``changes`` on top."""
    values = {
        **settings.model_dump(include=set(kind.model_fields)),
        "model": {**config.model.model_dump(), "name_or_path": model},
        "env": config.env.model_dump(),
        "seed": config.seed,
        "runs_dir": config.runs_dir,
        "run_name": run_name,
    }
    return kind.model_validate({**values, **changes})


def primed_model(sft_model_dir: Path, config: DemoConfig) -> str:
    """The model GRPO starts from: SFT's, with an SFT adapter merged into its base, so GRPO trains a fresh
    adapter of its own and its KL reference is the primed model, as with full fine-tuning."""
    if not is_adapter_dir(sft_model_dir):
        return str(sft_model_dir)
    from rewardlab.export import merge_adapter

    return str(merge_adapter(str(sft_model_dir), sft_model_dir.parent / "merged", config.model.dtype))


def run_demo(config: DemoConfig, store: RunStore | None = None, parent: str | None = None) -> DemoResult:
    """Run every stage, write the report and ``summary.json``, record the demo run; returns what it found."""
    from rewardlab.demo_report import render

    started = time.perf_counter()
    store = store or RunStore(config.runs_dir)
    demo = store.create_run(
        "demo", config.model_dump(), collect_manifest(config.seed), name="demo", parent=parent
    )
    atomic.write_text(demo.dir / "demo.toml", to_toml(config, header="rewardlab demo --config demo.toml"))
    with store.failure_recorded(demo.id):
        result = _stages(config, store, demo)
        result.wall_seconds = time.perf_counter() - started
        result.verdict = _verdict(store, result)
        result.report_path = render(result, store)
        result.summary_path = demo.dir / "summary.json"
        summary = result.summary()
        atomic.write_text(result.summary_path, json.dumps(to_jsonable(summary), indent=2))
    store.finish(demo.id, summary={"mean_reward": result.tuned.summary["mean_reward"], **summary})
    return result


def _stages(config: DemoConfig, store: RunStore, demo) -> DemoResult:
    env = load_environment_for(config.env.name, config.env.args, config.model.name_or_path)
    total = 5 + config.control + config.eval.fresh
    numbers = iter(range(1, total + 1))
    timings: dict[str, float] = {}

    def step(text: str) -> None:
        say(f"[bold]{next(numbers)}/{total}[/] {text}")

    def evaluated(label: str, model: str, greedy: bool = False) -> Evaluated:
        result = evaluate(_eval_config(config, label, model, greedy), store, parent=demo.id)
        return Evaluated(label, model, result.run_id, result.summary)

    step(f"priming [cyan]{config.model.name_or_path}[/] with SFT on {env.name}'s demonstrations")
    with timed(timings, "sft"):
        sft_config = stage_config(SFTConfig, config, config.sft, config.model.name_or_path, "demo priming")
        sft = run_sft(sft_config, store, parent=demo.id)
        primed = primed_model(sft.model_dir, config)

    step("evaluating the primed (base) model on the held-out split")
    with timed(timings, "eval_base"):
        base = evaluated("base", primed)

    step(f"training with GRPO{' + LoRA' if config.train.lora.enabled else ''} against the rubric")
    with timed(timings, "train"):
        train_config = stage_config(TrainConfig, config, config.train, primed, "demo grpo")
        trained = train(train_config, store, parent=demo.id)

    step("evaluating the tuned model on the same held-out split")
    greedy: dict[str, dict] = {}
    with timed(timings, "eval_tuned"):
        tuned = evaluated("tuned", str(trained.run_dir))
        if config.eval.greedy:  # a gain that survives temperature 0 is not just a sharper distribution
            for model in (base, tuned):
                greedy[model.label] = evaluated(model.label, model.model, greedy=True).summary

    # The control sees as many training sequences as RL sampled, as more SFT on the same demonstrations.
    sequences = config.train.max_steps * config.train.prompts_per_step * config.train.group_size
    control = None
    if config.control:
        step(f"control: {sequences} more SFT sequences on the same demonstrations, then the same eval")
        with timed(timings, "control"):
            more_sft = run_sft(_control_config(config, primed, sequences), store, parent=demo.id)
            control = evaluated("control", str(more_sft.model_dir))

    fresh = None
    if config.eval.fresh:
        step("comparing base and tuned on freshly generated examples")
        with timed(timings, "fresh"):
            fresh = _fresh(config, store, demo.id, base, tuned)

    step("comparing and writing the report")
    labelled = {model.label: model.run_id for model in (base, tuned, control) if model is not None}
    breakdowns = {
        key: breakdown(store, labelled, key, component=base.summary.get("primary"))
        for key in config.eval.breakdown
    }
    return DemoResult(
        config=config,
        run_id=demo.id,
        run_dir=demo.dir,
        env_name=env.name,
        env_description=env.description,
        runs={
            "sft": sft.run_id,
            "train": trained.run_id,
            "eval_base": base.run_id,
            "eval_tuned": tuned.run_id,
        },
        base=base,
        tuned=tuned,
        held_out=compare_runs(store, base.run_id, tuned.run_id),
        control=control,
        control_vs_base=compare_runs(store, base.run_id, control.run_id) if control else None,
        control_sequences=sequences,
        greedy=greedy,
        fresh=fresh,
        breakdowns={key: table for key, table in breakdowns.items() if table},  # a key no example has: none
        timings=timings,
    )


def _verdict(store: RunStore, result: DemoResult) -> Verdict:
    """Tuned against base at compare's default bar: held-out, fresh (when asked for), the GRPO run priced."""
    modes = [ModeComparison("held-out", result.held_out), *([result.fresh] if result.fresh else [])]
    cost = training_cost(store, result.tuned.model, result.base.model, "base", "tuned")
    return judge(modes, DEFAULT_BAR, "add it with --set eval.fresh=true", cost)


def _eval_config(config: DemoConfig, label: str, model: str, greedy: bool = False) -> EvalConfig:
    changes: dict[str, Any] = {"split": "eval"}
    if greedy:
        sampling = {**config.eval.sampling.model_dump(), "temperature": 0.0}
        changes.update(rollouts_per_example=1, sampling=sampling)
    name = f"demo {label}" + (" greedy" if greedy else "")
    return stage_config(EvalConfig, config, config.eval, model, name, **changes)


def _control_config(config: DemoConfig, primed: str, sequences: int) -> SFTConfig:
    """More SFT from the primed model, gently (a tenth of the priming rate, constant), on other draws."""
    optimizer = {
        **config.sft.optimizer.model_dump(),
        "learning_rate": config.sft.optimizer.learning_rate / 10,
        "lr_scheduler": "constant",
        "warmup_steps": 0,
    }
    return stage_config(
        SFTConfig,
        config,
        config.sft,
        primed,
        "demo control (more SFT)",
        max_steps=max(1, sequences // config.sft.batch_size),
        optimizer=optimizer,
        seed=config.seed + 1,
    )


def _fresh(
    config: DemoConfig, store: RunStore, parent: str, base: Evaluated, tuned: Evaluated
) -> ModeComparison:
    """Base and tuned on as many newly generated examples as the held-out split gave: numbers on data nobody
    has seen, not even while choosing the demo's settings."""
    count = {"num_examples": base.summary["num_examples"]}
    config_a = _eval_config(config, "base", base.model).model_copy(update=count)
    config_b = _eval_config(config, "tuned", tuned.model).model_copy(update=count)
    [result] = compare_models(store, config_a, config_b, ("fresh",), parent=parent)
    return result
