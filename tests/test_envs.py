import json

import pytest

from conftest import user_error
from rewardlab.envs import SingleTurnEnv, load_environment, load_examples
from rewardlab.envs.builtin.arithmetic import careless, solve
from rewardlab.errors import DatasetError, EnvironmentLoadError


def test_rows_from_list_jsonl_and_datasets(tmp_path):
    rows = [{"question": "1+1=", "answer": "2"}, {"prompt": [{"role": "user", "content": "hi"}], "answer": 3}]
    from_list = load_examples(rows, system_prompt="be brief")
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    from_file = load_examples(path, system_prompt="be brief")
    import datasets

    from_hf = load_examples(datasets.Dataset.from_list([{"question": "1+1=", "answer": "2", "info": "{}"}]))
    assert [e.prompt for e in from_list] == [e.prompt for e in from_file]
    assert from_list[0].prompt[0] == {"role": "system", "content": "be brief"}
    assert from_list[1].answer == "3"
    assert (
        from_hf[0].id == load_examples([{"question": "1+1=", "answer": "2"}])[0].id
    )  # content ids are stable


@pytest.mark.parametrize(
    "row, message",
    [
        ({"answer": "2"}, "dataset row 0: row has no 'prompt' or 'question'"),
        ({"prompt": [{"role": "robot", "content": "x"}]}, "unknown role 'robot'"),
        ({"prompt": 5}, "'prompt' must be a string or a non-empty list of messages"),
        ({"prompt": "x", "info": "{not json"}, "'info' is a string but not JSON"),
    ],
)
def test_bad_rows_name_the_row(row, message):
    with pytest.raises(DatasetError) as error:
        load_examples([row])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_bad_jsonl_names_the_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "answer": "1"}\n{"answer": "2"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl line 2: row has no 'prompt'"):
        load_examples(path)
    path.write_text('{"prompt": "a"\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl line 1: not valid JSON"):
        load_examples(path)


def test_arithmetic_splits_are_disjoint_and_seeded():
    env = load_environment("arithmetic", level=[1, 2], num_train=800, num_eval=100, seed=3)
    train = {e.question for e in env.train_examples}
    held_out = {e.question for e in env.eval_examples}
    assert len(train) == 800 and len(held_out) == 100 and not train & held_out
    again = load_environment("arithmetic", level=[1, 2], num_train=800, num_eval=100, seed=3)
    assert [e.id for e in again.train_examples] == [e.id for e in env.train_examples]
    other = load_environment("arithmetic", level=[1, 2], num_train=800, num_eval=100, seed=4)
    assert not {e.question for e in other.eval_examples} & train  # disjoint whatever the seed


def test_arithmetic_answers_and_levels():
    env = load_environment("arithmetic", level=[1, 2, 3, 4], num_train=200, num_eval=40)
    for example in env.train_examples:
        info = example.info
        assert example.answer == str(solve(info["a"], info["op"], info["b"]))
        assert example.question == f"{info['a']}{info['op']}{info['b']}="
    assert {e.info["level"] for e in env.train_examples} == {1, 2, 3, 4}


def test_careless_teacher_slips_only_where_a_carry_is_needed():
    assert careless(52, "+", 69) == 111 and careless(23, "+", 45) == 68
    assert careless(52, "-", 38) == 26 and careless(58, "-", 32) == 26
    assert careless(47, "*", 3) == 121
    env = load_environment("arithmetic", level=2, num_train=2000, teacher="careless", slip_rate=0.7)
    slips = [env.demonstration(e) != f"<answer>{e.answer}</answer>" for e in env.train_examples]
    carry = [e for e, s in zip(env.train_examples, slips, strict=True) if e.info["needs_carry"]]
    assert not any(s for e, s in zip(env.train_examples, slips, strict=True) if not e.info["needs_carry"])
    rate = sum(s for e, s in zip(env.train_examples, slips, strict=True) if e.info["needs_carry"]) / len(
        carry
    )
    assert 0.6 < rate < 0.8


def test_registry_by_file_and_module(tmp_path, monkeypatch):
    source = (
        "from rewardlab.envs import SingleTurnEnv\n"
        "def load_environment(n=2):\n"
        "    return SingleTurnEnv(dataset=[{'prompt': str(i), 'answer': str(i)} for i in range(n)])\n"
    )
    (tmp_path / "my_env.py").write_text(source)
    env = load_environment(str(tmp_path / "my_env.py"), n=3)
    assert isinstance(env, SingleTurnEnv) and len(env.train_examples) == 3 and env.name == "my_env"
    monkeypatch.syspath_prepend(str(tmp_path))
    assert len(load_environment("my_env", n=5).train_examples) == 5


@pytest.mark.parametrize(
    "spec, kwargs, message",
    [
        ("no_such_env_anywhere", {}, "unknown environment 'no_such_env_anywhere'"),
        ("missing.py", {}, "environment file not found: missing.py"),
        ("arithmetic", {"levle": 2}, "does not take argument 'levle'"),
        ("arithmetic", {"level": 9}, "rejected its arguments: unknown level 9"),
    ],
)
def test_registry_errors_are_one_line(spec, kwargs, message):
    with pytest.raises(EnvironmentLoadError) as error:
        load_environment(spec, **kwargs)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_broken_environment_file(tmp_path):
    (tmp_path / "broken.py").write_text("import nonexistent_module_xyz\n")
    with pytest.raises(EnvironmentLoadError, match="failed to import: ModuleNotFoundError"):
        load_environment(str(tmp_path / "broken.py"))
    (tmp_path / "nofactory.py").write_text("x = 1\n")
    with pytest.raises(EnvironmentLoadError, match="has no load_environment"):
        load_environment(str(tmp_path / "nofactory.py"))


def test_asking_for_more_problems_than_exist_is_a_one_line_user_error():
    from rewardlab.errors import RewardlabError

    with pytest.raises(RewardlabError, match=r"only 93 distinct train problems exist for levels \[1\]"):
        load_environment("arithmetic", level=1, num_train=500)
    env = load_environment("arithmetic", level=2, num_train=50, num_eval=10)
    assert len(env.adversarial_examples(300, seed=0)) == 300  # draws from what the held-out side holds
    with pytest.raises(RewardlabError, match="adversarial \\(carry\\) problems exist"):
        env.adversarial_examples(5000, seed=0)
    with pytest.raises(RewardlabError, match="distinct eval problems exist"):
        env.fresh_examples(5000, seed=0)


def test_dataset_rows_with_odd_values_are_dataset_errors():
    where = "dataset row 0"
    assert user_error(load_examples, [{"prompt": "a\ud800"}]) == (
        f"{where}: 'prompt' holds '\\ud800', a lone surrogate: not text (UTF-8 cannot encode it)"
    )
    assert "'info' holds" in user_error(load_examples, [{"prompt": "x", "info": {"k": "\udfff"}}])
    assert user_error(load_examples, [{"prompt": [{"role": [], "content": "x"}]}]) == (
        f"{where}: prompt message 0 has unknown role [] (list) (roles: assistant, system, tool, user)"
    )
    assert user_error(load_examples, [{"prompt": "x", "info": "[" * 5000}]) == (
        f"{where}: 'info' is nested too deeply to read"
    )
    assert "'answer' is neither text nor JSON" in user_error(load_examples, [{"prompt": "x", "answer": {1j}}])


def test_dataset_files_that_are_not_text_or_too_deep_are_dataset_errors(tmp_path):
    binary, deep, bom = tmp_path / "binary.jsonl", tmp_path / "deep.json", tmp_path / "bom.jsonl"
    binary.write_bytes(b'{"prompt": "x"}\n\x80\n')
    deep.write_text("[" * 5000 + "]" * 5000)
    bom.write_bytes('\ufeff{"prompt": "x"}\r\n{"prompt": "y"}\r\n'.encode())
    assert user_error(load_examples, binary) == f"{binary} line 2: not UTF-8 text (byte 16)"
    assert user_error(load_examples, deep) == f"{deep}: nested too deeply to read"
    assert [e.prompt[0]["content"] for e in load_examples(bom)] == ["x", "y"]  # a byte-order mark, CRLF lines
