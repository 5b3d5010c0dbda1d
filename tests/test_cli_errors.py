"""Every user mistake named in the docs ends in one line on the console and exit code 2, no traceback."""

import json
import os
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def assert_one_line_error(code, output, expected):
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("error: ") and expected in lines[0], output
    assert "Traceback" not in output


def test_unknown_environment(tmp_path):
    code, out = run("eval", "--env", "no_such_env", "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, "unknown environment 'no_such_env'")


def test_unknown_config_field_suggests_the_right_one(tmp_path):
    code, out = run("train", "--set", "lerning_rate=1e-4", "--runs-dir", str(tmp_path))
    assert_one_line_error(
        code, out, "unknown config field 'lerning_rate' (did you mean 'optimizer.learning_rate'?)"
    )


def test_mistyped_config_field(tmp_path):
    code, out = run("train", "--set", "lora.rank=many", "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, "config field 'lora.rank': Input should be a valid integer")


def test_bad_field_in_toml_file_names_file_and_field(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text('max_steps = 10\n[lora]\nrank = "sixteen"\n')
    code, out = run("train", "--config", str(config), "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, "train.toml: config field 'lora.rank'")


def test_missing_config_file(tmp_path):
    code, out = run("train", "--config", str(tmp_path / "nope.toml"))
    assert_one_line_error(code, out, "config file not found")


def test_invalid_toml(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text("max_steps = = 3\n")
    code, out = run("train", "--config", str(config))
    assert_one_line_error(code, out, "broken.toml: invalid TOML")


def test_model_path_that_does_not_exist(tmp_path):
    code, out = run("eval", "--model", str(tmp_path / "no-model"), "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, "model path does not exist")


def test_dataset_row_without_a_prompt(tmp_path):
    env_file = tmp_path / "my_env.py"
    env_file.write_text(
        "from rewardlab.envs import SingleTurnEnv\n"
        "def load_environment():\n"
        "    return SingleTurnEnv(dataset=[{'prompt': 'ok', 'answer': '1'}, {'answer': '2'}])\n"
    )
    code, out = run("eval", "--env", str(env_file), "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, "dataset row 1: row has no 'prompt' or 'question'")


def test_sft_data_file_row_without_a_prompt(tmp_path):
    data = tmp_path / "sft.jsonl"
    data.write_text(
        json.dumps({"prompt": "1+1=", "completion": "2"}) + "\n" + json.dumps({"completion": "3"}) + "\n"
    )
    code, out = run("sft", "--set", f"data={json.dumps(str(data))}", "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, "sft.jsonl line 2: row has no 'prompt' or 'question'")


def test_unknown_model_for_compare_and_unknown_run_for_show(tmp_path):
    code, out = run("compare", "abc", "def", "--env", "arithmetic", "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, "model 'abc': no directory")
    from rewardlab.runs import RunStore

    assert RunStore(tmp_path).list() == []  # found before anything is evaluated: no run to record
    code, out = run("runs", "show", "zzz", "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, "no run 'zzz'")


def test_a_mistyped_run_id_is_no_run_with_the_closest_suggested(tmp_path):
    from rewardlab.runs import RunStore

    store = RunStore(tmp_path)
    train_run = store.create_run("train", {"model": {"name_or_path": "tiny"}})
    eval_run = store.create_run("eval", {})
    store_dir = tmp_path / "rewardlab.db"
    code, out = run("eval", "--model", "train-nosuch", "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, f"no run 'train-nosuch' in {store_dir} (did you mean '{train_run.id}'?)")
    code, out = run("compare", "eval-nosuch", "eval-nosuch2", "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, f"no run 'eval-nosuch' in {store_dir} (did you mean '{eval_run.id}'?)")
    code, out = run("export", "nosuchrun", "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, f"no run 'nosuchrun' in {store_dir}")
    code, out = run("runs", "show", train_run.id[:-1] + "x", "--runs-dir", str(tmp_path))
    assert_one_line_error(code, out, f"(did you mean '{train_run.id}'?)")
    # No store at all: still the run that is not there, never a Hub download.
    code, out = run("train", "--model", "sft-nosuch", "--runs-dir", str(tmp_path / "empty"))
    assert_one_line_error(code, out, "no run 'sft-nosuch' in")


def test_help_config_lists_documented_fields():
    code, out = run("train", "--help-config")
    assert code == 0
    for field in ("learning_rate", "lora.rank", "epsilon_high", "loss_type", "sampling.temperature"):
        assert field in out


@pytest.mark.skipif(
    not os.path.exists(os.path.join(os.path.dirname(sys.executable), "rewardlab")),
    reason="console script not installed",
)
@pytest.mark.slow
def test_installed_command_exits_2_without_traceback(tmp_path):
    """The real entry point, in a real process: stderr and stdout carry no traceback."""
    command = os.path.join(os.path.dirname(sys.executable), "rewardlab")
    result = subprocess.run(
        [command, "train", "--set", "max_stepz=3", "--runs-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stdout + result.stderr
    assert "unknown config field 'max_stepz' (did you mean 'max_steps'?)" in result.stdout


RAISING_ENV = """
from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric

def always_raises(completion):
    raise ValueError("need at least one value")

def sometimes_raises(completion, info):
    if info["i"] % 2:
        raise ValueError(f"odd row {info['i']}")
    return 1.0

def load_environment(which="always"):
    rows = [{"prompt": f"say {i}", "answer": "", "info": {"i": i}} for i in range(8)]
    reward = always_raises if which == "always" else sometimes_raises
    return SingleTurnEnv(dataset=rows, eval_dataset=rows, rubric=Rubric([reward]))
"""


def test_a_reward_that_always_raises_fails_eval_and_train_in_one_line(tmp_path):
    from rewardlab.runs import RunStore

    env_file = tmp_path / "raising_env.py"
    env_file.write_text(RAISING_ENV)
    common = ["--env", str(env_file), "--runs-dir", str(tmp_path), "--set", "sampling.max_new_tokens=4"]
    code, out = run("eval", "-n", "8", "-r", "4", *common)
    assert_one_line_error(
        code,
        out,
        "all 32 rollouts errored, so there is nothing to score; "
        "the first: reward function 'always_raises': ValueError: need at least one value",
    )
    code, out = run(
        "train", *common, "--set", "max_steps=3", "--set", "prompts_per_step=4", "--set", "group_size=2"
    )
    assert_one_line_error(code, out, "all 8 rollouts errored")
    store = RunStore(tmp_path)
    runs = {run.kind: run for run in store.list()}
    assert runs["eval"].status == "failed" and runs["train"].status == "failed"
    assert "need at least one value" in runs["train"].summary["error"]
    assert len(store.rollouts(runs["eval"].id)) == 32  # kept, to be looked at


def test_partial_reward_errors_are_counted_and_shown(tmp_path):
    env_file = tmp_path / "raising_env.py"
    env_file.write_text(RAISING_ENV)
    common = ["--env", str(env_file), "--runs-dir", str(tmp_path), "--set", "sampling.max_new_tokens=4"]
    code, out = run("eval", "-n", "8", "-r", "2", *common, "--set", 'env.args={which = "sometimes"}')
    assert code == 0, out
    assert "errored rollouts" in out and "8" in out
    assert "ValueError: odd row" in out
    code, out = run(
        "train",
        *common,
        "--set",
        'env.args={which = "sometimes"}',
        "--set",
        "max_steps=1",
        "--set",
        "prompts_per_step=4",
        "--set",
        "group_size=2",
    )
    assert code == 0, out
    assert "4 of 8 rollouts errored" in out
