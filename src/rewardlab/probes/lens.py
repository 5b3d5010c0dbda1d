"""The logit lens: what each layer would predict if the network stopped there.

One forward pass keeps every layer's hidden state (the embeddings, then each block's output); each is put
through the model's own final norm and LM head, exactly as the last block's output is, so the last row of
the lens *is* the model's prediction and earlier rows show how it forms with depth.

The last entry of transformers' ``hidden_states`` is already normed (the model applies its final norm before
recording it) while the others are the raw residual stream, so the last block's raw output is taken from the
final norm's input instead: every layer then goes through the norm exactly once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rewardlab.errors import RewardlabError
from rewardlab.models.chat import ChatRenderer
from rewardlab.probes.inputs import checked_prompt, load_probe_model, render_prompt, token_text

NORM_NAMES = ("norm", "final_layernorm", "ln_f", "final_layer_norm", "norm_f")


@dataclass
class LensRow:
    """One layer at one position: its top tokens, and the answer token's rank and probability there."""

    layer: int  # 0: the embeddings; i: the output of block i
    name: str
    top: list[tuple[int, str, float]]  # (token id, token text, probability), likeliest first
    answer_rank: int | None = None  # 1: the likeliest token
    answer_prob: float | None = None
    answer_logprob: float | None = None


@dataclass
class LensPosition:
    index: int  # into the prompt's ids
    offset: int  # the same, counted from the end (-1: the last token)
    token: str  # the input token at that position: the lens reads what comes after it
    rows: list[LensRow] = field(default_factory=list)


@dataclass
class LogitLens:
    model: str
    prompt: str  # as the model saw it (rendered with the chat template unless raw)
    num_tokens: int
    prompt_ids: list[int]
    answer: str | None
    answer_id: int | None
    answer_token: str | None
    positions: list[LensPosition]
    compare: LogitLens | None = None  # a second model (base against tuned) on the very same tokens

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def models(self) -> list[LogitLens]:
        """This lens, then the compared model's, if any."""
        return [self] if self.compare is None else [self, self.compare]


def parse_positions(text: str) -> list[int]:
    """``"-1,-2"`` -> ``[-1, -2]``: prompt positions, negative ones counted from the end."""
    try:
        positions = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise RewardlabError(
            f"--positions must be integers separated by commas (like -1,-2), got {text!r}"
        ) from None
    if not positions:
        raise RewardlabError("--positions names no position: give one or more, like -1,-2")
    return positions


def final_norm(model) -> torch.nn.Module:
    """The norm the model applies before its LM head (Llama and Qwen2: ``model.norm``; GPT-2: ``ln_f``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder() if hasattr(base, "get_decoder") else getattr(base, "model", base)
    for holder in (decoder, base):
        for name in NORM_NAMES:
            module = getattr(holder, name, None)
            if isinstance(module, torch.nn.Module):
                return module
    raise RewardlabError(
        f"cannot find the final norm of {type(base).__name__} (looked for {', '.join(NORM_NAMES)})"
    )


@torch.inference_mode()
def lens_logits(model, input_ids: list[int], positions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(lens, final)``: float32 logits of every layer at ``positions``, shape (layers + 1, positions,
    vocab), and the model's own logits there, (positions, vocab). The lens's last layer equals the latter."""
    norm, head = final_norm(model), model.get_output_embeddings()
    captured: list[torch.Tensor] = []
    hook = norm.register_forward_hook(lambda _module, args, _output: captured.append(args[0]))
    try:
        device = next(model.parameters()).device
        out = model(torch.tensor([input_ids], device=device), output_hidden_states=True, use_cache=False)
    finally:
        hook.remove()
    # The norm's input is the last block's raw output; the recorded last hidden state is already normed.
    streams = [*out.hidden_states[:-1], captured[-1]]
    at = torch.tensor(positions, device=device)
    hidden = torch.stack([stream[0, at] for stream in streams])  # (layers + 1, positions, hidden)
    return head(norm(hidden)).float(), out.logits[0, at].float()


def answer_token(tokenizer, prompt_text: str, prompt_ids: list[int], answer: str) -> int:
    """The first token of ``answer`` as it would follow the prompt (a tokenizer may merge a leading space or
    newline into it), or, when the prompt's own ids change with the answer after them, of the answer alone."""
    renderer = ChatRenderer(tokenizer)
    joined = renderer.encode(prompt_text + answer) if answer else []
    if joined[: len(prompt_ids)] == prompt_ids and len(joined) > len(prompt_ids):
        return joined[len(prompt_ids)]
    alone = renderer.encode(answer) if answer else []
    if not alone:
        raise RewardlabError(
            f"the answer {answer!r} tokenizes to nothing: give the text the model should say"
        )
    return alone[0]


def absolute_positions(positions: list[int], length: int) -> list[int]:
    out = []
    for position in positions:
        if not -length <= position < length:
            raise RewardlabError(
                f"position {position} is outside the prompt's {length} tokens (use {-length}..{length - 1})"
            )
        out.append(position % length)
    return out


def read_lens(
    model, tokenizer, prompt: str, *, answer: str | None = None, positions: Sequence[int] = (-1,),
    top_k: int = 5, raw: bool = False, model_name: str = "",
) -> LogitLens:  # fmt: skip
    """The logit lens of ``model`` on ``prompt`` at ``positions`` (of the rendered prompt's tokens)."""
    if top_k < 1:
        raise RewardlabError(f"--top-k must be at least 1, got {top_k}")
    text, ids = render_prompt(tokenizer, prompt, raw=raw)
    at = sorted(set(absolute_positions(list(positions), len(ids))))  # in reading order
    answer_id = None if answer is None else answer_token(tokenizer, text, ids, answer)
    lens, _ = lens_logits(model, ids, at)
    logprobs = torch.log_softmax(lens, dim=-1)
    top = torch.topk(logprobs, k=min(top_k, logprobs.shape[-1]), dim=-1)
    result = LogitLens(
        model=model_name,
        prompt=text,
        num_tokens=len(ids),
        prompt_ids=ids,
        answer=answer,
        answer_id=answer_id,
        answer_token=None if answer_id is None else token_text(tokenizer, answer_id),
        positions=[LensPosition(i, i - len(ids), token_text(tokenizer, ids[i])) for i in at],
    )
    for layer in range(lens.shape[0]):
        for p, position in enumerate(result.positions):
            row = LensRow(layer, "embed" if layer == 0 else str(layer), [])
            ranked = zip(top.indices[layer, p].tolist(), top.values[layer, p].tolist(), strict=True)
            for token_id, logprob in ranked:
                row.top.append((token_id, token_text(tokenizer, token_id), math.exp(logprob)))
            if answer_id is not None:
                scores = logprobs[layer, p]
                row.answer_logprob = float(scores[answer_id])
                row.answer_prob = float(scores[answer_id].exp())
                row.answer_rank = int((scores > scores[answer_id]).sum()) + 1
            position.rows.append(row)
    return result


def logit_lens(
    model_name: str, prompt: str, *, answer: str | None = None, positions: Sequence[int] = (-1,),
    top_k: int = 5, raw: bool = False, dtype: str = "float32", runs_dir: str | Path = "runs",
    compare_model: str | None = None,
) -> LogitLens:  # fmt: skip
    """``rewardlab probe logit-lens``: the model loaded by name, then :func:`read_lens`; with
    ``compare_model`` the second model's lens on the same prompt (see :func:`compare_lens`)."""
    checked_prompt(prompt)  # before a model loads
    lenses = []
    for name in [model_name] if compare_model is None else [model_name, compare_model]:
        model, tokenizer = load_probe_model(name, dtype=dtype, runs_dir=runs_dir)
        lenses.append(read_lens(
            model, tokenizer, prompt, answer=answer, positions=positions, top_k=top_k, raw=raw,
            model_name=name,
        ))  # fmt: skip
        del model
    return lenses[0] if compare_model is None else compare_lens(*lenses)


def compare_lens(first: LogitLens, second: LogitLens) -> LogitLens:
    """``first`` with ``second`` beside it, once they are known to read the same tokens: base against tuned
    only means something when both saw the same prompt ids and look for the same answer token."""
    if first.prompt_ids != second.prompt_ids:
        raise RewardlabError(
            f"{second.model} reads the prompt as different tokens from {first.model}: the lens compares "
            "models that share a tokenizer and chat template (a base and its tuned adapter)"
        )
    if first.answer_id != second.answer_id:
        raise RewardlabError(
            f"the answer's first token differs between {first.model} and {second.model}: "
            "their tokenizers differ"
        )
    first.compare = second
    return first
