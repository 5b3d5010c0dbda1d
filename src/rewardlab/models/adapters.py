"""LoRA adapters and the base model they were trained on.

An adapter is only meaningful on its own base: on another model of the same shape it loads without a
complaint and produces nonsense. So every adapter rewardlab writes records its base twice: as an absolute
path (PEFT's ``base_model_name_or_path``) and as a fingerprint of that base's config and weights
(``rewardlab_base.json``), which still identifies the base after it has been moved or copied.
:func:`check_base` compares an adapter with the model it is about to be put on.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from rewardlab.errors import ModelLoadError
from rewardlab.models.hub import cached_snapshot, is_hub_id

ADAPTER_CONFIG = "adapter_config.json"
BASE_RECORD = "rewardlab_base.json"
# Keys of config.json that say where or by what a model was saved, not what it is.
VOLATILE_CONFIG_KEYS = ("_name_or_path", "transformers_version", "name_or_path")


def is_adapter_dir(path: Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def find_adapter(path: str | Path) -> Path | None:
    """The adapter directory ``path`` holds: itself, or a train run's ``final/`` adapter."""
    path = Path(path)
    if is_adapter_dir(path):
        return path
    if is_adapter_dir(path / "final"):
        return path / "final"
    return None


def recorded_base(adapter: str | Path) -> str | None:
    """The base model the adapter's config names (``base_model_name_or_path``), or ``None``."""
    config = json.loads((Path(adapter) / ADAPTER_CONFIG).read_text())
    return config.get("base_model_name_or_path") or None


def locate_base(recorded: str, adapter: str | Path) -> Path | None:
    """The local directory a recorded base names: a path (absolute, relative to the adapter, or relative to
    the working directory, as older adapters recorded it), or a Hub id already in the local Hub cache."""
    path = Path(recorded).expanduser()
    candidates = [path] if path.is_absolute() else [Path(adapter) / path, path]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate.resolve()
    if is_hub_id(recorded):
        snapshot = cached_snapshot(recorded)
        return Path(snapshot) if snapshot else None
    return None


def _weight_files(directory: Path) -> list[Path]:
    return sorted([*directory.glob("*.safetensors"), *directory.glob("*.bin")])


_fingerprints: dict[tuple, str] = {}


def model_fingerprint(directory: str | Path) -> str | None:
    """sha256 of a model directory's config (less where and by what it was saved) and weight files;
    ``None`` for a directory without both. Remembered per file state, so a process hashes a base once."""
    directory = Path(directory)
    config_path = directory / "config.json"
    weights = _weight_files(directory)
    if not config_path.is_file() or not weights:
        return None
    key = tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in [config_path, *weights])
    if key not in _fingerprints:
        config = json.loads(config_path.read_text())
        for volatile in VOLATILE_CONFIG_KEYS:
            config.pop(volatile, None)
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode())
        for weight in weights:
            with weight.open("rb") as handle:
                while chunk := handle.read(1 << 22):
                    digest.update(chunk)
        _fingerprints[key] = digest.hexdigest()
    return _fingerprints[key]


def write_base_record(adapter: str | Path, base: str) -> None:
    """Record ``base`` (the directory the adapter was trained on) beside the adapter, with its fingerprint."""
    base_path = Path(base)
    record = {
        "base_model": str(base_path.resolve()) if base_path.is_dir() else base,
        "fingerprint": model_fingerprint(base_path) if base_path.is_dir() else None,
    }
    (Path(adapter) / BASE_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def recorded_fingerprint(adapter: str | Path) -> str | None:
    path = Path(adapter) / BASE_RECORD
    return json.loads(path.read_text()).get("fingerprint") if path.is_file() else None


def check_base(adapter: str | Path, served: str, served_label: str | None = None) -> str | None:
    """Whether ``adapter`` was trained on ``served`` (a model directory or a Hub id).

    Returns ``None`` when it was, a warning when that cannot be told (the adapter names no base, or its base
    is nowhere here), and raises a one-line :class:`ModelLoadError` naming both models when it was not.
    """
    label = f"'{served_label}' ({served})" if served_label and served_label != served else f"'{served}'"
    recorded = recorded_base(adapter)
    fingerprint = recorded_fingerprint(adapter)
    if recorded is None and fingerprint is None:
        return f"adapter {adapter} does not name its base model: serving it on {label} unchecked"
    served_dir = Path(served) if Path(served).is_dir() else None
    if served_dir is None and is_hub_id(served):  # served from the Hub: its cached copy, when there is one
        snapshot = cached_snapshot(served)
        served_dir = Path(snapshot) if snapshot else None
    served_fingerprint = model_fingerprint(served_dir) if served_dir is not None else None
    if fingerprint is None and recorded is not None:
        located = locate_base(recorded, adapter)
        fingerprint = model_fingerprint(located) if located is not None else None
    if fingerprint is not None and served_fingerprint is not None:
        matches = fingerprint == served_fingerprint
    elif recorded is not None and is_hub_id(recorded) and is_hub_id(served):
        matches = recorded == served
    else:
        return (
            f"adapter {adapter} was trained on {recorded or 'a base model'}, which is not here to compare "
            f"with {label}: serving it unchecked"
        )
    if not matches:
        raise ModelLoadError(
            f"adapter {adapter} was trained on {recorded or 'another base model'}, not on the served model "
            f"{label}: serve it with --model {recorded or '<its base>'}"
        )
    return None
