"""Adapter routing: a batch whose rows name their LoRA adapters, generated on one shared model.

The sampler knows nothing of adapters; this wrapper sets the model up for each batch. A batch of one
adapter makes it the active one, and the sampler's own forward (the fused one, adapter folded into the
weights) runs it; a batch of the base alone switches adapters off. Only a batch that really mixes adapters
pays for peft's per-row routing: transformers' forward with ``adapter_names``, one per row.
"""

from __future__ import annotations

from rewardlab.models.forward import TransformersForward
from rewardlab.sampling.base import Generation, Prompt, SamplingParams
from rewardlab.sampling.local import LocalSampler, StepCallback

BASE_ROW = "__base__"  # peft's adapter name for "no adapter" in a mixed-adapter batch


def _is_peft(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


class AdapterRouter:
    """Generates with ``sampler`` for rows that each name a peft adapter (``None``: the base alone)."""

    def __init__(self, sampler: LocalSampler):
        self.sampler = sampler

    def generate(
        self,
        model,
        prompts: list[Prompt],
        adapters: list[str | None],
        params: SamplingParams,
        on_step: StepCallback | None = None,
    ) -> list[list[Generation]]:
        """``sampler.generate`` with prompt ``i`` on adapter ``adapters[i]`` of ``model``, the peft model
        whose base the sampler holds (loading the first adapter wraps it)."""
        distinct = set(adapters)
        if not _is_peft(model):
            return self.sampler.generate(prompts, params, on_step)
        if distinct == {None}:
            with model.disable_adapter():
                return self.sampler.generate(prompts, params, on_step)
        if len(distinct) == 1:
            model.set_adapter(adapters[0], inference_mode=True)
            return self.sampler.generate(prompts, params, on_step)
        rows = len(prompts) * params.n
        if rows > self.sampler.max_batch_size:
            # One forward carries every row's adapter; a chunked batch would hand it a part of them.
            raise ValueError(
                f"a mixed-adapter batch of {rows} rows exceeds the batch size, {self.sampler.max_batch_size}"
            )
        names = [BASE_ROW if adapter is None else adapter for adapter in adapters for _ in range(params.n)]
        mixed = TransformersForward(model, per_row={"adapter_names": names})
        return self.sampler.generate(prompts, params, on_step, forward=mixed)
