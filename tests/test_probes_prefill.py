"""`rewardlab probe prefill`: the model continues from the prompt's ids plus the prefix's, the rubric scores
prefix + continuation, the baseline is exactly eval's rollouts, and the numbers move as the prefix says."""

import json

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.config import EvalConfig
from rewardlab.envs.registry import load_environment_for
from rewardlab.eval.evaluate import evaluate, select_examples
from rewardlab.models.chat import ChatRenderer
from rewardlab.probes.prefill import (
    NO_ANSWER,
    PrefilledSampler,
    PrefillSettings,
    changed_share,
    compare_prefixes,
    prefill_probe,
)
from rewardlab.probes.prefill_view import render_prefill, write_prefill
from rewardlab.sampling.base import Generation, SamplingParams
from rewardlab.sampling.local import LocalSampler

FORMATTED = "<answer>5</answer>"  # a whole, parsable answer: the format component must move
runner = CliRunner()


def config(tmp_path, n=4, r=2, seed=0) -> EvalConfig:
    return EvalConfig(
        model={"name_or_path": "tiny"}, num_examples=n, rollouts_per_example=r, seed=seed,
        sampling={"temperature": 1.0, "max_new_tokens": 6}, runs_dir=str(tmp_path),
    )  # fmt: skip


@pytest.fixture(scope="module")
def env():
    return load_environment_for("arithmetic", {}, "tiny")


class Recording:
    """A sampler that records the prompts it is handed and answers each with fixed ids."""

    def __init__(self, tokenizer, reply: list[int]):
        self.renderer = ChatRenderer(tokenizer)
        self.tokenizer = tokenizer
        self.reply = reply
        self.prompts = []

    def generate(self, prompts, params):
        self.prompts.extend(prompts)
        text = self.tokenizer.decode(self.reply, skip_special_tokens=True)
        return [[Generation(text, list(self.reply), list(p.token_ids))] * params.n for p in prompts]


def test_the_model_continues_from_the_prompt_plus_the_prefix(tiny, env):
    tokenizer = tiny[1]
    inner = Recording(tokenizer, tokenizer("7<|end|>", add_special_tokens=False)["input_ids"])
    sampler = PrefilledSampler(inner, "The sum")
    example = env.eval_examples[0]
    base = inner.renderer.prompt_ids(example.prompt)
    forced = inner.renderer.encode("The sum")
    [[generation]] = sampler.generate([_prompt(example, base)], SamplingParams(n=1))
    assert inner.prompts[0].token_ids == base + forced  # the model was handed prompt + prefix
    assert generation.token_ids == forced + inner.reply  # and its reply is the prefix, then what it said
    assert generation.text == "The sum7" and generation.prompt_ids == base
    # Without ids the prompt is rendered as the samplers render it, generation prompt included.
    sampler.generate([_prompt(example, None)], SamplingParams(n=1))
    assert inner.prompts[-1].token_ids == base + forced


def _prompt(example, ids):
    from rewardlab.sampling.base import Prompt

    return Prompt(example.prompt, ids)


def test_every_scored_reply_starts_with_the_prefix_and_the_format_moves(tiny, env, tmp_path):
    cfg = config(tmp_path)
    sampler = LocalSampler(*tiny)
    result = compare_prefixes(env, sampler, cfg, select_examples(env, cfg), [FORMATTED, "12"], samples=2)
    baseline, formatted, digits = result.conditions
    renderer = ChatRenderer(tiny[1])
    for condition in (formatted, digits):
        forced = renderer.encode(condition.prefix)
        assert len(condition.scored) == 8
        for s in condition.scored:
            assert s.rollout.completion_text.startswith(condition.prefix)
            assert s.rollout.completion_ids[: len(forced)] == forced
            # The continuation was sampled after the prefix: up to max_new_tokens more tokens.
            assert len(forced) < len(s.rollout.completion_ids) <= len(forced) + 6
    # The untrained model never closes an answer tag; the forced one is parsed, once, in every reply.
    assert baseline.components["format"] == 0.0 and baseline.answered == 0.0
    assert formatted.components["format"] >= 0.5 and formatted.answered == 1.0
    assert formatted.top_answers == [("5", 1.0)] and baseline.top_answers == [(NO_ANSWER, 1.0)]
    assert formatted.changed == 1.0 and digits.changed == 0.0  # "12" with no tag parses to no answer
    assert formatted.difference["mean_diff"] == pytest.approx(formatted.mean_reward - baseline.mean_reward)
    assert formatted.difference["wins"] == 4 and formatted.component_differences["format"]["mean_diff"] > 0
    assert digits.difference["mean_diff"] == 0.0 and digits.difference["ties"] == 4
    assert [row["example_id"] for row in formatted.samples] == [row["example_id"] for row in baseline.samples]
    assert formatted.samples[0]["completion"].startswith(FORMATTED)


def test_the_baseline_is_evals_rollouts_at_the_same_seed(tmp_path):
    cfg = config(tmp_path, n=3, r=2, seed=5)
    evaluated = evaluate(cfg)
    probed = prefill_probe(PrefillSettings("tiny", "arithmetic", ["<answer>"], num_examples=3, rollouts=2,
                                           max_new_tokens=6, seed=5, runs_dir=str(tmp_path)))  # fmt: skip
    replies = [(s.rollout.example.id, s.rollout.completion_ids) for s in evaluated.scored]
    assert [(s.rollout.example.id, s.rollout.completion_ids) for s in probed.baseline.scored] == replies
    assert probed.baseline.mean_reward == pytest.approx(evaluated.summary["mean_reward"])


def test_a_second_model_runs_the_same_conditions_and_is_paired_with_the_first(tmp_path, capsys):
    """Base against tuned: the same examples and seeds under every condition, each model's own numbers, and
    per condition the paired difference between the two models."""
    settings = dict(num_examples=3, rollouts=2, max_new_tokens=6, seed=5, runs_dir=str(tmp_path))
    alone = prefill_probe(PrefillSettings("tiny-qwen2", "arithmetic", ["<answer>"], **settings))
    both = prefill_probe(PrefillSettings("tiny", "arithmetic", ["<answer>"], compare_model="tiny-qwen2",
                                         **settings))  # fmt: skip
    second = both.compare
    assert [c.mean_reward for c in second.conditions] == [c.mean_reward for c in alone.conditions]
    assert set(second.baseline.per_example) == set(both.baseline.per_example)
    for between, a, b in zip(both.between, both.conditions, second.conditions, strict=True):
        assert between["label"] == a.label
        assert between["mean_diff"] == pytest.approx(b.mean_reward - a.mean_reward)
        assert between["wins"] + between["ties"] + between["losses"] == 3
    render_prefill(both)
    assert "tiny-qwen2 against tiny, condition by condition" in capsys.readouterr().out
    paths = write_prefill(both, tmp_path / "out")
    data = json.loads(paths[0].read_text())
    assert data["compare"]["model"] == "tiny-qwen2" and len(data["between"]) == 2
    from PIL import Image

    single = write_prefill(alone, tmp_path / "single")[1]
    assert Image.open(paths[1]).height > 1.6 * Image.open(single).height  # a row per model


def test_changed_answers_are_pairs_that_disagree():
    baseline = {"a": ["1", "1"], "b": ["2", "3"]}
    assert changed_share(baseline) == pytest.approx((0 + 1) / 2)  # its own rollouts: sampling noise
    assert changed_share({"a": ["1", "4"], "b": ["2", "2"]}, baseline) == pytest.approx((0.5 + 0.5) / 2)
    assert changed_share({"a": ["1"]}) is None  # one rollout has no pair


def invoke(*args):
    result = runner.invoke(app, ["probe", "prefill", *args])
    return result.exit_code, result.output


def test_from_the_command_line(tmp_path):
    code, out = invoke("--model", "tiny", "--env", "arithmetic", "--prefix", FORMATTED, "-n", "3",
                       "-r", "2", "--max-new-tokens", "6", "--env-arg", "format_weight=0.5",
                       "--out", str(tmp_path), "--runs-dir", str(tmp_path))  # fmt: skip
    assert code == 0, out
    assert "prefill: tiny on arithmetic" in out and "baseline" in out and '"<answer>5</answer>"' in out
    assert "5 100%" in out
    data = json.loads((tmp_path / "prefill.json").read_text())
    baseline, formatted = data["conditions"]
    assert formatted["prefix"] == FORMATTED and formatted["top_answers"] == [["5", 1.0]]
    assert len(formatted["samples"]) == 3 and set(formatted["per_example"]) == set(baseline["per_example"])
    parts = formatted["components"]  # the environment took --env-arg: the format weighs 0.5, not 0.1
    assert parts["format"] > 0
    assert formatted["mean_reward"] == pytest.approx(parts["correct"] + 0.5 * parts["format"])
    assert data["max_new_tokens"] == 6 and (tmp_path / "prefill.png").stat().st_size > 10_000


def one_line(code, out):
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, out
    return lines[0]


def test_command_line_mistakes_are_one_line(tmp_path):
    base = ["--model", "tiny", "--out", str(tmp_path), "--runs-dir", str(tmp_path)]
    assert "--prefix is empty" in one_line(*invoke(*base, "--prefix", ""))
    assert "at least one --prefix" in one_line(*invoke(*base))
    assert "given twice" in one_line(*invoke(*base, "--prefix", "a", "--prefix", "a"))
    assert "did you mean 'arithmetic'" in one_line(*invoke(*base, "--prefix", "a", "--env", "arithmtic"))
    line = one_line(*invoke(*base, "--prefix", "a", "--env", "wordle"))
    assert line.startswith("error: prefill probes single-turn environments; 'wordle' plays up to 6")
    assert "-n and -r must be at least 1" in one_line(*invoke(*base, "--prefix", "a", "-n", "0"))
    assert "--max-new-tokens" in one_line(*invoke(*base, "--prefix", "a", "--max-new-tokens", "lots"))
    assert "unknown split" in one_line(*invoke(*base, "--prefix", "a", "--split", "test"))


def test_files_hold_every_condition(tiny, env, tmp_path):
    cfg = config(tmp_path, n=2, r=1)
    result = compare_prefixes(env, LocalSampler(*tiny), cfg, select_examples(env, cfg), ["Wait,"])
    paths = write_prefill(result, tmp_path / "out")
    data = json.loads(paths[0].read_text())
    assert [c["label"] for c in data["conditions"]] == ["baseline", '"Wait,"']
    assert data["conditions"][1]["difference"]["n"] == 2 and "scored" not in data["conditions"][0]
    assert paths[1].read_bytes()[:4] == b"\x89PNG"
