"""Exported adapters load back through peft with the same logits; scaffolded packages are discovered."""

import sys

import pytest
import torch

from rewardlab.envs import list_environments, load_environment
from rewardlab.envs.scaffold import scaffold
from rewardlab.errors import RewardlabError
from rewardlab.export import export_run
from rewardlab.models import LoraSettings, load_model


@pytest.fixture
def trained_adapter(tmp_path):
    """A LoRA adapter with visibly non-zero weights, saved like a train run's final/ directory."""
    model, tokenizer = load_model("tiny", lora=LoraSettings(rank=4))
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.3)
    run_dir = tmp_path / "train-run"
    model.save_pretrained(run_dir / "final")
    tokenizer.save_pretrained(run_dir / "final")
    (run_dir / "config.json").write_text("{}")  # a run directory carries its run config beside final/
    return run_dir, model


def test_export_adapter_and_merged_model_give_the_same_logits(tmp_path, trained_adapter):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    run_dir, model = trained_adapter
    result = export_run(str(run_dir), tmp_path / "out", merge=True, name="tuned")
    ids = torch.tensor([[5, 9, 14, 30, 31]])
    with torch.no_grad():
        expected = model(ids).logits
        base = AutoModelForCausalLM.from_pretrained(result.base_model)
        reloaded = PeftModel.from_pretrained(base, result.adapter_dir)
        assert torch.allclose(reloaded(ids).logits, expected, atol=1e-5)
        merged = AutoModelForCausalLM.from_pretrained(result.merged_dir)
        assert torch.allclose(merged(ids).logits, expected, atol=1e-4)
    [adapter_cmd, merged_cmd] = result.vllm_commands()
    assert f"--lora-modules tuned={result.adapter_dir}" in adapter_cmd and "--enable-lora" in adapter_cmd
    assert merged_cmd.startswith(f"vllm serve {result.merged_dir}")


def test_export_refuses_full_models_and_non_empty_targets(tmp_path, trained_adapter):
    with pytest.raises(RewardlabError, match="holds no LoRA adapter"):
        export_run("tiny", tmp_path / "x")
    run_dir, _ = trained_adapter
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file").write_text("x")
    with pytest.raises(RewardlabError, match="is not empty"):
        export_run(str(run_dir), tmp_path / "busy")


def test_scaffolded_package_is_discovered_through_its_entry_point(tmp_path, monkeypatch):
    root = scaffold("word-double", tmp_path)
    assert (root / "pyproject.toml").read_text().count('word-double = "word_double:load_environment"') == 1
    # What `pip install` would leave behind: the module importable and a dist-info with the entry point.
    dist_info = tmp_path / "site" / "rewardlab_env_word_double-0.1.0.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: rewardlab-env-word-double\nVersion: 0.1.0\n"
    )
    (dist_info / "entry_points.txt").write_text(
        "[rewardlab.environments]\nword-double = word_double:load_environment\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(root))
    env = load_environment("word-double", num_train=10, num_eval=5)
    assert len(env.examples("train")) == 10 and env.name == "word-double"
    assert list_environments()["word-double"].startswith("word-double: one line that says what the task is")
    sys.modules.pop("word_double", None)


def test_scaffold_rejects_bad_names_and_existing_dirs(tmp_path):
    with pytest.raises(RewardlabError, match="must start with a letter"):
        scaffold("9lives", tmp_path)
    scaffold("ok", tmp_path)
    with pytest.raises(RewardlabError, match="already exists"):
        scaffold("ok", tmp_path)
