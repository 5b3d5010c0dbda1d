from rewardlab.models.chat import ChatRenderer
from rewardlab.models.loading import LoraSettings, load_model, load_tokenizer, locate, resolve
from rewardlab.models.tiny import TINY_MODELS, build_tiny_model, build_tiny_tokenizer, save_tiny_model

__all__ = [
    "TINY_MODELS",
    "ChatRenderer",
    "LoraSettings",
    "build_tiny_model",
    "build_tiny_tokenizer",
    "load_model",
    "load_tokenizer",
    "locate",
    "resolve",
    "save_tiny_model",
]
