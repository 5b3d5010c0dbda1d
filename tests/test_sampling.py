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
