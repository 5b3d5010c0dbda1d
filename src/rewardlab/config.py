"""One documented config object per command, loaded from TOML and overridable from the command line.

Every field has a description (``rewardlab train --help-config`` prints them). Overrides are
``key=value`` pairs with dotted keys for sections (``lora.rank=8``); values are read as TOML literals,
so ``1e-4``, ``true`` and ``[1, 2]`` mean what they look like, and anything else is a string. A mistake
becomes one line naming the field.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, TypeVar

import tomllib
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from rewardlab.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(Section):
    name_or_path: str = Field(
        "tiny",
        description="Model to start from: a built-in tiny model (tiny, tiny-qwen2, tiny-25m), a local "
        "Hugging Face directory, a PEFT adapter directory, a run directory, or a Hub name.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    device: str = Field(
        "auto", description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', 'cuda:1'..."
    )
    base_url: str | None = Field(
        None,
        description="An OpenAI-compatible endpoint (http://localhost:8000/v1, vLLM, a hosted API) to sample "
        "from instead of loading a model; name_or_path is then the model name the server knows. Eval and "
        "compare only: an endpoint returns text, and training needs token ids.",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the endpoint's API key (unset: a placeholder, for "
        "key-less local servers).",
    )
    max_concurrency: int = Field(16, gt=0, description="Most requests in flight to the endpoint at once.")
    timeout_s: float = Field(120.0, gt=0, description="Seconds one request may take before it is retried.")
    max_retries: int = Field(
        4, ge=0, description="Retries of a request that hit 429, 5xx, a timeout or a dropped connection."
    )
    backoff_s: float = Field(
        0.25, ge=0, description="First retry delay; it doubles on every retry (with jitter, at most 30s)."
    )


def local_model(model: ModelConfig) -> ModelConfig:
    """Training updates weights from the sampled token ids, which an HTTP endpoint does not return."""
    if model.base_url is not None:
        raise ValueError(
            f"training needs a local model, not the endpoint {model.base_url}: unset model.base_url"
        )
    return model


def lora_or_full_precision(config: Any) -> Any:
    """Full fine-tuning updates the weights themselves; in half precision (with no float32 master copy)
    most small updates would round away. LoRA keeps its adapters in float32 over a half-precision base."""
    if not config.lora.enabled and config.model.dtype != "float32":
        raise ValueError(
            f"full fine-tuning in {config.model.dtype} would round small updates away (there is no float32 "
            "master copy): set model.dtype = \"float32\" or lora.enabled = true"
        )
    return config


class LoraConfig(Section):
    enabled: bool = Field(True, description="Train a LoRA adapter; false trains every weight.")
    rank: int = Field(16, gt=0, description="LoRA rank r.")
    alpha: float = Field(32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank.")
    dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA branch.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or 'all-linear' for every linear layer."
    )


class EnvConfig(Section):
    name: str = Field(
        "arithmetic", description="Environment: built-in name, installed name, .py file or module."
    )
    args: dict[str, Any] = Field(
        default_factory=dict, description="Keyword arguments for load_environment()."
    )


class SamplingConfig(Section):
    temperature: float = Field(1.0, ge=0, description="Sampling temperature; 0 is greedy.")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus sampling mass.")
    max_new_tokens: int | None = Field(
        None,
        gt=0,
        description="Most tokens generated per model turn; unset: the environment's budget for the model "
        "(16 for the tiny character models, more for a subword model with a chat template).",
    )
    stop: list[str] = Field(default_factory=list, description="Strings that end a turn (besides EOS).")


class TrainConfig(Section):
    """GRPO-family reinforcement learning with LoRA (or full fine-tuning)."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The policy's starting point.")
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Adapter settings.")
    env: EnvConfig = Field(default_factory=EnvConfig, description="The task.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Rollout sampling.")
    run_name: str | None = Field(None, description="A label for the run in `rewardlab runs list`.")
    runs_dir: str = Field("runs", description="Where the run store (SQLite + run directories) lives.")
    seed: int = Field(0, description="Seeds example order, sampling and initialisation.")
    max_steps: int = Field(100, gt=0, description="Optimizer steps (one batch of groups each).")
    prompts_per_step: int = Field(16, gt=0, description="Groups (distinct prompts) per step.")
    group_size: int = Field(8, ge=2, description="Completions per prompt; advantages compare within a group.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Decay after warmup."
    )
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    adam_beta1: float = Field(0.9, ge=0, lt=1, description="AdamW beta1.")
    adam_beta2: float = Field(0.99, ge=0, lt=1, description="AdamW beta2.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping by global norm.")
    gradient_accumulation_steps: int = Field(
        1, gt=0, description="Micro-batches a step's rollouts are split into (memory, same result)."
    )
    num_iterations: int = Field(
        1, gt=0, description="Optimizer passes over each batch of rollouts; >1 uses stored old log-probs."
    )
    loss_type: Literal["grpo", "dapo", "dr_grpo", "gspo"] = Field(
        "dapo",
        description="Aggregation: grpo = per-sequence mean; dapo = token-level mean; dr_grpo = constant "
        "length normaliser; gspo = sequence-level importance ratio.",
    )
    scale_rewards: bool = Field(True, description="Divide advantages by the group's reward std.")
    epsilon_low: float = Field(0.2, ge=0, description="Lower clip: ratio >= 1 - epsilon_low.")
    epsilon_high: float = Field(
        0.28, ge=0, description="Upper clip: ratio <= 1 + epsilon_high (DAPO clip-higher)."
    )
    beta: float = Field(0.0, ge=0, description="KL penalty to the reference (the base model, adapters off).")
    checkpoint_every: int = Field(
        50, ge=0, description="Save a resumable checkpoint every N steps (0: only at the end)."
    )
    log_rollouts_per_step: int = Field(
        8, ge=0, description="Rollouts stored per step with their reward breakdown."
    )
    max_batch_size: int = Field(256, gt=0, description="Most sequences per forward pass when sampling.")
    resume: str | None = Field(None, description="Run id or directory to continue from its last checkpoint.")

    _local_model = field_validator("model")(local_model)
    _precision = model_validator(mode="after")(lora_or_full_precision)


class SFTConfig(Section):
    """Supervised priming on demonstrations, so reinforcement learning starts from non-zero rewards."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The model to prime.")
    lora: LoraConfig = Field(
        default_factory=lambda: LoraConfig(enabled=False),
        description="Adapter settings (off: full fine-tune).",
    )
    env: EnvConfig = Field(
        default_factory=EnvConfig, description="Prompts and demonstrations come from here."
    )
    data: str | None = Field(
        None, description="JSONL of {prompt, completion} rows; default: the environment's demonstrations."
    )
    run_name: str | None = Field(None, description="A label for the run.")
    runs_dir: str = Field("runs", description="Where the run store lives.")
    seed: int = Field(0, description="Seeds data order and initialisation.")
    max_steps: int = Field(1000, gt=0, description="Optimizer steps.")
    batch_size: int = Field(64, gt=0, description="Sequences per step.")
    learning_rate: float = Field(1e-3, gt=0, description="Peak AdamW learning rate.")
    lr_scheduler: Literal["constant", "linear", "cosine"] = Field("cosine", description="Decay after warmup.")
    warmup_steps: int = Field(50, ge=0, description="Linear warmup steps.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping by global norm.")
    log_every: int = Field(25, gt=0, description="Log loss every N steps.")

    _local_model = field_validator("model")(local_model)
    _precision = model_validator(mode="after")(lora_or_full_precision)


class EvalConfig(Section):
    """n examples x r rollouts of a model on an environment's split."""

    model: ModelConfig = Field(default_factory=ModelConfig, description="The model to evaluate.")
    env: EnvConfig = Field(default_factory=EnvConfig, description="The task.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Rollout sampling.")
    split: Literal["train", "eval", "fresh", "adversarial"] = Field(
        "eval",
        description="Examples: 'eval' (held-out), 'train', 'fresh' (newly generated with the seed) or "
        "'adversarial' (decoys and hard cases), the last two for environments that define them.",
    )
    num_examples: int | None = Field(
        None, gt=0, description="Examples to evaluate (default: the whole split)."
    )
    rollouts_per_example: int = Field(4, gt=0, description="Rollouts per example (r); pass@k for k <= r.")
    pass_threshold: float = Field(1.0, description="A rollout passes when its primary component >= this.")
    run_name: str | None = Field(None, description="A label for the run.")
    runs_dir: str = Field("runs", description="Where the run store lives.")
    seed: int = Field(0, description="Seeds example choice and sampling.")
    max_batch_size: int = Field(256, gt=0, description="Most sequences per forward pass.")


class CompareConfig(Section):
    """A paired comparison: two eval runs, or two models evaluated on the same records."""

    env: EnvConfig | None = Field(
        None, description="The task (default: the environment the models were trained on)."
    )
    data: str = Field(
        "held-out", description="Data modes, comma-separated: held-out, fresh, adversarial, or all."
    )
    num_examples: int | None = Field(
        None, gt=0, description="Records per mode (default: the held-out split; 200 generated ones)."
    )
    rollouts_per_example: int = Field(4, gt=0, description="Rollouts per record.")
    sampling: SamplingConfig = Field(default_factory=SamplingConfig, description="Both models' sampling.")
    seed: int = Field(0, description="Seed for fresh data and sampling.")
    label_a: str = Field("A", description="Name for A in the output.")
    label_b: str = Field("B", description="Name for B in the output.")
    samples: int = Field(6, ge=0, description="Debug samples to show.")
    endpoints: str | None = Field(
        None, description="TOML file of [endpoints.<alias>] tables; A and B may name its aliases."
    )
    base_url_a: str | None = Field(None, description="A is the model of that name served at this URL.")
    base_url_b: str | None = Field(None, description="B is the model of that name served at this URL.")
    runs_dir: str = Field("runs", description="Where the run store lives.")


class ServeConfig(Section):
    """An OpenAI-compatible server over a base model and its LoRA adapters."""

    model: str | None = Field(
        None,
        description="Base model: a tiny model, HF directory or Hub id, an adapter directory or a run "
        "(required).",
    )
    adapters: dict[str, str] = Field(
        default_factory=dict,
        description="LoRA adapters served beside the base, {name = path}: an adapter directory or a train "
        "run trained on this base (--adapter name=path adds one).",
    )
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    max_batch_size: int = Field(32, gt=0, description="Most completions generated together.")
    batch_wait_ms: float = Field(
        5.0, ge=0, description="How long an idle server waits for more requests to batch."
    )
    mix_adapters: bool = Field(
        False, description="Batch base and adapter requests together (peft per-row adapters)."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field("float32", description="Weights dtype.")
    device: str = Field("auto", description="'auto' (CUDA if available, else CPU), 'cpu', 'cuda', ...")
    runs_dir: str = Field("runs", description="Where the run store lives (for run ids).")


class AuditConfig(Section):
    """The reward-hacking audit of a train run."""

    strict: bool = Field(False, description="Exit with code 1 when anything is flagged (for CI).")
    runs_dir: str = Field("runs", description="Where the run store lives.")


class ExportConfig(Section):
    """A run's adapter in PEFT format (for vLLM), and optionally the merged model."""

    out: str | None = Field(None, description="Directory to write, empty or absent (required).")
    merge: bool = Field(False, description="Also write the base model with the adapter merged in.")
    name: str = Field("tuned", description="Model name to serve the adapter under.")
    runs_dir: str = Field("runs", description="Where the run store lives.")


ConfigT = TypeVar("ConfigT", bound=Section)


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # not a TOML literal: a bare string
    return key.split("."), value


def _set(data: dict[str, Any], path: list[str], value: Any) -> None:
    node = data
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config field '{'.'.join(path)}': '{part}' is not a section")
        node = child
    node[path[-1]] = value


def _field_names(model: type[BaseModel], path: tuple[str | int, ...]) -> list[str]:
    """The valid field names at ``path``, for 'did you mean' suggestions."""
    current: Any = model
    for part in path:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        annotation = getattr(field, "annotation", None)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        current = annotation
    return list(current.model_fields)


def _describe_one(problem: dict, model: type[BaseModel]) -> str:
    location = tuple(problem["loc"])
    field = ".".join(str(part) for part in location)
    if problem["type"] == "extra_forbidden":
        names = _field_names(model, location[:-1])
        close = difflib.get_close_matches(str(location[-1]), names, n=1)
        hint = f" (did you mean '{'.'.join([*map(str, location[:-1]), close[0]])}'?)" if close else ""
        return f"'{field}'{hint}"
    message = problem["msg"].removeprefix("Value error, ")
    if not location:  # a check across fields names them itself
        return message
    given = problem.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"config field '{field}': {message}{shown}"


def describe_validation_error(error: ValidationError, model: type[BaseModel], source: str = "config") -> str:
    """Every problem in one line: all unknown fields together (a file with two typos names both), then
    the first invalid value."""
    problems = error.errors()
    unknown = [_describe_one(p, model) for p in problems if p["type"] == "extra_forbidden"]
    invalid = [_describe_one(p, model) for p in problems if p["type"] != "extra_forbidden"]
    parts = []
    if unknown:
        parts.append(f"unknown config field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    parts.extend(invalid[:1])
    return f"{source}: {'; '.join(parts)}"


def load_config(
    model: type[ConfigT],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> ConfigT:
    """Build ``model`` from a TOML file (optional), ``key=value`` overrides, then ``values`` (dotted keys,
    Python values: a command's own flags), validated."""
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: invalid TOML ({error})") from None
    for override in overrides or []:
        keys, value = parse_override(override)
        _set(data, keys, value)
        source = f"{path}" if path else "command line"
    for key, value in (values or {}).items():
        _set(data, key.split("."), value)
        source = f"{path}" if path else "command line"
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, model, source)) from None


def load_endpoints(path: str | Path) -> dict[str, ModelConfig]:
    """The ``[endpoints.<alias>]`` tables of a TOML file, each a :class:`ModelConfig` with a ``base_url``.

    An entry names ``base_url`` and ``model`` (the name the server knows) and may set any other model
    field (``api_key_env``, ``max_concurrency``, ``timeout_s``, ``max_retries``, ``backoff_s``).
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"endpoints file not found: {path}")
    try:
        tables = tomllib.loads(path.read_text()).get("endpoints")
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: invalid TOML ({error})") from None
    if not isinstance(tables, dict) or not tables:
        raise ConfigError(f"{path}: no [endpoints.<alias>] tables")
    endpoints = {}
    for alias, table in tables.items():
        source = f"{path} [endpoints.{alias}]"
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: must be a table with base_url and model")
        missing = [key for key in ("base_url", "model") if key not in table]
        if missing:
            raise ConfigError(f"{source}: missing {' and '.join(missing)}")
        entry = {("name_or_path" if key == "model" else key): value for key, value in table.items()}
        try:
            endpoints[alias] = ModelConfig.model_validate(entry)
        except ValidationError as error:
            raise ConfigError(describe_validation_error(error, ModelConfig, source)) from None
    return endpoints


def endpoint(path: str | Path, alias: str) -> ModelConfig:
    """The endpoint ``alias`` of the endpoints file at ``path``; a missing alias is one line naming both."""
    endpoints = load_endpoints(path)
    if alias not in endpoints:
        close = difflib.get_close_matches(alias, endpoints, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{path}: no endpoint '{alias}'{hint}; it has: {', '.join(endpoints)}")
    return endpoints[alias]


def describe_fields(model: type[BaseModel] | BaseModel, prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every field, sections flattened.

    Defaults are read from one default instance, sections included, so a section a config builds
    differently (SFT's LoRA is off) shows the value that run would use.
    """
    instance = model if isinstance(model, BaseModel) else model()
    rows: list[tuple[str, str, str]] = []
    for name, field in type(instance).model_fields.items():
        value = getattr(instance, name)
        if isinstance(value, BaseModel):
            rows.extend(describe_fields(value, f"{prefix}{name}."))
        else:
            rows.append((f"{prefix}{name}", repr(value), field.description or ""))
    return rows


def to_toml(config: BaseModel) -> str:
    """A TOML rendering of a config (sections as tables), for run directories and `--print-config`."""
    lines: list[str] = []
    tables: list[tuple[str, dict[str, Any]]] = []
    for key, value in config.model_dump().items():
        if (
            isinstance(value, dict)
            and key in type(config).model_fields
            and isinstance(getattr(config, key), BaseModel)
        ):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{key} = {_toml_value(value)}")
    for name, table in tables:
        lines.append(f"\n[{name}]")
        for key, value in table.items():
            if value is not None:
                lines.append(f"{key} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return _toml_value(str(value))
