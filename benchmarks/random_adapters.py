"""LoRA adapters made for a benchmark run: rank 16 on every linear layer, B drawn at random (N(0, 0.02), a
seed per adapter) so each answers differently from the base and from the others.

Shared by ``bench_continuous.py`` and ``bench_batched_lora.py`` (run as scripts, so this directory is on
``sys.path``).
"""

from __future__ import annotations

from pathlib import Path


def make_adapters(model: str, directory: Path, names: tuple[str, ...] = ("one", "two")) -> dict[str, str]:
    """{name: adapter directory} under ``directory``, adapter ``i`` (from 1) seeded with ``i``."""
    import torch

    from rewardlab.models import LoraSettings, load_model

    made = {}
    for seed, name in enumerate(names, start=1):
        torch.manual_seed(seed)
        peft_model, _ = load_model(model, lora=LoraSettings(rank=16))
        for parameter_name, parameter in peft_model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.data.normal_(0, 0.02)
        peft_model.save_pretrained(directory / name)
        made[name] = str(directory / name)
    return made
