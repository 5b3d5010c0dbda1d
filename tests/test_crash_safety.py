"""Crashes and full disks: a training process killed anywhere resumes to the run it would have been, and a
checkpoint that cannot be written leaves the last good one usable."""

import errno
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

import rewardlab
from conftest import record_fsyncs
from rewardlab.cli import app
from rewardlab.errors import RewardlabError
from rewardlab.runs import RunStore
from rewardlab.train import checkpoint as ckpt
from rewardlab.train.trainer import train
from test_train import comparable, easy_config, easy_env

pytestmark = pytest.mark.slow  # scheduled first: see conftest.py

ENV_FILE = """
from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric


def digit_fraction(completion: str) -> float:
    return sum(c.isdigit() for c in completion) / max(len(completion), 1)


def load_environment():
    rows = [{"prompt": f"say something {i}", "answer": ""} for i in range(32)]
    return SingleTurnEnv(dataset=rows, eval_dataset=rows[:8], rubric=Rubric([digit_fraction]))
"""

SETTINGS = {
    "max_steps": 4,
    "checkpoint_every": 1,
    "prompts_per_step": 4,
    "group_size": 4,
    "sampling.max_new_tokens": 6,
    "optimizer.learning_rate": 1e-2,
    "lora.rank": 8,
    "lora.alpha": 16,
    "log_rollouts_per_step": 2,
    "seed": 0,
}
# The resumed run against the uninterrupted one: metrics as in the clean-stop test, weights to 1e-6.
METRIC_TOLERANCE = {"rel": 1e-5, "abs": 1e-7}
WEIGHT_TOLERANCE = 1e-6
TIMEOUT_S = 300


def child_env(**extra) -> dict:
    source = str(Path(next(iter(rewardlab.__path__))).parent)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "REWARDLAB_QUIET": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (source, os.environ.get("PYTHONPATH")) if p)
    return env


def train_command(runs: Path, env_file: Path, resume: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "rewardlab.cli", "train", "--runs-dir", str(runs)]
    if resume:
        return [*command, "--resume", resume]
    sets = [item for key, value in SETTINGS.items() for item in ("--set", f"{key}={value}")]
    return [*command, "--model", "tiny", "--env", str(env_file), *sets]


def new_run(store: RunStore, before: set[str]) -> str:
    (run_id,) = {run.id for run in store.list()} - before
    return run_id


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """The environment file, the run store, and one uninterrupted run to compare against."""
    root = tmp_path_factory.mktemp("crash")
    env_file = root / "crash_env.py"
    env_file.write_text(ENV_FILE)
    runs = root / "runs"
    store = RunStore(runs)
    # The same command in this process (the killed ones need processes of their own; this one does not, and
    # is spared the imports a new process pays), on the one thread the children get.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        done = CliRunner().invoke(app, train_command(runs, env_file)[3:])
    finally:
        torch.set_num_threads(threads)
    assert done.exit_code == 0, done.output[-3000:]
    (whole,) = store.list()
    return env_file, runs, store, whole.id


def stopped(pid: int) -> bool:
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[0] == "T"


def kill_at(command: list[str], point: str, step: int) -> str:
    """Run ``command`` until it pauses at ``point`` in ``step``, then SIGKILL it; returns its stderr."""
    process = subprocess.Popen(
        command, env=child_env(REWARDLAB_PAUSE_AT=f"{point}@{step}"), stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + TIMEOUT_S
    seen = ""
    try:
        while "rewardlab: paused at" not in seen:
            assert time.monotonic() < deadline, "the trainer never reached the pause point"
            ready, _, _ = select.select([process.stderr], [], [], 1.0)
            if ready:
                line = process.stderr.readline()
                assert line, f"the trainer ended before pausing:\n{seen[-3000:]}"
                seen += line
        while not stopped(process.pid):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
    assert process.returncode == -signal.SIGKILL
    return seen


def adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "final" / "adapter_model.safetensors")


# Where each process of one run is killed, and the checkpoint the kill leaves as the latest: while
# sampling step 2, in step 3's update (after a resume), and halfway through writing step 3's checkpoint
# (after another resume). Each kill is resumed; the last resume runs to the end.
KILLS = [("sampling", 2, 1), ("update", 3, 2), ("checkpoint", 3, 2)]


def test_a_run_killed_anywhere_resumes_to_the_uninterrupted_run(setup):
    env_file, runs, store, whole = setup
    before = {run.id for run in store.list()}
    command = train_command(runs, env_file)
    run_id = None
    for point, step, checkpoint_kept in KILLS:
        said = kill_at(command, point, step)
        assert f"paused at {point} in step {step}" in said
        run_id = run_id or new_run(store, before)
        run = store.get(run_id)
        assert run.status == "running", point  # a killed process records nothing more
        assert ckpt.latest(run.dir) == ckpt.path(run.dir, checkpoint_kept), point
        leftovers = [p.name for p in (run.dir / "checkpoints").iterdir() if p.name.startswith(".")]
        assert bool(leftovers) == (point == "checkpoint"), point  # only a kill mid-write leaves a temporary
        command = train_command(runs, env_file, resume=run_id)

    resumed = subprocess.run(command, env=child_env(), capture_output=True, text=True, timeout=TIMEOUT_S)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert store.get(run_id).status == "completed"
    assert not [p for p in (run.dir / "checkpoints").iterdir() if p.name.startswith(".")]

    expected = comparable(store.metric_table(whole))
    got = comparable(store.metric_table(run_id))
    assert [row["step"] for row in got] == [1, 2, 3, 4]
    for want, have in zip(expected, got, strict=True):
        assert have == pytest.approx(want, **METRIC_TOLERANCE), have["step"]
    assert len(store.rollouts(run_id, phase="train")) == len(store.rollouts(whole, phase="train"))
    want_weights, have_weights = adapter(store.get(whole).dir), adapter(run.dir)
    assert want_weights.keys() == have_weights.keys()
    assert any(weight.abs().max() > 0 for name, weight in want_weights.items() if "lora_B" in name)
    for name, weight in want_weights.items():
        assert (have_weights[name] - weight).abs().max() <= WEIGHT_TOLERANCE, name


def test_a_full_disk_during_a_checkpoint_is_one_line_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    common = {"max_steps": 4, "checkpoint_every": 1}
    whole = train(easy_config(tmp_path, **common), store, env=easy_env())
    real_save_weights = ckpt.save_weights

    def disk_full_at_step_3(target, model, tokenizer):
        if target.name.startswith(".step-000003"):
            (target / "adapter_model.safetensors").write_bytes(b"\0" * 4096)  # a part of it got written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save_weights(target, model, tokenizer)

    monkeypatch.setattr(ckpt, "save_weights", disk_full_at_step_3)
    with pytest.raises(RewardlabError) as caught:
        train(easy_config(tmp_path, **common), store, env=easy_env())
    message = str(caught.value)
    run = store.list()[0]
    assert "\n" not in message
    assert message == (
        f"checkpoint step-000003 of run {run.id} was not written: no space left on device "
        f"(in {run.dir / 'checkpoints'}); the last good checkpoint, step-000002, is kept"
    )
    assert run.status == "failed" and "no space left on device" in run.summary["error"]
    assert ckpt.latest(run.dir) == ckpt.path(run.dir, 2)
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir()) == ["step-000001", "step-000002"]

    monkeypatch.undo()  # space freed: the run resumes from step 2 and ends where it would have
    resumed = train(easy_config(tmp_path, **common, resume=run.id), store, env=easy_env())
    assert resumed.run_id == run.id and store.get(run.id).status == "completed"
    for want, have in zip(
        comparable(store.metric_table(whole.run_id)), comparable(store.metric_table(run.id)), strict=True
    ):
        assert have == pytest.approx(want, **METRIC_TOLERANCE), have["step"]


def test_a_failed_write_is_named_by_what_the_file_system_said():
    assert ckpt.io_failure(OSError(errno.ENOSPC, "No space left on device")) == "no space left on device"
    safetensors_style = RuntimeError(
        "Error while serializing: I/O error: No space left on device (os error 28)"
    )
    assert ckpt.io_failure(safetensors_style) == "no space left on device"
    assert ckpt.io_failure(OSError(errno.EDQUOT, "quota")) == os.strerror(errno.EDQUOT).lower()
    assert ckpt.io_failure(RuntimeError("a bug")) is None  # not the disk's fault: the traceback stays


def test_a_full_disk_under_torch_save_is_found_behind_its_runtime_error():
    """torch.save into a file on a full disk raises this RuntimeError while handling the file's OSError (as
    seen on a full tmpfs with torch 2.13)."""
    error = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
    error.__context__ = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert ckpt.io_failure(error) == "no space left on device"


def test_a_checkpoint_is_written_whole_or_not_at_all(tmp_path, monkeypatch):
    store = RunStore(tmp_path / "runs")
    train(easy_config(tmp_path, max_steps=2, checkpoint_every=1), store, env=easy_env())
    run = store.list()[0]
    before = {
        p.name: (p / "adapter_model.safetensors").read_bytes() for p in (run.dir / "checkpoints").iterdir()
    }

    from rewardlab.models import load_model
    from rewardlab.models.loading import LoraSettings
    from rewardlab.train.common import make_optimizer, make_scheduler

    model, tokenizer = load_model("tiny", lora=LoraSettings(8, 16, 0.0, "all-linear"), trainable=True)
    optimizer = make_optimizer(model, 1e-2, 0.0, (0.9, 0.99))
    scheduler = make_scheduler(optimizer, "constant", 0, 4)

    real_save_weights = ckpt.save_weights

    def weights_then_crash(target, *args):
        real_save_weights(target, *args)
        raise RuntimeError("the process died here")

    monkeypatch.setattr(ckpt, "save_weights", weights_then_crash)
    with pytest.raises(RuntimeError, match="died here"):
        ckpt.save(run.dir, 3, model, tokenizer, optimizer, scheduler, {})
    after = {
        p.name: (p / "adapter_model.safetensors").read_bytes() for p in (run.dir / "checkpoints").iterdir()
    }
    assert after == before  # no step-000003, nothing older pruned, nothing left behind
    assert ckpt.latest(run.dir) == ckpt.path(run.dir, 2)

    monkeypatch.undo()
    fsynced = record_fsyncs(monkeypatch)
    written = ckpt.save(run.dir, 3, model, tokenizer, optimizer, scheduler, {})
    assert written == ckpt.path(run.dir, 3) and (written / "trainer_state.pt").exists()
    assert sorted(p.name for p in (run.dir / "checkpoints").iterdir()) == ["step-000002", "step-000003"]
    assert any(name.endswith("trainer_state.pt") for name in fsynced)  # on disk before the rename
    assert any(name.endswith("adapter_model.safetensors") for name in fsynced)
    assert str(run.dir / "checkpoints") in fsynced  # and the rename itself
