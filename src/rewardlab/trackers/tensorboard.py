"""TensorBoard: event files under ``<run_dir>/tensorboard/``; ``tensorboard --logdir runs`` shows every run.

Metric names keep their slashes, so TensorBoard groups ``reward/*``, ``clip/*``, ``time/*`` into sections.
A resumed run purges the events after the step it resumes from, as the run store drops those metrics.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rewardlab.trackers.base import RunInfo


class TensorBoardTracker:
    def libraries(self) -> list[str]:
        return ["tensorboard"]

    def start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(
            log_dir=str(run.dir / "tensorboard"),
            purge_step=run.resumed_after + 1 if run.resumed_after else None,
        )
        if not run.resumed_after:
            text = json.dumps(dict(config), indent=2, default=str)
            self.writer.add_text("config", "    " + text.replace("\n", "\n    "))  # markdown: a code block

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        for name, value in metrics.items():
            self.writer.add_scalar(name, value, step)
        self.writer.flush()

    def finish(self, status: str) -> None:
        self.writer.add_text("status", status)
        self.writer.close()
