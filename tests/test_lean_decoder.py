"""The lean decoder must sample exactly what transformers' forward samples: same logits, same tokens."""

import pytest
import torch
from peft import LoraConfig
from transformers import LlamaConfig, LlamaForCausalLM

from conftest import with_lora
from rewardlab.models import lean as lean_module
from rewardlab.models.forward import TransformersForward, forward_for
from rewardlab.models.lean import LeanForward, lean_decoder
from rewardlab.models.tiny import build_tiny_model, build_tiny_tokenizer
from rewardlab.sampling.base import Prompt, SamplingParams
from rewardlab.sampling.local import LocalSampler
from rewardlab.train.common import pad_sequences

TOKENIZER = build_tiny_tokenizer()
PROMPTS = [[5, 9, 12, 40, 41], [7, 8], [5, 9, 12, 40, 41], [30, 31, 32]]  # uneven: left padding


def gqa_model():
    config = LlamaConfig(
        vocab_size=len(TOKENIZER),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        attention_bias=True,
        pad_token_id=TOKENIZER.pad_token_id,
    )
    torch.manual_seed(3)
    return LlamaForCausalLM(config)


def left_padded(prompts):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, attention


MODELS = {
    "llama": lambda: build_tiny_model("tiny", TOKENIZER),
    "qwen2 (q/k/v biases)": lambda: build_tiny_model("tiny-qwen2", TOKENIZER),
    "llama + LoRA (folded)": lambda: with_lora(build_tiny_model("tiny", TOKENIZER)),
    "grouped-query attention, untied head": gqa_model,
}


@pytest.mark.parametrize("name", list(MODELS))
@torch.inference_mode()
def test_logits_match_transformers_at_every_step(name):
    model = MODELS[name]().eval()
    decoder = lean_decoder(model)
    assert decoder is not None
    ids, attention = left_padded(PROMPTS)
    lean_forward, reference_forward = forward_for(model), TransformersForward(model)
    assert isinstance(lean_forward, LeanForward)
    lean_logits, lean = lean_forward.prefill(ids, attention, max_new_tokens=6)
    reference_logits, reference = reference_forward.prefill(ids, attention, max_new_tokens=6)
    torch.testing.assert_close(lean_logits, reference_logits, atol=1e-5, rtol=1e-4)
    for step in range(6):
        generator = torch.Generator().manual_seed(step)
        token = torch.randint(3, len(TOKENIZER), (len(PROMPTS),), generator=generator)
        torch.testing.assert_close(
            lean_forward.decode(lean, token), reference_forward.decode(reference, token), atol=1e-5, rtol=1e-4
        )


@torch.inference_mode()
def test_shared_prompts_are_encoded_once_and_copied_to_their_rows(monkeypatch):
    model = with_lora(build_tiny_model("tiny", TOKENIZER)).eval()
    ids, attention = left_padded([PROMPTS[0], PROMPTS[1]])
    rows = torch.tensor([0, 0, 1, 0, 1])
    forward = forward_for(model)
    shared_logits, shared = forward.prefill(ids[rows], attention[rows], max_new_tokens=3)
    monkeypatch.setattr(lean_module, "distinct_rows", lambda *columns: (None, None))  # every row alone
    full_logits, full = forward.prefill(ids[rows], attention[rows], max_new_tokens=3)
    torch.testing.assert_close(shared_logits, full_logits)
    token = torch.tensor([10, 11, 12, 13, 14])
    torch.testing.assert_close(
        forward.decode(shared, token), forward.decode(full, token), atol=1e-5, rtol=1e-4
    )


def test_sampler_draws_the_same_tokens_either_way():
    model = with_lora(build_tiny_model("tiny", TOKENIZER))
    prompts = [Prompt(messages=[{"role": "user", "content": q}]) for q in ("12+34=", "7-5=", "100+1=")]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=10, seed=123, logprobs=True)
    lean = LocalSampler(model, TOKENIZER, lean=True).generate(prompts, params)
    reference = LocalSampler(model, TOKENIZER, lean=False).generate(prompts, params)
    for lean_group, reference_group in zip(lean, reference, strict=True):
        for a, b in zip(lean_group, reference_group, strict=True):
            assert a.token_ids == b.token_ids and a.text == b.text
            assert a.logprobs == pytest.approx(b.logprobs, abs=1e-4)


@torch.inference_mode()
def test_half_precision_lora_keeps_the_low_rank_path_apart():
    """In bf16, W + dW would round a small update away; the decoder must match peft's separate path."""
    model = with_lora(build_tiny_model("tiny", TOKENIZER)).to(torch.bfloat16).eval()
    decoder = lean_decoder(model)
    assert decoder.layers[0].qkv.lora_a is not None  # not folded
    ids, attention = left_padded(PROMPTS)
    lean_logits, _ = forward_for(model).prefill(ids, attention, max_new_tokens=2)
    reference_logits, _ = TransformersForward(model).prefill(ids, attention, max_new_tokens=2)
    torch.testing.assert_close(lean_logits.float(), reference_logits.float(), atol=0.1, rtol=0.05)
    with model.disable_adapter():  # the KL reference: adapters off
        assert lean_decoder(model).layers[0].qkv.lora_a is None


@torch.inference_mode()
def test_disabled_adapter_decodes_the_base_model():
    base = build_tiny_model("tiny", TOKENIZER).eval()
    ids, attention = left_padded(PROMPTS)
    expected, _ = forward_for(base).prefill(ids, attention, 1)
    adapted = with_lora(build_tiny_model("tiny", TOKENIZER)).eval()
    forward = forward_for(adapted)  # picked once; follows the adapters' state on every call
    with adapted.disable_adapter():  # the KL reference: adapters off
        switched_off, _ = forward.prefill(ids, attention, 1)
    torch.testing.assert_close(switched_off, expected)
    adapted_logits, _ = forward.prefill(ids, attention, 1)
    assert not torch.allclose(adapted_logits, expected)


def test_unsupported_models_fall_back_to_transformers():
    model = with_lora(build_tiny_model("tiny", TOKENIZER))
    model.add_adapter("second", LoraConfig(r=2, target_modules="all-linear"))
    model.base_model.set_adapter(["default", "second"])  # two active adapters at once
    assert lean_decoder(model) is None
    prompts = [Prompt(messages=[{"role": "user", "content": "1+1="}])]
    params = SamplingParams(max_new_tokens=3, seed=0)
    [[generation]] = LocalSampler(model, TOKENIZER).generate(prompts, params)
    assert generation.token_ids


@pytest.mark.parametrize("fold", [True, False], ids=["adapters folded", "low-rank path"])
@pytest.mark.parametrize("share_prefix", [True, False])
@pytest.mark.parametrize("name", ["llama + LoRA (folded)", "qwen2 (q/k/v biases)"])
def test_training_logits_and_gradients_match_transformers(name, share_prefix, fold, monkeypatch):
    """The trainer's forward and backward: same logits, same gradients in every trainable parameter."""
    monkeypatch.setattr(lean_module, "FOLD_IN_TRAINING_MAX_ELEMENTS", 1 << 30 if fold else 0)
    model = MODELS[name]()
    if name.startswith("qwen2"):
        model = with_lora(model)
    model.train()
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[1]] if share_prefix else PROMPTS
    completions = [[20, 21, 22], [23], [24, 25], [26, 27, 28]]
    masks = [[1] * len(c) for c in completions]
    ids, attention, mask, start = pad_sequences(prompts, completions, masks, 0, "cpu")
    trainable = [p for p in model.parameters() if p.requires_grad]
    results = []
    for use_lean in (True, False):
        logits = forward_for(model, lean=use_lean).suffix_logits(ids, attention, start)
        (logits.log_softmax(-1).mean(-1) * mask).sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in trainable]))
        model.zero_grad()
    (lean_logits, lean_grads), (hf_logits, hf_grads) = results
    scored = mask[..., None]  # padding positions predict nothing the loss reads
    torch.testing.assert_close(lean_logits * scored, hf_logits * scored, atol=1e-5, rtol=1e-4)
    for a, b in zip(lean_grads, hf_grads, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-3)


needs_packing = pytest.mark.skipif(
    not lean_module._can_pack(), reason="this PyTorch build or CPU has no oneDNN bfloat16 matmul"
)


@needs_packing
@torch.inference_mode()
def test_packed_bfloat16_weights_decode_exactly_what_plain_ones_do(monkeypatch):
    """Packing is only a layout: the same logits to the bit, at a decoding step's few rows and a prefill's
    many, with adapters on the low-rank path and an untied head."""
    model = with_lora(gqa_model()).to(torch.bfloat16).eval()
    ids, attention = left_padded(PROMPTS * 5)
    outputs = []
    for packing in (True, False):
        if not packing:
            monkeypatch.setattr(lean_module, "_can_pack", lambda: False)
        decoder = lean_decoder(model)
        assert all((p.packed is not None) == packing for p in (decoder.head, decoder.layers[1].down))
        forward = LeanForward(model, TransformersForward(model))
        logits, state = forward.prefill(ids, attention, max_new_tokens=3)
        steps = [logits]
        for _ in range(2):
            steps.append(forward.decode(state, steps[-1].argmax(-1)))
        outputs.append(steps)
    for packed, plain in zip(*outputs, strict=True):
        assert torch.equal(packed, plain)


@needs_packing
@torch.no_grad()
def test_a_packed_weight_follows_its_weight_and_training_never_packs():
    model = with_lora(build_tiny_model("tiny", TOKENIZER)).to(torch.bfloat16)
    forward = LeanForward(model, TransformersForward(model))
    first = forward._decoder(training=False).layers[0].o.packed
    assert forward._decoder(training=False).layers[0].o.packed is first  # kept while the weight is unchanged
    base = model.get_base_model().model.layers[0].self_attn.o_proj.base_layer
    base.weight.mul_(2)  # changed in place: a new version
    again = forward._decoder(training=False).layers[0].o.packed
    assert again is not first
    x = torch.randn(3, base.weight.shape[1], dtype=torch.bfloat16)
    expected = torch.nn.functional.linear(x, base.weight)
    assert torch.equal(torch.ops.mkldnn._linear_pointwise(x, again, None, "none", [], ""), expected)
    assert all(layer.o.packed is None for layer in forward._decoder(training=True).layers)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_first_token_logits_take_the_flat_product_with_the_same_bits(dtype, monkeypatch):
    """Training's first-suffix-token logits (a (B, 1, H) slice) run as a flat product in half precision on
    a CPU, which skips copying the head once per row; logits and every gradient are the same to the bit."""
    model = with_lora(gqa_model()).to(dtype)
    model.train()
    completions = [[20, 21, 22], [23], [24, 25], [26, 27, 28]]
    masks = [[1] * len(c) for c in completions]
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[1]]  # shared: the first token from the prefix
    ids, attention, mask, start = pad_sequences(prompts, completions, masks, 0, "cpu")
    trainable = [p for p in model.parameters() if p.requires_grad]
    calls = []
    results = []
    real = lean_module._copies_weight_per_row
    for flat in (True, False):
        monkeypatch.setattr(
            lean_module,
            "_copies_weight_per_row",
            lambda x, flat=flat: calls.append(real(x)) or flat and real(x),
        )
        logits = LeanForward(model, TransformersForward(model)).suffix_logits(ids, attention, start)
        (logits.float().log_softmax(-1).mean(-1) * mask).sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in trainable]))
        model.zero_grad()
    assert any(calls)  # the shared-prefix path took the flat product
    (flat_logits, flat_grads), (batched_logits, batched_grads) = results
    assert torch.equal(flat_logits, batched_logits)
    for a, b in zip(flat_grads, batched_grads, strict=True):
        assert torch.equal(a, b)
