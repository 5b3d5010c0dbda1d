"""Sampling ahead of training: a background thread that draws step batches while the trainer updates.

With ``max_off_policy_steps = k`` the producer samples step ``t``'s batch as soon as the policy of step
``t - 1 - k`` has been published (the adapter trained on batches up to ``t - 1 - k``, loaded into the
server), with the newest adapter published by then. So while the trainer trains on step ``t`` the batches of
steps ``t + 1 .. t + k`` are being sampled, each by a policy at most ``k`` updates older than the one it is
trained from; they wait in a queue of ``k``. Each batch keeps the version of the adapter that sampled it
(``staleness`` = ``t - 1`` less that version, logged per step), and its log-probs are that adapter's, so the
importance ratio corrects for the lag.

An error while sampling (the server gone, all rewards errored) is handed to the trainer with the next batch it
asks for and raised there, so the run fails as it would have without the thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass
class Sampled:
    step: int
    batch: Any  # what ``sample`` returned
    version: int  # the policy version (steps trained) whose adapter sampled it


@dataclass
class _Failed:
    error: BaseException


class Versions:
    """The policy versions published so far, and which ones the producer is sampling with.

    ``publish(v)`` makes ``v`` the newest; ``acquire(at_least)`` waits for a version of at least
    ``at_least``, takes the newest and holds it (an adapter being sampled from is not unloaded) until
    ``release``.
    """

    def __init__(self):
        self._condition = threading.Condition()
        self.latest: int | None = None
        self.held: dict[int, int] = {}

    def publish(self, version: int) -> None:
        with self._condition:
            self.latest = version
            self._condition.notify_all()

    def acquire(self, at_least: int, stop: threading.Event) -> int | None:
        """The newest version once it is ``at_least``, held; ``None`` when ``stop`` is set first."""
        with self._condition:
            while not stop.is_set():
                if self.latest is not None and self.latest >= at_least:
                    self.held[self.latest] = self.held.get(self.latest, 0) + 1
                    return self.latest
                self._condition.wait(timeout=0.2)
        return None

    def release(self, version: int) -> None:
        with self._condition:
            self.held[version] -= 1
            if not self.held[version]:
                del self.held[version]

    def in_use(self) -> set[int]:
        with self._condition:
            return set(self.held)


class Producer:
    """Runs ``sample(step, version)`` for ``first .. last`` in a thread, at most ``ahead`` updates stale."""

    def __init__(
        self,
        sample: Callable[[int, int], Any],
        versions: Versions,
        first: int,
        last: int,
        ahead: int,
    ):
        self.sample = sample
        self.versions = versions
        self.first, self.last, self.ahead = first, last, ahead
        self.queue: queue.Queue = queue.Queue(maxsize=max(ahead, 1))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="rewardlab-rollouts", daemon=True)

    def start(self) -> Producer:
        self.thread.start()
        return self

    def next(self, step: int, check: Callable[[], None] | None = None) -> Sampled:
        """The batch of ``step`` (steps are asked for in order); an error in the thread is raised here, and
        ``check`` is called while waiting (it raises what else went wrong: an adapter that did not load)."""
        while True:
            try:
                item = self.queue.get(timeout=0.2)
            except queue.Empty:
                if not self.thread.is_alive():
                    raise RuntimeError(f"the rollout thread ended before step {step}'s batch") from None
                if check is not None:
                    check()
                continue
            if isinstance(item, _Failed):
                raise item.error
            if item.step != step:
                raise RuntimeError(f"the rollout thread sampled step {item.step} where {step} was due")
            return item

    def close(self, timeout: float = 10.0) -> None:
        self.stop.set()
        while True:  # a producer blocked on a full queue sees the stop
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        self.thread.join(timeout)

    def _run(self) -> None:
        try:
            for step in range(self.first, self.last + 1):
                version = self.versions.acquire(step - 1 - self.ahead, self.stop)
                if version is None:
                    return
                try:
                    batch = self.sample(step, version)
                finally:
                    self.versions.release(version)
                if not self._put(Sampled(step, batch, version)):
                    return
        except BaseException as error:  # handed to the trainer, which raises it
            self._put(_Failed(error))

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False
