"""Static PNG plots of training runs and paired comparisons.

Selects matplotlib's Agg backend on import so plotting never opens a window or needs a display, which
keeps it safe on headless training machines and in tests.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

Series = list[tuple[int, float]]

_DPI = 110
_FIGSIZE = (6.4, 3.6)


def _new_figure() -> tuple[Figure, Axes]:
    """A figure of the shared size, so every plot of a run lines up in a report."""
    fig, ax = plt.subplots(figsize=_FIGSIZE)
    return fig, ax


def _save(fig: Figure, path: str | Path) -> Path:
    """Write the PNG and close the figure, so long runs that plot often do not leak memory."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        fig.tight_layout()
        fig.savefig(out, dpi=_DPI, format="png")
    finally:
        plt.close(fig)
    return out


def _no_data(ax: Axes) -> None:
    """Say so on the canvas instead of failing: an empty plot is still a useful report entry."""
    ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes, color="gray")


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over up to ``window`` points; the first points average what exists so far.

    Keeps the output as long as the input, so the smoothed line starts at the first step.
    """
    if window <= 1 or values.size == 0:
        return values.astype(np.float64)
    cumsum = np.cumsum(np.insert(values.astype(np.float64), 0, 0.0))
    idx = np.arange(1, values.size + 1)
    start = np.maximum(idx - window, 0)
    return (cumsum[idx] - cumsum[start]) / (idx - start)


def _draw_series(ax: Axes, label: str, points: Series, smooth: int) -> bool:
    """Draw one series sorted by step; with smoothing, the raw line stays faint underneath."""
    if not points:
        return False
    ordered = sorted(points)
    steps = np.array([step for step, _ in ordered], dtype=np.float64)
    values = np.array([value for _, value in ordered], dtype=np.float64)
    if smooth > 1:
        (raw,) = ax.plot(steps, values, alpha=0.25, linewidth=1.0)
        ax.plot(steps, moving_average(values, smooth), color=raw.get_color(), linewidth=1.6, label=label)
    else:
        ax.plot(steps, values, linewidth=1.4, label=label)
    return True


def plot_curves(
    series: dict[str, Series],
    path: str | Path,
    title: str,
    ylabel: str,
    smooth: int = 0,
) -> Path:
    """One line per named series of (step, value); ``smooth`` > 1 adds a moving average of that window."""
    fig, ax = _new_figure()
    drawn = [_draw_series(ax, label, points, smooth) for label, points in series.items()]
    if any(drawn):
        ax.legend(fontsize="small", loc="best")
        ax.grid(True, alpha=0.3)
    else:
        _no_data(ax)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    return _save(fig, path)


def _reward_series(metrics: dict[str, Series]) -> dict[str, Series]:
    """Mean reward first, then every 'reward/<component>' (the std is spread, not a component)."""
    series: dict[str, Series] = {}
    if "reward/mean" in metrics:
        series["mean"] = metrics["reward/mean"]
    for name, points in sorted(metrics.items()):
        if name.startswith("reward/") and name not in ("reward/mean", "reward/std"):
            series[name.removeprefix("reward/")] = points
    return series


def plot_training_dashboard(metrics: dict[str, Series], out_dir: str | Path) -> dict[str, Path]:
    """The standard plots of one run, so every run is read the same way; returns name -> written path.

    Writes reward, entropy, clip_fraction and length always (with a 'no data' note when a metric is
    missing) and kl only when the run logged it, since KL-free training is a deliberate choice.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    smooth = 5
    written = {
        "reward": plot_curves(_reward_series(metrics), out / "reward.png", "Reward", "reward", smooth),
        "entropy": plot_curves(
            {"entropy": metrics.get("entropy", [])}, out / "entropy.png", "Policy entropy", "nats", smooth
        ),
        "clip_fraction": plot_curves(
            {
                "low": metrics.get("clip/low_fraction", []),
                "high": metrics.get("clip/high_fraction", []),
            },
            out / "clip_fraction.png",
            "Clipped token fraction",
            "fraction",
            smooth,
        ),
    }
    if "kl" in metrics:
        written["kl"] = plot_curves({"kl": metrics["kl"]}, out / "kl.png", "KL to reference", "kl", smooth)
    written["length"] = plot_curves(
        {"mean length": metrics.get("completion/mean_length", [])},
        out / "length.png",
        "Completion length",
        "tokens",
        smooth,
    )
    return written


def plot_comparison(per_example_diffs: list[float], path: str | Path, title: str) -> Path:
    """Histogram of per-example differences (b - a): shows whether a gain is broad or a few outliers."""
    fig, ax = _new_figure()
    diffs = np.asarray(per_example_diffs, dtype=np.float64)
    if diffs.size == 0:
        _no_data(ax)
    else:
        bins = int(min(40, max(5, round(np.sqrt(diffs.size)))))
        ax.hist(diffs, bins=bins, color="tab:blue", alpha=0.75)
        ax.axvline(0.0, color="black", linewidth=1.0, linestyle="--", label="0")
        mean = float(diffs.mean())
        ax.axvline(mean, color="tab:red", linewidth=1.4, label=f"mean {mean:+.3f}")
        ax.legend(fontsize="small", loc="best")
    ax.set_title(title)
    ax.set_xlabel("difference (b - a)")
    ax.set_ylabel("examples")
    return _save(fig, path)


def plot_panels(panels: dict[str, dict[str, Series]], path: str | Path, smooth: int = 5) -> Path:
    """Several small curve plots in one PNG (one savefig: a run's report costs a fraction of a second).

    ``panels`` maps a panel title to its named series; a panel without data says so.
    """
    columns = 2
    rows = max(1, -(-len(panels) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(_FIGSIZE[0] * 1.6, _FIGSIZE[1] * 0.8 * rows), squeeze=False
    )
    flat = list(axes.flat)
    for ax, (title, series) in zip(flat, panels.items(), strict=False):
        drawn = [_draw_series(ax, label, points, smooth) for label, points in series.items()]
        if any(drawn):
            if len(series) > 1:
                ax.legend(fontsize="x-small", loc="best")
            ax.grid(True, alpha=0.3)
        else:
            _no_data(ax)
        ax.set_title(title, fontsize="medium")
        ax.set_xlabel("step", fontsize="small")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole
    for ax in flat[len(panels) :]:
        ax.set_visible(False)
    return _save(fig, path)


def plot_eval_overview(example_rewards: list[float], pass_at: dict[int, float], path: str | Path) -> Path:
    """An evaluation at a glance: how rewards spread over examples, and pass@k against k."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(_FIGSIZE[0] * 1.6, _FIGSIZE[1] * 0.9))
    rewards = np.asarray(example_rewards, dtype=np.float64)
    if rewards.size:
        left.hist(
            rewards, bins=int(min(30, max(5, round(np.sqrt(rewards.size))))), color="tab:blue", alpha=0.8
        )
        left.axvline(
            float(rewards.mean()), color="tab:red", linewidth=1.4, label=f"mean {rewards.mean():.3f}"
        )
        left.legend(fontsize="small", loc="best")
    else:
        _no_data(left)
    left.set_title("Mean reward per example", fontsize="medium")
    left.set_xlabel("reward")
    left.set_ylabel("examples")
    if pass_at:
        ks = sorted(pass_at)
        right.plot(ks, [pass_at[k] for k in ks], marker="o")
        right.set_xscale("log", base=2)
        right.set_xticks(ks, [str(k) for k in ks])
        right.set_ylim(0, 1.02)
        right.grid(True, alpha=0.3)
    else:
        _no_data(right)
    right.set_title("pass@k", fontsize="medium")
    right.set_xlabel("k")
    return _save(fig, path)
