"""The GRPO loop. Read it top to bottom: sample groups -> score -> advantages -> loss -> step -> log.

Each step draws ``prompts_per_step`` training examples and ``group_size`` completions for each, scores
them with the environment's rubric, turns rewards into advantages *within each group* (reward minus the
group mean, optionally over the group std), and takes ``num_iterations`` optimizer steps on the clipped
surrogate. The math is in :mod:`rewardlab.train.grpo`; this file is the loop and its bookkeeping.
"""

from __future__ import annotations

import functools
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rewardlab import faults
from rewardlab.config import TrainConfig
from rewardlab.console import progress, say
from rewardlab.data.curriculum import Curriculum
from rewardlab.envs.base import Environment
from rewardlab.envs.registry import load_environment_for
from rewardlab.errors import RewardlabError
from rewardlab.eval.run_report import write_run_report
from rewardlab.models.forward import Forward, forward_for
from rewardlab.models.loading import LoraSettings, describe_model, load_model
from rewardlab.rubrics.failures import raise_if_all_errored
from rewardlab.runs import RunStore, collect_manifest
from rewardlab.runs.overlap import record_training_data
from rewardlab.sampling.local import LocalSampler
from rewardlab.trackers import Trackers, require_trackers
from rewardlab.train import checkpoint as ckpt
from rewardlab.train.budget import Budget, parameter_count, refuse_if_spent
from rewardlab.train.common import make_optimizer, make_scheduler, pad_sequences, set_seed
from rewardlab.train.distributed import World, world_for
from rewardlab.train.dynamic_sampling import draw_groups, rewards_of
from rewardlab.train.entropy_control import bonus_for, covariance_selections
from rewardlab.train.grpo import (
    clip_advantages,
    group_advantages,
    policy_loss,
    token_logprobs,
    token_logprobs_and_entropy,
)
from rewardlab.train.health import RunHealth, StepOrders
from rewardlab.train.policies import disable_dropout, largest_dropout, reference_policy, trainable_weights
from rewardlab.train.rollout_engine import rollout_engine, sampling_logprobs
from rewardlab.train.token_stats import FirstPass
from rewardlab.types import Example, ScoredRollout


@dataclass
class TrainResult:
    run_id: str
    run_dir: Path
    adapter_dir: Path
    steps: int
    wall_seconds: float
    final_reward: float
    errored_rollouts: int = 0  # rollouts whose reward or environment errored, out of ``rollouts``
    rollouts: int = 0
    stopped: str | None = None  # why a health alert or the budget stopped the run (status "stopped")


def examples_for_step(pool: list[Example], step: int, per_step: int, seed: int) -> list[Example]:
    """The examples of ``step`` (1-based): consecutive slices of seeded per-epoch shuffles.

    A pure function of (step, seed), so a resumed run sees exactly the prompts it would have seen.
    """
    start = (step - 1) * per_step
    chosen = []
    for position in range(start, start + per_step):
        epoch, index = divmod(position, len(pool))
        chosen.append(pool[epoch_order(len(pool), seed, epoch)[index]])
    return chosen


@functools.lru_cache(maxsize=4)
def epoch_order(size: int, seed: int, epoch: int) -> tuple[int, ...]:
    """The seeded shuffle of ``range(size)`` for one epoch, computed once rather than once per example."""
    order = list(range(size))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return tuple(order)


@dataclass
class Batch:
    """A step's rollouts as tensors: completions right after a common prompt column ``start``."""

    input_ids: torch.Tensor
    attention: torch.Tensor
    mask: torch.Tensor  # (B, S): 1 on model-generated completion tokens that count in the loss
    advantages: torch.Tensor  # (B,)
    start: int

    def rows(self, index: slice) -> Batch:
        return Batch(
            self.input_ids[index], self.attention[index], self.mask[index], self.advantages[index], self.start
        )


def build_batch(
    scored: list[ScoredRollout], advantages: torch.Tensor, pad_id: int, device, widths=None
) -> Batch:
    """``widths``: the (prompt, completion) widths to pad to at least (see ``pad_sequences``)."""
    prompts = [s.rollout.prompt_ids for s in scored]
    completions = [s.rollout.completion_ids for s in scored]
    masks = [
        # Rollouts with an errored reward or environment carry no trustworthy signal: no loss on them.
        [0] * len(s.rollout.completion_ids) if s.errored else s.rollout.completion_mask
        for s in scored
    ]
    input_ids, attention, mask, start = pad_sequences(prompts, completions, masks, pad_id, device, widths)
    return Batch(input_ids, attention, mask, advantages.to(device), start)


def padded_widths(scored: list[ScoredRollout]) -> tuple[int, int]:
    """The (prompt, completion) widths ``build_batch`` pads ``scored`` to."""
    prompts = max(len(s.rollout.prompt_ids) for s in scored)
    return prompts, max(max(len(s.rollout.completion_ids) for s in scored), 1)


def micro_batches(batch: Batch, count: int) -> list[Batch]:
    size = math.ceil(batch.input_ids.shape[0] / count)
    return [batch.rows(slice(i, i + size)) for i in range(0, batch.input_ids.shape[0], size)]


@torch.no_grad()
def sequence_logprobs(forward: Forward, batch: Batch, temperature: float, micro: int) -> torch.Tensor:
    """Log-probs of the completion tokens under the model as it is now (no gradient)."""
    parts = []
    for part in micro_batches(batch, micro):
        logits = forward.suffix_logits(part.input_ids, part.attention, part.start)
        parts.append(token_logprobs(logits, part.input_ids[:, part.start :], temperature))
    return torch.cat(parts)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    total = mask.sum()
    return float((values * mask).sum() / total) if total > 0 else 0.0


def reward_metrics(scored: list[ScoredRollout], zero_std: torch.Tensor) -> dict[str, float]:
    valid = [s for s in scored if not s.errored]
    rewards = torch.tensor([s.reward for s in valid]) if valid else torch.zeros(0)
    metrics = {
        "reward/mean": float(rewards.mean()) if len(valid) else float("nan"),
        "reward/std": float(rewards.std()) if len(valid) > 1 else 0.0,
        "groups/zero_std_fraction": float(zero_std.float().mean()),
        "errors/rollouts": float(sum(s.errored for s in scored)),
    }
    for name in scored[0].components:
        values = [s.components[name] for s in scored if s.components.get(name) is not None]
        if values:
            metrics[f"reward/{name}"] = sum(values) / len(values)
    return metrics


def train(
    config: TrainConfig,
    store: RunStore | None = None,
    parent: str | None = None,
    env: Environment | None = None,
    stop_after_step: int | None = None,
) -> TrainResult:
    """Run (or resume) GRPO training; returns where the adapter landed.

    ``stop_after_step`` ends the process-equivalent of a crash after that step, without finishing the
    run (tests use it to check that ``resume`` reproduces an uninterrupted run).
    """
    started = time.perf_counter()
    world = world_for(config)  # launched by torchrun or accelerate: this process's rank; else a world of one
    config = world.configured(config)  # what cannot work over several processes refused; per-group seeds
    store = world.store(store or RunStore(config.runs_dir))  # rank 0 writes; the others only read
    require_trackers(config.report_to)  # a missing tracker library is said before the model loads

    # -- setup: the run, the environment, the policy, the optimizer ---------------------------------
    resume_from = ckpt.latest(store.get(config.resume).dir) if config.resume else None
    if config.resume and resume_from is None:
        raise RewardlabError(f"run '{config.resume}' has no checkpoint to resume from")
    set_seed(config.seed)
    lora = LoraSettings.from_config(config.lora)  # None: full fine-tuning
    with world.main_first():  # what it caches (a tiny model built, a model fetched), the others find
        env = env or load_environment_for(config.env.name, config.env.args, config.model.name_or_path)
        pool = env.examples("train")
        curriculum = Curriculum.for_run(config, pool, env)  # None when curriculum.mode is off
        model, tokenizer = load_model(
            config.model.name_or_path, config.model.dtype, config.model.device, lora=lora, trainable=True
        )
    model.train()
    dropout = disable_dropout(model) if config.disable_dropout else largest_dropout(model)
    for note in setting_notes(config, dropout):
        say(f"[yellow]note:[/] {note}")
    # The KL reference 'initial': the weights training starts from (a starting adapter's), kept aside.
    initial = trainable_weights(model) if config.beta > 0 and config.reference == "initial" else None
    bonus = bonus_for(config.entropy)
    device = next(model.parameters()).device
    forward = forward_for(model)  # sampling and the update run on the same forward
    sampler = LocalSampler(model, tokenizer, max_batch_size=config.max_batch_size, forward=forward)
    optimizer = make_optimizer(
        model, config.optimizer.learning_rate, config.optimizer.weight_decay, config.optimizer.betas
    )
    scheduler = make_scheduler(
        optimizer,
        config.optimizer.lr_scheduler,
        config.optimizer.warmup_steps,
        config.max_steps * config.num_iterations,
    )
    # With a server's rollouts, the loss's ratio is against the server's policy: its log-probs are kept.
    params = config.sampling.params_for(env, config.group_size, logprobs=config.rollout_engine == "server")
    # Where rollouts are sampled: here, or by a server (checked now, before the run is created).
    engine = rollout_engine(config, model, tokenizer, sampler)
    temperature = config.sampling.temperature  # above 0: the config refuses greedy training
    micro = config.micro_batches

    if resume_from is not None:
        run = store.get(config.resume)
        start_step, totals = ckpt.load(resume_from, model, optimizer, scheduler)
        world.check_resume(totals, run.id)  # on as many processes as it was trained on
        bonus.restore(totals)
        if curriculum:  # refused here, before the run is touched, if the checkpoint's does not match
            curriculum.restore(totals, start_step, run.id)
        refuse_if_spent(config.budget, totals, run.id)  # before the run is marked running again
        store.truncate_metrics(run.id, after_step=start_step)
        store.set_status(run.id, "running")
        say(f"resuming run {run.id} after step {start_step}")
    else:
        run = world.from_main(new_run, config, store, env, pool, parent, world)
        start_step, totals = 0, {"reward_errors": 0.0, "rollouts": 0.0, **world.counters()}
    world.broadcast_parameters(p for p in model.parameters() if p.requires_grad)

    budget = Budget(config.budget, totals, parameter_count(model), started)  # counts live in totals
    # the metrics the store gets, also to report_to's trackers (started inside the run's failure handling);
    # only the process that writes the store reports
    reporting = config.report_to if world.main else []
    trackers = Trackers(reporting, run, config.model_dump(), store.root, start_step)
    health = RunHealth(config.health, store, run.id, resumed_after=start_step, also_log=trackers.log)
    orders = StepOrders()
    last_reward = float("nan")

    def sample(step: int, sampler):
        # 1-2. sample a group of completions for each prompt (adapters on, no dropout, KV cache) and
        # score them with the rubric (errors stay errors); with dynamic sampling, draw again until
        # enough groups have signal
        examples = (
            curriculum.examples_for_step(step)
            if curriculum
            else examples_for_step(pool, step, config.prompts_per_step, config.seed)
        )
        examples = world.shard(examples)  # this process's groups (all of them in a world of one)
        check = check_first_scores(totals, world)
        seeds = world.seed_streams(config, step)  # None: the step's batch is one random stream
        return draw_groups(env, sampler, params, config, pool, step, examples, check, seeds)

    with (
        store.failure_recorded(run.id),
        trackers,
        progress(f"train {run.id}", config.max_steps) as advance,
        engine.running(run.id, start_step, config.max_steps, sample),
    ):
        if curriculum:  # its state rides in the checkpoint's counters
            curriculum.attach(totals, store, run.id)
        advance(start_step)
        for step in range(start_step + 1, config.max_steps + 1):
            step_started = time.perf_counter()
            faults.at_step(step)

            drawn = engine.draw(step)  # 1-2. (see sample above; ahead, with max_off_policy_steps)
            rollouts, scored = drawn.rollouts, drawn.scored
            generation_seconds = time.perf_counter() - step_started

            # 3. advantages: how much better than the rest of its group each completion did
            rewards, valid = rewards_of(drawn.train)
            advantages, _ = group_advantages(rewards, config.group_size, config.scale_rewards, valid)
            advantages = clip_advantages(advantages, config.entropy.advantage_clip)
            # padded as the whole batch is, whatever share of it this process holds
            widths = world.largest(*padded_widths(drawn.train))
            batch = build_batch(drawn.train, advantages, tokenizer.pad_token_id, device, widths)
            num_sequences = batch.input_ids.shape[0]
            num_tokens = int(batch.mask.sum())
            # the loss is normalised by the whole batch's counts: every process's share of it
            num_sequences, num_tokens = map(int, world.total(num_sequences, num_tokens))

            # 4. log-probs to hold fixed: the sampling policy's (for several passes) and the reference's
            if engine.sampling_logprobs:  # a server's: those of the adapter that sampled the batch
                old_logprobs = sampling_logprobs(drawn.train, batch.mask.shape[1], device)
            elif config.num_iterations > 1:
                old_logprobs = sequence_logprobs(forward, batch, temperature, micro)
            else:
                old_logprobs = None
            ref_logprobs = None
            if config.beta > 0:
                with reference_policy(model, config.reference, initial):
                    ref_logprobs = sequence_logprobs(forward, batch, temperature, micro)

            # 5. the update: clipped surrogate, accumulated over micro-batches, one optimizer step per pass
            stats = {
                "loss": 0.0,
                "clip_low": 0.0,
                "clip_high": 0.0,
                "kl": 0.0,
                "entropy": 0.0,
                "grad_norm": 0.0,
                "ratio_deviation": 0.0,
                "cov_selected": 0.0,
            }
            entropy_coef = bonus.current
            first_pass = FirstPass(drawn.train)  # each token's log-prob and entropy, for the stored rollouts
            update_started = time.perf_counter()
            for iteration in range(config.num_iterations):
                offset = 0
                for index, part in enumerate(micro_batches(batch, micro)):
                    rows = slice(offset, offset + part.input_ids.shape[0])
                    offset = rows.stop
                    logits = forward.suffix_logits(part.input_ids, part.attention, part.start)
                    logprobs, entropy = token_logprobs_and_entropy(
                        logits,
                        part.input_ids[:, part.start :],
                        temperature,
                        with_entropy=iteration == 0 or entropy_coef > 0,
                        entropy_grad=entropy_coef > 0,
                    )
                    clip_cov, kl_cov = covariance_selections(
                        config.entropy,
                        logprobs,
                        part.advantages,
                        part.mask,
                        (config.seed, step, iteration, index),
                    )
                    out = policy_loss(
                        logprobs,
                        old_logprobs[rows] if old_logprobs is not None else logprobs.detach(),
                        part.advantages,
                        part.mask,
                        loss_type=config.loss_type,
                        epsilon_low=config.epsilon_low,
                        epsilon_high=config.epsilon_high,
                        beta=config.beta,
                        ref_logprobs=ref_logprobs[rows] if ref_logprobs is not None else None,
                        max_completion_length=params.max_new_tokens,
                        num_sequences=num_sequences,
                        num_tokens=num_tokens,
                        entropy=entropy if entropy_coef > 0 else None,
                        entropy_coef=entropy_coef,
                        clip_cov=clip_cov,
                        kl_cov=kl_cov,
                        kl_cov_coef=config.entropy.kl_cov_coef,
                    )
                    out.loss.backward()
                    share = part.mask.sum().item() / max(num_tokens, 1) / config.num_iterations
                    stats["loss"] += out.loss.item() / config.num_iterations
                    stats["clip_low"] += out.clip_low_fraction * share
                    stats["clip_high"] += out.clip_high_fraction * share
                    stats["kl"] += (out.kl or 0.0) * share
                    stats["cov_selected"] += out.cov_selected_fraction * share
                    if iteration == 0:  # the sampling policy's entropy and ratio: first pass only
                        first_pass.add(logprobs, entropy)
                        stats["entropy"] += (
                            masked_mean(entropy.detach(), part.mask)
                            * part.mask.sum().item()
                            / max(num_tokens, 1)
                        )
                        stats["ratio_deviation"] = max(stats["ratio_deviation"], out.ratio_max_deviation)
                world.sum_gradients(model.parameters())  # every process's share: the whole batch's gradient
                grad_norm = torch.nn.utils.clip_grad_norm_(
                    [p for p in model.parameters() if p.requires_grad], config.optimizer.max_grad_norm
                )
                stats["grad_norm"] += float(grad_norm) / config.num_iterations
                optimizer.step()
                if iteration == 0:
                    faults.pause_point("update")  # a crash test's kill lands between the two
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            update_seconds = time.perf_counter() - update_started
            engine.after_update(step)  # a server loads the adapter just trained
            # every process's rollouts and loss statistics: what follows counts and logs the whole batch
            stats = world.combined_stats(stats, largest=["ratio_deviation"], same=["grad_norm"])
            drawn = world.whole(drawn)
            rollouts, scored = drawn.rollouts, drawn.scored

            # 6. log what a person needs to see collapse or reward hacking coming
            step_seconds = time.perf_counter() - step_started
            lengths = torch.tensor([float(r.num_completion_tokens) for r in rollouts])
            zero_std = drawn.zero_std
            generated = float(lengths.sum())
            totals["reward_errors"] += sum(s.errored for s in scored)
            totals["rollouts"] += len(scored)
            metrics = {
                **reward_metrics(scored, zero_std),
                "loss": stats["loss"],
                "entropy": stats["entropy"],
                "clip/low_fraction": stats["clip_low"],
                "clip/high_fraction": stats["clip_high"],
                "grad_norm": stats["grad_norm"],
                "learning_rate": scheduler.get_last_lr()[0],
                "completion/mean_length": float(lengths.mean()),
                "completion/max_length": float(lengths.max()),
                "completion/truncated_fraction": sum(r.truncated for r in rollouts) / len(rollouts),
                "throughput/tokens_per_second": generated / step_seconds,
                "time/step_seconds": step_seconds,
                "time/generation_seconds": generation_seconds,
                "time/update_seconds": update_seconds,
            }
            if config.beta > 0:
                metrics["kl"] = stats["kl"]
            metrics.update(control_metrics(config, drawn, stats, entropy_coef))
            metrics.update(engine.step_metrics(step, stats))  # staleness, adapter sync
            bonus.update(stats["entropy"])
            totals.update(bonus.state())
            if curriculum:  # per-level reward and pass rate; promotes when due
                metrics.update(curriculum.observe(step, scored))
            metrics.update(budget.grpo_step(rollouts, num_tokens, config.num_iterations, config.beta > 0))
            store.log_metrics(run.id, step, metrics)
            trackers.log(step, metrics)
            # alerts (warn, checkpoint or stop) and the budget's limits; the checkpoint and stop come below
            orders = health.after_step(step, metrics) | budget.check(store, run.id, step)
            orders = world.broadcast(orders)  # rank 0's clock and alerts decide for every process
            if config.log_rollouts_per_step:
                stride = max(1, len(scored) // config.log_rollouts_per_step)
                logged = scored[::stride][: config.log_rollouts_per_step]
                store.log_rollouts(run.id, step, "train", logged, first_pass.tokens_of(logged, tokenizer))
            last_reward = metrics["reward/mean"]
            advance(reward=last_reward, entropy=stats["entropy"])

            # 7. checkpoint: adapter, optimizer, scheduler, RNG and counters, enough to resume exactly
            every = config.checkpoint_every and step % config.checkpoint_every == 0
            if every or step == config.max_steps or orders.checkpoint:
                world.from_main(ckpt.save, run.dir, step, model, tokenizer, optimizer, scheduler, totals)
            if orders.stop:
                break  # cleanly: the final adapter, the summary, status "stopped"
            if stop_after_step is not None and step >= stop_after_step and step < config.max_steps:
                store.set_status(run.id, "interrupted")
                trackers.finish("interrupted")
                faults.at_step(None)
                return TrainResult(
                    run.id,
                    run.dir,
                    ckpt.path(run.dir, step),
                    step,
                    time.perf_counter() - started,
                    last_reward,
                )

    faults.at_step(None)
    final_dir = world.from_main(ckpt.export_final, run.dir, model, tokenizer)
    wall = time.perf_counter() - started
    steps = step if orders.stop else config.max_steps
    store.finish(
        run.id,
        status="stopped" if orders.stop else "completed",
        summary={
            "steps": steps,
            "final_reward": last_reward,
            "reward_errors": totals["reward_errors"],
            "rollouts": totals["rollouts"],
            "adapter_dir": str(final_dir),
            "wall_seconds": wall,
            "cost": budget.summary(),
        },
    )
    trackers.finish("stopped" if orders.stop else "completed")
    if world.main:
        write_run_report(store, run.id)
    return TrainResult(
        run.id,
        run.dir,
        final_dir,
        steps,
        wall,
        last_reward,
        int(totals["reward_errors"]),
        int(totals["rollouts"]),
        orders.stop,
    )


def new_run(config: TrainConfig, store: RunStore, env: Environment, pool, parent, world: World):
    """Create the run (rank 0's work): config and manifest, the rubric for the audit, the training data."""
    described = {"model": describe_model(config.model.name_or_path)}
    if world.size > 1:
        described["processes"] = world.size
    manifest = collect_manifest(config.seed, described)
    run = store.create_run("train", config.model_dump(), manifest, name=config.run_name, parent=parent)
    # What the audit needs to judge the reward components: their weights and which one is correctness.
    store.update_summary(run.id, {"rubric": {"weights": env.rubric.weights, "primary": env.rubric.primary}})
    record_training_data(run.dir, ((example.prompt, example.answer) for example in pool))
    return run


def check_first_scores(totals: dict[str, float], world: World | None = None):
    """A check for each round's scores: until something has scored in this run, all-errored rewards
    stop it with the reason (a broken reward function should not train 100 steps on nothing). With several
    processes, only when every process's rewards all errored (then every process stops)."""

    def check(scored: list[ScoredRollout]) -> None:
        nothing_scored = totals["reward_errors"] == totals["rollouts"]
        if nothing_scored and (world is None or world.everywhere(all(s.errored for s in scored))):
            raise_if_all_errored(scored)

    return check


def control_metrics(config: TrainConfig, drawn, stats: dict[str, float], entropy_coef: float) -> dict:
    """The metrics of the optional controls, each only when it is on."""
    metrics: dict[str, float] = {}
    if config.num_iterations > 1:
        # 0 when the stored log-probs and the first training pass compute the same function (no dropout)
        metrics["ratio/first_pass_max_deviation"] = stats["ratio_deviation"]
    if config.dynamic_sampling.enabled:
        metrics["sampling/draws"] = float(drawn.draws)
        metrics["sampling/groups_drawn"] = float(len(drawn.zero_std))
        metrics["sampling/groups_trained"] = float(len(drawn.train) // config.group_size)
    if config.entropy.target is not None:
        metrics["entropy/bonus_coef"] = entropy_coef
    if config.entropy.clip_cov_fraction or config.entropy.kl_cov_fraction:
        metrics["entropy/cov_selected_fraction"] = stats["cov_selected"]
    return metrics


def setting_notes(config: TrainConfig, dropout: float) -> list[str]:
    """What a user should know before the run: settings that cannot do what they seem to."""
    notes = []
    if config.disable_dropout and dropout > 0:
        notes.append(
            f"dropout (up to {dropout:g}) is off while training (disable_dropout = true): sampling runs "
            "without it, and the importance ratio must compare the same function"
        )
    elif dropout > 0 and config.num_iterations > 1:
        notes.append(
            f"dropout {dropout:g} is on while training but not while sampling: the first pass's ratio "
            "pi/pi_old will not be 1 (set disable_dropout = true to make it exact)"
        )
    if config.loss_type == "gspo" and config.num_iterations == 1:
        notes.append(
            "gspo with num_iterations = 1: every sequence ratio is exactly 1 on the single pass, so its "
            "clipping never acts; use num_iterations > 1 for GSPO's sequence-level clipping"
        )
    if config.loss_type == "gspo" and max(config.epsilon_low, config.epsilon_high) > 0.01:
        notes.append(
            f"gspo with epsilon {config.epsilon_low:g}/{config.epsilon_high:g}: a sequence ratio (the mean "
            "of its token log-ratios) moves far less than a token's, so the clip acts far less than GSPO "
            "intends; the GSPO paper uses 3e-4/4e-4 (the default when epsilon is not set)"
        )
    if config.entropy.kl_cov_fraction and config.num_iterations == 1:
        notes.append(
            "KL-Cov with num_iterations = 1: its penalty |log pi - log pi_old| is 0 with no gradient on a "
            "single pass, so it only removes the clip; use num_iterations > 1"
        )
    return notes
