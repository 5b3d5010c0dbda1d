"""Models: loading (any local, packaged or hub model, LoRA, dtypes), chat rendering and the tiny models.

Names are imported on first use, so that light commands (``rewardlab models list``) do not pay for
importing transformers.
"""

from importlib import import_module

_WHERE = {
    "ChatRenderer": "rewardlab.models.chat",
    "LoraSettings": "rewardlab.models.loading",
    "load_model": "rewardlab.models.loading",
    "load_tokenizer": "rewardlab.models.loading",
    "locate": "rewardlab.models.loading",
    "resolve": "rewardlab.models.loading",
    "TINY_MODELS": "rewardlab.models.tiny_specs",
    "build_tiny_model": "rewardlab.models.tiny",
    "build_tiny_tokenizer": "rewardlab.models.tiny",
    "save_tiny_model": "rewardlab.models.tiny",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'rewardlab.models' has no attribute '{name}'")
    return getattr(import_module(_WHERE[name]), name)
