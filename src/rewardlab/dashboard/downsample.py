"""Curves thinned on the server, so that a run of 5,000 steps draws as fast as one of 50.

Min/max per bucket: a series longer than the points asked for is cut into equal runs of steps, and each run
keeps its lowest and its highest value (each at its own step), plus the series' first and last point. A spike
or a collapse, the thing a person opens a curve to find, survives any amount of thinning; an average or every
n-th point would hide it. SQLite does the bucketing (:meth:`RunStore.metric_extremes`), so thinning 100,000
logged values costs a scan of an index, not a Python loop over them.
"""

from __future__ import annotations

import math

from rewardlab.runs import RunStore

Point = tuple[int, float | None]

DEFAULT_POINTS = 1000


def thinned(
    store: RunStore, run_id: str, spans: dict[str, tuple[int, int, int]], max_points: int = DEFAULT_POINTS
) -> dict[str, list[Point]]:
    """``name -> [(step, value), ...]`` in step order for each metric of ``spans`` (``name -> (count,
    first step, last step)``, :meth:`RunStore.metric_spans`), each at most ``max_points`` long: a short series
    whole, a long one as the minimum and maximum of each of ``(max_points - 4) // 2`` runs of steps and its
    first and last point. Values that are not numbers are ``None`` (a gap in the line), infinities the
    largest float."""
    if max_points < 6:
        raise ValueError(f"max_points must be at least 6, got {max_points}")
    short = [name for name, (count, _, _) in spans.items() if count <= max_points]
    out = {name: [(step, _plain(value)) for step, value in points]
           for name, points in store.metrics(run_id, short).items()} if short else {}  # fmt: skip
    buckets = (max_points - 4) // 2  # grouping by step // width can give one bucket more than this
    for name, (count, first, last) in spans.items():
        if count > max_points:
            width = math.ceil((last - first + 1) / buckets)
            out[name] = [(step, _plain(value)) for step, value in store.metric_extremes(run_id, name, width)]
    return out


def _plain(value: float | None) -> float | None:
    """JSON has no NaN or infinity: a missing value is ``None``, an infinite one its sign's largest float."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return math.copysign(1.7976931348623157e308, value)
    return float(value)
