"""The tracker protocol, the registry of trackers, and the fan-out the trainers call."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from rewardlab.errors import RewardlabError, one_line

# name -> "module:class" of its tracker here; the names are those `report_to` accepts.
TRACKERS = {
    "tensorboard": "rewardlab.trackers.tensorboard:TensorBoardTracker",
    "wandb": "rewardlab.trackers.wandb:WandbTracker",
    "mlflow": "rewardlab.trackers.mlflow:MlflowTracker",
    "trackio": "rewardlab.trackers.trackio:TrackioTracker",
}
# name -> the extra that installs what it needs: pip install 'rewardlab[<extra>]'
EXTRAS = {name: name for name in TRACKERS}


@dataclass(frozen=True)
class RunInfo:
    """What a tracker is told of the run it reports: the run store's id, name, kind and directories."""

    id: str
    kind: str  # "train", "sft"
    dir: Path
    runs_dir: Path
    name: str | None = None
    resumed_after: int = 0  # the step a resumed run continues after (0: a new run)


class Tracker(Protocol):
    """One experiment tracker. ``start`` may raise (the run then fails with that line); ``log`` and
    ``finish`` may raise too, and the tracker is then dropped with a warning."""

    def libraries(self) -> list[str]:
        """The modules it imports (checked before the model loads)."""
        ...

    def start(self, run: RunInfo, config: Mapping[str, Any]) -> None: ...

    def log(self, step: int, metrics: Mapping[str, float]) -> None: ...

    def finish(self, status: str) -> None:
        """``status``: the run store's (completed, stopped, failed, interrupted)."""
        ...


def make_tracker(name: str) -> Tracker:
    module, cls = TRACKERS[name].split(":")
    return getattr(importlib.import_module(module), cls)()


def require_trackers(names: Iterable[str]) -> None:
    """One line naming the first tracker whose library cannot be imported, and the pip command for it."""
    for name in names:
        for library in make_tracker(name).libraries():
            try:
                importlib.import_module(library)
            except ImportError as error:
                raise RewardlabError(
                    f"report_to '{name}' needs the {library} package, which cannot be imported "
                    f"({one_line(str(error))}): pip install 'rewardlab[{EXTRAS[name]}]'"
                ) from None


class Trackers:
    """The run's trackers. Enter to start them (inside the run's failure handling), ``log`` after every
    ``store.log_metrics`` with the same dict, ``finish`` with the run's final status. A run that raises
    inside the ``with`` finishes them as failed (interrupted for Ctrl-C). With no names, all of it does
    nothing: on a process that does not write the run store, pass none."""

    def __init__(
        self,
        names: Iterable[str],
        run: Any,
        config: Mapping[str, Any],
        runs_dir: str | Path,
        resumed_after: int = 0,
    ):
        self.names = list(dict.fromkeys(names))
        self.info = RunInfo(run.id, run.kind, Path(run.dir), Path(runs_dir), run.name, resumed_after)
        self.config = config
        self.active: dict[str, Tracker] = {}

    def __enter__(self) -> Trackers:
        for name in self.names:
            tracker = make_tracker(name)
            try:
                tracker.start(self.info, self.config)
            except Exception as error:
                self.finish("failed")
                raise RewardlabError(f"report_to '{name}' could not start: {describe(error)}") from None
            self.active[name] = tracker
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if error is not None:
            self.finish("interrupted" if isinstance(error, KeyboardInterrupt) else "failed")
        return False

    def log(self, step: int, metrics: Mapping[str, Any]) -> None:
        if not self.active:
            return
        values = {name: float(value) for name, value in metrics.items() if value is not None}
        for name, tracker in list(self.active.items()):
            try:
                tracker.log(step, values)
            except Exception as error:
                del self.active[name]
                warnings.warn(
                    f"report_to '{name}' failed at step {step} ({describe(error)}): no longer reporting to "
                    "it; the run goes on, and its store keeps every metric",
                    RuntimeWarning,
                    stacklevel=2,
                )

    def finish(self, status: str) -> None:
        """Finish every tracker still active; one that raises is warned about, the others still finish."""
        active, self.active = self.active, {}
        for name, tracker in active.items():
            try:
                tracker.finish(status)
            except Exception as error:
                warnings.warn(
                    f"report_to '{name}' could not finish ({describe(error)})", RuntimeWarning, stacklevel=2
                )


def describe(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return one_line(f"{type(error).__name__}: {text}")
