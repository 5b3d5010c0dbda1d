"""Each stored training rollout's tokens with the log-prob and entropy the policy gave them.

The update's first pass computes both for every completion token anyway (the sampling policy's, at the
sampling temperature); keeping them for the few rollouts a step stores lets the dashboard colour a
transcript by how sure the model was, token by token, at no extra forward pass.
"""

from __future__ import annotations

import torch

from rewardlab.types import ScoredRollout

DIGITS = 4  # enough to tell tokens apart on a colour scale; keeps the stored JSON small


class FirstPass:
    """Collects the first pass's per-token log-probs and entropies, micro-batch by micro-batch, in the
    order of the batch's rows (``trained``: the rollouts the batch was built from)."""

    def __init__(self, trained: list[ScoredRollout]):
        self.trained = trained
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []

    def add(self, logprobs: torch.Tensor, entropy: torch.Tensor | None) -> None:
        if entropy is not None:
            self.parts.append((logprobs.detach().float().cpu(), entropy.detach().float().cpu()))

    def tokens_of(self, logged: list[ScoredRollout], tokenizer) -> list[list[list[dict]] | None]:
        """For each of ``logged``: one list per model turn (a run of model tokens in its completion) of
        ``{"text", "logprob", "entropy"}``; None for a rollout this process did not train on."""
        if not self.parts or sum(p[0].shape[0] for p in self.parts) != len(self.trained):
            return [None] * len(logged)
        logprobs = torch.cat([p[0] for p in self.parts])
        entropy = torch.cat([p[1] for p in self.parts])
        row_of = {id(s): i for i, s in enumerate(self.trained)}
        out: list[list[list[dict]] | None] = []
        for item in logged:
            row = row_of.get(id(item))
            ids, mask = item.rollout.completion_ids or [], item.rollout.completion_mask or []
            if row is None or len(ids) > logprobs.shape[1]:
                out.append(None)
                continue
            turns: list[list[dict]] = []
            inside = False
            for column, (token_id, by_model) in enumerate(zip(ids, mask, strict=False)):
                if not by_model:
                    inside = False
                    continue
                if not inside:
                    turns.append([])
                    inside = True
                turns[-1].append({
                    "text": tokenizer.decode([token_id], skip_special_tokens=False),
                    "logprob": round(float(logprobs[row, column]), DIGITS),
                    "entropy": round(float(entropy[row, column]), DIGITS),
                })  # fmt: skip
            out.append(turns)
        return out
