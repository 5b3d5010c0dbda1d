"""``rewardlab data generate``: rows checked against a schema, levels and balanced classes by quota,
provenance on every row, resumption after an interruption, refusal of changed settings, the CLI."""

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import user_error
from rewardlab.cli import app
from rewardlab.config import DataGenerateConfig
from rewardlab.data.generate import generate, level_plan, rejected_path
from rewardlab.envs.base import SingleTurnEnv
from rewardlab.rubrics import Rubric

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
GENERATOR = f"{EXAMPLES / 'word_problems.py'}:word_problem"
SCHEMA = str(EXAMPLES / "word_problems.schema.json")


def config(out: Path, **fields) -> DataGenerateConfig:
    settings = {"generator": GENERATOR, "row_schema": SCHEMA, "rows": 120, "out": str(out)}
    return DataGenerateConfig(**{**settings, **fields})


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def without_time(rows: list[dict]) -> list[dict]:
    for row in rows:
        del row["info"]["provenance"]["created_at"]
    return rows


def test_invalid_rows_are_rejected_with_their_reason_and_never_written(tmp_path):
    out = tmp_path / "rows.jsonl"
    result = generate(config(out))
    rows = read(out)
    assert result.written == len(rows) == 120
    assert all(int(row["answer"]) >= 0 for row in rows)  # the schema's pattern kept out negative answers
    rejected = read(rejected_path(out))
    assert rejected and all(int(entry["row"]["answer"]) < 0 for entry in rejected)
    assert {entry["reason"] for entry in rejected} == {"schema: answer (pattern)"}
    assert result.rejected == Counter({"schema: answer (pattern)": len(rejected)})
    assert "does not match" in rejected[0]["message"]


def test_levels_get_their_shares_and_balanced_classes_equal_quotas(tmp_path):
    assert level_plan(10, {1: 0.5, 2: 0.3, 3: 0.2}) == [(1, 0, 5), (2, 5, 3), (3, 8, 2)]
    assert [count for _, _, count in level_plan(7, {1: 1 / 3, 2: 1 / 3, 3: 1 / 3})] == [3, 2, 2]
    out = tmp_path / "rows.jsonl"
    levels = {1: 0.5, 2: 0.25, 3: 0.25}
    result = generate(config(out, levels=levels, balance="info.operation"))
    rows = read(out)
    per_level = Counter(row["info"]["provenance"]["level"] for row in rows)
    assert per_level == {1: 60, 2: 30, 3: 30}
    for level in levels:  # 60 = 3 x 20, 30 = 3 x 10: exactly equal classes
        classes = Counter(row["info"]["operation"] for row in rows if row["info"]["level"] == level)
        assert set(classes.values()) == {per_level[level] // 3}, (level, classes)
    assert result.passed_over > 0 and not result.unfilled


def test_a_class_that_cannot_be_filled_is_said_in_one_line(tmp_path):
    module = tmp_path / "only_add.py"
    module.write_text(
        "def make(rng, level):\n"
        "    return {'prompt': 'what is 1+1?', 'answer': '2', 'info': {'operation': 'add', 'level': 1}}\n"
    )
    out = tmp_path / "rows.jsonl"
    result = generate(
        config(out, generator=f"{module}:make", rows=9, balance="info.operation", max_attempts=5)
    )
    assert result.written == 3  # add's third of the nine; subtract and multiply never come
    [line] = result.unfilled
    assert '"subtract" 0/3' in line and '"multiply" 0/3' in line and "\n" not in line


def test_every_row_carries_its_provenance(tmp_path):
    out = tmp_path / "rows.jsonl"
    generate(config(out, rows=20, levels={1: 0.5, 2: 0.5}, seed=7))
    for index, row in enumerate(read(out)):
        provenance = row["info"]["provenance"]
        assert provenance["index"] == index and provenance["seed"] == 7
        assert provenance["level"] == (1 if index < 10 else 2)
        assert provenance["generator"] == GENERATOR and provenance["schema"] == SCHEMA
        assert provenance["rewardlab_version"] and provenance["created_at"].startswith("20")


def test_an_interrupted_run_resumes_to_the_rows_of_an_uninterrupted_one(tmp_path):
    settings = {"rows": 90, "levels": {1: 0.4, 2: 0.3, 3: 0.3}, "balance": "info.operation", "seed": 3}
    whole = tmp_path / "whole.jsonl"
    generate(config(whole, **settings))
    cut = tmp_path / "cut.jsonl"
    generate(config(cut, **settings))
    lines = cut.read_bytes().splitlines(keepends=True)
    # Interrupted while writing row 46: half its line made it to disk; its rejections (and later ones) too.
    cut.write_bytes(b"".join(lines[:45]) + lines[45][: len(lines[45]) // 2])
    result = generate(config(cut, **settings))
    assert (result.resumed_from, result.written) == (45, 45)
    assert without_time(read(cut)) == without_time(read(whole))
    assert read(rejected_path(cut)) == read(rejected_path(whole))  # no rejection counted twice
    again = generate(config(cut, **settings))
    assert again.written == 0 and len(read(cut)) == 90


def test_other_settings_into_the_same_file_are_refused(tmp_path):
    out = tmp_path / "rows.jsonl"
    generate(config(out, rows=10))
    message = user_error(generate, config(out, rows=10, seed=1))
    assert "other settings (seed differ)" in message
    (tmp_path / "mine.jsonl").write_text('{"prompt": "x"}\n')
    assert "not written by data generate" in user_error(generate, config(tmp_path / "mine.jsonl"))


def test_bad_input_is_one_line_naming_it(tmp_path):
    out = tmp_path / "rows.jsonl"
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "object", "properties": {"answer": {"type": "strnig"}}}')
    assert "not a valid JSON Schema" in user_error(generate, config(out, row_schema=str(broken)))
    (tmp_path / "notjson.json").write_text("{")
    assert "not valid JSON" in user_error(generate, config(out, row_schema=str(tmp_path / "notjson.json")))
    assert "generator file not found" in user_error(generate, config(out, generator="nowhere.py:f"))
    assert "failed to import" in user_error(generate, config(out, generator="no_such_module_x:f"))
    assert "has no 'nope'" in user_error(
        generate, config(out, generator=f"{EXAMPLES / 'word_problems.py'}:nope")
    )
    assert "lists no values" in user_error(generate, config(out, balance="prompt"))
    with pytest.raises(ValueError, match="sum to 0.9"):
        config(out, levels="1=0.5,2=0.4")


def test_raising_generators_and_unloadable_rows_are_rejections(tmp_path):
    module = tmp_path / "flaky.py"
    module.write_text(
        "from pydantic import BaseModel\n"
        "class Row(BaseModel):\n"
        "    prompt: object\n"
        "    answer: str\n"
        "def make(rng, level):\n"
        "    draw = rng.random()\n"
        "    if draw < 0.2:\n"
        "        raise ZeroDivisionError('bad luck')\n"
        "    if draw < 0.4:\n"
        "        return {'prompt': [{'role': 'robot', 'content': 'hi'}], 'answer': '1'}\n"
        "    return {'prompt': 'say 1', 'answer': '1'}\n"
        "def always_fails(rng, level):\n"
        "    raise KeyError('missing')\n"
    )
    out = tmp_path / "rows.jsonl"
    result = generate(config(out, generator=f"{module}:make", row_schema=f"{module}:Row", rows=50))
    assert result.written == 50
    assert set(result.rejected) == {"generator raised ZeroDivisionError", "environment cannot load it"}
    reasons = {entry["reason"]: entry["message"] for entry in read(rejected_path(out))}
    assert "unknown role 'robot'" in reasons["environment cannot load it"]
    message = user_error(
        generate, config(tmp_path / "b.jsonl", generator=f"{module}:always_fails", row_schema=f"{module}:Row")
    )
    assert "none of 200 draws passed" in message and "KeyError" in message


def test_an_environment_loads_the_output(tmp_path):
    out = tmp_path / "rows.jsonl"
    generate(config(out, rows=30, levels={1: 0.5, 2: 0.5}))
    env = SingleTurnEnv(dataset=str(out), rubric=Rubric(funcs=[lambda completion, answer: 1.0]))
    assert len(env.train_examples) == 30
    first = env.train_examples[0]
    assert first.info["level"] == 1 and first.info["provenance"]["index"] == 0
    assert first.prompt[-1]["content"] == read(out)[0]["prompt"]


def test_the_command_line(tmp_path):
    out = tmp_path / "rows.jsonl"
    args = ["data", "generate", "--generator", GENERATOR, "--schema", SCHEMA, "--rows", "40"]
    args += ["--out", str(out), "--levels", "1=0.5,2=0.5", "--balance", "info.operation", "--seed", "2"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "40 rows written" in result.output and "rows/s" in result.output and "rejected:" in result.output
    assert "passed over (class full)" in result.output
    assert len(read(out)) == 40 and read(out)[0]["info"]["provenance"]["seed"] == 2
    result = CliRunner().invoke(app, [*args[:-1], "5"])
    assert result.exit_code == 2 and "other settings (seed differ)" in result.output
    result = CliRunner().invoke(
        app, ["data", "generate", "--set", "rows=5", "--out", str(out), "--print-config"]
    )
    assert result.exit_code == 0 and "rows = 5" in result.output
