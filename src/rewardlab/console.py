"""The one console and progress-bar style the library and CLI share.

Library code reports progress through :func:`progress`; set ``REWARDLAB_QUIET=1`` (tests do) to silence
bars while keeping results.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

from rich.console import Console, RenderableType
from rich.measure import Measurement
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=False, highlight=False)
# Notes that are not the command's output (a renamed config field), so `--print-config > file` stays clean.
notes = Console(stderr=True, highlight=False)


def quiet() -> bool:
    return os.environ.get("REWARDLAB_QUIET", "") not in ("", "0")


@contextmanager
def progress(description: str, total: int | None):
    """Yields ``advance(n=1, **fields)``; shows a bar unless quiet. ``fields`` feed a status column."""
    if quiet():
        yield lambda n=1, **fields: None
        return
    bar = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[status]}"),
        console=console,
        transient=False,
    )
    with bar:
        task = bar.add_task(description, total=total, status="")

        def advance(n: int = 1, **fields: object) -> None:
            status = "  ".join(
                f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in fields.items()
            )
            bar.update(task, advance=n, status=status)

        yield advance


def say(message: str, soft_wrap: bool = False) -> None:
    """Print unless quiet; ``soft_wrap`` keeps a line whole (the terminal wraps it, grep finds it)."""
    if not quiet():
        console.print(message, soft_wrap=soft_wrap)


def print_whole(renderable: RenderableType) -> None:
    """Print to the terminal at its width; piped or redirected, at the width the content needs, so a line
    reaches grep or a file whole rather than cut to an assumed 80 columns."""
    if console.is_terminal:
        console.print(renderable)
        return
    natural = Measurement.get(console, console.options.update(width=100_000), renderable).maximum
    wide = Console(file=console.file, highlight=False, width=max(natural, console.width))
    wide.print(renderable)
