"""Comparing two models like a sceptic: the same records per data mode, overlap warnings, debug views."""

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.config import CompareConfig, EvalConfig, SFTConfig
from rewardlab.errors import RewardlabError
from rewardlab.eval.compare import (
    answer_view,
    as_id_list,
    compare_models,
    debug_line,
    gold_view,
    run_compare,
)
from rewardlab.models.loading import locate, resolve
from rewardlab.rubrics import XMLParser
from rewardlab.rubrics.parsers import JSONParser
from rewardlab.runs import RunStore
from rewardlab.runs.lineage import lineage, trained_env, training_data_of
from rewardlab.train.sft import run_sft

ENV = {"name": "arithmetic", "args": {"level": 2, "num_train": 200, "num_eval": 20}}


@pytest.fixture(scope="module")
def primed(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    store = RunStore(root)
    sft = run_sft(
        SFTConfig.model_validate({"env": ENV, "max_steps": 20, "batch_size": 16, "runs_dir": str(root)}),
        store,
    )
    return store, sft


def test_lineage_traces_a_model_to_its_runs(primed):
    store, sft = primed
    assert lineage(str(sft.model_dir), store) == [sft.model_dir.parent]
    assert lineage(sft.run_id, store) == [sft.model_dir.parent]
    trained = training_data_of(str(sft.model_dir), store)
    assert len(trained.hashes) == 200 and trained.signatures.shape == (200, 64)
    assert trained_env(str(sft.model_dir), store) == ENV
    assert lineage("tiny", store) == [] and training_data_of("tiny", store) is None


def test_every_mode_compares_the_same_records(primed):
    store, sft = primed
    common = {"env": ENV, "num_examples": 10, "rollouts_per_example": 2, "runs_dir": str(store.root)}
    config_a = EvalConfig.model_validate({**common, "model": {"name_or_path": "tiny"}})
    config_b = EvalConfig.model_validate({**common, "model": {"name_or_path": str(sft.model_dir)}})
    results = compare_models(store, config_a, config_b)
    assert [r.mode for r in results] == ["held-out", "fresh", "adversarial"]
    for result in results:
        assert result.skipped is None and result.comparison.reward.n == 10 and result.examples == 10
        # tiny has no training history: unchecked, not "0 seen"; the splits are disjoint from SFT's data
        assert result.seen_in_training_a is None and not result.overlap_a.checked
        assert result.seen_in_training_b == 0 and result.overlap_b.near == 0
        ids_a = {r["example_id"] for r in store.rollouts(result.comparison.run_a, phase="eval")}
        ids_b = {r["example_id"] for r in store.rollouts(result.comparison.run_b, phase="eval")}
        assert ids_a == ids_b and len(ids_a) == 10
        assert "latency_p95_s" in result.summary_a and "latency_p95_s" in result.summary_b
    adversarial = store.rollouts(results[2].comparison.run_a, phase="eval")
    assert all(r["info"]["needs_carry"] for r in adversarial)
    held_out = {r["example_id"] for r in store.rollouts(results[0].comparison.run_a, phase="eval")}
    fresh = {r["example_id"] for r in store.rollouts(results[1].comparison.run_a, phase="eval")}
    assert held_out != fresh


def test_resolve_understands_run_ids_and_run_directories(primed):
    store, sft = primed
    run_dir = str(sft.model_dir.parent)
    assert locate(sft.run_id, store.root) == run_dir
    assert locate(sft.run_id[:-2], store.root) == run_dir  # a unique prefix
    assert resolve(sft.run_id, store.root) == resolve(run_dir) == (str(sft.model_dir.resolve()), None)
    for name in ("tiny", "smollm2-135m", "scripted:oracle", "Org/model-1.5"):
        assert locate(name, store.root) == name
    with pytest.raises(RewardlabError, match="no run 'sft-nosuch'"):
        locate("sft-nosuch", store.root)  # reads as a run id: never a Hub download
    with pytest.raises(RewardlabError, match="no run 'Org/model-1.5'"):
        locate("Org/model-1.5", store.root, run_only=True)


def test_run_compare_is_the_whole_command(primed):
    """Models named by run id, the environment found through the runs' lineage, one compare run recorded;
    two eval runs are compared as they are."""
    store, sft = primed
    config = CompareConfig(a="tiny", b=sft.run_id, num_examples=4, rollouts_per_example=1, samples=2)
    result = run_compare(store, config)
    assert result.runs is None and [mode.mode for mode in result.modes] == ["held-out"]
    run = store.get(result.run_id)
    assert run.kind == "compare" and run.status == "completed" and run.config["env"] == ENV
    assert run.config["b"] == str(sft.model_dir.parent)  # the run id, as that run's directory
    assert run.summary["held-out"]["n"] == 4 and run.summary["held-out"]["seen_in_training_b"] == 0
    comparison = result.modes[0].comparison
    again = run_compare(store, CompareConfig(a=comparison.run_a, b=comparison.run_b))
    assert again.run_id is None and again.runs.reward.mean_diff == comparison.reward.mean_diff


def test_cli_warns_when_records_were_in_training(tmp_path):
    env_file = tmp_path / "leaky.py"
    env_file.write_text(
        "from rewardlab.envs import SingleTurnEnv\n"
        "from rewardlab.rubrics import Rubric, XMLParser\n"
        "from rewardlab.rubrics.rewards import exact_answer\n"
        "def load_environment():\n"
        "    rows = [{'prompt': f'{i}+{i}=', 'answer': str(2 * i)} for i in range(12)]\n"
        "    parser = XMLParser()\n"
        "    # the mistake under test: the 'held-out' rows are the training rows\n"
        "    return SingleTurnEnv(dataset=rows, eval_dataset=rows, parser=parser,\n"
        "                         rubric=Rubric([exact_answer], parser=parser))\n"
    )
    runs = tmp_path / "runs"
    sft = run_sft(
        SFTConfig.model_validate(
            {"env": {"name": str(env_file)}, "max_steps": 5, "batch_size": 4, "runs_dir": str(runs)}
        ),
        RunStore(runs),
    )
    result = CliRunner().invoke(
        app,
        [
            "compare",
            "tiny",
            sft.run_id,
            "--runs-dir",
            str(runs),
            "-r",
            "1",
            "--data",
            "held-out,adversarial",
            "--label-a",
            "base",
            "--label-b",
            "primed",
        ],
        env={"COLUMNS": "200"},
    )
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "warning: primed: 12 of 12 records seen in training" in output and "measures memory" in output
    assert "base: unchecked (no rewardlab training history" in output
    assert "adversarial: skipped" in result.output and "defines no adversarial set" in result.output
    assert "gold: " in result.output and " / base: " in result.output


def test_bad_mode_and_unknown_environment_are_one_line_and_record_nothing(tmp_path):
    runner = CliRunner()
    pair = [
        "compare",
        "scripted:careless",
        "scripted:oracle",
        "-n",
        "4",
        "-r",
        "1",
        "--runs-dir",
        str(tmp_path),
    ]
    # A bad mode after a good one: nothing is evaluated before the error.
    result = runner.invoke(app, [*pair, "--env", "arithmetic", "--data", "held-out,weird"])
    assert result.exit_code == 2 and "unknown data mode 'weird'" in result.output
    result = runner.invoke(app, [*pair, "--env", "arithmetic", "--data", ","])
    assert result.exit_code == 2 and "no data mode given" in result.output
    result = runner.invoke(app, [*pair, "--env", "arithmetc"])
    assert (
        result.exit_code == 2
        and "unknown environment 'arithmetc' (did you mean 'arithmetic'?)" in result.output
    )
    result = runner.invoke(app, [*pair, "--env", "arithmetic", "--set", "env.args.level=9"])
    assert result.exit_code == 2 and "level" in result.output
    result = runner.invoke(app, ["compare", "tiny", "tiny", "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2 and "name the environment with --env" in result.output
    assert RunStore(tmp_path).list(limit=100) == []


def test_id_set_views():
    parser = XMLParser()
    assert as_id_list('{"selected_event_ids": [3, 7]}') == [3, 7]
    assert (
        as_id_list("[1, 2]") == [1, 2]
        and as_id_list("12") is None
        and as_id_list('{"a": [1], "b": [2]}') is None
    )
    assert answer_view(parser, "[3, 7]", '<answer>{"ids": [3, 9]}</answer>') == "[3, 9] overlap [3]"
    assert answer_view(parser, "42", "<answer>41</answer>") == "41"
    assert answer_view(parser, "42", "nothing") == "(no answer)"


def test_set_overlap_debug_line():
    """Id-set answers show gold, each side's ids and what each shares with gold; others show the answer."""
    parser = JSONParser()
    gold = '{"selected_event_ids": ["e1", "e4", "e7"]}'
    base = answer_view(parser, gold, 'I pick {"selected_event_ids": ["e1", "e2"]}')
    tuned = answer_view(parser, gold, '```json\n{"selected_event_ids": ["e7", "e4", "e1"]}\n```')
    question = "Which events\nmatter?  " + "x" * 200
    line = debug_line(question, gold_view(gold), "base", base, "tuned", tuned)
    assert line.startswith("'Which events matter? xxx") and "…'  gold: " in line
    assert line.endswith(
        "gold: ['e1', 'e4', 'e7'] / base: ['e1', 'e2'] overlap ['e1'] / "
        "tuned: ['e7', 'e4', 'e1'] overlap ['e7', 'e4', 'e1']"
    )
    assert gold_view({3, 1, 2}) == "[1, 2, 3]" and as_id_list(("a", "b")) == ["a", "b"]
    assert answer_view(parser, {"ids": {7, 3}}, '{"ids": [3, 5]}') == "[3, 5] overlap [3]"
    # not an id set on both sides: the answers as they are
    assert gold_view("42") == "42" and answer_view(parser, "42", '{"value": 41}') == '{"value": 41}'
    assert debug_line("1+1=", "2", "A", "3", "B", "2") == "'1+1='  gold: 2 / A: 3 / B: 2"
