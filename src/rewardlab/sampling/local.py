"""Batched sampling from a local Hugging Face model with a KV cache.

All completions of a batch advance one token per forward pass: prompts are left-padded, the prompt is
encoded once (prefill), then each step feeds only the newest token. Rows that share a prompt (the ``n``
samples of a group) share its prefill: each distinct prompt is encoded once and its cache copied to
every row that asked for it. Finished sequences keep padding along until the whole batch is done or
``max_new_tokens`` is reached. The generated ids are returned as they were sampled, so the trainer scores
exactly what the model produced.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from functools import partial

import torch
import torch.nn.functional as F
from transformers import DynamicCache

from rewardlab.models.chat import ChatRenderer
from rewardlab.models.lean import LeanDecoder, LeanSteps, lean_decoder
from rewardlab.sampling.base import Generation, Prompt, SamplingParams

# Called after every decoding step with (first flat row of the chunk, the new token of each row in it).
StepCallback = Callable[[int, list[int]], None]


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, generator: torch.Generator | None
) -> torch.Tensor:
    """One token per row of ``logits`` (B, V): greedy at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Keep the smallest prefix whose mass reaches top_p (the first token always stays).
        drop = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        choice = torch.multinomial(sorted_probs, 1, generator=generator)
        return order.gather(-1, choice).squeeze(-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


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
            and adapter not in module.lora_variant
            and not getattr(module, "lora_bias", {}).get(adapter, False)
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
            # W + scale * B @ A in one kernel, into a new tensor.
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


def _distinct_prompts(prompts: list[list[int]], adapters: list[str | None]) -> tuple[list[int], list[int]]:
    """Indices of the first row of every distinct (prompt, adapter), and each row's distinct index."""
    first_rows: list[int] = []
    seen: dict[tuple, int] = {}
    distinct_of_row = []
    for row, key in enumerate(zip(map(tuple, prompts), adapters, strict=True)):
        if key not in seen:
            seen[key] = len(first_rows)
            first_rows.append(row)
        distinct_of_row.append(seen[key])
    return first_rows, distinct_of_row


class TransformersSteps:
    """One batched generation through the model's own forward: any architecture, mixed-adapter batches.

    The same contract as :class:`~rewardlab.models.lean.LeanSteps`: each distinct prompt is encoded
    once and its cache copied to the ``rows`` that continue it; ``adapter_names`` is (one name per distinct
    prompt, one per row) for peft's mixed-adapter batches, or ``None``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        input_ids: torch.Tensor,
        attention: torch.Tensor,
        rows: torch.Tensor | None,
        max_new_tokens: int,
        adapter_names: tuple[list, list] | None = None,
    ):
        self.model = model
        self.width = input_ids.shape[1]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        self.cache = DynamicCache()
        out = model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            past_key_values=self.cache,
            use_cache=True,
            logits_to_keep=1,  # only the last position's logits are sampled from
            **({"adapter_names": adapter_names[0]} if adapter_names else {}),
        )
        logits = out.logits[:, -1, :]
        if rows is not None:
            self.cache.reorder_cache(rows)
            logits, attention, positions = logits[rows], attention[rows], positions[rows]
        self.first_logits = logits
        self.extra = {"adapter_names": adapter_names[1]} if adapter_names else {}
        # The mask of every step is a prefix of one tensor, instead of a new concatenation per token.
        self.attention = torch.cat([attention, attention.new_ones((attention.shape[0], max_new_tokens))], 1)
        self.next_position = positions[:, -1:] + 1

    def next(self, token: torch.Tensor, step: int) -> torch.Tensor:
        """Logits after feeding ``token`` (B,), the ``step``-th generated token (from 0)."""
        out = self.model(
            input_ids=token[:, None],
            attention_mask=self.attention[:, : self.width + step + 1],
            position_ids=self.next_position,
            past_key_values=self.cache,
            use_cache=True,
            **self.extra,
        )
        self.next_position = self.next_position + 1
        return out.logits[:, -1, :]


class LocalSampler:
    """The :class:`~rewardlab.sampling.base.Sampler` for an in-process model.

    ``max_batch_size`` bounds how many sequences share one forward pass (memory); the rest wait for the
    next chunk. ``lean`` decodes Llama and Qwen2 models with :mod:`rewardlab.models.lean` (same tokens,
    a fraction of the time); ``False``, or a model it does not support, uses transformers' forward.
    """

    def __init__(
        self,
        model,
        tokenizer,
        max_batch_size: int = 256,
        renderer: ChatRenderer | None = None,
        lean: bool = True,
    ):
        self.model = model
        self.lean = lean
        self.tokenizer = tokenizer
        self.renderer = renderer or ChatRenderer(tokenizer)
        self.max_batch_size = max_batch_size
        self.stop_ids = sorted(self.renderer.stop_token_ids)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.stop_ids[0]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def generate(
        self, prompts: list[Prompt], params: SamplingParams, on_step: StepCallback | None = None
    ) -> list[list[Generation]]:
        """``on_step`` sees each step's tokens as they are sampled (a server streams them); flat row
        ``i * n + j`` is sample ``j`` of prompt ``i``. Finished rows keep receiving the pad id."""
        prompt_ids = [
            p.token_ids if p.token_ids is not None else self.renderer.prompt_ids(p.messages) for p in prompts
        ]
        flat = [ids for ids in prompt_ids for _ in range(params.n)]
        adapters = [p.adapter for p in prompts for _ in range(params.n)]
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        results: list[Generation] = []
        # Per-row adapter routing needs peft's own forward; otherwise the lean decoder, built once for the
        # whole call, when it supports the model. It computes in inference mode whatever the model's mode,
        # which spares switching every submodule to eval and back (milliseconds a call on a peft model).
        mixed = any(a is not None for a in adapters)
        decoder = lean_decoder(self.model) if self.lean and not mixed else None
        was_training = self.model.training
        if decoder is None:
            self.model.eval()
        try:
            for start in range(0, len(flat), self.max_batch_size):
                end = start + self.max_batch_size
                step_callback = None if on_step is None else partial(on_step, start)
                results.extend(
                    self._generate_batch(
                        flat[start:end], params, generator, adapters[start:end], step_callback, decoder
                    )
                )
        finally:
            if decoder is None:
                self.model.train(was_training)
        return [results[i * params.n : (i + 1) * params.n] for i in range(len(prompts))]

    def _adapter_kwargs(self, adapters: list[str | None] | None) -> dict:
        """peft's mixed-adapter batches: one adapter name per row ("__base__" for none)."""
        if not adapters or all(a is None for a in adapters):
            return {}
        active = getattr(self.model, "active_adapter", None)
        return {"adapter_names": [a if a is not None else active for a in adapters]}

    def _left_padded(self, prompts: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, ids in enumerate(prompts):
            input_ids[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            attention[row, width - len(ids) :] = 1
        return input_ids.to(self.device), attention.to(self.device)

    @torch.inference_mode()
    def _generate_batch(
        self,
        prompts: list[list[int]],
        params: SamplingParams,
        generator: torch.Generator | None,
        adapters: list[str | None] | None = None,
        on_step: Callable[[list[int]], None] | None = None,
        decoder: LeanDecoder | None = None,
    ) -> list[Generation]:
        started = time.perf_counter()
        device = self.device
        batch = len(prompts)
        extra = self._adapter_kwargs(adapters)
        stop_ids = torch.tensor(self.stop_ids, device=device)
        row_adapters = extra.get("adapter_names", [None] * batch)
        first_rows, distinct_of_row = _distinct_prompts(prompts, row_adapters)
        input_ids, prompt_attention = self._left_padded([prompts[row] for row in first_rows])
        rows = torch.tensor(distinct_of_row, device=device) if len(first_rows) < batch else None
        # Without the lean decoder: transformers' forward, with the one active adapter folded if there is one.
        with folded_lora(self.model) if decoder is None and not extra else nullcontext():
            if decoder is not None:
                steps = LeanSteps(decoder, input_ids, prompt_attention, rows, params.max_new_tokens)
            else:
                adapter_names = (
                    ([row_adapters[row] for row in first_rows], row_adapters) if extra else None
                )
                steps = TransformersSteps(
                    self.model, input_ids, prompt_attention, rows, params.max_new_tokens, adapter_names
                )
            logits = steps.first_logits
            finished = torch.zeros(batch, dtype=torch.bool, device=device)
            tokens: list[torch.Tensor] = []
            logprobs: list[torch.Tensor] = []
            string_stop_at: list[int | None] = [None] * batch  # length at which a stop string appeared
            texts_cut: list[str | None] = [None] * batch
            scale = params.temperature if params.temperature > 0 else 1.0
            for step in range(params.max_new_tokens):
                token = sample_next(logits, params.temperature, params.top_p, generator)
                token = torch.where(finished, torch.full_like(token, self.pad_id), token)
                logprobs.append(
                    torch.log_softmax(logits.float() / scale, -1).gather(-1, token[:, None])[:, 0]
                )
                tokens.append(token)
                if on_step is not None:
                    on_step(token.tolist())
                finished |= torch.isin(token, stop_ids)
                if params.stop:
                    self._check_stop_strings(tokens, finished, params.stop, string_stop_at, texts_cut)
                if bool(finished.all()) or step + 1 == params.max_new_tokens:
                    break
                logits = steps.next(token, step)

        elapsed = time.perf_counter() - started
        generated = torch.stack(tokens, 1).tolist() if tokens else [[] for _ in range(batch)]
        token_logprobs = torch.stack(logprobs, 1).tolist() if logprobs else [[] for _ in range(batch)]
        stop_set = set(self.stop_ids)
        results = []
        for row in range(batch):
            ids, lps = generated[row], token_logprobs[row]
            end = next((i + 1 for i, t in enumerate(ids) if t in stop_set), None)
            if string_stop_at[row] is not None and (end is None or string_stop_at[row] < end):
                end = string_stop_at[row]
            if end is not None:
                ids, lps = ids[:end], lps[:end]
                reason = "stop"
            else:
                reason = "length"
            text = self.tokenizer.decode(ids, skip_special_tokens=True)
            if texts_cut[row] is not None:
                text = texts_cut[row]
            results.append(
                Generation(
                    text=text,
                    token_ids=ids,
                    prompt_ids=list(prompts[row]),
                    logprobs=lps,
                    finish_reason=reason,
                    latency_s=elapsed,
                )
            )
        return results

    def _check_stop_strings(
        self,
        tokens: list[torch.Tensor],
        finished: torch.Tensor,
        stop: list[str],
        stop_at: list[int | None],
        texts_cut: list[str | None],
    ) -> None:
        """Mark rows whose text now contains a stop string; the text is cut before it."""
        history = torch.stack(tokens, 1)
        for row in torch.nonzero(~finished).flatten().tolist():
            text = self.tokenizer.decode(history[row].tolist(), skip_special_tokens=True)
            hits = [text.find(s) for s in stop if s in text]
            if hits:
                finished[row] = True
                stop_at[row] = len(tokens)
                texts_cut[row] = text[: min(hits)]
