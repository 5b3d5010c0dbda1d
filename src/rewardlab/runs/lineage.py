"""The runs a model descends from, and what they trained on.

A model (a run, a run's ``final/`` or ``model/`` directory, an eval run's model) is traced back through each
run's ``config.json`` (its ``model.name_or_path``), so that an evaluation can warn when its records were in
any ancestor's training data (see :mod:`rewardlab.runs.overlap`): the mistake of "evaluating" on the
training data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rewardlab.errors import RewardlabError
from rewardlab.runs.overlap import TrainingData, training_data
from rewardlab.types import Messages


def prompt_hash(prompt: Messages) -> str:
    """The whole-prompt hash runs wrote before overlap was judged by content; still read."""
    return hashlib.sha1(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _is_run_dir(path: Path) -> bool:
    return (path / "manifest.json").exists() and (path / "config.json").exists()


def run_dir_of(path: Path) -> Path | None:
    """The run directory holding ``path`` (itself, or a parent such as ``<run>/final``)."""
    for candidate in [path, *path.parents][:4]:
        if _is_run_dir(candidate):
            return candidate
    return None


def lineage(model: str, store=None) -> list[Path]:
    """Run directories ``model`` descends from, nearest first (empty for a model made elsewhere)."""
    chain: list[Path] = []
    spec: str | None = model
    while spec:
        path = Path(spec)
        if not path.exists() and store is not None:
            try:
                path = store.get(spec).dir
            except RewardlabError:
                break
        run_dir = run_dir_of(path.resolve()) if path.exists() else None
        if run_dir is None or run_dir in chain:
            break
        chain.append(run_dir)
        config = json.loads((run_dir / "config.json").read_text())
        spec = (config.get("model") or {}).get("name_or_path")
    return chain


def training_data_of(model: str, store=None) -> TrainingData | None:
    """What ``model``'s lineage trained on; None for a model with no run history (overlap unchecked)."""
    return training_data(lineage(model, store))


def trained_env(model: str, store=None) -> dict | None:
    """The environment config (``{"name", "args"}``) of the nearest run ``model`` descends from."""
    for run_dir in lineage(model, store):
        env = json.loads((run_dir / "config.json").read_text()).get("env")
        if env and env.get("name"):
            return env
    return None
