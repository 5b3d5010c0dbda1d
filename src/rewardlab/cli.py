"""The ``rewardlab`` command line: thin commands over the library.

Every command that runs something takes ``--config FILE.toml`` and any number of ``--set key=value``
overrides; ``--help-config`` lists every field with its default and meaning. User mistakes print one
line and exit with code 2.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from rewardlab.config import EvalConfig, SFTConfig, TrainConfig, describe_fields, load_config
from rewardlab.console import console
from rewardlab.errors import RewardlabError

app = typer.Typer(
    help="Reinforcement learning from verifiable rewards for small language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
runs_app = typer.Typer(help="Browse the run store.", no_args_is_help=True)
env_app = typer.Typer(help="Environments.", no_args_is_help=True)
app.add_typer(runs_app, name="runs")
app.add_typer(env_app, name="env")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override a field: key=value (repeatable).")
]
HelpConfig = Annotated[bool, typer.Option("--help-config", help="List every config field and exit.")]
RunsDir = Annotated[str, typer.Option("--runs-dir", help="Where the run store lives.")]


def user_errors(command):
    """Print user errors as one line and exit 2; let bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RewardlabError as error:
            console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def show_fields(model) -> None:
    table = Table(title=f"{model.__name__} fields", show_lines=False)
    table.add_column("field", style="bold")
    table.add_column("default")
    table.add_column("meaning")
    for name, default, description in describe_fields(model):
        table.add_row(name, default, description)
    console.print(table)


def build_config(model, config: Path | None, overrides: list[str] | None, extra: dict[str, object]):
    """Config file, then ``--set`` overrides, then the command's own flags (when given)."""
    flags = [f"{key}={json.dumps(value)}" for key, value in extra.items() if value is not None]
    return load_config(model, config, [*(overrides or []), *flags])


def deep_merge(base: dict, changes: dict) -> dict:
    merged = dict(base)
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def model_argument(store_dir: str, name: str | None) -> str | None:
    """Let ``--model`` name a run id: it becomes that run's directory."""
    if name is None or Path(name).exists():
        return name
    from rewardlab.models.tiny import TINY_MODELS
    from rewardlab.runs import RunStore

    if name in TINY_MODELS or not (Path(store_dir) / "rewardlab.db").exists():
        return name
    try:
        return str(RunStore(store_dir).get(name).dir)
    except RewardlabError:
        return name


@app.command()
@user_errors
def sft(
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[str | None, typer.Option(help="Model to prime.")] = None,
    env: Annotated[str | None, typer.Option(help="Environment name, module or .py file.")] = None,
    runs_dir: RunsDir = "runs",
    help_config: HelpConfig = False,
):
    """Prime a model with supervised fine-tuning on demonstrations."""
    if help_config:
        return show_fields(SFTConfig)
    from rewardlab.train.sft import run_sft

    cfg = build_config(
        SFTConfig,
        config,
        set_,
        {"model.name_or_path": model_argument(runs_dir, model), "env.name": env, "runs_dir": runs_dir},
    )
    result = run_sft(cfg)
    console.print(
        f"primed model: [bold]{result.model_dir}[/] (final loss {result.final_loss:.4f}, "
        f"{result.wall_seconds:.0f}s) run {result.run_id}"
    )


@app.command()
@user_errors
def train(
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[str | None, typer.Option(help="Starting model (name, path or run id).")] = None,
    env: Annotated[str | None, typer.Option(help="Environment name, module or .py file.")] = None,
    resume: Annotated[str | None, typer.Option(help="Run id or directory to resume.")] = None,
    runs_dir: RunsDir = "runs",
    help_config: HelpConfig = False,
):
    """Train with GRPO (+ LoRA) on an environment."""
    if help_config:
        return show_fields(TrainConfig)
    from rewardlab.train.trainer import train as run_train

    if resume is not None:
        # The stored config is the run's; only what is given now (e.g. a larger max_steps) changes.
        from rewardlab.runs import RunStore

        stored = RunStore(runs_dir).get(resume)
        changes = build_config(TrainConfig, config, set_, {}).model_dump(exclude_unset=True)
        cfg = TrainConfig.model_validate(
            deep_merge(stored.config, {**changes, "resume": stored.id, "runs_dir": runs_dir})
        )
    else:
        cfg = build_config(
            TrainConfig,
            config,
            set_,
            {"model.name_or_path": model_argument(runs_dir, model), "env.name": env, "runs_dir": runs_dir},
        )
    result = run_train(cfg)
    console.print(
        f"adapter: [bold]{result.adapter_dir}[/]  run {result.run_id}  "
        f"final reward {result.final_reward:.3f}  ({result.wall_seconds:.0f}s)"
    )


@app.command("eval")
@user_errors
def eval_(
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[str | None, typer.Option(help="Model: name, path or run id.")] = None,
    env: Annotated[str | None, typer.Option(help="Environment name, module or .py file.")] = None,
    num_examples: Annotated[int | None, typer.Option("--num-examples", "-n", help="Examples (n).")] = None,
    rollouts: Annotated[
        int | None, typer.Option("--rollouts", "-r", help="Rollouts per example (r).")
    ] = None,
    runs_dir: RunsDir = "runs",
    help_config: HelpConfig = False,
):
    """Evaluate a model: n examples x r rollouts, reward per component, pass@k, errors, latency."""
    if help_config:
        return show_fields(EvalConfig)
    from rewardlab.eval.evaluate import evaluate
    from rewardlab.eval.view import eval_summary_table

    cfg = build_config(
        EvalConfig,
        config,
        set_,
        {
            "model.name_or_path": model_argument(runs_dir, model),
            "env.name": env,
            "num_examples": num_examples,
            "rollouts_per_example": rollouts,
            "runs_dir": runs_dir,
        },
    )
    result = evaluate(cfg)
    console.print(eval_summary_table(result.summary, title=f"eval {result.run_id}"))
    console.print(f"results: {result.run_dir / 'results.jsonl'}")


@app.command()
@user_errors
def compare(
    run_a: Annotated[str, typer.Argument(help="Baseline eval run (id, prefix or directory).")],
    run_b: Annotated[str, typer.Argument(help="Candidate eval run.")],
    samples: Annotated[int, typer.Option(help="Debug samples to show.")] = 6,
    runs_dir: RunsDir = "runs",
):
    """Paired comparison of two eval runs: mean difference with a bootstrap 95% CI, win/tie/loss."""
    from rewardlab.eval.compare import compare_runs
    from rewardlab.eval.view import comparison_view
    from rewardlab.runs import RunStore

    store = RunStore(runs_dir)
    comparison = compare_runs(store, run_a, run_b, num_samples=samples)
    console.print(comparison_view(comparison))


@runs_app.command("list")
@user_errors
def runs_list(
    kind: Annotated[str | None, typer.Option(help="Only runs of this kind (sft, train, eval, demo).")] = None,
    limit: Annotated[int, typer.Option(help="Most runs to show.")] = 20,
    runs_dir: RunsDir = "runs",
):
    """List runs, newest first."""
    from rewardlab.runs import RunStore
    from rewardlab.runs.view import runs_table

    console.print(runs_table(RunStore(runs_dir).list(kind=kind, limit=limit)))


@runs_app.command("show")
@user_errors
def runs_show(
    run: Annotated[str, typer.Argument(help="Run id, unique prefix or directory.")],
    runs_dir: RunsDir = "runs",
):
    """Config, manifest, summary and last metrics of one run."""
    from rewardlab.runs import RunStore
    from rewardlab.runs.view import run_details

    store = RunStore(runs_dir)
    console.print(run_details(store, store.get(run)))


@env_app.command("list")
@user_errors
def env_list():
    """Built-in and installed environments."""
    from rewardlab.envs.registry import list_environments

    table = Table(title="environments")
    table.add_column("name", style="bold")
    table.add_column("description")
    for name, description in list_environments().items():
        table.add_row(name, description)
    console.print(table)


@app.command()
@user_errors
def demo(
    out: Annotated[str, typer.Option(help="Run store for the demo's runs.")] = "runs",
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same numbers.")] = 0,
    config: ConfigOption = None,
    set_: SetOption = None,
    help_config: HelpConfig = False,
):
    """Prime the tiny model, evaluate it, train it with GRPO + LoRA, evaluate again, compare, report."""
    from rewardlab.demo import DemoConfig, run_demo

    if help_config:
        return show_fields(DemoConfig)
    cfg = build_config(DemoConfig, config, set_, {"runs_dir": out, "seed": seed})
    run_demo(cfg)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
