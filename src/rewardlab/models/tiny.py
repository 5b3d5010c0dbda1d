"""Tiny models built locally: a character-level tokenizer and a small Llama or Qwen2 network.

They are real Hugging Face models (saved with ``save_pretrained``, loaded back with ``from_pretrained``),
just small enough to train on a laptop CPU in minutes. Nothing is downloaded: the weights are freshly
initialised from a seed, and the demo primes them with SFT before reinforcement learning.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from rewardlab.models.tiny_specs import (
    CHAT_TEMPLATE,
    EOS,
    PAD,
    ROLE_TOKENS,
    TAG_TOKENS,
    TINY_MODELS,
    UNK,
    VOCABULARY,
    TinySpec,
)


def build_tiny_tokenizer() -> PreTrainedTokenizerFast:
    """A character-level tokenizer with chat-role and answer-tag tokens and a chat template."""
    core = Tokenizer(models.WordLevel({token: i for i, token in enumerate(VOCABULARY)}, unk_token=UNK))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        additional_special_tokens=ROLE_TOKENS,
        padding_side="left",
        model_max_length=512,
    )
    # Tags are ordinary (non-special) tokens, so decoding keeps them in the text.
    tokenizer.add_tokens(TAG_TOKENS)
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_model(
    spec: TinySpec | str, tokenizer: PreTrainedTokenizerFast, seed: int = 0
) -> PreTrainedModel:
    """A freshly initialised network for ``tokenizer``; the same seed gives the same weights."""
    if isinstance(spec, str):
        spec = TINY_MODELS[spec]
    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_attention_heads,
        max_position_embeddings=spec.max_position_embeddings,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    if spec.architecture not in ("llama", "qwen2"):
        raise ValueError(f"unknown tiny architecture '{spec.architecture}'")
    # A private RNG state: building the model on first use must not reseed the caller's random stream
    # (a run that builds the model would otherwise sample differently from one that finds it cached).
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if spec.architecture == "llama":
            model = LlamaForCausalLM(LlamaConfig(**common))
        else:
            model = Qwen2ForCausalLM(Qwen2Config(**common))
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    return model


def save_tiny_model(name: str, path: str | Path, seed: int = 0) -> Path:
    """Build the named tiny model and tokenizer and save both to ``path`` (a normal HF directory)."""
    path = Path(path)
    tokenizer = build_tiny_tokenizer()
    model = build_tiny_model(TINY_MODELS[name], tokenizer, seed=seed)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    (path / "rewardlab_tiny.json").write_text(
        json.dumps({"name": name, "seed": seed, **asdict(TINY_MODELS[name])}, indent=2)
    )
    return path
