"""The event-selection recipe of docs/data.md, small: logs drawn with model-written window titles, a title
that names a distracting site caught by the example's check, and the environment training on the files."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rewardlab.config import DataFilterConfig, DataGenerateConfig
from rewardlab.data.generate import generate
from rewardlab.data.quality import filter_rows
from rewardlab.envs.builtin.event_selection import load_environment

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "data" / "event_logs"
TITLES = [
    {"app": "VS Code", "title": "parser.py - billing"},
    {"app": "Word", "title": "Design review.docx"},
    {"app": "Chrome", "title": "Funny cats - YouTube"},  # a work window a model titled as a distraction
]


def test_generated_logs_are_filtered_and_an_environment_trains_on_them(tmp_path, monkeypatch):
    titles = tmp_path / "titles.jsonl"
    titles.write_text("".join(json.dumps(row) + "\n" for row in TITLES))
    monkeypatch.setenv("EVENT_TITLES", str(titles))
    logs = tmp_path / "logs.jsonl"
    generate(DataGenerateConfig(
        generator=f"{EXAMPLE / 'event_logs.py'}:event_log", row_schema=str(EXAMPLE / "event_log.schema.json"),
        rows=60, levels={1: 0.5, 2: 0.5}, out=str(logs),
    ))  # fmt: skip
    rows = [json.loads(line) for line in logs.read_text().splitlines()]
    shown = Counter(event["title"] for row in rows for event in row["info"]["events"])
    assert all(shown[row["title"]] for row in TITLES)  # the pool's titles are in the logs

    clean = tmp_path / "clean.jsonl"
    checks = [
        f"{EXAMPLE / 'event_logs.py'}:{name}" for name in ("gold_ids_in_the_log", "kinds_keep_their_labels")
    ]
    result = filter_rows(DataFilterConfig(
        input=str(logs), out=str(clean), row_schema=str(EXAMPLE / "event_log.schema.json"), checks=checks,
        env="event_selection", held_out=0.2,
    ))  # fmt: skip
    rejected = [json.loads(line) for line in result.rejected_path.read_text().splitlines()]

    # Exactly the logs where a work event (of a kind not to select) got the YouTube title long enough for
    # the rule to call it a distraction: counted under one reason, the event and title in the message.
    def flips(row) -> bool:
        pairs = zip(row["info"]["events"], row["info"]["kinds"], strict=True)
        return any(
            event["title"] == TITLES[2]["title"] and kind not in ("idle", "distraction", "thrashing")
            and event["duration_s"] >= 300
            for event, kind in pairs
        )  # fmt: skip

    flipped = [row for row in rows if flips(row)]
    assert flipped and len(rejected) == len(flipped)
    assert {entry["reason"] for entry in rejected} == {
        "check kinds_keep_their_labels: a model-written title changed an event's label"
    }
    assert all("Funny cats - YouTube" in entry["message"] for entry in rejected)

    env = load_environment(dataset=str(clean), eval_dataset=str(result.held_out_path))
    kept = len(rows) - len(rejected)
    assert len(env.train_examples) + len(env.eval_examples) == kept and len(env.eval_examples) > 0
    example = env.eval_examples[0]
    reply = env.policies()["oracle"]([], {}, example, None)
    assert json.loads(reply)["selected_event_ids"] == example.info["gold_ids"]
