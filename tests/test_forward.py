"""The forward protocol: both implementations compute the same prefill, decode and suffix logits, the
implementation is picked once per model, and log-probabilities are computed only when asked."""

import pytest
import torch
from peft import LoraConfig
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

from conftest import with_lora
from rewardlab.models import lean as lean_module
from rewardlab.models.forward import TransformersForward, distinct_rows, forward_for, position_ids
from rewardlab.models.lean import LeanForward
from rewardlab.models.tiny import build_tiny_model, build_tiny_tokenizer
from rewardlab.sampling.base import Prompt, SamplingParams
from rewardlab.sampling.local import LocalSampler
from rewardlab.train.common import pad_sequences

TOKENIZER = build_tiny_tokenizer()
# Uneven lengths (left padding) and a repeated prompt (one prefill shared by two rows).
PROMPTS = [[5, 9, 12, 40, 41], [7, 8], [5, 9, 12, 40, 41], [30, 31, 32]]
COMPLETIONS = [[20, 21, 22], [23], [24, 25], [26, 27, 28]]


def grouped_query_model():
    config = LlamaConfig(
        vocab_size=len(TOKENIZER),
        hidden_size=72,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=9,
        num_key_value_heads=3,
        max_position_embeddings=128,
        pad_token_id=TOKENIZER.pad_token_id,
    )
    torch.manual_seed(5)
    return LlamaForCausalLM(config)


def gpt2_model():
    config = GPT2Config(vocab_size=len(TOKENIZER), n_embd=32, n_layer=2, n_head=2, n_positions=64)
    torch.manual_seed(6)
    return GPT2LMHeadModel(config)


MODELS = {
    "tiny llama + LoRA": lambda: with_lora(build_tiny_model("tiny", TOKENIZER)),
    "tiny-qwen2 + LoRA": lambda: with_lora(build_tiny_model("tiny-qwen2", TOKENIZER)),
    "grouped-query attention (9 query, 3 key/value heads)": grouped_query_model,
}


def left_padded(prompts):
    width = max(map(len, prompts))
    ids = torch.tensor([[0] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    return ids, attention


def test_positions_count_real_tokens_and_repeats_are_found():
    ids, attention = left_padded(PROMPTS)
    assert position_ids(attention)[1].tolist() == [0, 0, 0, 0, 1]  # the padding stays at 0
    first, rows = distinct_rows(ids, attention)
    assert rows.tolist()[0] == rows.tolist()[2] and len(set(rows.tolist())) == 3
    assert torch.equal(ids[first][rows], ids)  # every row is its representative's copy
    assert distinct_rows(ids[:2], attention[:2]) == (None, None)  # nothing repeats: nothing to share


@pytest.mark.parametrize("name", list(MODELS))
def test_both_forwards_compute_the_same_logits(name):
    model = MODELS[name]()
    lean, reference = forward_for(model), TransformersForward(model)
    assert isinstance(lean, LeanForward)
    ids, attention = left_padded(PROMPTS)
    model.eval()
    with torch.inference_mode(), lean.sampling(), reference.sampling():
        lean_logits, lean_state = lean.prefill(ids, attention, max_new_tokens=4)
        reference_logits, reference_state = reference.prefill(ids, attention, max_new_tokens=4)
        torch.testing.assert_close(lean_logits, reference_logits, atol=1e-5, rtol=1e-4)
        for step in range(4):
            token = torch.tensor([10 + step, 20 + step, 30 + step, 40 + step])
            torch.testing.assert_close(
                lean.decode(lean_state, token), reference.decode(reference_state, token), atol=1e-5, rtol=1e-4
            )
    model.train()
    masks = [[1] * len(c) for c in COMPLETIONS]
    ids, attention, mask, start = pad_sequences(PROMPTS, COMPLETIONS, masks, 0, "cpu")
    scored = mask[..., None]  # padding positions predict nothing the loss reads
    torch.testing.assert_close(
        lean.suffix_logits(ids, attention, start) * scored,
        reference.suffix_logits(ids, attention, start) * scored,
        atol=1e-5,
        rtol=1e-4,
    )


@pytest.mark.parametrize("kind", ["fused", "transformers"])
@torch.inference_mode()
def test_a_prompt_shared_by_rows_is_encoded_once(kind, monkeypatch):
    model = with_lora(build_tiny_model("tiny", TOKENIZER)).eval()
    forward = forward_for(model, lean=kind == "fused")
    batch_sizes = []
    if kind == "fused":
        original = lean_module.LeanDecoder.forward

        def spy(decoder, input_ids, *args):
            batch_sizes.append(input_ids.shape[0])
            return original(decoder, input_ids, *args)

        monkeypatch.setattr(lean_module.LeanDecoder, "forward", spy)
    else:
        model.get_base_model().register_forward_pre_hook(
            lambda module, args, kwargs: batch_sizes.append(kwargs["input_ids"].shape[0]), with_kwargs=True
        )
    ids, attention = left_padded(PROMPTS)
    logits, state = forward.prefill(ids, attention, max_new_tokens=2)
    forward.decode(state, torch.tensor([10, 11, 12, 13]))
    assert batch_sizes == [3, 4]  # three distinct prompts encoded, four rows decoded
    torch.testing.assert_close(logits[0], logits[2])


def test_an_architecture_it_does_not_fuse_runs_on_transformers_forward():
    model = gpt2_model().eval()
    forward = forward_for(model)
    assert isinstance(forward, TransformersForward)
    ids, attention = left_padded(PROMPTS)
    with torch.inference_mode():
        logits, state = forward.prefill(ids, attention, max_new_tokens=1)
        token = torch.tensor([10, 11, 12, 13])
        after = forward.decode(state, token)
        # The same as one forward over each whole sequence, its padding masked and positions counted.
        full_ids = torch.cat([ids, token[:, None]], 1)
        full_attention = torch.cat([attention, torch.ones_like(attention[:, :1])], 1)
        full = model(
            input_ids=full_ids, attention_mask=full_attention, position_ids=position_ids(full_attention)
        ).logits
    torch.testing.assert_close(logits, full[:, -2], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(after, full[:, -1], atol=1e-5, rtol=1e-4)
    generations = LocalSampler(model, TOKENIZER).generate(
        [Prompt([{"role": "user", "content": "1+1="}])], SamplingParams(n=2, max_new_tokens=3, seed=0)
    )
    assert all(len(g.token_ids) > 0 for g in generations[0])
    assert isinstance(forward_for(build_tiny_model("tiny", TOKENIZER), lean=False), TransformersForward)


def test_the_sampler_keeps_the_forward_it_was_given(monkeypatch):
    model = with_lora(build_tiny_model("tiny", TOKENIZER))
    sampler = LocalSampler(model, TOKENIZER)
    assert isinstance(sampler.forward, LeanForward)

    def no_second_choice(*args, **kwargs):
        raise AssertionError("the forward was picked again")

    monkeypatch.setattr("rewardlab.sampling.local.forward_for", no_second_choice)
    monkeypatch.setattr(lean_module, "supports", no_second_choice)
    prompts = [Prompt([{"role": "user", "content": "12+7="}])]
    params = SamplingParams(n=2, max_new_tokens=4, seed=0)
    before = sampler.generate(prompts, params)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(-1)  # an update: the next generation must follow it
    after = sampler.generate(prompts, params)
    assert [g.token_ids for g in before[0]] != [g.token_ids for g in after[0]]
    hf = model.get_base_model()
    assert not any("fused" in key for key in hf.__dict__)  # the fused weights are the forward's
    assert sampler.forward.fused_frozen  # frozen weights concatenated once, kept for the next call


def test_the_trainer_picks_one_forward_for_sampling_and_the_update(tmp_path, monkeypatch):
    from rewardlab.config import TrainConfig
    from rewardlab.envs import SingleTurnEnv
    from rewardlab.rubrics import Rubric
    from rewardlab.runs import RunStore
    from rewardlab.train import trainer

    picked = []

    def counting(model, lean=True):
        picked.append(forward_for(model, lean))
        return picked[-1]

    monkeypatch.setattr(trainer, "forward_for", counting)
    monkeypatch.setattr("rewardlab.sampling.local.forward_for", counting)

    def length(completion: str) -> float:
        return float(len(completion))

    env = SingleTurnEnv(dataset=[{"prompt": f"p{i}"} for i in range(4)], rubric=Rubric([length]))
    config = TrainConfig.model_validate(
        {
            "runs_dir": str(tmp_path),
            "max_steps": 2,
            "prompts_per_step": 2,
            "group_size": 2,
            "num_iterations": 2,
            "sampling": {"max_new_tokens": 3},
        }
    )
    trainer.train(config, RunStore(tmp_path), env=env)
    assert len(picked) == 1 and isinstance(picked[0], LeanForward)


def test_adapters_it_cannot_fuse_run_that_call_on_the_fallback():
    model = with_lora(build_tiny_model("tiny", TOKENIZER))
    forward = forward_for(model)
    model.add_adapter("second", LoraConfig(r=2, target_modules="all-linear"))
    model.base_model.set_adapter(["default", "second"])  # two active adapters at once
    ids, attention, _, start = pad_sequences(
        PROMPTS, COMPLETIONS, [[1] * len(c) for c in COMPLETIONS], 0, "cpu"
    )
    model.train()
    torch.testing.assert_close(
        forward.suffix_logits(ids, attention, start),
        TransformersForward(model).suffix_logits(ids, attention, start),
    )


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.parametrize("lean", [True, False], ids=["fused", "transformers"])
def test_half_precision_lora_samples_and_trains(dtype, lean):
    from rewardlab.models import LoraSettings, load_model

    model, tokenizer = load_model("tiny", dtype, lora=LoraSettings(8, 16, 0.0, "all-linear"), trainable=True)
    forward = forward_for(model, lean=lean)
    assert isinstance(forward, LeanForward) == lean
    sampler = LocalSampler(model, tokenizer, forward=forward)
    [group] = sampler.generate(
        [Prompt([{"role": "user", "content": "1+2="}])], SamplingParams(n=2, max_new_tokens=5)
    )
    assert all(g.token_ids for g in group)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10], [5, 6, 7, 11, 12, 13]])
    logits = forward.suffix_logits(ids, torch.ones_like(ids), 3)
    assert logits.dtype == getattr(torch, dtype) and logits.shape == (2, 3, len(tokenizer))
    logits.float().logsumexp(-1).sum().backward()
    lora_b = [p for name, p in model.named_parameters() if "lora_B" in name]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lora_b)
    assert any(p.grad.abs().sum() > 0 for p in lora_b)


def test_log_probabilities_only_when_asked(tiny):
    sampler = LocalSampler(*tiny)
    prompts = [Prompt([{"role": "user", "content": "12+7="}])]
    plain = sampler.generate(prompts, SamplingParams(n=3, max_new_tokens=6, seed=2))
    asked = sampler.generate(prompts, SamplingParams(n=3, max_new_tokens=6, seed=2, logprobs=True))
    assert all(g.logprobs is None for g in plain[0])
    assert [g.token_ids for g in plain[0]] == [g.token_ids for g in asked[0]]  # sampling is unchanged
    assert all(len(g.logprobs) == len(g.token_ids) and max(g.logprobs) <= 0 for g in asked[0])
