"""Prefilling: force the start of the reply, and see how the reward and the answers move.

Each condition (no prefix, the baseline, then every ``--prefix``) samples the same examples x rollouts the
way ``eval`` does (``run_rollouts``, the seed set before each). With a prefix the model continues from the
prompt's ids (the chat template's generation prompt included) plus the prefix's ids, inside its own turn;
the reply the environment's rubric scores is the prefix followed by the continuation, since that is what
the model said. The baseline is therefore exactly ``rewardlab eval``'s rollouts at the same seed.

Rewards are compared per example (the mean of its rollouts), paired against the baseline with the
bootstrap ``compare`` uses; answers are the environment's parser's reading of each reply.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from rewardlab.errors import RewardlabError
from rewardlab.eval.stats import INTERVAL_METHOD, bootstrap_ci, paired_comparison
from rewardlab.sampling.base import Generation, Prompt, SamplingParams
from rewardlab.types import Example, ScoredRollout

NO_ANSWER = "(no answer)"  # the parser found none
TOP_ANSWERS = 5
SPLITS = ("eval", "train", "fresh", "adversarial")
REWARD_METHOD = "percentile bootstrap over examples (each the mean of its rollouts), 10,000 resamples"


# -- the sampler ---------------------------------------------------------------------------------------


class PrefilledSampler:
    """A local sampler whose every reply starts with ``prefix``.

    The prefix's ids are appended to each prompt's ids, after the generation prompt, so the model continues
    inside the assistant turn; each generation comes back as prefix + continuation (ids and text), as if the
    model had written all of it. The prefix is tokenized as it would follow that prompt (a tokenizer may
    merge across the boundary); when that would change the prompt's own ids, it is tokenized alone.
    Forced tokens were not sampled: with a prefix a generation carries no log-probabilities.
    """

    def __init__(self, sampler, prefix: str):
        if not prefix:
            raise RewardlabError("--prefix is empty: give the text the reply should start with")
        self.sampler = sampler
        self.prefix = prefix
        self.renderer = sampler.renderer  # so rollouts track ids, the prefix's included
        self._forced: dict[tuple[int, ...], list[int]] = {}

    def forced_ids(self, messages, prompt_ids: list[int]) -> list[int]:
        key = tuple(prompt_ids)
        if key not in self._forced:
            joined = self.renderer.encode(self.renderer.render(messages) + self.prefix)
            if joined[: len(prompt_ids)] == list(prompt_ids) and len(joined) > len(prompt_ids):
                forced = joined[len(prompt_ids) :]
            else:
                forced = self.renderer.encode(self.prefix)
            if not forced:
                raise RewardlabError(f"--prefix {self.prefix!r} tokenizes to nothing")
            self._forced[key] = forced
        return self._forced[key]

    def generate(self, prompts: list[Prompt], params: SamplingParams) -> list[list[Generation]]:
        bases, forced, continued = [], [], []
        for p in prompts:
            base = list(p.token_ids) if p.token_ids is not None else self.renderer.prompt_ids(p.messages)
            ids = self.forced_ids(p.messages, base)
            bases.append(base)
            forced.append(ids)
            continued.append(Prompt(p.messages, base + ids, p.state, p.example))
        out = self.sampler.generate(continued, params)
        return [
            [self._joined(g, ids, base) for g in generations]
            for generations, ids, base in zip(out, forced, bases, strict=True)
        ]

    def _joined(self, generation: Generation, forced: list[int], base: list[int]) -> Generation:
        return Generation(
            text=self.prefix + generation.text,
            token_ids=forced + list(generation.token_ids or []),
            prompt_ids=base,
            finish_reason=generation.finish_reason,
            latency_s=generation.latency_s,
        )


# -- results -------------------------------------------------------------------------------------------


@dataclass
class Condition:
    """One condition's rollouts, summed up. ``difference`` is against the baseline (None for it)."""

    label: str
    prefix: str | None
    mean_reward: float
    ci95: tuple[float, float]
    components: dict[str, float]
    answered: float  # share of rollouts with a parsable answer
    answer_counts: dict[str, int]  # every parsed answer (NO_ANSWER for none), most common first
    mean_completion_tokens: float  # forced ones included
    truncated: float
    per_example: dict[str, float]  # example id -> mean reward over its rollouts
    answers: dict[str, list[str]]  # example id -> each rollout's parsed answer
    samples: list[dict] = field(default_factory=list)
    difference: dict | None = None  # paired vs baseline: mean_diff, ci95, wins, ties, losses, p_value_sign
    component_differences: dict[str, dict] = field(default_factory=dict)
    # Baseline: the share of pairs of its own rollouts of one example that disagree (sampling noise, None
    # with one rollout). Others: the share of (this rollout, baseline rollout) pairs of one example that do.
    changed: float | None = None
    scored: list[ScoredRollout] = field(default_factory=list, repr=False)

    @property
    def top_answers(self) -> list[tuple[str, float]]:
        total = sum(self.answer_counts.values()) or 1
        return [(a, c / total) for a, c in list(self.answer_counts.items())[:TOP_ANSWERS]]


@dataclass
class PrefillProbe:
    model: str
    env: str
    split: str
    num_examples: int
    rollouts: int
    temperature: float
    max_new_tokens: int  # after the prefix
    seed: int
    conditions: list[Condition]
    warnings: list[str] = field(default_factory=list)
    # A second model (base against tuned) under the same conditions on the same examples, and, per
    # condition, its paired difference from this model (compare - this): mean_diff, ci95, wins/ties/losses.
    compare: PrefillProbe | None = None
    between: list[dict] = field(default_factory=list)

    @property
    def baseline(self) -> Condition:
        return self.conditions[0]

    @property
    def models(self) -> list[PrefillProbe]:
        return [self] if self.compare is None else [self, self.compare]

    def to_dict(self) -> dict:
        conditions = []
        for condition in self.conditions:
            data = {k: v for k, v in asdict(condition).items() if k != "scored"}
            data["top_answers"] = [list(pair) for pair in condition.top_answers]
            conditions.append(data)
        head = {
            k: getattr(self, k)
            for k in ("model", "env", "split", "num_examples", "rollouts", "temperature", "max_new_tokens",
                      "seed", "warnings")
        }  # fmt: skip
        out = {**head, "reward_ci_method": REWARD_METHOD, "difference_method": INTERVAL_METHOD,
               "conditions": conditions}  # fmt: skip
        if self.compare is not None:
            out["compare"] = self.compare.to_dict()
            out["between"] = self.between
        return out


# -- running -------------------------------------------------------------------------------------------


def answer_label(parser, completion) -> str:
    """A reply's parsed answer as one label: the text, JSON for structured answers, NO_ANSWER for none."""
    parsed = parser.parse_answer(completion)
    if parsed is None or parsed == "":
        return NO_ANSWER
    return parsed if isinstance(parsed, str) else json.dumps(parsed, sort_keys=True, ensure_ascii=False)


def condition_label(prefix: str | None) -> str:
    return "baseline" if prefix is None else json.dumps(prefix, ensure_ascii=False)


def summarize_condition(env, prefix: str | None, scored: list[ScoredRollout], samples: int, seed: int):
    """Means (an errored rollout scores 0, as in ``eval``), the reward's bootstrap interval, the answers."""
    rewards: dict[str, list[float]] = {}
    answers: dict[str, list[str]] = {}
    for s in scored:
        example = s.rollout.example.id
        rewards.setdefault(example, []).append(0.0 if s.errored else s.reward)
        answers.setdefault(example, []).append(answer_label(env.parser, s.rollout.completion))
    per_example = {k: statistics.fmean(v) for k, v in rewards.items()}
    names = list(scored[0].components) if scored else []
    components = {n: statistics.fmean(s.components.get(n) or 0.0 for s in scored) for n in names}
    counts = Counter(a for values in answers.values() for a in values)
    return Condition(
        label=condition_label(prefix),
        prefix=prefix,
        mean_reward=statistics.fmean(per_example.values()),
        ci95=bootstrap_ci(list(per_example.values()), seed=seed),
        components=components,
        answered=1.0 - counts.get(NO_ANSWER, 0) / len(scored),
        answer_counts=dict(counts.most_common()),
        mean_completion_tokens=statistics.fmean(s.rollout.num_completion_tokens for s in scored),
        truncated=sum(s.rollout.truncated for s in scored) / len(scored),
        per_example=per_example,
        answers=answers,
        samples=sample_rows(env, scored, samples),
        scored=scored,
    )


def sample_rows(env, scored: list[ScoredRollout], samples: int) -> list[dict]:
    """The first rollout of the first ``samples`` examples: the same examples in every condition."""
    rows, seen = [], set()
    for s in scored:
        example = s.rollout.example
        if example.id in seen or len(rows) >= samples:
            continue
        seen.add(example.id)
        rows.append({
            "example_id": example.id, "question": example.question, "gold": example.answer,
            "completion": s.rollout.completion_text, "answer": answer_label(env.parser, s.rollout.completion),
            "reward": s.reward, "components": s.components,
        })  # fmt: skip
    return rows


def changed_share(
    answers: dict[str, list[str]], baseline: dict[str, list[str]] | None = None
) -> float | None:
    """The mean over examples of the share of answer pairs that disagree: this condition's rollouts against
    the baseline's, or (``baseline`` None) the baseline's rollouts among themselves."""
    shares = []
    for example, mine in answers.items():
        if baseline is None:
            pairs = [(a, b) for i, a in enumerate(mine) for b in mine[i + 1 :]]
        else:
            pairs = [(a, b) for a in mine for b in baseline.get(example, [])]
        if pairs:
            shares.append(sum(a != b for a, b in pairs) / len(pairs))
    return statistics.fmean(shares) if shares else None


def paired_dict(a: dict[str, float], b: dict[str, float], seed: int) -> dict:
    p = paired_comparison(a, b, seed=seed)
    return {"n": p.n, "mean_diff": p.mean_diff, "ci95": list(p.ci95), "wins": p.wins, "ties": p.ties,
            "losses": p.losses, "p_value_sign": p.p_value_sign}  # fmt: skip


def _component_per_example(scored: list[ScoredRollout], name: str) -> dict[str, float]:
    grouped: dict[str, list[float]] = {}
    for s in scored:
        grouped.setdefault(s.rollout.example.id, []).append(s.components.get(name) or 0.0)
    return {k: statistics.fmean(v) for k, v in grouped.items()}


def compare_prefixes(
    env, sampler, config, examples: list[Example], prefixes: list[str], *, samples: int = 3,
    model_name: str = "",
) -> PrefillProbe:  # fmt: skip
    """Every condition's rollouts of ``examples`` (``config`` is an :class:`EvalConfig`: rollouts, sampling,
    seed), summed up and compared with the baseline."""
    from rewardlab.eval.evaluate import run_rollouts
    from rewardlab.eval.stats import SMALL_N, small_sample_warning
    from rewardlab.rubrics.failures import raise_if_all_errored
    from rewardlab.train.common import set_seed

    conditions: list[Condition] = []
    for prefix in [None, *prefixes]:
        set_seed(config.seed)  # as eval does: the baseline is eval's rollouts
        label = condition_label(prefix)
        used = sampler if prefix is None else PrefilledSampler(sampler, prefix)
        scored = run_rollouts(env, used, config, f"prefill {label}", examples)
        raise_if_all_errored(scored, f"rollouts with {label}")
        conditions.append(summarize_condition(env, prefix, scored, samples, config.seed))
    baseline = conditions[0]
    baseline.changed = changed_share(baseline.answers)
    for condition in conditions[1:]:
        condition.difference = paired_dict(baseline.per_example, condition.per_example, config.seed)
        for name in condition.components:
            condition.component_differences[name] = paired_dict(
                _component_per_example(baseline.scored, name),
                _component_per_example(condition.scored, name),
                config.seed,
            )
        condition.changed = changed_share(condition.answers, baseline.answers)
    n = len(baseline.per_example)
    return PrefillProbe(
        model=model_name,
        env=getattr(env, "name", ""),
        split=config.split,
        num_examples=n,
        rollouts=config.rollouts_per_example,
        temperature=config.sampling.temperature,
        max_new_tokens=config.sampling.max_new_tokens_for(env),
        seed=config.seed,
        conditions=conditions,
        warnings=[small_sample_warning(n)] if n < SMALL_N else [],
    )


# -- the command ---------------------------------------------------------------------------------------


@dataclass
class PrefillSettings:
    """What ``rewardlab probe prefill`` runs: the model, the environment, the prefixes, how many rollouts."""

    model: str
    env: str = "arithmetic"
    prefixes: list[str] = field(default_factory=list)
    env_args: list[str] = field(default_factory=list)  # KEY=VALUE, the value read as a TOML literal
    num_examples: int = 50
    rollouts: int = 2
    temperature: float = 1.0
    max_new_tokens: str | int = "auto"
    split: str = "eval"
    seed: int = 0
    samples: int = 3
    dtype: str = "float32"
    runs_dir: str = "runs"
    compare_model: str | None = None  # a second model under the same conditions (base against tuned)


def checked_prefixes(prefixes: list[str]) -> list[str]:
    if not prefixes:
        raise RewardlabError("probe prefill needs at least one --prefix TEXT to force into the reply")
    seen: set[str] = set()
    for prefix in prefixes:
        if not prefix:
            raise RewardlabError("--prefix is empty: give the text the reply should start with")
        if prefix in seen:
            raise RewardlabError(f"--prefix {prefix!r} is given twice")
        seen.add(prefix)
    return list(prefixes)


def parse_env_args(pairs: list[str]) -> dict[str, Any]:
    """``--env-arg KEY=VALUE`` pairs as the environment's keyword arguments, values read as ``--set`` reads
    them (TOML literals, anything else a string)."""
    from rewardlab.config.base import put
    from rewardlab.config.files import parse_override

    args: dict[str, Any] = {}
    for pair in pairs:
        path, value = parse_override(pair)
        try:
            put(args, path, value)
        except ValueError as error:
            raise RewardlabError(f"--env-arg {pair!r}: {error}") from None
    return args


def parse_max_new_tokens(value: str | int) -> str | int:
    if value == "auto":
        return value
    try:
        tokens = int(value)
    except (TypeError, ValueError):
        tokens = 0
    if tokens < 1:
        raise RewardlabError(f"--max-new-tokens must be a positive number of tokens or auto, got {value!r}")
    return tokens


def checked_settings(s: PrefillSettings) -> tuple[list[str], str | int]:
    """Every mistake a setting can hold, said before an environment or a model loads."""
    prefixes = checked_prefixes(s.prefixes)
    if s.num_examples < 1 or s.rollouts < 1:
        raise RewardlabError(f"-n and -r must be at least 1, got {s.num_examples} and {s.rollouts}")
    if s.temperature < 0:
        raise RewardlabError(f"--temperature must be at least 0 (0 is greedy), got {s.temperature}")
    if s.split not in SPLITS:
        raise RewardlabError(f"unknown split {s.split!r} (use {', '.join(SPLITS)})")
    if s.samples < 0:
        raise RewardlabError(f"--samples must be at least 0, got {s.samples}")
    return prefixes, parse_max_new_tokens(s.max_new_tokens)


def single_turn(env, name: str) -> None:
    if env.max_turns != 1:
        raise RewardlabError(
            f"prefill probes single-turn environments; {name!r} plays up to {env.max_turns} turns"
        )


def prefill_probe(settings: PrefillSettings) -> PrefillProbe:
    """Check the settings, load the environment and the model, run every condition."""
    from rewardlab.config import EvalConfig
    from rewardlab.envs.registry import load_environment_for
    from rewardlab.eval.evaluate import select_examples
    from rewardlab.models.loading import locate
    from rewardlab.probes.inputs import load_probe_model
    from rewardlab.sampling.local import LocalSampler
    from rewardlab.sampling.scripted import is_scripted

    s = settings
    prefixes, max_new_tokens = checked_settings(s)
    env_args = parse_env_args(s.env_args)
    name = locate(s.model, s.runs_dir)
    if is_scripted(name):
        raise RewardlabError(f"probe prefill needs a model to continue the prefix; {s.model} is scripted")
    env = load_environment_for(s.env, env_args, name)
    single_turn(env, s.env)
    config = EvalConfig(
        model={"name_or_path": name, "dtype": s.dtype}, env={"name": s.env, "args": env_args},
        split=s.split, num_examples=s.num_examples, rollouts_per_example=s.rollouts, seed=s.seed,
        sampling={"temperature": s.temperature, "max_new_tokens": max_new_tokens}, runs_dir=s.runs_dir,
    )  # fmt: skip
    examples = select_examples(env, config)
    second = None if s.compare_model is None else locate(s.compare_model, s.runs_dir)
    if second is not None and is_scripted(second):
        raise RewardlabError(
            f"probe prefill needs a model to continue the prefix; {s.compare_model} is scripted"
        )
    results = []
    for shown, path in [(s.model, name)] + ([] if second is None else [(s.compare_model, second)]):
        model, tokenizer = load_probe_model(path, dtype=s.dtype, runs_dir=s.runs_dir)
        sampler = LocalSampler(model, tokenizer, max_batch_size=config.max_batch_size)
        # The same examples, prompts and seeds for both: the environment as worded for the first model.
        results.append(
            compare_prefixes(env, sampler, config, examples, prefixes, samples=s.samples, model_name=shown)
        )
        results[-1].env = s.env
        del model, sampler
    return results[0] if second is None else compare_models(*results)


def compare_models(first: PrefillProbe, second: PrefillProbe) -> PrefillProbe:
    """``first`` with ``second`` beside it, and per condition the paired difference second - first."""
    first.compare = second
    first.between = [
        {"label": a.label, **paired_dict(a.per_example, b.per_example, first.seed)}
        for a, b in zip(first.conditions, second.conditions, strict=True)
    ]
    return first
