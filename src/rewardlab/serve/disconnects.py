"""Requests whose client leaves before their answer: the job is cancelled, so that one still waiting for a
batch is never generated (the engine skips cancelled jobs, and counts them as ``abandoned``). A job already
in a batch has its rows ended at the next decoding step (the engine's step callback hands them back to the
sampler); the batch's other rows go on.

A stream notices that its client left when the server next writes to it (or the server cancels it); an
answer that is not streamed watches the connection: once a request's body is read, the next ASGI message is
``http.disconnect``, which arrives when the client closes the connection.
"""

from __future__ import annotations

import asyncio

from rewardlab.serve.batching import Job


async def client_left(receive) -> None:
    """Return once the client has closed the connection (``receive``: the request's, body already read)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def answered_before_leaving(job: Job, receive) -> bool:
    """Wait for ``job``; False, with the job cancelled, if its client left first."""
    watcher = asyncio.ensure_future(client_left(receive))
    try:
        await asyncio.wait({job.future, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if job.future.done():
        return True
    job.future.cancel()
    return False
