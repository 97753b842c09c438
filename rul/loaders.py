"""Readers for every supported source, all producing the same validated `Fleet`.

NASA C-MAPSS text (plain or gzip), CSV, Parquet and in-memory DataFrames. Each goes through
`rul.fleet.validate_fleet` once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rul.errors import DataError, plain
from rul.fleet import Fleet, Locator, validate_fleet
from rul.schema import ASSET_ID, CMAPSS_COLUMNS, CYCLE, SENSORS, SETTINGS, TIMESTAMP

DATA_DIR_ENV = "RUL_CMAPSS_DIR"
"""Environment variable naming a C-MAPSS directory; defaults to ../shared/data/cmapss."""


def default_cmapss_dir() -> Path:
    """The C-MAPSS directory: $RUL_CMAPSS_DIR, else ../shared/data/cmapss beside the checkout."""
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / "shared" / "data" / "cmapss"


@dataclass(frozen=True)
class CmapssSubset:
    """One C-MAPSS subset: run-to-failure training data and truncated test data with labels."""

    name: str
    """Subset name, e.g. FD001 (or SIM for a simulated fleet)."""
    train: Fleet
    """Full run-to-failure trajectories."""
    test: Fleet | None
    """Trajectories that stop before failure; None when the directory has no test file."""
    test_rul: np.ndarray | None
    """True RUL after each test asset's last cycle, in asset order; None without a RUL file."""
    test_rul_source: Path | None = None
    """The RUL file `test_rul` was read from; None without a RUL file."""


@dataclass(frozen=True)
class FleetColumns:
    """How the columns of a CSV/Parquet/DataFrame fleet map onto the data contract."""

    asset_id: str = ASSET_ID
    """Column holding the asset id (renamed to asset_id)."""
    cycle: str = CYCLE
    """Column holding the cycle number (renamed to cycle)."""
    timestamp: str | None = None
    """Optional timestamp column, kept beside cycle (renamed to timestamp)."""
    settings: Sequence[str] | None = None
    """Operating-setting columns; None: every column whose name starts with 'setting'."""
    sensors: Sequence[str] | None = None
    """Sensor columns; None: every other column. When given, any other column is an error."""


def load_cmapss(directory: Path | str, subset: str) -> CmapssSubset:
    """Load `train_<subset>`, `test_<subset>` and `RUL_<subset>` (.txt or .txt.gz) from a directory.

    The test file and the RUL file are optional; a RUL file without a test file is an error.
    """
    directory = Path(directory)
    train_path = _train_file(directory, subset)
    test_path = _find(directory, f"test_{subset}")
    rul_path = _find(directory, f"RUL_{subset}")
    train = read_cmapss_file(train_path)
    test = read_cmapss_file(test_path) if test_path else None
    if rul_path is not None and test is None:
        raise DataError(f"labels without a test_{subset} file", file=str(rul_path))
    test_rul = read_rul_file(rul_path, test.n_assets) if rul_path and test else None
    return CmapssSubset(subset, train, test, test_rul, rul_path if test_rul is not None else None)


FLEET_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".pq", ".txt", ".txt.gz")
"""The file names `read_fleet` reads."""


def load_extra_training(names: Sequence[str], directory: Path | str | None = None
                        ) -> list[Fleet]:
    """The fleets `data.extra_training` names: a name with a path separator or a fleet file's
    suffix is read as a fleet file (relative to the working directory), any other as the
    training engines (only the train file) of that C-MAPSS subset in `directory` (default:
    `default_cmapss_dir()`)."""
    fleets = []
    for name in names:
        is_file = "/" in name or "\\" in name or name.lower().endswith(FLEET_SUFFIXES)
        try:
            fleets.append(read_fleet(name) if is_file else read_cmapss_file(
                _train_file(Path(directory or default_cmapss_dir()), name)))
        except DataError as exc:
            kind = "a fleet file" if is_file else ("a C-MAPSS subset (a fleet file needs its "
                                                   "suffix or a path)")
            raise DataError(f"data.extra_training names {name!r}, read as {kind}: "
                            f"{exc.message} (a --config file with data: {{extra_training: "
                            "[]}} trains without it)", file=exc.file, line=exc.line,
                            row=exc.row, asset=exc.asset, column=exc.column) from None
    return fleets


def _train_file(directory: Path, subset: str) -> Path:
    """The path of `train_<subset>` in a C-MAPSS directory (DataError when there is none)."""
    if not directory.is_dir():
        what = "is a file, not a C-MAPSS directory" if directory.exists() else (
            "no such file or directory")
        raise DataError(f"{what} (give --data a C-MAPSS directory or a fleet file, or set "
                        f"{DATA_DIR_ENV})", file=str(directory))
    if not re.fullmatch(r"[A-Za-z0-9_-]+", subset):
        raise DataError(f"invalid subset name {subset!r}", file=str(directory))
    train_path = _find(directory, f"train_{subset}")
    if train_path is None:
        available = sorted(p.name for p in directory.glob("train_*"))
        raise DataError(f"no train_{subset}.txt or .txt.gz here; found {available}",
                        file=str(directory))
    return train_path


def read_cmapss_file(path: Path | str) -> Fleet:
    """Read one NASA C-MAPSS text file: whitespace-separated, 26 columns, no header."""
    path = Path(path)
    locator = Locator(str(path), kind="line", offset=1)
    fleet = _cmapss_fleet(_read_text(path, locator), locator)
    _check_unit_numbers(fleet.asset_ids, locator)
    return fleet


def read_rul_file(path: Path | str, n_assets: int) -> np.ndarray:
    """Read a RUL_FD00N file: one non-negative integer per test asset, in unit order."""
    path = Path(path)
    locator = Locator(str(path), kind="line", offset=1)
    raw = _read_text(path, locator)
    if raw.shape[1] != 1:
        raise locator.error(f"expected one value per line, found {raw.shape[1]}", 0)
    values = pd.to_numeric(raw[0], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (values != np.floor(values)) | (values < 0)
    if bad.any():
        pos = int(np.argmax(bad))
        raise locator.error(f"RUL must be a non-negative integer, got {plain(raw[0].iloc[pos])!r}",
                            pos)
    if len(values) != n_assets:
        raise locator.error(f"{len(values)} labels for {n_assets} test assets")
    return values.astype(np.int64)


def read_fleet(path: Path | str, columns: FleetColumns | None = None) -> Fleet:
    """Read a fleet file: CSV (.csv[.gz]), Parquet (.parquet, .pq) or C-MAPSS text (.txt[.gz])."""
    path = Path(path)
    if not path.is_file():
        raise DataError("file not found", file=str(path))
    name = path.name.lower()
    if name.endswith((".txt", ".txt.gz")):
        return read_cmapss_file(path)
    if name.endswith((".csv", ".csv.gz")):
        locator = Locator(str(path), kind="line", offset=2)  # line 1 is the header
        try:
            raw = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            raise locator.error("file is empty") from None
        except (pd.errors.ParserError, UnicodeDecodeError) as exc:
            raise _parser_error(exc, locator) from None
    elif name.endswith((".parquet", ".pq")):
        locator = Locator(str(path), kind="row", offset=1)
        try:
            raw = pd.read_parquet(path)
        except ImportError:
            raise DataError("reading Parquet needs pyarrow: pip install 'rul[parquet]'",
                            file=str(path)) from None
        except Exception as exc:  # pyarrow raises its own types for a damaged file
            raise locator.error(f"not a readable Parquet file ({exc})") from None
    else:
        raise DataError(f"unknown file type; expected one of {', '.join(FLEET_SUFFIXES)}",
                        file=str(path))
    return _columns_to_fleet(raw, columns or FleetColumns(), locator)


def fleet_from_dataframe(frame: pd.DataFrame, columns: FleetColumns | None = None,
                         source: str = "<dataframe>") -> Fleet:
    """Validate an in-memory long-format DataFrame (rows are counted from 1)."""
    return _columns_to_fleet(frame, columns or FleetColumns(), Locator(source, "row", 1))


def _columns_to_fleet(raw: pd.DataFrame, columns: FleetColumns, locator: Locator) -> Fleet:
    raw = _canonical_names(raw, columns, locator)
    reserved = {ASSET_ID, CYCLE, TIMESTAMP}
    others = [str(c) for c in raw.columns if c not in reserved]
    settings = (list(columns.settings) if columns.settings is not None
                else [c for c in others if c.startswith("setting")])
    if columns.sensors is not None:
        sensors = list(columns.sensors)
        extra = [c for c in others if c not in settings and c not in sensors]
        if extra:
            raise locator.error(f"unexpected columns {extra}: name them as settings or sensors, "
                                f"or drop them")
    else:
        sensors = [c for c in others if c not in settings]
    named = [c for c in (*settings, *sensors) if c in reserved]
    if named:
        raise locator.error(f"{named[0]!r} is the asset id, cycle or timestamp column, not a "
                            "setting or sensor", column=named[0])
    return validate_fleet(raw, settings, sensors, locator)


def _canonical_names(raw: pd.DataFrame, columns: FleetColumns, locator: Locator
                     ) -> pd.DataFrame:
    """`raw` with its id, cycle and timestamp columns renamed to the data contract's names."""
    renames = {columns.asset_id: ASSET_ID, columns.cycle: CYCLE}
    if columns.timestamp:
        renames[columns.timestamp] = TIMESTAMP
    for original, name in renames.items():
        if original not in raw.columns:
            raise locator.error(f"missing column {original!r}; found {list(raw.columns)}")
        if original != name and name in raw.columns:  # renaming would make two such columns
            raise locator.error(f"column {original!r} is to be read as {name!r}, but the data "
                                f"already has a column {name!r}; rename it", column=name)
    return raw.rename(columns=renames)


def forecast_columns(columns: FleetColumns, features: Sequence[str]) -> list[str]:
    """The columns a forecast reads, by their names in the file: the asset id, the cycle, the
    timestamp when one is named, and the model's features (the cycle among them, where the
    model reads the asset's age, by the file's name for it)."""
    named = [columns.asset_id, columns.cycle, *([columns.timestamp] if columns.timestamp else [])]
    in_file = [columns.cycle if name == CYCLE else name for name in features]
    return list(dict.fromkeys([*named, *in_file]))


def require_features(present: Sequence[str], features: Sequence[str], source: str) -> None:
    """DataError unless every model feature is among the columns `present`."""
    missing = [c for c in features if c not in present]
    if missing:
        raise DataError(f"missing columns {missing} that the model needs", file=source)


def _find(directory: Path, stem: str) -> Path | None:
    for suffix in (".txt", ".txt.gz"):
        candidate = directory / f"{stem}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def _read_text(path: Path, locator: Locator) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=r"\s+", header=None, compression="infer")
    except FileNotFoundError:
        raise locator.error("file not found") from None
    except pd.errors.EmptyDataError:
        raise locator.error("file is empty") from None
    except (pd.errors.ParserError, UnicodeDecodeError, EOFError, OSError) as exc:
        raise _parser_error(exc, locator) from None


def _parser_error(exc: Exception, locator: Locator) -> DataError:
    # pandas reports e.g. "Expected 26 fields in line 7, saw 27"; keep the line it names.
    match = re.search(r"line (\d+)", str(exc))
    message = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    if match:
        return DataError(f"cannot parse: {message}", file=locator.source, line=int(match[1]))
    return DataError(f"cannot parse: {message}", file=locator.source)


def _cmapss_fleet(raw: pd.DataFrame, locator: Locator) -> Fleet:
    """The rows of a C-MAPSS text file (or a chunk of one), named and validated."""
    return validate_fleet(_cmapss_names(raw, locator), SETTINGS, SENSORS, locator)


def _cmapss_names(raw: pd.DataFrame, locator: Locator) -> pd.DataFrame:
    """The columns of C-MAPSS text (read without a header) named by the data contract."""
    if raw.shape[1] != len(CMAPSS_COLUMNS):
        raise locator.error(f"expected {len(CMAPSS_COLUMNS)} columns "
                            f"(unit, cycle, 3 settings, 21 sensors), found {raw.shape[1]}", 0)
    raw.columns = CMAPSS_COLUMNS
    return raw


def _check_unit_numbers(ids: np.ndarray, locator: Locator) -> None:
    # C-MAPSS numbers its units 1..N; a gap means an asset lost all its rows.
    if not pd.api.types.is_integer_dtype(ids.dtype):  # text ids (object, or pandas 3's str)
        bad = next(i for i in ids if not str(i).lstrip("-").isdigit())
        raise locator.error(f"unit number must be an integer, got {bad!r}", column=ASSET_ID)
    missing = np.setdiff1d(np.arange(1, int(ids.max()) + 1), ids)
    if len(missing):
        raise locator.error(f"asset {int(missing[0])} has no rows (units run 1..{int(ids.max())})",
                            asset=int(missing[0]))
    if ids.min() < 1:
        raise locator.error(f"unit numbers must start at 1, found {int(ids.min())}",
                            asset=int(ids.min()), column=ASSET_ID)
