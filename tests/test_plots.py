"""Checks that rewardlab.eval.plots writes real PNG files without a display."""

from __future__ import annotations

from pathlib import Path

from rewardlab.eval.plots import moving_average, plot_comparison, plot_curves, plot_training_dashboard

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert len(data) > len(PNG_MAGIC)
    assert data[: len(PNG_MAGIC)] == PNG_MAGIC


def _line(n: int, slope: float = 0.01) -> list[tuple[int, float]]:
    return [(step, slope * step) for step in range(n)]


def test_plot_curves_writes_png(tmp_path: Path) -> None:
    out = plot_curves({"a": _line(20), "b": _line(20, -0.02)}, tmp_path / "c.png", "t", "y")
    assert out == tmp_path / "c.png"
    _assert_png(out)


def test_plot_curves_smoothing_and_nested_dir(tmp_path: Path) -> None:
    out = plot_curves({"a": _line(30)}, tmp_path / "sub" / "s.png", "t", "y", smooth=5)
    _assert_png(out)


def test_plot_curves_empty_series(tmp_path: Path) -> None:
    _assert_png(plot_curves({}, tmp_path / "none.png", "t", "y"))
    _assert_png(plot_curves({"a": []}, tmp_path / "empty.png", "t", "y", smooth=3))


def test_moving_average_keeps_length() -> None:
    import numpy as np

    values = np.array([1.0, 2.0, 3.0, 4.0])
    assert np.allclose(moving_average(values, 2), [1.0, 1.5, 2.5, 3.5])
    assert np.allclose(moving_average(values, 0), values)


def _metrics(with_kl: bool) -> dict[str, list[tuple[int, float]]]:
    metrics = {
        "reward/mean": _line(12),
        "reward/std": _line(12),
        "reward/correct": _line(12),
        "reward/format": _line(12, 0.02),
        "entropy": _line(12, -0.01),
        "clip/low_fraction": _line(12, 0.001),
        "clip/high_fraction": _line(12, 0.002),
        "completion/mean_length": _line(12, 3.0),
        "loss": _line(12),
        "grad_norm": _line(12),
    }
    if with_kl:
        metrics["kl"] = _line(12, 0.001)
    return metrics


def test_dashboard_with_kl(tmp_path: Path) -> None:
    written = plot_training_dashboard(_metrics(with_kl=True), tmp_path / "dash")
    assert set(written) == {"reward", "entropy", "clip_fraction", "kl", "length"}
    assert {p.name for p in (tmp_path / "dash").iterdir()} == {
        "reward.png",
        "entropy.png",
        "clip_fraction.png",
        "kl.png",
        "length.png",
    }
    for path in written.values():
        _assert_png(path)


def test_dashboard_without_kl(tmp_path: Path) -> None:
    written = plot_training_dashboard(_metrics(with_kl=False), tmp_path)
    assert set(written) == {"reward", "entropy", "clip_fraction", "length"}
    assert not (tmp_path / "kl.png").exists()
    for path in written.values():
        _assert_png(path)


def test_plot_comparison(tmp_path: Path) -> None:
    diffs = [0.0, 0.5, -0.25, 1.0, 0.0, 0.5, 0.25]
    _assert_png(plot_comparison(diffs, tmp_path / "cmp.png", "b vs a"))
    _assert_png(plot_comparison([], tmp_path / "cmp_empty.png", "nothing"))
