"""`rewardlab probe`: the logit lens reads every layer through the model's own final norm and head, and the
entropy probe scores exactly the tokens that were sampled, under one model or two."""

import copy
import csv
import json
import math

import pytest
import torch
from typer.testing import CliRunner

from conftest import user_error
from rewardlab.cli import app
from rewardlab.models.chat import ChatRenderer
from rewardlab.probes.entropy import (
    TokenEntropy,
    Trace,
    compare_with,
    mark_forking,
    sampled,
    score,
    stored,
    teacher_forced,
)
from rewardlab.probes.inputs import render_prompt
from rewardlab.probes.lens import compare_lens, final_norm, lens_logits, parse_positions, read_lens
from rewardlab.probes.view import write_entropy, write_lens
from rewardlab.runs import RunStore
from rewardlab.sampling.base import Prompt, SamplingParams
from rewardlab.sampling.local import LocalSampler
from rewardlab.types import Example, Rollout, ScoredRollout

PROMPT = "What is 2+3?"
runner = CliRunner()


@pytest.fixture(scope="module")
def skewed(tiny):
    """The tiny model with a final norm whose weights are far from 1, so that a norm applied twice, or not
    at all, changes the logits; and with its LM head untied from the embeddings, so the lens must read the
    head, not the input embeddings."""
    model, tokenizer = tiny
    model = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(3)
    with torch.no_grad():
        norm = final_norm(model)
        norm.weight.copy_(torch.rand(norm.weight.shape, generator=generator) * 3 + 0.2)
        head = model.get_output_embeddings()
        noise = torch.randn(head.weight.shape, generator=generator) * 0.05
        head.weight = torch.nn.Parameter(head.weight.detach() + noise, requires_grad=False)
    assert model.get_output_embeddings().weight is not model.get_input_embeddings().weight
    return model, tokenizer


def test_the_lens_last_layer_is_the_models_own_prediction(skewed):
    model, tokenizer = skewed
    _, ids = render_prompt(tokenizer, PROMPT)
    positions = [0, 5, len(ids) - 1]
    lens, final = lens_logits(model, ids, positions)
    assert lens.shape == (model.config.num_hidden_layers + 1, 3, model.config.vocab_size)
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_hidden_states=True)
    own = out.logits[0, positions]
    torch.testing.assert_close(lens[-1], own, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(final, own)
    # The embeddings row is the embeddings through the same norm and head, and the test would notice a
    # norm applied twice to the last layer.
    head, norm = model.get_output_embeddings(), final_norm(model)
    embedded = model.get_input_embeddings()(torch.tensor([ids]))[0, positions]
    torch.testing.assert_close(lens[0], head(norm(embedded)), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(head(norm(out.hidden_states[-1][0, positions])), own, atol=1e-3)


def test_ranks_agree_with_the_probabilities(skewed):
    model, tokenizer = skewed
    _, ids = render_prompt(tokenizer, PROMPT)
    lens, _ = lens_logits(model, ids, [len(ids) - 1])
    likeliest = tokenizer.decode([int(lens[-1, 0].argmax())])
    result = read_lens(model, tokenizer, PROMPT, answer=likeliest, positions=[-1, -2], top_k=4)
    assert [p.offset for p in result.positions] == [-2, -1]  # reading order
    assert result.positions[1].rows[-1].answer_rank == 1
    for position in result.positions:
        assert [row.name for row in position.rows] == ["embed", "1", "2", "3", "4"]
        for row in position.rows:
            probs = [prob for _, _, prob in row.top]
            assert probs == sorted(probs, reverse=True) and len(probs) == 4
            assert math.isclose(row.answer_prob, math.exp(row.answer_logprob), rel_tol=1e-6)
            top_ids = [token_id for token_id, _, _ in row.top]
            if result.answer_id in top_ids:
                assert row.answer_rank == top_ids.index(result.answer_id) + 1
                assert math.isclose(row.answer_prob, probs[row.answer_rank - 1], rel_tol=1e-5)
            else:
                assert row.answer_rank > 4 and row.answer_prob <= probs[-1]


def test_the_lens_is_written_as_png_json_and_csv(skewed, tmp_path):
    model, tokenizer = skewed
    result = read_lens(model, tokenizer, PROMPT, answer="5", positions=[-1, -3], top_k=3, model_name="tiny")
    paths = write_lens(result, tmp_path / "out")
    assert [p.name for p in paths] == ["logit_lens.json", "logit_lens.csv", "logit_lens.png"]
    assert paths[2].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and paths[2].stat().st_size > 5000
    data = json.loads(paths[0].read_text())
    assert data["answer_token"] == "5" and len(data["positions"]) == 2
    rows = list(csv.DictReader(paths[1].open()))
    assert len(rows) == 2 * 5 * 3 and rows[0]["layer"] == "embed"


def test_a_second_model_is_read_on_the_same_tokens_and_drawn_beside(tiny, skewed, tmp_path):
    """Base against tuned: both lenses on one prompt, each its own model's numbers, one colour scale."""
    args = dict(answer="5", positions=[-1, -2], top_k=3)
    base = read_lens(*tiny, PROMPT, model_name="tiny", **args)
    alone = read_lens(*skewed, PROMPT, model_name="skewed", **args)
    both = compare_lens(read_lens(*tiny, PROMPT, model_name="tiny", **args), alone)
    assert both.compare is alone and [lens.model for lens in both.models] == ["tiny", "skewed"]
    ranks = [[row.answer_rank for row in p.rows] for p in both.positions]
    assert ranks == [[row.answer_rank for row in p.rows] for p in base.positions]  # its own numbers kept
    assert ranks != [[row.answer_rank for row in p.rows] for p in alone.positions]  # the models differ
    paths = write_lens(both, tmp_path)
    rows = list(csv.DictReader(paths[1].open()))
    assert {row["model"] for row in rows} == {"tiny", "skewed"} and len(rows) == 2 * 2 * 5 * 3
    assert json.loads(paths[0].read_text())["compare"]["model"] == "skewed"
    single = write_lens(base, tmp_path / "single")[2]
    from PIL import Image

    assert Image.open(paths[2]).width > 1.6 * Image.open(single).width  # two heatmaps side by side


def test_models_that_read_the_prompt_differently_are_not_compared(tiny):
    first = read_lens(*tiny, PROMPT, answer="5", model_name="a")
    other = read_lens(*tiny, "What is 2+4?", answer="5", model_name="b")
    assert "reads the prompt as different tokens" in user_error(compare_lens, first, other)
    assert "answer's first token differs" in user_error(
        compare_lens, first, read_lens(*tiny, PROMPT, answer="6", model_name="b")
    )


def test_lens_mistakes_are_one_line(skewed):
    model, tokenizer = skewed
    assert "outside the prompt's" in user_error(lambda: read_lens(model, tokenizer, PROMPT, positions=[99]))
    assert "prompt is empty" in user_error(lambda: read_lens(model, tokenizer, "  "))
    assert "tokenizes to nothing" in user_error(lambda: read_lens(model, tokenizer, PROMPT, answer=""))
    assert "must be integers" in user_error(parse_positions, "-1,x")


def test_teacher_forced_entropy_is_the_entropy_of_the_models_logits(tiny):
    model, tokenizer = tiny
    _, ids = render_prompt(tokenizer, PROMPT)
    params = SamplingParams(n=2, temperature=0.8, max_new_tokens=12, seed=5, logprobs=True)
    [generations] = LocalSampler(model, tokenizer).generate([Prompt([], ids)], params)
    for generation in generations:
        entropy, logprob = teacher_forced(model, ids, generation.token_ids, temperature=0.8)
        with torch.no_grad():
            logits = model(torch.tensor([ids + generation.token_ids])).logits[0].double() / 0.8
        steps = logits[len(ids) - 1 : -1]
        expected = -(steps.softmax(-1) * steps.log_softmax(-1)).sum(-1)
        torch.testing.assert_close(entropy.double(), expected, rtol=1e-4, atol=1e-5)
        # The log-prob at each step is the sampler's own: the positions line up with what was sampled.
        torch.testing.assert_close(logprob, torch.tensor(generation.logprobs), rtol=1e-4, atol=1e-4)


def test_forking_tokens_are_the_highest_entropy_share():
    entropies = [0.1, 2.0, 0.3, 1.5, 0.0, 0.7, 3.2, 0.2, 0.9, 0.4]
    traces = [Trace("a", "", []), Trace("b", "", [])]
    for i, value in enumerate(entropies):
        traces[i // 5].tokens.append(TokenEntropy(i, "x", "x", value, -1.0))
    assert mark_forking(traces, share=0.2) == 2.0
    forking = [t.entropy for trace in traces for t in trace.tokens if t.forking]
    assert sorted(forking) == [2.0, 3.2]
    assert mark_forking(traces, share=None, threshold=0.8) == 0.8
    assert sorted(t.entropy for trace in traces for t in trace.tokens if t.forking) == [0.9, 1.5, 2.0, 3.2]
    assert "--forking-share" in user_error(mark_forking, traces, 1.5)


def test_a_model_compared_with_itself_differs_nowhere(tiny, tmp_path):
    model, tokenizer = tiny
    completions = sampled(model, tokenizer, [PROMPT, "Say hi."], samples=2, max_new_tokens=10,
                          temperature=1.0, seed=1)  # fmt: skip
    traces = score(model, tokenizer, completions, 1.0, "entropy")
    assert [len(t.tokens) for t in traces] == [len(c.ids) for c in completions]
    differences = compare_with(model, tokenizer, completions, traces, 1.0)
    assert all(t.compare_entropy == t.entropy for trace in traces for t in trace.tokens)
    assert differences and all(d.entropy == d.compare_entropy for d in differences)
    from rewardlab.probes.entropy import EntropyProbe

    result = EntropyProbe("tiny", "tiny", 1.0, 0.2, mark_forking(traces, 0.2), traces, differences)
    assert result.mean_entropy == result.compare_mean_entropy
    json_path, png = write_entropy(result, tmp_path)
    assert png.read_bytes()[:4] == b"\x89PNG" and json.loads(json_path.read_text())["num_tokens"] > 0


def _scored(prompt, completion):
    example = Example(id="ex1", prompt=prompt, answer="5")
    return ScoredRollout(Rollout(example, 0, completion), 1.0, {"correct": 1.0})


def test_a_runs_rollouts_are_read_back_as_the_rollout_built_them(tiny, tmp_path):
    _, tokenizer = tiny
    store = RunStore(tmp_path)
    run = store.create_run("eval", {})
    prompt = [{"role": "user", "content": PROMPT}]
    turns = [
        {"role": "assistant", "content": "4?"},
        {"role": "user", "content": "no"},
        {"role": "assistant", "content": "5"},
    ]
    store.log_rollouts(run.id, 0, "eval", [_scored(prompt, turns[:1]), _scored(prompt, turns)])
    single, multi = stored(tokenizer, run.id, 5, tmp_path)
    renderer = ChatRenderer(tokenizer)
    assert single.prompt_ids == renderer.prompt_ids(prompt) and single.prompt == PROMPT
    assert single.ids == renderer.encode("4?") and single.mask == [1, 1]
    # The environment's reply sits between the turns, masked out: two model turns, two traces.
    assert multi.ids[:2] == renderer.encode("4?") and multi.ids[-1:] == renderer.encode("5")
    assert multi.mask[:2] == [1, 1] and multi.mask[-1] == 1 and 0 in multi.mask
    traces = score(tiny[0], tokenizer, [single, multi], 1.0, "entropy")
    assert [t.label.endswith("turn 2") for t in traces] == [False, False, True]
    assert [len(stored(tokenizer, run.id, 1, tmp_path))] == [1]


def invoke(*args):
    result = runner.invoke(app, ["probe", *args])
    return result.exit_code, result.output


def one_line(code, out):
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, out
    return lines[0]


def test_logit_lens_from_the_command_line(tmp_path):
    code, out = invoke("logit-lens", "--model", "tiny", "--prompt", PROMPT, "--answer", "5",
                       "--positions", "-1,-2", "--top-k", "2", "--out", str(tmp_path))  # fmt: skip
    assert code == 0, out
    assert "position -1" in out and "position -2" in out and "rank of '5'" in out
    assert (tmp_path / "logit_lens.png").exists() and (tmp_path / "logit_lens.csv").exists()
    both = ["logit-lens", "--model", "tiny", "--prompt", PROMPT, "--answer", "5", "--out", str(tmp_path)]
    code, out = invoke(*both, "--compare-model", "tiny")
    assert code == 0, out
    assert out.count("tiny: logit lens") == 2 and "rank of '5' per layer" in out
    # tiny-qwen2's tokenizer splits the same rendered prompt into other tokens: nothing to compare
    assert "reads the prompt as different tokens" in one_line(*invoke(*both, "--compare-model", "tiny-qwen2"))


def test_command_line_mistakes_are_one_line(tmp_path):
    lens = ["logit-lens", "--out", str(tmp_path), "--runs-dir", str(tmp_path)]
    assert "model 'nosuchmodel': no directory" in one_line(
        *invoke(*lens, "--model", "nosuchmodel", "--prompt", PROMPT)
    )
    assert "prompt is empty" in one_line(*invoke(*lens, "--model", "tiny", "--prompt", ""))
    assert "position -99 is outside" in one_line(
        *invoke(*lens, "--model", "tiny", "--prompt", PROMPT, "--positions", "-99")
    )
    assert "tokenizes to nothing" in one_line(
        *invoke(*lens, "--model", "tiny", "--prompt", PROMPT, "--answer", "")
    )
    entropy = ["entropy", "--model", "tiny", "--out", str(tmp_path), "--runs-dir", str(tmp_path)]
    assert "either --prompt" in one_line(*invoke(*entropy))
    assert "no run 'eval-nosuch'" in one_line(*invoke(*entropy, "--run", "eval-nosuch"))
    run = RunStore(tmp_path).create_run("eval", {})
    assert "no stored rollouts" in one_line(*invoke(*entropy, "--run", run.id))
    assert "prompt is empty" in one_line(*invoke(*entropy, "--prompt", " "))


def test_entropy_of_a_runs_rollouts_from_the_command_line(tmp_path):
    store = RunStore(tmp_path)
    run = store.create_run("eval", {})
    prompt = [{"role": "user", "content": PROMPT}]
    store.log_rollouts(run.id, 0, "eval", [_scored(prompt, [{"role": "assistant", "content": "<answer>5"}])])
    code, out = invoke("entropy", "--model", "tiny", "--run", run.id, "--compare-model", "tiny",
                       "--out", str(tmp_path / "out"), "--runs-dir", str(tmp_path))  # fmt: skip
    assert code == 0, out
    assert "eval step 0 example ex1 #0" in out and "where tiny and tiny differ most" in out
    data = json.loads((tmp_path / "out" / "entropy.json").read_text())
    assert data["num_tokens"] == 2 and data["mean_entropy"] == data["compare_mean_entropy"]


def test_a_second_model_must_share_the_tokenizer(tiny):
    from rewardlab.models import load_tokenizer
    from rewardlab.probes.entropy import same_vocabulary

    tokenizer = tiny[1]
    same_vocabulary(tokenizer, load_tokenizer("tiny"), "tiny", "tiny")
    other = load_tokenizer("tiny")
    other.add_tokens(["<extra>"])
    assert "another tokenizer" in user_error(same_vocabulary, tokenizer, other, "tiny", "other")
