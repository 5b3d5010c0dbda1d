"""Evaluation: n examples x r rollouts through the same rollout path training uses, then a summary.

The summary has the mean reward (+/- std) overall and per component, unbiased pass@k for every power of
two up to r (a rollout passes when the rubric's primary component reaches ``pass_threshold``), error
counts with example messages, and latency. Every rollout goes to the run store and to
``results.jsonl`` in the run directory.

Latency is per batch for local models and scripted players (the rollouts of one batch are generated
together, so they have no latency of their own: the time of each batch, every turn included, and the
rollouts per second it comes to) and per request for an endpoint (``model.base_url``), where the summary
also counts requests, retries and failures: a model that is only fast when nothing goes wrong should be
seen to be.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from rewardlab import atomic
from rewardlab.config import EvalConfig
from rewardlab.console import progress
from rewardlab.envs.base import Environment
from rewardlab.envs.registry import load_environment_for
from rewardlab.eval.run_report import write_run_report
from rewardlab.eval.stats import mean_pass_at_k, mean_std
from rewardlab.models.loading import describe_model, load_model
from rewardlab.rubrics.failures import raise_if_all_errored
from rewardlab.runs import RunStore, collect_manifest
from rewardlab.runs.store import to_jsonable
from rewardlab.sampling.base import Sampler
from rewardlab.sampling.local import LocalSampler
from rewardlab.sampling.openai_compat import OpenAISampler, RequestStats
from rewardlab.sampling.scripted import ScriptedSampler, is_scripted
from rewardlab.train.common import set_seed
from rewardlab.types import Example, ScoredRollout


@dataclass
class EvalResult:
    run_id: str
    run_dir: Path
    summary: dict
    scored: list[ScoredRollout]


def ks_up_to(r: int) -> list[int]:
    ks, k = [], 1
    while k <= r:
        ks.append(k)
        k *= 2
    if ks[-1] != r:
        ks.append(r)
    return ks


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q
    low, high = int(position), min(int(position) + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def summarize(
    scored: list[ScoredRollout],
    rubric_primary: str | None,
    rollouts_per_example: int,
    pass_threshold: float,
    wall_seconds: float,
    batch_seconds: list[float] | None = None,
) -> dict:
    # An errored rollout scores 0 here, as in pass@k and in comparisons: a model that crashes the
    # environment or a reward on hard problems must not look better for it. The mean without errored
    # rollouts is kept beside when there are any.
    mean, std = mean_std([0.0 if s.errored else s.reward for s in scored])
    valid = [s.reward for s in scored if not s.errored]
    errored = len(valid) < len(scored)
    components: dict[str, dict[str, float]] = {}
    for name in scored[0].components if scored else []:
        values = [s.components.get(name) or 0.0 for s in scored]
        c_mean, c_std = mean_std(values)
        components[name] = {"mean": c_mean, "std": c_std, "errors": sum(name in s.errors for s in scored)}
    errors = [
        f"{s.rollout.example.id}: {'; '.join(f'{k}: {v}' for k, v in s.errors.items()) or s.rollout.error}"
        for s in scored
        if s.errored
    ]
    by_example: dict[str, list[ScoredRollout]] = defaultdict(list)
    for s in scored:
        by_example[s.rollout.example.id].append(s)
    pass_at: dict[str, float] = {}
    if rubric_primary is not None:
        counts = []
        for group in by_example.values():
            counts.append(
                sum((s.components.get(rubric_primary) or 0.0) >= pass_threshold - 1e-9 for s in group)
            )
        n = min(len(g) for g in by_example.values())
        for k in ks_up_to(min(rollouts_per_example, n)):
            pass_at[f"pass@{k}"] = mean_pass_at_k(counts, n, k)
    return {
        "num_examples": len(by_example),
        "rollouts_per_example": rollouts_per_example,
        "num_rollouts": len(scored),
        "mean_reward": mean,
        "std_reward": std,
        **({"mean_reward_without_errors": statistics.fmean(valid) if valid else None} if errored else {}),
        "components": components,
        "primary": rubric_primary,
        **pass_at,
        "errors": len(errors),
        "error_samples": errors[:5],
        "mean_completion_tokens": statistics.fmean(r.rollout.num_completion_tokens for r in scored)
        if scored
        else 0,
        "truncated_fraction": sum(s.rollout.truncated for s in scored) / max(len(scored), 1),
        **latency_summary(scored, batch_seconds),
        "wall_seconds": wall_seconds,
    }


def latency_summary(scored: list[ScoredRollout], batch_seconds: list[float] | None) -> dict:
    """Per batch when the batches were timed (their rollouts were generated together), else per rollout."""
    if batch_seconds:
        return {
            "latency_per": "batch",
            "latency_mean_s": statistics.fmean(batch_seconds),
            "latency_p50_s": percentile(batch_seconds, 0.5),
            "latency_p95_s": percentile(batch_seconds, 0.95),
            "batches": len(batch_seconds),
            "rollouts_per_batch": len(scored) / len(batch_seconds),
            "rollouts_per_second": len(scored) / sum(batch_seconds)
            if sum(batch_seconds) > 0
            else float("nan"),
        }
    latencies = [s.rollout.latency_s for s in scored]
    return {
        "latency_per": "rollout",
        "latency_mean_s": statistics.fmean(latencies) if latencies else float("nan"),
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
    }


def request_summary(stats: RequestStats) -> dict:
    """Latency per request (its successful attempt) and how many requests were retried or given up on."""
    latencies = stats.latencies_s
    return {
        "latency_per": "request",
        "latency_mean_s": statistics.fmean(latencies) if latencies else float("nan"),
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "requests": stats.requests,
        "requests_retried": stats.retried,
        "retries": stats.retries,
        "requests_failed": stats.failed,
    }


def write_results(path: Path, scored: list[ScoredRollout]) -> None:
    lines = []
    for s in scored:
        row = {
            "example_id": s.rollout.example.id,
            "sample_index": s.rollout.sample_index,
            "prompt": s.rollout.example.prompt,
            "completion": s.rollout.completion,
            "answer": s.rollout.example.answer,
            "reward": s.reward,
            "components": s.components,
            "errors": s.errors,
            "truncated": s.rollout.truncated,
            "completion_tokens": s.rollout.num_completion_tokens,
            "latency_s": s.rollout.latency_s,
        }
        lines.append(json.dumps(to_jsonable(row)) + "\n")
    atomic.write_text(path, "".join(lines))


DEFAULT_GENERATED = 200  # fresh/adversarial examples when num_examples is not given


def select_examples(env: Environment, config: EvalConfig) -> list[Example]:
    """The examples ``config`` names: a split, or a freshly generated or adversarial set."""
    if config.split == "fresh":
        return env.fresh_examples(config.num_examples or DEFAULT_GENERATED, config.seed)
    if config.split == "adversarial":
        return env.adversarial_examples(config.num_examples or DEFAULT_GENERATED, config.seed)
    return env.examples(config.split, config.num_examples, seed=config.seed)


def run_rollouts(
    env: Environment,
    sampler: Sampler,
    config: EvalConfig,
    label: str,
    examples: list[Example] | None = None,
    batch_seconds: list[float] | None = None,
) -> list[ScoredRollout]:
    """Score ``config``'s rollouts, a batch at a time; ``batch_seconds`` gets each batch's generation time."""
    examples = examples if examples is not None else select_examples(env, config)
    params = config.sampling.params_for(env, config.rollouts_per_example)
    # Chunks keep the progress bar moving and memory flat; each is one batched generation.
    chunk = max(1, config.max_batch_size // config.rollouts_per_example)
    scored: list[ScoredRollout] = []
    with progress(label, len(examples)) as advance:
        for start in range(0, len(examples), chunk):
            part = examples[start : start + chunk]
            started = time.perf_counter()
            rollouts = env.rollout(sampler, part, params)
            if batch_seconds is not None:
                batch_seconds.append(time.perf_counter() - started)
            scored.extend(env.rubric.score(rollouts))
            advance(len(part))
    return scored


def make_sampler(env: Environment, config: EvalConfig) -> Sampler:
    """The sampler ``config.model`` names: an endpoint, a scripted player or a local model."""
    model = config.model
    if model.base_url is not None:
        return OpenAISampler(
            model.base_url,
            model.name_or_path,
            api_key_env=model.api_key_env,
            max_concurrency=model.max_concurrency,
            timeout_s=model.timeout_s,
            max_retries=model.max_retries,
            backoff_s=model.backoff_s,
            seed=config.seed,
        )
    if is_scripted(model.name_or_path):
        return ScriptedSampler(env, model.name_or_path, seed=config.seed)
    loaded, tokenizer = load_model(model.name_or_path, model.dtype, model.device)
    return LocalSampler(loaded, tokenizer, max_batch_size=config.max_batch_size)


def evaluate(
    config: EvalConfig,
    store: RunStore | None = None,
    parent: str | None = None,
    env: Environment | None = None,
    sampler: Sampler | None = None,
    examples: list[Example] | None = None,
) -> EvalResult:
    """Evaluate ``config.model`` (or the given ``sampler``) on ``config.env``; record a run.

    ``examples`` overrides the split, so two models can be evaluated on exactly the same records.
    """
    started = time.perf_counter()
    store = store or RunStore(config.runs_dir)
    env = env or load_environment_for(
        config.env.name, config.env.args, config.model.name_or_path, config.model.base_url
    )
    owned = sampler is None  # a sampler made here is closed here (an endpoint's holds a thread)
    sampler = sampler or make_sampler(env, config)
    stats: RequestStats | None = getattr(sampler, "stats", None)
    stats_before = stats.copy() if stats is not None else None
    local = config.model.base_url is None and not is_scripted(config.model.name_or_path)
    described = {"model": describe_model(config.model.name_or_path)} if local else None
    manifest = collect_manifest(config.seed, described)
    run = store.create_run("eval", config.model_dump(), manifest, name=config.run_name, parent=parent)
    try:
        set_seed(config.seed)
        batch_seconds: list[float] = []
        scored = run_rollouts(
            env, sampler, config, f"eval {config.model.name_or_path}", examples, batch_seconds
        )
        # Stored before anything can fail, so a run whose every rollout errored can still be looked at.
        store.log_rollouts(run.id, 0, "eval", scored)
        write_results(run.dir / "results.jsonl", scored)
        raise_if_all_errored(scored)
        summary = summarize(
            scored,
            env.rubric.primary,
            config.rollouts_per_example,
            config.pass_threshold,
            time.perf_counter() - started,
            batch_seconds,
        )
    except BaseException as error:
        # Whatever stopped it (an endpoint that gave up, every reward erroring), the run is failed with its
        # reason and retry counts, never left running.
        failure: dict = {"error": " ".join(str(error).split()) or type(error).__name__}
        if stats is not None and stats_before is not None:
            failure.update(request_summary(stats.since(stats_before)))
        store.finish(run.id, status="failed", summary=failure)
        raise
    finally:
        if owned and hasattr(sampler, "close"):
            sampler.close()
    if stats is not None and stats_before is not None:
        summary.update(request_summary(stats.since(stats_before)))
    summary["max_new_tokens"] = config.sampling.max_new_tokens_for(env)  # what "auto" came to
    summary["model"] = config.model.name_or_path
    if config.model.base_url is not None:
        summary["endpoint"] = config.model.base_url
    summary["env"] = config.env.name
    atomic.write_text(run.dir / "summary.json", json.dumps(to_jsonable(summary), indent=2))
    store.finish(run.id, summary=summary)
    write_run_report(store, run.id)
    return EvalResult(run.id, run.dir, summary, scored)
