"""The loss variants against their papers' formulas, and the trainer's controls: paper defaults per loss
type, dropout off while training, the KL reference, dynamic sampling, entropy control, top-k."""

import math

import pytest
import torch

from rewardlab.config import TrainConfig
from rewardlab.config.commands import LOSS_DEFAULTS, DemoConfig
from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric
from rewardlab.runs import RunStore
from rewardlab.sampling.local import sample_next
from rewardlab.train.entropy_control import AdaptiveEntropyBonus
from rewardlab.train.grpo import (
    clip_advantages,
    clip_cov_selection,
    group_advantages,
    kl_cov_selection,
    policy_loss,
    token_covariance,
    token_entropy,
    token_logprobs_and_entropy,
)
from rewardlab.train.trainer import setting_notes, train
from test_train import digit_fraction, easy_config

# -- paper defaults ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type", sorted(LOSS_DEFAULTS))
def test_each_loss_type_gets_its_papers_settings(loss_type):
    config = TrainConfig.model_validate({"loss_type": loss_type})
    expected = LOSS_DEFAULTS[loss_type]
    got = {name: getattr(config, name) for name in expected}
    assert got == expected
    assert TrainConfig.model_validate({"loss_type": loss_type, "epsilon_high": 0.5}).epsilon_high == 0.5


def test_dr_grpo_does_not_scale_and_gspo_clips_at_sequence_level():
    assert TrainConfig.model_validate({"loss_type": "dr_grpo"}).scale_rewards is False
    gspo = TrainConfig.model_validate({"loss_type": "gspo"})
    assert (gspo.epsilon_low, gspo.epsilon_high) == (3e-4, 4e-4)
    # the demo presets dapo; naming another loss type there starts from that type's settings
    demo = DemoConfig.model_validate({"train": {"loss_type": "gspo"}})
    assert (demo.train.epsilon_low, demo.train.max_steps) == (3e-4, 150)
    assert DemoConfig.model_validate({}).train.epsilon_high == 0.28


def test_gspo_notes_say_when_its_clipping_cannot_act():
    single = TrainConfig.model_validate({"loss_type": "gspo"})
    assert any("never acts" in note for note in setting_notes(single, 0.0))
    token_eps = TrainConfig.model_validate({"loss_type": "gspo", "num_iterations": 2, "epsilon_low": 0.2})
    assert any("far less than GSPO intends" in note for note in setting_notes(token_eps, 0.0))
    paper = TrainConfig.model_validate({"loss_type": "gspo", "num_iterations": 2})
    assert setting_notes(paper, 0.0) == []
    assert setting_notes(TrainConfig.model_validate({}), 0.0) == []  # dapo, defaults: nothing to say


# -- each variant against its formula, by hand --------------------------------------------------------------


def batch(seed=0, rows=4, length=5):
    generator = torch.Generator().manual_seed(seed)
    old = -torch.rand(rows, length, generator=generator) * 2 - 0.1
    logprobs = (old + 0.3 * torch.randn(rows, length, generator=generator)).requires_grad_()
    mask = torch.ones(rows, length, dtype=torch.bool)
    mask[0, 3:] = False
    mask[2, 1:] = False
    advantages = torch.tensor([1.0, -0.5, 2.0, -1.5])
    return logprobs, old, advantages, mask


def test_dr_grpo_matches_its_paper():
    """Dr. GRPO: A = r - mean(r), no std; loss = -(1 / (G * L_max)) sum_i sum_t min(r A, clip(r) A)."""
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0, 1.0, 1.0])
    advantages, _ = group_advantages(rewards, 4, scale_rewards=False)
    assert advantages.tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5, 1.5, -0.5, -0.5, -0.5])
    logprobs, old, adv, mask = batch()
    out = policy_loss(logprobs, old, adv, mask, loss_type="dr_grpo", max_completion_length=7)
    expected = 0.0
    for i in range(4):
        for t in range(5):
            if mask[i, t]:
                r = math.exp(float(logprobs[i, t].detach() - old[i, t]))
                a = float(adv[i])
                expected -= min(r * a, min(max(r, 0.8), 1.2) * a)
    assert float(out.loss.detach()) == pytest.approx(expected / (4 * 7), rel=1e-5)


def test_dapo_and_grpo_aggregations_match_their_papers():
    logprobs, old, adv, mask = batch(1)
    ratio = torch.exp(logprobs.detach() - old)
    per_token = -torch.minimum(ratio * adv[:, None], ratio.clamp(0.8, 1.28) * adv[:, None])
    dapo = policy_loss(logprobs, old, adv, mask, loss_type="dapo", epsilon_high=0.28)
    assert float(dapo.loss.detach()) == pytest.approx(float(per_token[mask].sum() / mask.sum()), rel=1e-5)
    grpo = policy_loss(logprobs, old, adv, mask, loss_type="grpo", epsilon_high=0.28)
    means = [float(per_token[i][mask[i]].mean()) for i in range(4)]
    assert float(grpo.loss.detach()) == pytest.approx(sum(means) / 4, rel=1e-5)


def test_gspo_matches_the_sequence_objective_and_its_gradient():
    """GSPO: s_i = exp(mean_t log(pi/pi_old)); J = mean_i min(s_i A_i, clip(s_i, 1-e, 1+e) A_i)."""
    logprobs, old, adv, mask = batch(2)
    logprobs = (
        old + 0.001 * torch.randn(old.shape, generator=torch.Generator().manual_seed(3))
    ).requires_grad_()
    out = policy_loss(logprobs, old, adv, mask, loss_type="gspo", epsilon_low=3e-4, epsilon_high=4e-4)
    out.loss.backward()
    ours = logprobs.grad.clone()

    direct = logprobs.detach().clone().requires_grad_()
    terms = []
    for i in range(4):
        s = torch.exp((direct[i] - old[i])[mask[i]].mean())
        terms.append(-torch.minimum(s * adv[i], s.clamp(1 - 3e-4, 1 + 4e-4) * adv[i]))
    objective = torch.stack(terms).mean()
    objective.backward()
    assert float(out.loss.detach()) == pytest.approx(float(objective.detach()), rel=1e-5)
    assert torch.allclose(ours[mask], direct.grad[mask], atol=1e-6)
    # at this epsilon the clip acts on some sequences (zero gradient) and not on others
    assert 0 < out.clip_low_fraction + out.clip_high_fraction < 1


# -- entropy control -----------------------------------------------------------------------------------------


def test_advantage_clipping():
    values = torch.tensor([-3.0, -0.5, 0.0, 2.5])
    assert clip_advantages(values, 1.0).tolist() == [-1.0, -0.5, 0.0, 1.0]
    assert clip_advantages(values, None) is values


def test_clip_cov_cuts_the_gradient_of_tokens_in_its_window():
    logprobs, old, adv, mask = batch(4)
    covariance = token_covariance(logprobs, adv, mask)
    centred = logprobs.detach() - logprobs.detach()[mask].mean()
    by_hand = centred * (adv[:, None] - adv[:, None].expand_as(centred)[mask].mean())
    assert torch.allclose(covariance[mask], by_hand[mask])
    assert torch.isinf(covariance[~mask]).all()  # padding is never selected
    low, high = 0.05, 10.0
    chosen = clip_cov_selection(covariance, mask, 0.2, low, high, torch.Generator().manual_seed(0))
    in_window = mask & (covariance >= low) & (covariance <= high)
    assert int(chosen.sum()) == min(int(0.2 * mask.sum()), int(in_window.sum())) > 0
    assert not (chosen & ~in_window).any()
    out = policy_loss(logprobs, old, adv, mask, clip_cov=chosen)
    out.loss.backward()
    assert (logprobs.grad[chosen] == 0).all() and (logprobs.grad[mask & ~chosen] != 0).any()
    assert out.cov_selected_fraction == pytest.approx(float(chosen.sum() / mask.sum()))


def test_kl_cov_penalises_the_largest_covariances_without_clipping():
    logprobs, old, adv, mask = batch(5)
    covariance = token_covariance(logprobs, adv, mask)
    chosen = kl_cov_selection(covariance, mask, 0.25)
    count = int(0.25 * mask.sum())
    assert int(chosen.sum()) == count
    assert covariance[chosen].min() >= covariance[mask & ~chosen].max()
    out = policy_loss(logprobs, old, adv, mask, loss_type="dapo", kl_cov=chosen, kl_cov_coef=2.0)
    ratio = torch.exp(logprobs.detach() - old)
    per_token = -ratio * adv[:, None] + torch.where(chosen, 2.0 * (logprobs.detach() - old).abs(), 0.0)
    assert float(out.loss.detach()) == pytest.approx(float(per_token[mask].sum() / mask.sum()), rel=1e-5)
    assert out.clip_low_fraction == out.clip_high_fraction == 0.0  # no clip in KL-Cov


def test_entropy_bonus_is_subtracted_and_raises_the_entropy():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 11) * 3
    logits.requires_grad_()
    ids = torch.randint(0, 11, (2, 3))
    mask = torch.ones(2, 3, dtype=torch.bool)
    logprobs, entropy = token_logprobs_and_entropy(logits, ids, entropy_grad=True)
    zeros = torch.zeros(2)
    plain = policy_loss(logprobs, logprobs.detach(), zeros, mask, loss_type="dapo")
    bonus = policy_loss(
        logprobs, logprobs.detach(), zeros, mask, loss_type="dapo", entropy=entropy, entropy_coef=0.5
    )
    assert float(bonus.loss.detach()) == pytest.approx(
        float(plain.loss.detach()) - 0.5 * float(entropy.detach().mean()), rel=1e-5
    )
    bonus.loss.backward()
    with torch.no_grad():
        stepped = logits - 1.0 * logits.grad
    assert float(token_entropy(stepped).mean()) > float(entropy.detach().mean())


def test_adaptive_bonus_follows_skywork_or1():
    bonus = AdaptiveEntropyBonus(target=0.5, step=0.01, ceiling=0.025)
    assert bonus.current == 0.0  # nothing known yet
    bonus.update(0.8)  # above the target: the coefficient stays at 0
    assert (bonus.coef, bonus.current) == (0.0, 0.0)
    for _ in range(4):  # below: it climbs by step, up to the ceiling, and applies
        bonus.update(0.3)
    assert bonus.coef == pytest.approx(0.025) and bonus.current == pytest.approx(0.025)
    bonus.update(0.6)  # back above: it falls and no longer applies
    assert bonus.coef == pytest.approx(0.015) and bonus.current == 0.0
    restored = AdaptiveEntropyBonus(target=0.5, step=0.01, ceiling=0.025)
    restored.restore(bonus.state())
    assert (restored.coef, restored.last_entropy) == (bonus.coef, bonus.last_entropy)


# -- top-k ------------------------------------------------------------------------------------------------


def test_top_k_keeps_the_k_likeliest_and_zero_changes_nothing():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.5, -1.0]] * 400)
    top2 = sample_next(logits, 1.0, 1.0, torch.Generator().manual_seed(0), top_k=2)
    assert set(top2.tolist()) == {1, 3}
    assert sample_next(logits[:5], 5.0, 1.0, None, top_k=1).tolist() == [1] * 5  # top-1 is greedy
    plain = sample_next(logits, 1.0, 0.9, torch.Generator().manual_seed(7))
    off = sample_next(logits, 1.0, 0.9, torch.Generator().manual_seed(7), top_k=0)
    assert torch.equal(plain, off)


# -- the trainer's controls, on the tiny model ------------------------------------------------------------


def half_silent(completion: str, answer: str) -> float:
    """Signal on half the prompts only: the others score 0 whatever the model writes."""
    return digit_fraction(completion) if answer == "live" else 0.0


def env_of(reward) -> SingleTurnEnv:
    rows = [{"prompt": f"say something {i}", "answer": "live" if i % 2 else "dead"} for i in range(32)]
    return SingleTurnEnv(dataset=rows, eval_dataset=rows[:8], rubric=Rubric([reward]))


def config_of(tmp_path, **overrides) -> TrainConfig:
    """test_train's small run, shorter: 3 steps of 4 groups of 4, no rollouts stored."""
    return easy_config(tmp_path, **{"max_steps": 3, "group_size": 4, "log_rollouts_per_step": 0, **overrides})


def series(store, run_id, name):
    return [value for _, value in store.metrics(run_id)[name]]


def test_lora_dropout_is_off_while_training_so_the_first_ratio_is_one(tmp_path):
    store = RunStore(tmp_path / "runs")
    common = {"num_iterations": 2, "lora": {"dropout": 0.3}}
    exact = train(config_of(tmp_path, **common), store, env=env_of(digit_fraction))
    assert max(series(store, exact.run_id, "ratio/first_pass_max_deviation")) < 1e-5
    noisy = train(config_of(tmp_path, **common, disable_dropout=False), store, env=env_of(digit_fraction))
    deviation = series(store, noisy.run_id, "ratio/first_pass_max_deviation")
    assert deviation[0] == 0.0  # step 1: LoRA's B is still 0, so dropout on its branch changes nothing
    assert min(deviation[1:]) > 0.05  # after that, a training pass with dropout is another function


def test_kl_reference_initial_is_the_starting_adapter(tmp_path):
    store = RunStore(tmp_path / "runs")
    env = env_of(digit_fraction)
    start = train(config_of(tmp_path, max_steps=3, optimizer={"learning_rate": 5e-2}), store, env=env)
    from_adapter = {"model": {"name_or_path": str(start.adapter_dir)}, "beta": 0.1, "max_steps": 2}
    initial = train(config_of(tmp_path, **from_adapter), store, env=env)
    base = train(config_of(tmp_path, **from_adapter, reference="base"), store, env=env)
    assert series(store, initial.run_id, "kl")[0] == pytest.approx(0.0, abs=1e-7)
    assert series(store, base.run_id, "kl")[0] > 1e-4  # the adapter it starts from is not the base


def test_dynamic_sampling_fills_the_batch_with_groups_that_have_signal(tmp_path):
    store = RunStore(tmp_path / "runs")
    env = env_of(half_silent)
    dynamic = {"dynamic_sampling": {"enabled": True, "max_draws": 4}, "max_steps": 4, "checkpoint_every": 2}
    plain = train(config_of(tmp_path, max_steps=4), store, env=env)
    assert max(series(store, plain.run_id, "groups/zero_std_fraction")) >= 0.5  # silent groups trained on
    run = train(config_of(tmp_path, **dynamic), store, env=env)
    draws = series(store, run.run_id, "sampling/draws")
    trained = series(store, run.run_id, "sampling/groups_trained")
    drawn = series(store, run.run_id, "sampling/groups_drawn")
    assert max(draws) > 1 and drawn == [4 * d for d in draws]  # silent groups sent it back for more
    assert trained == [4.0] * 4  # every step full of groups with signal

    # resume-exact: the extra draws are a function of (seed, step, round)
    interrupted = train(config_of(tmp_path, **dynamic), store, env=env, stop_after_step=3)
    train(config_of(tmp_path, **dynamic, resume=interrupted.run_id), store, env=env)
    for name in ("sampling/draws", "reward/mean", "loss"):
        assert series(store, interrupted.run_id, name) == pytest.approx(
            series(store, run.run_id, name), rel=1e-5
        )


def test_entropy_controls_run_and_log(tmp_path):
    store = RunStore(tmp_path / "runs")
    entropy = {
        "target": 5.0,
        "coef_step": 0.01,
        "clip_cov_fraction": 0.05,
        "cov_low": -100.0,
        "advantage_clip": 1.0,
    }
    run = train(
        config_of(tmp_path, max_steps=3, entropy=entropy, num_iterations=2), store, env=env_of(digit_fraction)
    )
    coef = series(store, run.run_id, "entropy/bonus_coef")
    # the coefficient a step uses: none known at step 1, then climbing while the entropy stays below 5 nats
    assert coef == pytest.approx([0.0, 0.01, 0.02])
    assert all(f > 0 for f in series(store, run.run_id, "entropy/cov_selected_fraction"))


def test_gspo_with_token_level_methods_is_refused():
    with pytest.raises(ValueError, match="gspo's ratio is per sequence"):
        TrainConfig.model_validate({"loss_type": "gspo", "entropy": {"kl_cov_fraction": 0.01}})


def test_dynamic_sampling_with_a_curriculum_is_refused():
    with pytest.raises(ValueError, match="cannot be combined yet"):
        TrainConfig.model_validate(
            {"dynamic_sampling": {"enabled": True}, "curriculum": {"mode": "adaptive"}}
        )
