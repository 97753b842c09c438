"""The one windowing function: shapes, padding, ends, and strided views."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rul.split import fold_assets, life_fractions, split_assets, truncate_assets
from rul.targets import capped, failure_label, rul_per_row
from rul.windowing import make_windows


def _rows(lengths: list[int], features: int = 2) -> np.ndarray:
    # Row r holds r in every feature, so a window shows which rows it took.
    return np.repeat(np.arange(sum(lengths), dtype=np.float64)[:, None], features, axis=1)


def test_full_windows_by_hand() -> None:
    w = make_windows(_rows([2, 5]), np.array([2, 5]), 3, stride=2)
    assert w.array()[:, :, 0].tolist() == [[0, 0, 1], [2, 3, 4], [4, 5, 6]]
    assert w.padded.tolist() == [1, 0, 0]
    assert w.end_rows.tolist() == [1, 4, 6]
    assert w.asset_index.tolist() == [0, 1, 1]


def test_last_windows_one_per_asset() -> None:
    w = make_windows(_rows([2, 5, 3]), np.array([2, 5, 3]), 4, ends="last")
    assert w.array()[:, :, 0].tolist() == [[0, 0, 0, 1], [3, 4, 5, 6], [7, 7, 8, 9]]
    assert w.padded.tolist() == [2, 0, 1]


def test_array_is_a_gather_of_a_strided_view() -> None:
    values = _rows([40, 30])
    w = make_windows(values, np.array([40, 30]), 10)
    assert np.shares_memory(w.values, w.values) and w.values.shape == values.shape
    np.testing.assert_array_equal(w.batch(np.arange(len(w))), w.array())


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="ends"):
        make_windows(_rows([3]), np.array([3]), 2, ends="middle")
    with pytest.raises(ValueError, match="add up"):
        make_windows(_rows([3]), np.array([4]), 2)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(1, 40), min_size=1, max_size=6),
       window=st.integers(1, 25), stride=st.integers(1, 5),
       ends=st.sampled_from(["full", "every", "last"]))
def test_window_invariants(lengths: list[int], window: int, stride: int, ends: str) -> None:
    values = _rows(lengths)
    w = make_windows(values, np.array(lengths), window, stride=stride, ends=ends)
    x = w.array()
    assert x.shape[1:] == (window, 2)
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    for i in range(len(w)):
        rows = x[i, :, 0]
        # Ends at its end row, takes consecutive rows of one asset, padding repeats the first.
        assert rows[-1] == w.end_rows[i]
        p = w.padded[i]
        if p > 0:
            assert (rows[:p + 1] == first[w.asset_index[i]]).all()
        assert (np.diff(rows[p:]) == 1).all()
    per_asset = np.bincount(w.asset_index, minlength=len(lengths))
    if ends == "last":
        assert (per_asset == 1).all()
    elif ends == "every":
        assert (per_asset == (np.array(lengths) - 1) // stride + 1).all()
        assert set(np.cumsum(lengths) - 1) <= set(w.end_rows.tolist())
    else:  # every asset's last cycle is an end, and ends are `stride` apart
        last_rows = np.cumsum(lengths) - 1
        assert set(last_rows) <= set(w.end_rows.tolist())
        assert (w.padded[per_asset[w.asset_index] > 1] == 0).all()


def test_targets_for_run_to_failure_and_test_data(sim) -> None:
    rul = rul_per_row(sim.train)
    lengths = sim.train.lengths()
    assert rul[lengths[0] - 1] == 0 and rul[0] == lengths[0] - 1
    test_rul = rul_per_row(sim.test, sim.test_rul)
    assert test_rul[sim.test.lengths()[0] - 1] == sim.test_rul[0]
    assert capped(np.array([200.0, 50.0]), 125).tolist() == [125, 50]
    assert failure_label(np.array([30, 31]), 30).tolist() == [True, False]


def test_split_is_by_whole_assets_and_seeded(sim) -> None:
    train, val = split_assets(sim.train, 0.25, seed=1)
    assert set(train.asset_ids).isdisjoint(val.asset_ids)
    assert train.n_assets + val.n_assets == sim.train.n_assets and val.n_assets == 6
    again = split_assets(sim.train, 0.25, seed=1)[1]
    assert list(again.asset_ids) == list(val.asset_ids)
    assert list(split_assets(sim.train, 0.25, seed=2)[1].asset_ids) != list(val.asset_ids)


def test_folds_validate_every_asset_exactly_once(sim) -> None:
    folds = fold_assets(sim.train, 5, seed=3)
    validated = [a for _, val in folds for a in val.asset_ids]
    assert sorted(validated) == sorted(sim.train.asset_ids)  # each asset once
    assert sorted(val.n_assets for _, val in folds) == [4, 5, 5, 5, 5]  # 24 assets in 5 folds
    for train, val in folds:
        assert set(train.asset_ids).isdisjoint(val.asset_ids)
        assert train.n_assets + val.n_assets == sim.train.n_assets
    again = fold_assets(sim.train, 5, seed=3)
    assert [list(v.asset_ids) for _, v in again] == [list(v.asset_ids) for _, v in folds]
    with pytest.raises(ValueError, match="24 assets cannot be dealt into 25 folds"):
        fold_assets(sim.train, 25, seed=0)


def test_truncation_labels_add_up(sim) -> None:
    cut, rul_at_end = truncate_assets(sim.train, seed=0)
    np.testing.assert_array_equal(cut.lengths() + rul_at_end, sim.train.lengths())
    assert (rul_at_end > 0).any()


def test_truncation_can_follow_a_test_sets_life_fractions(sim) -> None:
    lengths = sim.train.lengths()
    for share in (0.3, 0.75):
        cut, rul_at_end = truncate_assets(sim.train, seed=0, fractions=np.array([share]))
        np.testing.assert_array_equal(cut.lengths(), np.ceil(share * lengths))
        seen = life_fractions(cut, rul_at_end)
        assert np.all((seen >= share) & (seen < share + 1 / lengths))
    # Drawn from the given values only, and reproducible by seed.
    cut, _ = truncate_assets(sim.train, seed=4, fractions=np.array([0.2, 0.9]))
    kept = cut.lengths()
    assert np.all((kept == np.ceil(0.2 * lengths)) | (kept == np.ceil(0.9 * lengths)))
    again, _ = truncate_assets(sim.train, seed=4, fractions=np.array([0.2, 0.9]))
    np.testing.assert_array_equal(again.lengths(), cut.lengths())
