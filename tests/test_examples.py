"""The examples in examples/ keep working: configs validate, the custom environment scores correctly."""

from pathlib import Path

import pytest

from rewardlab.config import SFTConfig, TrainConfig, load_config
from rewardlab.envs import load_environment
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
