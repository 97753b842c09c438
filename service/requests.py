"""Request validation: bodies and query strings into checked numpy arrays, or an ApiError.

Every check names the offending field as a path into the request (`readings[3].sensor_2`,
`assets[1].window`, `query.limit`), so a plant integrator sees what to fix. Nothing past these
functions re-validates: the arrays they return are finite float32 in the model card's order.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from operator import itemgetter
from typing import Any

import msgspec
import numpy as np
import orjson

from rul.schema import CYCLE
from service.errors import bad_request, too_large

NPY_CONTENT_TYPE = "application/x-npy"
JSON_CONTENT_TYPE = "application/json"
_NUMBER = (int, float)
_NUMBER_TYPES = frozenset(_NUMBER)
_INTEGER_TEXT = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only
_INT64_MAX = 2**63 - 1
MAX_CYCLE = 2**62
"""The largest cycle stored, and so the largest a query can ask for."""


@dataclass(frozen=True)
class Readings:
    """One asset's readings, checked: values [cycles, n_features] float32, oldest first."""

    values: np.ndarray
    cycles: np.ndarray | None
    """[cycles] int64 when the request gave cycles, else None."""


def parse_json(data: bytes) -> Any:
    """A request body as JSON (400 naming the position of a syntax error)."""
    if not data:
        raise bad_request("the request body is empty; send a JSON object", "body")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise bad_request(f"the request body is not valid JSON ({exc}); NaN and Infinity are "
                          "not JSON, send numbers only", "body") from None


@dataclass(frozen=True)
class PlainReadingsBody:
    """A body `{"readings": [...], "model"?: name}` whose readings are exactly one model's
    features, decoded and checked in one pass (`plain_readings_body`)."""

    model: str | None
    readings: Readings


def plain_readings_body(data: bytes, features: Sequence[str], max_rows: int
                        ) -> PlainReadingsBody | None:
    """The common single-asset body, typed while it is parsed (msgspec; in half the time of
    orjson and the checks of `readings_matrix`). None for any other body, valid or not: the general
    path (`parse_json`, `readings_matrix`) then reads it and names what is wrong, so this
    accepts only what that path accepts, with the same arrays (tests/test_service_units.py
    holds the two together), and never words an error of its own."""
    try:
        body = _readings_decoder(tuple(features)).decode(data)
    except msgspec.MsgspecError:
        return None
    rows = list(map(msgspec.structs.astuple, body.readings))
    if not 0 < len(rows) <= max_rows:
        return None
    try:  # struct, not np.array over the rows: 1.6x faster; the same doubles
        packed = struct.pack(f"{len(rows) * len(features)}d", *chain.from_iterable(rows))
    except struct.error:  # a cycle beyond any double
        return None
    table = np.frombuffer(packed, np.float64).reshape(len(rows), -1)
    try:  # the cast's overflow flag, not a reduction over the table: cheaper on cold caches
        with np.errstate(over="raise"):
            values = table.astype(np.float32)
    except FloatingPointError:  # beyond float32 (the general path says so)
        return None
    cycles = None
    if CYCLE in features:
        # Whole numbers (msgspec checked), exact as doubles up to 2**53.
        column = table[:, list(features).index(CYCLE)]
        if not _rising(column, min(MAX_CYCLE, 2**53)):
            return None
        cycles = column.astype(np.int64)
    return PlainReadingsBody(body.model, Readings(values, cycles))


@lru_cache(maxsize=64)
def _readings_decoder(features: tuple[str, ...]) -> msgspec.json.Decoder:
    # Fields f0, f1, ... renamed to the features: a feature's name need not be an identifier.
    # Floats take JSON integers but not booleans or strings; `cycle` takes integers only.
    reading = msgspec.defstruct(
        "Reading", [(f"f{i}", int if name == CYCLE else float) for i, name in enumerate(features)],
        rename={f"f{i}": name for i, name in enumerate(features)}, forbid_unknown_fields=True)
    body = msgspec.defstruct("ReadingsBody", [("readings", list[reading]),
                                              ("model", str | None, None)],
                             forbid_unknown_fields=True)
    return msgspec.json.Decoder(body)


def require_object(value: Any, field: str, keys: Sequence[str], optional: Sequence[str] = ()
                   ) -> dict[str, Any]:
    """`value` is an object with no keys beyond `keys` + `optional` and at least one of `keys`."""
    if not isinstance(value, dict):
        raise bad_request(f"{field} must be a JSON object; got {_json_type(value)}", field)
    unknown = [k for k in value if k not in keys and k not in optional]
    if unknown:
        raise bad_request(f"unknown field {unknown[0]!r} in {field}; allowed: "
                          f"{sorted([*keys, *optional])}", subfield(field, unknown[0]))
    return value


def readings_matrix(rows: Any, features: Sequence[str], field: str, *, max_rows: int,
                    cycle_required: bool = False) -> Readings:
    """A list of readings objects keyed by feature name -> Readings. `cycle` is checked when
    present (non-negative integers, strictly increasing) and, for streamed readings
    (`cycle_required`), needed on every row."""
    if not isinstance(rows, list):
        raise bad_request(f"{field} must be a list of readings objects; got {_json_type(rows)}",
                          field)
    if not rows:
        raise bad_request(f"{field} is empty; send at least one reading", field)
    if len(rows) > max_rows:
        raise too_large(f"{field} has {len(rows)} rows; at most {max_rows} per call "
                        "(RUL_MAX_ROWS)", field)
    pick = itemgetter(*features) if len(features) > 1 else (lambda row: (row[features[0]],))
    if not cycle_required:
        table = _plain_rows(rows, pick, len(features))
        if table is not None:
            values = _finite_matrix(table, features, field)
            if CYCLE in features:  # the asset's age is a model input: it gets cycle's checks
                return Readings(values, _cycles([row[CYCLE] for row in rows], field))
            return Readings(values, None)
    allowed = {*features, CYCLE}
    table = []
    cycles: list[Any] = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise bad_request(f"{field}[{i}] must be an object keyed by feature name; got "
                              f"{_json_type(row)}", f"{field}[{i}]")
        try:
            table.append(pick(row))
        except KeyError:
            missing = [name for name in features if name not in row]
            why = ("the model takes the asset's age, its cycles since the start of service, as "
                   "an input" if missing[0] == CYCLE else f"the model needs {list(features)}")
            raise bad_request(f"{field}[{i}] lacks feature {missing[0]!r} ({why})",
                              f"{field}[{i}].{missing[0]}") from None
        if len(row) != len(features):
            unknown = [k for k in row if k not in allowed]
            if unknown:
                raise bad_request(f"{field}[{i}] has unknown feature {unknown[0]!r}; the model's "
                                  f"features are {list(features)}", f"{field}[{i}].{unknown[0]}")
        if CYCLE in row:
            cycles.append(row[CYCLE])
        elif cycle_required:
            raise bad_request(f"{field}[{i}] lacks 'cycle' (streamed readings are keyed by "
                              "asset and cycle)", f"{field}[{i}].cycle")
    values = _finite_matrix(table, features, field)
    checked_cycles = None
    if cycles:
        if len(cycles) != len(rows):
            first = next(i for i, row in enumerate(rows) if CYCLE not in row)
            raise bad_request(f"{field}[{first}] lacks 'cycle' while other readings have it",
                              f"{field}[{first}].cycle")
        checked_cycles = _cycles(cycles, field)
    return Readings(values, checked_cycles)


def _plain_rows(rows: list[Any], pick: Any, width: int) -> list[Any] | None:
    """The common case at C speed: every row an object of exactly the features, no cycle (a
    single prediction). None otherwise: the row-by-row checks then name what is wrong."""
    try:
        table = list(map(pick, rows))
    except (KeyError, TypeError):  # a missing feature, or a row that is not an object
        return None
    return table if set(map(len, rows)) == {width} else None


def window_matrix(window: Any, n_rows: int, features: Sequence[str], field: str) -> np.ndarray:
    """A plain [window][n_features] matrix in card order -> float32 array."""
    if not isinstance(window, list) or not window:
        raise bad_request(f"{field} must be a non-empty list of rows; got {_json_type(window)}",
                          field)
    if len(window) != n_rows:
        raise bad_request(f"{field} has {len(window)} rows; the model's window is {n_rows} "
                          "(send 'readings' by feature name for shorter histories: they are "
                          "padded)", field)
    for i, row in enumerate(window):
        if not isinstance(row, list) or len(row) != len(features):
            got = f"{len(row)} values" if isinstance(row, list) else _json_type(row)
            raise bad_request(f"{field}[{i}] must be a list of {len(features)} numbers in the "
                              f"order {list(features)}; got {got}", f"{field}[{i}]")
    values = _finite_matrix(window, features, field, by_position=True)
    _check_cycle_column(values[None], features, lambda b, r: f"{field}[{r}]")
    return values


def npy_windows(data: bytes, window: int, features: Sequence[str], max_windows: int
                ) -> np.ndarray:
    """A binary batch: one .npy array [batch, window, n_features] (float32 or float64)."""
    stream = io.BytesIO(data)
    try:
        array = np.load(stream, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError/OSError/EOFError for bad files
        raise bad_request(f"the body is not a readable .npy array ({_first_line(exc)})",
                          "body") from None
    if not isinstance(array, np.ndarray):  # np.load opens .npz archives too
        raise bad_request("the body must be one .npy array, not an .npz archive", "body")
    if stream.tell() != len(data):  # two arrays sent as one, or a body glued to another
        raise bad_request(f"the body holds {len(data) - stream.tell()} bytes after its .npy "
                          "array; send exactly one array", "body")
    expected = [window, len(features)]
    if array.ndim != 3 or list(array.shape[1:]) != expected:
        raise bad_request(f"the .npy array must have shape [batch, {window}, {len(features)}] "
                          f"(window, features {list(features)}); got {list(array.shape)}", "body")
    if array.dtype.kind != "f" or array.dtype.itemsize not in (4, 8):  # either byte order
        raise bad_request(f"the .npy array must be float32 or float64; got {array.dtype}",
                          "body")
    if len(array) == 0:
        raise bad_request("the .npy array holds no windows", "body")
    if len(array) > max_windows:
        raise too_large(f"the .npy array holds {len(array)} windows; at most {max_windows} per "
                        "call (RUL_MAX_ASSETS)", "body")
    array = np.ascontiguousarray(array, dtype=np.float32)
    bad = ~np.isfinite(array)
    if bad.any():
        b, r, c = (int(i) for i in np.argwhere(bad)[0])
        raise bad_request(f"window {b}, row {r}, feature {features[c]!r} is not a finite number",
                          f"body[{b}][{r}][{c}]")
    _check_cycle_column(array, features, lambda b, r: f"body[{b}][{r}]")
    return array


def _check_cycle_column(windows: np.ndarray, features: Sequence[str], where: Any) -> None:
    """Where `cycle` is a model input, each window's cycles are whole numbers >= 0 that rise
    from row to row, but for the repeats of its first row that pad a short history: anything
    else is a column out of order."""
    if CYCLE not in features:
        return
    j = list(features).index(CYCLE)
    cycles = windows[:, :, j]
    step = cycles[:, 1:] - cycles[:, :-1]
    if (step > 0).all() and (cycles[:, 0] >= 0).all() and (cycles == np.floor(cycles)).all():
        return  # the common case, unpadded, in a few microseconds
    bad = (cycles < 0) | (cycles != np.floor(cycles))
    risen = np.logical_or.accumulate(step > 0, axis=1)  # past the padding at this step
    bad[:, 1:] |= (step < 0) | ((step == 0) & np.pad(risen[:, :-1], ((0, 0), (1, 0))))
    if bad.any():
        b, r = (int(i) for i in np.argwhere(bad)[0])
        field = f"{where(b, r)}[{j}]"
        raise bad_request(f"{field}, the cycle (the asset's age, a model input), must be a whole "
                          "number >= 0 above the row before (only a padded window's first rows "
                          f"repeat); got {float(cycles[b, r]):g} (are the columns in the order "
                          f"{list(features)}?)", field)


def query_int(params: Mapping[str, Any], name: str, default: int | None, *, minimum: int = 0,
              maximum: int | None = None) -> int | None:
    """An integer query parameter (400 for anything else, or out of range)."""
    value = query_text(params, name)
    if value is None:
        return default
    field = f"query.{name}"
    if not _INTEGER_TEXT.fullmatch(str(value)) or abs(int(value)) > _INT64_MAX:
        raise bad_request(f"query parameter {name} must be a 64-bit integer; got {value!r}",
                          field)
    number = int(value)
    if number < minimum:
        raise bad_request(f"query parameter {name} must be >= {minimum}; got {number}", field)
    if maximum is not None and number > maximum:
        raise bad_request(f"query parameter {name} must be <= {maximum}; got {number}", field)
    return number


def query_text(params: Mapping[str, Any], name: str) -> str | None:
    """A text query parameter given at most once (None when absent or empty)."""
    value = params.get(name)
    if isinstance(value, list):
        raise bad_request(f"query parameter {name} is given {len(value)} times; give it once",
                          f"query.{name}")
    return None if value is None or value == "" else value


def query_choice(params: Mapping[str, Any], name: str, choices: Sequence[str], default: str
                 ) -> str:
    value = query_text(params, name) or default
    if value not in choices:
        raise bad_request(f"query parameter {name} must be one of {list(choices)}; got "
                          f"{value!r}", f"query.{name}")
    return str(value)


def check_unknown_query(params: Mapping[str, Any], allowed: Sequence[str]) -> None:
    """Refuse query parameters the endpoint does not know (a typo should not pass silently)."""
    unknown = [k for k in params if k not in allowed]
    if unknown:
        raise bad_request(f"unknown query parameter {unknown[0]!r}; allowed: {sorted(allowed)}",
                          f"query.{unknown[0]}")


# What an asset id may not hold: control characters (C0, DEL, C1), and the invisible ones of the
# Basic Multilingual Plane, spaces other than the ASCII space and format characters (no-break
# and zero-width spaces, line separators, bidi marks, the BOM), so two ids that look alike are
# alike. Written as a regex character class that Python and ECMAScript read alike: the OpenAPI
# document's pattern is built from it (service/openapi.py), so the two cannot drift apart, and
# unlike str.isprintable it does not change with the interpreter's Unicode version.
ASSET_ID_FORBIDDEN = (r"\x00-\x1f\x7f-\xa0\xad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891"
                      r"\u08e2\u1680\u180e\u2000-\u200f\u2028-\u202f\u205f-\u206f\u3000\ufeff"
                      r"\ufff9-\ufffb")
ASSET_ID_MAX_LENGTH = 200
_ASSET_ID = re.compile(f"[^{ASSET_ID_FORBIDDEN}]{{1,{ASSET_ID_MAX_LENGTH}}}")


def asset_id_value(value: Any, field: str) -> str:
    """An asset id: a non-empty string (or an integer, as C-MAPSS unit numbers are) -> str."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise bad_request(f"{field} must be a string or an integer; got {_json_type(value)}",
                          field)
    text = str(value)
    if _ASSET_ID.fullmatch(text) is None:
        raise bad_request(f"{field} must be 1-{ASSET_ID_MAX_LENGTH} characters without control "
                          f"characters or invisible spaces; got {text!r}", field)
    return text


def path_asset_id(text: str) -> str:
    """The asset id of a path (`/v1/assets/{asset_id}/...`): as `asset_id_value`, and never
    U+FFFD, which every percent-escape that is not UTF-8 decodes to (falcon decodes paths
    leniently), so `%FF%FE` and `%80%80` would otherwise name one asset."""
    field = "path.asset_id"
    text = asset_id_value(text, field)
    if "\ufffd" in text:
        raise bad_request(f"{field} holds U+FFFD, the stand-in for bytes that are not UTF-8 (a "
                          f"percent-escape in the path that is not UTF-8?); got {text!r}", field)
    return text


def threshold_value(value: Any, field: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, _NUMBER) or not 0 < value <= 1:
        raise bad_request(f"{field} must be a number in (0, 1] or null; got {value!r}", field)
    return float(value)


def _finite_matrix(table: list[Any], features: Sequence[str], field: str,
                   by_position: bool = False) -> np.ndarray:
    # The common case checked at C speed; the loop below only runs to name a bad value.
    if not set(map(type, chain.from_iterable(table))) <= _NUMBER_TYPES:
        _name_bad_value(table, features, field, by_position)
    with np.errstate(over="ignore"):
        values = np.array(table, dtype=np.float64).astype(np.float32)
    if not np.isfinite(values).all():  # finite in JSON, but beyond float32's range
        i, j = (int(k) for k in np.argwhere(~np.isfinite(values))[0])
        where = f"{field}[{i}][{j}]" if by_position else f"{field}[{i}].{features[j]}"
        raise bad_request(f"{where} is too large for a float32 reading; got {table[i][j]!r}",
                          where)
    return values


def _name_bad_value(table: list[Any], features: Sequence[str], field: str,
                    by_position: bool) -> None:
    for i, row in enumerate(table):
        for j, value in enumerate(row):
            if type(value) not in _NUMBER or (type(value) is float and not math.isfinite(value)):
                where = f"{field}[{i}][{j}]" if by_position else f"{field}[{i}].{features[j]}"
                raise bad_request(f"{where} must be a finite number; got {value!r}", where)


def _rising(cycles: np.ndarray, top: int) -> bool:
    """Cycles from 0 to `top`, strictly rising: `_cycles`'s checks but the type, in numpy."""
    return bool(cycles[0] >= 0 and cycles[-1] <= top and (cycles[1:] > cycles[:-1]).all())


def _cycles(cycles: list[Any], field: str) -> np.ndarray:
    if set(map(type, cycles)) == {int}:  # the common case at C speed
        array = np.array(cycles)
        if array.dtype == np.int64 and _rising(array, MAX_CYCLE):
            return array
    # The checks in order, to name the first bad value.
    for i, value in enumerate(cycles):
        if type(value) is not int or not 0 <= value <= MAX_CYCLE:
            raise bad_request(f"{field}[{i}].cycle must be a non-negative integer; got "
                              f"{value!r}", f"{field}[{i}].cycle")
    array = np.array(cycles, dtype=np.int64)
    steps = array[1:] - array[:-1]
    if (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise bad_request(f"{field}[{i}].cycle = {cycles[i]} does not follow {cycles[i - 1]}; "
                          "send readings oldest first, one per cycle", f"{field}[{i}].cycle")
    return array


def subfield(field: str, key: str) -> str:
    """The path of `key` inside `field` (top-level keys of the body stand alone)."""
    return key if field == "body" else f"{field}.{key}"


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
             int: "an integer", float: "a number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
