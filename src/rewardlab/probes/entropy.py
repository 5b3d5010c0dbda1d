"""Token entropy along completions, and the "forking" tokens where it is high.

Most tokens of a reasoning model's completion are nearly determined; a minority, where the next-token
distribution is spread out, decide which way the completion goes. Those are the tokens reinforcement
learning changes most, so they are worth looking at before and after training.

A completion (freshly sampled, or a run's stored rollout) is teacher-forced through the model in one
forward pass over prompt + completion: the logits at position ``t - 1`` are the distribution that token
``t`` was drawn from, and their entropy (at the sampling temperature, as the trainer's ``entropy`` metric)
is the token's. A second model can score the very same tokens, which shows where training moved it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from rewardlab.console import progress
from rewardlab.errors import RewardlabError
from rewardlab.models.chat import ChatRenderer
from rewardlab.probes.inputs import (
    checked_prompt,
    load_probe_model,
    load_probe_tokenizer,
    render_prompt,
    token_text,
)
from rewardlab.train.grpo import token_entropy

DIFFERENCES_SHOWN = 10


@dataclass
class Completion:
    """Ids to teacher-force: ``mask`` is 1 on tokens the model wrote, 0 on an environment's replies."""

    label: str
    prompt: str  # the last user message, for tables
    prompt_ids: list[int]
    ids: list[int]
    mask: list[int]


@dataclass
class TokenEntropy:
    id: int
    piece: str  # the decoded text, as it sits in the completion
    label: str  # the same, readable on its own (whitespace escaped)
    entropy: float  # nats
    logprob: float  # of this token, under the model
    forking: bool = False
    compare_entropy: float | None = None


@dataclass
class Trace:
    """One model turn of one completion, token by token."""

    label: str
    prompt: str
    tokens: list[TokenEntropy] = field(default_factory=list)


@dataclass
class Difference:
    """A token where the two models' entropies differ most."""

    trace: int
    index: int
    token: str
    entropy: float
    compare_entropy: float


@dataclass
class EntropyProbe:
    model: str
    compare_model: str | None
    temperature: float
    forking_share: float | None  # the top share marked, or None when an absolute threshold was given
    threshold: float  # nats: tokens at or above it are forking
    traces: list[Trace]
    differences: list[Difference] = field(default_factory=list)

    @property
    def tokens(self) -> list[TokenEntropy]:
        return [token for trace in self.traces for token in trace.tokens]

    @property
    def mean_entropy(self) -> float:
        return _mean([token.entropy for token in self.tokens])

    @property
    def compare_mean_entropy(self) -> float | None:
        if self.compare_model is None:
            return None
        return _mean([token.compare_entropy for token in self.tokens if token.compare_entropy is not None])

    @property
    def share_forking(self) -> float:
        tokens = self.tokens
        return sum(token.forking for token in tokens) / len(tokens) if tokens else 0.0

    def to_dict(self) -> dict:
        return {
            **asdict(self),
            "num_tokens": len(self.tokens),
            "mean_entropy": self.mean_entropy,
            "compare_mean_entropy": self.compare_mean_entropy,
            "share_forking": self.share_forking,
        }


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else float("nan")


# -- scoring -------------------------------------------------------------------------------------------


@torch.inference_mode()
def teacher_forced(
    model, prompt_ids: list[int], ids: list[int], temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(entropy, logprob)`` of each of ``ids`` after ``prompt_ids``, in one forward pass: the entropy of
    the distribution it was drawn from (nats, logits divided by ``temperature``) and its own log-prob."""
    device = next(model.parameters()).device
    sequence = torch.tensor([list(prompt_ids) + list(ids)], device=device)
    logits = model(sequence, use_cache=False).logits[:, len(prompt_ids) - 1 : -1].float() / temperature
    entropy = token_entropy(logits)[0]
    logprob = torch.log_softmax(logits[0], dim=-1).gather(-1, sequence[:, len(prompt_ids) :].T)[:, 0]
    return entropy.cpu(), logprob.cpu()


def score(model, tokenizer, completions: list[Completion], temperature: float, what: str) -> list[Trace]:
    """Every completion teacher-forced; each of its model turns a :class:`Trace`."""
    traces: list[Trace] = []
    with progress(what, len(completions)) as advance:
        for completion in completions:
            entropy, logprob = teacher_forced(model, completion.prompt_ids, completion.ids, temperature)
            turns = _turns(completion.mask)
            for turn, (start, end) in enumerate(turns):
                label = completion.label if len(turns) == 1 else f"{completion.label} turn {turn + 1}"
                trace = Trace(label, completion.prompt)
                for i in range(start, end):
                    token_id = completion.ids[i]
                    piece = tokenizer.decode([token_id], skip_special_tokens=False)
                    label_text = token_text(tokenizer, token_id)
                    trace.tokens.append(
                        TokenEntropy(token_id, piece, label_text, float(entropy[i]), float(logprob[i]))
                    )
                traces.append(trace)
            advance()
    return traces


def _turns(mask: list[int]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of 1s in ``mask``: the model's turns."""
    runs, start = [], None
    for i, value in enumerate([*mask, 0]):
        if value and start is None:
            start = i
        elif not value and start is not None:
            runs.append((start, i))
            start = None
    return runs


def mark_forking(traces: list[Trace], share: float | None = 0.2, threshold: float | None = None) -> float:
    """Mark the forking tokens over all traces together: the ``share`` with the highest entropy (exactly
    ``round(share * n)`` of them, at least one; ties broken by order), or with ``threshold`` every token at
    or above it. Returns the threshold in nats (the lowest forking entropy when chosen by share)."""
    tokens = [token for trace in traces for token in trace.tokens]
    if threshold is not None:
        for token in tokens:
            token.forking = token.entropy >= threshold
        return threshold
    if share is None or not 0 < share <= 1:
        raise RewardlabError(f"--forking-share must be above 0 and at most 1, got {share}")
    if not tokens:
        return float("nan")
    ranked = sorted(range(len(tokens)), key=lambda i: -tokens[i].entropy)
    chosen = ranked[: max(1, round(share * len(tokens)))]
    for i in chosen:
        tokens[i].forking = True
    return tokens[chosen[-1]].entropy


def compare_with(model, tokenizer, completions, traces, temperature: float) -> list[Difference]:
    """The second model's entropy on every token of ``traces`` (which :func:`score` made from
    ``completions``), and the tokens where the two differ most."""
    scored = score(model, tokenizer, completions, temperature, "second model")
    for trace, other in zip(traces, scored, strict=True):
        for token, theirs in zip(trace.tokens, other.tokens, strict=True):
            token.compare_entropy = theirs.entropy
    differences = [
        Difference(t, i, token.label, token.entropy, token.compare_entropy)
        for t, trace in enumerate(traces)
        for i, token in enumerate(trace.tokens)
    ]
    differences.sort(key=lambda d: -abs(d.entropy - d.compare_entropy))
    return differences[:DIFFERENCES_SHOWN]


def same_vocabulary(tokenizer, other, name: str, other_name: str) -> None:
    if tokenizer.get_vocab() != other.get_vocab():
        raise RewardlabError(
            f"--compare-model {other_name} has another tokenizer than {name}: the two cannot score the same "
            "tokens"
        )


# -- completions ---------------------------------------------------------------------------------------


def sampled(
    model, tokenizer, prompts: list[str], *, samples: int, max_new_tokens: int, temperature: float,
    seed: int, raw: bool = False,
) -> list[Completion]:  # fmt: skip
    """``samples`` fresh completions of each prompt, drawn by the project's sampler as ``eval`` draws them."""
    from rewardlab.sampling.base import Prompt, SamplingParams
    from rewardlab.sampling.local import LocalSampler

    sampler = LocalSampler(model, tokenizer)
    params = SamplingParams(n=samples, temperature=temperature, max_new_tokens=max_new_tokens, seed=seed)
    completions = []
    with progress("sampling", len(prompts)) as advance:
        for p, text in enumerate(prompts):
            _, ids = render_prompt(tokenizer, text, raw=raw)
            [generations] = sampler.generate([Prompt([{"role": "user", "content": text}], ids)], params)
            for s, generation in enumerate(generations):
                label = f"prompt {p + 1} sample {s + 1}" if len(prompts) > 1 else f"sample {s + 1}"
                ids_out = list(generation.token_ids or [])
                completions.append(Completion(label, text, ids, ids_out, [1] * len(ids_out)))
            advance()
    return completions


def stored(tokenizer, run: str, samples: int, runs_dir: str | Path = "runs") -> list[Completion]:
    """The last ``samples`` stored rollouts of ``run`` that hold a model reply, as ids to teacher-force.

    The store keeps text, not ids: the prompt is rendered as the sampler renders it, each assistant turn
    tokenized afresh and each environment reply placed after it as the rollout placed it. A tokenizer can
    split a text otherwise than the model once wrote it, rarely, so a token's entropy is that of the
    tokenization read back.
    """
    from rewardlab.runs import RunStore

    store = RunStore(runs_dir)
    found = store.get(run)
    rows = [row for row in store.rollouts(found.id) if _has_reply(row.get("completion"))]
    if not rows:
        raise RewardlabError(f"run {found.id} has no stored rollouts with a model reply to probe")
    renderer = ChatRenderer(tokenizer)
    completions = []
    for row in rows[-samples:]:
        prompt = list(row["prompt"])
        ids, mask = _rollout_ids(renderer, prompt, list(row["completion"]))
        label = f"{row['phase']} step {row['step']} example {row['example_id']} #{row['sample_index']}"
        user = next((m["content"] for m in reversed(prompt) if m.get("role") == "user"), "")
        completions.append(Completion(label, user, renderer.prompt_ids(prompt), ids, mask))
    return completions


def _has_reply(completion) -> bool:
    return isinstance(completion, list) and any(
        isinstance(m, dict) and m.get("role") == "assistant" and m.get("content") for m in completion
    )


def _rollout_ids(renderer: ChatRenderer, prompt: list, completion: list) -> tuple[list[int], list[int]]:
    """A stored conversation's completion as ids and mask, as :meth:`Environment.rollout` assembles them."""
    ids: list[int] = []
    mask: list[int] = []
    history = list(prompt)
    for i, message in enumerate(completion):
        if message["role"] != "assistant":
            continue
        generated = renderer.encode(message["content"])
        ids, mask = ids + generated, mask + [1] * len(generated)
        history.append(message)
        replies = []
        for reply in completion[i + 1 :]:
            if reply["role"] == "assistant":
                break
            replies.append(reply)
        if replies:
            delta = renderer.continuation_ids(history, generated, history + replies)
            ids, mask = ids + delta, mask + [0] * len(delta)
            history += replies
    return ids, mask


# -- the command ---------------------------------------------------------------------------------------


@dataclass
class EntropySettings:
    """What ``rewardlab probe entropy`` probes: prompts to sample from, or a run's stored rollouts."""

    model: str
    prompts: list[str] = field(default_factory=list)
    run: str | None = None
    samples: int = 4
    max_new_tokens: int = 48
    temperature: float = 1.0
    seed: int = 0
    forking_share: float = 0.2
    threshold: float | None = None
    compare_model: str | None = None
    raw: bool = False
    dtype: str = "float32"
    runs_dir: str = "runs"


def entropy_probe(settings: EntropySettings) -> EntropyProbe:
    """Load the model, get the completions, score them (and with a second model), mark the forking tokens."""
    s = settings
    if not s.prompts and not s.run:
        raise RewardlabError("probe entropy needs either --prompt TEXT (repeatable) or --run RUN_ID")
    if s.prompts and s.run:
        raise RewardlabError("probe entropy takes --prompt or --run, not both")
    if s.samples < 1 or s.max_new_tokens < 1:
        raise RewardlabError(
            f"--samples and --max-new-tokens must be at least 1, got {s.samples} and {s.max_new_tokens}"
        )
    for prompt in s.prompts:
        checked_prompt(prompt)
    if s.temperature <= 0:
        raise RewardlabError(
            f"--temperature must be above 0 (entropy of a greedy choice is 0), got {s.temperature}"
        )
    if s.threshold is None and not 0 < s.forking_share <= 1:
        raise RewardlabError(f"--forking-share must be above 0 and at most 1, got {s.forking_share}")
    if s.run:  # a missing run or one without rollouts is said before a model loads
        completions = stored(load_probe_tokenizer(s.model, s.runs_dir), s.run, s.samples, s.runs_dir)
    model, tokenizer = load_probe_model(s.model, dtype=s.dtype, runs_dir=s.runs_dir)
    if not s.run:
        completions = sampled(model, tokenizer, s.prompts, samples=s.samples, max_new_tokens=s.max_new_tokens,
                              temperature=s.temperature, seed=s.seed, raw=s.raw)  # fmt: skip
    traces = score(model, tokenizer, completions, s.temperature, "entropy")
    share = None if s.threshold is not None else s.forking_share
    threshold = mark_forking(traces, share, s.threshold)
    result = EntropyProbe(s.model, s.compare_model, s.temperature, share, threshold, traces)
    if s.compare_model is not None:
        del model  # one model in memory at a time
        other, other_tokenizer = load_probe_model(s.compare_model, dtype=s.dtype, runs_dir=s.runs_dir)
        same_vocabulary(tokenizer, other_tokenizer, s.model, s.compare_model)
        result.differences = compare_with(other, other_tokenizer, completions, traces, s.temperature)
    return result
