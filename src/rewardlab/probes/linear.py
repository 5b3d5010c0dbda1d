"""Linear probes: can a concept be read off each layer's hidden state by a logistic regression?

Every text of a concept (see :mod:`~rewardlab.probes.concepts`) goes through the model once, keeping each
layer's hidden state (the embeddings, then each block's output) at one token: the text's last, or the
mean over its tokens. Per layer a standardised logistic regression is fitted on a train split and scored
on the held-out rest. The last block's output is taken from the final norm's input, as the logit lens does
(transformers records it already normed), so every layer is the raw residual stream.

High accuracy alone can mean the probe is strong, not that the model holds the concept: a probe with
hundreds of features fits a lot. So each layer also gets a *control*: the same probe on the same split, with
the labels shuffled over the rows. Selectivity, accuracy minus control, is what the layer adds beyond the
probe's own capacity; the majority-class baseline is what a probe that learnt nothing scores.
"""

from __future__ import annotations

import random
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from rewardlab.console import progress
from rewardlab.errors import RewardlabError
from rewardlab.models.chat import ChatRenderer
from rewardlab.probes.concepts import Concept, load_concept
from rewardlab.probes.inputs import load_probe_model
from rewardlab.probes.lens import final_norm

POSITIONS = ("last", "mean")
# lbfgs to a tight tolerance: at sklearn's default (1e-4) the float-level differences a forward pass shows
# with another thread count moved a test row across the boundary; at 1e-6 the same layers agree. SmolLM2's
# layers converge in under 400 iterations; the cap only bounds a pathological one.
TOLERANCE = 1e-6
MAX_ITER = 2000
BATCH = 32


@dataclass
class LayerScore:
    layer: int  # 0: the embeddings; i: the output of block i
    name: str
    accuracy: float  # on the test split
    control: float  # the same probe and split, labels shuffled
    train_accuracy: float

    @property
    def selectivity(self) -> float:
        return self.accuracy - self.control


@dataclass
class ModelScores:
    model: str
    layers: list[LayerScore] = field(default_factory=list)

    @property
    def best(self) -> LayerScore:
        """The most selective layer (the earliest of equals)."""
        return max(self.layers, key=lambda score: (round(score.selectivity, 9), -score.layer))


@dataclass
class LinearProbe:
    concept: Concept
    position: str
    test_fraction: float
    seed: int
    train: list[int]  # row indices
    test: list[int]
    majority_label: int  # the train split's commoner label
    majority: float  # its share of the test split: the accuracy of a probe that learnt nothing
    models: list[ModelScores] = field(default_factory=list)

    def to_dict(self) -> dict:
        test = set(self.test)
        return {
            "concept": self.concept.name,
            "labels": list(self.concept.labels),
            "split_by": self.concept.grouped_by,
            "position": self.position,
            "test_fraction": self.test_fraction,
            "seed": self.seed,
            "rows": len(self.concept.rows),
            "train_rows": len(self.train),
            "test_rows": len(self.test),
            "majority_label": self.concept.labels[self.majority_label],
            "majority_baseline": self.majority,
            "models": [
                {
                    "model": scores.model,
                    "best_layer": scores.best.name,
                    "layers": [{**asdict(s), "selectivity": s.selectivity} for s in scores.layers],
                }
                for scores in self.models
            ],
            "data": [
                {**asdict(row), "split": "test" if i in test else "train"}
                for i, row in enumerate(self.concept.rows)
            ],
        }


# -- the split -----------------------------------------------------------------------------------------


def split_rows(concept: Concept, test_fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """``(train, test)`` row indices. Whole groups go to one side (a word never on both), and groups are
    drawn per kind (the set of labels they hold), so both sides keep the concept's balance of labels."""
    if not 0 < test_fraction < 1:
        raise RewardlabError(f"--test-fraction must be between 0 and 1, got {test_fraction}")
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(concept.rows):
        groups.setdefault(row.group, []).append(i)
    kinds: dict[tuple[int, ...], list[str]] = {}
    for name, members in groups.items():
        kinds.setdefault(tuple(sorted({concept.rows[i].label for i in members})), []).append(name)
    rng = random.Random(seed)
    held_out: list[str] = []
    for kind in sorted(kinds):
        names = kinds[kind]
        rng.shuffle(names)
        held_out += names[: round(test_fraction * len(names))]
    if not held_out:  # a fraction too small to round to one group of any kind: still test on one
        held_out = [rng.choice(sorted(groups))]
    held = set(held_out)
    train = sorted(i for name, members in groups.items() if name not in held for i in members)
    test = sorted(i for name in held_out for i in groups[name])
    if len({concept.rows[i].label for i in train}) < 2:
        raise RewardlabError(
            f"{concept.name}: with --test-fraction {test_fraction} the train split holds one label only "
            f"({len(train)} of {len(concept.rows)} rows): give more rows or a smaller fraction"
        )
    return train, test


# -- hidden states -------------------------------------------------------------------------------------


def text_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Each text's token ids as they are, without a chat template or special tokens."""
    renderer = ChatRenderer(tokenizer)
    ids = [renderer.encode(text) for text in texts]
    for text, row in zip(texts, ids, strict=True):
        if not row:
            raise RewardlabError(f"the text {text!r} tokenizes to nothing")
    return ids


@torch.inference_mode()
def hidden_features(model, tokenizer, texts: list[str], position: str = "last") -> np.ndarray:
    """float32 array (layers + 1, texts, hidden): each layer's state at each text's last token, or its mean
    over the text's tokens. Texts are batched by length and padded on the right, where causal attention
    keeps the padding from reaching any real token."""
    if position not in POSITIONS:
        raise RewardlabError(f"--position must be one of {', '.join(POSITIONS)}, got {position!r}")
    ids = text_ids(tokenizer, texts)
    norm = final_norm(model)
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    features: np.ndarray | None = None
    captured: list[torch.Tensor] = []
    hook = norm.register_forward_hook(lambda _module, args, _output: captured.append(args[0]))
    try:
        with progress("hidden states", len(order)) as advance:
            for start in range(0, len(order), BATCH):
                batch = order[start : start + BATCH]
                lengths = torch.tensor([len(ids[i]) for i in batch], device=device)
                width = int(lengths.max())
                tokens = torch.tensor([ids[i] + [pad] * (width - len(ids[i])) for i in batch], device=device)
                mask = (torch.arange(width, device=device)[None, :] < lengths[:, None]).long()
                captured.clear()
                out = model(input_ids=tokens, attention_mask=mask, output_hidden_states=True, use_cache=False)
                # The norm's input is the last block's raw output; the recorded last hidden state is normed.
                streams = torch.stack([*out.hidden_states[:-1], captured[-1]]).float()  # (L+1, B, T, H)
                if position == "last":
                    picked = streams[:, torch.arange(len(batch), device=device), lengths - 1]
                else:
                    weights = (mask / lengths[:, None]).to(streams.dtype)
                    picked = torch.einsum("lbth,bt->lbh", streams, weights)
                if features is None:
                    features = np.empty((picked.shape[0], len(ids), picked.shape[-1]), dtype=np.float32)
                features[:, batch] = picked.cpu().numpy()
                advance(len(batch))
    finally:
        hook.remove()
    return features


# -- the probes ----------------------------------------------------------------------------------------


def fit_probe(
    features: np.ndarray, labels: np.ndarray, train: list[int], test: list[int]
) -> tuple[float, float]:
    """``(test accuracy, train accuracy)`` of a standardised L2 logistic regression."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), LogisticRegression(tol=TOLERANCE, max_iter=MAX_ITER))
    with warnings.catch_warnings():  # separable data stops at the cap; the scores are what matter
        warnings.simplefilter("ignore", ConvergenceWarning)
        probe.fit(features[train], labels[train])
    return float(probe.score(features[test], labels[test])), float(
        probe.score(features[train], labels[train])
    )


def control_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """The labels shuffled over the rows: same counts, no relation to the texts."""
    return np.random.default_rng(seed).permutation(labels)


def probe_layers(features: np.ndarray, labels: np.ndarray, control: np.ndarray, train: list[int],
                 test: list[int], model_name: str = "") -> ModelScores:  # fmt: skip
    scores = ModelScores(model_name)
    with progress("probes", features.shape[0]) as advance:
        for layer, states in enumerate(features.astype(np.float64)):
            accuracy, train_accuracy = fit_probe(states, labels, train, test)
            control_accuracy, _ = fit_probe(states, control, train, test)
            name = "embed" if layer == 0 else str(layer)
            scores.layers.append(LayerScore(layer, name, accuracy, control_accuracy, train_accuracy))
            advance()
    return scores


def probe_model(model, tokenizer, result: LinearProbe, model_name: str = "") -> ModelScores:
    """One model's scores on ``result``'s concept and split, appended to ``result.models``."""
    labels = np.array([row.label for row in result.concept.rows])
    features = hidden_features(model, tokenizer, [row.text for row in result.concept.rows], result.position)
    control = control_labels(labels, result.seed)
    scores = probe_layers(features, labels, control, result.train, result.test, model_name)
    result.models.append(scores)
    return scores


def prepare(concept: Concept, position: str, test_fraction: float, seed: int) -> LinearProbe:
    """The split and the majority baseline, before any model is loaded."""
    if position not in POSITIONS:
        raise RewardlabError(f"--position must be one of {', '.join(POSITIONS)}, got {position!r}")
    train, test = split_rows(concept, test_fraction, seed)
    labels = [concept.rows[i].label for i in train]
    majority_label = int(labels.count(1) > labels.count(0))
    majority = sum(concept.rows[i].label == majority_label for i in test) / len(test)
    return LinearProbe(concept, position, test_fraction, seed, train, test, majority_label, majority)


# -- the command ---------------------------------------------------------------------------------------


@dataclass
class LinearSettings:
    """What ``rewardlab probe linear`` probes: a concept, one model or two, which token, how to split."""

    model: str
    concept: str
    compare_model: str | None = None
    position: str = "last"
    test_fraction: float = 0.25
    seed: int = 0
    dtype: str = "float32"
    runs_dir: str | Path = "runs"


def linear_probe(settings: LinearSettings) -> LinearProbe:
    """Read the concept and split it (a mistake there is said before a model loads), then probe every layer
    of the model and, with ``compare_model``, of the second on the very same split and control labels."""
    s = settings
    result = prepare(load_concept(s.concept, s.seed), s.position, s.test_fraction, s.seed)
    for name in [s.model] if s.compare_model is None else [s.model, s.compare_model]:
        model, tokenizer = load_probe_model(name, dtype=s.dtype, runs_dir=s.runs_dir)
        probe_model(model, tokenizer, result, name)
        del model  # one model in memory at a time
    return result
