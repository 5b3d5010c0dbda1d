"""One forward for sampling and training, picked once per model.

Everything rewardlab asks of a model's weights is one of three things:

* **prefill** the prompts of a generation: each distinct prompt runs once and its keys and values are shared
  by every row that continues it (the ``n`` samples of a group); returns each row's first logits and a
  decoding state;
* **decode** one step: the logits after feeding one more token to every row of that state;
* **suffix logits** for training: with gradients, the logits that predict each row's completion, every
  distinct prompt encoded once.

A :class:`Forward` does all three, and :func:`forward_for` picks its implementation when the model is
loaded: :class:`~rewardlab.models.lean.LeanForward` (fused projections, a preallocated cache) for the
Llama-family architectures it reproduces exactly, :class:`TransformersForward` (the model's own forward)
for any other. Whoever holds the model holds its forward: a sampler and the trainer share one.

Both take the same left-padded rows, count positions with :func:`position_ids` and find shared prompts
with :func:`distinct_rows`, so a prompt sees the same positions when it is sampled and when it is trained.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from transformers import DynamicCache


class Forward(Protocol):
    """What sampling and training need of a model; see the module's docstring."""

    def sampling(self) -> AbstractContextManager[None]:
        """The weights as they are now, held for one generation (its prefills and decoding steps)."""
        ...

    def prefill(self, input_ids: torch.Tensor, attention: torch.Tensor, max_new_tokens: int) -> tuple:
        """(first logits (B, V), decoding state) for left-padded prompts, one row per sample."""
        ...

    def decode(self, state: Any, token: torch.Tensor) -> torch.Tensor:
        """Logits (B, V) after feeding ``token`` (B,) to every row of ``state``."""
        ...

    def suffix_logits(self, input_ids: torch.Tensor, attention: torch.Tensor, start: int) -> torch.Tensor:
        """Logits (B, S, V) predicting ``input_ids[:, start:]``, with gradients."""
        ...


def position_ids(attention: torch.Tensor) -> torch.Tensor:
    """Positions that count real tokens only: a left-padded row sees the positions it would have alone."""
    return (attention.cumsum(-1) - 1).clamp(min=0)


def distinct_rows(*columns: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Rows that repeat, judged on ``columns`` side by side (token ids and mask, say).

    Returns (one row index per distinct row, each row's distinct number), or (None, None) when every row
    differs. Distinct rows are numbered in sorted order, each represented by its first occurrence.
    """
    keys = torch.cat(columns, 1)
    if keys.shape[1] == 0:
        return None, None
    distinct, rows = torch.unique(keys, dim=0, return_inverse=True)
    if distinct.shape[0] == keys.shape[0]:
        return None, None
    first = torch.full((distinct.shape[0],), keys.shape[0], dtype=torch.long, device=rows.device)
    first = first.scatter_reduce(0, rows, torch.arange(rows.shape[0], device=rows.device), "amin")
    return first, rows


def forward_for(model: torch.nn.Module, lean: bool = True) -> Forward:
    """The forward ``model`` runs on: the fused one where it reproduces the architecture, else transformers'.

    Picked once, from the architecture. The fused forward rebuilds its weights on every call (adapters
    train, or are switched off for the KL reference) and hands a call to transformers' forward when the
    adapters of the moment are something it does not fuse (several active at once, DoRA, dropout while
    training). ``lean=False`` always picks transformers' forward.
    """
    from rewardlab.models.lean import LeanForward, supports  # lean.py builds on this module's helpers

    fallback = TransformersForward(model)
    return LeanForward(model, fallback) if lean and supports(model) else fallback


# -- transformers' forward: any architecture -----------------------------------------------------------


@dataclass
class CachedDecoding:
    """A generation on transformers' forward: its cache, and the mask every step reads a prefix of."""

    cache: DynamicCache
    attention: torch.Tensor  # (B, prompt width + max_new_tokens): one tensor, not a concatenation per step
    next_position: torch.Tensor  # (B, 1)
    width: int  # prompt columns
    step_kwargs: dict = field(default_factory=dict)
    step: int = 0


class TransformersForward:
    """A :class:`Forward` through the model's own forward: any architecture that transformers runs.

    ``per_row`` holds keyword arguments that the model takes one value per row, for one batch: peft's
    ``adapter_names`` (each row's adapter). Rows that differ in them are prefilled apart and the adapters
    are left to peft; without them, sampling folds the one active LoRA adapter into its layers' weights.
    """

    def __init__(self, model: torch.nn.Module, per_row: dict[str, list] | None = None):
        self.model = model
        self.per_row = per_row or {}

    @contextmanager
    def sampling(self) -> Iterator[None]:
        was_training = self.model.training
        self.model.eval()
        try:
            with folded_lora(self.model) if not self.per_row else nullcontext():
                yield
        finally:
            self.model.train(was_training)

    def prefill(
        self, input_ids: torch.Tensor, attention: torch.Tensor, max_new_tokens: int
    ) -> tuple[torch.Tensor, CachedDecoding]:
        batch, width = input_ids.shape
        if any(len(values) != batch for values in self.per_row.values()):
            raise ValueError(f"per-row arguments must cover the batch of {batch} rows, one value per row")
        first, rows = distinct_rows(input_ids, attention, _row_codes(self.per_row, batch, input_ids.device))
        positions = position_ids(attention)
        prefill_kwargs = self.per_row
        if first is not None:
            input_ids, attention, positions = input_ids[first], attention[first], positions[first]
            kept = first.tolist()
            prefill_kwargs = {name: [values[row] for row in kept] for name, values in self.per_row.items()}
        cache = DynamicCache()
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            past_key_values=cache,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits are sampled from
            **prefill_kwargs,
        )
        logits = out.logits[:, -1, :]
        if rows is not None:
            cache.reorder_cache(rows)
            logits, attention, positions = logits[rows], attention[rows], positions[rows]
        attention = torch.cat([attention, attention.new_ones((batch, max_new_tokens))], 1)
        return logits, CachedDecoding(cache, attention, positions[:, -1:] + 1, width, dict(self.per_row))

    def decode(self, state: CachedDecoding, token: torch.Tensor) -> torch.Tensor:
        out = self.model(
            input_ids=token[:, None],
            attention_mask=state.attention[:, : state.width + state.step + 1],
            position_ids=state.next_position,
            past_key_values=state.cache,
            use_cache=True,
            **state.step_kwargs,
        )
        state.next_position = state.next_position + 1
        state.step += 1
        return out.logits[:, -1, :]

    def suffix_logits(self, input_ids: torch.Tensor, attention: torch.Tensor, start: int) -> torch.Tensor:
        positions = position_ids(attention)
        prefixes, rows = distinct_rows(input_ids[:, :start], attention[:, :start])
        if prefixes is not None:
            return self._shared_prefix_logits(input_ids, attention, positions, start, prefixes, rows)
        # Only the suffix's logits are needed: ask the model for exactly those (saves the head's matmul
        # over the prompt).
        keep = input_ids.shape[1] - start + 1
        out = self.model(
            input_ids=input_ids, attention_mask=attention, position_ids=positions, logits_to_keep=keep
        )
        return out.logits[:, :-1, :]

    def _shared_prefix_logits(
        self,
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        positions: torch.Tensor,
        start: int,
        prefixes: torch.Tensor,
        rows: torch.Tensor,
    ) -> torch.Tensor:
        """Each distinct prefix encoded once, its cache copied to every row that continues it.

        The copy is an ``index_select``, so gradients flow back into the one prefix computation. The
        result equals one forward over the full rows up to rounding, but a group of G completions of a
        P-token prompt costs P prompt tokens of forward and backward instead of G * P, and the last suffix
        token, which predicts nothing, is never fed.
        """
        cache = DynamicCache()
        head = self.model(
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
        rest = self.model(
            input_ids=input_ids[:, start:-1],
            attention_mask=attention[:, :-1],
            position_ids=positions[:, start:-1],
            past_key_values=cache,
            use_cache=True,
        )
        return torch.cat([first, rest.logits], 1)


def _row_codes(per_row: dict[str, list], batch: int, device: torch.device) -> torch.Tensor:
    """(B, 1): equal numbers for rows whose per-row arguments are all equal."""
    numbers: dict[tuple, int] = {}
    values = zip(*per_row.values(), strict=True) if per_row else [()] * batch
    codes = [numbers.setdefault(key, len(numbers)) for key in values]
    return torch.tensor(codes, dtype=torch.long, device=device)[:, None]


def is_lora_variant(layer: torch.nn.Module, adapter: str) -> bool:
    """Whether ``adapter`` on a peft LoRA ``layer`` is more than ``scale * B @ A`` (DoRA, a LoRA bias), which
    the fused and folded forwards do not reproduce."""
    return adapter in layer.lora_variant or getattr(layer, "lora_bias", {}).get(adapter, False)


def _foldable_lora_layers(model: torch.nn.Module) -> list[tuple[torch.nn.Module, str]]:
    """(layer, adapter) for every LoRA linear layer whose one active adapter can be folded into its weight.

    Only plain LoRA on a float32 ``nn.Linear`` qualifies: in half precision the small update would be
    rounded away in ``W + dW`` (sampling would then not follow the policy being trained), and other
    variants (DoRA, a LoRA bias, layers already merged or switched off) keep their own forward.
    """
    if not hasattr(model, "peft_config"):
        return []
    from peft.tuners.lora import LoraLayer

    layers = []
    for module in model.modules():
        if not isinstance(module, LoraLayer) or module.disable_adapters or module.merged:
            continue
        if len(module.active_adapters) != 1:
            continue
        adapter = module.active_adapters[0]
        base = module.get_base_layer()
        if (
            adapter in module.lora_A
            and not is_lora_variant(module, adapter)
            and not module.fan_in_fan_out
            and type(base) is torch.nn.Linear
            and base.weight.dtype == torch.float32
        ):
            layers.append((module, adapter))
    return layers


@contextmanager
def folded_lora(model: torch.nn.Module) -> Iterator[None]:
    """Run each foldable LoRA layer as one matmul with ``W + scale * B @ A`` while the context is open.

    Unfolded, an adapted layer costs three matmuls and peft's Python dispatch per call, which on a small
    model is about half of the time spent generating. Folding happens into a new tensor, never into the
    base weight (merging and unmerging in place would leave rounding drift in the frozen base, which is also
    the KL reference); on exit every layer is its unchanged self again.
    """
    layers = _foldable_lora_layers(model)
    try:
        for layer, adapter in layers:
            base = layer.get_base_layer()
            with torch.no_grad():  # W + scale * B @ A in one kernel, into a new tensor
                weight = torch.addmm(
                    base.weight,
                    layer.lora_B[adapter].weight,
                    layer.lora_A[adapter].weight,
                    alpha=layer.scaling[adapter],
                )
            # An instance attribute shadows the class's forward for this layer only; popped on exit.
            layer.forward = partial(F.linear, weight=weight, bias=base.bias)
        yield
    finally:
        for layer, _ in layers:
            layer.__dict__.pop("forward", None)
