"""MLflow: one MLflow run per rewardlab run, in experiment ``rewardlab`` (``MLFLOW_EXPERIMENT_NAME`` to
change it), tagged ``rewardlab.run_id`` so that a resumed run continues it.

The tracking store is ``MLFLOW_TRACKING_URI`` when set (a server, a database), else a SQLite database in
the runs directory (``<runs_dir>/mlflow/mlflow.db``, artifacts beside it): MLflow's file store is in
maintenance mode and refused by default since MLflow 3.7. The run's config is logged as parameters
(flattened, ``optimizer.learning_rate``) and whole as ``config.json``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rewardlab.trackers.base import RunInfo

STATUSES = {"completed": "FINISHED", "stopped": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
MAX_PARAM_LENGTH = 500  # what every MLflow server accepts (newer ones take 6000)


def local_store(runs_dir: Path) -> tuple[str, str]:
    """The tracking URI and artifact location of the store kept in the runs directory."""
    root = (runs_dir / "mlflow").resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "artifacts").as_uri()


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = str(value)[:MAX_PARAM_LENGTH]
    return out


def metric_name(name: str) -> str:
    """MLflow takes letters, digits, ``_ - . / `` and spaces in a metric name (slashes kept)."""
    return re.sub(r"[^\w\-. /]", "_", name)


class MlflowTracker:
    def libraries(self) -> list[str]:
        # the local store is a SQLite database: mlflow-skinny needs SQLAlchemy and alembic for it
        scheme = (os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:").split(":", 1)[0].split("+", 1)[0]
        database = scheme in ("sqlite", "postgresql", "mysql", "mssql")
        return ["mlflow", *(["sqlalchemy", "alembic"] if database else [])]

    def start(self, run: RunInfo, config: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        uri, artifacts = os.environ.get("MLFLOW_TRACKING_URI"), None
        if not uri:
            uri, artifacts = local_store(run.runs_dir)
        self.client = MlflowClient(tracking_uri=uri)
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or "rewardlab"
        experiment = self.client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id
            if experiment is not None
            else self.client.create_experiment(name, artifact_location=artifacts)
        )
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`rewardlab.run_id` = '{run.id}'", max_results=1
        )
        if found:  # a resumed run
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"rewardlab.run_id": run.id, "rewardlab.kind": run.kind}
        if run.name:
            tags["rewardlab.name"] = run.name
        self.run_id = self.client.create_run(experiment_id, run_name=run.id, tags=tags).info.run_id
        params = [Param(key, value) for key, value in flatten(config).items()]
        self.client.log_batch(self.run_id, params=params)
        self.client.log_dict(self.run_id, dict(config), "config.json")

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_name(name), value, now, step) for name, value in metrics.items()]
        self.client.log_batch(self.run_id, metrics=batch)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, STATUSES.get(status, "FAILED"))
