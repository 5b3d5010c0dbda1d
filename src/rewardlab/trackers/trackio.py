"""trackio: local by default, in trackio's own store (``TRACKIO_DIR``, else ``~/.cache/huggingface/trackio``),
project ``rewardlab``, one trackio run per rewardlab run, named by its id (a resumed run continues it);
``trackio show --project rewardlab`` opens the dashboard. trackio's ``TRACKIO_SPACE_ID`` sends it to a Space.
Only the run's metrics are logged (trackio's own CPU and GPU sampling is off).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rewardlab.trackers.base import RunInfo


class TrackioTracker:
    def libraries(self) -> list[str]:
        return ["trackio"]

    def start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        import trackio

        self.run = trackio.init(
            project="rewardlab",
            name=run.id,
            config=dict(config),
            resume="allow",
            embed=False,
            auto_log_cpu=False,
            auto_log_gpu=False,
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        self.run.log(dict(metrics), step=step)

    def finish(self, status: str) -> None:
        self.run.finish()
