from dataclasses import replace

import pytest
import torch

from rewardlab.envs import MultiTurnEnv, SingleTurnEnv
from rewardlab.models.chat import ChatRenderer
from rewardlab.sampling.base import Generation, Prompt, Sampler, SamplingParams
from rewardlab.sampling.local import LocalSampler

PROMPTS = [[{"role": "user", "content": "12+7="}], [{"role": "user", "content": "a much longer prompt here"}]]


def test_local_sampler_is_a_sampler(tiny):
    assert isinstance(LocalSampler(*tiny), Sampler)


def test_greedy_matches_transformers_generate_despite_left_padding(tiny):
    model, tokenizer = tiny
    sampler = LocalSampler(model, tokenizer)
    ours = sampler.generate([Prompt(p) for p in PROMPTS], SamplingParams(temperature=0, max_new_tokens=10))
    for prompt, [generation] in zip(PROMPTS, ours, strict=True):
        ids = torch.tensor([sampler.renderer.prompt_ids(prompt)])
        reference = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=False,
            max_new_tokens=10,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=sorted(sampler.stop_ids),
        )
        expected = reference[0, ids.shape[1] :].tolist()
        assert generation.token_ids == expected[: len(generation.token_ids)]
        assert generation.prompt_ids == ids[0].tolist()


def test_ids_travel_with_text_and_seed_reproduces(tiny):
    sampler = LocalSampler(*tiny)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=12, seed=7, logprobs=True)
    first = sampler.generate([Prompt(p) for p in PROMPTS], params)
    again = sampler.generate([Prompt(p) for p in PROMPTS], params)
    assert [[g.token_ids for g in row] for row in first] == [[g.token_ids for g in row] for row in again]
    for row in first:
        assert len(row) == 3
        for generation in row:
            assert generation.text == sampler.tokenizer.decode(generation.token_ids, skip_special_tokens=True)
            assert len(generation.logprobs) == len(generation.token_ids)
            if generation.finish_reason == "stop":
                assert generation.token_ids[-1] in sampler.stop_ids
            else:
                assert len(generation.token_ids) == 12


def test_top_p_tiny_is_greedy(tiny):
    sampler = LocalSampler(*tiny)
    greedy = sampler.generate([Prompt(PROMPTS[0])], SamplingParams(temperature=0, max_new_tokens=8))
    nucleus = sampler.generate(
        [Prompt(PROMPTS[0])], SamplingParams(temperature=1.0, top_p=1e-6, max_new_tokens=8, seed=1)
    )
    assert greedy[0][0].token_ids == nucleus[0][0].token_ids


def test_stop_string_cuts_the_text(tiny):
    sampler = LocalSampler(*tiny)
    free = sampler.generate([Prompt(PROMPTS[0])], SamplingParams(temperature=1.0, max_new_tokens=24, seed=3))[
        0
    ][0]
    text = free.text
    assert len(text) > 6, "the tiny model should babble long enough to pick a stop string"
    stop = text[4:6]
    cut = sampler.generate(
        [Prompt(PROMPTS[0])], SamplingParams(temperature=1.0, max_new_tokens=24, seed=3, stop=[stop])
    )[0][0]
    assert cut.text == text[: text.find(stop)]
    assert cut.finish_reason == "stop"
    assert len(cut.token_ids) <= len(free.token_ids)


def test_batches_larger_than_max_batch_size(tiny):
    sampler = LocalSampler(*tiny, max_batch_size=4)
    out = sampler.generate([Prompt(PROMPTS[0])] * 3, SamplingParams(n=3, temperature=0, max_new_tokens=4))
    assert [len(row) for row in out] == [3, 3, 3]
    assert len({tuple(g.token_ids) for row in out for g in row}) == 1  # greedy: all identical


class ScriptedSampler:
    """Replies from a script, encoded with the real renderer, so the turn loop's id bookkeeping is exact."""

    def __init__(self, tokenizer, replies):
        self.renderer = ChatRenderer(tokenizer)
        self.replies = list(replies)
        self.seen_prompt_ids = []

    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            self.seen_prompt_ids.append(list(prompt.token_ids))
            text = self.replies.pop(0)
            ids = self.renderer.encode(text) + [self.renderer.tokenizer.eos_token_id]
            out.append([Generation(text=text, token_ids=ids, finish_reason="stop")])
        return out


class CountdownEnv(MultiTurnEnv):
    """The environment counts the model's turns and ends the episode after the third."""

    def env_response(self, messages, state):
        state["turns"] = state.get("turns", 0) + 1
        state["done"] = state["turns"] >= 3
        return [{"role": "user", "content": f"again {state['turns']}"}]

    def is_completed(self, messages, state):
        return state.get("done", False)


def test_multi_turn_ids_mask_and_state(tiny):
    _, tokenizer = tiny
    env = CountdownEnv(dataset=[{"prompt": "go", "answer": ""}], max_turns=5)
    sampler = ScriptedSampler(tokenizer, ["one", "two", "three"])
    [rollout] = env.rollout(sampler, env.examples("train"), SamplingParams(max_new_tokens=8))
    assert [m["content"] for m in rollout.completion] == [
        "one",
        "again 1",
        "two",
        "again 2",
        "three",
        "again 3",
    ]
    assert rollout.num_turns == 3 and rollout.state["done"]
    renderer = sampler.renderer
    # The ids of the whole episode are exactly what the chat template renders for the conversation ...
    full = rollout.prompt_ids + rollout.completion_ids
    rendered = renderer.prompt_ids([*rollout.example.prompt, *rollout.completion])
    assert full == rendered
    # ... the model's tokens are masked in and the environment's out ...
    model_tokens = [t for t, m in zip(rollout.completion_ids, rollout.completion_mask, strict=True) if m]
    assert tokenizer.decode(model_tokens, skip_special_tokens=True) == "onetwothree"
    # ... and each turn was sampled from the ids so far, never re-rendered.
    assert sampler.seen_prompt_ids[1] == full[: len(sampler.seen_prompt_ids[1])]


def test_environment_that_raises_fails_only_its_episode(tiny):
    _, tokenizer = tiny

    class Broken(MultiTurnEnv):
        def env_response(self, messages, state):
            raise RuntimeError("board exploded")

        def is_completed(self, messages, state):
            return False

    env = Broken(dataset=[{"prompt": "go"}], max_turns=3)
    [rollout] = env.rollout(ScriptedSampler(tokenizer, ["x"]), env.examples("train"), SamplingParams())
    assert rollout.error == "environment raised RuntimeError: board exploded"


def test_plain_template_for_tokenizers_without_one(tiny):
    _, tokenizer = tiny
    import copy

    bare = copy.deepcopy(tokenizer)
    bare.chat_template = None
    renderer = ChatRenderer(bare)
    assert renderer.uses_plain_template
    text = renderer.render([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}])
    assert text == "system: s\nuser: u\nassistant:"


def test_single_turn_rollout_with_real_sampler(tiny):
    env = SingleTurnEnv(dataset=[{"prompt": "3+4=", "answer": "7"}, {"prompt": "1+1=", "answer": "2"}])
    rollouts = env.rollout(
        LocalSampler(*tiny), env.examples("train"), SamplingParams(n=2, max_new_tokens=5, seed=0)
    )
    assert len(rollouts) == 4 and [r.sample_index for r in rollouts] == [0, 1, 0, 1]
    for r in rollouts:
        assert r.completion_mask == [1] * len(r.completion_ids) and r.num_turns == 1
        assert r.prompt_ids == LocalSampler(*tiny).renderer.prompt_ids(r.example.prompt)


@pytest.mark.parametrize("name", ["tiny", "tiny-qwen2"])
def test_tiny_models_round_trip_through_from_pretrained(name):
    from rewardlab.models import load_model, resolve

    model, tokenizer = load_model(name)
    path, adapter = resolve(name)
    assert adapter is None and (
        path and "config.json" in {p.name for p in __import__("pathlib").Path(path).iterdir()}
    )
    assert tokenizer.decode(tokenizer("<answer>12</answer>")["input_ids"]) == "<answer>12</answer>"
    assert 500_000 < sum(p.numel() for p in model.parameters()) < 1_200_000


def test_scripted_policies_bound_the_rubric(tmp_path):
    from rewardlab.config import EvalConfig
    from rewardlab.errors import RewardlabError
    from rewardlab.eval.evaluate import evaluate

    def run(model):
        config = EvalConfig.model_validate(
            {
                "model": {"name_or_path": model},
                "runs_dir": str(tmp_path),
                "env": {"name": "arithmetic", "args": {"num_train": 10, "num_eval": 50}},
                "rollouts_per_example": 2,
            }
        )
        return evaluate(config).summary

    oracle, random_player = run("scripted:oracle"), run("scripted:random")
    assert oracle["mean_reward"] == pytest.approx(1.1) and oracle["pass@1"] == 1.0
    assert random_player["mean_reward"] < 0.3
    with pytest.raises(RewardlabError, match="has no scripted policy 'genius'"):
        run("scripted:genius")


def plain_decoding(sampler, prompts, params, adjust=None):
    """The decoding loop written out: prefill, then ``sample_next`` and one decoding step per token, finished
    rows fed the pad id. ``adjust(logits, rows_so_far)`` may change each step's logits first."""
    from rewardlab.sampling.local import sample_next

    rows = [sampler.renderer.prompt_ids(p) for p in prompts for _ in range(params.n)]
    generator = torch.Generator().manual_seed(params.seed) if params.seed is not None else None
    stop_ids = torch.tensor(sampler.stop_ids)
    input_ids, attention = sampler._left_padded(rows)
    generated = [[] for _ in rows]
    with sampler.forward.sampling(), torch.inference_mode():
        logits, state = sampler.forward.prefill(input_ids, attention, params.max_new_tokens)
        finished = torch.zeros(len(rows), dtype=torch.bool)
        for _ in range(params.max_new_tokens):
            if adjust is not None:
                logits = adjust(logits.float(), generated)
            token = sample_next(logits, params.temperature, params.top_p, generator)
            token = torch.where(finished, torch.full_like(token, sampler.pad_id), token)
            for row, value in enumerate(token.tolist()):
                generated[row].append(value)
            finished |= torch.isin(token, stop_ids)
            logits = sampler.forward.decode(state, token)
    return generated


def flat_ids(groups):
    return [g.token_ids for group in groups for g in group]


@pytest.mark.parametrize("temperature, top_p", [(1.0, 1.0), (0.7, 0.9), (0.0, 1.0)])
def test_default_penalties_bias_and_top_logprobs_leave_every_token_as_plain_sampling(
    tiny, temperature, top_p
):
    """Requests that do not use the new parameters sample exactly as before: same logits, same random
    stream, same tokens; asking for top log-probabilities only reads the distribution."""
    sampler = LocalSampler(*tiny)
    plain = SamplingParams(n=3, temperature=temperature, top_p=top_p, max_new_tokens=16, seed=11)
    defaults = SamplingParams(
        n=3,
        temperature=temperature,
        top_p=top_p,
        max_new_tokens=16,
        seed=11,
        presence_penalty=0.0,
        frequency_penalty=0.0,
        logit_bias={},
        top_logprobs=0,
    )
    prompts = [Prompt(p) for p in PROMPTS]
    reference = plain_decoding(sampler, PROMPTS, plain)
    for params in (plain, defaults):
        ids = flat_ids(sampler.generate(prompts, params))
        assert ids == [row[: len(got)] for row, got in zip(reference, ids, strict=True)]
    with_logprobs = sampler.generate(prompts, replace(plain, logprobs=True))
    with_top = sampler.generate(prompts, replace(plain, logprobs=True, top_logprobs=5))
    assert flat_ids(with_top) == flat_ids(with_logprobs) == ids
    assert [g.logprobs for row in with_top for g in row] == [g.logprobs for row in with_logprobs for g in row]


def test_penalties_and_bias_follow_openai(tiny):
    """mu[j] - c[j] * frequency - (c[j] > 0) * presence + bias[j], c counting the row's own tokens."""
    sampler = LocalSampler(*tiny)
    vocab = tiny[0].config.vocab_size
    bias = {10: 1.5, 40: -3.0}
    params = SamplingParams(
        n=2,
        temperature=1.0,
        max_new_tokens=16,
        seed=4,
        presence_penalty=0.7,
        frequency_penalty=0.4,
        logit_bias=bias,
    )

    def adjust(logits, generated):
        counts = torch.zeros(len(generated), vocab)
        for row, ids in enumerate(generated):
            for token in ids:
                counts[row, token] += 1
        offset = torch.zeros(vocab)
        for token, value in bias.items():
            offset[token] = value
        return logits + offset - 0.4 * counts - 0.7 * (counts > 0).float()

    reference = plain_decoding(sampler, PROMPTS, params, adjust)
    ids = flat_ids(sampler.generate([Prompt(p) for p in PROMPTS], params))
    assert ids == [row[: len(got)] for row, got in zip(reference, ids, strict=True)]
    unadjusted = replace(params, presence_penalty=0.0, frequency_penalty=0.0, logit_bias={})
    assert ids != flat_ids(sampler.generate([Prompt(p) for p in PROMPTS], unadjusted))


def test_penalties_and_bias_at_their_extremes(tiny):
    sampler = LocalSampler(*tiny)
    prompts = [Prompt(p) for p in PROMPTS]
    greedy = SamplingParams(temperature=0, max_new_tokens=12)
    for penalty in ("presence_penalty", "frequency_penalty"):
        rows = flat_ids(sampler.generate(prompts, replace(greedy, **{penalty: 1000.0})))
        assert all(len(set(ids)) == len(ids) for ids in rows)  # no token twice
        alone = [flat_ids(sampler.generate([p], replace(greedy, **{penalty: 1000.0})))[0] for p in prompts]
        assert rows == alone  # each row counts its own tokens only
    letter = tiny[1].convert_tokens_to_ids("q")
    forced = sampler.generate(prompts, replace(greedy, logit_bias={letter: 100.0}))
    assert all(g.text == "q" * 12 for row in forced for g in row)
    first = flat_ids(sampler.generate(prompts, greedy))[0][0]
    banned = sampler.generate(prompts, replace(greedy, logit_bias={first: -100.0}))
    assert first not in banned[0][0].token_ids
    with pytest.raises(ValueError, match="outside the vocabulary"):
        sampler.generate(prompts, replace(greedy, logit_bias={10**6: 1.0}))


def test_top_logprobs_list_the_likeliest_tokens_of_each_step(tiny):
    sampler = LocalSampler(*tiny)
    prompts = [Prompt(p) for p in PROMPTS]
    for temperature in (0.0, 0.8):
        params = SamplingParams(
            n=2, temperature=temperature, max_new_tokens=10, seed=2, logprobs=True, top_logprobs=4
        )
        for generation in [g for row in sampler.generate(prompts, params) for g in row]:
            assert len(generation.top_logprobs) == len(generation.token_ids)
            for token, logprob, top in zip(
                generation.token_ids, generation.logprobs, generation.top_logprobs, strict=True
            ):
                values = [value for _, value in top]
                assert len(top) == 4 and values == sorted(values, reverse=True)
                assert logprob <= values[0] + 1e-6
                if temperature == 0:
                    assert top[0] == (token, pytest.approx(logprob))  # greedy takes the likeliest
                elif token in dict(top):
                    assert dict(top)[token] == pytest.approx(logprob)


@pytest.mark.parametrize("top_k, top_p", [(0, 1.0), (3, 1.0), (0, 0.7), (4, 0.8)])
def test_sampling_by_the_cumulative_distribution_draws_what_multinomial_draws(top_k, top_p):
    """The server's sampler inverts each row's cumulative distribution; it must keep the same tokens, with
    the same probabilities, as ``sample_next`` (torch.multinomial)."""
    from rewardlab.sampling.local import sample_by_cdf, sample_next

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -30.0], [0.0, 0.1, 3.0, 0.2, -0.5, 1.0]])
    draws = 40_000
    rows = logits.repeat_interleave(draws, 0)
    generator = torch.Generator().manual_seed(0)
    ours = sample_by_cdf(rows, 0.9, top_p, generator, top_k).view(2, draws)
    reference = sample_next(rows, 0.9, top_p, generator, top_k).view(2, draws)
    for row in range(2):
        got = torch.bincount(ours[row], minlength=6).float() / draws
        expected = torch.bincount(reference[row], minlength=6).float() / draws
        assert set(torch.nonzero(got).flatten().tolist()) == set(torch.nonzero(expected).flatten().tolist())
        assert torch.allclose(got, expected, atol=0.012), (got, expected)
    assert torch.equal(sample_by_cdf(logits, 0.0, top_p, None, top_k), logits.argmax(-1))


def test_inverse_cdf_draws_reproduce_at_a_seed_and_are_a_stream_of_their_own(tiny, tmp_path):
    sampler = LocalSampler(*tiny)
    prompts = [Prompt(p) for p in PROMPTS]

    def tokens(draw: str) -> list:
        params = SamplingParams(n=4, temperature=1.0, max_new_tokens=12, seed=7, draw=draw)
        return [[g.token_ids for g in row] for row in sampler.generate(prompts, params)]

    assert tokens("inverse_cdf") == tokens("inverse_cdf")
    assert tokens("inverse_cdf") != tokens("multinomial")  # the option is used, not ignored
    from rewardlab.config import TrainConfig, load_config
    from rewardlab.errors import RewardlabError

    config = load_config(TrainConfig, None, ["sampling.draw=inverse_cdf"], {})
    assert config.sampling.draw == "inverse_cdf"
    with pytest.raises(RewardlabError, match="sampling.draw.*'multinomial' or 'inverse_cdf'"):
        load_config(TrainConfig, None, ["sampling.draw=gumbel"], {})


def test_training_and_evaluation_draw_as_their_config_says(tmp_path, monkeypatch):
    from rewardlab.config import EvalConfig
    from rewardlab.eval.evaluate import evaluate
    from rewardlab.runs import RunStore
    from rewardlab.sampling import local
    from rewardlab.train.trainer import train
    from test_train import easy_config, easy_env

    calls = []
    real = local.sample_by_cdf
    monkeypatch.setattr(local, "sample_by_cdf", lambda *args: calls.append(1) or real(*args))
    store = RunStore(tmp_path / "runs")
    train(easy_config(tmp_path, max_steps=1), store, env=easy_env())
    assert not calls  # multinomial by default
    train(easy_config(tmp_path, max_steps=1, sampling={"draw": "inverse_cdf"}), store, env=easy_env())
    assert len(calls) == 6  # one draw per decoding step (6 new tokens at most)
    eval_config = EvalConfig.model_validate(
        {"model": {"name_or_path": "tiny"}, "env": {"name": "arithmetic"}, "num_examples": 2,
         "rollouts_per_example": 1, "sampling": {"draw": "inverse_cdf", "max_new_tokens": 4},
         "runs_dir": str(tmp_path / "runs")}
    )  # fmt: skip
    evaluate(eval_config, store)
    assert len(calls) > 6
