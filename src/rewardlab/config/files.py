"""Configs in and out: TOML files and ``key=value`` overrides in, one-line errors, TOML and field tables out.

Overrides are ``key=value`` pairs with dotted keys for sections (``lora.rank=8``); values are read as TOML
literals, so ``1e-4``, ``true`` and ``[1, 2]`` mean what they look like, and anything else is a string.
"""

from __future__ import annotations

import difflib
import re
import warnings
from pathlib import Path
from typing import Any, TypeVar, get_args

import tomllib
from pydantic import BaseModel, ValidationError

from rewardlab.config.base import RenamedField, Section, deep_merge, put, upgrade
from rewardlab.config.commands import TrainConfig
from rewardlab.config.sections import EvalModelConfig
from rewardlab.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=Section)


# -- reading --------------------------------------------------------------------------------------------


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
    except RecursionError:
        raise ConfigError(f"override '{key}': its value is nested too deeply to read") from None
    return key.split("."), value


def _set(data: dict[str, Any], path: list[str], value: Any) -> None:
    try:
        put(data, path, value)
    except ValueError as error:
        raise ConfigError(str(error)) from None


def read_config(
    path: str | Path | None = None, overrides: list[str] | None = None, values: dict[str, Any] | None = None
) -> tuple[dict[str, Any], str]:
    """The raw settings of a TOML file (optional), then ``key=value`` overrides, then ``values`` (dotted
    keys, Python values: a command's own flags), and what to call their source in an error."""
    data: dict[str, Any] = {}
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: invalid TOML ({error})") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"{path}: not UTF-8 text (byte {error.start})") from None
        except RecursionError:
            raise ConfigError(f"{path}: nested too deeply to read") from None
    for override in overrides or []:
        _set(data, *parse_override(override))
        source = f"{path}" if path else "command line"
    for key, value in (values or {}).items():
        _set(data, key.split("."), value)
        source = f"{path}" if path else "command line"
    return data, source


def validated(model: type[ConfigT], data: dict[str, Any], source: str = "config") -> ConfigT:
    """``data`` as a ``model``; a mistake is one line naming the field."""
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise ConfigError(describe_validation_error(error, model, source)) from None


def load_config(
    model: type[ConfigT],
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    values: dict[str, Any] | None = None,
) -> ConfigT:
    """Build ``model`` from a TOML file (optional), ``key=value`` overrides, then ``values``, validated."""
    return validated(model, *read_config(path, overrides, values))


def resume_config(store, run: str, path: str | Path | None = None, overrides: list[str] | None = None):
    """The config that continues the train ``run``: the run's own, changed only where a file or an override
    says so now (a larger ``max_steps``, say)."""
    stored = store.get(run)
    if stored.kind != "train":
        raise ConfigError(f"run '{stored.id}' is a {stored.kind} run; only a train run can be resumed")
    changes, source = read_config(path, overrides)
    with warnings.catch_warnings():  # a run recorded under old field names is not the user's doing
        warnings.simplefilter("ignore", RenamedField)
        recorded = _upgraded(TrainConfig, stored.config)
    merged = deep_merge(recorded, _upgraded(TrainConfig, changes))
    return validated(TrainConfig, {**merged, "resume": stored.id, "runs_dir": str(store.root)}, source)


def _upgraded(model: type[Section], data: dict) -> dict:
    try:
        return upgrade(model, data)
    except ValueError as error:
        raise ConfigError(str(error)) from None


# -- one-line errors ------------------------------------------------------------------------------------


def _section_class(model: type[BaseModel], path: tuple[str | int, ...]) -> type[BaseModel] | None:
    """The section class at ``path`` (``("train", "lora")``), or ``None`` where the path is no section."""
    current: Any = model
    for part in path:
        field = current.model_fields.get(part) if isinstance(part, str) else None
        candidates = [getattr(field, "annotation", None), *get_args(getattr(field, "annotation", None))]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if current is None:
            return None
    return current


def _suggestion(model: type[BaseModel], location: tuple[str | int, ...]) -> str:
    """The field most like an unknown one: a sibling, or a field of a table below (``learning_rate`` at the
    top of a train config is ``optimizer.learning_rate`` now)."""
    section = _section_class(model, location[:-1])
    if section is None:
        return ""
    prefix = [str(part) for part in location[:-1]]
    names = {name: name for name in section.model_fields}
    for name in section.model_fields:
        child = _section_class(section, (name,))
        for inner in child.model_fields if child is not None else ():
            names.setdefault(inner, f"{name}.{inner}")
    close = difflib.get_close_matches(str(location[-1]), list(names), n=1)
    if close:
        return f" (did you mean '{'.'.join([*prefix, names[close[0]]])}'?)"
    reason = getattr(section, "not_here", {}).get(str(location[-1]))
    return f" ({reason})" if reason else ""


def _describe_one(problem: dict, model: type[BaseModel]) -> str:
    location = tuple(problem["loc"])
    field = ".".join(str(part) for part in location)
    if problem["type"] == "extra_forbidden":
        return f"'{field}'{_suggestion(model, location)}"
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


# -- writing --------------------------------------------------------------------------------------------


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


def to_toml(config: BaseModel, header: str | None = None) -> str:
    """``config`` as a TOML file that loads back into the same config (``rewardlab <cmd> --print-config``).

    Sections become tables (``[train.optimizer]``); a field left at ``None`` is left out, which is what
    reading it back gives.
    """
    lines = [f"# {line}" for line in (header or "").splitlines()]
    _table(config, [], lines)
    return "\n".join(lines).lstrip("\n") + "\n"


def _table(section: BaseModel, path: list[str], lines: list[str]) -> None:
    values, tables = [], []
    for name in type(section).model_fields:
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            tables.append((name, value))
        elif value is not None:
            values.append(f"{_key(name)} = {_toml_value(value)}")
    if path and values:
        lines += ["", f"[{'.'.join(_key(part) for part in path)}]"]
    lines += values
    for name, value in tables:
        _table(value, [*path, name], lines)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(name: str) -> str:
    return name if _BARE_KEY.match(name) else _toml_value(name)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_key(str(k))} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return _toml_value(str(value))


# -- endpoints ------------------------------------------------------------------------------------------


def load_endpoints(path: str | Path) -> dict[str, EvalModelConfig]:
    """The ``[endpoints.<alias>]`` tables of a TOML file, each an :class:`EvalModelConfig` with a
    ``base_url``.

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
        endpoints[alias] = validated(EvalModelConfig, entry, source)
    return endpoints


def endpoint(path: str | Path, alias: str) -> EvalModelConfig:
    """The endpoint ``alias`` of the endpoints file at ``path``; a missing alias is one line naming both."""
    endpoints = load_endpoints(path)
    if alias not in endpoints:
        close = difflib.get_close_matches(alias, endpoints, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"{path}: no endpoint '{alias}'{hint}; it has: {', '.join(endpoints)}")
    return endpoints[alias]


def served_model(
    name: str | None,
    base_url: str | None = None,
    endpoints: str | Path | None = None,
    *,
    alias_required: bool = False,
) -> dict | None:
    """The model fields of a model behind an endpoint: ``base_url`` and the name the server knows, or an
    alias of the ``endpoints`` file; ``None`` for a model loaded here (a name, path, run or scripted player).

    With ``alias_required`` (eval: the endpoints file says where every model is), a name the file lacks is an
    error; otherwise (compare: either side may be local) it is a local model.
    """
    if alias_required and base_url is not None and endpoints is not None:
        raise ConfigError("give --base-url or --endpoints, not both")
    if alias_required and (base_url is not None or endpoints is not None) and name is None:
        flag = "--base-url" if base_url is not None else "--endpoints"
        raise ConfigError(f"{flag} needs --model: the served model's name, or the endpoint's alias")
    if base_url is not None:
        return {"name_or_path": name, "base_url": base_url}
    if endpoints is None or name is None:
        return None
    if alias_required:
        return endpoint(endpoints, name).model_dump(exclude_unset=True)
    found = load_endpoints(endpoints).get(name)
    return found.model_dump(exclude_unset=True) if found is not None else None
