"""Checkpoints a run can resume from exactly: weights, optimizer, scheduler, RNG and counters.

Weights are saved with ``save_pretrained`` (a PEFT adapter directory, or a full model), so a checkpoint
is also a model you can evaluate or serve. ``trainer_state.pt`` holds the rest.

A checkpoint is written whole under a temporary name and renamed into place (:mod:`rewardlab.atomic`), and
older ones are deleted only after that, so a crash or a full disk while writing leaves the last good
checkpoint as it was. A write that fails for want of space (or any other reason the file system gives) is
one line saying so and naming the checkpoint kept.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model

from rewardlab import atomic, faults
from rewardlab.errors import RewardlabError
from rewardlab.models.adapters import write_base_record
from rewardlab.train.common import rng_state, set_rng_state

KEEP = 2  # checkpoints kept per run; older ones are deleted to save disk


def path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def latest(run_dir: Path) -> Path | None:
    """The newest complete checkpoint (a temporary left by an interrupted write is never one)."""
    folder = Path(run_dir) / "checkpoints"
    done = (
        sorted(p for p in folder.glob("step-*") if (p / "trainer_state.pt").exists())
        if folder.exists()
        else []
    )
    return done[-1] if done else None


def _is_peft(model) -> bool:
    return hasattr(model, "peft_config")


def save_weights(target: Path, model, tokenizer) -> None:
    """``save_pretrained`` of the model and tokenizer; an adapter also records which base it was trained on
    (path and fingerprint), so it is never served on another one unnoticed."""
    model.save_pretrained(target)
    tokenizer.save_pretrained(target)
    if _is_peft(model):
        write_base_record(target, model.get_base_model().name_or_path)


def save(run_dir: Path, step: int, model, tokenizer, optimizer, scheduler, totals: dict) -> Path:
    target = path(run_dir, step)
    folder = target.parent
    atomic.remove_temporaries(folder)  # what a write interrupted by a crash left behind
    state = {
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "totals": totals,
    }
    try:
        with atomic.replacing_directory(target) as partial:
            save_weights(partial, model, tokenizer)
            faults.pause_point("checkpoint")
            # trainer_state.pt is written last: checkpoints from before atomic writes are complete with it.
            # Through a Python file, so a failed write's OSError is kept (as the context of torch's error).
            with open(partial / "trainer_state.pt", "wb") as handle:
                torch.save(state, handle)
    except Exception as error:
        reason = io_failure(error)
        if reason is None:
            raise
        kept = latest(run_dir)
        keeping = f"the last good checkpoint, {kept.name}, is kept" if kept else "there is no earlier one"
        raise RewardlabError(
            f"checkpoint {target.name} of run {Path(run_dir).name} was not written: {reason} (in {folder}); "
            f"{keeping}"
        ) from None
    for old in sorted(folder.glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")


def io_failure(error: BaseException) -> str | None:
    """What the file system said when ``error`` is a failed write (a full disk, say), else ``None``.

    Writers report it in their own ways: ``OSError`` from Python, ``... (os error 28)`` from safetensors, a
    ``RuntimeError`` from ``torch.save`` raised while handling the file's ``OSError``.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return os.strerror(current.errno).lower()
        found = _OS_ERROR_CODE.search(str(current))
        if found:
            return os.strerror(int(found.group(1))).lower()
        current = current.__cause__ or current.__context__
    return None


def load(checkpoint: Path, model, optimizer, scheduler) -> tuple[int, dict]:
    """Restore everything saved by :func:`save`; returns (step, totals)."""
    if _is_peft(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
    else:
        load_model(model, checkpoint / "model.safetensors", strict=False)
    state = torch.load(checkpoint / "trainer_state.pt", weights_only=False)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["step"], state["totals"]


def export_final(run_dir: Path, model, tokenizer) -> Path:
    """The trained weights as a plain PEFT adapter (or full model) directory: ``<run>/final``."""
    target = Path(run_dir) / "final"
    with atomic.replacing_directory(target) as partial:
        save_weights(partial, model, tokenizer)
    return target
