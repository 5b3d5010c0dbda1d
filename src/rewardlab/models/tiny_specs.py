"""What the tiny models are, without building one: their specs, vocabulary and chat template, and their
parameter counts by arithmetic. Light to import (no torch, no transformers), so listing models is quick;
:mod:`rewardlab.models.tiny` builds them."""

from __future__ import annotations

from dataclasses import dataclass

PAD, EOS, UNK = "<pad>", "<|end|>", "<unk>"
ROLE_TOKENS = ["<|system|>", "<|user|>", "<|assistant|>", "<|tool|>"]
# Tags that reward functions look for become single tokens: shorter sequences, easier to learn.
TAG_TOKENS = ["<answer>", "</answer>", "<think>", "</think>", "<tool>", "</tool>"]
CHARACTERS = ["\n"] + [chr(i) for i in range(32, 127)]

# ChatML-like, without newlines: every role marker is one token and <|end|> closes a turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}<|end|>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    architecture: str  # "llama" or "qwen2"
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    max_position_embeddings: int = 512


TINY_MODELS: dict[str, TinySpec] = {
    # ~0.87M parameters: the demo and test default.
    "tiny": TinySpec("llama", 128, 384, 4, 4),
    "tiny-qwen2": TinySpec("qwen2", 128, 384, 4, 4),
    # ~25M parameters: big enough that matrix work, not Python, dominates a step.
    "tiny-25m": TinySpec("llama", 512, 1408, 8, 8),
}


# Every token of the character tokenizer, in id order.
VOCABULARY = [PAD, EOS, UNK, *ROLE_TOKENS, *TAG_TOKENS, *CHARACTERS]


def parameters_of_spec(spec: TinySpec) -> int:
    """Parameters of the model ``spec`` builds: tied embeddings, four square attention projections (as many
    key/value heads as query heads; Qwen2 adds biases to q, k and v), a gated MLP and two norms a layer,
    and a final norm. Tested equal to counting a model built on the meta device."""
    hidden, inter = spec.hidden_size, spec.intermediate_size
    biases = 3 * hidden if spec.architecture == "qwen2" else 0
    layer = 4 * hidden * hidden + biases + 3 * hidden * inter + 2 * hidden
    return len(VOCABULARY) * hidden + spec.num_hidden_layers * layer + hidden
