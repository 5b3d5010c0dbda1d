"""QLoRA (lora.quantize = "4bit"): refused where it cannot work, in one line, before a model loads."""

import importlib.util
import sys

import pytest
import torch

from conftest import user_error
from rewardlab.config import DemoConfig, SFTConfig, TrainConfig, validated
from rewardlab.models import loading
from rewardlab.models.forward import TransformersForward, forward_for
from rewardlab.models.loading import LoraSettings, load_model
from rewardlab.runs import RunStore
from rewardlab.train.trainer import train

QLORA = LoraSettings(rank=4, alpha=8, quantize="4bit")


@pytest.fixture
def nothing_loads(monkeypatch):
    """A refusal must come before the weights are read."""

    def loaded(*args, **kwargs):
        raise AssertionError("from_pretrained was called before the refusal")

    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", loaded)


def test_full_fine_tuning_of_a_quantized_base_is_refused_when_the_config_is_read():
    for command, values in (
        (TrainConfig, {"lora": {"enabled": False, "quantize": "4bit"}}),
        (SFTConfig, {"lora": {"quantize": "4bit"}}),  # SFT trains every weight by default
        (DemoConfig, {"sft": {"lora": {"quantize": "4bit"}}}),
    ):
        message = user_error(validated, command, values)
        assert "quantize = '4bit' needs LoRA" in message and "no gradient" in message, message
    assert validated(TrainConfig, {"lora": {"quantize": "4bit"}}).lora.quantize == "4bit"
    assert "quantize" in user_error(validated, TrainConfig, {"lora": {"quantize": "3bit"}})


def test_on_a_cpu_it_is_refused_before_the_model_loads(monkeypatch, nothing_loads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = user_error(load_model, "tiny", "float32", "auto", QLORA, True)
    assert "needs a CUDA GPU" in message and "this machine has none" in message
    assert "lora.quantize = 'none'" in message  # what works instead


def test_a_cpu_device_is_refused_on_a_machine_with_a_gpu(monkeypatch, nothing_loads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    message = user_error(load_model, "tiny", "float32", "cpu", QLORA, True)
    assert "needs a CUDA GPU" in message and "model.device is 'cpu'" in message


def test_without_bitsandbytes_it_names_the_extra(monkeypatch, nothing_loads):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # `import bitsandbytes` raises ImportError
    message = user_error(load_model, "tiny", "float32", "cuda", QLORA, True)
    assert "needs bitsandbytes" in message and "pip install 'rewardlab[qlora]'" in message


def test_train_refuses_before_the_run_exists(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    config = validated(
        TrainConfig,
        {"runs_dir": str(tmp_path / "runs"), "max_steps": 1, "lora": {"quantize": "4bit"}},
    )
    store = RunStore(tmp_path / "runs")
    assert "needs a CUDA GPU" in user_error(train, config, store)
    assert store.list() == []


def test_a_quantized_model_runs_on_transformers_forward(tiny):
    """The fused forward concatenates weight matrices; 4-bit weights are packed codes, so it steps aside."""
    model, _ = tiny
    assert type(forward_for(model)) is not TransformersForward
    model.config.quantization_config = {"load_in_4bit": True, "bnb_4bit_quant_type": "nf4"}
    try:
        assert type(forward_for(model)) is TransformersForward
    finally:
        del model.config.quantization_config


@pytest.mark.skipif(
    not torch.cuda.is_available() or importlib.util.find_spec("bitsandbytes") is None,
    reason="QLoRA needs a CUDA GPU and bitsandbytes (pip install 'rewardlab[qlora]')",
)
def test_qlora_loads_the_base_in_4bit_and_trains_the_adapter():
    import bitsandbytes as bnb

    model, _ = load_model("tiny", "float32", "cuda", QLORA, trainable=True)
    quantized = [m for m in model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantized and all(m.weight.quant_type == "nf4" for m in quantized)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 for p in trainable)
    forward = forward_for(model)
    ids = torch.tensor([[5, 6, 7, 8, 9, 10]], device="cuda")
    logits = forward.suffix_logits(ids, torch.ones_like(ids), 2)
    logits.float().logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in trainable)
