"""Batched LoRA: every row of one forward on its own adapter, the base model included, without a forward per
adapter.

A server's batch mixes requests for the base model and for several adapters. The fused decoder
(:mod:`rewardlab.models.lean`) keeps the base weights as they are and adds, for each projection, one low-rank
path that holds every loaded adapter at once:

* the A matrices of all adapters are stacked, so ``x @ A_all.T`` is one matmul that computes every adapter's
  low-rank input for every row;
* a 0/1 mask keeps, in each row, only the rank columns of that row's adapter (a base row keeps none);
* ``B_all`` (pre-scaled, each adapter's block in its own columns) maps the masked columns back in one matmul.

With ``k`` adapters of rank ``r`` that is ``2 * k * r * (in + out)`` extra multiply-adds per row, small
beside the base weight's ``in * out``, and a fixed number of kernels whatever the mix, which is what matters
on small models, where time goes to kernel launches. A forward whose rows all name one adapter slices that
adapter's columns and skips the mask; an all-base forward skips the low-rank path.

The masks depend only on which adapter each row runs, so :class:`RowRouting` builds them once per batch
composition (once per layout of rank columns, shared by every layer), not once per layer and step.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from rewardlab.models.forward import is_lora_variant
from rewardlab.models.lean import (
    LeanDecoder,
    Projection,
    _concat,
    _fused_decoder,
    _transformers_model,
    packed,
)
from rewardlab.models.lean import _Unsupported as Unsupported

__all__ = ["RowRouting", "Unsupported", "routed_decoder"]


class RowRouting:
    """Which adapter (an index into the decoder's adapter list; 0 is the base) each row of the next forward
    runs. Shared by every projection of one decoder."""

    def __init__(self) -> None:
        self.uniform: int | None = 0  # every row on this adapter (None: rows differ)
        self._rows: torch.Tensor | None = None
        self._masks: dict[tuple, torch.Tensor] = {}

    def route(self, adapters: list[int], device: torch.device) -> None:
        """Set the rows' adapters for the forwards that follow (until the next ``route``)."""
        distinct = set(adapters)
        self._masks = {}
        if len(distinct) <= 1:
            self.uniform, self._rows = (adapters[0] if adapters else 0), None
        else:
            self.uniform, self._rows = None, torch.tensor(adapters, device=device)

    def mask(self, lora: RoutedLora) -> torch.Tensor:
        """(B, 1, ranks): 1 in the rank columns of each row's adapter."""
        mask = self._masks.get(lora.layout)
        if mask is None:
            assert self._rows is not None, "mask() is for batches whose rows differ"
            mask = (self._rows[:, None] == lora.column_adapter[None, :]).to(lora.a.dtype)[:, None, :]
            self._masks[lora.layout] = mask
        return mask


@dataclass
class RoutedLora:
    """The low-rank path of one fused projection for every adapter; see the module's docstring."""

    a: torch.Tensor  # (ranks, in): each adapter's A matrices (of each fused module), adapter after adapter
    b: torch.Tensor  # (out, ranks): each block its module's rows and its adapter's columns, pre-scaled
    column_adapter: torch.Tensor  # (ranks,): the adapter index of each rank column
    layout: tuple  # (adapter, rank) of each block: projections with one layout share masks
    routing: RowRouting
    # adapter index -> its own (A, B), contiguous: a batch on one adapter skips the mask
    alone: dict[int, tuple[torch.Tensor, torch.Tensor]] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor | None:
        """The low-rank term to add to the base projection of ``x`` (B, T, in), or None (no adapter here)."""
        uniform = self.routing.uniform
        if uniform is not None:
            pair = self.alone.get(uniform)
            if pair is None:
                return None  # the base, or an adapter that does not adapt this projection
            a, b = pair
            return F.linear(F.linear(x.to(a.dtype), a), b)
        low = F.linear(x.to(self.a.dtype), self.a) * self.routing.mask(self)
        return F.linear(low, self.b)


def _base_and_adapters(module: torch.nn.Module, adapters: list[str | None]):
    """(base Linear, [(adapter index, A, B, scale)]) of a plain or LoRA-adapted linear layer."""
    if type(module) is torch.nn.Linear:
        return module, []
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer):
        raise Unsupported(f"{type(module).__name__} layer")
    base = module.get_base_layer()
    if type(base) is not torch.nn.Linear or module.fan_in_fan_out or module.merged:
        raise Unsupported("adapted layer that is not a plain, unmerged Linear")
    found = []
    for index, name in enumerate(adapters):
        if name is None or name not in module.lora_A:
            continue
        if is_lora_variant(module, name):
            raise Unsupported(f"LoRA variant (DoRA or a LoRA bias) in adapter {name}")
        found.append((index, module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name]))
    return base, found


def _fuse_routed(
    modules: list[torch.nn.Module], adapters: list[str | None], routing: RowRouting, reuse: dict
) -> Projection:
    parts = [_base_and_adapters(m, adapters) for m in modules]
    weight = _concat([base.weight for base, _ in parts], reuse)
    bias = None
    if any(base.bias is not None for base, _ in parts):
        bias = torch.cat(
            [b.bias if b.bias is not None else b.weight.new_zeros(b.weight.shape[0]) for b, _ in parts]
        )
    offsets = [0]
    for base, _ in parts:
        offsets.append(offsets[-1] + base.weight.shape[0])
    blocks = []  # (adapter, module position, A, B * scale), adapter after adapter
    for index in range(len(adapters)):
        for position, (_, found) in enumerate(parts):
            blocks += [(index, position, a, b * scale) for i, a, b, scale in found if i == index]
    packed_weight = packed(weight, reuse)
    if not blocks:
        return Projection(weight, bias, packed=packed_weight)
    # Served in the model's dtype, as vLLM serves adapters: peft keeps them in float32 under a half-precision
    # model, and converting every projection's input and output to and fro cost more than the low-rank path.
    a_all = torch.cat([a for _, _, a, _ in blocks]).to(weight.dtype)
    b_all = a_all.new_zeros(offsets[-1], a_all.shape[0])
    column_adapter, layout, alone_columns = [], [], {}
    column = 0
    for index, position, a, b in blocks:
        rank = a.shape[0]
        b_all[offsets[position] : offsets[position + 1], column : column + rank] = b
        column_adapter += [index] * rank
        layout.append((index, rank))
        first, _ = alone_columns.get(index, (column, column))
        alone_columns[index] = (first, column + rank)
        column += rank
    alone = {
        index: (a_all[first:end].contiguous(), b_all[:, first:end].contiguous())
        for index, (first, end) in alone_columns.items()
    }
    routed = RoutedLora(
        a_all, b_all, torch.tensor(column_adapter, device=a_all.device), tuple(layout), routing, alone
    )
    return Projection(weight, bias, routed=routed, packed=packed_weight)


@torch.no_grad()
def routed_decoder(model: torch.nn.Module, adapters: list[str | None]) -> tuple[LeanDecoder, RowRouting]:
    """The fused decoder of ``model`` (a Llama-family model, under peft or not) whose rows each run one of
    ``adapters`` (peft adapter names; ``None`` is the base), chosen with the returned routing.

    Raises :class:`Unsupported` for what it does not reproduce (another architecture, DoRA, a LoRA bias).
    """
    routing = RowRouting()
    hf = _transformers_model(model)
    from rewardlab.models.lean import _check_architecture

    _check_architecture(hf)
    reuse: dict = {}
    decoder = _fused_decoder(
        hf, False, reuse, fuse=lambda modules: _fuse_routed(modules, adapters, routing, reuse)
    )
    return decoder, routing
