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
    """Let ``--model`` name a run: it becomes that run's directory. A name that reads as a run id
    (``train-...``) and is in no run store is that one-line error, not a Hub download."""
    if name is None or Path(name).exists():
        return name
    from rewardlab.models.tiny import TINY_MODELS
    from rewardlab.runs import RunStore
    from rewardlab.runs.store import looks_like_run_id

    if name in TINY_MODELS:
        return name
    store = RunStore(store_dir)
    if looks_like_run_id(name):
        return str(store.get(name).dir)
    try:
        return str(store.get(name).dir)
    except RewardlabError:
        return name


def run_argument(store_dir: str, ref: str) -> str:
    """A run (id, prefix, name or directory) or an existing path, as a path; anything else is "no run"."""
    if Path(ref).exists():
        return ref
    from rewardlab.runs import RunStore

    return str(RunStore(store_dir).get(ref).dir)


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
    errored = (
        f"  [yellow]{result.errored_rollouts} of {result.rollouts} rollouts errored[/] (rewardlab runs show "
        f"{result.run_id} --rollouts 5)"
        if result.errored_rollouts
        else ""
    )
    console.print(
        f"adapter: [bold]{result.adapter_dir}[/]  run {result.run_id}  "
        f"final reward {result.final_reward:.3f}{errored}  ({result.wall_seconds:.0f}s)",
        soft_wrap=True,
    )


EndpointsOption = Annotated[
    Path | None,
    typer.Option(help="TOML file of [endpoints.<alias>] tables (base_url, model, ...); models name aliases."),
]


def served_model(name: str | None, base_url: str | None, endpoints: Path | None) -> dict | None:
    """The model fields of ``--base-url URL --model NAME`` or ``--endpoints FILE --model ALIAS``."""
    if base_url is not None and endpoints is not None:
        raise RewardlabError("give --base-url or --endpoints, not both")
    if (base_url is not None or endpoints is not None) and name is None:
        flag = "--base-url" if base_url is not None else "--endpoints"
        raise RewardlabError(f"{flag} needs --model: the served model's name, or the endpoint's alias")
    if endpoints is not None:
        from rewardlab.config import endpoint

        return endpoint(endpoints, name).model_dump(exclude_unset=True)
    return {"name_or_path": name, "base_url": base_url} if base_url is not None else None


@app.command("eval")
@user_errors
def eval_(
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[
        str | None,
        typer.Option(
            help="Model: name, path or run id; the served name with --base-url; an alias with --endpoints."
        ),
    ] = None,
    env: Annotated[str | None, typer.Option(help="Environment name, module or .py file.")] = None,
    num_examples: Annotated[int | None, typer.Option("--num-examples", "-n", help="Examples (n).")] = None,
    rollouts: Annotated[
        int | None, typer.Option("--rollouts", "-r", help="Rollouts per example (r).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Evaluate an OpenAI-compatible endpoint (http://localhost:8000/v1).")
    ] = None,
    endpoints: EndpointsOption = None,
    runs_dir: RunsDir = "runs",
    help_config: HelpConfig = False,
):
    """Evaluate a model or an endpoint: n examples x r rollouts, rewards, pass@k, errors, latency."""
    if help_config:
        return show_fields(EvalConfig)
    from rewardlab.eval.evaluate import evaluate
    from rewardlab.eval.view import eval_summary_table

    served = served_model(model, base_url, endpoints)
    model_fields = served if served is not None else {"name_or_path": model_argument(runs_dir, model)}
    cfg = build_config(
        EvalConfig,
        config,
        set_,
        {
            **{f"model.{key}": value for key, value in model_fields.items()},
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
    a: Annotated[
        str, typer.Argument(help="Baseline: an eval run, or a model (name, path, run id, scripted:…).")
    ],
    b: Annotated[str, typer.Argument(help="Candidate: an eval run, or a model.")],
    env: Annotated[
        str | None, typer.Option(help="Environment (default: the one the models were trained on).")
    ] = None,
    data: Annotated[
        str, typer.Option(help="Data modes, comma-separated: held-out, fresh, adversarial, or all.")
    ] = ("held-out"),
    num_examples: Annotated[
        int | None, typer.Option("--num-examples", "-n", help="Records per mode.")
    ] = None,
    rollouts: Annotated[int, typer.Option("--rollouts", "-r", help="Rollouts per record.")] = 4,
    seed: Annotated[int, typer.Option(help="Seed for fresh data and sampling.")] = 0,
    label_a: Annotated[str, typer.Option(help="Name for A in the output.")] = "A",
    label_b: Annotated[str, typer.Option(help="Name for B in the output.")] = "B",
    samples: Annotated[int, typer.Option(help="Debug samples to show.")] = 6,
    endpoints: EndpointsOption = None,
    base_url_a: Annotated[
        str | None, typer.Option("--base-url-a", help="A is the model of that name served at this URL.")
    ] = None,
    base_url_b: Annotated[
        str | None, typer.Option("--base-url-b", help="B is the model of that name served at this URL.")
    ] = None,
    runs_dir: RunsDir = "runs",
):
    """Paired comparison: mean difference with a bootstrap 95% CI, win/tie/loss, latency, debug samples.

    Two eval runs are compared on the records they share. Two models are evaluated on exactly the same
    records in each data mode (held-out split, freshly generated data, adversarial set), with a warning
    when those records were in either model's training data. Either side may be an endpoint: an alias
    from --endpoints, or a model name with --base-url-a / --base-url-b.
    """
    from rewardlab.eval.compare import DATA_MODES, compare_models, compare_runs
    from rewardlab.eval.view import comparison_view, model_comparison_view
    from rewardlab.runs import RunStore
    from rewardlab.runs.lineage import trained_env

    store = RunStore(runs_dir)
    served_a, served_b = served_side(a, base_url_a, endpoints), served_side(b, base_url_b, endpoints)
    if endpoints is not None and served_a is None and served_b is None:
        from rewardlab.config import load_endpoints

        known = ", ".join(load_endpoints(endpoints))
        raise RewardlabError(f"{endpoints}: neither '{a}' nor '{b}' is an endpoint alias; it has: {known}")
    if served_a is None and served_b is None and _is_eval_run(store, a) and _is_eval_run(store, b):
        console.print(comparison_view(compare_runs(store, a, b, num_samples=samples)))
        return
    fields_a = served_a or {"name_or_path": model_argument(runs_dir, a)}
    fields_b = served_b or {"name_or_path": model_argument(runs_dir, b)}
    model_a, model_b = fields_a["name_or_path"], fields_b["name_or_path"]
    # Only a local model has run lineage that records what it was trained on.
    traced = [fields["name_or_path"] for fields in (fields_a, fields_b) if fields.get("base_url") is None]
    env_config = (
        {"name": env, "args": {}}
        if env
        else next(filter(None, (trained_env(model, store) for model in traced)), None)
    )
    if env_config is None:
        raise RewardlabError(
            "name the environment with --env: neither model comes from a run that records one"
        )
    modes = DATA_MODES if data == "all" else tuple(m.strip() for m in data.split(",") if m.strip())
    common = {
        "env": env_config,
        "num_examples": num_examples,
        "rollouts_per_example": rollouts,
        "seed": seed,
        "runs_dir": runs_dir,
    }
    config_a = EvalConfig.model_validate({**common, "model": fields_a})
    config_b = EvalConfig.model_validate({**common, "model": fields_b})
    run = store.create_run(
        "compare",
        {
            "a": model_a,
            "b": model_b,
            "endpoint_a": fields_a.get("base_url"),
            "endpoint_b": fields_b.get("base_url"),
            "modes": list(modes),
            **common,
        },
    )
    try:
        results = compare_models(store, config_a, config_b, modes, num_samples=samples, parent=run.id)
    except RewardlabError as error:
        store.finish(run.id, status="failed", summary={"error": str(error)})
        raise
    console.print(model_comparison_view(results, label_a, label_b))
    store.finish(
        run.id,
        summary={
            r.mode: {"skipped": r.skipped}
            if r.skipped
            else {
                "mean_a": r.comparison.reward.mean_a,
                "mean_b": r.comparison.reward.mean_b,
                "mean_diff": r.comparison.reward.mean_diff,
                "ci95": list(r.comparison.reward.ci95),
                "n": r.comparison.reward.n,
                "seen_in_training_a": r.seen_in_training_a if r.traced_a else None,
                "seen_in_training_b": r.seen_in_training_b if r.traced_b else None,
                **{
                    f"{key}_{side}": summary[key]
                    for side, summary in (("a", r.summary_a), ("b", r.summary_b))
                    for key in ("latency_mean_s", "latency_p50_s", "latency_p95_s", "requests_retried")
                    if key in summary
                },
            }
            for r in results
        },
    )


def served_side(name: str, base_url: str | None, endpoints: Path | None) -> dict | None:
    """One side of ``compare`` as endpoint model fields (``--base-url-a``/``-b``, or an alias in
    ``--endpoints``); ``None`` for a local model, run or scripted player."""
    if base_url is not None:
        return {"name_or_path": name, "base_url": base_url}
    if endpoints is not None:
        from rewardlab.config import load_endpoints

        found = load_endpoints(endpoints).get(name)
        return found.model_dump(exclude_unset=True) if found is not None else None
    return None


def _is_eval_run(store, ref: str) -> bool:
    if not (store.root / "rewardlab.db").exists():
        return False
    try:
        return store.get(ref).kind == "eval"
    except RewardlabError:
        return False


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


@app.command()
@user_errors
def audit(
    run: Annotated[str, typer.Argument(help="Train run (id, prefix or directory).")],
    strict: Annotated[bool, typer.Option(help="Exit with code 1 when anything is flagged (for CI).")] = False,
    runs_dir: RunsDir = "runs",
):
    """Reward-hacking audit: each component's share, rise and correlation with correctness over training."""
    from rewardlab.rubrics.audit import audit_run
    from rewardlab.rubrics.audit_view import audit_view
    from rewardlab.runs import RunStore

    report = audit_run(RunStore(runs_dir), run)
    console.print(audit_view(report))
    if strict and report.flags:
        raise typer.Exit(1)


@app.command()
@user_errors
def export(
    run: Annotated[str, typer.Argument(help="Train run (id, prefix or directory) or an adapter directory.")],
    out: Annotated[Path, typer.Option(help="Directory to write (must be empty or absent).")],
    merge: Annotated[
        bool, typer.Option(help="Also write the base model with the adapter merged in.")
    ] = False,
    name: Annotated[str, typer.Option(help="Model name to serve the adapter under.")] = "tuned",
    runs_dir: RunsDir = "runs",
):
    """Export a run's adapter in PEFT format (for vLLM) and, with --merge, a merged full model."""
    from rewardlab.export import export_run

    result = export_run(run_argument(runs_dir, run), out, merge=merge, name=name)
    if result.adapter_dir:
        console.print(f"adapter: [bold]{result.adapter_dir}[/]")
    if result.merged_dir:
        console.print(f"merged model: [bold]{result.merged_dir}[/]")
    console.print("serve it with vLLM:")
    for command in result.vllm_commands():
        console.print(f"  {command}", soft_wrap=True)


@env_app.command("init")
@user_errors
def env_init(
    name: Annotated[str, typer.Argument(help="Environment name (also the package directory).")],
    parent: Annotated[Path, typer.Option(help="Where to create the package.")] = Path("."),
):
    """Scaffold an installable environment package (pyproject, module with load_environment, a test)."""
    from rewardlab.envs.scaffold import scaffold

    root = scaffold(name, parent)
    console.print(
        f"created [bold]{root}[/]: edit {root / name.replace('-', '_') / '__init__.py'}, then "
        f"`pip install -e {root}` and `rewardlab eval --env {name} --model tiny`"
    )


@app.command()
@user_errors
def serve(
    model: Annotated[str, typer.Option(help="Base model: tiny name, HF directory, adapter dir or run.")],
    adapter: Annotated[
        list[str] | None,
        typer.Option(help="LoRA adapter served beside the base: name=path (adapter dir or run; repeatable)."),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(envvar="REWARDLAB_API_KEY", help="Bearer key required on every route but /health."),
    ] = None,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Most completions generated together.")] = 32,
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long an idle server waits for more requests to batch.")
    ] = 5.0,
    mix_adapters: Annotated[
        bool, typer.Option(help="Batch base and adapter requests together (peft per-row adapters).")
    ] = False,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = "auto",
    runs_dir: RunsDir = "runs",
):
    """Serve the model and its LoRA adapters over an OpenAI-compatible HTTP API."""
    from rewardlab.serve import build_engine, parse_adapter_specs, run_server
    from rewardlab.serve.server import bind

    sock = bind(host, port)
    adapters = {
        name: model_argument(runs_dir, path)
        for name, path in parse_adapter_specs(adapter or [], base_name=model).items()
    }
    engine = build_engine(
        model_argument(runs_dir, model),
        adapters,
        served_name=model,
        dtype=dtype,
        device=device,
        max_batch_size=max_batch_size,
        batch_wait_ms=batch_wait_ms,
        mix_adapters=mix_adapters,
    )
    for warning in engine.models.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    console.print(
        f"serving {', '.join(engine.models.names)} at http://{host}:{port}/v1"
        + (" (API key required)" if api_key else ""),
        soft_wrap=True,
    )
    run_server(engine, host=host, port=port, api_key=api_key or None, sock=sock)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
