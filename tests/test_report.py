"""rul.report on a synthetic evaluation result: every file, its content, and the edge cases."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rul import metrics
from rul.errors import OutputError
from rul.report import PLOT_NAMES, ReportError, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
N_ENGINES = 20


@pytest.fixture
def result() -> dict[str, Any]:
    """A result shaped like rul.evaluation's, numbers from rul.metrics on seeded fake data."""
    rng = np.random.default_rng(7)
    cap, horizon = 125, 30
    true = rng.integers(1, 200, N_ENGINES).astype(float)
    rul = np.clip(np.minimum(true, cap) + rng.normal(0, 10, N_ENGINES), 0, None)
    lower, upper = np.clip(rul - 15, 0, None), rul + 15
    probability = 1 / (1 + np.exp((rul - horizon) / 5))
    labels = true <= horizon
    cycle = np.arange(1, 151)
    true_trajectory = 160.0 - cycle
    predicted = np.minimum(true_trajectory, cap) + rng.normal(0, 5, cycle.size)
    return {
        "subset": "FD001",
        "model": "runs/fd001/model.ckpt",
        "n_assets": np.int64(N_ENGINES),  # numpy scalars must come out as plain JSON numbers
        "rul_cap": cap,
        "horizon": horizon,
        "quantiles": [0.1, 0.5, 0.9],
        **metrics.regression_metrics(np.minimum(true, cap), rul),
        **{f"{k}_uncapped": v for k, v in metrics.regression_metrics(true, rul).items()},
        **metrics.classification_metrics(labels, probability, 0.5),
        "auroc": metrics.auroc(labels, probability),
        "brier": metrics.brier_score(labels, probability),
        "ece": metrics.expected_calibration_error(labels, probability),
        "calibration": metrics.calibration_curve(labels, probability),  # has NaN (empty bins)
        "coverage": metrics.interval_coverage(np.minimum(true, cap), lower, upper),
        "coverage_nominal": 0.8,
        "prognostic_horizon": np.float64(80.0),
        "alpha_lambda": {"0.25": 0.4, "0.5": 0.5, "0.75": float("nan")},
        "per_asset": {
            "asset_id": np.arange(1, N_ENGINES + 1),
            "true_rul": true,
            "rul": rul,
            "rul_lower": lower,
            "rul_upper": upper,
            "failure_probability": probability,
        },
        "trajectory": {
            "asset_id": 7,
            "cycle": cycle.tolist(),
            "true_rul": true_trajectory.tolist(),
            "rul": predicted.tolist(),
            "rul_lower": (predicted - 12).tolist(),
            "rul_upper": (predicted + 12).tolist(),
        },
    }


@pytest.fixture
def history() -> pd.DataFrame:
    epochs = np.arange(10)
    return pd.DataFrame(
        {
            "epoch": epochs,
            "train_loss": 100 * 0.7**epochs,
            "val_loss": np.r_[np.nan, 120 * 0.75 ** epochs[1:]],  # NaN where not logged
            "val_rmse": np.linspace(40, 15, 10),
        }
    )


def _per_engine_true_rul(markdown: str) -> list[float]:
    section = markdown.split("## Per-engine forecasts", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ")][1:]  # no header
    return [float(row.split(" | ")[1]) for row in rows]


def test_writes_every_file(tmp_path: Path, result: dict, history: pd.DataFrame) -> None:
    out = tmp_path / "new" / "report"  # created, parents included
    paths = write_report(result, out, history)
    assert set(paths) == {"json", "markdown", "html", *PLOT_NAMES}
    assert {p.name for p in paths.values()} == {
        "report.json", "report.md", "report.html", *(f"{n}.png" for n in PLOT_NAMES)
    }
    for path in paths.values():
        assert path.parent == out and path.stat().st_size > 0
    for name in PLOT_NAMES:
        assert paths[name].read_bytes().startswith(PNG_SIGNATURE)
    # Written through temp files and os.replace: nothing else is left in the folder.
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths.values())


def test_json_round_trips_with_nan_as_null(tmp_path: Path, result: dict) -> None:
    back = json.loads(write_report(result, tmp_path)["json"].read_text())
    assert back["n_assets"] == N_ENGINES and isinstance(back["n_assets"], int)
    for key in ("rmse", "mae", "score", "rmse_uncapped", "auroc", "brier", "ece", "coverage"):
        assert back[key] == result[key]
    assert back["prognostic_horizon"] == 80.0
    assert back["alpha_lambda"] == {"0.25": 0.4, "0.5": 0.5, "0.75": None}
    for key, values in result["per_asset"].items():
        assert back["per_asset"][key] == values.tolist()
    mean_predicted = result["calibration"]["mean_predicted"]
    assert any(math.isnan(v) for v in mean_predicted)  # the fixture does test empty bins
    assert back["calibration"]["mean_predicted"] == [None if math.isnan(v) else v
                                                     for v in mean_predicted]
    assert back["calibration"]["count"] == result["calibration"]["count"]


def test_html_is_self_contained_and_holds_the_numbers(
    tmp_path: Path, result: dict, history: pd.DataFrame
) -> None:
    page = write_report(result, tmp_path, history)["html"].read_text()
    for key in ("rmse", "mae", "score", "score_uncapped", "f1", "auroc", "brier", "ece"):
        assert f"<td>{result[key]:.4g}</td>" in page
    assert f"<td>{result['coverage']:.4g} (nominal 0.8)</td>" in page
    assert "<td>80</td>" in page and "<td>n/a</td>" in page  # horizon; lambda 0.75 undefined
    assert "FD001" in page and "runs/fd001/model.ckpt" in page
    assert page.count('src="data:image/png;base64,') == len(PLOT_NAMES)
    assert "http://" not in page and "https://" not in page
    assert not re.search(r"""(src|href)=["'](?!data:)""", page)  # no other resource at all


def test_markdown_links_plots_and_sorts_engines_by_true_rul(tmp_path: Path, result: dict) -> None:
    text = write_report(result, tmp_path)["markdown"].read_text()
    assert text.startswith("# RUL evaluation report: FD001, model runs/fd001/model.ckpt")
    assert "![Predicted vs true RUL per test engine](predicted_vs_true.png)" in text
    true_rul = _per_engine_true_rul(text)
    assert len(true_rul) == N_ENGINES
    assert true_rul == sorted(result["per_asset"]["true_rul"])
    assert "| q0.1-q0.9 interval |" in text  # interval column named by its quantiles


def test_missing_optional_keys_leave_out_their_plot(tmp_path: Path, result: dict) -> None:
    for key in ("trajectory", "alpha_lambda", "prognostic_horizon", "auroc"):
        del result[key]
    for key in ("rul_lower", "rul_upper", "failure_probability"):
        del result["per_asset"][key]
    (tmp_path / "trajectory.png").write_bytes(b"stale plot from an earlier report")
    paths = write_report(result, tmp_path, history=None)
    assert set(paths) == {"json", "markdown", "html", "predicted_vs_true", "calibration"}
    assert not (tmp_path / "trajectory.png").exists()  # not mistaken for this model's
    text = paths["markdown"].read_text()
    assert "trajectory.png" not in text and "Training curves" not in text
    assert "AUROC" not in text and "Alpha-lambda" not in text
    assert "| asset\\_id | true RUL | predicted RUL |\n" in text  # no interval, no probability
    assert paths["html"].read_text().count("data:image/png;base64,") == 2


def test_empty_history_and_minimal_result(tmp_path: Path) -> None:
    paths = write_report({"rmse": 1.5}, tmp_path, history=pd.DataFrame())
    assert set(paths) == {"json", "markdown", "html"}
    assert "<td>1.5</td>" in paths["html"].read_text()


def test_text_is_escaped_in_html_and_markdown(tmp_path: Path, result: dict) -> None:
    result["model"] = "<script>alert('x')</script>"
    result["per_asset"]["asset_id"] = [f"<b>{i}</b>" for i in range(N_ENGINES)]
    paths = write_report(result, tmp_path)
    page = paths["html"].read_text()
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "<script>" not in paths["markdown"].read_text()  # Markdown viewers render raw HTML


def test_history_with_separate_train_and_validation_rows(tmp_path: Path, result: dict) -> None:
    # Lightning's CSV logger: one row per epoch with train values, another with validation ones.
    history = pd.DataFrame(
        {
            "epoch": [0, 0, 1, 1, 2, 2],
            "train_loss": [3.0, np.nan, 2.0, np.nan, 1.5, np.nan],
            "val_loss": [np.nan, 3.5, np.nan, 2.5, np.nan, 2.0],
        }
    )
    paths = write_report(result, tmp_path, history)
    assert paths["training_curves"].read_bytes().startswith(PNG_SIGNATURE)


def test_malformed_sections_name_the_field(tmp_path: Path, result: dict) -> None:
    result["per_asset"]["rul"] = result["per_asset"]["rul"][:-1]
    with pytest.raises(ReportError, match="per_asset columns differ in length"):
        write_report(result, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written before everything rendered
    with pytest.raises(ReportError, match="history lacks column epoch"):
        write_report({}, tmp_path, pd.DataFrame({"loss": [1.0]}))


def test_missing_matplotlib_is_a_clear_error(
    tmp_path: Path, result: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # makes the import fail
    with pytest.raises(RuntimeError, match=r"pip install 'rul\[train\]'"):
        write_report(result, tmp_path)
    assert list(tmp_path.iterdir()) == []
    assert set(write_report({"rmse": 1.0}, tmp_path)) == {"json", "markdown", "html"}


def test_a_failed_write_leaves_the_earlier_report_whole(
    tmp_path: Path, result: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    earlier = write_report({"rmse": 1.0}, tmp_path)
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    # A full disk on the third file: the first two were already written (to staging).
    real_fsync, calls = os.fsync, []

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OutputError, match=r"report\.html: No space left on device; the files "
                                          r"already in .* were left as they were"):
        write_report(result, tmp_path)
    monkeypatch.undo()
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before
    assert json.loads(earlier["json"].read_text()) == {"rmse": 1.0}
    # A folder where a plot should go is found before anything is written.
    (tmp_path / "calibration.png").mkdir()
    with pytest.raises(OutputError, match=r"calibration\.png: it is a folder"):
        write_report(result, tmp_path)
    assert json.loads(earlier["json"].read_text()) == {"rmse": 1.0}
    assert not list(tmp_path.glob(".staging-*"))
