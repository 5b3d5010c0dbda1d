"""The GRPO-family math: group advantages, token log-probs, KL and the clipped policy loss.

Everything here is a small pure function over torch tensors: no model, no optimizer, no I/O. The trainer
feeds it ``(B, T)`` tensors laid out over the *completion* tokens only (position ``t`` is the ``t``-th
completion token), with a ``mask`` that is 1 on tokens the model generated and 0 on padding and on
tokens an environment spliced in, so those are never trained on.

The four loss types differ only in how the importance ratio is formed and how per-token losses are
averaged; see :func:`policy_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_TYPES = ("grpo", "dapo", "dr_grpo", "gspo")


# -- advantages -------------------------------------------------------------------------------------------


def group_advantages(
    rewards: torch.Tensor,
    group_size: int,
    scale_rewards: bool = True,
    valid: torch.Tensor | None = None,
    eps: float = 1e-4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """How much better each completion did than the rest of its group.

    ``rewards`` is flat, ``(num_groups * group_size,)``, and consecutive entries form a group (the
    completions sampled for one prompt). The advantage is ``reward - group mean``; the group itself is
    the baseline, which is what lets GRPO drop the value network. With ``scale_rewards`` it is further
    divided by ``group std + eps`` so that every prompt contributes a comparable signal whatever the
    scale of its rewards. The std is the *unbiased* sample std (``torch.std``'s default, as in TRL): a
    group is a small sample from the policy, and the unbiased estimate is what the published recipes use.
    ``eps`` only guards the division; groups with no spread are handled explicitly below.

    ``valid`` (bool, same shape) marks rollouts whose reward could be computed. An invalid rollout (its
    reward function raised) says nothing about the policy, so it is left out of its group's mean and std
    and gets advantage 0 (its reward may be anything, NaN included). A group with fewer than two valid
    members has no baseline to compare against and gets advantage 0 throughout.

    Returns ``(advantages, zero_std_groups)``: ``advantages`` has the shape of ``rewards`` (float32 or
    the rewards' floating dtype); ``zero_std_groups`` is ``(num_groups,)`` bool, True where the group's
    valid rewards are all equal, or fewer than two are valid: such a group gives no learning signal, and
    the fraction of them is the first thing to watch when training stalls. Their advantages are exactly 0
    (not ``x - mean(x)``, which can be a rounding error away from it).
    """
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (num_groups * group_size,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size != 0:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    if valid is not None and valid.shape != rewards.shape:
        raise ValueError(f"valid has shape {tuple(valid.shape)}, rewards {tuple(rewards.shape)}")

    dtype = rewards.dtype if rewards.is_floating_point() else torch.float32
    r = rewards.to(dtype).view(-1, group_size)
    v = torch.ones_like(r, dtype=torch.bool) if valid is None else valid.to(torch.bool).view(-1, group_size)
    count = v.sum(dim=1)

    # torch.where (not multiplication) so that a NaN reward on an invalid rollout cannot leak in.
    mean = torch.where(v, r, 0.0).sum(dim=1) / count.clamp(min=1)
    centred = torch.where(v, r - mean[:, None], 0.0)
    advantages = centred
    if scale_rewards:
        std = (centred.square().sum(dim=1) / (count - 1).clamp(min=1)).sqrt()
        advantages = centred / (std[:, None] + eps)

    highest = torch.where(v, r, -torch.inf).amax(dim=1)
    lowest = torch.where(v, r, torch.inf).amin(dim=1)
    zero_std = (count < 2) | (highest == lowest)
    advantages = torch.where(v & ~zero_std[:, None], advantages, 0.0)
    return advantages.view(-1), zero_std


def clip_advantages(advantages: torch.Tensor, limit: float | None) -> torch.Tensor:
    """Advantages clipped to ``[-limit, +limit]`` (None: unchanged).

    With std scaling a group with one success in eight gives that success an advantage of about +2.5 and
    the rest -0.35; clipping bounds how hard one lucky sample can pull, at the price of a biased gradient.
    """
    return advantages if limit is None else advantages.clamp(-limit, limit)


# -- per-token quantities ---------------------------------------------------------------------------------


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


# Full-vocabulary float32 temporaries are built for a few rows at a time, at most this many elements
# (64 MiB). The vocabulary is the big axis (150k for Qwen): a (B, T, V) float32 copy of a whole batch can
# be gigabytes, while going one row at a time runs B rounds of small kernels where one would do.
VOCAB_CHUNK_ELEMENTS = 1 << 24


def _row_chunks(*tensors: torch.Tensor) -> zip:
    """Each tensor split into the same chunks of rows (``VOCAB_CHUNK_ELEMENTS`` logits a chunk), zipped.

    ``split``, not indexing: the gradient of indexed chunks is one logits-sized tensor of zeros per chunk,
    summed (SmolLM2, 32 x 32 rows: four 200 MB fills and adds); split's is the chunks' gradients joined."""
    logits = tensors[0]
    rows_per_chunk = max(1, VOCAB_CHUNK_ELEMENTS // max(1, logits.shape[1] * logits.shape[2]))
    return zip(*(tensor.split(rows_per_chunk) for tensor in tensors), strict=True)


def _check_shapes(logits: torch.Tensor, token_ids: torch.Tensor) -> None:
    if logits.shape[:2] != token_ids.shape:
        raise ValueError(f"logits {tuple(logits.shape)} do not match token_ids {tuple(token_ids.shape)}")


def token_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probabilities of ``token_ids`` under ``softmax(logits / temperature)``.

    ``logits`` is ``(B, T, V)``, already aligned so that ``logits[:, t]`` predicts ``token_ids[:, t]``;
    returns ``(B, T)`` float32. Dividing by the sampling temperature matters: the completions were drawn
    from the tempered distribution, so the importance ratio must compare tempered probabilities too.

    Memory: the vocabulary is the big axis (150k for Qwen), so this never builds a one-hot or a
    ``(B, T, V)`` log-softmax. It gathers the chosen logit and subtracts ``logsumexp`` a chunk of rows at
    a time (see ``VOCAB_CHUNK_ELEMENTS``), so the full-vocabulary temporaries stay bounded. Rows are upcast
    to float32 because bf16 log-probs are too coarse for ``exp(logp - old_logp)`` to be a meaningful ratio.
    """
    return token_logprobs_and_entropy(logits, token_ids, temperature, with_entropy=False)[0]


def token_entropy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Entropy in nats of ``softmax(logits / temperature)`` at every position: ``(B, T, V) -> (B, T)``.

    The entropy of the sampling distribution is the early warning for collapse (it falls towards 0 when
    the policy stops exploring). Uses ``H = logsumexp(x) - sum(softmax(x) * x)``, which needs no
    ``log(0)`` and, like :func:`token_logprobs`, works a chunk of rows at a time in float32.
    """
    _check_temperature(temperature)
    rows = []
    for (chunk,) in _row_chunks(logits):
        scaled = tempered(chunk.float(), temperature)
        rows.append(_entropy(scaled, torch.logsumexp(scaled, dim=-1)))
    if not rows:
        return logits.new_zeros(logits.shape[:2], dtype=torch.float32)
    return torch.cat(rows)


def tempered(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``logits / temperature``, skipped at temperature 1, where dividing changes no bit: one pass over (and
    one tensor of) the vocabulary-sized rows fewer, forward and backward."""
    return logits if temperature == 1.0 else logits / temperature


def _entropy(scaled: torch.Tensor, log_norm: torch.Tensor) -> torch.Tensor:
    probs = torch.exp(scaled - log_norm.unsqueeze(-1))
    return log_norm - (probs * scaled).sum(dim=-1)


def token_logprobs_and_entropy(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    temperature: float = 1.0,
    with_entropy: bool = True,
    entropy_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`token_logprobs` (differentiable) and :func:`token_entropy` in one pass.

    Both need the same ``logsumexp`` over the vocabulary; the trainer wants both for every batch, so the
    full-vocabulary work is done once. The entropy is a metric, detached, unless ``entropy_grad`` (an
    entropy bonus in the loss needs its gradient).
    """
    _check_temperature(temperature)
    _check_shapes(logits, token_ids)
    logprobs, entropies = [], []
    for chunk, ids in _row_chunks(logits, token_ids):
        scaled = tempered(chunk.float(), temperature)
        log_norm = torch.logsumexp(scaled, dim=-1)
        chosen = scaled.gather(-1, ids.long().unsqueeze(-1)).squeeze(-1)
        logprobs.append(chosen - log_norm)
        if with_entropy and entropy_grad:
            entropies.append(_entropy(scaled, log_norm))
        elif with_entropy:
            with torch.no_grad():
                entropies.append(_entropy(scaled.detach(), log_norm.detach()))
    if not logprobs:
        empty = logits.new_zeros(token_ids.shape, dtype=torch.float32)
        return empty, empty.clone() if with_entropy else None
    return torch.cat(logprobs), torch.cat(entropies) if with_entropy else None


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Per-token k3 estimate of ``KL(policy || ref)``: ``exp(ref - logp) - (ref - logp) - 1``.

    With samples drawn from the policy, ``exp(ref - logp)`` has expectation 1, so this is unbiased for the
    KL like the naive ``logp - ref`` (k1), but it is never negative (``e^x >= 1 + x``) and has much lower
    variance, which is why GRPO uses it as a penalty. It is exactly 0 where the two agree.
    """
    delta = ref_logprobs - logprobs
    return torch.exp(delta) - delta - 1.0


# -- entropy control by covariance (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs") ---


def token_covariance(logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each masked token's centred covariance term ``(logp - mean logp) * (A - mean A)``, detached.

    The paper shows the entropy change of a policy-gradient step is driven by the covariance of a token's
    log-prob and its advantage: confident tokens with high advantage are what collapse the entropy. Means
    are over the masked tokens given (a micro-batch: the trainer's unit of work). Off the mask: ``-inf``,
    so a selection never picks padding.
    """
    mask = mask.to(torch.bool)
    count = mask.sum().clamp(min=1)
    logp = logprobs.detach().float()
    advantage = advantages.detach().float()[:, None].expand_as(logp)
    mean_logp = torch.where(mask, logp, 0.0).sum() / count
    mean_advantage = torch.where(mask, advantage, 0.0).sum() / count
    covariance = (logp - mean_logp) * (advantage - mean_advantage)
    return torch.where(mask, covariance, -torch.inf)


def _how_many(fraction: float, mask: torch.Tensor) -> int:
    # At least one token once the method is on: with a few hundred tokens a step, the paper's fractions
    # (2e-4, 2e-3) would otherwise select nothing at all.
    return max(1, int(fraction * int(mask.sum()))) if fraction > 0 else 0


def clip_cov_selection(
    covariance: torch.Tensor,
    mask: torch.Tensor,
    fraction: float,
    low: float,
    high: float,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Clip-Cov: ``fraction`` of the masked tokens, drawn uniformly among those whose covariance lies in
    ``[low, high]``, as a bool ``(B, T)`` tensor; their gradient is cut. Fewer when fewer are in the
    window."""
    window = mask.to(torch.bool) & (covariance >= low) & (covariance <= high)
    candidates = window.flatten().nonzero().squeeze(-1)
    chosen = torch.zeros(covariance.numel(), dtype=torch.bool, device=covariance.device)
    count = min(_how_many(fraction, mask), candidates.numel())
    if count:
        order = torch.randperm(candidates.numel(), generator=generator, device="cpu")[:count]
        chosen[candidates[order.to(candidates.device)]] = True
    return chosen.view_as(covariance)


def kl_cov_selection(covariance: torch.Tensor, mask: torch.Tensor, fraction: float) -> torch.Tensor:
    """KL-Cov: the ``fraction`` of masked tokens with the largest covariance, as a bool ``(B, T)`` tensor."""
    chosen = torch.zeros(covariance.numel(), dtype=torch.bool, device=covariance.device)
    count = min(_how_many(fraction, mask), int(mask.sum()))
    if count:
        chosen[covariance.flatten().topk(count).indices] = True
    return chosen.view_as(covariance)


# -- the policy loss --------------------------------------------------------------------------------------


@dataclass
class LossOutput:
    """The loss to backpropagate and the numbers worth logging about it (metrics are plain floats)."""

    loss: torch.Tensor  # scalar, differentiable
    clip_low_fraction: float  # masked tokens with ratio < 1 - eps_low and advantage < 0 (clip active)
    clip_high_fraction: float  # masked tokens with ratio > 1 + eps_high and advantage > 0 (clip active)
    kl: float | None  # masked per-token mean of k3 KL; None when beta == 0
    ratio_mean: float  # masked per-token mean importance ratio
    ratio_max_deviation: float = 0.0  # largest |ratio - 1| on a masked token (0 on an exact first pass)
    cov_selected_fraction: float = 0.0  # masked tokens Clip-Cov or KL-Cov acted on


def _sequence_mean_sum(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over sequences of each sequence's mean over its masked tokens.

    A sequence with no masked tokens (an errored rollout, or one the environment wrote entirely) has a
    mean of 0: it contributes nothing, but it still counts as a sequence in the caller's denominator, so
    that the denominator is a plain count that micro-batches can share.
    """
    per_sequence = per_token.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    return per_sequence.sum()


def _aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    loss_type: str,
    max_completion_length: int | None,
    num_sequences: int,
    num_tokens: int,
) -> torch.Tensor:
    """Reduce masked per-token losses (already zero off the mask) to the scalar loss of ``loss_type``.

    Every reduction is "a sum over this micro-batch / a count of the whole batch", so the micro-batch
    losses add up to the full-batch loss under gradient accumulation.

    - grpo, gspo: mean over sequences of the per-sequence token mean. Every sequence weighs the same,
      which in effect gives each token of a short answer more weight than a token of a long one.
    - dapo: one mean over all tokens of the batch, so every token weighs the same and long answers
      are not diluted (DAPO's "token-level policy gradient loss").
    - dr_grpo: the token sum over a *constant*, ``num_sequences * max_completion_length``. Dr. GRPO
      shows the per-sequence ``1/|o_i|`` rewards short correct answers and punishes long wrong ones less
      per token, so wrong answers drift longer; a normaliser that does not depend on the lengths removes
      that length bias.
    """
    if loss_type in ("grpo", "gspo"):
        return _sequence_mean_sum(per_token, mask) / num_sequences
    if loss_type == "dapo":
        return per_token.sum() / max(num_tokens, 1)
    assert max_completion_length is not None  # checked by policy_loss
    return per_token.sum() / (num_sequences * max_completion_length)


def _importance_ratio(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, mask: torch.Tensor, loss_type: str
) -> torch.Tensor:
    """Per-token ratio ``pi / pi_old``: per token for grpo/dapo/dr_grpo, per sequence for gspo.

    The log-ratio is zeroed off the mask *before* ``exp``: padding may hold anything (an ``old`` of
    ``-inf``...), and ``inf * 0`` is NaN in the forward pass or the backward pass alike.

    GSPO's ratio is the length-normalised sequence likelihood ratio
    ``s_i = exp(mean_t(logp_t - old_t))``, in the token form of the GSPO paper:
    ``s_i,t = sg(s_i) * exp(logp_t - sg(logp_t))``. Its value is ``s_i`` at every token, and its gradient
    w.r.t. ``logp_t`` is ``s_i``, the same gradient as GSPO's sequence objective, while keeping the
    per-token shape the clipping and aggregation work on.
    """
    log_ratio = torch.where(mask, logprobs - old_logprobs, 0.0)
    if loss_type != "gspo":
        return torch.exp(log_ratio)
    sequence = log_ratio.sum(dim=1) / mask.sum(dim=1).clamp(min=1)
    token_log = logprobs - logprobs.detach()
    return torch.exp(torch.where(mask, sequence.detach()[:, None] + token_log, 0.0))


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    *,
    loss_type: str = "grpo",
    epsilon_low: float = 0.2,
    epsilon_high: float = 0.2,
    beta: float = 0.0,
    ref_logprobs: torch.Tensor | None = None,
    max_completion_length: int | None = None,
    num_sequences: int | None = None,
    num_tokens: int | None = None,
    entropy: torch.Tensor | None = None,
    entropy_coef: float = 0.0,
    clip_cov: torch.Tensor | None = None,
    kl_cov: torch.Tensor | None = None,
    kl_cov_coef: float = 1.0,
) -> LossOutput:
    """The clipped surrogate loss of the GRPO family, with an optional k3 KL penalty.

    ``logprobs`` (differentiable), ``old_logprobs`` (the sampling policy's, held fixed),
    ``ref_logprobs`` and ``mask`` are ``(B, T)``; ``advantages`` is ``(B,)``, one per sequence. ``mask``
    is 1 (or True) on tokens the model generated and 0 on padding and environment tokens; values of the
    other tensors off the mask are ignored, whatever they are. Pass ``old_logprobs = logprobs.detach()``
    for the single-pass case (ratio 1, the gradient is the plain policy gradient).

    Per token: ``ratio = exp(logp - old)`` (see :func:`_importance_ratio` for gspo) and
    ``objective = min(ratio * A, clip(ratio, 1 - epsilon_low, 1 + epsilon_high) * A)``, the PPO
    pessimistic bound: it stops a sequence from being pushed further once its ratio has moved past the
    clip range in the direction its advantage wants. ``epsilon_high > epsilon_low`` is DAPO's
    "clip-higher", which leaves room to raise unlikely tokens. GSPO's paper uses far smaller epsilons
    (around 3e-4 / 4e-4) because a sequence ratio moves less than a token ratio; pass them explicitly.
    The per-token loss is ``-objective + beta * kl_k3(logp, ref)``, so the KL is aggregated exactly
    like the surrogate (see :func:`_aggregate` for the four reductions).

    Gradient accumulation: ``num_sequences`` and ``num_tokens`` are the *whole* batch's sequence and
    masked-token counts when the caller splits it into micro-batches; then the micro-batch losses (and
    gradients) sum to the full-batch ones. They default to this call's own counts.

    Entropy control (each off unless given): ``entropy`` ``(B, T)``, differentiable, with ``entropy_coef``
    subtracts ``entropy_coef * entropy`` per token (an entropy bonus, aggregated like the rest).
    ``clip_cov`` (bool ``(B, T)``, see :func:`clip_cov_selection`) zeroes those tokens' loss, so they get
    no gradient. ``kl_cov`` (bool, :func:`kl_cov_selection`) follows the paper's KL-Cov: no clipping at
    all, ``-ratio * A`` on every token, plus ``kl_cov_coef * |logp - old|`` on the selected ones.

    Metrics are over this call's masked tokens: ``clip_low_fraction`` / ``clip_high_fraction`` count
    tokens where the clip is active (it replaced the unclipped term), ``ratio_mean`` is the mean ratio,
    ``kl`` the mean k3 KL (None when ``beta == 0``). All are 0.0 when there are no masked tokens.

    Raises ValueError for an unknown ``loss_type``, for dr_grpo without ``max_completion_length``, for
    ``beta > 0`` without ``ref_logprobs`` and for mismatched shapes.
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"unknown loss_type {loss_type!r}; expected one of {', '.join(LOSS_TYPES)}")
    if loss_type == "dr_grpo" and not max_completion_length:
        raise ValueError("loss_type 'dr_grpo' needs max_completion_length (its constant normaliser)")
    if beta > 0 and ref_logprobs is None:
        raise ValueError("beta > 0 needs ref_logprobs")
    shapes = [old_logprobs.shape, mask.shape] + ([ref_logprobs.shape] if ref_logprobs is not None else [])
    if logprobs.dim() != 2 or any(shape != logprobs.shape for shape in shapes):
        raise ValueError("logprobs, old_logprobs, ref_logprobs and mask must all have the same (B, T) shape")
    if advantages.shape != logprobs.shape[:1]:
        raise ValueError(f"advantages must be (B,) = ({logprobs.shape[0]},), got {tuple(advantages.shape)}")

    mask = mask.to(torch.bool)
    weights = mask.to(logprobs.dtype)
    masked_count = int(mask.sum())
    num_sequences = logprobs.shape[0] if num_sequences is None else num_sequences
    num_tokens = masked_count if num_tokens is None else num_tokens
    if num_sequences < 1:
        raise ValueError(f"num_sequences must be >= 1, got {num_sequences}")

    advantage = advantages.to(logprobs.dtype)[:, None]
    ratio = _importance_ratio(logprobs, old_logprobs, mask, loss_type)
    selected = torch.zeros_like(mask)
    if kl_cov is None:
        clipped = ratio.clamp(1.0 - epsilon_low, 1.0 + epsilon_high)
        per_token = -torch.minimum(ratio * advantage, clipped * advantage)
    else:  # KL-Cov replaces the clip
        log_ratio = torch.where(mask, logprobs - old_logprobs, 0.0)
        per_token = -ratio * advantage + torch.where(kl_cov, kl_cov_coef * log_ratio.abs(), 0.0)
        selected = selected | kl_cov.to(torch.bool)
    if clip_cov is not None:
        per_token = torch.where(clip_cov, 0.0, per_token)
        selected = selected | clip_cov.to(torch.bool)
    if entropy is not None and entropy_coef:
        per_token = per_token - entropy_coef * entropy

    kl = None
    if beta > 0:
        assert ref_logprobs is not None
        # Zeroing the difference off the mask keeps a padded ref of -inf from turning into NaN.
        kl = kl_k3(torch.where(mask, logprobs, 0.0), torch.where(mask, ref_logprobs, 0.0))
        per_token = per_token + beta * kl

    per_token = torch.where(mask, per_token, 0.0)
    loss = _aggregate(per_token, weights, loss_type, max_completion_length, num_sequences, num_tokens)

    with torch.no_grad():

        def masked_mean(values: torch.Tensor) -> float:
            return float(torch.where(mask, values, 0.0).sum() / masked_count) if masked_count else 0.0

        clipping = kl_cov is None  # KL-Cov replaces the clip
        low = (ratio < 1.0 - epsilon_low) & (advantage < 0) & clipping
        high = (ratio > 1.0 + epsilon_high) & (advantage > 0) & clipping
        return LossOutput(
            loss=loss,
            clip_low_fraction=masked_mean(low.to(weights.dtype)),
            clip_high_fraction=masked_mean(high.to(weights.dtype)),
            kl=masked_mean(kl) if kl is not None else None,
            ratio_mean=masked_mean(ratio),
            ratio_max_deviation=float(torch.where(mask, (ratio - 1).abs(), 0.0).max())
            if masked_count
            else 0.0,
            cov_selected_fraction=masked_mean((selected & mask).to(weights.dtype)),
        )
