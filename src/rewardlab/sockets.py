"""The listening socket both servers (``serve`` and ``dashboard``) bind before anything slow happens."""

from __future__ import annotations

import socket

from rewardlab.errors import RewardlabError


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything slow happens: a port in use is one line at once, and
    nobody can take the port while a model or a run store loads."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # what uvicorn sets on its own sockets
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise RewardlabError(
            f"cannot listen on {host}:{port}: {error.strerror or error}; choose another --port"
        ) from None
    return sock
