"""Fuzzed inputs: whatever a model writes, a dataset holds, a ``--set`` says or a conversation contains, each
reader returns a value or raises the one-line user error (:class:`RewardlabError`), never anything else.

The examples are drawn from a fixed seed (``derandomize``), so a run is reproducible; the counts per
property are in ``EXAMPLES`` (docs/reliability.md lists them).
"""

import json
import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rewardlab.config import TrainConfig, load_config
from rewardlab.config.files import describe_fields, parse_override
from rewardlab.envs.dataset import load_examples
from rewardlab.errors import ConfigError, DatasetError, RewardlabError
from rewardlab.models.chat import ChatRenderer
from rewardlab.models.tiny import build_tiny_tokenizer
from rewardlab.rubrics.parsers import JSONParser, Parser, ToolCall, ToolCallParser, XMLParser

EXAMPLES = {"parsers": 400, "dataset rows": 300, "dataset files": 150, "overrides": 300, "chat": 200}


def fuzz(name: str):
    return settings(
        max_examples=EXAMPLES[name],
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )


# -- what the inputs are made of -----------------------------------------------------------------------

# Pieces of the syntax each reader looks for, so that the drawn text is near-valid as often as not.
SYNTAX = [
    "<answer>",
    "</answer>",
    "<think>",
    "</think>",
    '<tool name="calculator">',
    "<tool name='python'>",
    "<tool name=",
    "</tool>",
    "{",
    "}",
    "[",
    "]",
    '"',
    "'",
    ":",
    ",",
    "=",
    ".",
    "```json\n",
    "```",
    "\\",
    "\\u",
    "true",
    "null",
    "NaN",
    "1e999",
    "-0",
    '"a"',
    '{"a": 1}',
    "\n",
    " ",
    "x",
    "1",
]
# Brackets nested thousands deep: a recursive reader's stack, not its grammar, is what they test.
deep = st.builds(
    lambda depth, opening, middle, closing: opening * depth + middle + closing * depth,
    st.integers(1, 5000),
    st.sampled_from(["[", '{"a": ', "{a = ", "<think>"]),
    st.sampled_from(["1", ""]),
    st.sampled_from(["]", "}", "</think>"]),
)
# Characters that text from a file or a model can hold and that break naive code: a lone surrogate (valid in
# a Python string and in a JSON escape, not in UTF-8), NUL, and every kind of line break.
ODD = ["\ud800", "\udfff", "\x00", "\r", "\n", "\x0b", "\x85", "\u2028"]
text = st.one_of(
    st.text(max_size=30),
    st.lists(st.one_of(st.sampled_from(SYNTAX), st.text(max_size=3)), max_size=30).map("".join),
    st.lists(st.one_of(st.sampled_from(ODD), st.text(max_size=2)), min_size=1, max_size=5).map("".join),
    deep,
)
ROLES = ["system", "user", "assistant", "tool"]
KEYS = ["prompt", "question", "answer", "info", "id", "role", "content", "text", "type"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), text)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(KEYS), text), inner, max_size=4),
    ),
    max_leaves=12,
)
message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(ROLES), "content": text}),
    st.fixed_dictionaries({"role": st.one_of(st.sampled_from(ROLES), json_values), "content": json_values}),
    st.dictionaries(st.one_of(st.sampled_from(["role", "content", "name"]), text), json_values, max_size=3),
    json_values,
)
messages = st.lists(message, max_size=4)


def one_line(error: Exception) -> None:
    assert len(str(error).splitlines()) <= 1, repr(str(error))
    str(error).encode("utf-8")  # printable: no lone surrogate from the input in it


def value_or_user_error(call, *args):
    """``call(*args)``, or the user error it raised (checked to be one line); anything else fails."""
    try:
        return call(*args)
    except RewardlabError as error:
        one_line(error)
        return error


# -- parsers -----------------------------------------------------------------------------------------------


@fuzz("parsers")
@given(st.one_of(text, messages))
def test_parsers_return_an_answer_or_a_user_error(completion):
    answer = value_or_user_error(XMLParser().parse_answer, completion)
    assert answer is None or isinstance(answer, str | RewardlabError)
    answer = value_or_user_error(Parser().parse_answer, completion)
    assert answer is None or isinstance(answer, str | RewardlabError)
    found = value_or_user_error(JSONParser().parse_answer, completion)
    assert found is None or isinstance(found, dict | RewardlabError)
    calls = value_or_user_error(ToolCallParser().parse_tool_calls, completion)
    assert isinstance(calls, RewardlabError) or all(isinstance(call, ToolCall) for call in calls)
    for parser in (XMLParser(), ToolCallParser(), Parser()):
        score = value_or_user_error(parser.format_reward_func(), completion)
        assert isinstance(score, RewardlabError) or 0.0 <= score <= 1.0


# -- dataset rows ----------------------------------------------------------------------------------------

rows = st.one_of(
    st.fixed_dictionaries(
        {"prompt": st.one_of(text, messages, json_values)},
        optional={"answer": json_values, "info": json_values, "id": json_values, "question": json_values},
    ),
    st.dictionaries(st.sampled_from(KEYS), json_values, max_size=5),
    json_values,
)


def check_examples(examples) -> None:
    for example in examples:
        assert isinstance(example.id, str) and isinstance(example.answer, str)
        assert isinstance(example.info, dict) and example.prompt
        for turn in example.prompt:
            assert isinstance(turn["role"], str) and isinstance(turn["content"], str)
        json.dumps(example.prompt).encode()  # what the run store and the hashes do with it


@fuzz("dataset rows")
@given(st.lists(rows, max_size=3))
def test_dataset_rows_become_examples_or_a_user_error(batch):
    examples = value_or_user_error(load_examples, batch)
    if isinstance(examples, RewardlabError):
        assert isinstance(examples, DatasetError)
    else:
        check_examples(examples)


file_bytes = st.one_of(
    st.binary(max_size=200),
    st.lists(rows, max_size=3).map(lambda batch: "\n".join(json.dumps(row) for row in batch).encode()),
    st.lists(st.one_of(text, st.sampled_from(SYNTAX)), max_size=20).map(
        lambda parts: "".join(parts).encode("utf-8", "surrogatepass")
    ),
)


@fuzz("dataset files")
@given(file_bytes, st.sampled_from([".jsonl", ".json"]))
def test_dataset_files_become_examples_or_a_user_error(content, suffix):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, f"data{suffix}")
        with open(path, "wb") as handle:
            handle.write(content)
        examples = value_or_user_error(load_examples, path)
    if isinstance(examples, RewardlabError):
        assert isinstance(examples, DatasetError)
    else:
        check_examples(examples)


# -- config overrides -------------------------------------------------------------------------------------

FIELDS = [name for name, _, _ in describe_fields(TrainConfig)]
LITERALS = ["1", "-1", "0", "1e-4", "true", "false", "[1, 2]", '"x"', "{a = 1}", "inf", "nan", "[", '"', ""]
override = st.builds(
    lambda key, value: f"{key}={value}",
    st.one_of(st.sampled_from(FIELDS), text, st.sampled_from(FIELDS).map(lambda f: f + ".x")),
    st.one_of(st.sampled_from(LITERALS), text),
)


@fuzz("overrides")
@given(st.lists(st.one_of(override, text), max_size=4))
def test_overrides_give_a_config_or_a_user_error(overrides):
    for item in overrides:
        value_or_user_error(parse_override, item)
    config = value_or_user_error(load_config, TrainConfig, None, overrides)
    assert isinstance(config, TrainConfig | ConfigError)


# -- chat rendering ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def renderer():
    return ChatRenderer(build_tiny_tokenizer())


@fuzz("chat")
@given(conversation=st.one_of(messages, json_values), reply=text, answer=messages)
def test_any_conversation_renders_to_ids_or_a_user_error(renderer, conversation, reply, answer):
    ids = value_or_user_error(renderer.prompt_ids, conversation)
    assert isinstance(ids, RewardlabError) or all(isinstance(i, int) for i in ids)
    if isinstance(ids, RewardlabError) or not conversation:
        return
    history = [*conversation, {"role": "assistant", "content": reply}]
    generated = value_or_user_error(renderer.encode, reply)
    if isinstance(generated, RewardlabError):
        return
    more = value_or_user_error(renderer.continuation_ids, history, generated, [*history, *answer])
    assert isinstance(more, RewardlabError) or all(isinstance(i, int) for i in more)
