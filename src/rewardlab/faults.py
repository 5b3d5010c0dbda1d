"""Named points where a crash test can stop the trainer, so that a kill lands exactly there.

With ``REWARDLAB_PAUSE_AT=<point>@<step>`` in its environment, a training process that reaches ``<point>``
during step ``<step>`` writes one line to stderr (``rewardlab: paused at checkpoint in step 3 (pid 123)``)
and stops itself with ``SIGSTOP``; the test then kills it with ``SIGKILL``. Without the variable a point
costs a dictionary lookup. The points:

* ``sampling``: in the middle of generating the step's completions (after the first decoding step);
* ``update``: after the step's first optimizer step, before the scheduler's;
* ``checkpoint``: while the step's checkpoint is being written (its weights written, its trainer state
  not yet, nothing renamed into place).
"""

from __future__ import annotations

import os
import signal
import sys

PAUSE_ENV = "REWARDLAB_PAUSE_AT"
POINTS = ("sampling", "update", "checkpoint")

_step: int | None = None


def at_step(step: int | None) -> None:
    """The training step now running (``None`` outside training), which the points are matched against."""
    global _step
    _step = step


def pause_point(name: str) -> None:
    """Stop this process here when ``REWARDLAB_PAUSE_AT`` names this point and the current step."""
    wanted = os.environ.get(PAUSE_ENV)
    if not wanted or _step is None or wanted != f"{name}@{_step}":
        return
    sys.stderr.write(f"rewardlab: paused at {name} in step {_step} (pid {os.getpid()})\n")
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGSTOP)
