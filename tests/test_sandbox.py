"""The sandbox for model-written code, attacked: every attack is contained and answered as a tool error, fast.

The attacks go through the python tool of ``tool_math`` (the path a model's code takes) with low limits.
They need bubblewrap and skip, saying so, where it is missing; the fallback (limits only, with a warning)
is tested everywhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
import warnings
from pathlib import Path

import pytest

from rewardlab import sandbox
from rewardlab.envs import load_environment
from rewardlab.errors import RewardlabError
from rewardlab.sampling.base import Generation, SamplingParams

TIMEOUT_S = 1.5
REPOSITORY = Path(__file__).resolve().parents[1]
GRACE_S = 5.0  # a contained attack answers within the timeout plus this (starting the sandbox, a loaded CI)


def bwrap_works() -> bool:
    try:
        return sandbox.sandboxed("bwrap")
    except RewardlabError:
        return False


needs_bwrap = pytest.mark.skipif(
    not bwrap_works(),
    reason="bubblewrap (bwrap) is not installed or cannot create a sandbox here (apt-get install bubblewrap)",
)


@pytest.fixture
def env():
    return load_environment(
        "tool_math", level=3, num_train=4, num_eval=3, python_timeout=TIMEOUT_S, python_memory_mb=256
    )


def tool_reply(env, code: str) -> tuple[str, float]:
    """What the environment answers a model turn that calls python with ``code``, and how long it took."""
    state = env.initial_state(env.examples("eval")[0])
    message = {"role": "assistant", "content": f'<tool name="python">\n{code}\n</tool>'}
    started = time.monotonic()
    [reply] = env.env_response([message], state)
    elapsed = time.monotonic() - started
    assert reply["role"] == "tool"
    return reply["content"], elapsed


def assert_contained(env, code: str, *expected: str) -> str:
    content, elapsed = tool_reply(env, code)
    assert content.startswith("python error: "), content
    for text in expected:
        assert text in content, content
    assert elapsed < TIMEOUT_S + GRACE_S, f"took {elapsed:.1f} s"
    assert len(content) < 4000  # what the model is shown stays small
    assert not sandboxed_processes(), "the attack left processes running"
    return content


def sandboxed_processes() -> list[int]:
    """Processes still running a sandboxed program (``python -I main.py``)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"\0-I\0main.py\0" in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture
def home_secret():
    """A secret in the real home directory, as keys are: the sandbox must not show it."""
    path = Path.home() / f".rewardlab-sandbox-test-{uuid.uuid4().hex}"
    path.write_text("home-secret-7f3a")
    yield path
    path.unlink(missing_ok=True)


def test_ordinary_code_runs_and_prints(env):
    content, _ = tool_reply(env, "import math\nprint(sum(i * i for i in range(1, 11)), math.comb(5, 2))")
    assert content == "python result:\n385 10\n"


def test_a_traceback_names_main_py_and_keeps_the_message_whole(env):
    content, _ = tool_reply(env, "x = 1\nraise ValueError('/tmp/x')")
    assert content.startswith("python error: exit code 1\n")
    assert 'File "main.py", line 2' in content and content.endswith("ValueError: /tmp/x")


@needs_bwrap
def test_the_tool_runs_inside_the_sandbox_as_an_unprivileged_user(env):
    from rewardlab.sandbox import _python_dirs

    content, _ = tool_reply(
        env, "import os\nprint(os.getcwd(), os.getuid() != 0, sorted(os.listdir('/tmp')))"
    )
    # Its private tmp holds the program, and the way to an interpreter installed under /tmp (a clone there).
    under_tmp = sorted({Path(d).parts[2] for d in _python_dirs() if d.startswith("/tmp/")})
    assert content == f"python result:\n/tmp True {sorted(['main.py', *under_tmp])}\n"


@needs_bwrap
@pytest.mark.parametrize("where", ["home", "tmp_path", "working tree"])
def test_reading_a_file_outside_is_contained(env, where, home_secret, tmp_path):
    outside = {
        "home": home_secret,
        "tmp_path": tmp_path / "secret.txt",
        "working tree": REPOSITORY / "pyproject.toml",
    }[where]
    if where == "tmp_path":
        outside.write_text("tmp-secret-7f3a")
    content = assert_contained(
        env, f"print(open({str(outside)!r}).read())", "exit code 1", "FileNotFoundError"
    )
    assert "secret-7f3a" not in content and "[project]" not in content


@needs_bwrap
def test_other_processes_cannot_be_seen(env):
    # This process's id means nothing in the sandbox's own process-id namespace.
    assert_contained(env, f"print(open('/proc/{os.getpid()}/environ').read())", "exit code 1")
    content, _ = tool_reply(env, "import os\nprint(len([p for p in os.listdir('/proc') if p.isdigit()]))")
    assert int(content.split("\n")[1]) <= 3  # the sandbox's init, the program (and a reader)


@needs_bwrap
@pytest.mark.parametrize("where", ["home", "tmp_path", "system"])
def test_writing_outside_is_contained(env, where, tmp_path):
    target = {
        "home": Path.home() / f".rewardlab-sandbox-pwned-{uuid.uuid4().hex}",
        "tmp_path": tmp_path / "pwned",
        "system": Path("/usr/rewardlab-sandbox-pwned"),
    }[where]
    assert_contained(env, f"open({str(target)!r}, 'w').write('pwned')", "exit code 1")
    assert not target.exists()


@needs_bwrap
def test_files_written_inside_stay_inside(env):
    content, _ = tool_reply(env, "open('/tmp/left-behind', 'w').write('x')\nprint('written')")
    assert content == "python result:\nwritten\n"
    assert not Path("/tmp/left-behind").exists()


@needs_bwrap
def test_no_network_not_even_the_local_machine(env):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    listener.setblocking(False)
    port = listener.getsockname()[1]
    try:
        assert_contained(
            env,
            "import socket\nsocket.create_connection(('1.1.1.1', 53), timeout=1)",
            "Network is unreachable",
        )
        assert_contained(
            env, f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)", "refused"
        )
        with pytest.raises(BlockingIOError):
            listener.accept()  # nothing reached the listener
    finally:
        listener.close()


@needs_bwrap
def test_an_abstract_unix_socket_is_out_of_reach(env):
    name = f"\0rewardlab-test-{uuid.uuid4().hex}"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(name)
    listener.listen()
    try:
        code = f"import socket\ns = socket.socket(socket.AF_UNIX)\ns.connect({name!r})"
        assert_contained(env, code, "exit code 1")
    finally:
        listener.close()


@needs_bwrap
def test_a_fork_bomb_meets_the_process_limit(env):
    assert_contained(env, "import os\nwhile True:\n    os.fork()", "process limit (32) reached")


@needs_bwrap
def test_a_fork_bomb_that_ignores_the_limit_is_killed_with_all_its_children(env):
    code = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
    assert_contained(env, code, f"timed out after {TIMEOUT_S:g} s")


@needs_bwrap
@pytest.mark.parametrize(
    "code",
    ["x = bytearray(4 * 1024 ** 3)", "chunks = []\nwhile True:\n    chunks.append(bytearray(10 ** 7))"],
    ids=["at once", "growing"],
)
def test_filling_memory_is_contained(env, code):
    assert_contained(env, code, "memory limit (256 MB) reached", "MemoryError")


@needs_bwrap
def test_spinning_the_cpu_is_stopped_at_the_timeout(env):
    assert_contained(env, "while True:\n    pass", f"timed out after {TIMEOUT_S:g} s")


@needs_bwrap
def test_a_huge_file_is_stopped_at_the_file_size_limit(env):
    assert_contained(env, "open('big', 'wb').write(b'x' * 50 * 2 ** 20)", "file size limit (1 MB) reached")


@needs_bwrap
def test_many_files_fill_only_the_private_tmp(env):
    code = "for i in range(100):\n    open(f'f{i}', 'wb').write(b'x' * (2 ** 20 - 1))"
    assert_contained(env, code, "the private /tmp is full (16 MB)")


@needs_bwrap
def test_printing_a_gigabyte_is_cut_at_the_output_limit(env):
    code = "import sys\nfor _ in range(1024):\n    sys.stdout.write('x' * 2 ** 20)"
    assert_contained(env, code, "output over the 1 MB limit")


class ScriptedTurns:
    """A sampler whose model writes the given turns in order (the same for every prompt)."""

    def __init__(self, *turns: str):
        self.turns = turns

    def generate(self, prompts, params):
        return [
            [Generation(self.turns[sum(m["role"] == "assistant" for m in p.messages)], finish_reason="stop")]
            for p in prompts
        ]


@needs_bwrap
def test_an_attack_mid_episode_is_a_failed_tool_call_and_the_episode_goes_on(env):
    bomb = '<tool name="python">import os\nwhile True:\n    os.fork()</tool>'
    rollouts = env.rollout(
        ScriptedTurns(bomb, "<answer>1</answer>"), env.examples("eval")[:2], SamplingParams()
    )
    for rollout in rollouts:
        assert rollout.state["failed_tool_calls"] == 1 and rollout.state["done"]
        assert rollout.completion[-1] == {"role": "assistant", "content": "<answer>1</answer>"}
        assert "process limit" in rollout.completion[1]["content"]


# -- without bubblewrap: the limits, and a warning once ---------------------------------------------------


@pytest.fixture
def fresh(monkeypatch):
    """No warning given yet and no sandbox tried yet in this process."""
    monkeypatch.setattr(sandbox, "_warned", set())
    monkeypatch.setattr(sandbox, "_probed", {})
    monkeypatch.delenv(sandbox.MODE_VARIABLE, raising=False)


def test_turned_off_the_limits_stay_and_one_warning_names_what_is_unprotected(fresh, monkeypatch, env):
    monkeypatch.setenv("REWARDLAB_SANDBOX", "off")
    with pytest.warns(RuntimeWarning) as caught:
        content, _ = tool_reply(env, "print('still runs')")
    assert content == "python result:\nstill runs\n"
    [warning] = [str(w.message) for w in caught]
    assert warning.startswith("REWARDLAB_SANDBOX=off: model-written code runs with resource limits only")
    for unprotected in ("read and write every file", "network", "any number of processes"):
        assert unprotected in warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once
        assert sandbox.run_python("print(1)").sandboxed is False
        content, elapsed = tool_reply(env, "while True:\n    pass")
        assert content.startswith(f"python error: timed out after {TIMEOUT_S:g} s")
        assert elapsed < TIMEOUT_S + GRACE_S
        assert "memory limit (256 MB) reached" in tool_reply(env, "x = bytearray(4 * 1024 ** 3)")[0]
        big = "open('big', 'wb').write(b'x' * 50 * 2 ** 20)"
        assert "file size limit (1 MB) reached" in tool_reply(env, big)[0]


def test_without_bwrap_auto_falls_back_with_the_reason(fresh, monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match=r"^bubblewrap \(bwrap\) is not installed: .* network"):
        result = sandbox.run_python("print(6 * 7)")
    assert (result.stdout, result.error, result.sandboxed) == ("42\n", None, False)
    with pytest.raises(RewardlabError, match=r"^REWARDLAB_SANDBOX=bwrap, but bubblewrap \(bwrap\) is not"):
        sandbox.run_python("print(1)", mode="bwrap")


def test_a_bwrap_that_cannot_sandbox_here_is_a_fallback_with_its_error(fresh, monkeypatch, tmp_path):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: setting up uid map: Permission denied' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: str(fake))
    match = r"cannot create a sandbox here \(bwrap: setting up uid map: Permission denied\)"
    with pytest.warns(RuntimeWarning, match=match):
        assert sandbox.run_python("print(1)").stdout == "1\n"


@pytest.mark.parametrize("mode", ["auto", "off"])
def test_lower_limits_already_in_force_are_kept_not_an_error(mode):
    """Under a hard file-size limit below the sandbox's own (a shell's ulimit), code still runs."""
    import resource
    import sys

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (512 * 1024, 512 * 1024))

    script = (
        "from rewardlab.sandbox import run_python\nr = run_python('print(6 * 7)')\nprint(r.error, r.stdout)"
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", script],
        capture_output=True,
        text=True,
        preexec_fn=lower,
        env={**os.environ, "REWARDLAB_SANDBOX": mode},
        timeout=60,
    )
    assert done.stdout == "None 42\n\n", done.stderr


def test_a_bad_mode_or_limit_is_one_line_naming_it(fresh, monkeypatch):
    monkeypatch.setenv("REWARDLAB_SANDBOX", "maybe")
    with pytest.raises(
        RewardlabError, match="^REWARDLAB_SANDBOX must be one of auto, bwrap, off, got 'maybe'$"
    ):
        sandbox.run_python("print(1)")
    with pytest.raises(RewardlabError, match="^sandbox processes must be at least 1, got 0$"):
        sandbox.Limits(processes=0)


# -- make install ----------------------------------------------------------------------------------------

MAKEFILE = REPOSITORY / "Makefile"


def fake_commands(directory: Path, uid: int, present: bool, apt: str | None, sudo: bool) -> Path:
    """A PATH of stand-ins: ``id``, ``bwrap`` if ``present``, ``apt-get`` that records its arguments and
    exits ``apt`` ("ok" or "fail"; None: no apt-get), and a password-less ``sudo`` if ``sudo``."""
    log = directory / "calls"
    scripts = {"id": f"echo {uid}"}
    if present:
        scripts["bwrap"] = "exit 0"
    if apt is not None:
        scripts["apt-get"] = f'echo "apt-get $*" >> {log}\nexit {0 if apt == "ok" else 1}'
    if sudo:
        scripts["sudo"] = f'[ "$1" = -n ] && shift\necho "sudo" >> {log}\n"$@"'
    for name, body in scripts.items():
        (directory / name).write_text(f"#!/bin/sh\n{body}\n")
        (directory / name).chmod(0o755)
    return log


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("uid", "present", "apt", "sudo", "calls", "says"),
    [
        (0, True, "ok", False, [], ""),
        (0, False, "ok", False, ["apt-get install -y -qq bubblewrap"], ""),
        (1000, False, "ok", True, ["sudo", "sudo", "apt-get install -y -qq bubblewrap"], ""),
        (1000, False, "ok", False, [], "run 'sudo apt-get install bubblewrap'"),
        (
            0,
            False,
            "fail",
            False,
            ["apt-get install -y -qq bubblewrap", "apt-get update -qq"],
            "could not be",
        ),
        (0, False, None, False, [], "no apt-get"),
    ],
    ids=["present", "root", "sudo", "no-sudo", "apt-fails", "no-apt"],
)
def test_make_installs_bubblewrap_where_it_can_and_never_fails(
    tmp_path, uid, present, apt, sudo, calls, says
):
    log = fake_commands(tmp_path, uid, present, apt, sudo)
    make = shutil.which("make")
    done = subprocess.run(
        [make, "-s", "-f", str(MAKEFILE), "bubblewrap"],
        capture_output=True,
        text=True,
        env={"PATH": str(tmp_path)},
        cwd=tmp_path,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert (log.read_text().splitlines() if log.exists() else []) == calls
    assert says in done.stdout and (says or not done.stdout)
