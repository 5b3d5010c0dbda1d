from conftest import user_error
from rewardlab.rubrics.parsers import JSONParser, Parser, ToolCallParser, XMLParser


def test_answer_is_stripped():
    assert XMLParser().parse_answer("<answer>  42 \n</answer>") == "42"


def test_last_answer_wins():
    assert XMLParser().parse_answer("<answer>1</answer> wait, <answer>2</answer>") == "2"


def test_answer_inside_think_is_ignored():
    text = "<think>maybe <answer>7</answer>?</think><answer>8</answer>"
    assert XMLParser().parse_answer(text) == "8"


def test_only_answer_inside_think_gives_none():
    assert XMLParser().parse_answer("<think>it is <answer>7</answer></think> done") is None


def test_unclosed_think_hides_the_rest():
    assert XMLParser().parse_answer("<answer>3</answer><think>no wait <answer>4</answer>") == "3"


def test_missing_or_unclosed_answer():
    parser = XMLParser()
    assert parser.parse_answer("42") is None
    assert parser.parse_answer("<answer>42") is None


def test_multiline_answer():
    assert XMLParser().parse_answer("<answer>\nline one\nline two\n</answer>") == "line one\nline two"


def test_parse_from_messages_uses_last_assistant_turn():
    messages = [
        {"role": "assistant", "content": "<answer>1</answer>"},
        {"role": "user", "content": "try again"},
        {"role": "assistant", "content": "<answer>2</answer>"},
    ]
    assert XMLParser().parse_answer(messages) == "2"


def test_format_reward_levels():
    reward = XMLParser().format_reward_func()
    assert reward("<answer>5</answer>") == 1.0
    assert reward("<think>hm</think> <answer>5</answer>  ") == 1.0
    assert reward("<answer>5</answer> trailing words") == 0.5
    assert reward("<answer>5</answer><answer>6</answer>") == 0.5
    assert reward("<answer> </answer>") == 0.0
    assert reward("5") == 0.0


def test_custom_tag_and_format_answer():
    parser = XMLParser(answer_tag="final")
    assert parser.format_answer("9") == "<final>9</final>"
    assert parser.parse_answer(parser.format_answer("9")) == "9"


def test_identity_parser():
    assert Parser().parse_answer("  x ") == "x"
    assert Parser().parse_answer("   ") is None


def test_parsers_read_any_list_of_messages_and_refuse_what_is_not_one():
    assert XMLParser().format_reward_func()([]) == 0.0
    turns = [{"role": "assistant", "content": None}]  # a turn of tool calls only
    assert XMLParser().parse_answer(turns) is None
    parts = [{"role": "assistant", "content": [{"type": "text", "text": "<answer>4</answer>"}]}]
    assert XMLParser().parse_answer(parts) == "4"
    assert XMLParser().format_reward_func()(parts) == 1.0
    assert user_error(XMLParser().parse_answer, None) == (
        "a completion must be text or a list of chat messages, got NoneType"
    )
    assert user_error(JSONParser().parse_answer, ["hi"]) == (
        "completion message 0 must be an object with 'role' and 'content', got str"
    )
    assert user_error(ToolCallParser().parse_tool_calls, [{"role": "assistant", "content": 3}]) == (
        "completion message 0: 'content' must be text, got int"
    )


def test_json_nested_deeper_than_the_stack_is_not_an_answer():
    deep = '{"a": ' + "[" * 5000 + "1" + "]" * 5000 + "}"
    assert JSONParser().parse_answer(deep) is None
    assert JSONParser().parse_answer(deep + ' then {"b": 2}') == {"b": 2}
