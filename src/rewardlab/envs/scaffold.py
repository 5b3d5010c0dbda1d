"""``rewardlab env init NAME``: an installable environment package, ready to edit, test and share.

The package registers itself under the ``rewardlab.environments`` entry-point group, so once installed
(``pip install -e NAME``) ``rewardlab env list`` shows it and ``--env NAME`` loads it from anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path

from rewardlab.errors import RewardlabError

NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")

PYPROJECT = """\
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{dist}"
version = "0.1.0"
description = "A rewardlab environment: {name}."
requires-python = ">=3.10"
dependencies = ["rewardlab"]

[project.optional-dependencies]
dev = ["pytest"]

[project.entry-points."rewardlab.environments"]
{name} = "{module}:load_environment"
"""

MODULE = '''\
"""{name}: one line that says what the task is (shown by `rewardlab env list`).

Edit the rows, the reward functions and their weights. Reward functions name the arguments they need:
completion, answer, info, state, prompt, parser, completion_messages, example.
"""

from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric, XMLParser


def make_rows(count: int, offset: int = 0) -> list[dict]:
    # Replace with your data: a list of dicts, a JSONL path or a datasets.Dataset.
    numbers = range(offset, offset + count)
    return [{{"question": f"What is {{i}} doubled?", "answer": str(2 * i)}} for i in numbers]


def load_environment(num_train: int = 200, num_eval: int = 50) -> SingleTurnEnv:
    parser = XMLParser()

    def correct(completion: str, answer: str) -> float:
        return 1.0 if parser.parse_answer(completion) == answer else 0.0

    rubric = Rubric([correct, parser.format_reward_func()], weights=[1.0, 0.1], parser=parser)
    return SingleTurnEnv(
        dataset=make_rows(num_train),
        eval_dataset=make_rows(num_eval, offset=num_train),  # disjoint from training
        system_prompt="Reply with the result inside <answer></answer>.",
        rubric=rubric,
        parser=parser,
        name="{name}",
    )
'''

TEST = """\
from rewardlab.envs import load_environment
from rewardlab.types import Rollout


def test_loads_and_rewards_the_right_answer():
    env = load_environment("{name}")
    example = env.examples("eval")[0]
    reply = [{{"role": "assistant", "content": f"<answer>{{example.answer}}</answer>"}}]
    [scored] = env.rubric.score([Rollout(example, 0, reply)])
    assert scored.components["correct"] == 1.0


def test_splits_are_disjoint():
    env = load_environment("{name}")
    assert not {{e.id for e in env.examples("train")}} & {{e.id for e in env.examples("eval")}}
"""

README = """\
# {name}

A rewardlab environment.

```bash
pip install -e .            # registers '{name}' with rewardlab
rewardlab env list          # shows it
rewardlab eval --env {name} --model tiny -n 20 -r 4
pytest
```
"""


def scaffold(name: str, parent: str | Path = ".") -> Path:
    """Write the package ``NAME/`` under ``parent``; returns its directory."""
    if not NAME.match(name):
        raise RewardlabError(
            f"environment name '{name}' must start with a letter and use only letters, digits, '-' and '_'"
        )
    root = Path(parent) / name
    if root.exists():
        raise RewardlabError(f"{root} already exists")
    module = name.replace("-", "_")
    files = {
        root / "pyproject.toml": PYPROJECT.format(dist=f"rewardlab-env-{name}", name=name, module=module),
        root / module / "__init__.py": MODULE.format(name=name),
        root / "tests" / f"test_{module}.py": TEST.format(name=name),
        root / "README.md": README.format(name=name),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root
