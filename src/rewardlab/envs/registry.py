"""Finding environments by name.

``load_environment(spec, **kwargs)`` accepts, in this order:

1. a built-in name (``arithmetic``),
2. an installed package registered under the ``rewardlab.environments`` entry-point group,
3. a path to a ``.py`` file,
4. an importable module path (``my_pkg.my_env``).

Whatever is found must expose ``load_environment(**kwargs)`` returning an :class:`Environment`.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from rewardlab.envs.base import Environment
from rewardlab.errors import EnvironmentLoadError
from rewardlab.user_code import import_file

BUILTIN = {
    "arithmetic": "rewardlab.envs.builtin.arithmetic",
    "maze": "rewardlab.envs.builtin.maze",
    "wordle": "rewardlab.envs.builtin.wordle",
    "tool_math": "rewardlab.envs.builtin.tool_math",
    "event_selection": "rewardlab.envs.builtin.event_selection",
    "hypothesis": "rewardlab.envs.builtin.hypothesis",
}
ENTRY_POINT_GROUP = "rewardlab.environments"


def _installed() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def _import_file(path: Path) -> ModuleType:
    return import_file(path, f"rewardlab_user_env_{path.stem}", EnvironmentLoadError, "environment file")


def _resolve(spec: str) -> tuple[str, ModuleType | Any]:
    if spec in BUILTIN:
        return spec, importlib.import_module(BUILTIN[spec])
    installed = _installed()
    if spec in installed:
        try:
            return spec, installed[spec].load()
        except Exception as error:
            raise EnvironmentLoadError(
                f"installed environment '{spec}' failed to load: {type(error).__name__}: {error}"
            ) from error
    path = Path(spec)
    if spec.endswith(".py") or path.is_file():
        if not path.is_file():
            raise EnvironmentLoadError(f"environment file not found: {spec}")
        return path.stem, _import_file(path)
    try:
        return spec, importlib.import_module(spec)
    except ModuleNotFoundError as error:
        if error.name and spec.startswith(error.name):
            names = sorted(BUILTIN) + sorted(installed)
            close = difflib.get_close_matches(spec, names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise EnvironmentLoadError(
                f"unknown environment '{spec}'{hint}: not a built-in or installed environment "
                f"({', '.join(names)}), a .py file or an importable module"
            ) from None
        raise EnvironmentLoadError(f"environment module '{spec}' failed to import: {error}") from error
    except Exception as error:
        raise EnvironmentLoadError(
            f"environment module '{spec}' failed to import: {type(error).__name__}: {error}"
        ) from error


def load_environment(spec: str, **kwargs: Any) -> Environment:
    """Load an environment by built-in name, installed name, file path or module path."""
    name, target = _resolve(spec)
    factory = (
        target
        if callable(target) and not isinstance(target, ModuleType)
        else getattr(target, "load_environment", None)
    )
    if factory is None:
        raise EnvironmentLoadError(f"environment '{spec}' has no load_environment(**kwargs) function")
    parameters = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    unknown = [key for key in kwargs if key not in parameters and not takes_any]
    if unknown:
        accepted = ", ".join(
            p for p in parameters if parameters[p].kind is not inspect.Parameter.VAR_POSITIONAL
        )
        raise EnvironmentLoadError(
            f"environment '{spec}' does not take argument '{unknown[0]}' (it takes: {accepted or 'nothing'})"
        )
    try:
        environment = factory(**kwargs)
    except EnvironmentLoadError:
        raise
    except (TypeError, ValueError) as error:
        raise EnvironmentLoadError(f"environment '{spec}' rejected its arguments: {error}") from error
    if not isinstance(environment, Environment):
        raise EnvironmentLoadError(
            f"load_environment() of '{spec}' returned {type(environment).__name__}, not an Environment"
        )
    if environment.name == Environment.name:
        environment.name = name
    return environment


def prompt_style_for(name_or_path: str | None, base_url: str | None = None) -> str | None:
    """The prompt style that suits a model: ``terse`` for the character-level tiny models, ``chat`` for
    anything else with a chat template (a real model, an endpoint); ``None`` for a scripted player."""
    if base_url is not None:
        return "chat"
    if not name_or_path or name_or_path.startswith("scripted:"):
        return None
    from rewardlab.models.catalog import is_character_model
    from rewardlab.models.loading import resolve

    base, _ = resolve(name_or_path)
    return "terse" if is_character_model(base) else "chat"


def load_environment_for(
    spec: str, args: dict[str, Any], name_or_path: str | None, base_url: str | None = None
) -> Environment:
    """:func:`load_environment` as a run of the model ``name_or_path`` needs it: a built-in environment
    words its prompts for that model (``prompt_style``) unless ``args`` says otherwise."""
    style = args.get("prompt_style") or prompt_style_for(name_or_path, base_url)
    if style is not None and "prompt_style" not in args and _accepts(spec, "prompt_style"):
        args = {**args, "prompt_style": style}
    return load_environment(spec, **args)


def _accepts(spec: str, parameter: str) -> bool:
    _, target = _resolve(spec)
    factory = target if callable(target) and not isinstance(target, ModuleType) else None
    factory = factory or getattr(target, "load_environment", None)
    if factory is None:
        return False
    parameters = inspect.signature(factory).parameters
    return parameter in parameters


def list_environments() -> dict[str, str]:
    """Built-in and installed environments with a one-line description."""
    found: dict[str, str] = {}
    for name, module_path in BUILTIN.items():
        module = importlib.import_module(module_path)
        found[name] = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
    for name, entry in _installed().items():
        found.setdefault(name, _installed_description(entry))
    return found


def _installed_description(entry) -> str:
    """The first docstring line of an installed environment's module (loading it, which also shows
    whether it loads at all)."""
    try:
        target = entry.load()
    except Exception as error:
        return f"failed to load: {type(error).__name__}: {error}"
    module = sys.modules.get(getattr(target, "__module__", ""), target)
    doc = (getattr(module, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else f"installed ({entry.value})"
