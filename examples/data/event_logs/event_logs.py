"""Activity logs for the ``event_selection`` environment with some work windows titled by a model: the
generator of the event-selection recipe in docs/data.md.

Logs are drawn as the environment draws them (its levels, decoys and traps); then each event that shows a
work window is retitled, with probability one half, from a pool of window titles a model wrote
(``titles.jsonl`` beside this file, or the file ``$EVENT_TITLES`` names; made with ``data generate
--template window_title.txt``). The gold ids are what the environment's rule says of the retitled events, so
a model-written title that names a distracting site turns a work event into a distraction: the checks below
reject such rows in ``data filter``, since the log no longer has the decoys and traps its level was built
with.
"""

from __future__ import annotations

import json
import os
import random
from functools import cache
from pathlib import Path

from rewardlab.envs.builtin.event_selection import GOLD_KINDS, LEVELS, log_row, low_productivity, random_log

# The kinds whose events show a work window (the others show a distracting site, a meeting or a build).
WORK_KINDS = {
    "productive", "idle", "thrashing", "short_focus", "idle_under_half", "idle_short", "busy_switching",
    "fake_idle_exceeds", "fake_negative",
}  # fmt: skip


@cache
def titles() -> list[tuple[str, str]]:
    path = Path(os.environ.get("EVENT_TITLES") or Path(__file__).with_name("titles.jsonl"))
    if not path.is_file():
        raise FileNotFoundError(f"no window titles at {path}: make them first (docs/data.md)")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(row["app"], row["title"]) for row in rows]


def event_log(rng: random.Random, level: int | None) -> dict:
    level = level or 1
    events, kinds = random_log(rng, LEVELS[level])
    for event, kind in zip(events, kinds, strict=True):
        if kind in WORK_KINDS and rng.random() < 0.5:
            event["app"], event["title"] = rng.choice(titles())
    return log_row(events, kinds, level)


# -- checks for data filter: fn(row) -> None (keep) or a reason (reject) ----------------------------------


def gold_ids_in_the_log(row: dict) -> str | None:
    ids = {event["id"] for event in row["info"]["events"]}
    missing = [gold for gold in row["info"]["gold_ids"] if gold not in ids or gold not in row["prompt"]]
    return f"gold ids not in the log: {', '.join(missing)}" if missing else None


def kinds_keep_their_labels(row: dict) -> tuple[str, str] | None:
    """Every event is labelled as its kind was built to be: a retitled work event is not a distraction."""
    for event, kind in zip(row["info"]["events"], row["info"]["kinds"], strict=True):
        if low_productivity(event) != (kind in GOLD_KINDS):
            detail = f"{event['id']} was built as {kind}, but the rule says otherwise: {event['title']!r}"
            return "a model-written title changed an event's label", detail
    return None
