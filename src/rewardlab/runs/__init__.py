"""Run bookkeeping: one directory and one set of SQLite rows per sft/train/eval/demo/compare run."""

from rewardlab.runs.manifest import collect_manifest
from rewardlab.runs.store import Run, RunStore

__all__ = ["Run", "RunStore", "collect_manifest"]
