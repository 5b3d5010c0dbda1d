"""Which model a name means: Hub ids with dots, a Hub out of reach said in one line at once, adapters that
record their base (by absolute path and fingerprint), served only on that base, and exports that load from
any directory."""

import json
import shutil
import socket
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.errors import ModelLoadError, RewardlabError
from rewardlab.export import export_run
from rewardlab.models import LoraSettings, load_model, resolve
from rewardlab.models.adapters import BASE_RECORD, check_base
from rewardlab.models.loading import tiny_model_path
from rewardlab.serve import build_engine
from rewardlab.serve.registry import ServedModels
from rewardlab.train.checkpoint import save_weights

runner = CliRunner()


def one_line_error(args) -> str:
    result = runner.invoke(app, args)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


# -- Hub names ----------------------------------------------------------------------------------------------


def test_a_hub_id_with_dots_is_not_taken_for_a_missing_local_path(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        resolve("Qwen/Qwen2.5-0.5B-Instruct")
    assert time.perf_counter() - started < 1.0
    message = str(caught.value)
    assert "model path does not exist" not in message and "\n" not in message
    assert "HF_HUB_OFFLINE is set" in message and "tiny, tiny-qwen2, tiny-25m" in message
    assert str(Path("Qwen/Qwen2.5-0.5B-Instruct").resolve()) in message
    line = one_line_error(["eval", "--model", "Qwen/Qwen2.5-0.5B-Instruct", "--runs-dir", str(tmp_path)])
    assert "cannot be reached" in line


def test_an_unreachable_hub_is_one_line_at_once(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with socket.socket() as closed:  # a port nothing listens on: the probe is refused at once
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    started = time.perf_counter()
    with pytest.raises(ModelLoadError, match=f"no answer from http://127.0.0.1:{port} within"):
        resolve("someone/no-such-model")
    assert time.perf_counter() - started < 3.5


def test_a_cached_hub_model_loads_when_the_hub_is_out_of_reach(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path))
    repo = tmp_path / "models--someone--tiny.v1"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    shutil.copytree(tiny_model_path("tiny"), repo / "snapshots" / "abc123")
    base, adapter = resolve("someone/tiny.v1")
    assert base == str(repo / "snapshots" / "abc123") and adapter is None
    model, _ = load_model("someone/tiny.v1")
    assert model.config.hidden_size == 128


def test_a_missing_local_path_is_still_named_as_one():
    with pytest.raises(ModelLoadError, match="model path does not exist: ./nope/model"):
        resolve("./nope/model")


# -- adapters and their base --------------------------------------------------------------------------------


def primed_model(directory: Path) -> Path:
    """A full model of the tiny shape with other weights, as an SFT run leaves in its model/ directory."""
    model, tokenizer = load_model("tiny")
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def adapter_on(base: str, directory: Path) -> Path:
    """A LoRA adapter trained (here: perturbed) on ``base``, saved as a train run saves it."""
    model, tokenizer = load_model(base, lora=LoraSettings(rank=4))
    torch.manual_seed(1)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            parameter.data.normal_(0, 0.3)
    save_weights(directory, model, tokenizer)
    return directory


@pytest.fixture(scope="module")
def primed_and_adapter(tmp_path_factory):
    root = tmp_path_factory.mktemp("identity")
    primed = primed_model(root / "sft-run" / "model")
    adapter = adapter_on(str(primed), root / "train-run" / "final")
    (root / "train-run" / "config.json").write_text("{}")
    return root, primed, adapter


def test_an_adapter_records_its_base_by_absolute_path_and_fingerprint(primed_and_adapter):
    _, primed, adapter = primed_and_adapter
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(primed.resolve())
    record = json.loads((adapter / BASE_RECORD).read_text())
    assert record["base_model"] == str(primed.resolve()) and len(record["fingerprint"]) == 64


def test_serving_an_adapter_on_another_base_is_refused_in_one_line(primed_and_adapter, tmp_path):
    root, primed, _ = primed_and_adapter
    # The README's old line: the adapter of a run primed by SFT, put on the plain tiny model.
    line = one_line_error(
        ["serve", "--model", "tiny", "--adapter", f"tuned={root / 'train-run'}", "--port", "0"]
    )
    assert f"was trained on {primed.resolve()}, not on the served model 'tiny' (" in line
    assert str(tiny_model_path("tiny")) in line
    with pytest.raises(RewardlabError, match="not on the served model"):
        build_engine("tiny", {"tuned": str(root / "train-run")})
    # On its own base it serves, and so it does on a copy of that base (same fingerprint, other path).
    copy = shutil.copytree(primed, tmp_path / "copy-of-primed")
    for base in (str(primed), str(copy)):
        engine = build_engine(base, {"tuned": str(root / "train-run")})
        assert engine.models.names == [base, "tuned"] and not engine.models.warnings


def test_the_fingerprint_still_identifies_a_base_that_moved(primed_and_adapter, tmp_path):
    _, primed, adapter = primed_and_adapter
    moved_adapter = shutil.copytree(adapter, tmp_path / "adapter")
    config = json.loads((moved_adapter / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = str(tmp_path / "gone")  # the base is no longer where it was
    (moved_adapter / "adapter_config.json").write_text(json.dumps(config))
    assert check_base(moved_adapter, str(primed)) is None
    with pytest.raises(ModelLoadError, match="not on the served model"):
        check_base(moved_adapter, str(tiny_model_path("tiny")))


def test_an_adapter_that_names_no_base_is_served_with_a_warning(primed_and_adapter, tmp_path):
    _, primed, adapter = primed_and_adapter
    nameless = shutil.copytree(adapter, tmp_path / "nameless")
    config = json.loads((nameless / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = None
    (nameless / "adapter_config.json").write_text(json.dumps(config))
    (nameless / BASE_RECORD).unlink()
    model, tokenizer = load_model(str(primed))
    served = ServedModels(model, tokenizer, "primed")
    served.load("tuned", str(nameless))
    assert served.names == ["primed", "tuned"]
    [warning] = served.warnings
    assert "does not name its base model" in warning and str(primed.resolve()) in warning
    with pytest.raises(ModelLoadError, match="does not name its base model"):
        resolve(str(nameless))  # on its own it cannot be loaded: there is nothing to put it on


def test_a_port_in_use_is_one_line_before_anything_loads():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.perf_counter()
        line = one_line_error(["serve", "--model", "tiny", "--port", str(port)])
    assert f"cannot listen on 127.0.0.1:{port}: Address already in use; choose another --port" in line
    assert time.perf_counter() - started < 1.0


# -- exports ------------------------------------------------------------------------------------------------


def test_an_export_loads_from_another_directory(tmp_path, monkeypatch):
    """Trained from a relative path in one directory, exported and loaded from another."""
    workdir, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    workdir.mkdir(), elsewhere.mkdir()
    monkeypatch.chdir(workdir)
    primed_model(Path("runs/sft-run/model"))
    adapter = adapter_on("runs/sft-run", Path("runs/train-run/final"))
    # An adapter written before bases were recorded absolutely: its base relative to the working directory.
    legacy = shutil.copytree(adapter, Path("legacy/final"))
    (legacy / BASE_RECORD).unlink()
    config = json.loads((legacy / "adapter_config.json").read_text())
    (legacy / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "runs/sft-run/model"})
    )
    exports = [export_run(str(path), workdir / f"out-{i}") for i, path in enumerate((adapter, legacy))]
    monkeypatch.chdir(elsewhere)
    ids = torch.tensor([[5, 9, 14, 30, 31]])
    logits = []
    for result in exports:
        config = json.loads((result.adapter_dir / "adapter_config.json").read_text())
        assert config["base_model_name_or_path"] == str(workdir / "runs/sft-run/model")
        model, _ = load_model(str(result.adapter_dir))
        with torch.no_grad():
            logits.append(model(ids).logits)
    assert torch.allclose(logits[0], logits[1])


def test_adapters_on_hub_models_are_checked_by_id(primed_and_adapter, tmp_path):
    _, _, adapter = primed_and_adapter
    on_hub = shutil.copytree(adapter, tmp_path / "on-hub")
    (on_hub / BASE_RECORD).unlink()
    config = json.loads((on_hub / "adapter_config.json").read_text())
    (on_hub / "adapter_config.json").write_text(
        json.dumps({**config, "base_model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"})
    )
    assert check_base(on_hub, "Qwen/Qwen2.5-0.5B-Instruct") is None
    with pytest.raises(
        ModelLoadError, match="trained on Qwen/Qwen2.5-0.5B-Instruct, not on the served model"
    ):
        check_base(on_hub, "Qwen/Qwen2.5-1.5B-Instruct")
    warning = check_base(on_hub, str(tiny_model_path("tiny")))  # its base is not here to compare with
    assert "not here to compare" in warning
