"""``rewardlab dashboard``: a FastAPI app serving a JSON API over the run store and the pages that read it.

The API (under ``/api``) is :mod:`.queries` behind routes; the pages are one small single-page app in
``static/`` (``index.html``, ``app.js``, ``style.css``) with uPlot vendored at install time
(:mod:`.vendor`), so nothing is fetched from the internet while it runs. Everything is read from SQLite on
each request: a run that is training shows its newest steps, and the pages poll while a run is running.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from rewardlab.dashboard import queries
from rewardlab.dashboard.downsample import DEFAULT_POINTS
from rewardlab.errors import RewardlabError
from rewardlab.runs import RunStore
from rewardlab.sockets import bind

STATIC = Path(__file__).resolve().parent / "static"


def create_app(runs_dir: str | Path) -> FastAPI:
    """The dashboard over the run store at ``runs_dir``: ``/`` the pages, ``/api/...`` their data."""
    store = RunStore(runs_dir)
    app = FastAPI(title="rewardlab dashboard", docs_url=None, redoc_url=None, openapi_url="/api/openapi.json")

    @app.exception_handler(queries.RunNotFound)
    async def not_found(_request: Request, error: queries.RunNotFound) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=404)

    @app.exception_handler(RewardlabError)
    async def user_error(_request: Request, error: RewardlabError) -> JSONResponse:
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.get("/api/runs")
    def runs(kind: str | None = None, status: str | None = None, q: str | None = None) -> dict:
        return queries.list_runs(store, kind=kind, status=status, query=q)

    @app.get("/api/runs/{run_id}")
    def run(run_id: str) -> dict:
        return queries.run_detail(store, run_id)

    @app.get("/api/runs/{run_id}/curves")
    def curves(
        run_id: str,
        points: int = Query(DEFAULT_POINTS, ge=6, le=20000),
        only: Literal["main", "more"] | None = None,
    ) -> dict:
        return queries.curves(store, run_id, max_points=points, only=only)

    @app.get("/api/runs/{run_id}/rollouts")
    def rollouts(
        run_id: str,
        phase: str | None = None,
        step: int | None = None,
        page: int = Query(1, ge=1),
        per_page: int = Query(20, ge=1, le=200),
    ) -> dict:
        return queries.rollouts_page(store, run_id, phase=phase, step=step, page=page, per_page=per_page)

    @app.get("/api/runs/{run_id}/eval")
    def evaluation(run_id: str) -> dict:
        return queries.eval_view(store, run_id)

    @app.get("/api/runs/{run_id}/compare")
    def compared(run_id: str, samples: int = Query(8, ge=0, le=50)) -> dict:
        return queries.compare_view(store, run_id, samples=samples)

    @app.get("/api/compare")
    def compare(a: str, b: str, samples: int = Query(8, ge=0, le=50)) -> dict:
        return queries.compare_pair(store, a, b, samples=samples)

    @app.get("/api/runs/{run_id}/audit")
    def audit(run_id: str) -> dict:
        return queries.audit_view(store, run_id)

    @app.get("/api/{rest:path}")
    def unknown(rest: str) -> JSONResponse:
        return JSONResponse({"error": f"no API route /api/{rest}"}, status_code=404)

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    return app


def check_ready(runs_dir: str | Path) -> Path:
    """The run store's directory, once it and the vendored chart library are there (one line if not)."""
    root = Path(runs_dir).expanduser()
    if not root.is_dir():
        raise RewardlabError(f"no run store at {root}: the directory does not exist (--runs-dir names it)")
    from rewardlab.dashboard import vendor  # not at import: ``python -m rewardlab.dashboard.vendor`` runs it

    if not vendor.is_vendored():
        raise RewardlabError(
            "the dashboard's chart library is not installed: run "
            f"`{sys.executable} -m rewardlab.dashboard.vendor` (make install does)"
        )
    return root


def serve_dashboard(config, say: Callable[[str], None] = print) -> None:
    """``rewardlab dashboard`` (a :class:`~rewardlab.config.DashboardConfig`): checks, the port bound, then
    uvicorn until it is stopped."""
    import uvicorn

    root = check_ready(config.runs_dir)
    sock = bind(config.host, config.port)
    host = f"[{config.host}]" if ":" in config.host else config.host
    say(f"dashboard of {root} at http://{host}:{sock.getsockname()[1]}/ (Ctrl-C stops it)")
    server = uvicorn.Server(uvicorn.Config(create_app(root), log_level="warning"))
    server.run(sockets=[sock])
