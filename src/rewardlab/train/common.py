"""Pieces the SFT and GRPO loops share: seeding, optimizer, schedule, batching token sequences."""

from __future__ import annotations

import random

import numpy as np
import torch
from transformers import DynamicCache, get_scheduler

from rewardlab.models.lean import lean_decoder
from rewardlab.models.lean import suffix_logits as lean_suffix_logits

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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Right-pad ``prefix + suffix`` rows into one batch.

    Returns ``(input_ids, attention_mask, loss_mask, start)`` where ``loss_mask`` has shape (B, S)
    aligned with the *suffix* columns ``[start, start + S)`` of the logits that predict them: the
    prefixes are left-aligned to a common ``start`` by left padding, so every suffix starts at the same
    column and the trainer can slice logits once instead of gathering per row.
    """
    width_prefix = max(len(p) for p in prefixes)
    width_suffix = max(max((len(s) for s in suffixes), default=0), 1)
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


def suffix_logits(
    model: torch.nn.Module, input_ids: torch.Tensor, attention: torch.Tensor, start: int, lean: bool = True
) -> torch.Tensor:
    """Logits predicting tokens ``input_ids[:, start:]`` (shape (B, S, V)).

    Position ids count only real tokens, so a left-padded prompt sees the same positions it had when
    it was sampled. Rows that share their prefix (the completions of one prompt) share its forward pass:
    see :func:`shared_prefix_logits`. ``lean`` runs Llama and Qwen2 models on
    :mod:`rewardlab.models.lean` (the same logits and gradients with far fewer operations); other models,
    or ``lean=False``, run transformers' forward.
    """
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    prefixes, rows = distinct_prefixes(input_ids[:, :start], attention[:, :start])
    decoder = lean_decoder(model, training=True) if lean else None
    if decoder is not None:
        return lean_suffix_logits(decoder, input_ids, attention, start, prefixes, rows)
    if prefixes is not None:
        return shared_prefix_logits(model, input_ids, attention, positions, start, prefixes, rows)
    # Only the suffix's logits are needed: ask the model for exactly those (saves the head's matmul
    # over the prompt).
    keep = input_ids.shape[1] - start + 1
    out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep)
    return out.logits[:, :-1, :]


def distinct_prefixes(
    prefix_ids: torch.Tensor, prefix_attention: torch.Tensor
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(one row index per distinct prefix, each row's distinct-prefix number); (None, None) if all differ."""
    if prefix_ids.shape[1] == 0:
        return None, None
    distinct, rows = torch.unique(torch.cat([prefix_ids, prefix_attention], 1), dim=0, return_inverse=True)
    if distinct.shape[0] == prefix_ids.shape[0]:
        return None, None
    # One representative row per distinct prefix, in the order torch.unique numbered them.
    first = torch.full((distinct.shape[0],), prefix_ids.shape[0], dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, rows, torch.arange(rows.shape[0], device=rows.device), "amin")
    return first, rows


def shared_prefix_logits(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention: torch.Tensor,
    positions: torch.Tensor,
    start: int,
    prefixes: torch.Tensor,
    rows: torch.Tensor,
) -> torch.Tensor:
    """:func:`suffix_logits` for rows whose prefixes repeat: each distinct prefix is encoded once.

    The prefix pass keeps its keys and values in a cache, which is copied (``index_select``, so gradients
    flow back into the one prefix computation) to every row that continues it; the suffixes then run on
    top. The result equals one forward over the full rows up to rounding, but a group of G completions of
    a P-token prompt costs P prompt tokens of forward and backward instead of G * P, and the last suffix
    token, which predicts nothing, is never fed.
    """
    cache = DynamicCache()
    head = model(
        input_ids=input_ids[prefixes, :start],
        attention_mask=attention[prefixes, :start],
        position_ids=positions[prefixes, :start],
        past_key_values=cache,
        use_cache=True,
        logits_to_keep=1,
    )
    first = head.logits[rows]  # (B, 1, V): each row's prediction of its first suffix token
    if input_ids.shape[1] - start == 1:
        return first
    cache.reorder_cache(rows)
    rest = model(
        input_ids=input_ids[:, start:-1],
        attention_mask=attention[:, :-1],
        position_ids=positions[:, start:-1],
        past_key_values=cache,
        use_cache=True,
    )
    return torch.cat([first, rest.logits], 1)
