"""Event selection: pick the low-productivity events from a computer-use log, answering JSON ids.

Each example is a synthetic activity log drawn from a seed: one line per event with an id (``e07``), start
time, app, window title, ``duration_s``, ``idle_s`` (seconds without keyboard or mouse input) and
``context_switches`` (times the user left the window and came back during the event). The model answers
``{"selected_event_ids": ["e03", "e07"]}``.

The gold ids follow one documented rule, :func:`low_productivity`, spelled out in the system prompt. An event
shows low productivity when its record is valid, it is not exempt, and at least one of these holds:

1. long idle: ``idle_s >= 300`` and ``idle_s`` is at least half of ``duration_s`` (581 s idle of 620 is);
2. distraction: the window title is on a distracting site (YouTube, Reddit...) for ``duration_s >= 300``;
3. thrashing: ``context_switches >= 10``.

Exempt: meetings (Zoom, Teams, Webex: listening shows as idle) and a terminal whose title ends in
``(running)`` (waiting on a build or a test run). Invalid: ``duration_s <= 0`` or ``idle_s > duration_s``;
such a record is fake or broken and is never selected, however idle it looks.

Levels: 1 = a few events, each clearly productive or clearly not; 2 = more events and decoys that miss a
clause by a little (a short focus session followed by a switch, 420 s idle of 3000, 250 s idle of 400, a
two-minute YouTube visit, 8 switches); 3 = still more, plus false positives (idle meetings and builds) and
fake records. A log's split is decided by a hash of its text, so train and held-out logs never coincide.
Rewards: F1 of the selected ids against the gold ids (primary), small JSON validity and schema rewards, and
precision and recall as weight-0 measurements.
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
from rewardlab.rubrics.json_rewards import id_set_reward, json_schema_match, json_valid
from rewardlab.rubrics.parsers import JSONParser
from rewardlab.rubrics.rubric import Rubric
from rewardlab.types import Example

ANSWER_FIELD = "selected_event_ids"
IDLE_MIN_S = 300
DISTRACTION_MIN_S = 300
THRASHING_MIN_SWITCHES = 10
DISTRACTING_SITES = ("YouTube", "Reddit", "Twitter", "Instagram", "Netflix", "Twitch")
MEETING_APPS = ("Zoom", "Teams", "Webex")
RUNNING_MARK = "(running)"

WORK_WINDOWS = [
    ("VS Code", "trainer.py - rewardlab"),
    ("VS Code", "README.md - billing-service"),
    ("PyCharm", "test_api.py - orders"),
    ("Word", "Q3 report.docx"),
    ("Excel", "budget_2024.xlsx"),
    ("Figma", "Checkout redesign"),
    ("Firefox", "asyncio - docs.python.org"),
    ("Chrome", "Pull request #482 - GitHub"),
    ("Chrome", "SPRINT-12 board - Jira"),
    ("Slack", "#team-platform"),
    ("Outlook", "Inbox - 14 unread"),
    ("Notion", "Sprint planning notes"),
    ("Terminal", "zsh - ~/rewardlab"),
]
DISTRACTING_WINDOWS = [
    ("Chrome", "Funniest cat videos - YouTube"),
    ("Firefox", "r/aww - Reddit"),
    ("Chrome", "Home / Twitter"),
    ("Safari", "Explore - Instagram"),
    ("Chrome", "Episode 4 - Netflix"),
    ("Firefox", "Speedrun marathon - Twitch"),
]
MEETING_WINDOWS = [("Zoom", "Weekly sync"), ("Teams", "1:1 with Dana"), ("Webex", "Design review")]
BUILD_WINDOWS = [
    ("Terminal", "cargo build --release (running)"),
    ("Terminal", "pytest tests/ (running)"),
    ("iTerm2", "docker build . (running)"),
    ("iTerm2", "npm run build (running)"),
]

# Kinds of event, by what the rule should say about them. Generation asserts that the rule agrees.
GOLD_KINDS = ("idle", "distraction", "thrashing")
DECOY_KINDS = ("short_focus", "idle_under_half", "idle_short", "brief_distraction", "busy_switching")
TRAP_KINDS = ("meeting", "build", "fake_idle_exceeds", "fake_negative")
# events, gold, decoys and traps are (low, high) counts; the rest of a log is plain productive work.
# clear: gold events sit far past the thresholds (level 1 has nothing near a boundary).
LEVELS: dict[int, dict[str, Any]] = {
    1: {"events": (5, 7), "gold": (1, 2), "decoys": (0, 0), "traps": (0, 0), "clear": True},
    2: {"events": (8, 11), "gold": (1, 3), "decoys": (2, 4), "traps": (0, 0), "clear": False},
    3: {"events": (12, 16), "gold": (1, 3), "decoys": (2, 4), "traps": (2, 4), "clear": False},
}
# The adversarial profile: level 3's size with decoys and traps making up most of the log.
ADVERSARIAL = {"events": (12, 16), "gold": (1, 2), "decoys": (4, 6), "traps": (4, 6), "clear": False}

SYSTEM_PROMPT = (
    "You review a computer-use activity log and select the events that show low productivity. Each event "
    "has an id, a start time, the app, the window title, duration_s, idle_s (seconds without keyboard or "
    "mouse input) and context_switches (times the user left the window and came back).\n"
    "An event shows low productivity when at least one of these holds:\n"
    f"1. long idle: idle_s is at least {IDLE_MIN_S} and at least half of duration_s;\n"
    f"2. distraction: the window title is on {', '.join(DISTRACTING_SITES)} and duration_s is at least "
    f"{DISTRACTION_MIN_S};\n"
    f"3. thrashing: context_switches is at least {THRASHING_MIN_SWITCHES}.\n"
    f"Never select: meetings (app {', '.join(MEETING_APPS)}: listening shows as idle), a terminal whose "
    f"title ends in '{RUNNING_MARK}' (waiting on a job), or an invalid record (duration_s not positive, or "
    "idle_s greater than duration_s). A short focus session followed by a switch to another app is normal "
    "work.\n"
    f'Answer with JSON only: {{"{ANSWER_FIELD}": ["e03", "e07"]}}, with an empty list if no event qualifies.'
)
ANSWER_SCHEMA = {
    "type": "object",
    "required": [ANSWER_FIELD],
    "properties": {ANSWER_FIELD: {"type": "array", "items": {"type": "string"}}},
}


# -- the rule ----------------------------------------------------------------------------------------------


def is_valid(event: dict[str, Any]) -> bool:
    return event["duration_s"] > 0 and 0 <= event["idle_s"] <= event["duration_s"]


def is_exempt(event: dict[str, Any]) -> bool:
    return event["app"] in MEETING_APPS or event["title"].endswith(RUNNING_MARK)


def is_distracting(title: str) -> bool:
    return any(site.lower() in title.lower() for site in DISTRACTING_SITES)


def low_productivity(event: dict[str, Any]) -> bool:
    """The documented rule (see the module docstring and :data:`SYSTEM_PROMPT`): the gold labels."""
    if not is_valid(event) or is_exempt(event):
        return False
    long_idle = event["idle_s"] >= IDLE_MIN_S and 2 * event["idle_s"] >= event["duration_s"]
    distraction = is_distracting(event["title"]) and event["duration_s"] >= DISTRACTION_MIN_S
    thrashing = event["context_switches"] >= THRASHING_MIN_SWITCHES
    return long_idle or distraction or thrashing


def looks_unproductive(event: dict[str, Any]) -> bool:
    """A careless reading of the rule: mostly idle, on a distracting site or switching a lot, with no
    thresholds, exemptions or validity check. The ``naive`` policy; decoys and traps are built to fool it."""
    return (
        2 * event["idle_s"] >= event["duration_s"]
        or is_distracting(event["title"])
        or event["context_switches"] >= THRASHING_MIN_SWITCHES // 2
    )


# -- logs --------------------------------------------------------------------------------------------------


def _event(rng: random.Random, kind: str, clear: bool) -> dict[str, Any]:
    """One event of ``kind`` (no id or start time yet)."""
    app, title = rng.choice(WORK_WINDOWS)
    switches = rng.randint(0, 4)
    if kind == "productive":
        duration = rng.randint(300, 3000)
        idle = rng.randint(0, duration // 8)
    elif kind == "idle":
        duration = rng.randint(600, 2400) if clear else rng.randint(IDLE_MIN_S + 20, 2400)
        low = max(IDLE_MIN_S, int(duration * (0.7 if clear else 0.5)) + 1)
        idle = rng.randint(low, int(duration * 0.98))
    elif kind == "distraction":
        app, title = rng.choice(DISTRACTING_WINDOWS)
        duration = rng.randint(600, 2400) if clear else rng.randint(DISTRACTION_MIN_S, 2400)
        idle = rng.randint(0, duration // 6)
    elif kind == "thrashing":
        duration = rng.randint(300, 1200)
        idle = rng.randint(0, duration // 6)
        switches = rng.randint(15, 30) if clear else rng.randint(THRASHING_MIN_SWITCHES, 30)
    elif kind == "short_focus":
        duration, idle, switches = rng.randint(40, 170), rng.randint(0, 15), 1
    elif kind == "idle_under_half":
        duration = rng.randint(1500, 3600)
        idle = rng.randint(IDLE_MIN_S, int(duration * 0.45))
    elif kind == "idle_short":
        duration = rng.randint(340, 2 * IDLE_MIN_S - 40)  # short enough that half of it is under 300 s
        idle = rng.randint(duration // 2 + 1, IDLE_MIN_S - 10)
    elif kind == "brief_distraction":
        app, title = rng.choice(DISTRACTING_WINDOWS)
        duration = rng.randint(30, DISTRACTION_MIN_S - 60)
        idle = rng.randint(0, duration // 6)
    elif kind == "busy_switching":
        duration = rng.randint(300, 1500)
        idle = rng.randint(0, duration // 8)
        switches = rng.randint(THRASHING_MIN_SWITCHES - 4, THRASHING_MIN_SWITCHES - 1)
    elif kind in ("meeting", "build"):
        app, title = rng.choice(MEETING_WINDOWS if kind == "meeting" else BUILD_WINDOWS)
        duration = rng.randint(900, 3600)
        idle = rng.randint(max(IDLE_MIN_S, int(duration * 0.6)), int(duration * 0.97))
        switches = rng.randint(0, 2)
    elif kind == "fake_idle_exceeds":
        duration = rng.randint(200, 900)
        idle = duration + rng.randint(100, 800)
    elif kind == "fake_negative":
        duration = -rng.randint(60, 900)
        idle = rng.randint(IDLE_MIN_S, 900)
    else:
        raise ValueError(f"unknown event kind '{kind}'")
    return {"app": app, "title": title, "duration_s": duration, "idle_s": idle, "context_switches": switches}


def render_event(event: dict[str, Any]) -> str:
    return (
        f"{event['id']} | {event['start']} | app: {event['app']} | title: {event['title']} | "
        f"duration_s: {event['duration_s']} | idle_s: {event['idle_s']} | "
        f"context_switches: {event['context_switches']}"
    )


def random_log(rng: random.Random, profile: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Events of one log drawn with ``profile`` (a level's or :data:`ADVERSARIAL`), and their kinds."""
    gold = rng.randint(*profile["gold"])
    decoys = rng.randint(*profile["decoys"])
    traps = rng.randint(*profile["traps"])
    total = max(rng.randint(*profile["events"]), gold + decoys + traps)
    kinds = (
        [rng.choice(GOLD_KINDS) for _ in range(gold)]
        + [rng.choice(DECOY_KINDS) for _ in range(decoys)]
        + [rng.choice(TRAP_KINDS) for _ in range(traps)]
        + ["productive"] * (total - gold - decoys - traps)
    )
    rng.shuffle(kinds)
    clock = rng.randint(8 * 3600, 10 * 3600)
    events = []
    for number, kind in enumerate(kinds, start=1):
        event = {"id": f"e{number:02d}", "start": f"{clock // 3600:02d}:{clock // 60 % 60:02d}"}
        event.update(_event(rng, kind, profile["clear"]))
        # The promise every log keeps: the rule labels each event as its kind was built to be labelled.
        assert low_productivity(event) == (kind in GOLD_KINDS), f"{kind} event mislabelled: {event}"
        events.append(event)
        clock += max(event["duration_s"], 60) + rng.randint(0, 120)
    return events, kinds


def generate_logs(
    levels: list[int],
    count: int,
    split: str,
    seed: int,
    eval_fraction: float,
    profile: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """``count`` distinct logs on ``split``'s side of the hash split, levels taken in turn (or all drawn with
    ``profile`` when given)."""
    rng = random.Random(f"event_selection:{split}:{seed}")

    def draw(level: int) -> tuple[str, tuple]:
        events, kinds = random_log(rng, profile or LEVELS[level])
        log = "\n".join(render_event(event) for event in events)
        return log, (log, events, kinds)

    draws = split_draws(count, levels, split, eval_fraction, draw, "event logs", "event_selection:")
    return [
        log_row(events, kinds, level if profile is None else "adversarial", log)
        for level, (log, events, kinds) in draws
    ]


def log_row(events: list[dict], kinds: list[str], level: int | str, log: str | None = None) -> dict[str, Any]:
    """The dataset row of one log: gold ids are the events the rule labels low productivity."""
    log = log if log is not None else "\n".join(render_event(event) for event in events)
    gold = [event["id"] for event in events if low_productivity(event)]
    return {
        "prompt": f"Activity log, one event per line:\n{log}\n\nWhich events show low productivity?",
        # The answer is the gold JSON itself (what compare's debug view reads); info holds the gold ids for
        # id_set_reward, and the event kinds for breakdowns.
        "answer": json.dumps({ANSWER_FIELD: gold}),
        "info": {
            "gold_ids": gold,
            "level": level,
            "events": events,
            "kinds": kinds,
            "num_events": len(events),
            "num_decoys": sum(kind in DECOY_KINDS for kind in kinds),
            "num_traps": sum(kind in TRAP_KINDS for kind in kinds),
        },
    }


# -- the environment ---------------------------------------------------------------------------------------


class EventSelectionEnv(Procedural, SingleTurnEnv):
    name = "event_selection"
    description = "Select low-productivity events from an activity log as JSON ids; levels 1-3."
    max_new_tokens_by_style = {"terse": 16, "chat": 64}

    generate_rows = staticmethod(generate_logs)

    def adversarial_examples(self, n: int, seed: int) -> list[Example]:
        """Held-out-side logs where decoys and traps (idle meetings, running builds, fake records) outnumber
        the events to select: a policy that reads "idle" or "YouTube" and stops there picks most of them."""
        seed += ADVERSARIAL_SEED_OFFSET
        rows = generate_logs(self.levels, n, "eval", seed, self.eval_fraction, profile=ADVERSARIAL)
        return load_examples(rows, self.system_prompt)

    def policies(self):
        """``oracle`` answers the gold ids (read from the example); ``naive`` applies
        :func:`looks_unproductive`, the rule without its thresholds and exceptions; ``random`` selects each
        event with probability 0.3; ``all`` selects every event, the floor F1 rewards without any reading
        (a policy that only learns to select more climbs toward it)."""

        def answer(ids: list[str]) -> str:
            return json.dumps({ANSWER_FIELD: ids})

        def oracle(messages, state, example, rng):
            return answer(example.info["gold_ids"])

        def naive(messages, state, example, rng):
            return answer([e["id"] for e in example.info["events"] if looks_unproductive(e)])

        def random_pick(messages, state, example, rng):
            return answer([e["id"] for e in example.info["events"] if rng.random() < 0.3])

        def select_all(messages, state, example, rng):
            return answer([e["id"] for e in example.info["events"]])

        return {"oracle": oracle, "naive": naive, "random": random_pick, "all": select_all}


def load_environment(
    level: int | list[int] = 1,
    num_train: int = 2000,
    num_eval: int = 200,
    seed: int = 0,
    eval_fraction: float = 0.1,
    format_weight: float = 0.05,
    system_prompt: str | None = SYSTEM_PROMPT,
    prompt_style: str = "terse",
    dataset: str | None = None,
    eval_dataset: str | None = None,
) -> EventSelectionEnv:
    """Activity logs at ``level`` (an int or a list for a mix). Rubric: ``id_f1`` (1) + ``json_valid`` and
    ``json_schema_match`` (``format_weight`` each); ``id_precision`` and ``id_recall`` are weight-0
    measurements. An answer with no JSON object scores 0 on every component (not an error).

    ``dataset`` / ``eval_dataset``: JSONL files of logs to use instead of the generated ones (rows as
    :func:`generate_logs` makes them, e.g. written by ``rewardlab data generate``); ``num_train`` and
    ``num_eval`` then do not apply."""
    levels = checked_levels(level, LEVELS)
    check_split_sizes(num_train, num_eval, eval_fraction)
    if format_weight < 0:
        raise ValueError(f"format_weight must be >= 0, got {format_weight}")
    parser = JSONParser()
    rubric = Rubric(
        [
            id_set_reward(ANSWER_FIELD, "f1", parser=parser),
            json_valid(parser),
            json_schema_match(ANSWER_SCHEMA, parser),
            id_set_reward(ANSWER_FIELD, "precision", parser=parser),
            id_set_reward(ANSWER_FIELD, "recall", parser=parser),
        ],
        weights=[1.0, format_weight, format_weight, 0.0, 0.0],
        parser=parser,
        # Inline: these are pure, fast functions of one string; a worker process would buy nothing.
        isolation="inline",
    )
    return EventSelectionEnv(
        levels=levels,
        eval_fraction=eval_fraction,
        dataset=dataset or generate_logs(levels, num_train, "train", seed, eval_fraction),
        eval_dataset=eval_dataset or generate_logs(levels, num_eval, "eval", seed, eval_fraction),
        system_prompt=system_prompt,
        rubric=rubric,
        parser=parser,
        prompt_style=prompt_style,
    )
