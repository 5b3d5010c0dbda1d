"""The GRPO-family math against numbers worked out by hand.

Expected values are written out or computed with plain Python arithmetic (``math``), never by running the
same formula in torch, so a wrong formula in ``rewardlab.train.grpo`` cannot agree with itself.
"""

from __future__ import annotations

import math

import pytest
import torch

from rewardlab.train.grpo import (
    LOSS_TYPES,
    group_advantages,
    kl_k3,
    policy_loss,
    token_entropy,
    token_logprobs,
)

NAN = float("nan")


def close(actual, expected, tol=1e-5):
    """Elementwise comparison of a tensor (or float) with a (nested) list of hand-computed numbers."""
    actual = torch.as_tensor(actual, dtype=torch.float64)
    torch.testing.assert_close(actual, torch.tensor(expected, dtype=torch.float64), atol=tol, rtol=tol)


# -- group_advantages -------------------------------------------------------------------------------------

SQRT_THIRD = math.sqrt(1 / 3)  # unbiased std of [1, 0, 0, 1]: sqrt((4 * 0.25) / 3)


def test_advantages_scaled_by_unbiased_std():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    advantages, zero_std = group_advantages(rewards, group_size=4)
    a = 0.5 / (SQRT_THIRD + 1e-4)  # mean 0.5, deviation +-0.5
    assert a == pytest.approx(0.865875, abs=1e-6)
    close(advantages, [a, -a, -a, a, 0, 0, 0, 0])
    assert zero_std.tolist() == [False, True]


def test_advantages_unscaled_are_reward_minus_mean():
    rewards = torch.tensor([3.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0])
    advantages, zero_std = group_advantages(rewards, group_size=4, scale_rewards=False)
    close(advantages, [2.0, -1.0, -1.0, 0.0, 0, 0, 0, 0])  # mean of the first group is 1
    assert zero_std.tolist() == [False, True]


def test_zero_std_group_is_exactly_zero():
    # 0.1 is not exact in binary, so x - mean(x) could be a rounding error away from 0; it must be 0.
    advantages, zero_std = group_advantages(torch.full((3,), 0.1), group_size=3)
    assert advantages.tolist() == [0.0, 0.0, 0.0]
    assert zero_std.tolist() == [True]


def test_invalid_rollout_excluded_from_mean_and_std():
    rewards = torch.tensor([1.0, 0.0, NAN, 1.0])
    valid = torch.tensor([True, True, False, True])
    advantages, zero_std = group_advantages(rewards, group_size=4, valid=valid)
    # valid rewards 1, 0, 1: mean 2/3, deviations 1/3, -2/3, 1/3; unbiased var (1/9 + 4/9 + 1/9) / 2 = 1/3
    std = SQRT_THIRD
    close(advantages, [(1 / 3) / (std + 1e-4), (-2 / 3) / (std + 1e-4), 0.0, (1 / 3) / (std + 1e-4)])
    assert zero_std.tolist() == [False]

    unscaled, _ = group_advantages(rewards, group_size=4, scale_rewards=False, valid=valid)
    close(unscaled, [1 / 3, -2 / 3, 0.0, 1 / 3])


def test_group_with_fewer_than_two_valid_gets_zero():
    rewards = torch.tensor([NAN, 3.0, NAN, NAN, 1.0, 0.0, 0.0, 0.0])
    valid = torch.tensor([False, True, False, False, True, True, True, True])
    advantages, zero_std = group_advantages(rewards, group_size=4, valid=valid)
    # second group: mean 0.25, deviations 0.75, -0.25 x3; unbiased var (0.5625 + 3 * 0.0625) / 3 = 0.25
    b = 1 / (0.5 + 1e-4)
    close(advantages, [0, 0, 0, 0, 0.75 * b, -0.25 * b, -0.25 * b, -0.25 * b])
    assert zero_std.tolist() == [True, False]


def test_advantages_reject_bad_group_size():
    with pytest.raises(ValueError, match="groups of 3"):
        group_advantages(torch.zeros(4), group_size=3)


# -- token_logprobs / token_entropy / kl_k3 ---------------------------------------------------------------

LOGITS = torch.tensor([[[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]])  # (B=1, T=2, V=3)


def log_softmax_by_hand(row, index):
    return row[index] - math.log(sum(math.exp(x) for x in row))


def entropy_by_hand(row):
    total = sum(math.exp(x) for x in row)
    probs = [math.exp(x) / total for x in row]
    return -sum(p * math.log(p) for p in probs)


def test_token_logprobs_by_hand():
    ids = torch.tensor([[1, 2]])
    expected = [[2 - math.log(math.e + math.e**2 + 1), -math.log(3)]]
    assert expected[0][0] == pytest.approx(-0.407606, abs=1e-6)
    close(token_logprobs(LOGITS, ids), expected)


def test_token_logprobs_with_temperature():
    ids = torch.tensor([[0, 1]])
    # logits / 2 = [0.5, 1, 0]; the uniform row stays uniform
    expected = [[log_softmax_by_hand([0.5, 1.0, 0.0], 0), -math.log(3)]]
    close(token_logprobs(LOGITS, ids, temperature=2.0), expected)


def test_token_logprobs_batch_dtype_and_gradient():
    logits = torch.tensor([[[0.0, math.log(3.0)]], [[math.log(4.0), 0.0]]], requires_grad=True)
    out = token_logprobs(logits.bfloat16(), torch.tensor([[1], [1]]))
    assert out.dtype == torch.float32
    close(out, [[math.log(3 / 4)], [math.log(1 / 5)]], tol=1e-2)  # bf16 inputs: loose tolerance
    out = token_logprobs(logits, torch.tensor([[1], [1]]))
    out.sum().backward()
    # d log p_k / d logit_j = [j == k] - p_j
    close(logits.grad, [[[-0.25, 0.25]], [[-0.8, 0.8]]])


def test_token_entropy_by_hand():
    expected = [[entropy_by_hand([1.0, 2.0, 0.0]), math.log(3)]]
    assert expected[0][0] == pytest.approx(0.832396, abs=1e-6)
    close(token_entropy(LOGITS), expected)
    close(token_entropy(LOGITS, temperature=0.5), [[entropy_by_hand([2.0, 4.0, 0.0]), math.log(3)]])


def test_kl_k3_by_hand_and_zero_when_equal():
    logprobs = torch.tensor([[math.log(0.5), math.log(0.5)]])
    ref = torch.tensor([[math.log(0.25), math.log(1.0)]])
    # delta = ref - logp = log(1/2) and log(2): e^d - d - 1
    close(kl_k3(logprobs, ref), [[0.5 - math.log(0.5) - 1, 2 - math.log(2) - 1]])
    assert kl_k3(ref, ref).tolist() == [[0.0, 0.0]]


# -- policy_loss: a tiny batch, by hand -------------------------------------------------------------------
# B=2, T=3. Sequence 0 has 3 tokens and advantage +1; sequence 1 has 2 tokens (position 2 is padding,
# filled with values that give inf / NaN if the mask were not honoured) and advantage -2.

MASK = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
ADVANTAGES = torch.tensor([1.0, -2.0])
OLD = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, -math.inf]])
MAX_LEN = 4


def logprobs_with_ratios(ratios):
    """logprobs such that exp(logp - OLD) equals ``ratios`` on the mask; padding is 0 (ratio inf)."""
    rows = [
        [o + math.log(r) for o, r in zip(old_row, ratio_row, strict=False)]
        for old_row, ratio_row in zip(OLD.tolist(), ratios, strict=True)
    ]
    rows[1].append(0.0)
    return torch.tensor(rows, requires_grad=True)


def loss_for(loss_type, logprobs, **kwargs):
    return policy_loss(
        logprobs, OLD, ADVANTAGES, MASK, loss_type=loss_type, max_completion_length=MAX_LEN, **kwargs
    )


# With ratio 1 every token's loss is -A: sequence 0 -> [-1, -1, -1], sequence 1 -> [2, 2].
# grpo/gspo: (mean(-1,-1,-1) + mean(2,2)) / 2 = 0.5; dapo: (-3 + 4) / 5 = 0.2; dr_grpo: 1 / (2 * 4).
RATIO_ONE = {"grpo": 0.5, "gspo": 0.5, "dapo": 0.2, "dr_grpo": 0.125}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_loss_ratio_one(loss_type):
    out = loss_for(loss_type, logprobs_with_ratios([[1, 1, 1], [1, 1]]))
    assert out.loss.item() == pytest.approx(RATIO_ONE[loss_type], abs=1e-6)
    assert out.clip_low_fraction == 0.0 and out.clip_high_fraction == 0.0
    assert out.ratio_mean == pytest.approx(1.0, abs=1e-6)
    assert out.kl is None


# Token ratios (eps 0.2, clip range [0.8, 1.2]):
#   seq 0, A=+1: 1.5 -> min(1.5, 1.2) = 1.2 (high clip active); 1.1 -> 1.1; 0.5 -> min(0.5, 0.8) = 0.5
#                (below the range but A > 0: the unclipped term is the minimum, clip not active)
#   seq 1, A=-2: 0.5 -> min(-1.0, -1.6) = -1.6 (low clip active); 1.5 -> min(-3.0, -2.4) = -3.0 (not active)
# token losses: [-1.2, -1.1, -0.5] (sum -2.8), [1.6, 3.0] (sum 4.6); total 1.8 over 5 tokens
TOKEN_RATIOS = [[1.5, 1.1, 0.5], [0.5, 1.5]]
CLIPPED = {"grpo": (-2.8 / 3 + 4.6 / 2) / 2, "dapo": 1.8 / 5, "dr_grpo": 1.8 / (2 * MAX_LEN)}


@pytest.mark.parametrize("loss_type", ["grpo", "dapo", "dr_grpo"])
def test_loss_token_clipping(loss_type):
    out = loss_for(loss_type, logprobs_with_ratios(TOKEN_RATIOS))
    assert out.loss.item() == pytest.approx(CLIPPED[loss_type], abs=1e-5)
    assert out.clip_low_fraction == pytest.approx(1 / 5)
    assert out.clip_high_fraction == pytest.approx(1 / 5)
    assert out.ratio_mean == pytest.approx((1.5 + 1.1 + 0.5 + 0.5 + 1.5) / 5, abs=1e-6)
    out.loss.backward()  # padding holds inf / -inf: no NaN may reach the loss or the gradient


def test_loss_asymmetric_clip_higher():
    # epsilon_high = 0.6: range [0.8, 1.6], so 1.5 with A=+1 is no longer clipped: seq 0 -> [-1.5, -1.1, -0.5]
    out = loss_for("dapo", logprobs_with_ratios(TOKEN_RATIOS), epsilon_high=0.6)
    assert out.loss.item() == pytest.approx((-3.1 + 4.6) / 5, abs=1e-5)
    assert out.clip_high_fraction == 0.0 and out.clip_low_fraction == pytest.approx(1 / 5)


def test_gspo_uses_the_sequence_ratio():
    # s_0 = (1.5 * 1.1 * 0.5) ** (1/3) = 0.825 ** (1/3) ~ 0.9379 and s_1 = (0.5 * 1.5) ** (1/2) ~ 0.8660:
    # both inside [0.8, 1.2], so no clipping. Token losses are -A * s_i at every token of sequence i.
    s0, s1 = 0.825 ** (1 / 3), 0.75**0.5
    out = loss_for("gspo", logprobs_with_ratios(TOKEN_RATIOS))
    assert out.loss.item() == pytest.approx((-s0 + 2 * s1) / 2, abs=1e-5)
    assert out.clip_low_fraction == 0.0 and out.clip_high_fraction == 0.0
    assert out.ratio_mean == pytest.approx((3 * s0 + 2 * s1) / 5, abs=1e-6)


def test_gspo_clipping():
    # s_0 = (2 * 1 * 1.125) ** (1/3) = 2.25 ** (1/3) ~ 1.31 > 1.2 with A=+1: objective 1.2 on 3 tokens
    # (high clip active)
    # s_1 = (0.25 * 1) ** (1/2) = 0.5 < 0.8 with A=-2: min(-1.0, -1.6) = -1.6 on 2 tokens (low clip)
    out = loss_for("gspo", logprobs_with_ratios([[2.0, 1.0, 1.125], [0.25, 1.0]]))
    assert out.loss.item() == pytest.approx((-1.2 + 1.6) / 2, abs=1e-5)
    assert out.clip_high_fraction == pytest.approx(3 / 5)
    assert out.clip_low_fraction == pytest.approx(2 / 5)
    assert out.ratio_mean == pytest.approx((3 * 2.25 ** (1 / 3) + 2 * 0.5) / 5, abs=1e-6)


# -- gradients --------------------------------------------------------------------------------------------


def test_grpo_gradient_at_ratio_one():
    # d loss / d logp_t = -A_i / (|o_i| * B) on the mask: seq 0: -1 / (3 * 2); seq 1: 2 / (2 * 2); padding 0.
    logprobs = torch.tensor([[-1.0, -2.0, -0.5], [-1.5, -0.7, 0.0]], requires_grad=True)
    out = policy_loss(logprobs, logprobs.detach(), ADVANTAGES, MASK)
    out.loss.backward()
    close(logprobs.grad, [[-1 / 6, -1 / 6, -1 / 6], [0.5, 0.5, 0.0]])


def test_gspo_gradient_flows_per_token():
    # Token form: d s_i,t / d logp_t = s_i, so the gradient is -A_i * s_i / (|o_i| * B) at every token.
    s0, s1 = 0.825 ** (1 / 3), 0.75**0.5
    logprobs = logprobs_with_ratios(TOKEN_RATIOS)
    loss_for("gspo", logprobs).loss.backward()
    close(logprobs.grad, [[-s0 / 6] * 3, [s1 / 2, s1 / 2, 0.0]])


def test_clipped_tokens_get_no_gradient():
    logprobs = logprobs_with_ratios(TOKEN_RATIOS)
    loss_for("dapo", logprobs).loss.backward()
    # active clips (seq 0 token 0, seq 1 token 0) have zero gradient; others -A * ratio / 5
    close(logprobs.grad, [[0.0, -1.1 / 5, -0.5 / 5], [0.0, 2 * 1.5 / 5, 0.0]])


# -- KL penalty -------------------------------------------------------------------------------------------

K1 = 0.5 - math.log(0.5) - 1  # ref - logp = log(1/2) on sequence 0
K2 = 2 - math.log(2) - 1  # ref - logp = log(2) on sequence 1
KL_TERM = {
    "grpo": (K1 + K2) / 2,
    "gspo": (K1 + K2) / 2,
    "dapo": (3 * K1 + 2 * K2) / 5,
    "dr_grpo": (3 * K1 + 2 * K2) / (2 * MAX_LEN),
}


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_beta_adds_kl_aggregated_like_the_loss(loss_type):
    logprobs = logprobs_with_ratios([[1, 1, 1], [1, 1]])
    base = logprobs.detach()
    ref = torch.stack([base[0] + math.log(0.5), base[1] + math.log(2.0)])
    ref[1, 2] = -math.inf  # padding
    out = loss_for(loss_type, logprobs, beta=0.1, ref_logprobs=ref)
    assert out.loss.item() == pytest.approx(RATIO_ONE[loss_type] + 0.1 * KL_TERM[loss_type], abs=1e-6)
    assert out.kl == pytest.approx((3 * K1 + 2 * K2) / 5, abs=1e-6)
    out.loss.backward()
    assert torch.isfinite(logprobs.grad).all()


def test_beta_without_ref_is_an_error():
    with pytest.raises(ValueError, match="ref_logprobs"):
        loss_for("grpo", logprobs_with_ratios([[1, 1, 1], [1, 1]]), beta=0.1)


# -- micro-batch additivity -------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batches_sum_to_the_full_batch(loss_type):
    generator = torch.Generator().manual_seed(0)
    B, T = 6, 5
    old = -torch.rand(B, T, generator=generator) * 3
    logprobs = (old + torch.randn(B, T, generator=generator) * 0.4).requires_grad_()  # some ratios clip
    ref = old + torch.randn(B, T, generator=generator) * 0.3
    advantages = torch.randn(B, generator=generator)
    mask = torch.tensor(
        [
            [1, 1, 1, 1, 1],
            [1, 1, 0, 0, 0],
            [1, 0, 0, 0, 0],
            [1, 1, 1, 0, 0],
            [0, 1, 1, 1, 1],
            [0, 0, 0, 0, 0],
        ],
        dtype=torch.float32,
    )
    kwargs = dict(loss_type=loss_type, beta=0.05, max_completion_length=T)

    full = policy_loss(logprobs, old, advantages, mask, ref_logprobs=ref, **kwargs).loss
    (full_grad,) = torch.autograd.grad(full, logprobs)
    counts = dict(num_sequences=B, num_tokens=int(mask.sum()))
    halves = [
        policy_loss(
            logprobs[rows],
            old[rows],
            advantages[rows],
            mask[rows],
            ref_logprobs=ref[rows],
            **counts,
            **kwargs,
        ).loss
        for rows in (slice(0, 2), slice(2, B))
    ]
    total = halves[0] + halves[1]
    (total_grad,) = torch.autograd.grad(total, logprobs)
    assert total.item() == pytest.approx(full.item(), abs=1e-6)
    torch.testing.assert_close(total_grad, full_grad)

    # and the micro-batch's own counts are not the full batch's: without them the sum differs
    own = sum(
        policy_loss(
            logprobs[rows], old[rows], advantages[rows], mask[rows], ref_logprobs=ref[rows], **kwargs
        ).loss.item()
        for rows in (slice(0, 2), slice(2, B))
    )
    assert own != pytest.approx(full.item(), abs=1e-6)


# -- argument checks --------------------------------------------------------------------------------------


def test_unknown_loss_type_names_the_allowed_values():
    with pytest.raises(ValueError, match="grpo, dapo, dr_grpo, gspo"):
        loss_for("ppo", logprobs_with_ratios([[1, 1, 1], [1, 1]]))


def test_dr_grpo_needs_max_completion_length():
    with pytest.raises(ValueError, match="max_completion_length"):
        policy_loss(torch.zeros(2, 3), torch.zeros(2, 3), ADVANTAGES, MASK, loss_type="dr_grpo")


def test_empty_mask_gives_zero_loss_and_metrics():
    logprobs = torch.zeros(2, 3, requires_grad=True)
    out = policy_loss(logprobs, torch.zeros(2, 3), ADVANTAGES, torch.zeros(2, 3), loss_type="dapo")
    assert out.loss.item() == 0.0 and out.ratio_mean == 0.0 and out.clip_low_fraction == 0.0
    out.loss.backward()
