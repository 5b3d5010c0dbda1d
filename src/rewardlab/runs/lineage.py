"""Which prompts a model was trained on, across the runs it descends from.

Every SFT and train run writes the hashes of its training prompts to ``training_prompt_hashes.txt`` (the
file says what it is in its first line; runs from before it had that name wrote ``training_prompts.txt``,
still read). A model
(a run, a run's ``final/`` or ``model/`` directory, an eval run's model) is traced back through each run's
``config.json`` (its ``model.name_or_path``) so that an evaluation can warn when its records were seen in
training by any ancestor — the mistake of "evaluating" on the training data.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from rewardlab.errors import RewardlabError
from rewardlab.types import Messages

PROMPTS_FILE = "training_prompt_hashes.txt"
LEGACY_PROMPTS_FILE = "training_prompts.txt"
PROMPTS_HEADER = (
    "# A line per prompt this run trained on: the first 16 hex digits of the SHA-1 of its messages (JSON).\n"
    "# rewardlab compare reads it to warn when records it evaluates were in a model's training data.\n"
)


def prompt_hash(prompt: Messages) -> str:
    return hashlib.sha1(json.dumps(prompt, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def record_training_prompts(run_dir: Path, prompts: Iterable[Messages]) -> Path:
    path = Path(run_dir) / PROMPTS_FILE
    path.write_text(PROMPTS_HEADER + "\n".join(sorted({prompt_hash(p) for p in prompts})) + "\n")
    return path


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


def training_prompt_hashes(model: str, store=None) -> set[str]:
    hashes: set[str] = set()
    for run_dir in lineage(model, store):
        for path in (run_dir / PROMPTS_FILE, run_dir / LEGACY_PROMPTS_FILE):
            if path.exists():
                lines = (line.strip() for line in path.read_text().splitlines())
                hashes.update(line for line in lines if line and not line.startswith("#"))
    return hashes


def trained_env(model: str, store=None) -> dict | None:
    """The environment config (``{"name", "args"}``) of the nearest run ``model`` descends from."""
    for run_dir in lineage(model, store):
        env = json.loads((run_dir / "config.json").read_text()).get("env")
        if env and env.get("name"):
            return env
    return None
