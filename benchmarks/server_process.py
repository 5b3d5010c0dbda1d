"""A server under benchmark: a subprocess on a free local port, ready once its ``/health`` answers.

Shared by ``bench_serve.py`` and ``bench_serve_vs_transformers.py`` (run as scripts, so this directory is on
``sys.path``).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``command(port)`` started with ``threads`` torch threads, its output in ``log``."""

    def __init__(self, name: str, command: Callable[[int], list[str]], threads: int, log: Path):
        port = free_port()
        self.name, self.url, self.log = name, f"http://127.0.0.1:{port}", log
        # torch's intra-op threads spin while they wait: each server gets exactly the threads it is given.
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "REWARDLAB_THREADS": str(threads)}
        with open(log, "w") as out:
            self.process = subprocess.Popen(command(port), env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} server did not start in time")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
