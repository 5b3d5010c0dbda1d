"""Hugging Face Hub names: told apart from local paths, and one line at once when the Hub is out of reach.

``from_pretrained`` on a Hub name with no network retries for about a minute before it gives up. Before
handing it a Hub name, a short probe (or ``HF_HUB_OFFLINE``) says whether the Hub can be reached at all; a
model already in the local Hub cache is then loaded from there, and anything else is one line at once.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import httpx
from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

PROBE_TIMEOUT_S = 3.0
TRUE_VALUES = {"1", "on", "yes", "true"}


def is_hub_id(name: str) -> bool:
    """Whether ``name`` can be a Hub repo id (``gpt2``, ``Qwen/Qwen2.5-0.5B-Instruct``: dots allowed)."""
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _offline_variable() -> str | None:
    for variable in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(variable, "").strip().lower() in TRUE_VALUES:
            return variable
    return None


def hub_cache_dir() -> str:
    return constants.HF_HUB_CACHE


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", constants.ENDPOINT).rstrip("/")


@functools.lru_cache(maxsize=8)
def _probe(url: str, timeout_s: float) -> str | None:
    try:
        # Any HTTP answer means the Hub is there; only a connection that fails or hangs means it is not.
        httpx.head(url, timeout=timeout_s)
    except httpx.HTTPError as error:
        return f"no answer from {url} within {timeout_s:g}s ({type(error).__name__})"
    return None


def unreachable_reason() -> str | None:
    """Why the Hub cannot be reached now (offline mode, or a probe that failed), or ``None`` if it can."""
    variable = _offline_variable()
    if variable is not None:
        return f"{variable} is set"
    return _probe(endpoint(), PROBE_TIMEOUT_S)


def cached_snapshot(repo_id: str) -> str | None:
    """The local snapshot directory of a Hub model already in the Hub cache, or ``None``."""
    found = try_to_load_from_cache(repo_id, "config.json")
    return str(Path(found).parent) if isinstance(found, str) else None
