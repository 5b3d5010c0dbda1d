"""Weights & Biases: one W&B run per rewardlab run, its id and name the run id (a resumed run continues it).

W&B's own environment variables win over these defaults: ``WANDB_MODE`` (``offline`` writes under the
run directory, for ``wandb sync`` later), ``WANDB_PROJECT`` (default ``rewardlab``), ``WANDB_ENTITY``,
``WANDB_DIR`` (default: the run directory), ``WANDB_NAME``, ``WANDB_RUN_GROUP``, ``WANDB_TAGS``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from rewardlab.trackers.base import RunInfo

EXIT_CODES = {"completed": 0, "stopped": 0, "failed": 1, "interrupted": 255}


class WandbTracker:
    def libraries(self) -> list[str]:
        return ["wandb"]

    def start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT") or "rewardlab",
            name=os.environ.get("WANDB_NAME") or run.id,
            id=os.environ.get("WANDB_RUN_ID") or run.id,
            dir=os.environ.get("WANDB_DIR") or str(run.dir),
            job_type=run.kind,
            notes=run.name,
            config=dict(config),
            resume="allow",
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=EXIT_CODES.get(status, 1))
