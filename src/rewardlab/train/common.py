"""Pieces the SFT and GRPO loops share: seeding, optimizer, schedule, batching token sequences.

The logits the loss reads come from the model's forward (``Forward.suffix_logits``, see
:mod:`rewardlab.models.forward`), which both loops pick once when they load the model.
"""

from __future__ import annotations

import random

import numpy as np
import torch
from transformers import get_scheduler

SCHEDULES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


def set_seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """Every random generator the loops draw from, for checkpoints."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_optimizer(
    model: torch.nn.Module,
    learning_rate: float,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise RuntimeError("the model has no trainable parameters")
    # The fused kernel updates every tensor in one call; the default on CPU loops over parameters in
    # Python, about ten small ops each (LoRA has two tensors per adapted layer), several times slower.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in trainable)
    return torch.optim.AdamW(
        trainable, lr=learning_rate, weight_decay=weight_decay, betas=betas, fused=fused or None
    )


def make_scheduler(optimizer: torch.optim.Optimizer, kind: str, warmup_steps: int, total_steps: int):
    return get_scheduler(
        SCHEDULES[kind], optimizer, num_warmup_steps=warmup_steps, num_training_steps=total_steps
    )


def pad_sequences(
    prefixes: list[list[int]],
    suffixes: list[list[int]],
    suffix_masks: list[list[int]],
    pad_id: int,
    device: torch.device,
    widths: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Right-pad ``prefix + suffix`` rows into one batch.

    Returns ``(input_ids, attention_mask, loss_mask, start)`` where ``loss_mask`` has shape (B, S)
    aligned with the *suffix* columns ``[start, start + S)`` of the logits that predict them: the
    prefixes are left-aligned to a common ``start`` by left padding, so every suffix starts at the same
    column and the trainer can slice logits once instead of gathering per row.

    ``widths`` (prefix, suffix) pads to at least those widths: data-parallel processes pad their shares as
    the whole batch would be padded, so each computes exactly what one process computes on those rows.
    """
    width_prefix = max(len(p) for p in prefixes)
    width_suffix = max(max((len(s) for s in suffixes), default=0), 1)
    if widths is not None:
        width_prefix, width_suffix = max(width_prefix, widths[0]), max(width_suffix, widths[1])
    # Rows are assembled as Python lists and converted once: a tensor per row costs more than the rows.
    ids_rows, attention_rows, mask_rows = [], [], []
    for prefix, suffix, mask in zip(prefixes, suffixes, suffix_masks, strict=True):
        left, right = width_prefix - len(prefix), width_suffix - len(suffix)
        ids_rows.append([pad_id] * left + list(prefix) + list(suffix) + [pad_id] * right)
        attention_rows.append([0] * left + [1] * (len(prefix) + len(suffix)) + [0] * right)
        mask_rows.append(list(mask) + [0] * right)
    input_ids = torch.tensor(ids_rows, dtype=torch.long)
    attention = torch.tensor(attention_rows, dtype=torch.long)
    loss_mask = torch.tensor(mask_rows, dtype=torch.float32)
    return input_ids.to(device), attention.to(device), loss_mask.to(device), width_prefix
