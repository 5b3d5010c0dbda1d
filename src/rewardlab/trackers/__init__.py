"""Experiment trackers: every metric a run logs to its store, also reported to TensorBoard, W&B, MLflow
or trackio (``report_to``). Each library is optional, installed by its extra (``rewardlab[wandb]``).

:func:`require_trackers` says before the model loads that a library is missing; :class:`Trackers` starts the
chosen trackers once the run exists (entered as a context manager, so a failure finishes them as failed),
fans out each step's metrics (the dict the run store got) and finishes them. A tracker that raises while
logging is dropped with one warning: it never stops a training run.
"""

from rewardlab.trackers.base import (
    EXTRAS,
    TRACKERS,
    RunInfo,
    Tracker,
    Trackers,
    make_tracker,
    require_trackers,
)

__all__ = ["EXTRAS", "TRACKERS", "RunInfo", "Tracker", "Trackers", "make_tracker", "require_trackers"]
