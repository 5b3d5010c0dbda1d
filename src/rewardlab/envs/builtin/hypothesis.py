"""Hypothesis checking: weigh evidence by relevance, answer JSON VALIDATED/REJECTED/REFINED with a confidence.

Each example is a product hypothesis ("The daily push reminder reduces churn for new users.") and numbered
evidence pieces, each with a source, a relevance between 0 and 1 and a sentence that supports the
hypothesis, contradicts it, or is only context (neutral). Everything is drawn from templates with a seed.
The model answers ``{"decision": "VALIDATED" | "REJECTED" | "REFINED", "confidence": 0.8}``.

The gold decision follows one documented rule, :func:`decide`, spelled out in the system prompt: pieces with
relevance below 0.3 are ignored; ``support`` and ``against`` are the summed relevance of the supporting and
the contradicting pieces; VALIDATED when ``support >= 2 * against``, REJECTED when ``against >= 2 * support``,
REFINED otherwise (mixed evidence: the hypothesis needs narrowing). Generation keeps every example a margin
inside its decision's region (25%, 10% at level 3), so no answer hinges on one hundredth of relevance.

Levels: 1 = three relevant pieces (relevance 0.7 to 1), unanimous for VALIDATED and REJECTED; 2 = three or
four relevant pieces of any relevance from 0.3, one low-relevance distractor and sometimes a neutral piece;
3 = four or five relevant pieces, a neutral one and two or three distractors that argue against the gold
decision. An example's split is decided by a hash of its text, so train and held-out examples never coincide.
Rewards: decision accuracy (primary), calibration (1 minus the Brier score of the stated confidence) and small
JSON validity and schema rewards.
"""

from __future__ import annotations

import json
import random
from typing import Any

from rewardlab.envs.base import SingleTurnEnv
from rewardlab.envs.builtin.splits import (
    ADVERSARIAL_SEED_OFFSET,
    Procedural,
    check_split_sizes,
    checked_levels,
    split_draws,
)
from rewardlab.envs.dataset import load_examples
from rewardlab.errors import RewardlabError
from rewardlab.rubrics.json_rewards import (
    confidence_calibration,
    json_field_accuracy,
    json_schema_match,
    json_valid,
)
from rewardlab.rubrics.parsers import JSONParser
from rewardlab.rubrics.rubric import Rubric
from rewardlab.types import Example

DECISIONS = ("VALIDATED", "REJECTED", "REFINED")
# Relevance is kept in hundredths so that the rule sums integers: what is shown is exactly what is weighed.
MIN_RELEVANCE = 30
ORACLE_CONFIDENCE = 0.95

FEATURES = [
    "the new onboarding flow",
    "the daily push reminder",
    "dark mode",
    "the one-page checkout",
    "the in-app tutorial",
    "the weekly digest email",
    "the extended free trial",
    "smart search",
]
# Metrics where "more" is the claim, and metrics where "less" is: so "rose" alone never means "supports".
INCREASE_METRICS = [
    "weekly retention",
    "conversion rate",
    "average order value",
    "daily active use",
    "session length",
]
DECREASE_METRICS = [
    "churn",
    "support ticket volume",
    "cart abandonment",
    "refund rate",
    "time to first purchase",
]
SEGMENTS = [
    "new users",
    "mobile users",
    "enterprise customers",
    "students",
    "returning shoppers",
    "users in Europe",
]
RELEVANT_SOURCES = [
    "randomized experiment (n={n})",
    "A/B test (n={n})",
    "cohort analysis of {n} accounts",
    "product analytics dashboard",
    "customer survey (n={n})",
]
WEAK_SOURCES = [
    "forum post",
    "competitor's blog",
    "anecdote from one sales call",
    "2016 study of a different product",
    "social media thread",
]
SUPPORT_TEMPLATES = [
    "{Segment} who got {feature} had {x}% {more} {metric} than a control group.",
    "After {feature} launched, {metric} among {segment} {moved} by {x}% while other groups stayed flat.",
    "Across {k} cohorts of {segment}, {metric} was {more} in every cohort that had {feature}.",
]
CONTRADICT_TEMPLATES = [
    "{Segment} who got {feature} had {x}% {less} {metric} than a control group.",
    "After {feature} launched, {metric} among {segment} {moved_back} by {x}%.",
    "{Segment} with and without {feature} showed the same {metric} (difference {d}%, within noise).",
]
NEUTRAL_TEMPLATES = [
    "{Feature} was shipped to {segment} in {month}.",
    "{Feature} was mentioned in {k} support conversations last month, mostly about where to find it.",
    "The team plans to redesign {feature} next quarter.",
]
TEMPLATES = {"supports": SUPPORT_TEMPLATES, "contradicts": CONTRADICT_TEMPLATES, "neutral": NEUTRAL_TEMPLATES}
MONTHS = ["January", "March", "May", "July", "September", "November"]

# relevant/distractors/neutral are (low, high) piece counts; relevance is the (low, high) range of the
# relevant pieces in hundredths; margin (in percent) keeps each example that far inside its decision's
# region; distractors oppose: low-relevance pieces that argue against the gold decision.
LEVELS: dict[int, dict[str, Any]] = {
    1: {
        "relevant": (3, 3),
        "distractors": (0, 0),
        "neutral": (0, 0),
        "relevance": (70, 100),
        "margin": 125,
        "unanimous": True,
        "distractors_oppose": False,
    },
    2: {
        "relevant": (3, 4),
        "distractors": (1, 1),
        "neutral": (0, 1),
        "relevance": (30, 100),
        "margin": 125,
        "unanimous": False,
        "distractors_oppose": False,
    },
    3: {
        "relevant": (4, 5),
        "distractors": (2, 3),
        "neutral": (1, 1),
        "relevance": (30, 100),
        "margin": 110,
        "unanimous": False,
        "distractors_oppose": True,
    },
}
DISTRACTOR_RELEVANCE = (5, 25)

SYSTEM_PROMPT = (
    "You judge a hypothesis against evidence. Each piece of evidence has a source, a relevance between 0 and "
    "1, and content that supports the hypothesis, contradicts it (including showing no effect), or is only "
    "context.\n"
    f"Ignore pieces with relevance below {MIN_RELEVANCE / 100:.1f}. Let support be the sum of the relevance "
    "of the supporting pieces and against the sum of the relevance of the contradicting pieces. Decide "
    "VALIDATED if support is at least twice against, REJECTED if against is at least twice support, and "
    "REFINED otherwise (the evidence is mixed: the hypothesis needs narrowing).\n"
    'Answer with JSON only: {"decision": "VALIDATED", "confidence": 0.8}, where decision is VALIDATED, '
    "REJECTED or REFINED and confidence (0 to 1) is how likely your decision is to be right."
)
ANSWER_SCHEMA = {
    "type": "object",
    "required": ["decision", "confidence"],
    "properties": {
        "decision": {"type": "string", "enum": list(DECISIONS)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
    },
}


# -- the rule ----------------------------------------------------------------------------------------------


def weights(pieces: list[dict[str, Any]]) -> tuple[int, int]:
    """(support, against) in hundredths: summed relevance of the pieces that count, by stance."""
    counted = [p for p in pieces if p["relevance"] >= MIN_RELEVANCE]
    support = sum(p["relevance"] for p in counted if p["stance"] == "supports")
    against = sum(p["relevance"] for p in counted if p["stance"] == "contradicts")
    return support, against


def decide(support: float, against: float) -> str:
    """The documented rule (see the module docstring and :data:`SYSTEM_PROMPT`): the gold decision."""
    if support >= 2 * against:
        return "VALIDATED"
    if against >= 2 * support:
        return "REJECTED"
    return "REFINED"


def clear_of_boundary(support: int, against: int, margin: int) -> bool:
    """Whether (support, against) lies ``margin`` percent inside its decision's region, on both sides."""
    decision = decide(support, against)
    if decision == "VALIDATED":
        return support * 100 >= 2 * margin * against
    if decision == "REJECTED":
        return against * 100 >= 2 * margin * support
    return support * margin < 200 * against and against * margin < 200 * support


def count_decision(pieces: list[dict[str, Any]]) -> str:
    """The rule applied to piece counts, relevance ignored: the ``naive`` policy, and what the adversarial
    set is built to disagree with."""
    support = sum(p["stance"] == "supports" for p in pieces)
    against = sum(p["stance"] == "contradicts" for p in pieces)
    return decide(support, against)


# -- examples ----------------------------------------------------------------------------------------------


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


def _claim(rng: random.Random) -> dict[str, str]:
    """A hypothesis and the words its evidence is written with."""
    increase = rng.random() < 0.5
    metric = rng.choice(INCREASE_METRICS if increase else DECREASE_METRICS)
    feature, segment = rng.choice(FEATURES), rng.choice(SEGMENTS)
    verb = "increases" if increase else "reduces"
    return {
        "hypothesis": f"{_sentence(feature)} {verb} {metric} for {segment}.",
        "feature": feature,
        "Feature": _sentence(feature),
        "segment": segment,
        "Segment": _sentence(segment),
        "metric": metric,
        "more": "higher" if increase else "lower",
        "less": "lower" if increase else "higher",
        "moved": "rose" if increase else "fell",
        "moved_back": "fell" if increase else "rose",
    }


def _piece(rng: random.Random, claim: dict[str, str], stance: str, relevance: int) -> dict[str, Any]:
    templates = TEMPLATES[stance]
    words = dict(claim, x=rng.randint(4, 35), d=rng.choice([0.2, 0.4, 0.6, 0.9]), k=rng.randint(3, 12))
    words["month"] = rng.choice(MONTHS)
    sources = RELEVANT_SOURCES if relevance >= MIN_RELEVANCE else WEAK_SOURCES
    return {
        "source": rng.choice(sources).format(n=f"{rng.randint(3, 90) * 100:,}"),
        "content": rng.choice(templates).format(**words),
        "relevance": relevance,
        "stance": stance,
    }


def _stances(rng: random.Random, target: str, count: int, unanimous: bool) -> list[str]:
    """Stances of the relevant pieces, leaning towards ``target`` so that rejection sampling is quick."""
    if unanimous and target != "REFINED":
        return [("supports" if target == "VALIDATED" else "contradicts")] * count
    lean = {"VALIDATED": 0.8, "REJECTED": 0.2, "REFINED": 0.5}[target]
    return ["supports" if rng.random() < lean else "contradicts" for _ in range(count)]


def _skeleton(rng: random.Random, profile: dict[str, Any], target: str) -> list[dict[str, Any]]:
    """Stances and relevances of one example's pieces: all the rule reads, cheap to draw and redraw."""
    count = rng.randint(*profile["relevant"])
    pieces = [
        {"stance": stance, "relevance": rng.randint(*profile["relevance"])}
        for stance in _stances(rng, target, count, profile["unanimous"])
    ]
    for _ in range(rng.randint(*profile["distractors"])):
        if profile["distractors_oppose"] and target != "REFINED":
            stance = "contradicts" if target == "VALIDATED" else "supports"
        else:
            stance = rng.choice(["supports", "contradicts"])
        pieces.append({"stance": stance, "relevance": rng.randint(*DISTRACTOR_RELEVANCE)})
    for _ in range(rng.randint(*profile["neutral"])):
        pieces.append({"stance": "neutral", "relevance": rng.randint(MIN_RELEVANCE, 90)})
    return pieces


def random_case(
    rng: random.Random, profile: dict[str, Any], adversarial: bool = False
) -> tuple[dict[str, str], list[dict[str, Any]], str]:
    """(claim, pieces in display order, gold decision) for one example drawn with ``profile``. The gold
    decision is drawn first (uniformly) and evidence is drawn until the rule agrees, with the margin; the
    words are written only then."""
    target = rng.choice(DECISIONS)
    for _ in range(10_000):
        skeleton = _skeleton(rng, profile, target)
        support, against = weights(skeleton)
        if support + against == 0 or decide(support, against) != target:
            continue
        if not clear_of_boundary(support, against, profile["margin"]):
            continue
        if adversarial and count_decision(skeleton) == target:
            continue
        claim = _claim(rng)
        pieces = [_piece(rng, claim, p["stance"], p["relevance"]) for p in skeleton]
        rng.shuffle(pieces)
        return claim, pieces, target
    raise RewardlabError(f"could not generate a {target} hypothesis example")  # never seen in practice


def render(claim: dict[str, str], pieces: list[dict[str, Any]]) -> str:
    lines = [f"Hypothesis: {claim['hypothesis']}", "", "Evidence:"]
    for number, piece in enumerate(pieces, start=1):
        lines.append(f"[{number}] source: {piece['source']} | relevance: {piece['relevance'] / 100:.2f}")
        lines.append(f"    {piece['content']}")
    return "\n".join(lines)


def generate_cases(
    levels: list[int], count: int, split: str, seed: int, eval_fraction: float, adversarial: bool = False
) -> list[dict[str, Any]]:
    """``count`` distinct examples on ``split``'s side of the hash split, levels taken in turn."""
    rng = random.Random(f"hypothesis:{split}:{seed}")

    def draw(level: int) -> tuple[str, tuple]:
        claim, pieces, decision = random_case(rng, LEVELS[level], adversarial)
        text = render(claim, pieces)
        return text, (text, pieces, decision)

    rows: list[dict[str, Any]] = []
    draws = split_draws(count, levels, split, eval_fraction, draw, "hypothesis examples", "hypothesis:")
    for level, (text, pieces, decision) in draws:
        support, against = weights(pieces)
        rows.append(
            {
                "prompt": f"{text}\n\nIs the hypothesis validated, rejected or in need of refinement?",
                # The reference is a JSON object: json_field_accuracy and the calibration reward read it.
                "answer": json.dumps({"decision": decision}),
                "info": {
                    "decision": decision,
                    "level": level,
                    "support": support / 100,
                    "against": against / 100,
                    "pieces": pieces,
                    "num_pieces": len(pieces),
                    "num_distractors": sum(p["relevance"] < MIN_RELEVANCE for p in pieces),
                    "count_decision": count_decision(pieces),
                },
            }
        )
    return rows


# -- the environment ---------------------------------------------------------------------------------------


class HypothesisEnv(Procedural, SingleTurnEnv):
    name = "hypothesis"
    description = "Weigh evidence by relevance: VALIDATED, REJECTED or REFINED as JSON with a confidence."
    max_new_tokens_by_style = {"terse": 16, "chat": 48}

    generate_rows = staticmethod(generate_cases)

    def demonstration(self, example: Example, rng: random.Random | None = None) -> str:
        """The gold decision with the oracle's confidence: the reference alone has no confidence field."""
        return json.dumps({"decision": example.info["decision"], "confidence": ORACLE_CONFIDENCE})

    def adversarial_examples(self, n: int, seed: int) -> list[Example]:
        """Held-out-side level-3 examples where counting pieces, relevance ignored, gives the wrong
        decision: loud low-relevance distractors outnumber the evidence that counts."""
        seed += ADVERSARIAL_SEED_OFFSET
        rows = generate_cases([3], n, "eval", seed, self.eval_fraction, adversarial=True)
        return load_examples(rows, self.system_prompt)

    def policies(self):
        """``oracle`` answers the gold decision with confidence 0.95; ``naive`` applies the rule to piece
        counts, relevance ignored (confidence 0.9); ``random`` picks a decision and a confidence uniformly."""

        def answer(decision: str, confidence: float) -> str:
            return json.dumps({"decision": decision, "confidence": confidence})

        def oracle(messages, state, example, rng):
            return answer(example.info["decision"], ORACLE_CONFIDENCE)

        def naive(messages, state, example, rng):
            return answer(count_decision(example.info["pieces"]), 0.9)

        def random_guess(messages, state, example, rng):
            return answer(rng.choice(DECISIONS), round(rng.random(), 2))

        return {"oracle": oracle, "naive": naive, "random": random_guess}


def load_environment(
    level: int | list[int] = 1,
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    eval_fraction: float = 0.1,
    calibration_weight: float = 0.2,
    format_weight: float = 0.05,
    system_prompt: str | None = SYSTEM_PROMPT,
    prompt_style: str = "terse",
) -> HypothesisEnv:
    """Hypotheses at ``level`` (an int or a list for a mix). Rubric: ``decision_accuracy`` (1) +
    ``calibration`` (``calibration_weight``) + ``json_valid`` and ``json_schema_match`` (``format_weight``
    each). An answer with no JSON object scores 0 on every component (not an error)."""
    levels = checked_levels(level, LEVELS)
    check_split_sizes(num_train, num_eval, eval_fraction)
    if not 0.0 <= calibration_weight < 1.0:
        # a confident guess scores at most calibration_weight; a right decision must always be worth more
        raise ValueError(f"calibration_weight must be in [0, 1), got {calibration_weight}")
    if format_weight < 0:
        raise ValueError(f"format_weight must be >= 0, got {format_weight}")
    parser = JSONParser()
    rubric = Rubric(
        [
            json_field_accuracy(["decision"], parser),
            confidence_calibration(["decision"], parser=parser),
            json_valid(parser),
            json_schema_match(ANSWER_SCHEMA, parser),
        ],
        weights=[1.0, calibration_weight, format_weight, format_weight],
        names=["decision_accuracy", "calibration", "json_valid", "json_schema_match"],
        parser=parser,
        # Inline: these are pure, fast functions of one string; a worker process would buy nothing.
        isolation="inline",
    )
    return HypothesisEnv(
        levels=levels,
        eval_fraction=eval_fraction,
        dataset=generate_cases(levels, num_train, "train", seed, eval_fraction),
        eval_dataset=generate_cases(levels, num_eval, "eval", seed, eval_fraction),
        system_prompt=system_prompt,
        rubric=rubric,
        parser=parser,
        prompt_style=prompt_style,
    )
