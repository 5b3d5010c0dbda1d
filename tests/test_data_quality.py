"""``rewardlab data filter``: every stage counted (schema, checks, the environment's oracle, exact and near
duplicates, contamination), a split that depends on the prompt alone, rejected rows kept with their reason,
one-line errors and nothing written when the input is wrong."""

import functools
import json
import random
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import user_error
from rewardlab.cli import app
from rewardlab.config.commands import DataFilterConfig
from rewardlab.data.quality import filter_rows, held_out_position, normalised
from rewardlab.envs.builtin.arithmetic import generate_problems

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
SCHEMA = str(EXAMPLES / "word_problems.schema.json")
CHECKS = EXAMPLES / "word_problems_checks.py"
WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda"]


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def run(tmp_path: Path, rows: list, **fields):
    source = write(tmp_path / "rows.jsonl", rows)
    out = tmp_path / "clean.jsonl"
    settings = {"input": str(source), "out": str(out), "held_out": 0.0, **fields}
    return filter_rows(DataFilterConfig(**settings)), out


def rejected(out: Path) -> list[dict]:
    return read(out.with_name(out.stem + ".rejected.jsonl"))


def long_prompt(seed: int, words: int = 100) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) + str(rng.randint(0, 9)) for _ in range(words))


def word_problem(a: int, b: int, operation: str = "add", answer: int | None = None) -> dict:
    text = {
        "add": f"Ada has {a} apples and Bo gives Ada {b} more.",
        "multiply": f"Ada has {a} bags with {b} apples in each.",
    }[operation]
    expected = a + b if operation == "add" else a * b
    return {
        "prompt": f"{text} How many apples does Ada have now? Answer with the number only.",
        "answer": str(expected if answer is None else answer),
        "info": {"operation": operation, "level": 1},
    }


def test_exact_duplicates_are_caught_after_normalising_whitespace_and_case(tmp_path):
    rows = [{"prompt": "What is 2 + 2?", "answer": "4"}, {"prompt": "What is 3 + 3?", "answer": "6"}]
    rows += [{"prompt": "  what IS 2 +\n 2?", "answer": "4"}, {"prompt": "What is 2 + 2?", "answer": "5"}]
    result, out = run(tmp_path, rows)
    dedup = result.stage("dedup")
    assert (dedup.seen, dedup.rejected, dedup.kept) == (4, 2, 2)
    assert [row["prompt"] for row in read(out)] == ["What is 2 + 2?", "What is 3 + 3?"]
    entries = rejected(out)
    assert [(entry["index"], entry["reason"]) for entry in entries] == [
        (2, "duplicate of row 0"),
        (3, "duplicate of row 0"),
    ]
    assert entries[0]["message"].startswith("exact duplicate") and entries[0]["row"] == rows[2]
    result, _ = run(tmp_path, rows, dedup="none")
    assert [stage.name for stage in result.stages] == ["loadable"] and result.train == 4


def test_near_duplicates_one_word_apart_in_a_long_prompt(tmp_path):
    base = long_prompt(0)
    words = base.split()
    words[50] = "changed"
    rows = [
        {"prompt": base},
        {"prompt": long_prompt(1)},
        {"prompt": " ".join(words)},
        {"prompt": long_prompt(2)},
    ]
    assert normalised(rows[2]["prompt"]) != normalised(base)
    result, _ = run(tmp_path, rows, dedup="exact")
    assert result.stage("dedup").rejected == 0  # not the same text: exact keeps all four
    result, out = run(tmp_path, rows, dedup="near")
    assert result.stage("dedup").rejected == 1 and result.train == 3
    [entry] = rejected(out)
    assert entry["index"] == 2 and entry["reason"] == "duplicate of row 0"
    # 98 shingles, 3 of them changed: Jaccard 95/101 = 0.94, estimated from 128 permutations
    similarity = float(entry["message"].split("similarity ")[1].split()[0])
    assert entry["message"].startswith("near duplicate") and 0.9 <= similarity <= 1.0
    result, _ = run(tmp_path, rows, dedup="near", near_threshold=0.99)
    assert result.stage("dedup").rejected == 0


def test_schema_and_checks_reject_and_a_check_that_raises_is_counted(tmp_path):
    rows = [
        word_problem(2, 3),
        word_problem(4, 5, answer=8),
        word_problem(1, 6, "multiply"),
        word_problem(2, 2),
    ]
    rows += [
        {"prompt": "Ada has many apples and more.", "answer": "7", "info": {"operation": "add", "level": 1}}
    ]
    rows += [{"prompt": "too short", "answer": "-1", "info": {"operation": "add", "level": 1}}]
    checks = [f"{CHECKS}:answer_follows", f"{CHECKS}:plural_agrees"]
    result, out = run(tmp_path, rows, row_schema=SCHEMA, checks=checks, dedup="none")
    schema, stage = result.stage("schema"), result.stage("checks")
    assert (schema.seen, schema.rejected) == (6, 1)
    assert (stage.seen, stage.rejected, stage.kept) == (5, 3, 2)
    reasons = {entry["index"]: entry["reason"] for entry in rejected(out)}
    assert reasons == {
        1: "check answer_follows: answer 8 but 4 add 5 is 9",
        2: "check plural_agrees: says '1 bags'",
        4: "check answer_follows raised ValueError",  # no two numbers to unpack
        5: "schema: prompt (minLength)",
    }
    assert [row["prompt"] for row in read(out)] == [rows[0]["prompt"], rows[3]["prompt"]]


def test_a_check_that_returns_a_bool_is_one_line_and_nothing_is_written(tmp_path):
    checks = tmp_path / "checks.py"
    checks.write_text("def looks_fine(row):\n    return True\n")
    source = write(tmp_path / "rows.jsonl", [{"prompt": "a"}])
    cfg = DataFilterConfig(
        input=str(source), out=str(tmp_path / "clean.jsonl"), checks=[f"{checks}:looks_fine"]
    )
    message = user_error(filter_rows, cfg)
    assert "check looks_fine returned a bool for row 0" in message
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix == ".jsonl") == ["rows.jsonl"]


def test_the_split_is_by_prompt_alone_about_the_fraction_asked(tmp_path):
    rows = [{"prompt": f"problem number {i}: {i} * 7", "answer": str(i * 7)} for i in range(1000)]
    result, out = run(tmp_path, rows, held_out=0.1)
    held_out = read(out.with_name("clean.held_out.jsonl"))
    assert result.held_out == len(held_out) and result.train == len(read(out))
    assert result.train + result.held_out == 1000 and 70 <= result.held_out <= 130
    # decided by the prompt: shuffled, or with half the rows gone, each row stays on its side
    shuffled = rows[:]
    random.Random(3).shuffle(shuffled)
    (tmp_path / "again").mkdir()
    again, again_out = run(tmp_path / "again", shuffled[:500], held_out=0.1)
    held = {row["prompt"] for row in held_out}
    assert {row["prompt"] for row in read(again_out.with_name("clean.held_out.jsonl"))} == {
        row["prompt"] for row in shuffled[:500] if row["prompt"] in held
    }
    assert all(
        (held_out_position(normalised(row["prompt"])) < 0.1) == (row["prompt"] in held) for row in rows
    )
    # train rows are the input's lines, unchanged and in order
    lines = (tmp_path / "rows.jsonl").read_text().splitlines()
    assert out.read_text().splitlines() == [line for line in lines if json.loads(line)["prompt"] not in held]


def test_contamination_exact_and_near_against_an_eval_file(tmp_path):
    eval_rows = [{"prompt": long_prompt(10), "answer": "x"}, {"prompt": "What is 9 + 9?", "answer": "18"}]
    eval_file = write(tmp_path / "eval.jsonl", eval_rows)
    near = long_prompt(10).split()
    near[20] = "different"
    rows = [{"prompt": "what is 9 +  9?"}, {"prompt": "What is 1 + 1?"}, {"prompt": " ".join(near)}]
    result, out = run(tmp_path, rows, contamination=[str(eval_file)])
    stage = result.stage("contamination")
    assert (stage.seen, stage.rejected, stage.kept) == (3, 2, 1)
    entries = {entry["index"]: entry for entry in rejected(out)}
    assert entries[0]["reason"] == f"contaminated: {eval_file} row 1"
    assert entries[0]["message"].startswith("the same normalised prompt")
    assert entries[2]["reason"] == f"contaminated: {eval_file} row 0"
    assert "estimated Jaccard similarity" in entries[2]["message"]


def test_the_oracle_rejects_a_label_the_environment_disagrees_with(tmp_path):
    rows = generate_problems([2], 40, "train", 0, 0.1)
    rows[3]["answer"] = str(int(rows[3]["answer"]) + 1)  # a wrong sum
    rows[8]["answer"] = ""  # no reference: the checker errors
    rows.append({"prompt": "Ada has 3 apples.", "answer": "3"})  # no a, op, b for the environment to read
    result, out = run(tmp_path, rows, env="arithmetic")
    oracle = result.stage("oracle")
    assert (oracle.seen, oracle.rejected, oracle.kept) == (41, 3, 38)
    entries = {entry["index"]: entry for entry in rejected(out)}
    assert set(entries) == {3, 8, 40}
    assert entries[3]["reason"] == "oracle below maximum"
    assert entries[3]["message"].startswith("scored 0.1 of 1.1 (correct 0, format 1)")
    assert "this row has no reference answer" in entries[8]["message"]
    assert entries[40]["reason"] == "oracle raised KeyError"


def test_the_command_line_prints_the_yield_table(tmp_path):
    source = write(
        tmp_path / "rows.jsonl", [word_problem(2, 3), word_problem(2, 3), word_problem(1, 6, "multiply")]
    )
    out = tmp_path / "clean.jsonl"
    args = ["data", "filter", str(source), "--out", str(out), "--schema", SCHEMA, "--check"]
    args += [f"{CHECKS}:plural_agrees", "--dedup", "near", "--held-out", "0"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "yield per stage" in result.output
    for stage in ("loadable", "schema", "checks", "dedup"):
        assert stage in result.output
    assert "1 of 3 rows kept: 1 train" in result.output and "2 rejected" in result.output
    result = CliRunner().invoke(
        app, ["data", "filter", str(source), "--set", "held_out=0.2", "--print-config"]
    )
    assert result.exit_code == 0 and "held_out = 0.2" in result.output


@pytest.mark.parametrize(
    ("extra", "rows", "expected"),
    [
        (["--out", "OUT"], None, "input file not found"),
        (["--out", "OUT"], ['{"prompt": "a"}', "{not json"], "rows.jsonl line 2: not valid JSON"),
        (["--out", "OUT", "--check", "nowhere.py:fn"], [], "check file not found: nowhere.py"),
        (["--out", "OUT", "--check", "json:no_such"], [], "check 'json:no_such': json has no 'no_such'"),
        (["--out", "OUT", "--env", "arithmtic"], [], "unknown environment 'arithmtic'"),
        (["--out", "OUT", "--held-out", "1"], [], "held_out must be in [0, 1), got 1.0"),
        (["--out", "OUT", "--dedup", "fuzzy"], [], "config field 'dedup'"),
        ([], [], "data filter needs --out"),
    ],
)
def test_mistakes_are_one_line_and_write_nothing(tmp_path, extra, rows, expected):
    source = tmp_path / "rows.jsonl"
    if rows is not None:
        source.write_text("".join(line + "\n" for line in rows))
    out = tmp_path / "clean.jsonl"
    args = ["data", "filter", str(source), *[str(out) if arg == "OUT" else arg for arg in extra]]
    result = CliRunner().invoke(app, args)
    lines = [line for line in result.output.strip().splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert expected in lines[0]
    assert not any(path.name.startswith("clean") for path in tmp_path.iterdir())


def test_a_check_may_give_a_reason_to_count_and_a_detail_to_keep(tmp_path):
    checks_file = tmp_path / "checks.py"
    checks_file.write_text(
        "def small(row):\n"
        "    n = int(row['answer'])\n"
        "    return ('answer too big', f'{n} is over 8') if n > 8 else None\n"
    )
    rows = [word_problem(2, 3), word_problem(4, 5), word_problem(6, 7)]
    result, out = run(tmp_path, rows, checks=[f"{checks_file}:small"], dedup="none")
    entries = rejected(out)
    assert [e["reason"] for e in entries] == ["check small: answer too big"] * 2  # counted together
    assert [e["message"] for e in entries] == [
        "check small rejected the row: 9 is over 8",
        "check small rejected the row: 13 is over 8",
    ]


class ScriptedJudge:
    """Stands for OpenAISampler: accepts a row when the answer in its message is the prompt's sum."""

    sent: list = []

    def __init__(self, base_url, model, api_key_env="OPENAI_API_KEY", max_concurrency=8, **_):
        self.closed = False

    def generate_each(self, requests):
        from rewardlab.sampling.base import Generation

        replies = []
        for prompt, params in requests:
            ScriptedJudge.sent.append((prompt.messages[0]["content"], params))
            text = prompt.messages[0]["content"]
            numbers = [int(word) for word in text.replace(".", " ").split() if word.isdigit()]
            a, b, answer = numbers[0], numbers[1], numbers[-1]
            if a == 99:  # a judge that does not keep to the format
                replies.append([Generation(text="I think it is fine")])
                continue
            verdict = {"reason": f"{a} + {b} is {a + b}", "accept": a + b == answer}
            replies.append([Generation(text=json.dumps(verdict))])
        return replies

    def close(self):
        self.closed = True


def test_the_judge_rejects_with_its_reason_and_a_reply_out_of_format_is_counted(tmp_path, monkeypatch):
    ScriptedJudge.sent = []
    monkeypatch.setattr("rewardlab.sampling.openai_compat.OpenAISampler", ScriptedJudge)
    rows = [word_problem(2, 3), word_problem(4, 5, answer=8), word_problem(99, 1), word_problem(6, 7)]
    result, out = run(tmp_path, rows, dedup="none", judge_base_url="http://judge/v1", judge_model="j")
    judge = result.stage("judge")
    assert (judge.seen, judge.rejected) == (4, 2)
    entries = {e["index"]: (e["reason"], e["message"]) for e in rejected(out)}
    assert entries == {
        1: ("judge: rejected", "the judge: 4 + 5 is 9"),
        2: ("judge: reply not JSON", "the judge replied 'I think it is fine'"),
    }
    message, params = ScriptedJudge.sent[0]
    assert "Ada has 2 apples" in message and "\n5\n" in message  # the prompt and the answer, filled in
    assert params.temperature == 0 and params.response_format["json_schema"]["schema"]["required"] == [
        "reason", "accept"
    ]  # fmt: skip
    bad = tmp_path / "judge.txt"
    bad.write_text("Judge {prompt} given {label}")
    with pytest.raises(ValueError, match="judge_base_url and judge_model"):
        DataFilterConfig(input="x.jsonl", out="y.jsonl", judge_base_url="http://judge/v1")
    judged = functools.partial(run, judge_base_url="http://judge/v1", judge_model="j", judge_prompt=str(bad))
    message = user_error(judged, tmp_path, rows)
    assert "{label} is not a field it fills" in message
