"""Run synchronous reward functions in a pool of worker processes, each call with a time limit.

A reward function is user code: it can hang, spin, raise, call ``os._exit`` or crash the interpreter.
Run in the trainer's process, any of those stops the run. Here each call runs in a worker process:

* a call that outlives its timeout gets its worker killed and fails with ``timed out after 2.0s``;
* a worker that dies fails the call it was running with ``worker died (exit code -11, SIGSEGV)``;
* a call that allocates more than the worker's memory limit (``memory_mb``, address space, 4096 MB by
  default) fails with ``memory limit (4096 MB) reached``;
* in each case the worker is replaced and the calls queued behind it go to a healthy worker, so the other
  rollouts' results are unaffected.

Design choices, and why:

* A worker is a fresh interpreter started with ``python -c``, never a fork of this process: forking after
  torch has started threads can deadlock the child. Nor is it a multiprocessing child, whose spawn and
  forkserver start methods re-import the main script, which would run a script without an
  ``if __name__ == "__main__":`` guard a second time (a training script, say). Workers get our
  ``sys.path``, so they import what we can.
* A function runs in the worker's **main thread**, so libraries that time themselves out with
  ``signal.alarm`` (math-verify does) work as they do in a script.
* Functions travel with cloudpickle, so closures and lambdas work. A function whose module cannot be
  imported by name in a worker (a file loaded by ``importlib`` under a made-up module name) is pickled by
  value. Each function is pickled once and sent to each worker once, then named by a key.
* Calls are handed out in chunks and a worker answers each call as it finishes, so the per-call cost is a
  few tens of microseconds while the parent still knows which call is running (for its deadline).
* Workers watch a "lifeline" pipe from the parent, so they exit even when the parent is killed with
  SIGKILL in the middle of a hanging call.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import importlib.machinery
import itertools
import json
import math
import os
import pickle
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from types import ModuleType
from typing import Any

import cloudpickle

# How long a fresh worker may take to start and load a chunk's functions (imports included) before it
# counts as hung. Loading is not the reward function's time, so it does not eat into the call's timeout.
LOAD_TIMEOUT_S = 120.0
MAX_CHUNK = 32  # calls handed to a worker at once: large enough to amortise a message, small to balance
DEFAULT_MAX_WORKERS = 8  # each worker holds its own imports; reward calls are rarely the bottleneck
# Address space of each worker: room for torch and a tokenizer, not for a reward that leaks or explodes.
DEFAULT_MEMORY_MB = 4096


class RewardCallError(Exception):
    """A reward call that failed; the message is the whole reason, as the rubric records it."""


class CannotShip(Exception):
    """An object that cannot be pickled for a worker process."""


def describe_error(error: BaseException) -> str:
    if isinstance(error, RewardCallError):
        return str(error)
    return f"{type(error).__name__}: {error}"


def as_reward(value: Any) -> float:
    """The number a reward function returned, or an exception saying why it is not one."""
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, int | float):
        raise TypeError(f"returned {type(value).__name__}, expected a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"returned {value}")
    return value


# -- shipping objects to workers ----------------------------------------------------------------------


@dataclass(eq=False)
class Shipped:
    """An object pickled once; workers keep it under ``key`` after the first time they receive it."""

    key: int
    name: str
    payload: bytes


_keys = itertools.count(1)
# Workers forget objects that are no longer alive here (their rubric is gone), so their caches stay small.
_live: weakref.WeakValueDictionary[int, Shipped] = weakref.WeakValueDictionary()


def _findable_by_name(module: ModuleType) -> bool:
    """Whether a fresh interpreter with our ``sys.path`` would import this module under its name."""
    name = module.__name__
    parent, _, _ = name.rpartition(".")
    search_path = None
    if parent:
        search_path = getattr(sys.modules.get(parent), "__path__", None)
        if search_path is None:
            return False
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is None:
            continue
        try:
            spec = find_spec(name, search_path)
        except (ImportError, ValueError):
            continue
        if spec is not None:
            own = getattr(module, "__spec__", None)
            return own is None or own.origin is None or spec.origin == own.origin
    return False


def _pickle_module_by_value_if_needed(obj: Any) -> None:
    """cloudpickle refers to functions and classes by module name; a module no worker can import by that
    name (``spec_from_file_location`` under a made-up name) must travel by value instead."""
    module = sys.modules.get(getattr(obj, "__module__", None) or "")
    if module is None or module.__name__ in ("__main__", "builtins"):
        return  # cloudpickle already pickles __main__ and unknown modules by value
    spec = getattr(module, "__spec__", None)
    if isinstance(spec, importlib.machinery.ModuleSpec) and (
        not spec.has_location or _findable_by_name(module)
    ):
        return  # built-in and frozen modules, and files found under their own name, go by reference
    with contextlib.suppress(ValueError):  # already registered
        cloudpickle.register_pickle_by_value(module)


def ship(obj: Any, name: str) -> Shipped:
    """Pickle ``obj`` once for the workers; :class:`CannotShip` says why when it cannot be."""
    _pickle_module_by_value_if_needed(obj)
    _pickle_module_by_value_if_needed(type(obj))
    try:
        payload = cloudpickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise CannotShip(describe_error(error)) from error
    shipped = Shipped(next(_keys), name, payload)
    _live[shipped.key] = shipped
    return shipped


def pack_arguments(arguments: dict[str, Any]) -> bytes:
    """One call's arguments, pickled; :class:`CannotShip` when something in them cannot be."""
    try:
        return cloudpickle.dumps(arguments, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as error:
        raise CannotShip(describe_error(error)) from error


# -- the worker process ---------------------------------------------------------------------------------

_LOADED = b"loaded"

# A worker is a fresh interpreter (``python -c``), never a fork and never a multiprocessing child: forking
# after torch has started threads can deadlock the child, and multiprocessing's spawn and forkserver
# re-import the user's main script in the child, which runs a script without a ``__main__`` guard again.
_BOOTSTRAP = (
    "import json, sys; sys.path[:] = json.loads(sys.argv[1]); "
    "from rewardlab.rubrics.runner import worker_main; worker_main(*map(int, sys.argv[2:6]))"
)


def _exit_with_parent(lifeline: int) -> None:
    with contextlib.suppress(OSError):
        while os.read(lifeline, 1):  # the parent never writes: this returns only when it has gone
            pass
    os._exit(0)


def memory_limit_reached(memory_mb: int) -> str:
    return f"memory limit ({memory_mb} MB) reached"


def _limit_memory(memory_mb: int) -> None:
    """Cap this process's address space at ``memory_mb`` (0: no cap); a lower hard limit is kept."""
    if memory_mb <= 0:
        return
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    wanted = memory_mb * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    resource.setrlimit(resource.RLIMIT_AS, (wanted, hard))


def _run_call(
    objects: dict[int, Any],
    broken: dict[int, str],
    function_key: int,
    arguments: bytes,
    injected: tuple[tuple[str, int], ...],
    memory_mb: int = 0,
) -> tuple[bool, Any, bool]:
    """(ok, the reward or the reason, whether this worker must be replaced)."""
    try:
        for key in (function_key, *(key for _, key in injected)):
            if key in broken:
                return False, f"cannot load it in a worker process: {broken[key]}", False
        kwargs = pickle.loads(arguments)
        for argument, key in injected:
            kwargs[argument] = objects[key]
        return True, as_reward(objects[function_key](**kwargs)), False
    except MemoryError as error:  # what a function left allocated would fail the next calls: a new worker
        reason = memory_limit_reached(memory_mb) if memory_mb > 0 else describe_error(error)
        return False, reason, True
    except BaseException as error:  # SystemExit from a reward function is its failure, not the worker's
        return False, describe_error(error), False
    finally:
        if hasattr(signal, "alarm"):
            signal.alarm(0)  # an alarm a function forgot to cancel must not kill the next call


def worker_main(commands_fd: int, results_fd: int, lifeline_fd: int, memory_mb: int = 0) -> None:
    """The loop of a worker process: receive a chunk of calls, answer each as it finishes. A call that ran
    out of memory is answered, then the worker leaves (the parent hands the rest of the chunk on)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent, which then stops us
    threading.Thread(target=_exit_with_parent, args=(lifeline_fd,), daemon=True).start()
    _limit_memory(memory_mb)
    commands = Connection(commands_fd, writable=False)
    results = Connection(results_fd, readable=False)
    objects: dict[int, Any] = {}
    broken: dict[int, str] = {}
    while True:
        try:
            message = commands.recv_bytes()
        except (EOFError, OSError):
            return
        batch = pickle.loads(message)
        if batch is None:
            return
        forget, payloads, calls = batch
        for key in forget:
            objects.pop(key, None)
            broken.pop(key, None)
        for key, payload in payloads:
            try:
                objects[key] = pickle.loads(payload)
            except BaseException as error:
                broken[key] = describe_error(error)
        results.send_bytes(_LOADED)
        for function_key, arguments, injected in calls:
            result = _run_call(objects, broken, function_key, arguments, injected, memory_mb)
            results.send_bytes(pickle.dumps(result))
            if result[2]:
                os._exit(0)


# -- the pool ---------------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Task:
    function: Shipped
    arguments: bytes
    injected: tuple[tuple[str, Shipped], ...]
    timeout: float
    future: Future = field(default_factory=Future)


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    commands: Connection
    results: Connection
    lifeline: int  # our end of a pipe the worker watches; it exits when this closes
    known: set[int] = field(default_factory=set)
    tasks: deque[_Task] = field(default_factory=deque)  # sent, unanswered, in the order it runs them
    loaded: bool = False  # it has loaded the current chunk's functions; tasks[0] is running
    clock: float = 0.0  # when the current phase (loading, or tasks[0]) started

    @property
    def deadline(self) -> float:
        return self.clock + (self.tasks[0].timeout if self.loaded else LOAD_TIMEOUT_S)


def _start_worker_process(memory_mb: int) -> _Worker:
    commands_read, commands_write = os.pipe()
    results_read, results_write = os.pipe()
    lifeline_read, lifeline_write = os.pipe()
    child_ends = (commands_read, results_write, lifeline_read)
    path = [entry or os.getcwd() for entry in sys.path]
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _BOOTSTRAP, json.dumps(path), *map(str, child_ends), str(memory_mb)],
            stdin=subprocess.DEVNULL,  # a reward function must not read the terminal
            pass_fds=child_ends,
        )
    finally:
        for fd in child_ends:  # only the worker may hold its ends, so its death reads as end-of-file here
            os.close(fd)
    return _Worker(
        process,
        Connection(commands_write, readable=False),
        Connection(results_read, writable=False),
        lifeline_write,
    )


def _exit_reason(process: subprocess.Popen) -> str:
    code = process.returncode
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"exit code {code}, {signal.Signals(-code).name}"
    return f"exit code {code}"


def default_workers() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, DEFAULT_MAX_WORKERS))


class RewardRunner:
    """A pool of ``workers`` processes started on demand, replaced when one hangs, dies or runs out of its
    ``memory_mb`` of address space (``None``: no limit).

    :meth:`submit` is thread-safe and returns one :class:`~concurrent.futures.Future` per call: its result
    is the reward, or it raises :class:`RewardCallError` with the reason. One background thread owns the
    workers' pipes; :meth:`close` stops it and every worker. POSIX only (it passes pipes to the workers).
    """

    def __init__(self, workers: int | None = None, memory_mb: int | None = DEFAULT_MEMORY_MB):
        self.size = workers or default_workers()
        self.memory_mb = memory_mb or 0
        self._workers: list[_Worker] = []
        self._pending: deque[_Task] = deque()
        self._lock = threading.Lock()
        self._closing = False
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._wake_writer.setblocking(False)
        self._thread: threading.Thread | None = None

    # -- public -----------------------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closing

    @property
    def worker_pids(self) -> list[int]:
        return [worker.process.pid for worker in list(self._workers)]

    def submit(
        self,
        calls: Sequence[tuple[Shipped, bytes, tuple[tuple[str, Shipped], ...]]],
        timeout: float | Sequence[float],
    ) -> list[Future]:
        """Queue ``(function, packed arguments, shipped arguments)`` calls; one future each.

        Submitting many calls at once lets the pool hand them out in chunks."""
        timeouts = [timeout] * len(calls) if isinstance(timeout, int | float) else list(timeout)
        tasks = [
            _Task(function, arguments, injected, limit)
            for (function, arguments, injected), limit in zip(calls, timeouts, strict=True)
        ]
        with self._lock:
            if self._closing:
                raise RuntimeError("the reward runner is closed")
            self._pending.extend(tasks)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._serve, name="rewardlab-reward-runner", daemon=True
                )
                self._thread.start()
        self._wake()
        return [task.future for task in tasks]

    def close(self) -> None:
        """Stop every worker (killing any in the middle of a call) and fail what is still queued."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join()
        else:
            self._shut_down("the reward runner was closed")
        self._wake_reader.close()
        self._wake_writer.close()

    # -- the dispatcher thread ------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(BlockingIOError, OSError):  # a full buffer already means "wake up"
            self._wake_writer.send(b"\0")

    def _serve(self) -> None:
        reason = "the reward runner was closed"
        try:
            while not self._closing:
                self._hand_out()
                self._wait_and_collect()
        except BaseException as error:  # a bug here must fail the calls, not leave them waiting forever
            reason = f"the reward runner failed: {describe_error(error)}"
            self._closing = True
            raise
        finally:
            self._shut_down(reason)

    def _chunk_size(self) -> int:
        return max(1, min(MAX_CHUNK, math.ceil(len(self._pending) / self.size)))

    def _next_chunk(self) -> list[_Task]:
        chunk: list[_Task] = []
        size = self._chunk_size()
        with self._lock:
            while self._pending and len(chunk) < size:
                task = self._pending.popleft()
                if task.future.running() or task.future.set_running_or_notify_cancel():
                    chunk.append(task)  # a re-queued task is already running; a cancelled one is dropped
        return chunk

    def _idle_worker(self) -> _Worker | None:
        for worker in self._workers:
            if not worker.tasks:
                return worker
        if len(self._workers) < self.size:
            worker = _start_worker_process(self.memory_mb)
            self._workers.append(worker)
            return worker
        return None

    def _hand_out(self) -> None:
        while self._pending:
            worker = self._idle_worker()
            if worker is None:
                return
            chunk = self._next_chunk()
            if not chunk:
                continue
            shipped = {task.function.key: task.function for task in chunk}
            shipped.update((s.key, s) for task in chunk for _, s in task.injected)
            forget = [key for key in worker.known if key not in _live and key not in shipped]
            payloads = [(key, s.payload) for key, s in shipped.items() if key not in worker.known]
            calls = [
                (task.function.key, task.arguments, tuple((name, s.key) for name, s in task.injected))
                for task in chunk
            ]
            try:
                worker.commands.send_bytes(pickle.dumps((forget, payloads, calls), pickle.HIGHEST_PROTOCOL))
            except OSError:  # it died while idle: nothing of this chunk has run, so queue it again
                self._requeue(chunk)
                self._discard(worker)
                continue
            worker.known.difference_update(forget)
            worker.known.update(shipped)
            worker.tasks.extend(chunk)
            worker.loaded = False
            worker.clock = time.monotonic()

    def _wait_and_collect(self) -> None:
        deadlines = [w.deadline for w in self._workers if w.tasks and math.isfinite(w.deadline)]
        timeout = max(0.0, min(deadlines) - time.monotonic()) if deadlines else None
        # every worker's results pipe: a busy one answers there, and any one that dies reads end-of-file
        ready = set(wait([self._wake_reader, *(w.results for w in self._workers)], timeout))
        if self._wake_reader in ready:
            with contextlib.suppress(BlockingIOError, OSError):
                self._wake_reader.recv(4096)
        for worker in list(self._workers):
            if worker.results in ready:
                self._collect(worker)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.tasks and now >= worker.deadline:
                self._expire(worker)

    def _collect(self, worker: _Worker) -> None:
        try:
            while worker.results.poll():
                message = worker.results.recv_bytes()
                now = time.monotonic()
                if message == _LOADED:
                    worker.loaded, worker.clock = True, now
                    continue
                ok, value, retire = pickle.loads(message)
                task = worker.tasks.popleft()
                if ok:
                    task.future.set_result(value)
                else:
                    task.future.set_exception(RewardCallError(value))
                if retire:  # it is leaving: what it was given next goes to another worker
                    self._requeue(list(worker.tasks))
                    worker.tasks.clear()
                    self._discard(worker)
                    return
                worker.clock = now
                if not worker.tasks:
                    worker.loaded = False
        except (EOFError, OSError):
            worker.process.wait()
            self._fail_current(worker, f"worker died ({_exit_reason(worker.process)})")

    def _expire(self, worker: _Worker) -> None:
        limit = worker.tasks[0].timeout if worker.loaded else LOAD_TIMEOUT_S
        worker.process.kill()
        worker.process.wait()
        self._fail_current(worker, f"timed out after {float(limit)}s")

    def _fail_current(self, worker: _Worker, reason: str) -> None:
        """The running call fails with ``reason``; calls queued behind it go to another worker. A worker
        lost while loading fails its whole chunk: its functions would take the next worker down too."""
        tasks = list(worker.tasks)
        worker.tasks.clear()
        if tasks and worker.loaded:
            tasks[0].future.set_exception(RewardCallError(reason))
            self._requeue(tasks[1:])
        else:
            for task in tasks:
                task.future.set_exception(RewardCallError(f"{reason} while loading the reward function"))
        self._discard(worker)

    def _requeue(self, tasks: list[_Task]) -> None:
        with self._lock:
            self._pending.extendleft(reversed(tasks))

    def _discard(self, worker: _Worker) -> None:
        if worker in self._workers:
            self._workers.remove(worker)
        if worker.process.poll() is None:
            worker.process.kill()
        worker.process.wait()
        worker.commands.close()
        worker.results.close()
        os.close(worker.lifeline)

    def _shut_down(self, reason: str) -> None:
        for worker in self._workers:
            if worker.tasks:
                worker.process.kill()
            else:
                with contextlib.suppress(OSError):
                    worker.commands.send_bytes(pickle.dumps(None))
        for worker in list(self._workers):
            with contextlib.suppress(subprocess.TimeoutExpired):
                worker.process.wait(timeout=2.0)
            for task in worker.tasks:
                task.future.set_exception(RewardCallError(reason))
            worker.tasks.clear()
            self._discard(worker)
        with self._lock:
            for task in self._pending:
                if task.future.running() or task.future.set_running_or_notify_cancel():
                    task.future.set_exception(RewardCallError(reason))
            self._pending.clear()


# -- what a rubric sends: functions and parser pickled once, arguments per call -------------------------


@dataclass
class WorkerCall:
    """One reward call bound for a worker: the pickled function, its arguments, and what else it needs."""

    key: Any  # the caller's name for the call, e.g. (rollout index, function index)
    function: Shipped
    name: str  # the function's, for messages
    arguments: dict[str, Any]
    parser: Any = None  # the rubric's parser, when the function asks for it
    timeout: float = math.inf


class Dispatcher:
    """How one rubric's synchronous reward functions reach the worker processes.

    Each function is pickled once (:meth:`ship`), the parser once per parser object, each call's arguments per
    call; :meth:`submit` hands a whole batch to the shared pool at once so it can send them in chunks. What
    cannot be pickled runs in the rubric's process instead, without a time limit, and ``warn(key, message)``
    says so (the rubric says each thing once).
    """

    def __init__(
        self,
        workers: int | None,
        warn: Callable[[str, str], None],
        memory_mb: int | None = DEFAULT_MEMORY_MB,
    ):
        self.workers = workers
        self.memory_mb = memory_mb
        self.warn = warn
        self._parser: tuple[Any, Shipped | None] | None = None

    def ship(self, func: Any, name: str) -> Shipped | None:
        """``func`` pickled for the workers; ``None`` (and a warning) when it cannot be."""
        try:
            return ship(func, name)
        except CannotShip as error:
            self.warn(
                name,
                f"reward function '{name}' cannot be sent to a worker process ({error}); "
                "it runs in this process, without a timeout",
            )
            return None

    def _shipped_parser(self, parser: Any) -> Shipped | None:
        """The parser, pickled once (again only when it is replaced); ``None`` when it cannot be."""
        if self._parser is None or self._parser[0] is not parser:
            try:
                shipped = ship(parser, "parser")
            except CannotShip as error:
                shipped = None
                self.warn(
                    f"parser {id(parser)}",
                    f"the rubric's parser cannot be sent to a worker process ({error}); reward functions "
                    "that take it run in this process, without a timeout",
                )
            self._parser = (parser, shipped)
        return self._parser[1]

    def submit(self, calls: Sequence[WorkerCall]) -> dict[Any, asyncio.Future]:
        """Every call that can be pickled, submitted together; an awaitable per call key. A call left out
        (its arguments or parser cannot be pickled) is the caller's to run in its own process."""
        keys: list[Any] = []
        packed: list[tuple[Shipped, bytes, tuple[tuple[str, Shipped], ...]]] = []
        limits: list[float] = []
        for call in calls:
            injected: tuple[tuple[str, Shipped], ...] = ()
            if call.parser is not None:
                parser = self._shipped_parser(call.parser)
                if parser is None:
                    continue
                injected = (("parser", parser),)
            try:
                arguments = pack_arguments(call.arguments)
            except CannotShip as error:
                self.warn(
                    f"{call.name} arguments",
                    f"the arguments of reward function '{call.name}' cannot be sent to a worker process "
                    f"({error}); such calls run in this process, without a timeout",
                )
                continue
            keys.append(call.key)
            packed.append((call.function, arguments, injected))
            limits.append(call.timeout)
        if not packed:
            return {}
        futures = shared_runner(self.workers, self.memory_mb).submit(packed, limits)
        return {key: asyncio.wrap_future(future) for key, future in zip(keys, futures, strict=True)}


# -- one pool per worker count and memory limit, shared by every rubric in the process -------------------

_shared: dict[tuple[int, int], RewardRunner] = {}
_shared_lock = threading.Lock()


def shared_runner(workers: int | None = None, memory_mb: int | None = DEFAULT_MEMORY_MB) -> RewardRunner:
    """The process-wide pool with ``workers`` workers (the default: CPUs available, at most 8), each limited
    to ``memory_mb`` of address space (``None``: unlimited)."""
    key = (workers or default_workers(), memory_mb or 0)
    with _shared_lock:
        runner = _shared.get(key)
        if runner is None or runner.closed:
            runner = _shared[key] = RewardRunner(*key)
        return runner


@atexit.register
def close_shared_runners() -> None:
    """Stop the shared pools at exit (the workers would also leave by themselves: their lifeline closes)."""
    with _shared_lock:
        runners = list(_shared.values())
        _shared.clear()
    for runner in runners:
        runner.close()
