import os
from pathlib import Path

# pytest-xdist's workers start with COLUMNS=80, which rich reads once, when the shared console is made: a
# width fixed there would ignore the COLUMNS a test gives its CLI invocation.
os.environ.pop("COLUMNS", None)

import pytest

from rewardlab.errors import RewardlabError

# Where `make test` (and `rewardlab models fetch`) put real models, read before the session points the cache
# at a private directory: the real-model smoke test looks there.
USER_CACHE = Path(os.environ.get("REWARDLAB_CACHE", Path.home() / ".cache" / "rewardlab"))

# Tests never touch the network and never draw progress bars.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ["REWARDLAB_QUIET"] = "1"


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: takes 10 s or more (processes, a whole demo, a browser, the real model); runs first"
    )


def pytest_collection_modifyitems(items):
    """The slow tests first, each module's in their own order: two workers that start with the long ones end
    together, where one that drew a 40-second test last would leave the other idle."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session", autouse=True)
def model_cache(tmp_path_factory):
    """Tiny models are built once per session into a private cache."""
    path = tmp_path_factory.mktemp("model-cache")
    os.environ["REWARDLAB_CACHE"] = str(path)
    return path


@pytest.fixture(scope="session")
def tiny():
    """(model, tokenizer) of the built-in tiny model, frozen."""
    from rewardlab.models import load_model

    return load_model("tiny")


def with_lora(model, seed=1):
    """A LoRA adapter on every linear layer, with B perturbed so the adapter changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.05)
    return model


def user_error(call, *args) -> str:
    """The message of the user error ``call(*args)`` raises, checked to be one printable line."""
    with pytest.raises(RewardlabError) as caught:
        call(*args)
    message = str(caught.value)
    assert len(message.splitlines()) == 1, repr(message)
    message.encode("utf-8")
    return message


def record_fsyncs(monkeypatch) -> list[str]:
    """Patch ``os.fsync`` to note the path behind every descriptor it flushes, in order, and still flush."""
    paths: list[str] = []
    real_fsync = os.fsync

    def recorded_fsync(fd):
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recorded_fsync)
    return paths
