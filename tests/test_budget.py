"""Budget and cost: the counts of a tiny run match a hand computation, a limit stops the run with a checkpoint
and a larger budget resumes it with its totals carried exactly, and the flags parse."""

import json

import pytest
from typer.testing import CliRunner

from conftest import user_error
from rewardlab.cli import app
from rewardlab.config import SFTConfig, TrainConfig
from rewardlab.models.loading import LoraSettings, load_model
from rewardlab.runs import RunStore
from rewardlab.train import checkpoint as ckpt
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import train
from test_train import comparable, easy_config, easy_env


def recording(env):
    """``env`` with every step's rollouts kept in ``env.seen``."""
    env.seen = []
    rollout = env.rollout

    def recorded(*args, **kwargs):
        out = rollout(*args, **kwargs)
        env.seen.append(out)
        return out

    env.rollout = recorded
    return env


@pytest.mark.slow
def test_a_runs_counts_match_a_hand_computation(tmp_path):
    store = RunStore(tmp_path / "runs")
    env = recording(easy_env())
    budget = {"usd_per_hour": 36.0, "usd_per_million_tokens": 2.5}
    config = easy_config(tmp_path, max_steps=2, num_iterations=2, beta=0.1, budget=budget)
    result = train(config, store, env=env)

    model, _ = load_model("tiny", lora=LoraSettings(8, 16.0, 0.0, "all-linear"), trainable=True)
    params = sum(p.numel() for p in model.parameters())
    prompt = sum(len(r.prompt_ids) for step in env.seen for r in step)
    generated = sum(sum(r.completion_mask) for step in env.seen for r in step)
    assert generated == sum(len(r.completion_ids) for step in env.seen for r in step)  # single turn
    tokens = prompt + generated
    # sampling 2N per token; update: 2 passes x 6N, one forward for the old log-probs, one for the reference
    flops = (2 + 2 * 6 + 2 + 2) * params * tokens
    cost = store.get(result.run_id).summary["cost"]
    assert cost["prompt_tokens"] == prompt and cost["completion_tokens"] == generated
    assert cost["tokens"] == tokens and cost["trained_tokens"] == 2 * generated  # nothing errored
    assert cost["flops"] == flops
    assert 0 < cost["wall_seconds"] <= result.wall_seconds
    assert cost["usd"] == pytest.approx(36.0 * cost["wall_seconds"] / 3600 + 2.5 * tokens / 1e6)
    assert cost["usd_per_hour"] == 36.0
    metrics = store.metrics(result.run_id)
    step_one = sum(len(r.prompt_ids) + len(r.completion_ids) for r in env.seen[0])
    assert metrics["cost/tokens"] == [(1, step_one), (2, tokens)]  # cumulative
    assert metrics["cost/flops"][-1] == (2, flops)
    assert metrics["cost/wall_seconds"][-1] == (2, cost["wall_seconds"])
    assert metrics["cost/usd"][-1] == (2, pytest.approx(cost["usd"]))


def test_sft_counts_its_sequences(tmp_path):
    from rewardlab.models.chat import ChatRenderer
    from rewardlab.train.sft import Demonstrations

    data = tmp_path / "demos.jsonl"
    rows = [{"prompt": "add 2 and 3", "completion": "5"}, {"prompt": "add 10 and 4", "completion": "14"}]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = SFTConfig.model_validate(
        {
            "data": str(data),
            "max_steps": 3,
            "batch_size": 2,
            "log_every": 1,
            "runs_dir": str(tmp_path / "runs"),
        }
    )
    store = RunStore(tmp_path)
    result = run_sft(config, store)
    model, tokenizer = load_model("tiny")
    demos = Demonstrations(config, ChatRenderer(tokenizer))
    pairs = [demos.draw(i, None) for i in range(2)]  # fixed completions: no teacher draws
    prompt = 3 * sum(len(p) for p, _ in pairs)  # each step trains on both rows
    trained = 3 * sum(len(c) for _, c in pairs)
    cost = store.get(result.run_id).summary["cost"]
    assert (cost["prompt_tokens"], cost["trained_tokens"], cost["completion_tokens"]) == (prompt, trained, 0)
    assert cost["tokens"] == prompt + trained
    assert cost["flops"] == 6 * sum(p.numel() for p in model.parameters()) * (prompt + trained)
    assert [value for _, value in store.metrics(result.run_id)["cost/tokens"]] == [
        (prompt + trained) * k / 3 for k in (1, 2, 3)
    ]


def test_sft_stops_at_its_budget_with_its_model_saved(tmp_path):
    data = tmp_path / "demos.jsonl"
    data.write_text(json.dumps({"prompt": "add 2 and 3", "completion": "5"}) + "\n")
    config = SFTConfig.model_validate(
        {
            "data": str(data),
            "max_steps": 50,
            "batch_size": 1,
            "runs_dir": str(tmp_path),
            "budget": {"max_minutes": 1e-4},
        }
    )
    store = RunStore(tmp_path)
    result = run_sft(config, store)
    run = store.get(result.run_id)
    assert run.status == "stopped" and result.stopped.endswith("at step 1")
    assert [stop["cause"] for stop in run.summary["stops"]] == ["budget.max_minutes"]
    assert (result.model_dir / "config.json").exists()
    assert [step for step, _ in store.metrics(run.id)["cost/wall_seconds"]] == [1]  # logged at the stop


def priced(**limits):
    """$1 a token and no hourly price: a run's cost is a deterministic function of its steps."""
    return {"usd_per_million_tokens": 1e6, **limits}


def test_a_usd_limit_stops_with_a_checkpoint_and_a_larger_budget_resumes_it_exactly(tmp_path):
    store = RunStore(tmp_path / "runs")
    common = {"max_steps": 5, "checkpoint_every": 0}
    whole = train(easy_config(tmp_path, **common, budget=priced()), store, env=easy_env())
    usd = dict(store.metrics(whole.run_id)["cost/usd"])
    limit = (usd[2] + usd[3]) / 2  # reached after step 3

    stopped = train(easy_config(tmp_path, **common, budget=priced(max_usd=limit)), store, env=easy_env())
    run = store.get(stopped.run_id)
    assert run.status == "stopped" and stopped.steps == 3 and "error" not in run.summary
    assert run.summary["stops"] == [{"step": 3, "cause": "budget.max_usd", "reason": stopped.stopped}]
    assert stopped.stopped == f"spent ${usd[3]:.4g} of budget.max_usd ${limit:g} at step 3"
    assert ckpt.latest(run.dir) == ckpt.path(run.dir, 3)
    assert run.summary["cost"]["usd"] == usd[3]

    # The same budget again would stop after one more step: refused, and the run is left as it was.
    same = easy_config(tmp_path, **common, budget=priced(max_usd=limit), resume=run.id)
    message = user_error(lambda: train(same, store, env=easy_env()))
    assert f"run '{run.id}' already spent" in message and "larger budget.max_usd (--budget-usd)" in message
    assert store.get(run.id).status == "stopped"

    larger = easy_config(tmp_path, **common, budget=priced(max_usd=10 * limit), resume=run.id)
    resumed = train(larger, store, env=easy_env())
    run = store.get(resumed.run_id)
    assert run.status == "completed" and resumed.steps == 5
    # Cost totals went through the checkpoint: every step's cost is the uninterrupted run's.
    for name in ("cost/usd", "cost/tokens", "cost/flops"):
        assert store.metrics(run.id)[name] == store.metrics(whole.run_id)[name], name
    whole_cost, cost = store.get(whole.run_id).summary["cost"], run.summary["cost"]
    for key in ("usd", "tokens", "prompt_tokens", "completion_tokens", "trained_tokens", "flops"):
        assert cost[key] == whole_cost[key], key
    assert comparable(store.metric_table(run.id)) == comparable(store.metric_table(whole.run_id))


def test_a_minutes_limit_stops_and_resume_carries_the_wall_time(tmp_path):
    store = RunStore(tmp_path / "runs")
    config = easy_config(tmp_path, max_steps=3, budget={"max_minutes": 1e-4})  # 6 ms: reached by step 1
    stopped = train(config, store, env=easy_env())
    run = store.get(stopped.run_id)
    assert run.status == "stopped" and stopped.steps == 1
    assert [stop["cause"] for stop in run.summary["stops"]] == ["budget.max_minutes"]
    assert "of budget.max_minutes 0.0001 at step 1" in stopped.stopped
    before = run.summary["cost"]["wall_seconds"]
    assert store.metrics(run.id)["cost/wall_seconds"] == [(1, before)]

    again = config.model_copy(update={"resume": run.id})
    message = user_error(lambda: train(again, store, env=easy_env()))
    assert "larger budget.max_minutes (--budget-minutes)" in message

    more = config.model_copy(
        update={"resume": run.id, "budget": config.budget.model_copy(update={"max_minutes": 60})}
    )
    resumed = train(more, store, env=easy_env())
    run = store.get(resumed.run_id)
    assert run.status == "completed"
    walls = store.metrics(run.id)["cost/wall_seconds"]
    assert walls[0] == (1, before)  # step 1 as the first part recorded it
    assert walls[1][1] > before  # the second part starts from there
    assert walls[2][1] == run.summary["cost"]["wall_seconds"] > walls[1][1]
    # A run's wall time counts its setup too: the first part's before its first step, the second's again.
    assert walls[1][1] - before < resumed.wall_seconds


runner = CliRunner()


def test_budget_flags_set_the_budget_fields_fresh_and_on_resume(tmp_path):
    runs = str(tmp_path / "runs")
    result = runner.invoke(
        app,
        ["train", "--budget-usd", "4", "--budget-minutes", "90", "--set", "budget.usd_per_hour=2.5"]
        + ["--runs-dir", runs, "--print-config"],
    )
    assert result.exit_code == 0, result.output
    assert (
        "[budget]\nusd_per_hour = 2.5\nusd_per_million_tokens = 0.0\nmax_usd = 4.0\nmax_minutes = 90.0\n"
        in (result.output)
    )
    # A flag wins over --set, as typed flags do.
    flag_last = ["--set", "budget.max_minutes=5", "--budget-minutes", "90"]
    result = runner.invoke(app, ["train", *flag_last, "--runs-dir", runs, "--print-config"])
    assert "max_minutes = 90.0" in result.output

    store = RunStore(runs)
    run = store.create_run("train", TrainConfig(budget={"max_minutes": 10}).model_dump())
    result = runner.invoke(
        app, ["train", "--resume", run.id, "--budget-minutes", "30", "--runs-dir", runs, "--print-config"]
    )
    assert result.exit_code == 0, result.output
    assert "max_minutes = 30.0" in result.output and f'resume = "{run.id}"' in result.output
    # sft takes the same flags
    result = runner.invoke(app, ["sft", "--budget-minutes", "3", "--runs-dir", runs, "--print-config"])
    assert result.exit_code == 0 and "max_minutes = 3.0" in result.output, result.output


@pytest.mark.parametrize(
    "args, says",
    [
        (["--budget-minutes", "-1"], "config field 'budget.max_minutes': Input should be greater than 0"),
        (["--budget-usd", "0"], "config field 'budget.max_usd': Input should be greater than 0"),
        (["--budget-usd", "5"], "max_usd needs a price to count against: set usd_per_hour"),
        (["--set", "budget.usd_per_hour=-2"], "config field 'budget.usd_per_hour'"),
    ],
)
def test_bad_budgets_are_one_line_errors(tmp_path, args, says):
    result = runner.invoke(app, ["train", *args, "--runs-dir", str(tmp_path), "--print-config"])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert says in lines[0]
