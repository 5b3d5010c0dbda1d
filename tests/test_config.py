"""One config shape: shared sections, a parent's defaults kept, renamed fields still read, combinations
refused before any model loads, and every command's config printed as TOML that loads back the same."""

import warnings

import pytest
import tomllib
from typer.testing import CliRunner

from conftest import user_error
from rewardlab.cli import app
from rewardlab.config import (
    AuditConfig,
    CompareConfig,
    DemoConfig,
    EvalConfig,
    ExportConfig,
    RenamedField,
    ServeConfig,
    SFTConfig,
    TrainConfig,
    describe_fields,
    load_config,
    resume_config,
    to_toml,
)
from rewardlab.config.files import parse_override
from rewardlab.errors import ConfigError, RewardlabError
from rewardlab.runs import RunStore

COMMANDS = {
    "sft": SFTConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "compare": CompareConfig,
    "audit": AuditConfig,
    "serve": ServeConfig,
    "export": ExportConfig,
    "demo": DemoConfig,
}


def invoke(*args):
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def test_sft_and_train_share_one_optimizer_section_with_their_own_defaults():
    sft, train = SFTConfig(), TrainConfig()
    assert type(sft.optimizer) is type(train.optimizer)
    assert (sft.optimizer.learning_rate, sft.optimizer.lr_scheduler, sft.optimizer.betas) == (
        1e-3,
        "cosine",
        (0.9, 0.999),
    )
    assert (train.optimizer.learning_rate, train.optimizer.lr_scheduler, train.optimizer.betas) == (
        5e-5,
        "constant",
        (0.9, 0.99),
    )


def test_a_section_given_in_part_keeps_the_commands_defaults_for_the_rest():
    sft = load_config(SFTConfig, overrides=["lora.rank=8", "optimizer.warmup_steps=5"])
    assert sft.lora.rank == 8 and not sft.lora.enabled  # SFT's LoRA stays off
    assert sft.optimizer.warmup_steps == 5 and sft.optimizer.lr_scheduler == "cosine"
    demo = load_config(DemoConfig, overrides=["train.optimizer.warmup_steps=3", "env.args.level=1"])
    assert demo.train.optimizer.learning_rate == 2e-3 and demo.train.max_steps == 150
    assert demo.env.args == {**DemoConfig().env.args, "level": 1}
    other = load_config(DemoConfig, overrides=['env.name="event_selection"'])
    assert other.env.args == {}  # arithmetic's arguments belong to arithmetic


def test_endpoint_fields_only_where_endpoints_are_allowed():
    for command in ("sft", "train", "demo"):
        # the model itself is never an endpoint in training (train's rollout_base_url is where it samples)
        assert not any(name == "model.base_url" for name, _, _ in describe_fields(COMMANDS[command])), command
    assert any(name == "model.base_url" for name, _, _ in describe_fields(EvalConfig))
    unknown = "unknown config field 'model.base_url' \\(training needs a local model"
    with pytest.raises(ConfigError, match=unknown):
        load_config(SFTConfig, overrides=['model.base_url="http://127.0.0.1:1/v1"'])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["beta=0.1", "lora.enabled=false"], "beta > 0 needs a reference model: enable LoRA"),
        (["sampling.temperature=0"], "sampling.temperature = 0 is greedy"),
        (["sampling.temperature=1e-7"], "sampling.temperature = 1e-07 is greedy"),
        (["micro_batches=200", "prompts_per_step=4", "group_size=8"], "more than the 32 rollouts of a step"),
        (['model.dtype="bfloat16"', "lora.enabled=false"], "full fine-tuning in bfloat16"),
    ],
)
def test_combinations_are_refused_before_anything_loads(tmp_path, overrides, message):
    args = [item for override in overrides for item in ("--set", override)]
    code, out = invoke("train", *args, "--model", "nope/never-loaded", "--runs-dir", str(tmp_path))
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and message in lines[0], out
    assert RunStore(tmp_path).list() == []  # refused before a run, a model or an environment


@pytest.mark.parametrize("command", ["sft", "train", "eval", "compare"])
def test_dtype_is_a_flag_wherever_a_local_model_loads(command):
    lora = ["--set", "lora.enabled=true"] if command in ("sft", "train") else []  # half precision trains LoRA
    code, out = invoke(command, "--dtype", "bfloat16", *lora, "--print-config")
    assert code == 0, out
    printed = tomllib.loads(out)
    assert (printed["dtype"] if command == "compare" else printed["model"]["dtype"]) == "bfloat16"
    code, out = invoke(command, "--dtype", "bf16", *lora, "--print-config")
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "dtype" in lines[0] and "bf16" in lines[0], out


def test_an_endpoints_precision_is_not_asked_for(tmp_path):
    code, out = invoke(
        "eval", "--base-url", "http://127.0.0.1:9/v1", "--model", "m", "--dtype", "bfloat16",
        "--runs-dir", str(tmp_path),
    )  # fmt: skip
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and "serves in its own precision" in lines[0], out
    assert RunStore(tmp_path).list() == []


def test_demo_stages_are_checked_too():
    with pytest.raises(ConfigError, match="config field 'train': beta > 0 needs a reference model"):
        load_config(DemoConfig, overrides=["train.beta=0.1", "train.lora.enabled=false"])
    with pytest.raises(ConfigError, match="or sft.lora.enabled = true"):
        load_config(DemoConfig, overrides=['model.dtype="bfloat16"'])


def test_old_field_names_work_with_a_one_line_note(tmp_path):
    code, out = invoke(
        "train", "--set", "learning_rate=1e-3", "--set", "gradient_accumulation_steps=2", "--print-config"
    )
    assert code == 0, out
    notes = [line for line in out.splitlines() if line.startswith("note:")]
    assert notes == [
        "note: config field 'learning_rate' is now 'optimizer.learning_rate'; the old name works until the "
        "next release",
        "note: config field 'gradient_accumulation_steps' is now 'micro_batches'; the old name works until "
        "the next release",
    ]
    printed = tomllib.loads("\n".join(line for line in out.splitlines() if not line.startswith("note:")))
    assert printed["optimizer"]["learning_rate"] == 1e-3 and printed["micro_batches"] == 2
    with pytest.raises(ConfigError, match="'learning_rate' is the old name of 'optimizer.learning_rate'"):
        load_config(TrainConfig, overrides=["learning_rate=1e-3", "optimizer.learning_rate=2e-3"])


def test_the_demos_old_flat_fields_still_read():
    old = ["sft_steps=40", "rl_steps=2", "rl_learning_rate=1e-2", "temperature=0.5", 'model="tiny-qwen2"']
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(DemoConfig, overrides=old)
    assert sum(issubclass(w.category, RenamedField) for w in caught) == 5
    assert (config.sft.max_steps, config.train.max_steps) == (40, 2)
    assert config.train.optimizer.learning_rate == 1e-2
    assert config.train.sampling.temperature == config.eval.sampling.temperature == 0.5
    assert config.model.name_or_path == "tiny-qwen2" and config.eval.sampling.max_new_tokens == 12


def test_a_run_recorded_under_the_old_names_resumes_with_todays_changes(tmp_path):
    store = RunStore(tmp_path)
    recorded = TrainConfig().model_dump()
    flat = {key: value for key, value in recorded.items() if key not in ("optimizer", "micro_batches")}
    flat.update(learning_rate=3e-3, lr_scheduler="cosine", gradient_accumulation_steps=2, max_steps=10)
    flat["model"].update(base_url=None, api_key_env="OPENAI_API_KEY", max_concurrency=16)
    flat["sampling"]["max_new_tokens"] = None
    run = store.create_run("train", flat)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenamedField)  # what the run recorded is not the user's to fix
        config = resume_config(store, run.id, overrides=["max_steps=20", "optimizer.warmup_steps=4"])
    assert (config.max_steps, config.resume, config.micro_batches) == (20, run.id, 2)
    assert (config.optimizer.learning_rate, config.optimizer.lr_scheduler, config.optimizer.warmup_steps) == (
        3e-3,
        "cosine",
        4,
    )
    assert config.sampling.max_new_tokens == "auto"


@pytest.mark.parametrize("command", list(COMMANDS))
def test_print_config_is_toml_that_loads_back_the_same(command, tmp_path):
    overrides = {
        "sft": ["lora.enabled=true", "optimizer.learning_rate=2e-4"],
        "train": ["micro_batches=4", 'env.args={level = 1, name = "x y"}'],
        "eval": ["sampling.max_new_tokens=7", 'model.base_url="http://h/v1"'],
        "compare": ['a="tiny"', 'data="held-out,fresh"', 'env.name="maze"'],
        "audit": ["strict=true"],
        "serve": ['adapters={"tuned-v2" = "runs/x", "b c" = "y"}', "port=9"],
        "export": ['out="exported"'],
        "demo": ['env.name="event_selection"', "sft.lora.enabled=true", 'eval.breakdown=["num_events"]'],
    }[command]
    args = [item for override in overrides for item in ("--set", override)]
    where = "--runs-dir" if command != "demo" else "--out"
    code, out = invoke(command, *args, "--print-config", where, "elsewhere")
    assert code == 0, out
    saved = tmp_path / f"{command}.toml"
    saved.write_text(out)
    expected = load_config(COMMANDS[command], None, [*overrides, 'runs_dir="elsewhere"'])
    assert load_config(COMMANDS[command], saved) == expected
    assert to_toml(expected).strip() in out  # under a comment saying what it is


def test_max_new_tokens_auto_is_the_environments_budget():
    from rewardlab.envs import load_environment

    env = load_environment("maze")
    assert TrainConfig().sampling.max_new_tokens_for(env) == env.default_max_new_tokens == 16
    five = load_config(TrainConfig, overrides=["sampling.max_new_tokens=5"])
    assert five.sampling.max_new_tokens_for(env) == 5
    assert EvalConfig.model_validate({"sampling": {"max_new_tokens": None}}).sampling.max_new_tokens == "auto"


def test_a_user_error_is_one_printable_line_whatever_it_quotes():
    assert user_error(parse_override, "\r=1") == "override '\\r=1' has no key"
    assert user_error(parse_override, "\x85") == "override '\\x85' must look like key=value"
    assert str(RewardlabError("a\u2028b\ud800")) == "a\\u2028b\\ud800"


def test_an_override_nested_too_deeply_is_a_config_error():
    message = user_error(parse_override, "max_steps=" + "[" * 5000 + "]" * 5000)
    assert message == "override 'max_steps': its value is nested too deeply to read"


def test_a_config_file_that_is_not_text_or_too_deep_is_a_config_error(tmp_path):
    binary, deep = tmp_path / "binary.toml", tmp_path / "deep.toml"
    binary.write_bytes(b"max_steps = 1\n\x80")
    deep.write_text("v = " + "[" * 5000)
    assert user_error(load_config, TrainConfig, binary) == f"{binary}: not UTF-8 text (byte 14)"
    assert user_error(load_config, TrainConfig, deep) == f"{deep}: nested too deeply to read"
