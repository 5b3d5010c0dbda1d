"""Exporting a trained run for serving elsewhere.

``export_run`` writes the run's adapter in PEFT format (what ``vllm serve --enable-lora --lora-modules``
loads) with its tokenizer and, with ``merge=True``, a merged full model (base + adapter folded into the
weights) that any Hugging Face loader or ``vllm serve`` takes as a plain model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rewardlab.errors import RewardlabError
from rewardlab.models.adapters import ADAPTER_CONFIG, BASE_RECORD, write_base_record
from rewardlab.models.loading import load_model, locate, resolve


@dataclass
class Export:
    adapter_dir: Path | None
    merged_dir: Path | None
    base_model: str
    name: str

    def vllm_commands(self) -> list[str]:
        commands = []
        if self.adapter_dir is not None:
            commands.append(
                f"vllm serve {self.base_model} --enable-lora --max-lora-rank {self._rank()} "
                f"--lora-modules {self.name}={self.adapter_dir}"
            )
        if self.merged_dir is not None:
            commands.append(f"vllm serve {self.merged_dir} --served-model-name {self.name}")
        return commands

    def _rank(self) -> int:
        config = json.loads((self.adapter_dir / "adapter_config.json").read_text())
        return max(16, int(config.get("r", 16)))  # vLLM's default limit is 16


def export_run(
    model: str,
    out_dir: str | Path | None,
    merge: bool = False,
    name: str = "tuned",
    runs_dir: str | Path | None = None,
) -> Export:
    """Export ``model`` (a run directory or an adapter directory; with ``runs_dir``, a run id too) into
    ``out_dir``."""
    if out_dir is None:
        raise RewardlabError("export needs a directory to write: --out DIR")
    if runs_dir is not None:
        model = locate(model, runs_dir, run_only=True)
    base, adapter = resolve(model)
    if adapter is None:
        raise RewardlabError(
            f"'{model}' holds no LoRA adapter to export (it is a full model: serve it directly)"
        )
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise RewardlabError(f"export directory {out} is not empty")
    adapter_out = out / "adapter"
    shutil.copytree(adapter, adapter_out)
    # The copy names its base by absolute path (older runs recorded one relative to where training ran),
    # so the export loads from any directory; the fingerprint still identifies the base if it moves.
    config_path = adapter_out / ADAPTER_CONFIG
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = base
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    if not (adapter_out / BASE_RECORD).exists():
        write_base_record(adapter_out, base)
    merged_out = merge_adapter(model, out / "merged") if merge else None
    return Export(adapter_out, merged_out, base, name)


def merge_adapter(model: str, out_dir: str | Path, dtype: str = "float32") -> Path:
    """``model`` (an adapter directory or a run holding one) with its adapter folded into the base weights,
    saved with its tokenizer as a plain model directory."""
    peft_model, tokenizer = load_model(model, dtype=dtype)
    merged = peft_model.merge_and_unload()
    merged.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)
