"""The examples in examples/ keep working: configs validate, the custom environments score correctly."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.config import DemoConfig, SFTConfig, TrainConfig, load_config
from rewardlab.envs import load_environment
from rewardlab.runs import RunStore
from rewardlab.types import Rollout

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize(
    "name, model", [("train_arithmetic.toml", TrainConfig), ("sft_arithmetic.toml", SFTConfig)]
)
def test_example_configs_validate(name, model):
    config = load_config(model, EXAMPLES / name)
    assert config.env.name == "arithmetic"
    load_environment(config.env.name, **config.env.args)  # the env args are accepted too


def test_reverse_env_rewards_the_right_answer_fully():
    env = load_environment(str(EXAMPLES / "reverse_env.py"), num_words=40)
    example = env.examples("eval")[0]

    def score(text):
        [scored] = env.rubric.score([Rollout(example, 0, [{"role": "assistant", "content": text}])])
        return scored

    right = score(f"<answer>{example.answer}</answer>")
    assert right.reward == pytest.approx(1.0 + 0.3 + 0.1)
    half = score(f"<answer>{example.answer[:2]}zz</answer>")
    assert 0 < half.components["shared_prefix"] < 1 and half.components["reversed_exactly"] == 0
    assert score("no tags").reward == 0.0
    assert not {e.question for e in env.train_examples} & {e.question for e in env.eval_examples}


def test_demo_template_for_a_real_model_validates():
    config = load_config(DemoConfig, EXAMPLES / "demo_smollm2_event_selection.toml")
    assert (config.model.name_or_path, config.model.dtype) == ("smollm2-135m", "bfloat16")
    assert config.sft.lora.enabled and config.train.lora.enabled
    assert config.env.name == "event_selection" and config.env.args["level"] == 1
    assert config.train.sampling.max_new_tokens == config.eval.sampling.max_new_tokens == "auto"
    assert config.eval.fresh and config.eval.breakdown == ["num_events"]
    env = load_environment(config.env.name, **config.env.args)  # the env args are accepted too
    assert all(key in example.info for key in config.eval.breakdown for example in env.eval_examples)


def test_the_real_model_arithmetic_demo_config_validates():
    """The config README.md quotes numbers from: LoRA in both stages (bf16 refuses full fine-tuning)."""
    config = load_config(DemoConfig, EXAMPLES / "demo_smollm2_arithmetic.toml")
    assert (config.model.name_or_path, config.model.dtype) == ("smollm2-135m", "bfloat16")
    assert config.sft.lora.enabled and config.train.lora.enabled
    assert (config.sft.max_steps, config.sft.batch_size) == (50, 32)
    assert (config.train.max_steps, config.train.prompts_per_step, config.train.group_size) == (40, 16, 8)
    assert config.eval.fresh and not config.control
    env = load_environment(config.env.name, **config.env.args)
    assert all("needs_carry" in example.info for example in env.eval_examples)


def test_the_multi_turn_example_plays_through_the_cli(tmp_path):
    """The scripted bisection player solves every game; a random guesser rarely does: the rubric and the
    turns measure what they claim. A model plays it too (the tiny one, badly)."""
    runs = str(tmp_path / "runs")
    means = {}
    for player in ("scripted:bisect", "scripted:random", "tiny"):
        args = ["--env", str(EXAMPLES / "guess_env.py"), "--model", player, "-n", "20", "-r", "1"]
        args += ["--set", "sampling.max_new_tokens=8", "--runs-dir", runs]
        result = CliRunner().invoke(app, ["eval", *args])
        assert result.exit_code == 0, result.output
        [run] = RunStore(runs).list(limit=1)
        means[player] = run.summary["components"]["solved"]["mean"]
        rollouts = RunStore(runs).rollouts(run.id)
        assert {r["num_turns"] for r in rollouts} <= set(range(1, 7))
    assert means["scripted:bisect"] == 1.0 and means["scripted:random"] < 0.5
    assert means["tiny"] < 1.0


def test_a_multi_turn_environment_must_say_how_it_answers_and_ends(tmp_path):
    env_file = tmp_path / "half_done.py"
    env_file.write_text(
        "from rewardlab.envs import MultiTurnEnv\n"
        "class HalfDone(MultiTurnEnv):\n"
        "    def env_response(self, messages, state):\n"
        "        return []\n"
        "def load_environment():\n"
        "    return HalfDone(dataset=[{'prompt': 'go'}])\n"
    )
    result = CliRunner().invoke(app, ["eval", "--env", str(env_file), "--runs-dir", str(tmp_path)])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert "HalfDone must define is_completed(messages, state) (see MultiTurnEnv)" in lines[0]
