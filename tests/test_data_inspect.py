"""``rewardlab data inspect``: counts per level and class (the class field from the generator's meta file),
rejected reasons, lengths, duplicates, samples, plots, and one-line errors for files that are not datasets."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import user_error
from rewardlab.cli import app
from rewardlab.config import DataGenerateConfig
from rewardlab.data.generate import generate, rejected_path
from rewardlab.data.inspect import LengthStats, inspect_dataset

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"
GENERATOR = f"{EXAMPLES / 'word_problems.py'}:word_problem"
SCHEMA = str(EXAMPLES / "word_problems.schema.json")

runner = CliRunner()


def write_jsonl(path: Path, rows: list, end: str = "\n") -> Path:
    path.write_text("\n".join(row if isinstance(row, str) else json.dumps(row) for row in rows) + end)
    return path


def inspect_cli(*args: str):
    result = runner.invoke(app, ["data", "inspect", *args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """120 word problems: levels 1/2/3 at 60/30/30, operations balanced in each, negatives rejected."""
    out = tmp_path_factory.mktemp("generated") / "problems.jsonl"
    cfg = DataGenerateConfig(
        generator=GENERATOR, row_schema=SCHEMA, rows=120, out=str(out),
        levels={1: 0.5, 2: 0.25, 3: 0.25}, balance="info.operation",
    )  # fmt: skip
    return out, generate(cfg)


def test_a_generated_dataset_is_counted_by_level_class_and_rejection_reason(generated):
    out, made = generated
    result = inspect_dataset(out)
    assert result.rows == 120
    assert result.levels == {1: 60, 2: 30, 3: 30}
    assert (result.balance, result.balance_from) == ("info.operation", "problems.jsonl.meta.json")
    assert result.classes == {"add": 40, "subtract": 40, "multiply": 40}
    assert result.cross[1, "add"] == 20 and result.cross[3, "multiply"] == 10
    assert sum(result.cross.values()) == 120
    assert result.rejected_file == rejected_path(out)
    assert result.rejected == made.rejected and set(result.rejected) == {"schema: answer (pattern)"}
    assert result.rejected["schema: answer (pattern)"] > 0

    rows = [json.loads(line) for line in out.read_text().splitlines()]
    chars = sorted(len(row["prompt"]) for row in rows)
    assert result.lengths["prompt characters"] == LengthStats(chars[59], chars[113], chars[-1])
    assert result.lengths["answer words"] == LengthStats(1, 1, 1)
    assert result.duplicate_prompts == 120 - len({row["prompt"] for row in rows})

    again = inspect_dataset(out, balance="info.level", samples=5)
    assert again.classes == {1: 60, 2: 30, 3: 30} and again.balance_from == "--balance"
    lines = [sample.line for sample in again.samples]
    assert len(lines) == 5 and lines == sorted(lines) and all(1 <= line <= 120 for line in lines)
    assert lines == [sample.line for sample in inspect_dataset(out, samples=5).samples]  # same draw each time
    sample = again.samples[0]
    assert (
        sample.prompt == rows[sample.line - 1]["prompt"]
        and sample.label == rows[sample.line - 1]["info"]["level"]
    )


def test_lengths_duplicates_and_levels_of_a_hand_written_file(tmp_path):
    assert LengthStats.of(list(range(1, 21))) == LengthStats(10, 19, 20)
    assert LengthStats.of([]) is None
    path = write_jsonl(
        tmp_path / "rows.jsonl",
        [
            {"prompt": "one two three", "answer": "3", "info": {"level": 2, "kind": "a"}},
            {"prompt": "one two three", "answer": "3", "info": {"level": 2, "kind": "b"}},
            {"prompt": "one two three", "answer": "4", "info": {"provenance": {"level": 1}, "kind": "a"}},
            {"prompt": [{"role": "user", "content": "hi there"}], "answer": "fine thanks", "info": {}},
            {"question": "q", "answer": 7},
            "",  # blank lines are skipped
        ],
    )
    result = inspect_dataset(path, balance="info.kind")
    assert result.rows == 5
    assert result.levels == {2: 2, 1: 1, None: 2}
    assert result.classes == {"a": 2, "b": 1, None: 2}
    assert result.cross == {(2, "a"): 1, (2, "b"): 1, (1, "a"): 1, (None, None): 2}
    assert result.prompt_chars == [13, 13, 13, 8, 1] and result.prompt_words == [3, 3, 3, 2, 1]
    assert result.answer_chars == [1, 1, 1, 11, 1] and result.answer_words == [1, 1, 1, 2, 1]
    assert (result.duplicate_prompts, result.repeated_prompts, result.conflicting_prompts) == (2, 1, 1)
    assert result.rejected_file is None and not result.rejected and not result.notes

    unlevelled = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "p", "answer": "a"}] * 3)
    result = inspect_dataset(unlevelled, samples=10)
    assert result.levels == {} and result.balance is None and result.classes == {}
    assert [sample.line for sample in result.samples] == [1, 2, 3]


def test_rejected_reasons_in_the_quality_loops_form_are_counted(tmp_path):
    path = write_jsonl(tmp_path / "rows.jsonl", [{"prompt": "p", "answer": "a"}])
    write_jsonl(
        rejected_path(path),
        [
            {"reason": "near duplicate", "index": 4},
            {"reason": "near duplicate", "level": 2, "message": "of row 1", "row": {"prompt": "p"}},
            {"reason": "judge: unanswerable"},
            {"index": 9},
        ],
    )
    result = inspect_dataset(path)
    assert result.rejected == {"near duplicate": 2, "judge: unanswerable": 1, "(no reason given)": 1}


def test_a_last_line_cut_short_is_noted_and_the_rest_inspected(tmp_path):
    rows = [{"prompt": f"prompt {i}", "answer": str(i)} for i in range(3)]
    path = write_jsonl(tmp_path / "rows.jsonl", [*rows, '{"prompt": "promp'], end="")
    write_jsonl(rejected_path(path), [{"reason": "r"}, '{"reas'], end="")
    result = inspect_dataset(path)
    assert result.rows == 3 and result.rejected == {"r": 1}
    assert len(result.notes) == 2
    assert f"{path} line 4 is cut short" in result.notes[0]
    assert f"{rejected_path(path)} line 2 is cut short" in result.notes[1]
    code, out = inspect_cli(str(path), "--no-plots")
    assert code == 0 and "line 4 is cut short" in out and "rows.jsonl: 3 rows" in out
    # Without a newline, a last line that is whole JSON is a row like any other.
    whole = write_jsonl(tmp_path / "whole.jsonl", rows, end="")
    assert inspect_dataset(whole).rows == 3 and not inspect_dataset(whole).notes


def test_bad_input_is_one_line_naming_the_file_and_line(tmp_path):
    good = {"prompt": "p", "answer": "a", "info": {"level": 1, "kind": "x"}}
    not_json = write_jsonl(tmp_path / "not_json.jsonl", [good, "{oops", good])
    not_object = write_jsonl(tmp_path / "not_object.jsonl", [good, good, "[1, 2]"])
    assert (
        user_error(inspect_dataset, tmp_path / "missing.jsonl")
        == f"{tmp_path / 'missing.jsonl'}: no such file"
    )
    assert user_error(inspect_dataset, not_json).startswith(f"{not_json} line 2: not valid JSON (")
    assert user_error(inspect_dataset, not_object) == f"{not_object} line 3: a list, not an object"
    no_field = write_jsonl(tmp_path / "rows.jsonl", [good])
    assert user_error(inspect_dataset, no_field, "info.knid") == (
        f"--balance info.knid: no row of {no_field} has it (its first row has: prompt, answer, info, "
        "info.level, info.kind)"
    )

    for args, expected in [
        ([str(tmp_path / "missing.jsonl")], "missing.jsonl: no such file"),
        ([str(not_json)], "not_json.jsonl line 2: not valid JSON"),
        ([str(not_object)], "not_object.jsonl line 3: a list, not an object"),
        ([str(no_field), "--balance", "info.knid"], "--balance info.knid: no row of"),
    ]:
        code, out = inspect_cli(*args, "--no-plots")
        lines = [line for line in out.strip().splitlines() if line.strip()]
        assert code == 2 and len(lines) == 1 and expected in lines[0], out
        assert "Traceback" not in out


def test_the_command_prints_the_tables_and_writes_the_plots(generated, tmp_path):
    out, made = generated
    code, text = inspect_cli(str(out), "--plots", str(tmp_path / "plots"), "--samples", "2")
    assert code == 0, text
    assert "problems.jsonl: 120 rows" in text
    assert "rows per class of info.operation (from problems.jsonl.meta.json)" in text
    assert f"rejected: {sum(made.rejected.values())} in problems.rejected.jsonl" in text
    assert "2 sample rows (drawn with seed 0)" in text
    names = ["prompt_length.png", "levels.png", "classes.png", "rejected.png"]
    for name in names:
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000, name
        assert f"plot: {png}" in text

    # By default beside the file; a dataset without levels, classes or rejections gets just its lengths.
    plain = write_jsonl(tmp_path / "plain.jsonl", [{"prompt": "p" * i, "answer": "a"} for i in range(1, 9)])
    code, text = inspect_cli(str(plain))
    assert code == 0, text
    assert sorted(path.name for path in (tmp_path / "plain.inspect").iterdir()) == ["prompt_length.png"]
    assert "rows per level" not in text and "rejected" not in text
    empty = write_jsonl(tmp_path / "empty.jsonl", [], end="")
    code, text = inspect_cli(str(empty))
    assert code == 0 and "empty.jsonl: 0 rows" in text and not (tmp_path / "empty.inspect").exists()


def test_help_names_the_options():
    code, out = inspect_cli("-h")
    assert code == 0
    for option in ("--balance", "--plots", "--no-plots", "--samples", "FILE.jsonl"):
        assert option in out
