"""Provenance for a run: what code, libraries, machine and command produced it.

A reward curve is only comparable to another when you know both came from the same commit and the
same library versions; the manifest is stored with every run so ``rewardlab runs show`` can tell.
It must stay cheap (well under half a second): it never imports torch itself, it only asks a torch
that the caller has already imported, and it gives git two seconds at most.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from typing import Any

PACKAGES = (
    "rewardlab",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "datasets",
    "numpy",
    "tokenizers",
)
NOT_INSTALLED = "not installed"
_GIT_TIMEOUT_S = 2.0


def collect_manifest(seed: int | None = None, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything needed to reproduce or explain a run; ``extra`` keys are added last (and win)."""
    manifest: dict[str, Any] = {
        "timestamp": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "command": list(sys.argv),
        "cwd": os.getcwd(),
        "seed": seed,
        "packages": package_versions(),
        "git": git_info(),
        "hardware": hardware_info(),
    }
    if extra:
        manifest.update(extra)
    return manifest


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Installed versions from package metadata: no imports, so torch costs nothing here."""
    versions: dict[str, str] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = NOT_INSTALLED
    return versions


def _git(*args: str) -> str | None:
    """Run one git command in the cwd; ``None`` on any failure (no git, not a repo, timeout)."""
    try:
        result = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def git_info() -> dict[str, Any]:
    """Commit and dirty flag of the cwd's repository; both ``None`` outside a repository.

    Untracked files do not count as dirty: scratch outputs (runs/, plots) would otherwise mark every
    run dirty and the flag would mean nothing.
    """
    if _git("rev-parse", "--is-inside-work-tree") != "true":
        return {"commit": None, "dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "commit": _git("rev-parse", "HEAD"),  # None in a repository without commits
        "dirty": None if status is None else bool(status),
    }


def hardware_info() -> dict[str, Any]:
    """CPU count, RAM and, when torch is already imported, its thread count and CUDA devices."""
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "ram_gb": _total_ram_gb(),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "torch_threads": None,
        "cuda_devices": None,
    }
    torch = sys.modules.get("torch")
    if torch is not None:  # importing torch just for this would cost seconds
        info.update(_torch_info(torch))
    return info


def _torch_info(torch: Any) -> dict[str, Any]:
    """Ask an imported torch about threads and GPUs; never raise (a broken driver is not our bug)."""
    try:
        info: dict[str, Any] = {"torch_threads": torch.get_num_threads(), "cuda_devices": []}
        if torch.cuda.is_available():
            info["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda_version"] = torch.version.cuda
        return info
    except Exception:  # any driver/runtime failure: report what we could not learn as unknown
        return {"torch_threads": None, "cuda_devices": None}


def _total_ram_gb() -> float | None:
    """Physical memory via sysconf (Linux, macOS); ``None`` where the platform does not say."""
    try:
        pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    if pages <= 0 or page_size <= 0:
        return None
    return round(pages * page_size / 1024**3, 1)
