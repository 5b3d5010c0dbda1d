"""How ``rewardlab data inspect`` shows an :class:`~rewardlab.data.inspect.Inspection`: rich tables on the
console (every value from the file wrapped in ``Text``, so a prompt's ``[brackets]`` print as written) and
PNG plots with matplotlib's Agg backend (files only, no display needed), each titled, labelled and with its
counts on the bars.
"""

from __future__ import annotations

import math
from pathlib import Path

from rich.table import Table
from rich.text import Text

from rewardlab.console import console, print_whole
from rewardlab.data.inspect import SAMPLE_SEED, SHOWN_CLASSES, Inspection, Label, label_order
from rewardlab.errors import RewardlabError

SAMPLE_PROMPT_CHARS = 160
SAMPLE_ANSWER_CHARS = 60


# -- tables --------------------------------------------------------------------------------------------


def _shown(label: Label) -> str:
    text = "(none)" if label is None else str(label)
    return text.encode("utf-8", "backslashreplace").decode("utf-8")  # a lone surrogate prints as its escape


def _share(count: int, total: int) -> str:
    return f"{100 * count / total:.1f}%" if total else "-"


def _cut(text: str, limit: int) -> str:
    text = _shown(" ".join(text.split()))  # one line in the table, printable
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shown_classes(result: Inspection) -> list[Label]:
    """The classes tables and plots show: all, or the most common when there are too many."""
    common = [label for label, _ in result.classes.most_common(SHOWN_CLASSES)]
    return sorted(common, key=label_order)


def render_inspection(result: Inspection) -> None:
    """Print the inspection as tables (whole lines when piped), each under a line that says what it is."""
    console.print(Text(f"{result.path}: {result.rows} rows", style="bold"), soft_wrap=True)
    for note in result.notes:
        console.print(Text(f"note: {note}", style="yellow"), soft_wrap=True)
    levels = sorted(result.levels, key=label_order)
    if levels:
        table = _table(("level", "left"), ("rows", "right"), ("share", "right"))
        for level in levels:
            count = result.levels[level]
            table.add_row(Text(_shown(level)), str(count), _share(count, result.rows))
        _titled("rows per level", table)
    if result.balance:
        classes = shown_classes(result)
        cut = (
            f"; the {len(classes)} most common of {len(result.classes)}"
            if len(classes) < len(result.classes)
            else ""
        )
        _titled(
            f"rows per class of {result.balance} (from {result.balance_from}){cut}",
            _class_table(result, classes, levels),
        )
    if result.rejected_file is not None:
        total = sum(result.rejected.values())
        table = _table(("reason", "left"), ("rejected", "right"), ("share", "right"))
        for reason, count in result.rejected.most_common():
            table.add_row(Text(_shown(reason)), str(count), _share(count, total))
        _titled(f"rejected: {total} in {result.rejected_file.name}", table)
    table = _table(("", "left"), ("p50", "right"), ("p95", "right"), ("max", "right"))
    for name, stats in result.lengths.items():
        table.add_row(
            name, *(["-"] * 3 if stats is None else [str(stats.p50), str(stats.p95), str(stats.max)])
        )
    _titled("lengths", table)
    console.print(
        f"duplicate prompts: {_many(result.duplicate_prompts, 'row')} repeating an earlier prompt "
        f"({_many(result.repeated_prompts, 'prompt')} occurring more than once, {result.conflicting_prompts} "
        f"of them with different answers)",
        soft_wrap=True,
    )
    if result.samples:
        _titled(
            f"{_many(len(result.samples), 'sample row')} (drawn with seed {SAMPLE_SEED})", _samples(result)
        )


def _samples(result: Inspection) -> Table:
    """Line, level and class (when the rows have any), the prompt and answer cut to one table line."""
    table = _table(("line", "right"))
    if result.levels:
        table.add_column("level")
    if result.balance:
        table.add_column("class")
    table.add_column("prompt")
    table.add_column("answer")
    for sample in result.samples:
        cells = [str(sample.line)]
        cells += [Text(_shown(sample.level))] if result.levels else []
        cells += [Text(_shown(sample.label))] if result.balance else []
        prompt = Text(_cut(sample.prompt, SAMPLE_PROMPT_CHARS))
        table.add_row(*cells, prompt, Text(_cut(sample.answer, SAMPLE_ANSWER_CHARS)))
    return table


def _many(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _table(*columns: tuple[str, str]) -> Table:
    table = Table()
    for name, justify in columns:
        table.add_column(name, justify=justify)
    return table


def _titled(title: str, table: Table) -> None:
    """The title on a line of its own: as a table's title it would wrap at the table's width."""
    console.print(Text(title, style="bold"), soft_wrap=True)
    print_whole(table)


def _class_table(result: Inspection, classes: list[Label], levels: list[Label]) -> Table:
    """Rows per class, and per level beside them when the rows have levels (the totals in the footer)."""
    table = Table(show_footer=bool(levels))
    table.add_column(Text(result.balance or ""), footer="all classes")
    for level in levels:
        table.add_column(f"level {_shown(level)}", justify="right", footer=str(result.levels[level]))
    table.add_column("rows", justify="right", footer=str(result.rows))
    table.add_column("share", justify="right", footer=_share(result.rows, result.rows))
    for label in classes:
        per_level = [str(result.cross[level, label]) for level in levels]
        count = result.classes[label]
        table.add_row(Text(_shown(label)), *per_level, str(count), _share(count, result.rows))
    return table


# -- plots ---------------------------------------------------------------------------------------------


def plot_inspection(result: Inspection, out_dir: str | Path) -> list[Path]:
    """Write the dataset's plots as PNGs into ``out_dir``: prompt lengths (stacked by level), rows per
    level, rows per class (grouped by level), rejected reasons; each only when there is something to draw.
    Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt

    drawers = [
        (name, draw)
        for name, draw, wanted in [
            ("prompt_length.png", _plot_prompt_lengths, result.rows > 0),
            ("levels.png", _plot_levels, bool(result.levels)),
            ("classes.png", _plot_classes, bool(result.classes)),
            ("rejected.png", _plot_rejected, bool(result.rejected)),
        ]
        if wanted
    ]
    out = Path(out_dir)
    try:
        if drawers:
            out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RewardlabError(f"cannot write plots to {out}: {error.strerror or error}") from None
    written = []
    for name, draw in drawers:
        fig = draw(result, plt)
        try:
            fig.tight_layout()
            fig.savefig(out / name, dpi=110, format="png")
        except OSError as error:
            raise RewardlabError(f"cannot write {out / name}: {error.strerror or error}") from None
        finally:
            plt.close(fig)
        written.append(out / name)
    return written


def _bars_labelled(ax, containers, crowded: bool = False) -> None:
    for container in containers:
        ax.bar_label(container, fontsize="x-small" if crowded else "small", padding=2)


def _plot_prompt_lengths(result: Inspection, plt):
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    lengths = np.array(result.prompt_chars)
    # Whole characters per bin, at most 40 bins: fractional bins would split lengths unevenly.
    width = max(1, math.ceil((lengths.max() - lengths.min() + 1) / 40))
    edges = np.arange(lengths.min(), lengths.max() + width + 1, width) - 0.5
    levels = sorted(result.levels, key=label_order)
    if levels:
        by_level = [lengths[[level == row for row in result.row_levels]] for level in levels]
        labels = [f"level {_shown(level)} ({result.levels[level]} rows)" for level in levels]
        ax.hist(by_level, bins=edges, stacked=True, label=labels, edgecolor="white", linewidth=0.4)
        ax.legend(fontsize="small")
        ax.set_title(f"Prompt length, stacked by level ({result.rows} rows)")
    else:
        ax.hist(lengths, bins=edges, edgecolor="white", linewidth=0.4)
        ax.set_title(f"Prompt length ({result.rows} rows)")
    ax.set_xlabel("prompt length (characters)")
    ax.set_ylabel("rows")
    ax.grid(True, axis="y", alpha=0.3)
    return fig


def _plot_levels(result: Inspection, plt):
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    levels = sorted(result.levels, key=label_order)
    bars = ax.bar([_shown(level) for level in levels], [result.levels[level] for level in levels])
    _bars_labelled(ax, [bars])
    ax.margins(y=0.12)
    ax.set_title(f"Rows per level ({result.rows} rows)")
    ax.set_xlabel("level")
    ax.set_ylabel("rows")
    return fig


def _plot_classes(result: Inspection, plt):
    import numpy as np

    classes = shown_classes(result)
    levels = sorted(result.levels, key=label_order) or [None]
    bars = len(classes) * len(levels)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.4, 0.3 * bars + 2)), 4.4))
    positions = np.arange(len(classes))
    width = 0.8 / len(levels)
    containers = []
    for i, level in enumerate(levels):
        counts = [result.cross[level, label] for label in classes]
        name = f"level {_shown(level)}" if result.levels else None
        containers.append(ax.bar(positions + (i - (len(levels) - 1) / 2) * width, counts, width, label=name))
    _bars_labelled(ax, containers, crowded=bars > 24)
    ax.set_xticks(positions, [_cut(_shown(label), 24) for label in classes])
    if max(len(_shown(label)) for label in classes) * len(classes) > 60:  # names that would run together
        plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    if result.levels:  # beside the plot: inside, it would cover bars
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    more = (
        f", the {len(classes)} most common of {len(result.classes)}"
        if len(classes) < len(result.classes)
        else ""
    )
    ax.set_title(f"Rows per class of {result.balance}{' by level' if result.levels else ''}{more}")
    ax.margins(y=0.12)
    ax.set_xlabel(result.balance)
    ax.set_ylabel("rows")
    return fig


def _plot_rejected(result: Inspection, plt):
    reasons = result.rejected.most_common(SHOWN_CLASSES)
    fig, ax = plt.subplots(figsize=(7.2, max(2.4, 0.45 * len(reasons) + 1.4)))
    bars = ax.barh([_cut(_shown(reason), 48) for reason, _ in reasons], [count for _, count in reasons])
    _bars_labelled(ax, [bars])
    ax.invert_yaxis()  # the most common on top
    ax.margins(x=0.15)
    total = sum(result.rejected.values())
    ax.set_title(f"Rejected rows by reason ({total} in {result.rejected_file.name})")
    ax.set_xlabel("rejected rows")
    ax.set_ylabel("reason")
    return fig
