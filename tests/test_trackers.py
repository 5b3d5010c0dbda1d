"""Experiment trackers (report_to): each one shows what the run store holds, read back from what it wrote."""

import glob
import importlib.util
import math
import os
import shutil
import struct
import sys
import tempfile
from pathlib import Path
from typing import get_args

import numpy as np
import pytest

from conftest import user_error
from rewardlab.config import SFTConfig, TrainConfig, deep_merge, validated
from rewardlab.config.sections import TrackerName
from rewardlab.envs import SingleTurnEnv
from rewardlab.rubrics import Rubric
from rewardlab.runs import RunStore
from rewardlab.trackers import TRACKERS
from rewardlab.trackers.tensorboard import TensorBoardTracker
from rewardlab.train import trainer
from rewardlab.train.sft import run_sft
from rewardlab.train.trainer import train
from test_train import digit_fraction

# trackio reads TRACKIO_DIR once, when it is imported: a private directory, set before any test imports it.
TRACKIO_DIR = Path(tempfile.mkdtemp(prefix="rewardlab-trackio-"))
os.environ["TRACKIO_DIR"] = str(TRACKIO_DIR)


needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="tensorboard not installed: pip install 'rewardlab[tensorboard]'",
)


@pytest.fixture(scope="module", autouse=True)
def _remove_trackio_dir():
    yield
    shutil.rmtree(TRACKIO_DIR, ignore_errors=True)


def small_env() -> SingleTurnEnv:
    rows = [{"prompt": f"say something {i}", "answer": ""} for i in range(8)]
    return SingleTurnEnv(dataset=rows, eval_dataset=rows[:2], rubric=Rubric([digit_fraction]))


def short_config(tmp_path, **overrides) -> TrainConfig:
    values = {
        "runs_dir": str(tmp_path / "runs"),
        "max_steps": 2,
        "prompts_per_step": 2,
        "group_size": 2,
        "sampling": {"max_new_tokens": 4},
        "log_rollouts_per_step": 1,
        "checkpoint_every": 0,
        "lora": {"rank": 4, "alpha": 8},
        # an absolute entropy floor no model reaches: entropy_collapse fires at the first step, so its
        # alerts/ metric travels too
        "health": {"entropy_min": 100.0},
        "seed": 0,
    }
    return validated(TrainConfig, deep_merge(values, overrides))


def assert_same_series(store_series: dict, tracker_series: dict, float32: bool = False) -> None:
    """Every metric the store holds, at the same steps with the same values, and nothing else."""
    assert sorted(tracker_series) == sorted(store_series)
    for name, points in store_series.items():
        steps = [step for step, _ in points]
        values = [np.float32(value) if float32 else value for _, value in points]
        got_steps = [step for step, _ in tracker_series[name]]
        got_values = [value for _, value in tracker_series[name]]
        assert got_steps == steps, name
        for want, got in zip(values, got_values, strict=True):
            assert (math.isnan(want) and math.isnan(got)) or want == got, (name, want, got)


def tensorboard_series(run_dir: Path) -> tuple[dict, list[str]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    scalars = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}
    return scalars, events.Tags()["tensors"]


# -- the config ----------------------------------------------------------------------------------------


def test_report_to_names_the_trackers_there_are():
    assert set(get_args(TrackerName)) == set(TRACKERS)
    assert validated(TrainConfig, {}).report_to == []
    assert validated(TrainConfig, {"report_to": "tensorboard, wandb,tensorboard"}).report_to == [
        "tensorboard",
        "wandb",
    ]
    message = user_error(validated, SFTConfig, {"report_to": ["tensorbord"]})
    assert "report_to" in message and "'tensorboard'" in message


# -- tensorboard: in CI (the dev extra installs it) ------------------------------------------------------


@needs_tensorboard
def test_tensorboard_shows_what_the_run_store_has(tmp_path):
    store = RunStore(tmp_path / "runs")
    result = train(short_config(tmp_path, report_to=["tensorboard"]), store, env=small_env())
    stored = store.metrics(result.run_id)
    assert "alerts/entropy_collapse" in stored and "reward/digit_fraction" in stored  # slashes kept
    scalars, texts = tensorboard_series(result.run_dir)
    assert_same_series(stored, scalars, float32=True)  # TensorBoard keeps scalars as float32
    assert {"config/text_summary", "status/text_summary"} <= set(texts)
    assert store.get(result.run_id).status == "completed"


@needs_tensorboard
def test_a_resumed_run_continues_its_events_without_the_abandoned_steps(tmp_path):
    store = RunStore(tmp_path / "runs")
    common = {"max_steps": 4, "checkpoint_every": 2, "report_to": ["tensorboard"]}
    interrupted = train(short_config(tmp_path, **common), store, env=small_env(), stop_after_step=3)
    resumed = train(short_config(tmp_path, **common, resume=interrupted.run_id), store, env=small_env())
    stored = store.metrics(resumed.run_id)
    assert [step for step, _ in stored["time/step_seconds"]] == [1, 2, 3, 4]  # step 3 ran twice
    scalars, _ = tensorboard_series(resumed.run_dir)
    assert_same_series(stored, scalars, float32=True)  # the abandoned step 3's timing is gone


@needs_tensorboard
def test_sft_reports_too(tmp_path):
    config = validated(
        SFTConfig,
        {
            "runs_dir": str(tmp_path / "runs"),
            "max_steps": 3,
            "batch_size": 4,
            "log_every": 1,
            "report_to": ["tensorboard"],
        },
    )
    store = RunStore(tmp_path / "runs")
    result = run_sft(config, store)
    stored = store.metrics(result.run_id)
    assert [step for step, _ in stored["loss"]] == [1, 2, 3]
    scalars, _ = tensorboard_series(store.get(result.run_id).dir)
    assert_same_series(stored, scalars, float32=True)


def test_a_missing_library_is_one_line_before_the_model_loads(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", None)  # `import wandb` raises ImportError

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the missing tracker was said")

    monkeypatch.setattr(trainer, "load_model", no_loading)
    store = RunStore(tmp_path / "runs")
    message = user_error(train, short_config(tmp_path, report_to=["wandb"]), store, None, small_env())
    assert "report_to 'wandb'" in message and "pip install 'rewardlab[wandb]'" in message
    assert store.list() == []


@needs_tensorboard
def test_a_tracker_that_raises_while_logging_is_dropped_and_the_run_goes_on(tmp_path, monkeypatch):
    log = TensorBoardTracker.log

    def log_until_step_2(self, step, metrics):
        if step >= 2:
            raise ConnectionError("the tracker's server went away")
        log(self, step, metrics)

    monkeypatch.setattr(TensorBoardTracker, "log", log_until_step_2)
    store = RunStore(tmp_path / "runs")
    with pytest.warns(RuntimeWarning, match="report_to 'tensorboard' failed at step 2") as caught:
        result = train(short_config(tmp_path, max_steps=3, report_to=["tensorboard"]), store, env=small_env())
    assert len([w for w in caught if "report_to" in str(w.message)]) == 1  # once, then dropped
    assert result.steps == 3 and store.get(result.run_id).status == "completed"
    scalars, _ = tensorboard_series(result.run_dir)
    assert {step for points in scalars.values() for step, _ in points} == {1}
    assert len(store.metrics(result.run_id)["loss"]) == 3


@needs_tensorboard
def test_a_tracker_that_cannot_start_fails_the_run_with_one_line(tmp_path, monkeypatch):

    def refuse(self, run, config):
        raise PermissionError(f"cannot write {run.dir / 'tensorboard'}")

    monkeypatch.setattr(TensorBoardTracker, "start", refuse)
    store = RunStore(tmp_path / "runs")
    message = user_error(train, short_config(tmp_path, report_to=["tensorboard"]), store, None, small_env())
    assert message.startswith("report_to 'tensorboard' could not start: PermissionError: cannot write")
    (run,) = store.list()
    assert run.status == "failed"


# -- the others: tested where their library is installed -----------------------------------------------


def wandb_records(path: Path):
    """The records of a W&B transaction log (``run-<id>.wandb``): LevelDB's log format (32 KiB blocks of
    checksummed chunks) after a 7-byte W&B header, each record a ``wandb_internal_pb2.Record``."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = 32768 - position % 32768
        if left < 7:  # a block's tail too short for a chunk header is zeros
            position += left
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if kind == 0:
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_logs_what_the_store_has(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="wandb not installed: pip install 'rewardlab[wandb]'")
    for variable, value in {
        "WANDB_MODE": "offline",
        "WANDB_SILENT": "true",
        "WANDB_CONFIG_DIR": str(tmp_path / "wandb-config"),
        "WANDB_CACHE_DIR": str(tmp_path / "wandb-cache"),
        "WANDB_DATA_DIR": str(tmp_path / "wandb-data"),
    }.items():
        monkeypatch.setenv(variable, value)
    for variable in ("WANDB_PROJECT", "WANDB_DIR", "WANDB_NAME", "WANDB_RUN_ID"):
        monkeypatch.delenv(variable, raising=False)
    store = RunStore(tmp_path / "runs")
    result = train(short_config(tmp_path, report_to=["wandb"]), store, env=small_env())
    (log,) = glob.glob(str(result.run_dir / "wandb" / "offline-run-*" / f"run-{result.run_id}.wandb"))
    history: dict[str, list] = {}
    exit_code = project = None
    for record in wandb_records(Path(log)):
        kind = record.WhichOneof("record_type")
        if kind == "history":
            step = record.history.step.num
            for item in record.history.item:
                name = item.key or "/".join(item.nested_key)
                if not name.startswith("_"):  # W&B's own (_step, _runtime, _timestamp)
                    history.setdefault(name, []).append((step, float(item.value_json)))
        elif kind == "run":
            project = record.run.project
        elif kind == "exit":
            exit_code = record.exit.exit_code
    assert project == "rewardlab" and exit_code == 0
    assert_same_series(store.metrics(result.run_id), history)


def test_mlflow_logs_what_the_store_has(tmp_path, monkeypatch):
    pytest.importorskip("mlflow", reason="mlflow not installed: pip install 'rewardlab[mlflow]'")
    pytest.importorskip("sqlalchemy", reason="mlflow's local store needs SQLAlchemy: rewardlab[mlflow]")
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    store = RunStore(tmp_path / "runs")
    result = train(short_config(tmp_path, report_to=["mlflow"]), store, env=small_env())
    client = MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'runs' / 'mlflow' / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("rewardlab")
    (found,) = client.search_runs(
        [experiment.experiment_id], filter_string=f"tags.`rewardlab.run_id` = '{result.run_id}'"
    )
    assert found.info.status == "FINISHED" and found.info.run_name == result.run_id
    assert found.data.params["lora.rank"] == "4" and found.data.params["report_to"] == "['mlflow']"
    logged = {}
    for name in found.data.metrics:
        history = sorted(client.get_metric_history(found.info.run_id, name), key=lambda m: m.step)
        logged[name] = [(metric.step, metric.value) for metric in history]
    assert_same_series(store.metrics(result.run_id), logged)


def test_trackio_logs_what_the_store_has(tmp_path):
    trackio = pytest.importorskip("trackio", reason="trackio not installed: pip install 'rewardlab[trackio]'")
    from trackio.sqlite_storage import SQLiteStorage

    if Path(trackio.utils.TRACKIO_DIR) != TRACKIO_DIR:
        pytest.skip("trackio was imported before this module could point TRACKIO_DIR at a private directory")
    store = RunStore(tmp_path / "runs")
    result = train(short_config(tmp_path, report_to=["trackio"]), store, env=small_env())
    rows = SQLiteStorage.get_logs("rewardlab", result.run_id)
    logged: dict[str, list] = {}
    for row in rows:
        for name, value in row.items():
            if name not in ("step", "timestamp") and value is not None:
                logged.setdefault(name, []).append((row["step"], float(value)))
    assert_same_series(store.metrics(result.run_id), logged)


def test_no_trackers_costs_nothing(tmp_path, monkeypatch):
    """report_to = [] (the default): no tracker is made, nothing is written beside the run."""
    monkeypatch.setattr("rewardlab.trackers.base.make_tracker", lambda name: pytest.fail(name))
    store = RunStore(tmp_path / "runs")
    result = train(short_config(tmp_path, max_steps=1), store, env=small_env())
    assert not (result.run_dir / "tensorboard").exists()
