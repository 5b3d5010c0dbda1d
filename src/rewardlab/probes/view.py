"""How the probes show what they found: rich tables on the console (every token wrapped in ``Text``, so a
``[bracket]`` prints as written), PNG plots with matplotlib's Agg backend, and the numbers as JSON (and CSV
for the lens) beside them."""

from __future__ import annotations

import csv
import json
import math
import warnings
from pathlib import Path

from rich.color import Color
from rich.style import Style
from rich.table import Table
from rich.text import Text

from rewardlab.console import console, print_whole
from rewardlab.errors import RewardlabError
from rewardlab.probes.entropy import EntropyProbe, Trace
from rewardlab.probes.lens import LogitLens
from rewardlab.probes.linear import LinearProbe

CELL_CHARS = 10  # a token's label in a heatmap cell
LOGPROB_FLOOR = -15.0  # the heatmap's lowest colour: p(answer) below 3e-7 all looks the same
CONTEXT_TOKENS = (10, 4)  # tokens shown before and after a forking token
FORKING_SHOWN = 12
LOW, MID, HIGH = (110, 110, 110), (230, 200, 60), (230, 60, 50)  # entropy colours: grey, yellow, red
READS = {"last": "the last token", "mean": "the mean over tokens"}  # a linear probe's --position


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _format(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


# -- logit lens: console -------------------------------------------------------------------------------


def render_lens(result: LogitLens) -> None:
    """One table per position and model: each layer's top tokens with probabilities, and the answer's rank;
    with a second model, a table of the answer's rank per layer in both."""
    for lens in result.models:
        _render_one_lens(lens)
    if result.compare is not None and result.answer_id is not None:
        print_whole(_lens_rank_table(result))


def _lens_rank_table(result: LogitLens) -> Table:
    first, second = result, result.compare
    table = Table(
        title=Text(f"rank of '{result.answer_token}' per layer, both models"),
        title_justify="left",
    )
    table.add_column("layer", justify="right", style="bold")
    for position in result.positions:
        for name in (first.model, second.model):
            table.add_column(Text(f"{position.offset}: {name}"), justify="right")
    for layer, row in enumerate(result.positions[0].rows):
        cells = []
        for a, b in zip(first.positions, second.positions, strict=True):
            cells += [str(a.rows[layer].answer_rank), str(b.rows[layer].answer_rank)]
        table.add_row(row.name, *cells)
    return table


def _render_one_lens(result: LogitLens) -> None:
    head = Text.assemble((f"{result.model}", "bold"), f": logit lens over {result.num_tokens} prompt tokens")
    if result.answer_id is not None:
        head.append(f", answer token '{result.answer_token}' (id {result.answer_id}, from {result.answer!r})")
    console.print(head, soft_wrap=True)
    for position in result.positions:
        k = len(position.rows[0].top)
        table = Table(
            title=Text(f"position {position.offset} (index {position.index}), after '{position.token}'"),
            title_justify="left",
        )
        table.add_column("layer", justify="right", style="bold")
        for rank in range(1, k + 1):
            table.add_column(f"#{rank}")
        if result.answer_id is not None:
            table.add_column(Text(f"rank of '{result.answer_token}'"), justify="right")
            table.add_column("p(answer)", justify="right")
        for row in position.rows:
            cells = [Text.assemble(label, (f" {prob:.3f}", "dim")) for _, label, prob in row.top]
            answer = [] if result.answer_id is None else [str(row.answer_rank), _format(row.answer_prob, 4)]
            table.add_row(row.name, *cells, *answer)
        print_whole(table)


# -- logit lens: files ---------------------------------------------------------------------------------


def write_lens(result: LogitLens, out_dir: str | Path) -> list[Path]:
    """``logit_lens.json`` (everything), ``logit_lens.csv`` (one row per position, layer and rank) and
    ``logit_lens.png`` (the heatmap) in ``out_dir``."""
    out = _directory(out_dir)
    paths = [out / "logit_lens.json", out / "logit_lens.csv", out / "logit_lens.png"]
    _write(paths[0], lambda path: path.write_text(json.dumps(result.to_dict(), indent=2, ensure_ascii=False)))
    _write(paths[1], lambda path: _lens_csv(result, path))
    _write(paths[2], lambda path: _save(plot_lens(result), path))
    return paths


def _lens_csv(result: LogitLens, path: Path) -> None:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", "position", "offset", "layer", "rank", "token_id", "token", "prob",
                         "answer_rank", "answer_prob", "answer_logprob"])  # fmt: skip
        for lens in result.models:
            for position in lens.positions:
                for row in position.rows:
                    for rank, (token_id, label, prob) in enumerate(row.top, start=1):
                        writer.writerow([lens.model, position.index, position.offset, row.name, rank,
                                         token_id, label, prob, row.answer_rank, row.answer_prob,
                                         row.answer_logprob])  # fmt: skip


def _lens_values(result: LogitLens):
    """(layers, positions): the answer's log-probability when there is an answer, else the top-1's."""
    import numpy as np

    by_answer = result.answer_id is not None
    return np.array(
        [[row.answer_logprob if by_answer else row.top[0][2] for row in p.rows] for p in result.positions]
    ).T


def plot_lens(result: LogitLens):
    """Layers (embeddings at the bottom) by positions, each cell the top-1 token; coloured by the answer's
    log-probability when there is an answer, else by the top-1 probability. With a second model, its
    heatmap beside on the same colour scale."""
    plt = _pyplot()
    lenses = result.models
    layers, columns = len(result.positions[0].rows), len(result.positions)
    width = max(5.0, 2.2 + 1.35 * columns)
    fig, axes = plt.subplots(1, len(lenses), figsize=(width * len(lenses), max(3.2, 1.4 + 0.32 * layers)),
                             squeeze=False)  # fmt: skip
    lowest = min(float(_lens_values(lens).min()) for lens in lenses)
    for lens, ax in zip(lenses, axes[0], strict=True):
        _draw_lens(lens, fig, ax, max(lowest, LOGPROB_FLOOR), lowest < LOGPROB_FLOOR)
    return fig


def _draw_lens(result: LogitLens, fig, ax, floor: float, clipped: bool) -> None:
    layers, columns = len(result.positions[0].rows), len(result.positions)
    by_answer = result.answer_id is not None
    values = _lens_values(result)  # (layers, positions)
    if by_answer:
        # A floor, so one hopeless layer (often the embeddings) does not wash out the rest of the scale.
        image = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis", vmin=floor, vmax=0.0)
        label = f"log p(answer token '{_plain(result.answer_token)}')"
    else:
        image = ax.imshow(values, origin="lower", aspect="auto", cmap="viridis", vmin=0.0, vmax=1.0)
        label = "top-1 probability"
    low, high = image.get_clim()
    for col, position in enumerate(result.positions):
        for layer, row in enumerate(position.rows):
            bright = (max(values[layer, col], low) - low) / (high - low or 1.0) > 0.6
            ax.text(col, layer, _plain(_cut(row.top[0][1], CELL_CHARS)), ha="center", va="center",
                    fontsize=8, color="black" if bright else "white")  # fmt: skip
    extend = "min" if by_answer and clipped else "neither"
    fig.colorbar(image, ax=ax, label=label, fraction=0.08 if columns < 3 else 0.04, extend=extend)
    ax.set_yticks(range(layers), [row.name for row in result.positions[0].rows], fontsize=8)
    ax.set_xticks(
        range(columns), [_plain(f"{p.offset}\n{_cut(p.token, CELL_CHARS)}") for p in result.positions]
    )
    ax.set_xlabel("prompt position (the lens reads the token after it)")
    ax.set_ylabel("layer (embed: the embeddings)")
    what = f", answer '{_plain(result.answer or '')}'" if by_answer else ""
    ax.set_title(f"Logit lens: {_plain(result.model)}{what}\ncell: top-1 token of that layer", fontsize=10)


# -- entropy: console ----------------------------------------------------------------------------------


def render_entropy(result: EntropyProbe) -> None:
    """Summary, each completion with its tokens coloured by entropy (forking ones bold and underlined), the
    forking tokens in context, and, with a second model, where the two differ most."""
    print_whole(_entropy_summary(result))
    console.print(_legend(result), soft_wrap=True)
    top = max((token.entropy for token in result.tokens), default=1.0) or 1.0
    for trace in result.traces:
        console.print(
            Text.assemble((trace.label, "bold"), ("  " + _cut(" ".join(trace.prompt.split()), 100), "dim"))
        )
        console.print(_coloured(trace, top), soft_wrap=True)
        console.print()
    print_whole(_forking_table(result))
    if result.compare_model is not None:
        print_whole(_differences_table(result))


def _entropy_summary(result: EntropyProbe) -> Table:
    how = f"top {result.forking_share:.0%}" if result.forking_share is not None else "at or above threshold"
    table = Table(title=f"token entropy (nats, temperature {result.temperature:g})", title_justify="left")
    for name in ("model", "completions", "tokens", "mean", "median", "max", "forking threshold", "forking"):
        table.add_column(name, justify="left" if name == "model" else "right")
    tokens = result.tokens
    rows = [(result.model, [t.entropy for t in tokens])]
    if result.compare_model is not None:
        rows.append(
            (result.compare_model, [t.compare_entropy for t in tokens if t.compare_entropy is not None])
        )
    for i, (name, values) in enumerate(rows):
        ordered = sorted(values)
        median = ordered[len(ordered) // 2] if ordered else None
        share = (
            f"{result.share_forking:.1%} ({how})"
            if i == 0
            else f"{sum(v >= result.threshold for v in values) / max(1, len(values)):.1%} above it"
        )
        numbers = [_avg(values), median, max(values, default=None), result.threshold]
        table.add_row(Text(name), str(len(result.traces)), str(len(values)), *map(_format, numbers), share)
    return table


def _avg(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _legend(result: EntropyProbe) -> Text:
    return Text.assemble(
        "colour: entropy, ",
        ("low", Style(color=Color.from_rgb(*LOW))),
        " → ",
        ("high", Style(color=Color.from_rgb(*HIGH))),
        "; ",
        ("forking", Style(bold=True, underline=True)),
        f": entropy ≥ {result.threshold:.3f} nats",
    )


def _colour(entropy: float, top: float) -> Color:
    x = min(1.0, max(0.0, entropy / top))
    a, b, t = (LOW, MID, x * 2) if x < 0.5 else (MID, HIGH, x * 2 - 1)
    return Color.from_rgb(*(round(p + (q - p) * t) for p, q in zip(a, b, strict=True)))


def _coloured(trace: Trace, top: float) -> Text:
    text = Text()
    for token in trace.tokens:
        style = Style(color=_colour(token.entropy, top), bold=token.forking, underline=token.forking)
        text.append(_printable(token.piece), style=style)
    return text


def _printable(piece: str) -> str:
    return piece.encode("utf-8", "backslashreplace").decode("utf-8")


def _context(trace: Trace, index: int) -> Text:
    before, after = CONTEXT_TOKENS
    left = "".join(t.piece for t in trace.tokens[max(0, index - before) : index])
    right = "".join(t.piece for t in trace.tokens[index + 1 : index + 1 + after])

    def flat(text: str) -> str:
        return _printable(text.replace("\n", "\\n"))

    return Text.assemble(
        ("…" + flat(left), "dim"),
        ("«" + flat(trace.tokens[index].piece) + "»", "bold red"),
        (flat(right) + "…", "dim"),
    )


def _forking_table(result: EntropyProbe) -> Table:
    found = [(t, i, token) for t, trace in enumerate(result.traces) for i, token in enumerate(trace.tokens)]
    forking = sorted((f for f in found if f[2].forking), key=lambda f: -f[2].entropy)
    table = Table(
        title=f"the most uncertain of {len(forking)} forking tokens, in context", title_justify="left"
    )
    for name in ("completion", "position", "token", "entropy", "p(token)", "context"):
        table.add_column(name, justify="right" if name in ("position", "entropy", "p(token)") else "left")
    for t, i, token in forking[:FORKING_SHOWN]:
        table.add_row(Text(result.traces[t].label), str(i), Text(token.label), _format(token.entropy),
                      _format(math.exp(token.logprob)), _context(result.traces[t], i))  # fmt: skip
    return table


def _differences_table(result: EntropyProbe) -> Table:
    table = Table(
        title=f"where {result.model} and {result.compare_model} differ most (same tokens)",
        title_justify="left",
    )
    for name in (
        "completion",
        "position",
        "token",
        result.model,
        result.compare_model,
        "difference",
        "context",
    ):
        table.add_column(
            Text(name), justify="left" if name in ("completion", "token", "context") else "right"
        )
    for d in result.differences:
        table.add_row(Text(result.traces[d.trace].label), str(d.index), Text(d.token), _format(d.entropy),
                      _format(d.compare_entropy), f"{d.compare_entropy - d.entropy:+.3f}",
                      _context(result.traces[d.trace], d.index))  # fmt: skip
    return table


# -- entropy: files ------------------------------------------------------------------------------------


def write_entropy(result: EntropyProbe, out_dir: str | Path) -> list[Path]:
    """``entropy.json`` (every token of every completion, the summary) and ``entropy.png`` in ``out_dir``."""
    return write_numbers_and_plot(out_dir, "entropy", result.to_dict(), lambda: plot_entropy(result))


def plot_entropy(result: EntropyProbe):
    """Entropy along each completion, one line each, forking tokens marked, the threshold dashed; a second
    model's entropy on the same tokens dotted in the same colour."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 4.6))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, trace in enumerate(result.traces):
        colour = colours[n % len(colours)]
        xs = range(len(trace.tokens))
        ax.plot(xs, [t.entropy for t in trace.tokens], color=colour, linewidth=1.2, label=_plain(trace.label))
        if result.compare_model is not None:
            ax.plot(xs, [t.compare_entropy for t in trace.tokens], color=colour, linewidth=1.0, linestyle=":")
        marks = [(i, t.entropy) for i, t in enumerate(trace.tokens) if t.forking]
        if marks:
            ax.scatter(
                *zip(*marks, strict=True), color=colour, s=22, zorder=3, edgecolors="black", linewidths=0.5
            )
    if not math.isnan(result.threshold):
        ax.axhline(result.threshold, color="grey", linestyle="--", linewidth=0.9,
                   label=f"forking threshold {result.threshold:.2f}")  # fmt: skip
    if result.compare_model is not None:
        ax.plot([], [], color="grey", linestyle=":", label=_plain(f"{result.compare_model} (same tokens)"))
    if len(result.traces) <= 12:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    ax.set_xlabel("completion token")
    ax.set_ylabel("entropy (nats)")
    title = f"Token entropy along completions: {_plain(result.model)}, mean {result.mean_entropy:.3f}"
    if result.compare_model is not None:
        title += (
            f"\n{_plain(result.compare_model)} on the same tokens: mean {result.compare_mean_entropy:.3f}"
        )
    ax.set_title(title + "\n(dots: forking tokens)", fontsize=10)
    ax.grid(True, alpha=0.3)
    return fig


# -- linear probe: console -----------------------------------------------------------------------------


def render_linear(result: LinearProbe) -> None:
    """One row per layer: test accuracy, the shuffled-label control and their difference, for each model;
    each model's most selective layer in bold; then the majority baseline and the best layers."""
    concept, two = result.concept, len(result.models) > 1
    head = Text.assemble(
        ("linear probe", "bold"),
        f": {concept.name} ({len(concept.rows)} rows: {len(result.train)} train, {len(result.test)} test, "
        f"split by {concept.grouped_by}), {READS[result.position]}",
    )
    console.print(head, soft_wrap=True)
    table = Table()
    table.add_column("layer", justify="right", style="bold")
    for scores in result.models:
        for name in ("accuracy", "control", "selectivity"):
            table.add_column(Text(f"{name}\n{scores.model}" if two else name), justify="right")
    for layer in range(len(result.models[0].layers)):
        cells = []
        for scores in result.models:
            score = scores.layers[layer]
            style = "bold" if score is scores.best else ""
            numbers = (f"{score.accuracy:.3f}", f"{score.control:.3f}", f"{score.selectivity:+.3f}")
            cells += [Text(number, style=style) for number in numbers]
        table.add_row(result.models[0].layers[layer].name, *cells)
    print_whole(table)
    label = concept.labels[result.majority_label]
    console.print(
        f"majority baseline {result.majority:.3f} (always {label!r}); control: the same probe on shuffled "
        "labels; selectivity: accuracy - control",
        soft_wrap=True, markup=False, highlight=False,
    )  # fmt: skip
    for scores in result.models:
        best = scores.best
        console.print(
            Text(f"{scores.model}: most selective at layer {best.name}, accuracy {best.accuracy:.3f}, "
                 f"selectivity {best.selectivity:+.3f}"),
            soft_wrap=True,
        )  # fmt: skip


# -- linear probe: files -------------------------------------------------------------------------------


def write_linear(result: LinearProbe, out_dir: str | Path) -> list[Path]:
    """``linear_probe.json`` (per model and layer the scores; every row with its label and split) and
    ``linear_probe.png`` in ``out_dir``."""
    return write_numbers_and_plot(out_dir, "linear_probe", result.to_dict(), lambda: plot_linear(result))


def plot_linear(result: LinearProbe):
    """Test accuracy per layer (solid) and the shuffled-label control (dashed), one colour per model, and
    the majority baseline as a grey line."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(6.0, 2.5 + 0.26 * len(result.models[0].layers)), 4.4))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for n, scores in enumerate(result.models):
        colour, xs = colours[n % len(colours)], [score.layer for score in scores.layers]
        ax.plot(xs, [s.accuracy for s in scores.layers], color=colour, marker="o", markersize=3.5,
                label=_plain(f"{scores.model}: accuracy"))  # fmt: skip
        ax.plot(xs, [s.control for s in scores.layers], color=colour, linestyle="--", linewidth=1.0,
                label=_plain(f"{scores.model}: control (shuffled labels)"))  # fmt: skip
    ax.axhline(result.majority, color="grey", linestyle=":", linewidth=1.2,
               label=f"majority baseline {result.majority:.2f}")  # fmt: skip
    layers = result.models[0].layers
    step = max(1, len(layers) // 16)  # a readable number of ticks
    ax.set_xticks([s.layer for s in layers][::step], [s.name for s in layers][::step], fontsize=8)
    ax.set_ylim(0.0, 1.02)
    ax.set_xlabel("layer (embed: the embeddings)")
    ax.set_ylabel("test accuracy")
    concept = result.concept
    ax.set_title(
        _plain(f"Linear probe: {concept.name} ({concept.labels[1]} vs {concept.labels[0]}), "
               f"{READS[result.position]}\n{len(result.train)} train / {len(result.test)} test rows, "
               f"split by {concept.grouped_by}"),
        fontsize=10,
    )  # fmt: skip
    ax.legend(fontsize="small", loc="best")
    ax.grid(True, alpha=0.3)
    return fig


# -- shared --------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no window, no display needed
    import matplotlib.pyplot as plt

    return plt


def _plain(text: str) -> str:
    """Text matplotlib draws as written: a ``$`` would start mathtext."""
    return text.replace("$", r"\$")


def write_numbers_and_plot(out_dir: str | Path, stem: str, numbers: dict, plot) -> list[Path]:
    """``<stem>.json`` (``numbers``) and ``<stem>.png`` (the figure ``plot()`` draws) in ``out_dir``."""
    out = _directory(out_dir)
    paths = [out / f"{stem}.json", out / f"{stem}.png"]
    _write(paths[0], lambda path: path.write_text(json.dumps(numbers, indent=2, ensure_ascii=False)))
    _write(paths[1], lambda path: _save(plot(), path))
    return paths


def _directory(out_dir: str | Path) -> Path:
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RewardlabError(f"cannot write to {out}: {error.strerror or error}") from None
    return out


def _write(path: Path, write) -> None:
    try:
        write(path)
    except OSError as error:
        raise RewardlabError(f"cannot write {path}: {error.strerror or error}") from None


def _save(fig, path: Path) -> None:
    plt = _pyplot()
    try:
        with warnings.catch_warnings():  # a token's glyph missing from the font is drawn as a box, quietly
            warnings.simplefilter("ignore", UserWarning)
            fig.tight_layout()
            fig.savefig(path, dpi=110, format="png")
    finally:
        plt.close(fig)
