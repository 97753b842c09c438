"""rul.metrics against values computed by hand in the comments, plus a few properties."""

from __future__ import annotations

import math
from itertools import product

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rul.metrics import (
    MetricInputError,
    alpha_lambda_accuracy,
    auroc,
    brier_score,
    calibration_curve,
    classification_metrics,
    expected_calibration_error,
    interval_coverage,
    mae,
    phm08_score,
    prognostic_horizon,
    prognostic_metrics,
    regression_metrics,
    rmse,
)

E = math.e

# --------------------------------------------------------------------------- regression


def test_rmse_and_mae_by_hand() -> None:
    # errors 1, -1, 3, -3: squares 1, 1, 9, 9 -> mean 5; absolute values mean 2
    assert rmse([0, 0, 0, 0], [1, -1, 3, -3]) == pytest.approx(math.sqrt(5))
    assert mae([0, 0, 0, 0], [1, -1, 3, -3]) == pytest.approx(2.0)


def test_perfect_predictions_cost_nothing() -> None:
    assert rmse([5, 7], [5, 7]) == 0.0
    assert mae([5, 7], [5, 7]) == 0.0
    assert phm08_score([5, 7], [5, 7]) == 0.0


def test_phm08_score_by_hand() -> None:
    # d = -13, 0, 10 -> (e - 1) + 0 + (e - 1)
    assert phm08_score([50, 50, 50], [37, 50, 60]) == pytest.approx(2 * (E - 1))


def test_phm08_score_penalises_late_more_than_early() -> None:
    early = phm08_score([100], [80])  # d = -20: exp(20/13) - 1
    late = phm08_score([100], [120])  # d = +20: exp(2) - 1
    assert early == pytest.approx(math.exp(20 / 13) - 1)
    assert late == pytest.approx(math.exp(2) - 1)
    assert late > early


def test_regression_metrics_by_hand() -> None:
    result = regression_metrics([50, 50, 50], [37, 50, 60])
    # errors -13, 0, 10: squares 169 + 0 + 100 = 269; absolute 23
    assert result == {
        "rmse": pytest.approx(math.sqrt(269 / 3)),
        "mae": pytest.approx(23 / 3),
        "score": pytest.approx(2 * (E - 1)),
        "n": 3,
    }


# --------------------------------------------------------------------------- classification


def test_classification_metrics_by_hand() -> None:
    y = [1, 1, 0, 0, 1, 0]
    p = [0.9, 0.4, 0.6, 0.1, 0.5, 0.5]  # >= 0.5 -> T F T F T T
    result = classification_metrics(y, p, threshold=0.5)
    # tp: 0, 4; fp: 2, 5; tn: 3; fn: 1
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (2, 2, 1, 1)
    assert result["accuracy"] == pytest.approx(3 / 6)
    assert result["precision"] == pytest.approx(2 / 4)
    assert result["recall"] == pytest.approx(2 / 3)
    assert result["f1"] == pytest.approx(2 * 2 / (2 * 2 + 2 + 1))
    assert result["threshold"] == 0.5


def test_classification_metrics_threshold_moves_the_cut() -> None:
    result = classification_metrics([True, False], [0.7, 0.7], threshold=0.8)
    assert (result["tp"], result["fp"], result["tn"], result["fn"]) == (0, 0, 1, 1)


def test_classification_metrics_zero_denominators_give_zero() -> None:
    # No positives anywhere: tp = fp = fn = 0, so precision, recall and F1 have 0/0.
    result = classification_metrics([False, False, False], [0.1, 0.2, 0.3])
    assert result["precision"] == 0.0
    assert result["recall"] == 0.0
    assert result["f1"] == 0.0
    assert result["accuracy"] == 1.0
    assert result["tn"] == 3


def test_auroc_by_hand() -> None:
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 beats 0.1 only, 0.8 beats both -> 3/4
    assert auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)


def test_auroc_ties_count_one_half() -> None:
    # pos 0.5 vs neg 0.5 tie (1/2), pos 0.5 beats 0.2, pos 0.9 beats both -> 3.5/4
    assert auroc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9]) == pytest.approx(0.875)
    assert auroc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)


def test_auroc_extremes() -> None:
    assert auroc([0, 0, 1, 1], [0.1, 0.2, 0.3, 0.4]) == 1.0
    assert auroc([0, 0, 1, 1], [0.4, 0.3, 0.2, 0.1]) == 0.0


@pytest.mark.parametrize("labels", [[0, 0, 0], [1, 1, 1]])
def test_auroc_one_class_is_nan(labels: list[int]) -> None:
    assert math.isnan(auroc(labels, [0.1, 0.5, 0.9]))


def test_auroc_accepts_scores_outside_unit_interval() -> None:
    assert auroc([0, 1], [-3.0, 12.0]) == 1.0


def test_brier_score_by_hand() -> None:
    # (0.8 - 1)^2 = 0.04, (0.3 - 0)^2 = 0.09 -> mean 0.065
    assert brier_score([1, 0], [0.8, 0.3]) == pytest.approx(0.065)


def test_calibration_curve_by_hand() -> None:
    curve = calibration_curve([0, 1, 1, 0, 1], [0.1, 0.3, 0.5, 0.7, 1.0], n_bins=2)
    # [0, 0.5): 0.1, 0.3 -> mean 0.2, observed 1/2; [0.5, 1]: 0.5, 0.7, 1.0 -> 2.2/3, 2/3
    assert curve["bin_edges"] == [0.0, 0.5, 1.0]
    assert curve["count"] == [2, 3]
    assert curve["mean_predicted"] == pytest.approx([0.2, 2.2 / 3])
    assert curve["observed_frequency"] == pytest.approx([0.5, 2 / 3])


def test_calibration_curve_empty_bins_have_zero_count_and_nan_means() -> None:
    curve = calibration_curve([0, 1], [0.1, 0.2], n_bins=4)
    assert curve["count"] == [2, 0, 0, 0]
    assert curve["mean_predicted"][0] == pytest.approx(0.15)
    assert all(math.isnan(v) for v in curve["mean_predicted"][1:])
    assert all(math.isnan(v) for v in curve["observed_frequency"][1:])


def test_calibration_curve_values_on_edges() -> None:
    # 0.3 opens [0.3, 0.4); 1.0 closes the last bin; 0.0 opens the first.
    curve = calibration_curve([0, 0, 0], [0.0, 0.3, 1.0], n_bins=10)
    assert curve["bin_edges"][3] == 0.3
    assert curve["count"] == [1, 0, 0, 1, 0, 0, 0, 0, 0, 1]


def test_expected_calibration_error_by_hand() -> None:
    # Same data as above: 2/5 * |0.5 - 0.2| + 3/5 * |2/3 - 2.2/3| = 0.12 + 0.04
    ece = expected_calibration_error([0, 1, 1, 0, 1], [0.1, 0.3, 0.5, 0.7, 1.0], n_bins=2)
    assert ece == pytest.approx(0.16)


def test_expected_calibration_error_perfect_and_worst() -> None:
    assert expected_calibration_error([0, 1], [0.0, 1.0]) == 0.0
    assert expected_calibration_error([1, 0], [0.0, 1.0]) == 1.0


# --------------------------------------------------------------------------- quantiles


def test_interval_coverage_by_hand() -> None:
    # 1 in [0, 1] (edge counts), 2 in [2, 3], 3 not in [3.5, 4], 4 not in [0, 3] -> 2/4
    assert interval_coverage([1, 2, 3, 4], [0, 2, 3.5, 0], [1, 3, 4, 3]) == 0.5


def test_interval_coverage_rejects_crossed_intervals() -> None:
    with pytest.raises(MetricInputError, match="lower > upper.*first at 1"):
        interval_coverage([1, 2], [0, 3], [2, 1])


# --------------------------------------------------------------------------- prognostics

# One asset: predictions every 10 cycles from t_P = 10; t_EoL = 50 + 10 = 60.
CYCLES = [10, 20, 30, 40, 50]
TRUE_RUL = [50, 40, 30, 20, 10]


def test_alpha_lambda_accuracy_by_hand() -> None:
    pred = [0, 47, 37, 17, 100]
    result = alpha_lambda_accuracy(CYCLES, TRUE_RUL, pred, alpha=0.2, lambdas=(0, 0.25, 0.5, 0.75))
    # t_lambda = 10 + lambda * 50
    # 0    -> 10   -> cycle 10, true 50, band [40, 60], pred 0   -> False
    # 0.25 -> 22.5 -> cycle 20, true 40, band [32, 48], pred 47  -> True
    # 0.5  -> 35   -> cycle 30, true 30, band [24, 36], pred 37  -> False
    # 0.75 -> 47.5 -> cycle 40, true 20, band [16, 24], pred 17  -> True
    assert result == {0: False, 0.25: True, 0.5: False, 0.75: True}


def test_alpha_lambda_accuracy_after_last_prediction_is_none() -> None:
    # lambda = 1 -> t_lambda = t_EoL = 60, after the last prediction at cycle 50.
    result = alpha_lambda_accuracy(CYCLES, TRUE_RUL, TRUE_RUL, lambdas=(0.5, 1.0))
    assert result == {0.5: True, 1.0: None}


def test_alpha_lambda_accuracy_run_to_failure_reaches_lambda_one() -> None:
    # True RUL 0 at the last cycle: t_lambda = 1 is that cycle, and band [0, 0] holds pred 0.
    result = alpha_lambda_accuracy([1, 2, 3], [2, 1, 0], [2, 1, 0], lambdas=(1.0,))
    assert result == {1.0: True}


def test_prognostic_horizon_requires_staying_in_band() -> None:
    # band: true RUL +- 0.2 * 60 = +-12
    # errors 30, 5, 5, 15, 5: in band at 20 and 30, out at 40, in at 50 -> stays from 50 only
    pred = [80, 45, 35, 35, 15]
    assert prognostic_horizon(CYCLES, TRUE_RUL, pred, alpha=0.2) == 60 - 50


def test_prognostic_horizon_by_hand() -> None:
    # errors 30, 5, 5, 5, 5 -> in band from cycle 20 on -> PH = 60 - 20
    assert prognostic_horizon(CYCLES, TRUE_RUL, [80, 45, 35, 25, 15]) == 40.0
    assert prognostic_horizon(CYCLES, TRUE_RUL, TRUE_RUL) == 50.0


def test_prognostic_horizon_zero_when_last_prediction_is_out() -> None:
    assert prognostic_horizon(CYCLES, TRUE_RUL, [50, 40, 30, 20, 30]) == 0.0


def test_prognostic_metrics_by_hand() -> None:
    # Asset A: PH 40; lambda 0.25 -> 45 in [32, 48] True; 0.5 -> 35 in [24, 36] True;
    #          0.75 -> 25 not in [16, 24] False.
    asset_a = (CYCLES, TRUE_RUL, [80, 45, 35, 25, 15])
    # Asset B (truncated): t_P = 1, t_EoL = 4 + 6 = 10; band +-2 holds every prediction ->
    #          PH = 9; lambda 0.25 -> 3.25 -> cycle 3 True; 0.5 -> 5.5 and 0.75 -> 7.75 lie
    #          after the last prediction (cycle 4): not judged.
    asset_b = ([1, 2, 3, 4], [9, 8, 7, 6], [9, 8, 7, 6])
    result = prognostic_metrics([asset_a, asset_b])
    assert result["prognostic_horizon"] == pytest.approx((40 + 9) / 2)
    assert result["alpha_lambda"] == {0.25: 1.0, 0.5: 1.0, 0.75: 0.0}
    assert result["alpha_lambda_n"] == {0.25: 2, 0.5: 1, 0.75: 1}
    assert result["n_assets"] == 2


def test_prognostic_metrics_lambda_never_defined_is_nan() -> None:
    result = prognostic_metrics([([1, 2, 3], [9, 8, 7], [9, 8, 7])], lambdas=(0.9,))
    assert math.isnan(result["alpha_lambda"][0.9])
    assert result["alpha_lambda_n"] == {0.9: 0}


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: rmse([1, 2], [1]), "mismatched lengths: y_true=2, y_pred=1"),
        (lambda: mae([], []), "y_true is empty"),
        (lambda: phm08_score([1, float("nan")], [1, 2]), "y_true has 1 non-finite.*index 1"),
        (lambda: rmse([[1, 2]], [[1, 2]]), "must be 1-D"),
        (lambda: auroc([0, 2], [0.1, 0.2]), "booleans or 0/1"),
        (lambda: brier_score([0, 1], [0.1, 1.2]), r"\[0, 1\]; index 1"),
        (lambda: classification_metrics([0, 1], [0.1, 0.2], threshold=2), "threshold"),
        (lambda: calibration_curve([0, 1], [0.1, 0.2], n_bins=0), "n_bins"),
        (lambda: interval_coverage([1], [0], [2, 3]), "mismatched lengths"),
        (lambda: alpha_lambda_accuracy([1, 1], [2, 1], [2, 1]), "strictly increasing"),
        (lambda: alpha_lambda_accuracy([1, 2], [2, 1], [2, 1], lambdas=(1.5,)), "lambda"),
        (lambda: prognostic_horizon([1, 2], [2, -1], [2, 1]), "non-negative"),
        (lambda: prognostic_horizon([1, 2], [2, 1], [2, 1], alpha=0), "alpha"),
        (lambda: prognostic_metrics([]), "trajectories is empty"),
    ],
)
def test_bad_input_raises_value_error_with_message(call, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()


# --------------------------------------------------------------------------- properties

labels_and_scores = st.integers(min_value=1, max_value=30).flatmap(
    lambda n: st.tuples(
        st.lists(st.booleans(), min_size=n, max_size=n),
        # Scores on a 0.01 grid: plenty of ties, and gaps wide enough that the transforms
        # below keep every order and every tie exactly in floating point.
        st.lists(st.integers(0, 100).map(lambda k: k / 100), min_size=n, max_size=n),
    )
)


def _pairwise_auroc(labels: list[bool], scores: list[float]) -> float:
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in product(pos, neg))
    return wins / (len(pos) * len(neg)) if pos and neg else float("nan")


def _same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


@settings(max_examples=60, deadline=None)
@given(labels_and_scores)
def test_auroc_matches_pairwise_definition(data: tuple[list[bool], list[float]]) -> None:
    labels, scores = data
    assert _same(auroc(labels, scores), _pairwise_auroc(labels, scores))


@settings(max_examples=60, deadline=None)
@given(labels_and_scores)
def test_auroc_invariant_under_monotone_transform(data: tuple[list[bool], list[float]]) -> None:
    labels, scores = data
    transformed = [s**3 + 2 * s - 7 for s in scores]  # strictly increasing
    assert _same(auroc(labels, transformed), auroc(labels, scores))


@settings(max_examples=60, deadline=None)
@given(labels_and_scores)
def test_auroc_of_complement_is_complement(data: tuple[list[bool], list[float]]) -> None:
    labels, scores = data
    assert _same(auroc(labels, [1 - s for s in scores]), 1 - auroc(labels, scores))


unit_floats = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda n: st.tuples(
            st.lists(st.booleans(), min_size=n, max_size=n),
            st.lists(unit_floats, min_size=n, max_size=n),
        )
    ),
    st.integers(1, 20),
)
def test_calibration_counts_sum_to_n_and_ece_in_unit_interval(
    data: tuple[list[bool], list[float]], n_bins: int
) -> None:
    labels, probs = data
    assert sum(calibration_curve(labels, probs, n_bins)["count"]) == len(labels)
    assert 0.0 <= expected_calibration_error(labels, probs, n_bins) <= 1.0


finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30).flatmap(
        lambda n: st.tuples(
            st.lists(finite, min_size=n, max_size=n), st.lists(finite, min_size=n, max_size=n)
        )
    )
)
def test_rmse_at_least_mae(data: tuple[list[float], list[float]]) -> None:
    truth, pred = data
    assert rmse(truth, pred) >= mae(truth, pred) - 1e-9 * (1 + mae(truth, pred))
