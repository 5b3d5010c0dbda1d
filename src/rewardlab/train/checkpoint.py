"""Checkpoints a run can resume from exactly: weights, optimizer, scheduler, RNG and counters.

Weights are saved with ``save_pretrained`` (a PEFT adapter directory, or a full model), so a checkpoint
is also a model you can evaluate or serve. ``trainer_state.pt`` holds the rest.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, load_model

from rewardlab.models.adapters import write_base_record
from rewardlab.train.common import rng_state, set_rng_state

KEEP = 2  # checkpoints kept per run; older ones are deleted to save disk


def path(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:06d}"


def latest(run_dir: Path) -> Path | None:
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
    target.mkdir(parents=True, exist_ok=True)
    save_weights(target, model, tokenizer)
    # trainer_state.pt is written last: its presence marks a complete checkpoint.
    torch.save(
        {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "totals": totals,
        },
        target / "trainer_state.pt",
    )
    for old in sorted((Path(run_dir) / "checkpoints").glob("step-*"))[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return target


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
    save_weights(target, model, tokenizer)
    return target
