"""Unit tests of the service's plain functions: no HTTP server, each test well under a second.

Settings from the environment, API-key checks, request validation (every refusal names its
status and the offending field), the last window a prediction sees, alert crossings on a real
SQLite store, webhook signing and delivery (through the `send` injection point), route labels
and storage transactions.
"""

from __future__ import annotations

import http.client
import importlib
import io
import math
import os
import re
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import event, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from rul.errors import ConfigError
from rul.windowing import make_windows
from service import alerts, storage
from service.auth import HEADER, check_key, needs_key
from service.errors import ApiError
from service.predict import last_window
from service.requests import (
    MAX_CYCLE,
    asset_id_value,
    npy_windows,
    parse_json,
    path_asset_id,
    plain_readings_body,
    query_int,
    query_text,
    readings_matrix,
    require_object,
    threshold_value,
    window_matrix,
)
from service.settings import Settings, from_env, to_env
from service.storage import StorageError, Store

FEATURES = ["sensor_2", "sensor_3", "sensor_4"]
FLOAT32_MAX = float(np.finfo(np.float32).max)


def refusal(call: Any, *args: Any, **kwargs: Any) -> ApiError:
    """The ApiError `call` raises (fails the test if it returns or raises anything else)."""
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    return caught.value


def rows_of(matrix: list[list[float]], features: list[str] = FEATURES,
            cycles: list[Any] | None = None) -> list[dict[str, Any]]:
    rows = [dict(zip(features, row, strict=True)) for row in matrix]
    if cycles is not None:
        for row, cycle in zip(rows, cycles, strict=True):
            row["cycle"] = cycle
    return rows


# =========================================================================== settings


def test_defaults_from_an_empty_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUL_MODEL", raising=False)
    s = from_env({})
    assert s.model == Path(__file__).resolve().parents[1] / "checkpoints" / "cmapss-fd001.onnx"
    assert s.db == Path("rul-service.db")
    assert s.models_dir is None
    assert s.api_keys == () and not s.auth_enabled
    assert s.webhook_urls == () and s.webhook_secret is None
    assert s.alert_threshold == 0.5
    assert s.webhook_timeout == 5.0 and s.webhook_max_backoff == 300.0
    assert s.max_body_bytes == 32 * 1024 * 1024
    assert (s.max_assets, s.max_rows, s.history_limit) == (10_000, 100_000, 1000)
    assert (s.host, s.port, s.workers) == ("127.0.0.1", 8000, 2)
    assert s.ort_threads is None
    assert s.threads_per_worker == max(1, (os.cpu_count() or 1) // 2)


def test_the_given_env_alone_decides_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUL_MODEL", "/elsewhere/other.onnx")
    assert from_env({}).model.name == "cmapss-fd001.onnx"


def test_every_variable_is_parsed(tmp_path: Path) -> None:
    env = {
        "RUL_MODEL": str(tmp_path / "m.onnx"),
        "RUL_MODELS_DIR": str(tmp_path / "models"),
        "RUL_DB": str(tmp_path / "x.db"),
        "RUL_API_KEYS": "k1, k2",
        "RUL_WEBHOOK_URLS": "http://a.example/hook, https://b.example/hook",
        "RUL_WEBHOOK_SECRET": "s3cret",
        "RUL_ALERT_THRESHOLD": "0.25",
        "RUL_WEBHOOK_TIMEOUT": "2.5",
        "RUL_WEBHOOK_MAX_BACKOFF": "60",
        "RUL_MAX_BODY_BYTES": "1024",
        "RUL_MAX_ASSETS": "7",
        "RUL_MAX_ROWS": "70",
        "RUL_HISTORY_LIMIT": "9",
        "RUL_ORT_THREADS": "3",
        "RUL_HOST": "0.0.0.0",
        "RUL_PORT": "9001",
        "RUL_WORKERS": "4",
    }
    s = from_env(env)
    assert s.model == tmp_path / "m.onnx"
    assert s.models_dir == tmp_path / "models"
    assert s.db == tmp_path / "x.db"
    assert s.api_keys == ("k1", "k2") and s.auth_enabled
    assert s.webhook_urls == ("http://a.example/hook", "https://b.example/hook")
    assert s.webhook_secret == "s3cret"
    assert s.alert_threshold == 0.25
    assert s.webhook_timeout == 2.5 and s.webhook_max_backoff == 60.0
    assert (s.max_body_bytes, s.max_assets, s.max_rows, s.history_limit) == (1024, 7, 70, 9)
    assert (s.ort_threads, s.host, s.port, s.workers) == (3, "0.0.0.0", 9001, 4)


def test_blank_values_keep_defaults_and_values_are_stripped() -> None:
    s = from_env({"RUL_PORT": "   ", "RUL_DB": "", "RUL_MAX_ROWS": " 12 ", "RUL_HOST": " h "})
    assert s.port == 8000 and s.db == Path("rul-service.db")
    assert s.max_rows == 12 and s.host == "h"


def test_ort_threads_default_divides_the_cores_by_the_workers() -> None:
    assert from_env({"RUL_WORKERS": "1"}).threads_per_worker == max(1, os.cpu_count() or 1)
    assert from_env({"RUL_WORKERS": "1000"}).threads_per_worker == 1
    assert from_env({"RUL_WORKERS": "1000", "RUL_ORT_THREADS": "3"}).threads_per_worker == 3
    # A --workers flag changes the default too: it is derived, not stored.
    assert from_env({}).with_overrides(workers=1000).threads_per_worker == 1


def test_paths_expand_the_home_folder() -> None:
    assert from_env({"RUL_DB": "~/x.db"}).db == Path("~/x.db").expanduser()


@pytest.mark.parametrize(("name", "value"), [
    ("RUL_PORT", "80a"), ("RUL_PORT", "8000.0"), ("RUL_WORKERS", "two"),
    ("RUL_MAX_ROWS", "1e5"), ("RUL_ORT_THREADS", "1.5"), ("RUL_MAX_BODY_BYTES", "lots"),
])
def test_non_integer_values_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}=.*is not an integer"):
        from_env({name: value})


@pytest.mark.parametrize("name", ["RUL_ALERT_THRESHOLD", "RUL_WEBHOOK_TIMEOUT",
                                  "RUL_WEBHOOK_MAX_BACKOFF"])
def test_non_numeric_values_are_refused_by_name(name: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}=.*is not a number"):
        from_env({name: "soon"})


@pytest.mark.parametrize("value", ["0", "-0.1", "1.0000001", "2", "nan", "inf"])
def test_threshold_outside_zero_one_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="RUL_ALERT_THRESHOLD"):
        from_env({"RUL_ALERT_THRESHOLD": value})


@pytest.mark.parametrize("value", ["1", "1.0", "0.0001"])
def test_threshold_inside_zero_one_is_accepted(value: str) -> None:
    assert from_env({"RUL_ALERT_THRESHOLD": value}).alert_threshold == float(value)


@pytest.mark.parametrize("url", ["ftp://x.example/hook", "x.example/hook", "file:///tmp/x",
                                 "HTTP//x", "http://", "https:///hook", "http://h:abc/",
                                 "http://h:99999/", "http://[::1/hook", "http://h/a b"])
def test_webhook_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError, match="RUL_WEBHOOK_URLS") as caught:
        from_env({"RUL_WEBHOOK_URLS": url, "RUL_WEBHOOK_SECRET": "s"})
    assert url in str(caught.value)


def test_webhook_urls_need_a_secret() -> None:
    with pytest.raises(ConfigError, match="RUL_WEBHOOK_SECRET"):
        from_env({"RUL_WEBHOOK_URLS": "https://x.example/hook"})
    with pytest.raises(ConfigError, match="RUL_WEBHOOK_SECRET"):
        from_env({"RUL_WEBHOOK_URLS": "https://x.example/hook", "RUL_WEBHOOK_SECRET": "  "})
    # A secret alone (no URLs yet) is fine.
    assert from_env({"RUL_WEBHOOK_SECRET": "s"}).webhook_secret == "s"


POSITIVE = {"RUL_MAX_BODY_BYTES": "max_body_bytes", "RUL_MAX_ASSETS": "max_assets",
            "RUL_MAX_ROWS": "max_rows", "RUL_HISTORY_LIMIT": "history_limit",
            "RUL_ORT_THREADS": "ort_threads", "RUL_WORKERS": "workers",
            "RUL_WEBHOOK_TIMEOUT": "webhook_timeout",
            "RUL_WEBHOOK_MAX_BACKOFF": "webhook_max_backoff"}


@pytest.mark.parametrize("name", sorted(POSITIVE))
@pytest.mark.parametrize("value", ["0", "-1"])
def test_non_positive_limits_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name}.* must be a positive number"):
        from_env({name: value})


@pytest.mark.parametrize("value", ["0", "-1", "65536"])
def test_port_out_of_range_is_refused(value: str) -> None:
    with pytest.raises(ConfigError, match="1..65535"):
        from_env({"RUL_PORT": value})


def test_range_refusals_name_the_environment_variable() -> None:
    unnamed = []
    for name in [*POSITIVE, "RUL_PORT"]:
        with pytest.raises(ConfigError) as caught:
            from_env({name: "0"})
        if name not in str(caught.value):
            unnamed.append(name)
    assert unnamed == []


def test_api_keys_from_the_variable_and_the_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# operators\nalpha\n\n   \nbeta   # the night shift\n  gamma  \n"
                    "alpha\n#delta\nshared\n")
    s = from_env({"RUL_API_KEYS": "shared,zeta,,zeta", "RUL_API_KEYS_FILE": str(keys)})
    assert s.api_keys == ("shared", "zeta", "alpha", "beta", "gamma")
    assert from_env({"RUL_API_KEYS_FILE": str(keys)}).api_keys == ("alpha", "beta", "gamma",
                                                                   "shared")


def test_a_keys_file_of_comments_only_leaves_auth_off(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# none yet\n\n")
    assert not from_env({"RUL_API_KEYS_FILE": str(keys)}).auth_enabled


def test_an_unreadable_keys_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="RUL_API_KEYS_FILE"):
        from_env({"RUL_API_KEYS_FILE": str(tmp_path / "missing.txt")})


def test_to_env_round_trips_every_setting(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("from-file\n")
    env = {
        "RUL_MODEL": str(tmp_path / "m.onnx"), "RUL_MODELS_DIR": str(tmp_path / "more"),
        "RUL_DB": str(tmp_path / "x.db"), "RUL_API_KEYS": "k1,k2",
        "RUL_API_KEYS_FILE": str(keys), "RUL_WEBHOOK_URLS": "https://a/h,http://b/h",
        "RUL_WEBHOOK_SECRET": "s", "RUL_ALERT_THRESHOLD": "0.1", "RUL_WEBHOOK_TIMEOUT": "0.3",
        "RUL_WEBHOOK_MAX_BACKOFF": "7.25", "RUL_MAX_BODY_BYTES": "11", "RUL_MAX_ASSETS": "12",
        "RUL_MAX_ROWS": "13", "RUL_HISTORY_LIMIT": "14", "RUL_ORT_THREADS": "5",
        "RUL_HOST": "::1", "RUL_PORT": "1", "RUL_WORKERS": "3",
    }
    s = from_env(env)
    assert s.api_keys == ("k1", "k2", "from-file")
    exported = to_env(s)
    assert all(isinstance(v, str) for v in exported.values())
    assert from_env(exported) == s
    assert from_env(to_env(from_env({}))) == from_env({})


@hypothesis_settings(max_examples=60, deadline=None)
@given(threshold=st.floats(min_value=0, max_value=1, exclude_min=True),
       timeout=st.floats(min_value=1e-3, max_value=1e6),
       rows=st.integers(min_value=1, max_value=2**40),
       port=st.integers(min_value=1, max_value=65535),
       keys=st.lists(st.text("abcXYZ019-_.~", min_size=1, max_size=12), max_size=4))
def test_to_env_round_trips_any_valid_settings(threshold: float, timeout: float, rows: int,
                                               port: int, keys: list[str]) -> None:
    s = Settings(alert_threshold=threshold, webhook_timeout=timeout, max_rows=rows, port=port,
                 api_keys=tuple(dict.fromkeys(keys)), webhook_urls=("https://r.example/h",),
                 webhook_secret="s")
    assert from_env(to_env(s)) == s


def test_a_key_with_a_comma_or_space_is_refused(tmp_path: Path) -> None:
    # A comma would split the key in two on its way to the workers (RUL_API_KEYS).
    keys = tmp_path / "keys.txt"
    for line in ("abc,def", "abc def"):
        keys.write_text(line + "\n")
        with pytest.raises(ConfigError, match="without commas or spaces"):
            from_env({"RUL_API_KEYS_FILE": str(keys)})


def test_with_overrides_checks_the_result() -> None:
    s = from_env({})
    assert s.with_overrides(port=9000, db=None).port == 9000
    with pytest.raises(ConfigError):
        s.with_overrides(workers=0)


# =========================================================================== auth


def test_no_keys_configured_is_open() -> None:
    check_key(None, [])
    check_key("", ())
    check_key("anything", [])


@pytest.mark.parametrize("presented", [None, ""])
def test_a_missing_key_is_401(presented: str | None) -> None:
    error = refusal(check_key, presented, ["k1"])
    assert error.status == 401
    assert error.field == "header.X-API-Key" == f"header.{HEADER}"
    assert error.headers.get("WWW-Authenticate") == HEADER


@pytest.mark.parametrize("presented", ["k", "k1x", "K1", " k1", "k2", "ünïcode"])
def test_a_wrong_key_is_403(presented: str) -> None:
    error = refusal(check_key, presented, ["k1", "k22"])
    assert error.status == 403
    assert error.field == "header.X-API-Key"


def test_any_of_several_keys_is_accepted() -> None:
    keys = ("first-key", "second-key", "third")
    for key in keys:
        check_key(key, keys)


@pytest.mark.parametrize(("path", "needed"), [
    ("/v1/health", False), ("/v1/health/", False), ("/v1/ready", True), ("/v1/predict", True),
    ("/v1/assets/a1/readings", True), ("/metrics", True), ("/v1/healthz", True), ("/", True),
    ("/v1/health/extra", True),
])
def test_needs_key(path: str, needed: bool) -> None:
    assert needs_key(path) is needed


# =========================================================================== requests: readings


def test_readings_matrix_in_feature_order_as_float32() -> None:
    rows = [{"sensor_4": 3, "sensor_2": 1.5, "sensor_3": -2},
            {"sensor_3": 5.25, "sensor_4": 6, "sensor_2": 4}]
    readings = readings_matrix(rows, FEATURES, "readings", max_rows=10)
    assert readings.values.dtype == np.float32
    assert readings.values.tolist() == [[1.5, -2.0, 3.0], [4.0, 5.25, 6.0]]
    assert readings.cycles is None


def test_readings_matrix_single_feature() -> None:
    readings = readings_matrix([{"x": 1}, {"x": 2.5}], ["x"], "readings", max_rows=10)
    assert readings.values.shape == (2, 1) and readings.values[:, 0].tolist() == [1.0, 2.5]


def test_readings_matrix_cycles_are_int64() -> None:
    readings = readings_matrix(rows_of([[1, 2, 3]] * 3, cycles=[0, 4, 9]), FEATURES,
                               "readings", max_rows=10, cycle_required=True)
    assert readings.cycles is not None and readings.cycles.dtype == np.int64
    assert readings.cycles.tolist() == [0, 4, 9]
    assert readings.values.shape == (3, 3)


@pytest.mark.parametrize(("rows", "field"), [
    ({"sensor_2": 1}, "readings"), ("x", "readings"), (None, "readings"), ([], "readings"),
    ([{"sensor_2": 1, "sensor_3": 2, "sensor_4": 3}, [1, 2, 3]], "readings[1]"),
    ([{"sensor_2": 1, "sensor_3": 2, "sensor_4": 3}, None], "readings[1]"),
])
def test_readings_matrix_refuses_bad_shapes(rows: Any, field: str) -> None:
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=10)
    assert (error.status, error.field) == (400, field)


@pytest.mark.parametrize("bad", [True, False, "1.0", None, [1], {"v": 1}])
def test_readings_matrix_refuses_non_numbers(bad: Any) -> None:
    rows = rows_of([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    rows[2]["sensor_2"] = bad
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=10)
    assert (error.status, error.field) == (400, "readings[2].sensor_2")
    assert "finite number" in error.message


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_readings_matrix_refuses_non_finite_floats(bad: float) -> None:
    # JSON cannot carry these (parse_json refuses NaN/Infinity); direct callers still get a 400.
    rows = rows_of([[1, 2, 3], [4, 5, 6], [7, 8, 9]])
    rows[1]["sensor_3"] = bad
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=10)
    assert (error.status, error.field) == (400, "readings[1].sensor_3")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("huge", [1e39, -1e39, 1.7e308, 10**39])
def test_readings_matrix_refuses_numbers_beyond_float32(huge: Any) -> None:
    rows = rows_of([[1, 2, 3], [4, 5, 6]])
    rows[1]["sensor_4"] = huge
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=10)
    assert (error.status, error.field) == (400, "readings[1].sensor_4")
    assert "float32" in error.message


def test_readings_matrix_accepts_the_float32_extremes() -> None:
    tiny = float(np.finfo(np.float32).smallest_subnormal)
    rows = rows_of([[FLOAT32_MAX, -FLOAT32_MAX, tiny]])
    values = readings_matrix(rows, FEATURES, "readings", max_rows=10).values
    assert values.tolist() == np.array([[FLOAT32_MAX, -FLOAT32_MAX, tiny]], np.float32).tolist()


def test_readings_matrix_rounds_to_float32_and_refuses_what_overflows() -> None:
    # The next double above float32's maximum rounds to it: a float32 reading after all.
    rows = rows_of([[1, 2, math.nextafter(FLOAT32_MAX, math.inf)]])
    got = readings_matrix(rows, FEATURES, "readings", max_rows=10).values
    assert got[0, 2] == np.float32(FLOAT32_MAX)
    error = refusal(readings_matrix, rows_of([[1, 2, 3.5e38]]), FEATURES, "readings",
                    max_rows=10)
    assert (error.status, error.field) == (400, "readings[0].sensor_4")


def test_readings_matrix_unknown_and_missing_features() -> None:
    rows = rows_of([[1, 2, 3], [4, 5, 6]])
    rows[1]["sensor_9"] = 1
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=10)
    assert (error.status, error.field) == (400, "readings[1].sensor_9")
    assert "unknown feature" in error.message

    rows = rows_of([[1, 2, 3], [4, 5, 6]])
    del rows[1]["sensor_3"]
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=10)
    assert (error.status, error.field) == (400, "readings[1].sensor_3")
    assert "lacks feature" in error.message

    # Replacing a feature by an unknown one (same number of keys) is a missing feature.
    rows = rows_of([[1, 2, 3]])
    rows[0]["other"] = rows[0].pop("sensor_2")
    error = refusal(readings_matrix, rows, FEATURES, "assets[3].readings", max_rows=10)
    assert error.field == "assets[3].readings[0].sensor_2"


def test_readings_matrix_cycle_modes() -> None:
    with_cycles = rows_of([[1, 2, 3], [4, 5, 6]], cycles=[1, 2])
    without = rows_of([[1, 2, 3], [4, 5, 6]])

    got = readings_matrix(with_cycles, FEATURES, "readings", max_rows=10)
    assert got.cycles.tolist() == [1, 2]

    error = refusal(readings_matrix, without, FEATURES, "readings", max_rows=10,
                    cycle_required=True)
    assert (error.status, error.field) == (400, "readings[0].cycle")

    assert readings_matrix(without, FEATURES, "readings", max_rows=10).cycles is None
    mixed = rows_of([[1, 2, 3]] * 3, cycles=[1, 2, 3])
    del mixed[1]["cycle"]
    error = refusal(readings_matrix, mixed, FEATURES, "readings", max_rows=10)
    assert (error.status, error.field) == (400, "readings[1].cycle")


@pytest.mark.parametrize(("cycles", "index"), [
    ([0, 1, -1], 2), ([-5, 1, 2], 0), ([0, 1.0, 2], 1), ([0, 1, 2.5], 2), ([0, "1", 2], 1),
    ([0, True, 2], 1), ([0, None, 2], 1), ([0, 1, 1], 2), ([5, 3, 6], 1), ([0, 2, 1], 2),
])
def test_readings_matrix_refuses_bad_cycles(cycles: list[Any], index: int) -> None:
    rows = rows_of([[1, 2, 3]] * 3, cycles=cycles)
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=10, cycle_required=True)
    assert (error.status, error.field) == (400, f"readings[{index}].cycle")


def test_readings_matrix_refuses_a_cycle_beyond_int64() -> None:
    rows = rows_of([[1, 2, 3]] * 2, cycles=[0, 2**63])
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=10, cycle_required=True)
    assert (error.status, error.field) == (400, "readings[1].cycle")


AGED = [*FEATURES, "cycle"]  # a model that takes the asset's age as its last feature


def test_readings_matrix_with_the_cycle_as_a_feature() -> None:
    rows = rows_of([[1, 2, 3], [4, 5, 6]], cycles=[7, 9])
    got = readings_matrix(rows, AGED, "readings", max_rows=10)
    np.testing.assert_array_equal(got.values, [[1, 2, 3, 7], [4, 5, 6, 9]])
    assert got.cycles.tolist() == [7, 9]
    # The fast path (rows of exactly the features) checks the cycles as streaming does.
    for cycles, index in (([7, 7], 1), ([7, 8.5], 1), ([-1, 2], 0), ([1, True], 1)):
        error = refusal(readings_matrix, rows_of([[1, 2, 3]] * 2, cycles=cycles), AGED,
                        "readings", max_rows=10)
        assert (error.status, error.field) == (400, f"readings[{index}].cycle")
    error = refusal(readings_matrix, rows_of([[1, 2, 3]]), AGED, "readings", max_rows=10)
    assert (error.status, error.field) == (400, "readings[0].cycle")
    assert "the asset's age" in error.message


def test_window_and_npy_matrices_with_the_cycle_as_a_feature() -> None:
    window = [[1, 2, 3, 5], [1, 2, 3, 5], [4, 5, 6, 6.0]]  # padded: the first cycle repeated
    np.testing.assert_array_equal(window_matrix(window, 3, AGED, "window")[:, 3], [5, 5, 6])
    for bad, row in (([[1, 2, 3, 5], [1, 2, 3, 4], [1, 2, 3, 6]], 1),
                     ([[1, 2, 3, 5], [1, 2, 3, 6], [1, 2, 3, 6]], 2),  # a repeat past padding
                     ([[1, 2, 3, 0.5], [1, 2, 3, 1], [1, 2, 3, 2]], 0),
                     ([[1, 2, 3, -2], [1, 2, 3, -1], [1, 2, 3, 0]], 0)):
        error = refusal(window_matrix, bad, 3, AGED, "window")
        assert (error.status, error.field) == (400, f"window[{row}][3]")
        assert "columns in the order" in error.message
    windows = np.array([window, window], dtype=np.float32)
    assert npy_windows(npy(windows), 3, AGED, 10).shape == (2, 3, 4)
    windows[1, 2, 3] = 4.0
    error = refusal(npy_windows, npy(windows), 3, AGED, 10)
    assert (error.status, error.field) == (400, "body[1][2][3]")


def test_readings_matrix_max_rows_is_413() -> None:
    rows = rows_of([[1, 2, 3]] * 5)
    assert readings_matrix(rows, FEATURES, "readings", max_rows=5).values.shape == (5, 3)
    error = refusal(readings_matrix, rows, FEATURES, "readings", max_rows=4)
    assert (error.status, error.field) == (413, "readings")


finite32 = st.floats(allow_nan=False, allow_infinity=False, width=32)


@hypothesis_settings(max_examples=80, deadline=None)
@given(st.integers(min_value=1, max_value=4).flatmap(
    lambda n: st.lists(st.lists(finite32, min_size=n, max_size=n), min_size=1, max_size=20)))
def test_any_float32_matrix_round_trips_through_json_and_readings_matrix(
        matrix: list[list[float]]) -> None:
    features = [f"f{j}" for j in range(len(matrix[0]))][::-1]  # card order, not alphabetical
    rows = [{name: row[features.index(name)] for name in sorted(features)} for row in matrix]
    body = orjson.dumps({"readings": rows})
    readings = readings_matrix(parse_json(body)["readings"], features, "readings", max_rows=20)
    assert readings.values.dtype == np.float32
    np.testing.assert_array_equal(readings.values, np.array(matrix, dtype=np.float32))


# A single prediction's body is typed while it is parsed (plain_readings_body), and read by the
# general path (parse_json, require_object, readings_matrix) whenever the typed read declines.
# The typed read must accept nothing the general path refuses, and read the same arrays.

NAMED = ["sensor_2", "T24 (°R)", "cycle"]  # a name that is no identifier; the age as an input


def general_read(data: bytes, features: list[str], max_rows: int) -> tuple[Any, Any] | None:
    """(model, Readings) as the general path reads a `{"readings", "model"?}` body; None if it
    refuses the body or the body holds a window instead."""
    try:
        body = require_object(parse_json(data), "body", ["readings", "window"], ["model"])
        if "window" in body or "readings" not in body or not isinstance(
                body.get("model"), str | None):
            return None
        return body.get("model"), readings_matrix(body["readings"], features, "readings",
                                                  max_rows=max_rows)
    except ApiError:
        return None


def test_plain_readings_are_typed_in_one_pass_and_match_the_general_path() -> None:
    rows = rows_of([[641.82, 1589], [642.15, 2.5e3]], NAMED[:2], cycles=[7, 8])
    data = orjson.dumps({"readings": rows, "model": "fd001"})
    plain = plain_readings_body(data, NAMED, max_rows=10)
    assert plain is not None and plain.model == "fd001"
    model, general = general_read(data, NAMED, 10)
    assert model == "fd001"
    assert plain.readings.values.dtype == np.float32
    np.testing.assert_array_equal(plain.readings.values, general.values)
    np.testing.assert_array_equal(plain.readings.cycles, general.cycles)
    assert plain.readings.cycles.dtype == general.cycles.dtype == np.int64


@pytest.mark.parametrize("body", [
    b'{"readings": [{"sensor_2": 1, "T24 (\\u00b0R)": 2, "cycle": 1}], "extra": 1}',
    b'{"readings": [{"sensor_2": 1, "T24 (\\u00b0R)": 2}]}',  # no cycle
    b'{"readings": [{"sensor_2": true, "T24 (\\u00b0R)": 2, "cycle": 1}]}',
    b'{"readings": [{"sensor_2": "1", "T24 (\\u00b0R)": 2, "cycle": 1}]}',
    b'{"readings": [{"sensor_2": 1, "T24 (\\u00b0R)": 2, "cycle": 1.0}]}',
    b'{"readings": [{"sensor_2": 1, "T24 (\\u00b0R)": 2, "cycle": -1}]}',
    b'{"readings": [{"sensor_2": 1e39, "T24 (\\u00b0R)": 2, "cycle": 1}]}',
    b'{"readings": [{"sensor_2": 1, "T24 (\\u00b0R)": 2, "cycle": 1' + b"0" * 400 + b'}]}',
    b'{"readings": [{"sensor_2": 1, "T24 (\\u00b0R)": 2, "cycle": 2}, '
    b'{"sensor_2": 1, "T24 (\\u00b0R)": 2, "cycle": 2}]}',
    b'{"readings": []}',
    b'{"readings": [{"sensor_2": 1, "T24 (\\u00b0R)": 2, "cycle": 1}], "model": 3}',
    b'{"window": [[1, 2, 3]]}',
    b'[1]',
    b'',
])
def test_the_typed_read_declines_what_it_does_not_read_itself(body: bytes) -> None:
    assert plain_readings_body(body, NAMED, max_rows=10) is None


# Raw JSON values for a reading's fields: numbers in every spelling, and what is not a number.
json_values = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.integers(min_value=-2**70, max_value=2**70).map(str),
    st.sampled_from(["1e400", "-1e400", "1e-400", "-0", "0.0", "1E5", "3.4028235e38",
                     "3.4028236e38", "true", "false", "null", '"1.5"', "[1]", "{}", "1.5e+2"]))
json_keys = st.sampled_from(NAMED + ["cycle", "sensor_3", ""])


@hypothesis_settings(max_examples=300, deadline=None)
@given(rows=st.lists(st.lists(st.tuples(json_keys, json_values), max_size=4), min_size=1,
                    max_size=4),
       cycles=st.one_of(
           st.none(),
           st.lists(st.integers(min_value=-2, max_value=2**63), min_size=4, max_size=4),
           *[st.lists(st.integers(min_value=0, max_value=top), min_size=4, max_size=4,
                      unique=True).map(sorted) for top in (1000, 1000, 2**53 + 2, MAX_CYCLE + 1)]),
       extra=st.booleans(),
       model=st.sampled_from(["", ', "model": null', ', "model": "x"', ', "model": 1',
                              ', "window": []', ', "other": 1']),
       max_rows=st.integers(min_value=1, max_value=6))
def test_the_typed_read_accepts_only_what_the_general_path_accepts_and_reads_it_alike(
        rows: list[list[tuple[str, str]]], cycles: list[int] | None, extra: bool, model: str,
        max_rows: int) -> None:
    texts = []
    for i, fields in enumerate(rows):
        if cycles is not None:  # readings of the features, some of them well-formed
            first = fields[0][1] if fields and extra else f"{641.5 + i}"
            fields = [(NAMED[0], first), (NAMED[1], "2.5"),
                      ("cycle", str(cycles[i]))] + fields[1:2 if extra else 1]
        texts.append("{" + ", ".join(f"{orjson.dumps(k).decode()}: {v}" for k, v in fields)
                     + "}")
    data = ('{"readings": [' + ", ".join(texts) + "]" + model + "}").encode()
    plain = plain_readings_body(data, NAMED, max_rows)
    general = general_read(data, NAMED, max_rows)
    event("typed read: declined" if plain is None else "typed read: accepted")
    if plain is None:
        return
    assert general is not None, data
    assert plain.model == general[0]
    np.testing.assert_array_equal(plain.readings.values, general[1].values)
    assert plain.readings.values.dtype == np.float32
    np.testing.assert_array_equal(plain.readings.cycles, general[1].cycles)


# =========================================================================== requests: windows


def test_window_matrix_accepts_a_card_order_matrix() -> None:
    window = [[1, 2.5, 3], [4, 5, 6]]
    values = window_matrix(window, 2, FEATURES, "window")
    assert values.dtype == np.float32 and values.tolist() == [[1, 2.5, 3], [4, 5, 6]]


@pytest.mark.parametrize(("window", "field"), [
    (None, "window"), ([], "window"), ({"a": 1}, "window"), ([[1, 2, 3]], "window"),
    ([[1, 2, 3], [1, 2, 3], [1, 2, 3]], "window"), ([[1, 2, 3], [1, 2]], "window[1]"),
    ([[1, 2, 3], "123"], "window[1]"), ([[1, 2, 3, 4], [1, 2, 3]], "window[0]"),
    ([[1, 2, 3], [1, "2", 3]], "window[1][1]"), ([[1, 2, True], [1, 2, 3]], "window[0][2]"),
    ([[1, 2, 3], [None, 2, 3]], "window[1][0]"), ([[1, 2, 3], [1, 2, 1e39]], "window[1][2]"),
])
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
def test_window_matrix_refusals(window: Any, field: str) -> None:
    error = refusal(window_matrix, window, 2, FEATURES, "window")
    assert (error.status, error.field) == (400, field)


def test_window_matrix_field_is_nested_under_the_asset() -> None:
    error = refusal(window_matrix, [[1, 2, 3], [1, 2, "x"]], 2, FEATURES, "assets[4].window")
    assert error.field == "assets[4].window[1][2]"


def npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_npy_windows_accepts_float_arrays_as_float32(dtype: type) -> None:
    array = np.arange(2 * 4 * 3, dtype=dtype).reshape(2, 4, 3) / 7
    out = npy_windows(npy(array), 4, FEATURES, 2)
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, array.astype(np.float32))


@pytest.mark.parametrize("data", [
    b"", b"not npy", npy(np.zeros((1, 4, 3)))[:-8], npy(np.zeros((1, 4, 3)))[:20],
    npy(np.zeros((1, 4, 2))), npy(np.zeros((1, 5, 3))), npy(np.zeros((4, 3))),
    npy(np.zeros((1, 1, 4, 3))), npy(np.zeros((1, 4, 3), np.int64)),
    npy(np.zeros((1, 4, 3), np.float16)), npy(np.zeros((1, 4, 3), np.complex64)),
    npy(np.zeros((0, 4, 3), np.float32)),
])
def test_npy_windows_refusals_are_400_on_the_body(data: bytes) -> None:
    error = refusal(npy_windows, data, 4, FEATURES, 10)
    assert (error.status, error.field) == (400, "body")


def test_npy_windows_refuses_pickled_object_arrays() -> None:
    buffer = io.BytesIO()
    np.save(buffer, np.array([[[1, 2, 3]]], dtype=object), allow_pickle=True)
    error = refusal(npy_windows, buffer.getvalue(), 1, FEATURES, 10)
    assert (error.status, error.field) == (400, "body")


def test_npy_windows_refuses_bytes_after_the_array() -> None:
    data = npy(np.zeros((3, 4, 3), np.float32))
    for extra in (b"\x00", data):  # a stray byte, or two arrays sent as one body
        error = refusal(npy_windows, data + extra, 4, FEATURES, 10)
        assert (error.status, error.field) == (400, "body")
        assert f"holds {len(extra)} bytes after its .npy array" in error.message


def test_npy_windows_too_many_is_413() -> None:
    data = npy(np.zeros((3, 4, 3), np.float32))
    assert npy_windows(data, 4, FEATURES, 3).shape == (3, 4, 3)
    error = refusal(npy_windows, data, 4, FEATURES, 2)
    assert (error.status, error.field) == (413, "body")


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e39])
def test_npy_windows_names_the_first_non_finite_value(bad: float) -> None:
    array = np.zeros((3, 4, 3), np.float64)
    array[1, 2, 1] = bad
    array[2, 0, 0] = bad
    error = refusal(npy_windows, npy(array), 4, FEATURES, 10)
    assert (error.status, error.field) == (400, "body[1][2][1]")
    assert "sensor_3" in error.message


# =========================================================================== requests: scalars


@pytest.mark.parametrize(("params", "expected"), [
    ({}, 7), ({"limit": None}, 7), ({"limit": ""}, 7), ({"limit": "0"}, 0), ({"limit": "12"}, 12),
    ({"limit": "0012"}, 12), ({"limit": 5}, 5), ({"limit": "100"}, 100),
])
def test_query_int_accepts(params: dict[str, Any], expected: int) -> None:
    assert query_int(params, "limit", 7, minimum=0, maximum=100) == expected


@pytest.mark.parametrize("value", ["abc", "1.5", "1e3", " 5", "5 ", "0x10", "+5",
                                   True, "1_0", "-", str(2**63), "9" * 20])
def test_query_int_refuses_non_integers(value: Any) -> None:
    error = refusal(query_int, {"limit": value}, "limit", 7)
    assert (error.status, error.field) == (400, "query.limit")
    assert "must be a 64-bit integer" in error.message


def test_query_int_takes_every_cycle_that_can_be_stored() -> None:
    # 19 digits: a history page's next_after_cycle of 10**18 + 1 must work as after_cycle.
    assert query_int({"c": str(10**18 + 1)}, "c", None, maximum=MAX_CYCLE) == 10**18 + 1
    assert query_int({"c": str(MAX_CYCLE)}, "c", None, maximum=MAX_CYCLE) == MAX_CYCLE
    assert query_int({"c": str(2**63 - 1)}, "c", None) == 2**63 - 1
    assert "<= 4611686018427387904" in refusal(query_int, {"c": str(MAX_CYCLE + 1)}, "c", None,
                                               maximum=MAX_CYCLE).message


@pytest.mark.parametrize(("value", "word"), [("-1", ">= 0"), ("101", "<= 100")])
def test_query_int_refuses_out_of_range(value: str, word: str) -> None:
    error = refusal(query_int, {"limit": value}, "limit", 7, minimum=0, maximum=100)
    assert (error.status, error.field) == (400, "query.limit")
    assert word in error.message


def test_query_int_negative_minimum() -> None:
    assert query_int({"after": "-3"}, "after", None, minimum=-5) == -3
    assert query_int({}, "after", None) is None


@pytest.mark.parametrize("value", ["--5", "²", "9" * 5000])
def test_query_int_refuses_what_int_cannot_parse(value: str) -> None:
    error = refusal(query_int, {"limit": value}, "limit", 7)
    assert (error.status, error.field) == (400, "query.limit")


def test_parse_json() -> None:
    assert parse_json(b'{"a": [1, 2.5, null]}') == {"a": [1, 2.5, None]}
    assert parse_json(b"[]") == []


@pytest.mark.parametrize("data", [b"", b"{", b"{'a': 1}", b'{"a": NaN}', b'{"a": Infinity}',
                                  b"\xff\xfe", b'{"a": 1}}', b"1e400"])
def test_parse_json_refusals(data: bytes) -> None:
    error = refusal(parse_json, data)
    assert (error.status, error.field) == (400, "body")


@pytest.mark.parametrize(("value", "expected"), [("pump-7", "pump-7"), (7, "7"), (0, "0"),
                                                 ("é", "é"), ("x" * 200, "x" * 200)])
def test_asset_id_value_accepts(value: Any, expected: str) -> None:
    assert asset_id_value(value, "assets[0].asset_id") == expected


@pytest.mark.parametrize("value", [True, False, None, 1.5, 7.0, [], {}, "", "x" * 201, "a\nb",
                                   "tab\t", "\x00", "a\x85", "no\u00a0break", "zero\u200bwidth",
                                   "line\u2028separator", "\ufeffbom"])
def test_asset_id_value_refusals(value: Any) -> None:
    error = refusal(asset_id_value, value, "assets[2].asset_id")
    assert (error.status, error.field) == (400, "assets[2].asset_id")


def test_a_path_asset_id_cannot_hold_the_mark_of_bytes_that_are_not_utf8() -> None:
    assert asset_id_value("a\ufffd", "assets[0].asset_id") == "a\ufffd"  # a body's JSON id
    assert path_asset_id("pump-7") == "pump-7"
    for text in ("\ufffd\ufffd", "", "a\nb"):
        error = refusal(path_asset_id, text)
        assert (error.status, error.field) == (400, "path.asset_id")


def test_the_openapi_pattern_for_path_asset_ids_is_the_server_s_rule() -> None:
    """Every character of the Basic Multilingual Plane (surrogates aside, and '/', which splits
    the path before an id is read): the document's pattern and the server accept the same."""
    from service.openapi import document

    parameters = document()["paths"]["/v1/assets/{asset_id}/history"]["get"]["parameters"]
    schema = next(p for p in parameters if p["name"] == "asset_id")["schema"]
    pattern = re.compile(schema["pattern"])
    for code in (*range(0x2F), *range(0x30, 0xD800), *range(0xE000, 0x10000)):
        text = f"a{chr(code)}b"
        try:
            accepted = path_asset_id(text) == text
        except ApiError:
            accepted = False
        assert accepted == bool(pattern.fullmatch(text)), hex(code)


def test_gunicorn_parse_errors_keep_gunicorn_s_status() -> None:
    from gunicorn.http import errors

    from service.worker import error_status

    assert error_status(errors.InvalidRequestLine("x")) == 400
    assert error_status(errors.InvalidHeaderName("Bad Header")) == 400
    assert error_status(errors.LimitRequestLine(5000, 4094)) == 414
    assert error_status(errors.LimitRequestHeaders("too many")) == 431
    assert error_status(errors.UnsupportedTransferCoding("gzip")) == 501
    # The server's own faults and anything else stay with gunicorn's handling (a 500).
    assert error_status(errors.InvalidResponseHeader("X")) is None
    assert error_status(SystemExit(0)) is None and error_status(ValueError()) is None


def test_a_read_timeout_at_or_over_the_worker_timeout_is_refused() -> None:
    from service.settings import WORKER_TIMEOUT_S

    assert from_env({"RUL_READ_TIMEOUT": "29.5"}).read_timeout == 29.5
    with pytest.raises(ConfigError, match=f"RUL_READ_TIMEOUT must be below the worker timeout "
                                          f"of {WORKER_TIMEOUT_S} s"):
        from_env({"RUL_READ_TIMEOUT": str(WORKER_TIMEOUT_S)})


def test_a_query_parameter_given_twice_is_refused() -> None:
    assert query_text({"after": "a,b"}, "after") == "a,b"
    assert query_text({"after": ""}, "after") is None and query_text({}, "after") is None
    error = refusal(query_text, {"after": ["a", "b"]}, "after")
    assert (error.status, error.field) == (400, "query.after")
    assert "given 2 times" in error.message
    assert refusal(query_int, {"limit": ["1", "2"]}, "limit", 10).field == "query.limit"


@pytest.mark.parametrize(("value", "expected"), [(None, None), (1, 1.0), (0.5, 0.5),
                                                 (1e-9, 1e-9)])
def test_threshold_value_accepts(value: Any, expected: float | None) -> None:
    result = threshold_value(value, "alert_threshold")
    assert result == expected
    assert result is None or type(result) is float


@pytest.mark.parametrize("value", [0, 0.0, -0.5, 1.0000001, 2, True, False, "0.5", [0.5],
                                   math.nan, math.inf])
def test_threshold_value_refusals(value: Any) -> None:
    error = refusal(threshold_value, value, "alert_threshold")
    assert (error.status, error.field) == (400, "alert_threshold")


# =========================================================================== timeouts


class Stalled(Exception):
    pass


def test_a_deadline_raises_its_error_and_a_cancelled_one_stays_quiet() -> None:
    from service.timeouts import cancel_deadline, deadline

    with pytest.raises(TimeoutError, match="within 0.05 s"), deadline(0.05):
        time.sleep(2)
    with deadline(0.05, Stalled):
        cancel_deadline()
        time.sleep(0.1)  # past the deadline: nothing fires
    # A block inside a cancelled one (the body's inside the headers') raises its own error.
    with pytest.raises(Stalled), deadline(5):
        cancel_deadline()
        with deadline(0.05, Stalled):
            time.sleep(2)
    time.sleep(0.1)  # and leaves no timer behind


def test_a_deadline_outside_the_main_thread_runs_unbounded() -> None:
    from service.timeouts import deadline

    done: list[bool] = []

    def worker() -> None:
        with deadline(0.01):
            time.sleep(0.05)
        done.append(True)

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert done == [True]


# =========================================================================== predict.last_window


def reference_window(values: np.ndarray, window: int) -> tuple[np.ndarray, int]:
    w = make_windows(values, np.array([len(values)]), window, ends="last")
    return w.array()[0], int(w.padded[0])


@pytest.mark.parametrize("length", [1, 3, 5, 6, 11])
def test_last_window_by_hand(length: int) -> None:
    values = np.arange(length * 2, dtype=np.float32).reshape(length, 2)
    window, padded = last_window(values, 5)
    expected, expected_padded = reference_window(values, 5)
    assert window.shape == (5, 2) and padded == max(0, 5 - length)
    np.testing.assert_array_equal(window, expected)
    assert padded == expected_padded


@hypothesis_settings(max_examples=100, deadline=None)
@given(length=st.integers(min_value=1, max_value=40), window=st.integers(min_value=1,
                                                                         max_value=30),
       features=st.integers(min_value=1, max_value=4), seed=st.integers(0, 2**32 - 1))
def test_last_window_equals_make_windows_last(length: int, window: int, features: int,
                                              seed: int) -> None:
    values = np.random.default_rng(seed).normal(size=(length, features)).astype(np.float32)
    got, padded = last_window(values, window)
    expected, expected_padded = reference_window(values, window)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, expected)
    assert padded == expected_padded


# =========================================================================== alerts


URLS = ("http://a.example/hook", "https://b.example/hook")
SECRET = "webhook-s3cret"


@pytest.fixture
def store(tmp_path: Path) -> Any:
    db = Store(tmp_path / "service.db")
    db.initialise()
    yield db
    db.close()


def alert_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"webhook_urls": URLS, "webhook_secret": SECRET,
                              "alert_threshold": 0.5}
    return Settings(**{**values, **overrides})


class Fleet:
    """Readings and forecasts for assets in a real store, evaluated as ingestion does."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self.clock = 1000.0

    def add(self, asset_id: str, threshold: float | None = None) -> None:
        with self.store.transaction() as conn:
            storage.put_asset(conn, asset_id, "fd001", threshold, self.clock)

    def reading(self, asset_id: str, cycle: int, probability: float,
                forecast_cycle: int | None = None) -> dict[str, Any] | None:
        """Store a reading at `cycle` and evaluate a forecast (for `forecast_cycle`)."""
        self.clock += 1
        forecast = {"cycle": cycle if forecast_cycle is None else forecast_cycle,
                    "failure_probability": probability, "horizon": 30.0, "rul": 42.0,
                    "rul_quantiles": {"0.1": 30.0, "0.5": 42.0, "0.9": 55.0},
                    "model": "fd001", "model_version": "v1"}
        with self.store.transaction() as conn:
            storage.insert_readings(conn, asset_id, [(cycle, b'{"sensor_2": 1.0}')],
                                    self.clock)
            asset = storage.get_asset(conn, asset_id)
            assert asset is not None and asset["last_cycle"] >= cycle
            return alerts.evaluate(conn, self.settings, asset, forecast, self.clock)

    def alert_rows(self, asset_id: str | None = None) -> list[tuple[Any, ...]]:
        query = "SELECT alert_id, asset_id, cycle, failure_probability, threshold FROM alerts"
        args: tuple[Any, ...] = ()
        if asset_id is not None:
            query += " WHERE asset_id = ?"
            args = (asset_id,)
        return self.store.connection().execute(query + " ORDER BY cycle", args).fetchall()

    def outbox(self, alert_id: str | None = None) -> list[tuple[Any, ...]]:
        query = ("SELECT id, alert_id, url, attempts, next_attempt_at, delivered_at, last_status,"
                 " last_error FROM outbox")
        args: tuple[Any, ...] = ()
        if alert_id is not None:
            query += " WHERE alert_id = ?"
            args = (alert_id,)
        return self.store.connection().execute(query + " ORDER BY id", args).fetchall()


def test_below_the_threshold_no_alert(store: Store) -> None:
    fleet = Fleet(store, alert_settings())
    fleet.add("p1")
    for cycle, p in enumerate([0.1, 0.2, 0.49]):
        assert fleet.reading("p1", cycle, p) is None
    assert fleet.alert_rows() == [] and fleet.outbox() == []
    assert storage.get_asset(store.connection(), "p1")["alerting"] is False


def test_a_crossing_alerts_once_and_queues_one_row_per_url(store: Store) -> None:
    fleet = Fleet(store, alert_settings())
    fleet.add("p1")
    assert fleet.reading("p1", 0, 0.2) is None
    alert = fleet.reading("p1", 1, 0.75)
    assert alert is not None
    assert alert["type"] == "failure_probability_threshold_crossed"
    assert (alert["asset_id"], alert["cycle"], alert["failure_probability"],
            alert["threshold"]) == ("p1", 1, 0.75, 0.5)
    assert alert["model"] == "fd001" and alert["rul"] == 42.0

    assert fleet.alert_rows() == [(alert["alert_id"], "p1", 1, 0.75, 0.5)]
    outbox = fleet.outbox(alert["alert_id"])
    assert sorted(row[2] for row in outbox) == sorted(URLS)
    assert all(row[3] == 0 and row[5] is None for row in outbox)
    payload = store.connection().execute("SELECT payload FROM alerts").fetchone()[0]
    assert orjson.loads(payload) == alert
    assert storage.get_asset(store.connection(), "p1")["alerting"] is True

    # Staying above (even higher) raises nothing more.
    for cycle, p in [(2, 0.8), (3, 0.99), (4, 0.5)]:
        assert fleet.reading("p1", cycle, p) is None
    assert len(fleet.alert_rows()) == 1 and len(fleet.outbox()) == len(URLS)


def test_reaching_the_threshold_exactly_alerts(store: Store) -> None:
    fleet = Fleet(store, alert_settings(alert_threshold=0.25))
    fleet.add("p1")
    assert fleet.reading("p1", 0, 0.25) is not None


def test_dropping_below_re_arms(store: Store) -> None:
    fleet = Fleet(store, alert_settings())
    fleet.add("p1")
    first = fleet.reading("p1", 0, 0.6)
    assert first is not None
    assert fleet.reading("p1", 1, 0.4) is None  # re-armed, no alert
    assert storage.get_asset(store.connection(), "p1")["alerting"] is False
    assert fleet.reading("p1", 2, 0.45) is None
    second = fleet.reading("p1", 3, 0.9)
    assert second is not None and second["alert_id"] != first["alert_id"]
    assert [row[2] for row in fleet.alert_rows()] == [0, 3]
    assert len(fleet.outbox()) == 2 * len(URLS)


def test_no_webhooks_still_stores_the_alert(store: Store) -> None:
    fleet = Fleet(store, alert_settings(webhook_urls=(), webhook_secret=None))
    fleet.add("p1")
    assert fleet.reading("p1", 0, 0.9) is not None
    assert len(fleet.alert_rows()) == 1 and fleet.outbox() == []


def test_a_per_asset_threshold_overrides_the_global_one(store: Store) -> None:
    fleet = Fleet(store, alert_settings(alert_threshold=0.5))
    fleet.add("strict", threshold=0.2)
    fleet.add("lenient", threshold=0.9)
    fleet.add("global")
    strict = fleet.reading("strict", 0, 0.3)
    assert strict is not None and strict["threshold"] == 0.2
    assert fleet.reading("lenient", 0, 0.6) is None
    assert fleet.reading("lenient", 1, 0.89) is None
    lenient = fleet.reading("lenient", 2, 0.95)
    assert lenient is not None and lenient["threshold"] == 0.9
    glob = fleet.reading("global", 0, 0.6)
    assert glob is not None and glob["threshold"] == 0.5
    assert [row[4] for row in fleet.alert_rows("lenient")] == [0.9]


def test_a_forecast_older_than_the_last_cycle_never_alerts(store: Store) -> None:
    fleet = Fleet(store, alert_settings())
    fleet.add("p1")
    assert fleet.reading("p1", 5, 0.1) is None
    # A backfilled cycle 2 with a forecast for cycle 2 (the asset's last is still 5).
    assert fleet.reading("p1", 2, 0.99) is None
    assert fleet.reading("p1", 3, 0.99, forecast_cycle=1) is None
    assert fleet.alert_rows() == []
    assert storage.get_asset(store.connection(), "p1")["alerting"] is False
    # A stale low forecast does not re-arm an alerting asset either.
    assert fleet.reading("p1", 6, 0.9) is not None
    assert fleet.reading("p1", 4, 0.01) is None
    assert storage.get_asset(store.connection(), "p1")["alerting"] is True
    assert fleet.reading("p1", 7, 0.95) is None
    assert len(fleet.alert_rows()) == 1


def test_no_forecast_no_alert(store: Store) -> None:
    with store.transaction() as conn:
        storage.put_asset(conn, "p1", "fd001", None, 1.0)
        storage.insert_readings(conn, "p1", [(0, b"{}")], 1.0)
        asset = storage.get_asset(conn, "p1")
        assert alerts.evaluate(conn, alert_settings(), asset, None, 1.0) is None


# --------------------------------------------------------------------------- signing


def test_sign_is_hmac_sha256_of_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    signature = alerts.sign("key", "1700000000", b'{"a":1}')
    expected = hmac.new(b"key", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
    assert signature == "sha256=" + expected


def test_verify_accepts_only_the_signed_message() -> None:
    body = b'{"alert_id":"abc","failure_probability":0.7}'
    signature = alerts.sign(SECRET, "1700000000", body)
    assert alerts.verify(SECRET, "1700000000", body, signature)
    assert not alerts.verify(SECRET, "1700000000", body.replace(b"0.7", b"0.2"), signature)
    assert not alerts.verify(SECRET, "1700000001", body, signature)
    assert not alerts.verify("other secret", "1700000000", body, signature)
    assert not alerts.verify(SECRET, "1700000000", body, signature[:-1])
    assert not alerts.verify(SECRET, "1700000000", body, "")
    # Moving the dot between timestamp and body changes the message.
    assert not alerts.verify(SECRET, "170000000", b"0." + body, signature)


def test_verify_refuses_a_non_ascii_signature() -> None:
    assert alerts.verify(SECRET, "1700000000", b"{}", "sha256=é") is False


def test_backoff_grows_and_is_capped() -> None:
    for attempts in range(1, 12):
        base = min(300.0, 2.0 ** (attempts - 1))
        samples = [alerts.backoff(attempts, 300.0) for _ in range(200)]
        assert all(0.5 * base <= s <= base for s in samples)
        # With 50-100 % jitter the next attempt never waits less than this one's most.
        if base * 2 <= 300:
            assert all(s <= min(alerts.backoff(attempts + 1, 300.0) for _ in range(50))
                       for s in samples[:5])
    assert alerts.backoff(1, 300.0) <= 1.0
    assert all(150.0 <= alerts.backoff(50, 300.0) <= 300.0 for _ in range(100))
    assert all(alerts.backoff(1, 0.25) <= 0.25 for _ in range(100))
    means = [np.mean([alerts.backoff(a, 1e9) for _ in range(100)]) for a in range(1, 8)]
    assert means == sorted(means)


# --------------------------------------------------------------------------- delivery


class Receiver:
    """A `send` callable: records each call, answers from a script of statuses/exceptions."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, bytes, dict[str, str], float]] = []

    def __call__(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        self.calls.append((url, body, headers, timeout))
        answer = self.answers[min(len(self.calls), len(self.answers)) - 1]
        if isinstance(answer, Exception):
            raise answer
        return answer


def raised_alert(store: Store, settings: Settings) -> tuple[Fleet, dict[str, Any]]:
    fleet = Fleet(store, settings)
    fleet.add("p1")
    alert = fleet.reading("p1", 0, 0.9)
    assert alert is not None
    return fleet, alert


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_a_2xx_marks_delivered_and_is_not_sent_again(store: Store, status: int) -> None:
    settings = alert_settings(webhook_timeout=3.0)
    fleet, alert = raised_alert(store, settings)
    receiver = Receiver(status)
    before = time.time()
    assert alerts.deliver_due(store, settings, send=receiver) == (2, 0)
    assert sorted(call[0] for call in receiver.calls) == sorted(URLS)
    for url, body, headers, timeout in receiver.calls:
        assert timeout == 3.0
        assert orjson.loads(body) == alert
        assert headers[alerts.ALERT_ID_HEADER] == alert["alert_id"]
        assert headers["Content-Type"] == "application/json"
        timestamp = headers[alerts.TIMESTAMP_HEADER]
        assert abs(int(timestamp) - before) <= 5
        assert alerts.verify(SECRET, timestamp, body, headers[alerts.SIGNATURE_HEADER])
        assert not alerts.verify(SECRET, timestamp, body + b" ", headers[alerts.SIGNATURE_HEADER])
        assert url in URLS
    for row in fleet.outbox():
        assert row[3] == 1 and row[5] is not None and row[5] >= before
        assert row[6] == status and row[7] is None
    assert storage.outbox_counts(store.connection(), URLS) == {"pending": 0, "delivered": 2,
                                                                "held": 0}
    assert storage.next_due(store.connection(), URLS) is None
    assert alerts.deliver_due(store, settings, send=receiver) == (0, 0)
    assert len(receiver.calls) == 2


@pytest.mark.parametrize("answer", [500, 503, 404, 302, 100, OSError("connection refused"),
                                    ConnectionRefusedError(111, "refused"), TimeoutError("slow"),
                                    ValueError("bad url"), http.client.BadStatusLine("GARBAGE"),
                                    http.client.InvalidURL("nonnumeric port: 'abc'")])
def test_a_failure_schedules_a_retry(store: Store, answer: int | Exception) -> None:
    settings = alert_settings(webhook_max_backoff=300.0)
    fleet, _ = raised_alert(store, settings)
    receiver = Receiver(answer)
    before = time.time()
    assert alerts.deliver_due(store, settings, send=receiver) == (0, 2)
    assert len(receiver.calls) == 2
    for row in fleet.outbox():
        attempts, next_attempt_at, delivered_at, last_status, last_error = row[3:]
        assert attempts == 1 and delivered_at is None
        assert before + 0.5 <= next_attempt_at <= time.time() + 1.0
        if isinstance(answer, int):
            assert last_status == answer and last_error == f"HTTP {answer}"
        else:
            assert last_status is None and type(answer).__name__ in last_error
    # Not due yet: nothing is sent again.
    assert alerts.deliver_due(store, settings, send=receiver) == (0, 0)
    assert len(receiver.calls) == 2
    assert storage.next_due(store.connection(), URLS) >= before + 0.5


def test_a_receiver_that_does_not_speak_http_is_a_failed_attempt(store: Store) -> None:
    """The real sender against a socket that answers garbage: counted, retried with backoff."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_garbage() -> None:
        with listener:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"GARBAGE\r\n\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    settings = alert_settings(webhook_urls=(f"http://127.0.0.1:{port}/hook",),
                              webhook_timeout=5.0)
    fleet, _ = raised_alert(store, settings)
    assert alerts.deliver_due(store, settings) == (0, 1)
    thread.join(5)
    attempts, next_attempt_at, delivered_at, last_status, last_error = fleet.outbox()[0][3:]
    assert attempts == 1 and delivered_at is None and last_status is None
    assert last_error.startswith("BadStatusLine") and next_attempt_at > time.time()


def test_a_retry_once_due_is_sent_and_can_succeed(store: Store) -> None:
    settings = alert_settings(webhook_urls=URLS[:1])
    fleet, alert = raised_alert(store, settings)
    receiver = Receiver(500, OSError("down"), 200)
    due_now = "UPDATE outbox SET next_attempt_at = 0"
    assert alerts.deliver_due(store, settings, send=receiver) == (0, 1)
    store.connection().execute(due_now)
    assert alerts.deliver_due(store, settings, send=receiver) == (0, 1)
    assert fleet.outbox()[0][3] == 2 and "OSError" in fleet.outbox()[0][7]
    store.connection().execute(due_now)
    assert alerts.deliver_due(store, settings, send=receiver) == (1, 0)
    row = fleet.outbox()[0]
    assert row[3] == 3 and row[5] is not None and row[6] == 200 and row[7] is None
    # Every attempt carried the same alert id (receivers deduplicate on it).
    assert {call[2][alerts.ALERT_ID_HEADER] for call in receiver.calls} == {alert["alert_id"]}
    store.connection().execute(due_now)
    assert alerts.deliver_due(store, settings, send=receiver) == (0, 0)
    assert len(receiver.calls) == 3


def test_rows_for_a_removed_url_are_held_and_sent_once_it_is_back(store: Store) -> None:
    settings = alert_settings()
    raised_alert(store, settings)  # queued for both URLS
    fewer = alert_settings(webhook_urls=URLS[:1])
    receiver = Receiver(200)
    assert alerts.deliver_due(store, fewer, send=receiver) == (1, 0)
    assert [call[0] for call in receiver.calls] == [URLS[0]]
    conn = store.connection()
    assert storage.outbox_counts(conn, fewer.webhook_urls) == {"pending": 1, "delivered": 1,
                                                               "held": 1}
    assert storage.next_due(conn, fewer.webhook_urls) is None  # nothing for the dispatcher
    assert storage.next_due(conn, ()) is None
    assert alerts.deliver_due(store, alert_settings(webhook_urls=()), send=receiver) == (0, 0)
    # Configured again: the held row goes out, with no other.
    assert alerts.deliver_due(store, settings, send=receiver) == (1, 0)
    assert [call[0] for call in receiver.calls] == list(URLS)
    assert storage.outbox_counts(conn, URLS) == {"pending": 0, "delivered": 2, "held": 0}


def test_a_leased_row_is_not_sent_by_another_round(store: Store) -> None:
    settings = alert_settings(webhook_urls=URLS[:1])
    raised_alert(store, settings)
    with store.transaction() as conn:
        assert len(storage.claim_due(conn, storage.now(), 60.0, 10, URLS)) == 1
    receiver = Receiver(200)
    assert alerts.deliver_due(store, settings, send=receiver) == (0, 0)
    assert receiver.calls == []


def test_each_delivery_holds_the_lease_of_its_own_row_only(store: Store) -> None:
    # Rows leased together would wait behind each other's slow deliveries, outlive their
    # leases, and be sent again by another worker.
    settings = alert_settings(webhook_urls=URLS[:1])
    fleet = Fleet(store, settings)
    for asset in ("p1", "p2", "p3"):
        fleet.add(asset)
        assert fleet.reading(asset, 0, 0.9) is not None
    leased: list[int] = []

    def receiver(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
        leased.append(store.connection().execute(
            "SELECT COUNT(*) FROM outbox WHERE lease_until > ? AND delivered_at IS NULL",
            (storage.now(),)).fetchone()[0])
        return 200

    assert alerts.deliver_due(store, settings, send=receiver) == (3, 0)
    assert leased == [1, 1, 1]


def test_a_redirect_is_a_failed_delivery_not_followed() -> None:
    from http.server import BaseHTTPRequestHandler, HTTPServer

    seen: list[str] = []

    class Moved(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            seen.append("POST")
            self.send_response(302)
            self.send_header("Location", "/elsewhere")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:  # noqa: N802
            seen.append("GET")  # where a followed redirect would land, without the alert
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Moved)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/alerts"
        assert alerts.post(url, b"{}", {"Content-Type": "application/json"}, 5.0) == 302
    finally:
        server.shutdown()
        server.server_close()
    assert seen == ["POST"]


def test_without_a_secret_no_signature_header(store: Store) -> None:
    settings = alert_settings(webhook_urls=URLS[:1])
    raised_alert(store, settings)
    receiver = Receiver(200)
    assert alerts.deliver_due(store, Settings(webhook_urls=URLS[:1]), send=receiver) == (1, 0)
    assert alerts.SIGNATURE_HEADER not in receiver.calls[0][2]


# =========================================================================== metrics


def test_requests_are_labelled_by_route_template(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from prometheus_client import REGISTRY

    from service import app

    testing = importlib.import_module("falcon.testing")  # after service.compat's fixes

    monkeypatch.setenv("RUL_DB", str(tmp_path / "m.db"))
    monkeypatch.delenv("RUL_API_KEYS", raising=False)
    app.stop()
    app.start()
    try:
        client = testing.TestClient(app.__hug_wsgi__)

        def count(route: str, status: str) -> float:
            return REGISTRY.get_sample_value("rul_http_requests_total", {
                "method": "GET", "route": route, "status": status}) or 0.0

        before = {r: count(r, s) for r, s in (("/v1/assets/{asset_id}", "404"),
                                              ("/v1/models/{name}", "200"),
                                              ("unmatched", "404"))}
        for path in ("/v1/assets/pump-7", "/v1/assets/42", "/v1/models/cmapss-fd001",
                     "/v1/nope", "/v1/assets/a/b"):
            client.simulate_get(path)
        assert count("/v1/assets/{asset_id}", "404") == before["/v1/assets/{asset_id}"] + 2
        assert count("/v1/models/{name}", "200") == before["/v1/models/{name}"] + 1
        assert count("unmatched", "404") == before["unmatched"] + 2
    finally:
        app.stop()


def test_a_worker_freezes_what_it_loaded_so_full_collections_skip_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from service import app, server

    monkeypatch.setenv("RUL_DB", str(tmp_path / "w.db"))
    app.stop()
    gc.unfreeze()
    try:
        server._post_worker_init(worker=None)
        loaded = app.service().registry.get(None)
        assert gc.get_freeze_count() > 1000
        assert not any(obj is loaded for obj in gc.get_objects())  # frozen: not tracked
    finally:
        app.stop()
        gc.unfreeze()


# =========================================================================== storage


def test_a_transaction_rolls_back_on_an_exception(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom), store.transaction() as conn:
        storage.put_asset(conn, "p1", "fd001", None, 1.0)
        storage.insert_readings(conn, "p1", [(0, b'{"a":1}'), (1, b'{"a":2}')], 1.0)
        raise Boom
    conn = store.connection()
    assert storage.get_asset(conn, "p1") is None
    assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 0
    assert not conn.in_transaction
    # The store still works afterwards, and a committed write stays.
    with store.transaction() as conn:
        storage.put_asset(conn, "p1", "fd001", 0.3, 2.0)
    with pytest.raises(sqlite3.IntegrityError), store.transaction() as conn:
        storage.insert_readings(conn, "p1", [(0, b"{}")], 3.0)
        storage.insert_readings(conn, "p1", [(0, b"{}")], 3.0)  # duplicate key
    asset = storage.get_asset(store.connection(), "p1")
    assert asset is not None and asset["alert_threshold"] == 0.3
    assert asset["n_readings"] == 0 and asset["last_cycle"] is None


def test_a_committed_transaction_is_seen_by_another_connection(store: Store) -> None:
    with store.transaction() as conn:
        storage.put_asset(conn, "p1", "fd001", None, 1.0)
    other = Store(store.path)
    try:
        assert storage.get_asset(other.connection(), "p1")["model"] == "fd001"
    finally:
        other.close()


def test_initialise_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    first = Store(path)
    first.initialise()
    with first.transaction() as conn:
        storage.put_asset(conn, "p1", "fd001", None, 1.0)
    first.initialise()
    first.close()
    second = Store(path)
    second.initialise()
    conn = second.connection()
    assert conn.execute("PRAGMA user_version").fetchone()[0] == storage.SCHEMA_VERSION
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"assets", "readings", "forecasts", "alerts", "outbox"} <= tables
    assert storage.count_assets(conn) == 1
    assert second.writable() is None
    second.close()


def test_initialise_refuses_a_missing_folder(tmp_path: Path) -> None:
    missing = Store(tmp_path / "no" / "such" / "service.db")
    with pytest.raises(StorageError, match="does not exist"):
        missing.initialise()
    assert not (tmp_path / "no").exists()


def test_initialise_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "service.db"
    with sqlite3.connect(path) as conn:
        conn.execute(f"PRAGMA user_version={storage.SCHEMA_VERSION + 1}")
    store = Store(path)
    with pytest.raises(StorageError, match="newer"):
        store.initialise()
    store.close()


def test_the_metrics_folder_is_emptied_of_samples_only(tmp_path: Path) -> None:
    from service.server import clear_metrics_dir

    samples = tmp_path / "metrics"
    samples.mkdir()
    for name in ("counter_12.db", "histogram_12.db", "gauge_livesum_7.db"):
        (samples / name).write_bytes(b"\0" * 8)
    clear_metrics_dir(samples)
    assert list(samples.iterdir()) == []
    clear_metrics_dir(tmp_path / "new" / "folder")  # made where missing
    assert (tmp_path / "new" / "folder").is_dir()
    # A folder shared with anything else (the database, say) is refused, and left as it was.
    shared = tmp_path / "data"
    shared.mkdir()
    (shared / "service.db").write_bytes(b"keep")
    (shared / "counter_3.db").write_bytes(b"\0")
    with pytest.raises(ConfigError, match="service.db.*folder of its own"):
        clear_metrics_dir(shared)
    assert sorted(p.name for p in shared.iterdir()) == ["counter_3.db", "service.db"]
    with pytest.raises(ConfigError, match="is not a folder"):
        clear_metrics_dir(shared / "service.db")
