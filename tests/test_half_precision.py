"""bfloat16 and float16, with and without LoRA, on the lean and the transformers forward, through
``load_model`` exactly as users call it: sampling, training, evaluation and serving all work, and the
sampler's log-probs are the ones the trainer computes for the same tokens.

LoRA adapters stay float32 under a half-precision base (peft's default); that used to crash the lean forward.
"""

from __future__ import annotations

import math

import pytest
import torch

from rewardlab.models.forward import forward_for
from rewardlab.models.loading import LoraSettings, load_model
from rewardlab.sampling.base import Prompt, SamplingParams
from rewardlab.sampling.local import LocalSampler
from rewardlab.train.common import pad_sequences
from rewardlab.train.grpo import token_logprobs

HALF = ["bfloat16", "float16"]
PROMPTS = [Prompt(messages=[{"role": "user", "content": q}]) for q in ("12+34=", "7-5=")]


def loaded(dtype: str, lora: bool):
    """The tiny model as users load it, its adapter (if any) nudged so that it changes the outputs."""
    model, tokenizer = load_model("tiny", dtype, lora=LoraSettings(4, 8) if lora else None, trainable=lora)
    if lora:
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    assert parameter.dtype == torch.float32  # peft keeps adapters in float32
                    parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model, tokenizer


def trainer_logprobs(model, generations, lean: bool) -> torch.Tensor:
    prompts = [g.prompt_ids for g in generations]
    completions = [g.token_ids for g in generations]
    ids, attention, mask, start = pad_sequences(
        prompts, completions, [[1] * len(c) for c in completions], 0, "cpu"
    )
    logits = forward_for(model, lean=lean).suffix_logits(ids, attention, start)
    return token_logprobs(logits, ids[:, start:]) * mask, mask


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "no-lora"])
@pytest.mark.parametrize("dtype", HALF)
def test_sampling_and_training_forwards_agree(dtype, lora):
    model, tokenizer = loaded(dtype, lora)
    assert next(model.parameters()).dtype in (torch.bfloat16, torch.float16, torch.float32)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=8, seed=0, logprobs=True)
    for lean in (True, False):
        groups = LocalSampler(model, tokenizer, lean=lean).generate(PROMPTS, params)
        generations = [g for group in groups for g in group]
        assert all(g.token_ids and all(math.isfinite(x) for x in g.logprobs) for g in generations)
        sampled = torch.zeros(len(generations), max(len(g.token_ids) for g in generations))
        for row, g in enumerate(generations):
            sampled[row, : len(g.logprobs)] = torch.tensor(g.logprobs)
        # What the trainer computes for these tokens, on either forward, is what the sampler saw.
        for train_lean in (True, False):
            with torch.no_grad():
                computed, _ = trainer_logprobs(model, generations, train_lean)
            assert (computed - sampled).abs().max() < 0.1, (lean, train_lean)


@pytest.mark.parametrize("dtype", HALF)
def test_lora_gradients_agree_across_forwards(dtype):
    model, tokenizer = loaded(dtype, lora=True)
    model.train()
    [[generation]] = LocalSampler(model, tokenizer).generate(
        PROMPTS[:1], SamplingParams(max_new_tokens=6, seed=1)
    )
    trainable = [p for p in model.parameters() if p.requires_grad]
    gradients = []
    for lean in (True, False):
        logprobs, mask = trainer_logprobs(model, [generation], lean)
        (logprobs.sum() / mask.sum()).backward()
        gradients.append(torch.cat([p.grad.flatten().float() for p in trainable]))
        model.zero_grad()
    lean_grad, reference = gradients
    assert torch.isfinite(lean_grad).all() and reference.norm() > 0
    assert (lean_grad - reference).norm() / reference.norm() < 0.05


@pytest.mark.parametrize("dtype", HALF)
def test_train_and_eval_run_in_half_precision(dtype, tmp_path):
    from rewardlab.config import EvalConfig, TrainConfig
    from rewardlab.eval.evaluate import evaluate
    from rewardlab.runs import RunStore
    from rewardlab.train.trainer import train

    common = {"model": {"name_or_path": "tiny", "dtype": dtype}, "runs_dir": str(tmp_path)}
    result = train(
        TrainConfig.model_validate(
            {**common, "max_steps": 2, "prompts_per_step": 4, "group_size": 4, "num_iterations": 2,
             "sampling": {"max_new_tokens": 6}, "checkpoint_every": 0}
        )
    )  # fmt: skip
    metrics = RunStore(tmp_path).metrics(result.run_id)
    assert all(math.isfinite(value) for _, value in metrics["loss"])
    assert all(math.isfinite(value) for _, value in metrics["grad_norm"])
    tuned = {**common, "model": {"name_or_path": str(result.run_dir), "dtype": dtype}}
    summary = evaluate(
        EvalConfig.model_validate({**tuned, "num_examples": 4, "rollouts_per_example": 2})
    ).summary
    assert summary["errors"] == 0 and math.isfinite(summary["mean_reward"])


def test_full_fine_tuning_in_half_precision_is_refused_up_front():
    from rewardlab.config import SFTConfig, TrainConfig, load_config
    from rewardlab.errors import ConfigError

    for config in (SFTConfig, TrainConfig):
        with pytest.raises(ConfigError, match="full fine-tuning in bfloat16 would round small updates away"):
            load_config(config, None, ['model.dtype="bfloat16"', "lora.enabled=false"])


@pytest.mark.parametrize("dtype", HALF)
def test_serving_a_half_precision_model_with_an_adapter(dtype, tmp_path):
    from fastapi.testclient import TestClient

    from rewardlab.serve import build_engine, create_app

    adapter, _ = loaded("float32", lora=True)
    adapter.save_pretrained(tmp_path / "tuned")
    engine = build_engine("tiny", {"tuned": str(tmp_path / "tuned")}, dtype=dtype)
    with TestClient(create_app(engine)) as client:
        for model in ("tiny", "tuned"):
            response = client.post(
                "/v1/completions", json={"model": model, "prompt": "1+2=", "max_tokens": 4, "logprobs": 0}
            )
            assert response.status_code == 200, response.text
            assert response.json()["usage"]["completion_tokens"] > 0
