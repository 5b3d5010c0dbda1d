"""The run store: one directory per run plus one SQLite database for everything queryable.

Every command (sft, train, eval, demo, compare) records its config, provenance manifest, metrics,
rollouts and final summary here, so ``rewardlab runs`` can list, inspect and compare runs without
parsing log files. The database lives at ``<root>/rewardlab.db`` in WAL mode with a 30 s busy timeout,
so a training process and an eval process can write at the same time, and a CLI can read while
they do. What SQLite answers "database is locked" at once instead of waiting (switching a new
database to WAL while another process creates it, say) is retried for as long. Large artefacts
(checkpoints, plots) go into ``<root>/<run_id>/``, written by the callers.
"""

from __future__ import annotations

import builtins
import dataclasses
import datetime as _dt
import difflib
import enum
import json
import math
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any

from rewardlab import atomic
from rewardlab.errors import RewardlabError
from rewardlab.types import ScoredRollout

SCHEMA_VERSION = 1
DB_NAME = "rewardlab.db"
BUSY_TIMEOUT_S = 30.0  # how long a process waits for another's write lock, in SQLite or in our retries

# Run ids and kinds become directory names: keep them to one portable path component.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
# The kinds of run the commands record; an id starts with its kind (``train-20261122-093012-a1b2``).
RUN_KINDS = ("sft", "train", "eval", "compare", "demo")


def looks_like_run_id(text: str) -> bool:
    """Whether ``text`` reads as a run id (``train-...``), so that not finding it is the answer to give."""
    kind, dash, rest = text.partition("-")
    return bool(dash and rest) and kind in RUN_KINDS and "/" not in text and os.sep not in text


def closest_run_id(ref: str, ids: Sequence[str]) -> str | None:
    """The id most like ``ref``: among runs of its kind when it names one (any of them is a better guess
    than none), else among all runs when one is close."""
    kind = ref.partition("-")[0]
    same_kind = [run_id for run_id in ids if run_id.partition("-")[0] == kind] if "-" in ref else []
    found = difflib.get_close_matches(ref, same_kind or ids, n=1, cutoff=0.0 if same_kind else 0.6)
    return found[0] if found else None


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE IF NOT EXISTS runs (
        id TEXT PRIMARY KEY,
        kind TEXT NOT NULL,
        name TEXT,
        parent TEXT,
        status TEXT NOT NULL,
        created_at REAL NOT NULL,
        finished_at REAL,
        config TEXT NOT NULL DEFAULT '{}',
        manifest TEXT NOT NULL DEFAULT '{}',
        summary TEXT NOT NULL DEFAULT '{}'
    )""",
    "CREATE INDEX IF NOT EXISTS runs_kind_created ON runs (kind, created_at)",
    "CREATE INDEX IF NOT EXISTS runs_created ON runs (created_at)",
    """CREATE TABLE IF NOT EXISTS metrics (
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        name TEXT NOT NULL,
        value REAL,
        PRIMARY KEY (run_id, name, step)
    )""",
    """CREATE TABLE IF NOT EXISTS rollouts (
        id INTEGER PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
        step INTEGER NOT NULL,
        phase TEXT NOT NULL,
        example_id TEXT,
        sample_index INTEGER,
        prompt TEXT,
        completion TEXT,
        answer TEXT,
        reward REAL,
        components TEXT,
        errors TEXT,
        metrics TEXT, -- {"tokens": each model turn's tokens with log-prob and entropy}, when known
        truncated INTEGER,
        num_turns INTEGER,
        num_completion_tokens INTEGER,
        latency_s REAL,
        info TEXT,
        error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS rollouts_run_phase_step ON rollouts (run_id, phase, step)",
)

_ROLLOUT_COLUMNS = (
    "example_id",
    "sample_index",
    "prompt",
    "completion",
    "answer",
    "reward",
    "components",
    "errors",
    "truncated",
    "num_turns",
    "num_completion_tokens",
    "latency_s",
    "info",
    "error",
    "metrics",
)
_ROLLOUT_JSON_COLUMNS = ("prompt", "completion", "components", "errors", "metrics", "info")


# --------------------------------------------------------------------------------------------- JSON


def to_jsonable(obj: Any) -> Any:
    """Convert ``obj`` into plain JSON types.

    Configs, summaries and rollout info carry numpy/torch scalars, Paths, dataclasses and sets; a log
    write must never kill a training run, so anything unknown falls back to its ``repr``.
    """
    if obj is None or isinstance(obj, (str, bool, int, float)):
        return obj
    if isinstance(obj, Mapping):
        return {_json_key(key): to_jsonable(value) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(item) for item in obj]
    if isinstance(obj, (set, frozenset)):
        items = [to_jsonable(item) for item in obj]
        try:
            return sorted(items)
        except TypeError:  # mixed types: keep them, order is then arbitrary anyway
            return items
    return _jsonable_other(obj)


def _jsonable_other(obj: Any) -> Any:
    """The non-container cases of :func:`to_jsonable`, kept apart so each branch stays readable."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # Shallow field walk instead of dataclasses.asdict, which deep-copies (tensors included).
        return {f.name: to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value)
    if isinstance(obj, (_dt.datetime, _dt.date, _dt.time)):
        return obj.isoformat()
    if isinstance(obj, (bytes, bytearray)):
        return bytes(obj).decode("utf-8", errors="replace")
    tolist = getattr(obj, "tolist", None)  # numpy scalars/arrays and torch tensors
    if callable(tolist):
        try:
            return to_jsonable(tolist())
        except Exception:  # e.g. a meta tensor: fall through to repr
            pass
    return repr(obj)


def _json_key(key: Any) -> str | int | float | bool | None:
    """JSON object keys must be scalars; numpy ints and tuples become their plain form or a string."""
    plain = to_jsonable(key)
    if plain is None or isinstance(plain, (str, bool, int, float)):
        return plain
    return str(plain)


def json_dumps(obj: Any, *, indent: int | None = None) -> str:
    """Serialise anything the store is handed; NaN/inf survive (Python's json reads them back)."""
    return json.dumps(to_jsonable(obj), ensure_ascii=False, indent=indent)


def _loads(text: str | None, default: Any = None) -> Any:
    return default if text is None or text == "" else json.loads(text)


# ---------------------------------------------------------------------------------------------- Run


@dataclasses.dataclass
class Run:
    """A snapshot of one run's row; re-fetch with :meth:`RunStore.get` to see later updates."""

    id: str
    kind: str
    dir: Path
    status: str
    created_at: float  # unix seconds
    finished_at: float | None
    config: dict[str, Any]
    manifest: dict[str, Any]
    summary: dict[str, Any]
    parent: str | None = None
    name: str | None = None

    @property
    def created(self) -> _dt.datetime:
        """Creation time in local time, for display."""
        return _dt.datetime.fromtimestamp(self.created_at)

    @property
    def duration_s(self) -> float | None:
        """Wall time from creation to finish; ``None`` while the run has not finished."""
        return None if self.finished_at is None else self.finished_at - self.created_at


RunRef = str | Run


def _run_id(run: RunRef) -> str:
    """Let every method take either a Run handle or its id."""
    return run.id if isinstance(run, Run) else str(run)


def _one_line(text: str) -> str:
    """Error messages are one line by contract, even when a user pastes something odd."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _as_float(name: str, value: Any) -> float:
    """Accept Python, numpy and one-element torch numbers; reject strings loudly (a caller bug)."""
    if isinstance(value, str):
        raise TypeError(f"metric {name!r} is not a number: {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"metric {name!r} is not a number: {value!r}") from exc


def _is_locked(error: sqlite3.OperationalError) -> bool:
    text = str(error)
    return "locked" in text or "busy" in text


def _retried(action: Callable[[], Any], db_path: Path) -> Any:
    """``action()``, tried again with growing pauses while SQLite says the database is locked or busy.

    SQLite waits out another connection's lock on its own (the busy timeout), except in a few places where
    it answers at once: changing the journal mode of a database another process is creating is one. Those
    are retried here for as long as the busy timeout; a lock held longer is one line naming the database.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    pause = 0.005
    while True:
        try:
            return action()
        except sqlite3.OperationalError as error:
            if not _is_locked(error):
                raise
            if time.monotonic() >= deadline:
                raise RewardlabError(
                    f"the run store {db_path} stayed locked for {BUSY_TIMEOUT_S:g} s by another process"
                ) from None
        time.sleep(pause)
        pause = min(pause * 2, 0.2)


def _nan_to_none(value: float) -> float | None:
    """SQLite stores NaN as NULL anyway; say so explicitly so the read side can map it back."""
    return None if math.isnan(value) else value


# ------------------------------------------------------------------------------------------ RunStore


class RunStore:
    """All runs under one root directory, indexed by one SQLite database.

    One connection per instance, reopened after ``fork`` and guarded by a lock so a logging thread can
    share it. Reads never create the database: listing an empty ``runs/`` leaves no trace behind.
    """

    def __init__(self, root: str | Path = "runs") -> None:
        self.root = Path(root).expanduser()
        self.db_path = self.root / DB_NAME
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"RunStore({str(self.root)!r})"

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; the next call reopens it."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    # ------------------------------------------------------------------ connection and schema

    def _connect(self) -> sqlite3.Connection:
        """Open (or reopen after fork) the database, creating root and schema on demand."""
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        self.root.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN IMMEDIATE ourselves, so a writer takes the write lock
        # up front and waits on the busy timeout instead of failing on a read->write upgrade.
        conn = sqlite3.connect(
            self.db_path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            # Not waited for by SQLite while another process holds a lock on a database being created.
            _retried(lambda: conn.execute("PRAGMA journal_mode = WAL").fetchone(), self.db_path)
            conn.execute("PRAGMA synchronous = NORMAL")  # durable across process crashes in WAL mode
            conn.execute("PRAGMA foreign_keys = ON")
            self._init_schema(conn)
        except BaseException:
            conn.close()
            raise
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        """Idempotent, so any number of processes may open the same database at once."""
        _retried(lambda: conn.execute("BEGIN IMMEDIATE"), self.db_path)
        try:
            for statement in _SCHEMA:
                conn.execute(statement)
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
            elif int(row["value"]) > SCHEMA_VERSION:
                raise RewardlabError(
                    f"{self.db_path} has schema version {row['value']}, newer than this rewardlab "
                    f"understands ({SCHEMA_VERSION}); upgrade rewardlab"
                )
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding the database write lock from the start."""
        with self._lock:
            conn = self._connect()
            _retried(lambda: conn.execute("BEGIN IMMEDIATE"), self.db_path)
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _query(self, sql: str, params: Sequence[Any] = ()) -> builtins.list[sqlite3.Row]:
        """Read rows; an absent database reads as empty instead of being created."""
        with self._lock:
            if self._conn is None and not self.db_path.exists():
                return []
            conn = self._connect()
            return _retried(lambda: conn.execute(sql, tuple(params)).fetchall(), self.db_path)

    # ------------------------------------------------------------------ errors

    def _not_found(self, ref: str) -> RewardlabError:
        ids = [row["id"] for row in self._query("SELECT id FROM runs ORDER BY created_at DESC, rowid DESC")]
        close = closest_run_id(ref, ids)
        hint = f" (did you mean '{close}'?)" if close else ""
        return RewardlabError(_one_line(f"no run '{ref}' in {self.db_path}{hint}"))

    def _require(self, conn: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise self._not_found(run_id)
        return row

    # ------------------------------------------------------------------ runs

    def create_run(
        self,
        kind: str,
        config: Mapping[str, Any],
        manifest: Mapping[str, Any] | None = None,
        name: str | None = None,
        parent: str | None = None,
        run_id: str | None = None,
    ) -> Run:
        """Register a new run (status 'running') and write its config.json and manifest.json.

        Without a ``manifest`` one is collected here, so no run is ever stored without provenance.
        Generated ids look like ``train-20261122-093012-a1b2``: sortable by eye, unique in practice,
        and retried on the rare collision.
        """
        if not _SAFE_NAME.match(kind):
            raise RewardlabError(_one_line(f"run kind {kind!r} must be letters, digits, '-', '_' or '.'"))
        if run_id is not None and (not _SAFE_NAME.match(run_id) or set(run_id) == {"."}):
            raise RewardlabError(_one_line(f"run id {run_id!r} must be letters, digits, '-', '_' or '.'"))
        if manifest is None:
            from rewardlab.runs.manifest import collect_manifest

            manifest = collect_manifest()
        config_json, manifest_json = json_dumps(config), json_dumps(manifest)
        now = time.time()
        new_id = self._insert_run(kind, config_json, manifest_json, name, parent, run_id, now)
        run_dir = self.root / new_id
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic.write_text(run_dir / "config.json", json_dumps(config, indent=2) + "\n")
        atomic.write_text(run_dir / "manifest.json", json_dumps(manifest, indent=2) + "\n")
        return self.get(new_id)

    def _insert_run(
        self,
        kind: str,
        config_json: str,
        manifest_json: str,
        name: str | None,
        parent: str | None,
        run_id: str | None,
        now: float,
    ) -> str:
        """Insert the row, generating a fresh id until one is free (the PRIMARY KEY arbitrates races)."""
        for _ in range(16):
            candidate = run_id or self._new_id(kind, now)
            try:
                with self._transaction() as conn:
                    conn.execute(
                        "INSERT INTO runs (id, kind, name, parent, status, created_at, config, manifest)"
                        " VALUES (?, ?, ?, ?, 'running', ?, ?, ?)",
                        (candidate, kind, name, parent, now, config_json, manifest_json),
                    )
                return candidate
            except sqlite3.IntegrityError:
                if run_id is not None:
                    raise RewardlabError(
                        _one_line(f"run '{run_id}' already exists in {self.db_path}")
                    ) from None
        raise RuntimeError("could not generate a free run id after 16 attempts")

    def _new_id(self, kind: str, now: float) -> str:
        """``<kind>-<local YYYYmmdd-HHMMSS>-<4 hex>``; skips ids whose directory is already taken."""
        stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
        while True:
            candidate = f"{kind}-{stamp}-{secrets.token_hex(2)}"
            if not (self.root / candidate).exists():
                return candidate

    def _row_to_run(self, row: sqlite3.Row) -> Run:
        return Run(
            id=row["id"],
            kind=row["kind"],
            dir=self.root / row["id"],
            status=row["status"],
            created_at=row["created_at"],
            finished_at=row["finished_at"],
            config=_loads(row["config"], {}),
            manifest=_loads(row["manifest"], {}),
            summary=_loads(row["summary"], {}),
            parent=row["parent"],
            name=row["name"],
        )

    def get(self, ref: str | Path | Run) -> Run:
        """Find a run by exact id, unique id prefix, path to its directory, or (last) exact name.

        Raises a one-line :class:`RewardlabError` when nothing matches or a prefix/name is ambiguous.
        """
        text = _run_id(ref) if isinstance(ref, Run) else str(ref)
        if not text:
            raise self._not_found(text)
        rows = self._query("SELECT * FROM runs WHERE id = ?", (text,))
        if not rows and (isinstance(ref, Path) or os.sep in text or "/" in text or Path(text).is_dir()):
            rows = self._query("SELECT * FROM runs WHERE id = ?", (Path(text).resolve().name,))
        if rows:
            return self._row_to_run(rows[0])
        for column_match in ("substr(id, 1, length(?1)) = ?1", "name = ?1"):
            rows = self._query(
                f"SELECT * FROM runs WHERE {column_match} ORDER BY created_at DESC, rowid DESC", (text,)
            )
            if len(rows) == 1:
                return self._row_to_run(rows[0])
            if len(rows) > 1:
                raise self._ambiguous(text, [row["id"] for row in rows])
        raise self._not_found(text)

    def _ambiguous(self, ref: str, ids: builtins.list[str]) -> RewardlabError:
        shown = ", ".join(ids[:5])
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        return RewardlabError(_one_line(f"run '{ref}' is ambiguous in {self.db_path}: matches {shown}{more}"))

    def set_status(self, run: RunRef, status: str) -> None:
        """Change the status, e.g. 'failed' from an exception handler or 'running' on resume.

        Back to 'running' also clears ``finished_at``: a resumed run has not finished yet.
        """
        with self._transaction() as conn:
            self._require(conn, _run_id(run))
            conn.execute(
                "UPDATE runs SET status = ?1,"
                " finished_at = CASE WHEN ?1 = 'running' THEN NULL ELSE finished_at END WHERE id = ?2",
                (status, _run_id(run)),
            )

    def finish(
        self, run: RunRef, status: str = "completed", summary: Mapping[str, Any] | None = None
    ) -> None:
        """Mark the run finished now; ``summary`` is merged into whatever was stored before."""
        run_id = _run_id(run)
        with self._transaction() as conn:
            row = self._require(conn, run_id)
            merged = {**_loads(row["summary"], {}), **(to_jsonable(summary) if summary else {})}
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, summary = ? WHERE id = ?",
                (status, time.time(), json_dumps(merged), run_id),
            )

    @contextmanager
    def failure_recorded(self, run: RunRef) -> Iterator[None]:
        """Whatever stops the work inside (a user error, a bug, Ctrl-C) leaves the run failed or interrupted
        with its reason in the summary, never 'running' forever; the exception goes on."""
        try:
            yield
        except BaseException as error:
            status = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
            reason = " ".join(str(error).split()) or type(error).__name__
            self.finish(run, status=status, summary={"error": reason})
            raise

    def update_summary(self, run: RunRef, summary: Mapping[str, Any]) -> dict[str, Any]:
        """Merge keys into the stored summary (read-modify-write under the write lock); returns it."""
        run_id = _run_id(run)
        with self._transaction() as conn:
            row = self._require(conn, run_id)
            merged = {**_loads(row["summary"], {}), **to_jsonable(summary)}
            conn.execute("UPDATE runs SET summary = ? WHERE id = ?", (json_dumps(merged), run_id))
        return merged

    # ------------------------------------------------------------------ metrics

    def log_metrics(self, run: RunRef, step: int, metrics: Mapping[str, Any]) -> None:
        """Store one step's scalars; ``None`` values are skipped, re-logging a (step, name) overwrites."""
        run_id = _run_id(run)
        rows = [
            (run_id, int(step), str(name), _nan_to_none(_as_float(name, value)))
            for name, value in metrics.items()
            if value is not None
        ]
        with self._transaction() as conn:
            self._require(conn, run_id)
            conn.executemany(
                "INSERT OR REPLACE INTO metrics (run_id, step, name, value) VALUES (?, ?, ?, ?)", rows
            )

    def truncate_metrics(self, run: RunRef, after_step: int, rollouts: bool = True) -> int:
        """Delete metrics (and by default rollouts) logged after ``after_step``; returns rows deleted.

        A run resumed from a checkpoint re-runs those steps, and rollouts are appended rather than
        upserted, so without this the resumed history would hold the abandoned steps twice.
        """
        run_id = _run_id(run)
        with self._transaction() as conn:
            self._require(conn, run_id)
            deleted = conn.execute(
                "DELETE FROM metrics WHERE run_id = ? AND step > ?", (run_id, int(after_step))
            ).rowcount
            if rollouts:
                deleted += conn.execute(
                    "DELETE FROM rollouts WHERE run_id = ? AND step > ?", (run_id, int(after_step))
                ).rowcount
        return deleted

    def metrics(
        self, run: RunRef, names: Sequence[str] | None = None
    ) -> dict[str, builtins.list[tuple[int, float]]]:
        """``name -> [(step, value), ...]`` sorted by step, only ``names`` if given; NaN comes back as NaN."""
        out: dict[str, builtins.list[tuple[int, float]]] = {}
        only = "" if names is None else f" AND name IN ({', '.join('?' * len(names))})"
        for row in self._query(
            f"SELECT step, name, value FROM metrics WHERE run_id = ?{only} ORDER BY name, step",
            (_run_id(run), *(names or ())),
        ):
            value = math.nan if row["value"] is None else row["value"]
            out.setdefault(row["name"], []).append((row["step"], value))
        return out

    def metric_spans(self, run: RunRef) -> dict[str, tuple[int, int, int]]:
        """``name -> (values logged, first step, last step)`` for every metric of a run, by name."""
        rows = self._query(
            "SELECT name, COUNT(*) AS n, MIN(step) AS first, MAX(step) AS last FROM metrics WHERE run_id = ?"
            " GROUP BY name ORDER BY name",
            (_run_id(run),),
        )
        return {row["name"]: (row["n"], row["first"], row["last"]) for row in rows}

    def metric_extremes(self, run: RunRef, name: str, width: int) -> builtins.list[tuple[int, float | None]]:
        """One metric thinned in SQL: the lowest and the highest value of each run of ``width`` steps, and the
        first and last value, as ``(step, value)`` sorted by step (``None``: not a number). SQLite takes a
        bare column from the row that holds a group's MIN or MAX, so each extreme keeps its own step."""
        run_id, width = _run_id(run), max(1, int(width))
        part = "SELECT step, {}(value) FROM metrics WHERE run_id = ?1 AND name = ?2 GROUP BY step / ?3"
        ends = (
            "SELECT step, value FROM metrics WHERE run_id = ?1 AND name = ?2 AND step IN ("
            "SELECT MIN(step) FROM metrics WHERE run_id = ?1 AND name = ?2 UNION "
            "SELECT MAX(step) FROM metrics WHERE run_id = ?1 AND name = ?2)"
        )
        sql = f"{part.format('MIN')} UNION {part.format('MAX')} UNION {ends} ORDER BY step"
        points = {row[0]: row[1] for row in self._query(sql, (run_id, name, width))}
        return sorted(points.items())

    def metric_table(self, run: RunRef) -> builtins.list[dict[str, Any]]:
        """One dict per step with ``step`` and every metric name (``None`` where it was not logged)."""
        series = self.metrics(run)
        names = sorted(series)
        by_step: dict[int, dict[str, Any]] = {}
        for name, points in series.items():
            for step, value in points:
                row = by_step.setdefault(step, {"step": step, **dict.fromkeys(names)})
                row[name] = value
        return [by_step[step] for step in sorted(by_step)]

    # ------------------------------------------------------------------ rollouts

    def log_rollouts(
        self,
        run: RunRef,
        step: int,
        phase: str,
        scored: Sequence[ScoredRollout],
        tokens: Sequence[Any] | None = None,
    ) -> None:
        """Store every scored rollout of one step/phase ('train', 'eval', ...) in one transaction.

        ``tokens``, beside ``scored``: for each rollout ``None`` or one list per model turn of
        ``{"text", "logprob", "entropy"}`` per token (the dashboard colours them)."""
        run_id = _run_id(run)
        extra = tokens if tokens is not None else [None] * len(scored)
        rows = [
            (run_id, int(step), phase, *_rollout_values(item),
             None if t is None else json_dumps({"tokens": t}))
            for item, t in zip(scored, extra, strict=True)
        ]  # fmt: skip
        placeholders = ", ".join("?" * (3 + len(_ROLLOUT_COLUMNS)))
        with self._transaction() as conn:
            self._require(conn, run_id)
            conn.executemany(
                f"INSERT INTO rollouts (run_id, step, phase, {', '.join(_ROLLOUT_COLUMNS)})"
                f" VALUES ({placeholders})",
                rows,
            )

    def rollouts(
        self,
        run: RunRef,
        phase: str | None = None,
        step: int | None = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> builtins.list[dict[str, Any]]:
        """Stored rollouts in logging order, JSON columns decoded, optionally filtered; ``limit`` and
        ``offset`` page through them in SQL."""
        sql = "SELECT * FROM rollouts WHERE run_id = ?"
        params: builtins.list[Any] = [_run_id(run)]
        if phase is not None:
            sql, params = sql + " AND phase = ?", [*params, phase]
        if step is not None:
            sql, params = sql + " AND step = ?", [*params, int(step)]
        sql += " ORDER BY step, id"
        if limit is not None:
            sql, params = sql + " LIMIT ? OFFSET ?", [*params, int(limit), int(offset)]
        return [_decode_rollout(row) for row in self._query(sql, params)]

    def rollout_index(self, run: RunRef) -> builtins.list[tuple[str, int, int]]:
        """``(phase, step, number of rollouts)`` for every phase and step a run stored rollouts at."""
        rows = self._query(
            "SELECT phase, step, COUNT(*) AS n FROM rollouts WHERE run_id = ? GROUP BY phase, step"
            " ORDER BY phase, step",
            (_run_id(run),),
        )
        return [(row["phase"], row["step"], row["n"]) for row in rows]

    def rollout_counts(self, run: RunRef) -> dict[str, int]:
        """``phase -> number of rollouts``, for summaries that should not load every completion."""
        rows = self._query(
            "SELECT phase, COUNT(*) AS n FROM rollouts WHERE run_id = ? GROUP BY phase ORDER BY phase",
            (_run_id(run),),
        )
        return {row["phase"]: row["n"] for row in rows}

    # ------------------------------------------------------------------ listing

    def list(self, kind: str | None = None, limit: int | None = None) -> builtins.list[Run]:
        """Runs newest first, optionally of one kind and at most ``limit`` of them."""
        sql, params = "SELECT * FROM runs", []
        if kind is not None:
            sql, params = sql + " WHERE kind = ?", [kind]
        sql += " ORDER BY created_at DESC, rowid DESC"
        if limit is not None:
            sql, params = sql + " LIMIT ?", [*params, int(limit)]
        return [self._row_to_run(row) for row in self._query(sql, params)]


def _rollout_values(item: ScoredRollout) -> tuple[Any, ...]:
    """Flatten a ScoredRollout into the rollouts columns, in ``_ROLLOUT_COLUMNS`` order."""
    rollout, example = item.rollout, item.rollout.example
    reward = float(item.reward) if item.reward is not None else None
    return (
        example.id,
        rollout.sample_index,
        json_dumps(example.prompt),
        json_dumps(rollout.completion),
        example.answer,
        None if reward is None else _nan_to_none(reward),
        json_dumps(item.components),
        json_dumps(item.errors),
        int(bool(rollout.truncated)),
        rollout.num_turns,
        rollout.num_completion_tokens,
        float(rollout.latency_s),
        json_dumps(example.info),
        rollout.error,
    )


def _decode_rollout(row: sqlite3.Row) -> dict[str, Any]:
    """A rollouts row as a plain dict with JSON decoded and SQLite's integers/NULLs mapped back."""
    out = dict(row)
    for column in _ROLLOUT_JSON_COLUMNS:
        out[column] = _loads(out[column], {} if column not in ("prompt", "completion") else [])
    out["truncated"] = bool(out["truncated"])
    if out["reward"] is None:
        out["reward"] = math.nan
    return out
