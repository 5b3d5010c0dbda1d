from rewardlab.rubrics.parsers import Parser, XMLParser


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
