"""The README's environment example is real code: it loads and scores."""

import re
from pathlib import Path

from rewardlab.types import Rollout

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_environment_snippet_runs():
    [snippet] = [
        block
        for block in re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
        if "def load_environment" in block
    ]
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    env = namespace["load_environment"](n=100)
    assert len(env.train_examples) == 50 and len(env.eval_examples) == 50
    example = env.eval_examples[0]
    [scored] = env.rubric.score(
        [Rollout(example, 0, [{"role": "assistant", "content": f"<answer>{example.answer}</answer>"}])]
    )
    assert scored.reward == 1.1
