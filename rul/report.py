"""Evaluation report: JSON for machines, Markdown and one self-contained HTML page for people.

`write_report` renders every file in memory first and then writes them as one set
(`rul.io.write_files`), so a failure part-way (a malformed result, matplotlib missing, a full
disk) leaves an earlier report in the folder intact: never a half-written file, never the
text of one report beside the plots of another. The Markdown and the HTML are rendered from one
list of blocks, so the two always say the same thing.

Plots need matplotlib, an optional dependency imported only when a plot is drawn. They use the
Figure API on an Agg canvas rather than pyplot, so the caller's backend and figures are never
touched (a notebook or a server thread can call this safely).
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rul.errors import RulError
from rul.io import dumps, write_files

__all__ = ["PLOT_NAMES", "ReportError", "to_json", "write_report"]

PLOT_NAMES: tuple[str, ...] = ("predicted_vs_true", "trajectory", "calibration", "training_curves")

_TITLES = {
    "predicted_vs_true": "Predicted vs true RUL per test engine",
    "trajectory": "Predictions along one engine's life",
    "calibration": "Calibration of the failure probability",
    "training_curves": "Training curves",
}


class ReportError(RulError, ValueError):
    """A section of the result dict or the history is malformed; names the section and field."""


# --------------------------------------------------------------------------- entry point


def write_report(
    result: Mapping[str, Any], out_dir: Path | str, history: pd.DataFrame | None = None
) -> dict[str, Path]:
    """Write report.json, report.md, report.html and the PNG plots into out_dir.

    Returns the written paths by name: 'json', 'markdown', 'html' and one per plot drawn
    (see PLOT_NAMES). A plot whose data is missing from `result` (or `history` for the
    training curves) is left out, and so is its section of the text.
    """
    plots = render_plots(result, history)
    blocks = report_blocks(result, list(plots))
    files = {
        "json": ("report.json", to_json(result).encode()),
        "markdown": ("report.md", render_markdown(blocks).encode()),
        "html": ("report.html", render_html(blocks, plots).encode()),
    }
    files.update({name: (f"{name}.png", png) for name, png in plots.items()})
    # A plot left over from an earlier report in the same folder would sit beside this one's
    # text and be taken for this model's.
    stale = tuple(f"{name}.png" for name in PLOT_NAMES if name not in plots)
    written = write_files(out_dir, dict(files.values()), stale)
    return {key: written[filename] for key, (filename, _) in files.items()}


# --------------------------------------------------------------------------- JSON


def to_json(value: Any) -> str:
    """JSON text of a result dict: numpy types made plain, NaN and inf written as null."""
    return dumps(value) + "\n"


# --------------------------------------------------------------------------- input sections


def _columns(
    section: Mapping[str, Any], where: str, required: Sequence[str], optional: Sequence[str] = ()
) -> dict[str, np.ndarray]:
    """The named equal-length 1-D columns of a result section; None in a list becomes NaN."""
    missing = [key for key in required if key not in section]
    if missing:
        raise ReportError(f"{where} lacks {', '.join(missing)}; it has {', '.join(section)}")
    columns = {}
    for key in [*required, *(k for k in optional if k in section)]:
        try:
            # asset_id may be text; every other column is a number.
            array = np.asarray(section[key], dtype=object if key == "asset_id" else float)
        except (TypeError, ValueError) as err:
            raise ReportError(f"{where}.{key} is not numeric: {err}") from err
        if array.ndim != 1:
            raise ReportError(f"{where}.{key} must be a flat list, got shape {array.shape}")
        columns[key] = array
    lengths = {key: len(array) for key, array in columns.items()}
    if len(set(lengths.values())) > 1:
        raise ReportError(f"{where} columns differ in length: {lengths}")
    return columns


def _per_asset(result: Mapping[str, Any]) -> dict[str, np.ndarray]:
    optional = ("rul_lower", "rul_upper", "failure_probability")
    return _columns(result["per_asset"], "per_asset", ("asset_id", "true_rul", "rul"), optional)


def _interval_label(result: Mapping[str, Any]) -> str:
    quantiles = result.get("quantiles")
    if quantiles is None or len(quantiles) < 2:
        return "interval"
    return f"q{float(quantiles[0]):g}-q{float(quantiles[-1]):g} interval"


def _fmt(value: Any) -> str:
    """A number as people read it: 4 significant digits, n/a for a missing value."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if not isinstance(value, float):  # ints, text ids, bools as they are
        return str(value)
    return f"{value:.0f}" if abs(value) >= 1e4 else f"{value:.4g}"


# --------------------------------------------------------------------------- plots


def render_plots(result: Mapping[str, Any], history: pd.DataFrame | None) -> dict[str, bytes]:
    """PNG bytes of every plot whose data is present, by name, in PLOT_NAMES order."""
    drawn = {
        "predicted_vs_true": _plot_predicted_vs_true(result),
        "trajectory": _plot_trajectory(result),
        "calibration": _plot_calibration(result),
        "training_curves": _plot_training_curves(history),
    }
    return {name: png for name, png in drawn.items() if png is not None}


def _figure(size: tuple[float, float]) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise RuntimeError("plots need matplotlib: pip install 'rul[train]'") from err
    figure = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    # No Software tag: the same result gives the same bytes, so reports diff cleanly.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def asset_ticks(ax: Any, x: np.ndarray, asset_ids: Sequence[Any]) -> None:
    """Asset ids as x tick labels, verbatim: matplotlib would read `$...$` in an id as math
    (and fail on ids such as `x$\\foo{$`)."""
    ax.set_xticks(x, [str(a) for a in asset_ids], rotation=90, fontsize=7, parse_math=False)


def _cap_line(ax: Any, result: Mapping[str, Any]) -> None:
    cap = result.get("rul_cap")
    if cap is not None:
        ax.axhline(float(cap), color="grey", linestyle="--", linewidth=1, label=f"rul_cap {cap}")


def _error_bars(cols: dict[str, np.ndarray]) -> np.ndarray | None:
    if "rul_lower" not in cols or "rul_upper" not in cols:
        return None
    # Clipped at 0: a median outside its own interval (crossed quantiles) would give a
    # negative bar length, which matplotlib refuses.
    below = np.clip(cols["rul"] - cols["rul_lower"], 0, None)
    above = np.clip(cols["rul_upper"] - cols["rul"], 0, None)
    return np.vstack([below, above])


def _plot_predicted_vs_true(result: Mapping[str, Any]) -> bytes | None:
    if not result.get("per_asset"):
        return None
    cols = _per_asset(result)
    order = np.argsort(cols["true_rul"], kind="stable")
    x = np.arange(order.size)
    bars = _error_bars(cols)
    figure = _figure((9, 4.5))
    ax = figure.add_subplot()
    ax.plot(x, cols["true_rul"][order], color="black", linewidth=1.5, label="true RUL")
    label = "predicted RUL" if bars is None else f"predicted RUL, {_interval_label(result)}"
    ax.errorbar(
        x, cols["rul"][order], yerr=None if bars is None else bars[:, order], fmt="o",
        markersize=4, capsize=2, elinewidth=1, color="tab:blue", label=label,
    )
    _cap_line(ax, result)
    if order.size <= 40:  # few enough engines to name each one
        asset_ticks(ax, x, cols["asset_id"][order])
        ax.set_xlabel("test engine (asset_id), sorted by true RUL")
    else:
        ax.set_xlabel("test engines, sorted by true RUL (rank)")
    ax.set_ylabel("RUL (cycles)")
    ax.set_title(_TITLES["predicted_vs_true"])
    ax.legend(loc="upper left", fontsize=8)
    return _png(figure)


def _plot_trajectory(result: Mapping[str, Any]) -> bytes | None:
    if not result.get("trajectory"):
        return None
    section = result["trajectory"]
    cols = _columns(section, "trajectory", ("cycle", "true_rul", "rul"), ("rul_lower", "rul_upper"))
    figure = _figure((8, 4.5))
    ax = figure.add_subplot()
    if "rul_lower" in cols and "rul_upper" in cols:
        ax.fill_between(
            cols["cycle"], cols["rul_lower"], cols["rul_upper"], color="tab:blue", alpha=0.2,
            linewidth=0, label=f"predicted {_interval_label(result)}",
        )
    ax.plot(cols["cycle"], cols["true_rul"], color="black", linewidth=1.5, label="true RUL")
    ax.plot(cols["cycle"], cols["rul"], color="tab:blue", linewidth=1.5, label="predicted RUL")
    _cap_line(ax, result)
    ax.set_xlabel("cycle")
    ax.set_ylabel("RUL (cycles)")
    ax.set_title(f"{_TITLES['trajectory']}: engine {section.get('asset_id', '?')}",
                 parse_math=False)
    ax.legend(loc="upper right", fontsize=8)
    return _png(figure)


def _plot_calibration(result: Mapping[str, Any]) -> bytes | None:
    if not result.get("calibration"):
        return None
    section = result["calibration"]
    cols = _columns(section, "calibration", ("mean_predicted", "observed_frequency"), ("count",))
    filled = np.isfinite(cols["mean_predicted"]) & np.isfinite(cols["observed_frequency"])
    figure = _figure((5.5, 5))
    ax = figure.add_subplot()
    edges = np.asarray(section.get("bin_edges", []), dtype=float)
    if "count" in cols and edges.size == cols["count"].size + 1:
        counts = ax.twinx()
        counts.bar(edges[:-1], cols["count"], width=np.diff(edges), align="edge",
                   color="grey", alpha=0.2, label="engines per bin")
        counts.set_ylabel("engines per bin")
        ax.set_zorder(counts.get_zorder() + 1)  # the curve above the bars
        ax.patch.set_visible(False)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    ax.plot(cols["mean_predicted"][filled], cols["observed_frequency"][filled], marker="o",
            color="tab:blue", label="model")
    ax.set_xlim(-0.02, 1.02)  # room for the markers of the first and last bins
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean predicted failure probability")
    ax.set_ylabel("observed failure frequency")
    ece = result.get("ece")
    ax.set_title("Calibration" + (f" (ECE {_fmt(ece)})" if ece is not None else ""))
    ax.legend(loc="upper left", fontsize=8)
    return _png(figure)


def _plot_training_curves(history: pd.DataFrame | None) -> bytes | None:
    if history is None or history.empty:
        return None
    if "epoch" not in history.columns:
        raise ReportError(f"history lacks column epoch; it has {', '.join(map(str, history))}")
    # Lightning's CSV logger writes train and validation values on separate rows of one epoch,
    # and a cross-fitted run's history has one row per fold and epoch: the mean per epoch (NaN
    # skipped) merges both and is a no-op for one row per epoch.
    folds = history["fold"].nunique() if "fold" in history.columns else 1
    per_epoch = history.groupby("epoch").mean(numeric_only=True).sort_index()
    series = {c: per_epoch[c].dropna() for c in ("train_loss", "val_loss", "val_rmse")
              if c in per_epoch and per_epoch[c].notna().any()}
    if not series:
        return None
    figure = _figure((8, 4.5))
    ax = figure.add_subplot()
    for column, colour in (("train_loss", "tab:blue"), ("val_loss", "tab:orange")):
        if column in series:
            ax.plot(series[column].index, series[column], marker=".", color=colour,
                    label=column.replace("_", " "))
    losses = [series[c] for c in ("train_loss", "val_loss") if c in series]
    if losses and _spans_decades(np.concatenate([s.to_numpy() for s in losses])):
        ax.set_yscale("log")  # early epochs would flatten the part worth reading
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    handles, labels = ax.get_legend_handles_labels()
    if "val_rmse" in series:
        rmse_ax = ax.twinx()
        rmse_ax.plot(series["val_rmse"].index, series["val_rmse"], linestyle="--", marker=".",
                     color="tab:green", label="val rmse (right axis)")
        rmse_ax.set_ylabel("validation RMSE (cycles)")
        more_handles, more_labels = rmse_ax.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
    ax.set_title(_TITLES["training_curves"]
                 + (f" (mean over the {folds} folds' networks)" if folds > 1 else ""))
    ax.legend(handles, labels, loc="upper right", fontsize=8)
    return _png(figure)


def _spans_decades(values: np.ndarray) -> bool:
    return bool(values.min() > 0 and values.max() / values.min() > 20)


# --------------------------------------------------------------------------- report text


@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Image:
    name: str  # a plot name; the file is name + ".png"
    alt: str


Block = Heading | Paragraph | Table | Image


def report_blocks(result: Mapping[str, Any], plot_names: Sequence[str]) -> list[Block]:
    """The report as plain-text blocks, for render_markdown and render_html."""
    blocks: list[Block] = [Heading(1, _title(result))]
    summary = _summary(result)
    if summary:
        blocks.append(Paragraph(summary))
    blocks += [Heading(2, "Headline metrics"), Paragraph(_METRICS_NOTE)]
    blocks.append(Table(("metric", "value"), tuple(_headline_rows(result))))
    if plot_names:
        blocks.append(Heading(2, "Plots"))
    for name in plot_names:
        blocks += [Heading(3, _TITLES[name]), Image(name, _TITLES[name])]
        blocks.append(Paragraph(_how_to_read(name, result)))
    if result.get("per_asset"):
        blocks += [Heading(2, "Per-engine forecasts"), Paragraph(_per_asset_note(result))]
        blocks.append(_per_asset_table(result))
    return blocks


def _title(result: Mapping[str, Any]) -> str:
    parts = [str(result[k]) for k in ("subset", "model") if result.get(k) is not None]
    return "RUL evaluation report" + (": " + ", model ".join(parts) if parts else "")


def _summary(result: Mapping[str, Any]) -> str:
    parts = []
    if result.get("subset") is not None:
        parts.append(f"Subset {result['subset']}")
    if result.get("model") is not None:
        parts.append(f"model {result['model']}")
    if result.get("n_assets") is not None:
        parts.append(f"{_fmt(result['n_assets'])} test engines")
    if result.get("rul_cap") is not None:
        parts.append(f"rul_cap {_fmt(result['rul_cap'])} cycles")
    if result.get("horizon") is not None:
        parts.append(f"failure horizon {_fmt(result['horizon'])} cycles")
    if result.get("quantiles") is not None:
        parts.append("quantiles " + ", ".join(f"{float(q):g}" for q in result["quantiles"]))
    return " · ".join(parts) + ("." if parts else "")


_METRICS_NOTE = (
    "Capped errors compare the prediction with the true RUL capped at rul_cap, as the model was "
    "trained and as the C-MAPSS literature reports; uncapped ones use the real remaining life. "
    "The PHM08 score penalises late predictions (predicted RUL above the truth) more than early "
    "ones; lower is better. Classification metrics judge the failure probability "
    "P(RUL ≤ horizon) against what happened, at the stated threshold."
)


def _headline_rows(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    cap = result.get("rul_cap")
    capped = f"true RUL capped at {cap}" if cap is not None else "true RUL capped"
    threshold = result.get("threshold")
    at = f" at threshold {_fmt(threshold)}" if threshold is not None else ""
    spec = [
        (f"RMSE, cycles ({capped})", "rmse"),
        (f"MAE, cycles ({capped})", "mae"),
        (f"PHM08 score ({capped})", "score"),
        ("RMSE, cycles (uncapped)", "rmse_uncapped"),
        ("MAE, cycles (uncapped)", "mae_uncapped"),
        ("PHM08 score (uncapped)", "score_uncapped"),
        (f"Accuracy{at}", "accuracy"),
        (f"Precision{at}", "precision"),
        (f"Recall{at}", "recall"),
        (f"F1{at}", "f1"),
        (f"Confusion counts{at} (TP / FP / TN / FN)", "confusion"),
        ("AUROC", "auroc"),
        ("Brier score", "brier"),
        ("Expected calibration error (ECE)", "ece"),
    ]
    values = dict(result)
    if all(k in result for k in ("tp", "fp", "tn", "fn")):
        values["confusion"] = " / ".join(_fmt(result[k]) for k in ("tp", "fp", "tn", "fn"))
    rows = [(label, _fmt(values[key])) for label, key in spec if key in values]
    if "coverage" in result:
        nominal = result.get("coverage_nominal")
        value = _fmt(result["coverage"])
        rows.append((f"Coverage of the {_interval_label(result)}",
                     value + (f" (nominal {_fmt(nominal)})" if nominal is not None else "")))
    if "prognostic_horizon" in result:
        rows.append(("Prognostic horizon, mean cycles", _fmt(result["prognostic_horizon"])))
    rows += _alpha_lambda_rows(result)
    if "n_assets" in result:
        rows.append(("Test engines (n_assets)", _fmt(result["n_assets"])))
    return rows


def _alpha_lambda_rows(result: Mapping[str, Any]) -> list[tuple[str, str]]:
    fractions = result.get("alpha_lambda") or {}
    judged = {str(k): v for k, v in (result.get("alpha_lambda_n") or {}).items()}
    alpha = f", alpha {_fmt(result['alpha'])}" if result.get("alpha") is not None else ""
    rows = []
    for lam in sorted(fractions, key=float):
        n = judged.get(str(lam))
        value = _fmt(fractions[lam]) + (f" (of {_fmt(n)} engines)" if n is not None else "")
        rows.append((f"Alpha-lambda accuracy, fraction of engines (lambda {lam}{alpha})", value))
    return rows


def _how_to_read(name: str, result: Mapping[str, Any]) -> str:
    interval = _interval_label(result)
    nominal = result.get("coverage_nominal")
    share = f"about {float(nominal):.0%} of" if nominal is not None else "most"
    horizon = result.get("horizon")
    within = f"within {_fmt(horizon)} cycles" if horizon is not None else "within the horizon"
    asset = (result.get("trajectory") or {}).get("asset_id", "?")
    texts = {
        "predicted_vs_true": (
            "One column per test engine, sorted by true RUL (black line) so the engines "
            "closest to failure are on the left. Dots are the predicted RUL at each engine's "
            f"last observed cycle; bars span the {interval}, which should hold the true RUL for "
            f"{share} the engines. Above the dashed rul_cap line the truth exceeds anything the "
            "model was trained to predict, so predictions level off there by design: judge the "
            "model mainly on the left, where maintenance decisions are made."
        ),
        "trajectory": (
            f"Engine {asset} over its whole test life: the black line is the true RUL, falling "
            "one cycle per cycle; the blue line is the prediction made at each cycle, with the "
            f"{interval} shaded. Early in life the prediction sits near rul_cap by design. A "
            "good model meets the black line as failure approaches and its band narrows."
        ),
        "calibration": (
            "Engines grouped by predicted failure probability (of failing "
            f"{within}). Each point is one bin: the mean predicted probability against the "
            "fraction of those engines that did fail. On the diagonal the probabilities can be "
            "taken at face value; below it the model over-states the risk, above it it "
            "under-states it. Grey bars (right axis) count the engines per bin: a point resting "
            "on few engines is noisy. ECE is the count-weighted distance from the diagonal."
        ),
        "training_curves": (
            "Loss on the training and validation engines per epoch. Both should fall and level "
            "off; a validation loss that turns upward while the training loss keeps falling is "
            "overfitting. Validation RMSE in cycles (right axis) is shown when it was logged."
        ),
    }
    return texts[name]


def _per_asset_note(result: Mapping[str, Any]) -> str:
    horizon = result.get("horizon")
    event = f"RUL ≤ {_fmt(horizon)} cycles" if horizon is not None else "RUL ≤ horizon"
    return (
        "Sorted by true RUL, closest to failure first. The predicted RUL and its interval are "
        f"those at each engine's last observed cycle; failure probability is P({event})."
    )


def _per_asset_table(result: Mapping[str, Any]) -> Table:
    cols = _per_asset(result)
    has_interval = "rul_lower" in cols and "rul_upper" in cols
    has_probability = "failure_probability" in cols
    header = ["asset_id", "true RUL", "predicted RUL"]
    header += [_interval_label(result)] if has_interval else []
    header += ["failure probability"] if has_probability else []
    rows = []
    for i in np.argsort(cols["true_rul"], kind="stable"):  # NaN truth sorts last
        row = [_fmt(cols["asset_id"][i]), _fmt(cols["true_rul"][i]), _fmt(cols["rul"][i])]
        if has_interval:
            row.append(f"{_fmt(cols['rul_lower'][i])} to {_fmt(cols['rul_upper'][i])}")
        if has_probability:
            row.append(_fmt(cols["failure_probability"][i]))
        rows.append(tuple(row))
    return Table(tuple(header), tuple(rows))


# --------------------------------------------------------------------------- renderers

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def _md(text: str) -> str:
    # Markdown viewers render raw HTML, so a model name is escaped for HTML as well.
    return html.escape(_MD_SPECIAL.sub(r"\\\1", text), quote=False)


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown text of the blocks; images link the PNG files written beside it."""
    parts = []
    for block in blocks:
        match block:
            case Heading(level, text):
                parts.append("#" * level + " " + _md(text))
            case Paragraph(text):
                parts.append(_md(text))
            case Table(header, rows):
                lines = ["| " + " | ".join(_md(h) for h in header) + " |"]
                lines.append("|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|")
                lines += ["| " + " | ".join(_md(c) for c in row) + " |" for row in rows]
                parts.append("\n".join(lines))
            case Image(name, alt):
                parts.append(f"![{_md(alt)}]({name}.png)")
    return "\n\n".join(parts) + "\n"


_CSS = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto;
       padding: 0 1rem; color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border-bottom: 1px solid #ddd; padding: 0.25rem 0.75rem; }
th { text-align: left; background: #f4f4f4; }
td:not(:first-child) { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; height: auto; }
figure { margin: 1rem 0; }
"""


def render_html(blocks: Sequence[Block], plots: Mapping[str, bytes]) -> str:
    """One self-contained HTML page: inline CSS, PNGs as data URIs, nothing loaded from away."""
    title = next((b.text for b in blocks if isinstance(b, Heading)), "RUL evaluation report")
    body = "\n".join(_html_block(block, plots) for block in blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n"
        f"<body>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: Block, plots: Mapping[str, bytes]) -> str:
    esc = html.escape
    match block:
        case Heading(level, text):
            return f"<h{level}>{esc(text)}</h{level}>"
        case Paragraph(text):
            return f"<p>{esc(text)}</p>"
        case Table(header, rows):
            head = "".join(f"<th>{esc(h)}</th>" for h in header)
            body = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>\n" for row in rows
            )
            return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"
        case Image(name, alt):
            data = base64.b64encode(plots[name]).decode("ascii")
            return f'<figure><img src="data:image/png;base64,{data}" alt="{esc(alt)}"></figure>'
    raise TypeError(f"unknown report block {block!r}")
