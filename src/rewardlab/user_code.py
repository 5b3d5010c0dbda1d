"""Importing a user's Python file (an environment, a data generator, a schema) as a module of its own."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from rewardlab.errors import RewardlabError


def import_file(path: Path, module_name: str, error: type[RewardlabError], label: str) -> ModuleType:
    """``path`` imported as ``module_name`` (registered in ``sys.modules``, so pickling its functions
    works); a file that cannot be imported is one ``error`` naming ``label`` and the path, and leaves
    nothing behind."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise error(f"cannot import {label} {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as failure:
        del sys.modules[module_name]
        raise error(f"{label} {path} failed to import: {type(failure).__name__}: {failure}") from failure
    return module
