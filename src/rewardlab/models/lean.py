"""The fused forward for Llama-family models: transformers' weights and math, far fewer operations per token.

Sampling a small model is mostly overhead, not arithmetic: every token runs transformers' general forward
(mask building, cache bookkeeping that concatenates keys and values on every step, output objects, peft's
dispatch for each adapted layer). :class:`LeanForward` runs the same computation as ``LlamaForCausalLM`` and
``Qwen2ForCausalLM`` with what a decoding loop and a training step need and nothing else:

* the projections that read the same input are one matmul (q, k and v; gate and up);
* LoRA adapters are folded into those weights (``W + scale * B @ A``) once per generation when the weights
  are float32; in half precision the low-rank path is kept apart, because ``W + dW`` would round the small
  update away;
* keys and values go into tensors allocated once for the whole generation;
* bfloat16 weights on a CPU are laid out once in oneDNN's blocked format for inference (:func:`packed`);
* rotary angles come from the model's own ``inv_freq``.

Training uses it too (:meth:`LeanForward.suffix_logits`): the same forward with autograd, adapters kept
apart from the frozen weights, and the fused frozen weights built once and reused while they do not change.

:func:`supports` says whether the architecture is one this module reproduces exactly (not another
architecture, sliding windows or dynamic RoPE); :func:`~rewardlab.models.forward.forward_for` asks it once.
Tests hold the fused forward and transformers' to the same logits, gradients and sampled tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from rewardlab.models.forward import Forward, distinct_rows, is_lora_variant, position_ids

SUPPORTED_MODEL_TYPES = ("llama", "qwen2")
# A fused projection at most this large (q/k/v of a 128-wide model: 49k) folds its adapters in training too.
FOLD_IN_TRAINING_MAX_ELEMENTS = 1 << 17


HALF_DTYPES = (torch.bfloat16, torch.float16)
# Up to this many keys, the CPU backward pass runs faster on the plain (math) attention kernel.
MATH_KERNEL_MAX_KEYS = 128


def _attention_kernels(device: torch.device, keys: int):
    """When training on CPU over short sequences, the plain (math) attention kernel: on GRPO's short
    sequences its backward pass beats the flash kernel's, but it builds the whole (queries x keys) matrix,
    so long prompts (a 640-token log: 52 s against 29 s a step) keep the flash kernel. Sampling, and other
    devices, keep whatever PyTorch picks."""
    training = device.type == "cpu" and torch.is_grad_enabled() and keys <= MATH_KERNEL_MAX_KEYS
    return sdpa_kernel(SDPBackend.MATH) if training else nullcontext()


def _attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, scale: float):
    """Attention of ``q`` (B, H, T, D) over ``keys``/``values`` (B, KV, K, D), heads grouped as in Llama.

    One decoding step in half precision on CPU takes two small matmuls per group of query heads instead of
    PyTorch's fused kernel, which is about seven times slower there for a single query (bf16, 32 rows, 690
    keys: 2.9 ms against 21 ms). Everything else goes to ``scaled_dot_product_attention``.
    """
    batch, heads, length, dim = q.shape
    kv_heads = keys.shape[1]
    if length == 1 and q.dtype in HALF_DTYPES and q.device.type == "cpu":
        grouped = q.view(batch, kv_heads, heads // kv_heads, dim)  # query head h reads kv head h // group
        scores = torch.matmul(grouped, keys.transpose(-1, -2)).float() * scale
        scores = scores.masked_fill(~mask, float("-inf"))  # mask (B, 1, 1, K) broadcasts over heads
        weights = torch.softmax(scores, -1).to(q.dtype)
        return torch.matmul(weights, values).view(batch, heads, 1, dim)
    return F.scaled_dot_product_attention(
        q, keys, values, attn_mask=mask, scale=scale, enable_gqa=kv_heads != heads
    )


@dataclass
class Projection:
    """One or more linear layers reading the same input, fused: ``x @ weight.T + bias``, plus LoRA."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    lora_a: torch.Tensor | None = None  # (sum of ranks, in): the adapters' A matrices, stacked
    lora_b: torch.Tensor | None = None  # (out, sum of ranks): block-diagonal B, already scaled
    # Several adapters at once, each row on its own (a server's batch): see rewardlab.models.routed_lora.
    routed: Callable[[torch.Tensor], torch.Tensor | None] | None = None
    packed: torch.Tensor | None = None  # ``weight`` in oneDNN's layout (see packed()), for inference only

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is not None:
            out = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
        else:
            out = F.linear(x, self.weight, self.bias)
        if self.routed is not None:
            low_rank = self.routed(x)
            return out if low_rank is None else (out + low_rank).to(x.dtype)
        if self.lora_a is not None:
            # peft keeps adapters in float32 under a half-precision model: the low-rank path runs in the
            # adapters' dtype and the sum is rounded back once, as peft's own forward does.
            low_rank = F.linear(F.linear(x.to(self.lora_a.dtype), self.lora_a), self.lora_b)
            out = (out + low_rank).to(x.dtype)
        return out


@dataclass
class Layer:
    input_norm: torch.Tensor
    post_norm: torch.Tensor
    qkv: Projection
    o: Projection
    gate_up: Projection
    down: Projection


class _Unsupported(Exception):
    """A model part this decoder does not reproduce exactly; the caller falls back to transformers."""


def _parts(module: torch.nn.Module, training: bool) -> tuple[torch.Tensor, torch.Tensor | None, tuple | None]:
    """(weight, bias, (A, B, scale) or None) of a plain or LoRA-adapted linear layer, as it runs now."""
    if type(module) is torch.nn.Linear:
        return module.weight, module.bias, None
    from peft.tuners.lora import LoraLayer

    if not isinstance(module, LoraLayer):
        raise _Unsupported(f"{type(module).__name__} layer")
    base = module.get_base_layer()
    if type(base) is not torch.nn.Linear or module.fan_in_fan_out:
        raise _Unsupported("adapted layer that is not a plain Linear")
    if module.disable_adapters or module.merged:
        return base.weight, base.bias, None  # adapters off (the KL reference) or already in the weight
    active = [a for a in module.active_adapters if a in module.lora_A]
    if len(active) > 1:
        raise _Unsupported("several active adapters")
    if not active:
        return base.weight, base.bias, None
    adapter = active[0]
    if is_lora_variant(module, adapter):
        raise _Unsupported("LoRA variant")
    if training and module.training and not isinstance(module.lora_dropout[adapter], torch.nn.Identity):
        raise _Unsupported("LoRA dropout while training")  # inference has no dropout: that case is fine
    lora = (module.lora_A[adapter].weight, module.lora_B[adapter].weight, module.scaling[adapter])
    return base.weight, base.bias, lora


def _concat(tensors: list[torch.Tensor], reuse: dict) -> torch.Tensor:
    """``torch.cat(tensors)``, reused from ``reuse`` while the tensors are frozen and unchanged."""
    if len(tensors) == 1:
        return tensors[0]
    if any(t.requires_grad or t.is_inference() for t in tensors):
        return torch.cat(tensors)  # trained weights (a fresh graph every time), or no version to key on
    key = tuple((t.data_ptr(), t._version) for t in tensors)
    if key not in reuse:
        # A normal tensor even when first built while sampling (inference mode), so training can use it.
        with torch.inference_mode(False), torch.no_grad():
            reuse[key] = torch.cat(tensors)
    return reuse[key]


def _can_pack() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    except (AttributeError, RuntimeError):  # a PyTorch build without these operators
        return False


def packed(weight: torch.Tensor, reuse: dict) -> torch.Tensor | None:
    """``weight`` reordered once into oneDNN's blocked layout, for inference on a CPU in bfloat16; ``None``
    where that does not apply (another dtype or device, a weight that trains, a build without oneDNN).

    ``F.linear`` on bfloat16 CPU tensors reorders the weight into that layout on every call. At a decoding
    step's few rows the reorder costs about as much as the product itself (SmolLM2's four projections of a
    layer at 13 rows: 0.50 ms, 0.29 ms packed; ``benchmarks/bench_packed_weights.py``). The product runs the
    same oneDNN kernel, so its result is the same to the bit (tested). Kept in ``reuse`` with the weight it
    was made from while that weight is unchanged, as :func:`_concat` keeps its concatenations.
    """
    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu" or weight.requires_grad:
        return None
    if "can_pack" not in reuse:
        reuse["can_pack"] = _can_pack()
    if not reuse["can_pack"]:
        return None
    if weight.is_inference():  # no version to key on: a server builds its decoder once anyway
        return torch.ops.mkldnn._reorder_linear_weight(weight)
    # One entry per weight, replaced when the weight changes; holding the weight keeps its memory from being
    # reused by another tensor under the same key.
    key = ("packed", weight.data_ptr())
    source, version, layout = reuse.get(key, (None, None, None))
    if source is not weight or version != weight._version:
        with torch.inference_mode(False), torch.no_grad():
            layout = torch.ops.mkldnn._reorder_linear_weight(weight)
        reuse[key] = (weight, weight._version, layout)
    return layout


def _fuse(modules: list[torch.nn.Module], training: bool, reuse: dict) -> Projection:
    """One :class:`Projection` computing every module's output, concatenated in order.

    For inference, float32 adapters are folded into the weight. Training keeps them apart, but for small
    weights: gradients reach A and B through the low-rank path without a full-size weight gradient. Half
    precision never folds: ``W + dW`` would round a small update away.
    """
    parts = [_parts(m, training) for m in modules]
    weight = _concat([w for w, _, _ in parts], reuse)
    bias = None
    if any(b is not None for _, b, _ in parts):
        bias = torch.cat([b if b is not None else w.new_zeros(w.shape[0]) for w, b, _ in parts])
    layout = None if training else packed(weight, reuse)
    if all(lora is None for _, _, lora in parts):
        return Projection(weight, bias, packed=layout)
    # Training folds too when the weight is small: such layers cost kernel launches, not arithmetic, and
    # folding needs fewer of them (the full-size weight gradient it adds is cheap there). Large layers keep
    # the low-rank path, whose gradient costs a fraction of the full one.
    fold = not training or weight.numel() <= FOLD_IN_TRAINING_MAX_ELEMENTS
    if fold and weight.dtype == torch.float32:
        folded = []
        for w, _, lora in parts:
            if lora is not None:
                a, b, scale = lora
                w = torch.addmm(w, b, a, alpha=scale)  # a new tensor, never the base weight in place
            folded.append(w)
        return Projection(torch.cat(folded), bias)
    # The A matrices stacked, B block-diagonal and pre-scaled: each module's B reads only its own A's rows.
    lora_a = torch.cat([lora[0] for _, _, lora in parts if lora is not None])
    lora_b = torch.block_diag(
        *[lora[1] * lora[2] if lora is not None else w.new_zeros(w.shape[0], 0) for w, _, lora in parts]
    )
    return Projection(weight, bias, lora_a, lora_b, packed=layout)


@dataclass
class LeanDecoder:
    """The model's weights as it runs now, arranged for decoding; rebuilt for every ``generate`` call."""

    embed: torch.Tensor
    layers: list[Layer]
    final_norm: torch.Tensor
    head: Projection
    eps: float
    num_heads: int
    num_kv_heads: int
    head_dim: int
    scaling: float
    inv_freq: torch.Tensor
    rope_scaling: float

    @property
    def grouped(self) -> bool:
        return self.num_kv_heads != self.num_heads

    # -- the pieces of one forward ------------------------------------------------------------------

    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * x.to(dtype)

    def _rotary(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos and sin for ``positions`` (B, T), shaped (B, 1, T, head_dim) to broadcast over heads."""
        freqs = positions[..., None].float() * self.inv_freq
        angles = torch.cat((freqs, freqs), -1)
        cos = (angles.cos() * self.rope_scaling).to(dtype)
        sin = (angles.sin() * self.rope_scaling).to(dtype)
        return cos[:, None], sin[:, None]

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), -1) * sin

    def forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, kv: KVCache | KVSegments
    ) -> torch.Tensor:
        """Final-norm hidden states (B, T, hidden) of ``input_ids``, attending through ``kv``.

        ``mask`` (B, 1, T, keys) says which keys each new position may attend to: ``kv``'s earlier keys
        followed by the new ones.
        """
        with _attention_kernels(input_ids.device, mask.shape[-1]):
            return self._forward(input_ids, positions, mask, kv)

    def _forward(
        self, input_ids: torch.Tensor, positions: torch.Tensor, mask: torch.Tensor, kv: KVCache | KVSegments
    ) -> torch.Tensor:
        x = F.embedding(input_ids, self.embed)
        cos, sin = self._rotary(positions, x.dtype)
        for index, layer in enumerate(self.layers):
            qkv = layer.qkv(self._norm(x, layer.input_norm))
            x = x + layer.o(self._attention(index, qkv, cos, sin, mask, kv))
            x = self._mlp(layer, x)
        kv.advance(input_ids.shape[1])
        return self._norm(x, self.final_norm)

    def _attention(
        self,
        layer: int,
        qkv: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor,
        kv: KVCache | KVSegments,
    ) -> torch.Tensor:
        """Attention of layer ``layer`` from its fused q/k/v projection (B, T, q + 2 kv), through ``kv``;
        returns (B, T, heads * head_dim), ready for the output projection."""
        batch, length, _ = qkv.shape
        kv_width = self.num_kv_heads * self.head_dim
        q, k, v = qkv.split([self.num_heads * self.head_dim, kv_width, kv_width], -1)
        q = q.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
        k = k.view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        v = v.view(batch, length, self.num_kv_heads, self.head_dim).transpose(1, 2)
        q, k = self._rotate(q, cos, sin), self._rotate(k, cos, sin)
        keys, values = kv.extend(layer, k, v)
        attended = _attend(q, keys, values, mask, self.scaling)
        return attended.transpose(1, 2).reshape(batch, length, -1)

    def _mlp(self, layer: Layer, x: torch.Tensor) -> torch.Tensor:
        gate, up = layer.gate_up(self._norm(x, layer.post_norm)).chunk(2, -1)
        return x + layer.down(F.silu(gate) * up)

    def forward_together(self, segments: list[tuple]) -> list[torch.Tensor]:
        """:meth:`forward` of several batches at once, each ``(input_ids, positions, mask, kv)`` of its own
        shape: a server's decoding rows (one token each) beside a prompt being prefilled.

        Every projection runs once over all their tokens (on a CPU a small batch costs about one pass over the
        weights, whatever its size, so two batches in one pass cost about half of two passes); attention runs
        per batch, over its own keys and values. Each token is a row of the projections, so a routed LoRA
        (:mod:`rewardlab.models.routed_lora`) is routed per token. Returns each batch's final hidden states.
        """
        shapes = [ids.shape for ids, _, _, _ in segments]
        counts = [batch * length for batch, length in shapes]
        x = torch.cat(
            [F.embedding(ids, self.embed).reshape(-1, 1, self.embed.shape[1]) for ids, *_ in segments]
        )
        rotary = [self._rotary(positions, x.dtype) for _, positions, _, _ in segments]
        keys_max = max(mask.shape[-1] for _, _, mask, _ in segments)
        width = self.num_heads * self.head_dim
        with _attention_kernels(x.device, keys_max):
            for index, layer in enumerate(self.layers):
                projected = layer.qkv(self._norm(x, layer.input_norm)).split(counts)
                attended = [  # each batch's tokens back to rows of one token, as the projections take them
                    self._attention(index, part.view(batch, length, -1), cos, sin, mask, kv).view(
                        -1, 1, width
                    )
                    for part, (batch, length), (cos, sin), (_, _, mask, kv) in zip(
                        projected, shapes, rotary, segments, strict=True
                    )
                ]
                x = self._mlp(layer, x + layer.o(torch.cat(attended)))
        for (_, length), (_, _, _, kv) in zip(shapes, segments, strict=True):
            kv.advance(length)
        hidden = self._norm(x, self.final_norm)
        return [
            h.view(batch, length, -1) for h, (batch, length) in zip(hidden.split(counts), shapes, strict=True)
        ]

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if hidden.dim() == 3 and hidden.shape[1] == 1 and _copies_weight_per_row(hidden):
            # The last position of each row, as a flat (B, H) product: the same bits, without the copy.
            return self.head(hidden.reshape(hidden.shape[0], -1)).unsqueeze(1)
        return self.head(hidden)


def _copies_weight_per_row(x: torch.Tensor) -> bool:
    """Whether ``F.linear`` on ``x``, a (B, 1, H) slice of a longer sequence, would run a batched product
    that first copies the weight once per row. It does in half precision on a CPU: for the LM head that is
    B x 49,152 x 576 values on SmolLM2 (0.8 s of a 7 s GRPO update at B = 4). There the flat product gives
    the same bits, forward and backward (tested). float32's batched product is not slowed that way, and
    sums in another order than the flat one, so float32 keeps it and its numbers."""
    return x.dtype in HALF_DTYPES and x.device.type == "cpu" and not x.is_contiguous()


@dataclass
class KVCache:
    """Keys and values of every layer for decoding, (B, kv_heads, capacity, head_dim), allocated once.

    ``whole`` hands attention the whole buffer instead of its written prefix (the mask then hides the
    unwritten tail, which starts zeroed so it holds no NaN): on CPU a half-precision batched matmul over a
    slice of a larger buffer copies it first, ten times the cost of the matmul itself.
    """

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    length: int = 0  # positions written so far
    whole: bool = False

    @classmethod
    def allocate(
        cls, decoder: LeanDecoder, batch: int, capacity: int, like: torch.Tensor, whole: bool = False
    ) -> KVCache:
        shape = (batch, decoder.num_kv_heads, capacity, decoder.head_dim)
        count = len(decoder.layers)
        make = like.new_zeros if whole else like.new_empty
        return cls([make(shape) for _ in range(count)], [make(shape) for _ in range(count)], whole=whole)

    @property
    def capacity(self) -> int:
        return self.keys[0].shape[2]

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + k.shape[2]
        self.keys[layer][:, :, self.length : end] = k
        self.values[layer][:, :, self.length : end] = v
        if self.whole and k.shape[2] == 1:
            return self.keys[layer], self.values[layer]
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def advance(self, length: int) -> None:
        self.length += length

    def select_rows(self, rows: torch.Tensor) -> KVCache:
        keys, values = [k[rows] for k in self.keys], [v[rows] for v in self.values]
        return KVCache(keys, values, self.length, self.whole)


@dataclass
class KVSegments:
    """Keys and values for training: no in-place writes, so gradients flow through every one of them."""

    keys: list[torch.Tensor | None]
    values: list[torch.Tensor | None]

    @classmethod
    def empty(cls, decoder: LeanDecoder) -> KVSegments:
        return cls([None] * len(decoder.layers), [None] * len(decoder.layers))

    def extend(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.keys[layer] is not None:
            k, v = torch.cat([self.keys[layer], k], 2), torch.cat([self.values[layer], v], 2)
        self.keys[layer], self.values[layer] = k, v
        return k, v

    def advance(self, length: int) -> None:
        pass

    def select_rows(self, rows: torch.Tensor) -> KVSegments:
        return KVSegments([k[rows] for k in self.keys], [v[rows] for v in self.values])


def _check_config(config) -> None:
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise _Unsupported(f"model type {config.model_type}")
    if getattr(config, "hidden_act", "silu") != "silu":
        raise _Unsupported(f"activation {config.hidden_act}")
    layer_types = getattr(config, "layer_types", None) or []
    if any(kind != "full_attention" for kind in layer_types) or getattr(config, "use_sliding_window", False):
        raise _Unsupported("sliding-window attention")
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if "dynamic" in str(rope.get("rope_type", "default")) or rope.get("rope_type") == "longrope":
        raise _Unsupported("length-dependent RoPE")


def _check_architecture(hf: torch.nn.Module) -> None:
    _check_config(hf.config)
    if getattr(hf.config, "quantization_config", None) is not None:
        raise _Unsupported("quantized weights (QLoRA's 4-bit base: packed codes, not matrices to fuse)")
    if type(hf.model.embed_tokens) is not torch.nn.Embedding:
        raise _Unsupported("embedding layer")


def _transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supports(model: torch.nn.Module) -> bool:
    """Whether the fused forward reproduces ``model``'s architecture; adapters are checked on every call."""
    try:
        _check_architecture(_transformers_model(model))
    except (_Unsupported, AttributeError):
        return False
    return True


def _fused_decoder(
    hf: torch.nn.Module,
    training: bool,
    reuse: dict,
    fuse: Callable[[list[torch.nn.Module]], Projection] | None = None,
) -> LeanDecoder:
    """The :class:`LeanDecoder` of ``hf``'s weights and adapters as they are now (see :func:`_fuse`);
    ``fuse`` replaces :func:`_fuse` (a server routing each row to its adapter)."""
    if fuse is None:
        fuse = partial(_fuse, training=training, reuse=reuse)
    inner = hf.model
    layers = []
    for block in inner.layers:
        attention, mlp = block.self_attn, block.mlp
        layers.append(
            Layer(
                input_norm=block.input_layernorm.weight,
                post_norm=block.post_attention_layernorm.weight,
                qkv=fuse([attention.q_proj, attention.k_proj, attention.v_proj]),
                o=fuse([attention.o_proj]),
                gate_up=fuse([mlp.gate_proj, mlp.up_proj]),
                down=fuse([mlp.down_proj]),
            )
        )
    first = inner.layers[0].self_attn
    return LeanDecoder(
        embed=inner.embed_tokens.weight,
        layers=layers,
        final_norm=inner.norm.weight,
        head=fuse([hf.lm_head]),
        eps=inner.norm.variance_epsilon,
        num_heads=hf.config.num_attention_heads,
        num_kv_heads=hf.config.num_key_value_heads,
        head_dim=first.head_dim,
        scaling=first.scaling,
        inv_freq=inner.rotary_emb.inv_freq.float(),
        rope_scaling=float(inner.rotary_emb.attention_scaling),
    )


def lean_decoder(
    model: torch.nn.Module, training: bool = False, reuse: dict | None = None
) -> LeanDecoder | None:
    """A :class:`LeanDecoder` over ``model``'s current weights and adapters, or ``None`` if unsupported.

    ``training=False`` computes as in eval mode (no dropout), whatever mode the model is in; ``True`` keeps
    gradients flowing to whatever trains (see :func:`_fuse`). ``reuse`` keeps fused frozen weights between
    calls (see :func:`_concat`).
    """
    hf = _transformers_model(model)
    try:
        _check_architecture(hf)
        return _fused_decoder(hf, training, {} if reuse is None else reuse)
    except (_Unsupported, AttributeError):
        return None


def attention_mask(keys_real: torch.Tensor, first_query: int) -> torch.Tensor:
    """(B, 1, T, K) boolean mask for queries at positions ``first_query..K-1`` over keys ``0..K-1``.

    Causal, and blind to padding keys; a padding query attends to itself only, because a query with
    nothing to attend to comes out NaN, and NaN leaks through even a masked-out key into real positions.
    """
    keys = torch.arange(keys_real.shape[1], device=keys_real.device)
    queries = keys[first_query:, None]
    allowed = ((keys <= queries) & keys_real[:, None, :]) | (keys == queries)
    return allowed[:, None]


@dataclass
class LeanDecoding:
    """A generation on the fused forward: its weights, its cache, which keys are real, the next positions."""

    decoder: LeanDecoder
    cache: KVCache
    keys_real: torch.Tensor  # (B, prompt width + max_new_tokens)
    next_position: torch.Tensor  # (B, 1)
    width: int  # prompt columns
    step: int = 0


class LeanForward:
    """The :class:`~rewardlab.models.forward.Forward` of Llama and Qwen2 models, on fused weights.

    The weights are fused again on every call, because adapters change (training, or switched off for the
    KL reference): once per generation, once per training forward. Frozen weights are concatenated only
    once and kept here while they do not change. A call whose adapters the fused weights cannot reproduce
    (several active at once, DoRA, dropout while training) runs on ``fallback``, transformers' forward.
    """

    def __init__(self, model: torch.nn.Module, fallback: Forward):
        self.model = model
        self.fallback = fallback
        # LoRA training never changes the frozen weights, and concatenating them again for every forward
        # would copy the whole model each time.
        self.fused_frozen: dict = {}
        self._generating: LeanDecoder | Forward | None = None  # what the generation under way runs on

    def _decoder(self, training: bool) -> LeanDecoder | None:
        hf = _transformers_model(self.model)
        if len(self.fused_frozen) > 8 * len(hf.model.layers) + 16:
            self.fused_frozen.clear()  # weights were replaced (full fine-tuning): forget stale copies
        try:
            return _fused_decoder(hf, training, self.fused_frozen)
        except (_Unsupported, AttributeError):
            return None

    @contextmanager
    def sampling(self) -> Iterator[None]:
        """Fuse the weights once for the whole generation. The fused forward computes in inference mode
        whatever the model's mode, which spares switching every submodule to eval and back."""
        with torch.no_grad():
            decoder = self._decoder(training=False)
        with self.fallback.sampling() if decoder is None else nullcontext():
            self._generating = self.fallback if decoder is None else decoder
            try:
                yield
            finally:
                self._generating = None

    def prefill(
        self, input_ids: torch.Tensor, attention: torch.Tensor, max_new_tokens: int
    ) -> tuple[torch.Tensor, LeanDecoding]:
        runner = self._generating
        if runner is None:  # outside sampling(): weights for this generation alone
            runner = self._decoder(training=False) or self.fallback
        if not isinstance(runner, LeanDecoder):
            return runner.prefill(input_ids, attention, max_new_tokens)
        decoder = runner
        first_rows, rows = distinct_rows(input_ids, attention)
        if first_rows is not None:
            input_ids, attention = input_ids[first_rows], attention[first_rows]
        width = input_ids.shape[1]
        positions = position_ids(attention)
        real = attention.bool()
        # Half precision on CPU decodes over the whole cache (see KVCache.whole and _attend).
        whole = decoder.embed.dtype in HALF_DTYPES and decoder.embed.device.type == "cpu"
        cache = KVCache.allocate(
            decoder, input_ids.shape[0], width + max_new_tokens, like=decoder.embed, whole=whole
        )
        hidden = decoder.forward(input_ids, positions, attention_mask(real, 0), cache)
        logits = decoder.logits(hidden[:, -1])
        if rows is not None:
            cache = cache.select_rows(rows)
            logits, real, positions = logits[rows], real[rows], positions[rows]
        keys_real = torch.cat([real, real.new_ones((real.shape[0], max_new_tokens))], 1)
        return logits, LeanDecoding(decoder, cache, keys_real, positions[:, -1:] + 1, width)

    def decode(self, state: LeanDecoding, token: torch.Tensor) -> torch.Tensor:
        if not isinstance(state, LeanDecoding):  # a generation that runs on the fallback
            return self.fallback.decode(state, token)
        start = state.width + state.step
        if state.cache.whole:
            written = torch.arange(state.keys_real.shape[1], device=token.device) <= start
            mask = (state.keys_real & written)[:, None, None, :]
        else:
            mask = state.keys_real[:, None, None, : start + 1]
        hidden = state.decoder.forward(token[:, None], state.next_position, mask, state.cache)
        state.next_position = state.next_position + 1
        state.step += 1
        return state.decoder.logits(hidden[:, -1])

    def suffix_logits(self, input_ids: torch.Tensor, attention: torch.Tensor, start: int) -> torch.Tensor:
        """Every distinct prefix runs once; its keys and values are shared by the rows that continue it."""
        decoder = self._decoder(training=True)
        if decoder is None:
            return self.fallback.suffix_logits(input_ids, attention, start)
        positions = position_ids(attention)
        prefixes, rows = distinct_rows(input_ids[:, :start], attention[:, :start])
        real = attention.bool()
        kv = KVSegments.empty(decoder)
        if prefixes is None:
            mask = attention_mask(real[:, :-1], 0)
            hidden = decoder.forward(input_ids[:, :-1], positions[:, :-1], mask, kv)
            return decoder.logits(hidden[:, start - 1 :])
        mask = attention_mask(real[prefixes, :start], 0)
        head = decoder.forward(input_ids[prefixes, :start], positions[prefixes, :start], mask, kv)
        first = decoder.logits(head[:, -1:])[rows]  # each row's prediction of its first suffix token
        if input_ids.shape[1] - start == 1:
            return first
        mask = attention_mask(real[:, :-1], start)
        rest = decoder.forward(input_ids[:, start:-1], positions[:, start:-1], mask, kv.select_rows(rows))
        return torch.cat([first, decoder.logits(rest)], 1)
