"""Structured outputs in the local sampler: response formats enforced by grammar-constrained decoding.

The tiny model is untrained, so whatever JSON it returns is the grammar's doing: at temperature 1 it would
otherwise write noise.
"""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from rewardlab.errors import ResponseFormatError
from rewardlab.sampling.base import Prompt, SamplingParams
from rewardlab.sampling.local import LocalSampler
from rewardlab.sampling.structured import parse_response_format

PROMPTS = [
    Prompt([{"role": "user", "content": "Describe a person."}]),
    Prompt([{"role": "user", "content": "x"}]),
]
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "member": {"type": "boolean"},
        "level": {"enum": ["low", "mid", "high"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 3}, "maxItems": 2},
        "score": {"anyOf": [{"type": "number"}, {"type": "null"}]},
    },
    "required": ["name", "age", "member", "level", "tags", "score"],
    "additionalProperties": False,
}


def as_format(schema: dict, name: str = "person") -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


@pytest.fixture(scope="module")
def sampler(tiny):
    return LocalSampler(*tiny)


def completions(sampler, params) -> list:
    return [g for group in sampler.generate(PROMPTS, params) for g in group]


def test_default_sampling_is_unchanged(sampler):
    """Without a response format (or with "text") the tokens at a seed are those sampled before structured
    outputs existed: the seeded demo's numbers depend on them."""
    recorded = [
        [25, 74, 8, 3, 46, 63, 74, 53, 102, 68, 74, 95],
        [50, 50, 58, 28, 100, 34, 10, 2, 17, 84, 103, 94],
        [85, 48, 69, 102, 107, 70, 91, 44, 48, 77, 87, 17],
        [87, 66, 78, 45, 20, 73, 108, 22, 79, 2, 72, 72],
    ]
    nucleus = [
        [105, 14, 81, 101, 101, 12, 45, 41, 99, 86, 69, 46],
        [1],
        [92, 5, 16, 14, 54, 67, 36, 94, 79, 35, 101, 75],
        [11, 32, 23, 55, 17, 85, 64, 16, 58, 18, 87, 11],
    ]
    prompts = [Prompt([{"role": "user", "content": "2+3="}]), Prompt([{"role": "user", "content": "Say hi"}])]
    for response_format in (None, {"type": "text"}):
        plain = SamplingParams(n=2, max_new_tokens=12, seed=1234, response_format=response_format)
        top_p = SamplingParams(
            n=2, temperature=0.7, top_p=0.9, max_new_tokens=12, seed=7, response_format=response_format
        )
        assert [g.token_ids for group in sampler.generate(prompts, plain) for g in group] == recorded
        assert [g.token_ids for group in sampler.generate(prompts, top_p) for g in group] == nucleus


def test_every_sample_follows_the_schema(sampler):
    params = SamplingParams(
        n=24, temperature=1.0, max_new_tokens=160, seed=0, response_format=as_format(PERSON)
    )
    outputs = completions(sampler, params)
    assert len(outputs) == 48
    for output in outputs:
        assert output.finish_reason == "stop"
        jsonschema.validate(json.loads(output.text), PERSON)
    assert len({o.text for o in outputs}) > 40  # sampled, not one forced answer


def test_the_grammar_decides_when_a_row_stops(sampler):
    """End-of-turn only where the JSON is complete: it is the last token of every row and nowhere else, and
    no other special token (padding, role markers, <unk>) is ever written, inside strings or out."""
    params = SamplingParams(n=16, max_new_tokens=160, seed=3, response_format=as_format(PERSON))
    special = set(sampler.tokenizer.all_special_ids)
    for output in completions(sampler, params):
        assert output.token_ids[-1] in sampler.stop_ids
        assert not special & set(output.token_ids[:-1])
        assert output.text == sampler.tokenizer.decode(output.token_ids[:-1])


def test_json_object_gives_objects_and_a_cut_says_length(sampler):
    params = SamplingParams(n=24, max_new_tokens=96, seed=0, response_format={"type": "json_object"})
    outputs = completions(sampler, params)
    stopped = [o for o in outputs if o.finish_reason == "stop"]
    assert len(stopped) >= len(outputs) // 2
    for output in stopped:
        assert isinstance(json.loads(output.text), dict)
    for output in outputs:
        if output.finish_reason == "length":
            assert len(output.token_ids) == 96
            with pytest.raises(ValueError):
                json.loads(output.text)  # incomplete, and the finish reason says so


def test_max_tokens_cut_is_length_not_a_stop(sampler):
    long_string = {
        "type": "object",
        "properties": {"s": {"type": "string", "minLength": 40}},
        "required": ["s"],
    }
    params = SamplingParams(n=4, max_new_tokens=20, seed=0, response_format=as_format(long_string))
    for output in completions(sampler, params):
        assert output.finish_reason == "length" and len(output.token_ids) == 20
        assert output.text.startswith('{"s": "')


def test_greedy_nucleus_and_logprobs_under_the_grammar(sampler):
    # Bounded everywhere: greedy decoding of an untrained model would otherwise repeat a digit forever.
    bounded = {**PERSON, "properties": {k: v for k, v in PERSON["properties"].items() if k != "score"}}
    bounded["required"] = list(bounded["properties"])
    for temperature, top_p in ((0.0, 1.0), (0.8, 0.5)):
        params = SamplingParams(
            n=2, temperature=temperature, top_p=top_p, max_new_tokens=160, seed=1,
            logprobs=True, top_logprobs=5, response_format=as_format(bounded),
        )  # fmt: skip
        for output in completions(sampler, params):
            assert output.finish_reason == "stop"
            jsonschema.validate(json.loads(output.text), bounded)
            assert all(math.isfinite(lp) for lp in output.logprobs)
            # Alternatives the grammar ruled out are not listed: where one token is forced, it alone is.
            assert all(math.isfinite(lp) for step in output.top_logprobs for _, lp in step)
            assert any(len(step) == 1 for step in output.top_logprobs)


@pytest.mark.parametrize(
    "value, message",
    [
        ("json", 'must be an object such as {"type": "json_schema"'),
        ({"type": "xml"}, 'type: must be one of text, json_object, json_schema, got "xml"'),
        ({"type": "json_schema"}, 'json_schema: must be an object with the "schema" to follow'),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, "json_schema.schema: required"),
        ({"type": "json_schema", "json_schema": {"schema": []}}, "json_schema.schema: must be a JSON Schema"),
        (
            {"type": "json_schema", "json_schema": {"name": 3, "schema": {}}},
            "json_schema.name: must be a string",
        ),
        (
            as_format({"type": "object", "properties": {"age": {"type": "int"}}}),
            "json_schema.schema: 'int' is not valid under any of the given schemas (at properties.age.type)",
        ),
        (
            as_format({"type": "object", "required": "age"}),
            "json_schema.schema: 'age' is not of type 'array' (at required)",
        ),
        (
            as_format({"type": "object", "properties": {"tags": {"type": "array", "uniqueItems": True}}}),
            "json_schema.schema: uniqueItems (at properties.tags) cannot be enforced while decoding",
        ),
        (as_format({"not": {"type": "string"}}), "json_schema.schema: not cannot be enforced"),
    ],
)
def test_malformed_formats_are_one_line_naming_what_is_wrong(value, message):
    with pytest.raises(ResponseFormatError) as error:
        parse_response_format(value)
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_keyword_names_as_property_names_are_not_keywords():
    schema = {"type": "object", "properties": {"not": {"type": "string"}, "if": {"enum": ["allOf"]}}}
    assert parse_response_format(as_format(schema))["json_schema"]["schema"] == schema
    assert parse_response_format({"type": "text"}) is None
    assert parse_response_format({"type": "json_object"}) == {"type": "json_object"}


def test_a_schema_the_grammar_cannot_compile_fails_before_sampling(sampler):
    dangling = as_format({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}})
    with pytest.raises(
        ResponseFormatError, match=r"^json_schema.schema: cannot be compiled to a grammar: \S"
    ):
        sampler.generate(PROMPTS, SamplingParams(max_new_tokens=4, response_format=dangling))


def test_text_the_tokenizer_cannot_write_is_an_error_not_a_hang(sampler):
    """The tiny tokenizer has no token for "é": the grammar then allows nothing after the opening quote."""
    params = SamplingParams(max_new_tokens=8, seed=0, response_format=as_format({"enum": ["é"]}))
    with pytest.raises(
        ResponseFormatError, match="^json_schema.schema: needs text this tokenizer cannot write"
    ):
        sampler.generate(PROMPTS, params)


# -- rollouts: eval and train configs, endpoints ------------------------------------------------------------


def hypothesis_format() -> dict:
    from rewardlab.envs.builtin.hypothesis import ANSWER_SCHEMA

    return as_format({**ANSWER_SCHEMA, "additionalProperties": False}, name="answer")


def test_eval_and_train_rollouts_follow_sampling_response_format(tmp_path):
    """With ``sampling.response_format`` every rollout is schema-valid JSON: the hypothesis environment's
    format rewards (json_valid, json_schema_match) are 1 for the untrained model, which leaves the
    decision to learn."""
    from rewardlab.config import EvalConfig, TrainConfig
    from rewardlab.eval.evaluate import evaluate
    from rewardlab.runs.store import RunStore
    from rewardlab.train.trainer import train

    common = {
        "model": {"name_or_path": "tiny"},
        "env": {"name": "hypothesis", "args": {"level": 1}},
        "runs_dir": str(tmp_path),
        "sampling": {"max_new_tokens": 160, "response_format": hypothesis_format()},
    }
    summary = evaluate(
        EvalConfig.model_validate({**common, "num_examples": 3, "rollouts_per_example": 2})
    ).summary
    assert summary["truncated_fraction"] == 0 and summary["errors"] == 0
    assert summary["components"]["json_valid"]["mean"] == 1.0
    assert summary["components"]["json_schema_match"]["mean"] == 1.0
    config = {**common, "max_steps": 1, "prompts_per_step": 2, "group_size": 2, "checkpoint_every": 0}
    result = train(TrainConfig.model_validate(config))
    metrics = RunStore(tmp_path).metrics(result.run_id)
    assert metrics["reward/json_valid"] == [(1, 1.0)] and metrics["reward/json_schema_match"] == [(1, 1.0)]


def test_response_format_in_a_config_file_is_checked_and_written_back(tmp_path):
    from rewardlab.config import EvalConfig, load_config, to_toml
    from rewardlab.errors import ConfigError

    path = tmp_path / "eval.toml"
    path.write_text(
        '[sampling.response_format]\ntype = "json_schema"\n'
        '[sampling.response_format.json_schema]\nname = "answer"\n'
        'schema = {type = "object", properties = {n = {type = "integer"}}, required = ["n"]}\n'
    )
    config = load_config(EvalConfig, path)
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert config.sampling.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "answer", "schema": schema},
    }
    again = tmp_path / "again.toml"
    again.write_text(to_toml(config))
    assert load_config(EvalConfig, again).sampling.response_format == config.sampling.response_format
    assert (
        load_config(EvalConfig, overrides=["sampling.response_format={type='text'}"]).sampling.response_format
        is None
    )
    with pytest.raises(ConfigError) as error:
        load_config(EvalConfig, overrides=["sampling.response_format={type='xml'}"])
    assert "sampling.response_format" in str(error.value) and "type: must be one of" in str(error.value)
