"""The trainer stores, for the rollouts a step keeps, each model token's log-prob and entropy from the
update's first pass; the dashboard colours transcripts by them."""

import math

import torch

from rewardlab.dashboard import queries
from rewardlab.models.tiny import build_tiny_tokenizer
from rewardlab.runs import RunStore
from rewardlab.train.token_stats import FirstPass
from rewardlab.train.trainer import train
from rewardlab.types import Example, Rollout, ScoredRollout
from test_train import easy_config, easy_env


def scored(ids, mask) -> ScoredRollout:
    rollout = Rollout(Example("e", [], ""), 0, [], completion_ids=ids, completion_mask=mask)
    return ScoredRollout(rollout, 0.0, {})


def test_model_turns_get_their_own_tokens_and_other_rows_none():
    tokenizer = build_tiny_tokenizer()
    a = scored(tokenizer.encode("ab", add_special_tokens=False) + [5, 6], [1, 1, 0, 0])
    b = scored([7, 8, 9, 10, 11], [1, 1, 0, 0, 1])  # two model turns around an environment reply
    first = FirstPass([a, b])
    logprobs = -torch.arange(10, dtype=torch.float32).reshape(2, 5) / 10
    entropy = torch.arange(10, dtype=torch.float32).reshape(2, 5) / 4
    first.add(logprobs[:1], entropy[:1])  # two micro-batches, in the batch's row order
    first.add(logprobs[1:], entropy[1:])
    tokens_a, tokens_b, stranger = first.tokens_of([a, b, scored([1], [1])], tokenizer)
    assert [t["text"] for t in tokens_a[0]] == ["a", "b"] and len(tokens_a) == 1
    assert [[t["logprob"] for t in turn] for turn in tokens_b] == [[-0.5, -0.6], [-0.9]]
    assert [[t["entropy"] for t in turn] for turn in tokens_b] == [[1.25, 1.5], [2.25]]
    assert stranger is None
    assert FirstPass([a]).tokens_of([a], tokenizer) == [None]  # no pass recorded: nothing claimed


def test_a_runs_stored_rollouts_carry_their_tokens_and_the_dashboard_shows_them(tmp_path):
    store = RunStore(tmp_path / "runs")
    result = train(easy_config(tmp_path, max_steps=2, log_rollouts_per_step=3), store, env=easy_env())
    rows = store.rollouts(result.run_id, phase="train")
    assert len(rows) == 6
    special = set(build_tiny_tokenizer().all_special_tokens)  # in the ids, not in the reply's text
    for row in rows:
        (turn,) = row["metrics"]["tokens"]
        assert len(turn) == row["num_completion_tokens"]
        reply = row["completion"][0]["content"]
        assert "".join(t["text"] for t in turn if t["text"] not in special).startswith(reply)
        assert all(t["logprob"] <= 0 and t["entropy"] >= 0 for t in turn)
        assert all(math.isfinite(t["logprob"]) and math.isfinite(t["entropy"]) for t in turn)
        model_turns = [m for m in queries.transcript(row) if m["who"] == "model"]
        assert model_turns[0]["tokens"] == turn
    assert any(t["entropy"] > 0.1 for row in rows for t in row["metrics"]["tokens"][0])
