"""The policies the loss compares against: the sampling policy (no dropout) and the KL reference.

- Dropout: the sampler runs the model without dropout, so the log-probs stored for the importance ratio
  are dropout-free; a training pass that drew dropout masks would compare a different function, and the
  ratio would be off 1 on the very first pass, where it must be exactly 1. Training turns
  dropout off, as TRL's ``disable_dropout`` does.
- Reference: ``initial`` is the policy the run started from, frozen. When that is a fresh adapter it is
  the base with adapters off; when the run starts from a trained adapter (a primed SFT adapter, an
  earlier run), its starting weights are kept aside and swapped in to compute the reference, so the KL at
  step 1 is 0. ``base`` is always the base model with adapters off.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, nullcontext

import torch


def disable_dropout(model: torch.nn.Module) -> float:
    """Set every dropout probability in ``model`` to 0; returns the largest one turned off."""
    largest = 0.0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            largest = max(largest, float(module.p))
            module.p = 0.0
    return largest


def largest_dropout(model: torch.nn.Module) -> float:
    return max((float(m.p) for m in model.modules() if isinstance(m, torch.nn.Dropout)), default=0.0)


def trainable_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the weights being trained (the adapter's, with LoRA): the starting policy."""
    return {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}


@contextmanager
def swapped_in(model: torch.nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """``model`` with ``weights`` in place of its own for the duration; its own are restored after."""
    params = dict(model.named_parameters())
    own = {name: params[name].detach().clone() for name in weights}
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value)
    try:
        yield
    finally:
        with torch.no_grad():
            for name, value in own.items():
                params[name].copy_(value)


def no_adapter(model):
    """A context with the adapters off when the model has them (the base model)."""
    return model.disable_adapter() if hasattr(model, "disable_adapter") else nullcontext()


def reference_policy(model, kind: str, initial: dict[str, torch.Tensor] | None):
    """A context in which ``model`` computes as the KL reference ``kind`` ('initial' or 'base')."""
    if kind == "initial" and initial is not None:
        return swapped_in(model, initial)
    return no_adapter(model)
