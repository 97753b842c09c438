"""Speed of the data layer: simulate, load, preprocess and window (prints numbers, asserts nothing).

    .venv/bin/python bench/data_speed.py
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from rul.config import DataConfig
from rul.loaders import default_cmapss_dir, load_cmapss
from rul.preprocessing import fit_preprocessing
from rul.simulate import SimulationConfig, simulate_fleet, write_cmapss
from rul.windowing import make_windows


def timed(label: str, fn, repeat: int = 5):
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    print(f"{label:55s} {best * 1000:9.1f} ms (best of {repeat})")
    return result


def main() -> None:
    for assets in (100, 1000):
        timed(f"simulate_fleet({assets} assets)",
              lambda a=assets: simulate_fleet(SimulationConfig(assets=a)))
    with tempfile.TemporaryDirectory() as tmp:
        fleet = simulate_fleet(SimulationConfig(assets=100))
        timed("write_cmapss(100 assets)", lambda: write_cmapss(fleet, tmp, "SIM"))
        timed("load_cmapss(simulated, 100 assets)", lambda: load_cmapss(Path(tmp), "SIM"))
    data_dir = default_cmapss_dir()
    if not data_dir.is_dir():
        print(f"C-MAPSS not found at {data_dir}; skipping the real-data rows")
        return
    for subset in ("FD001", "FD004"):
        data = timed(f"load_cmapss({subset}) train+test+labels",
                     lambda s=subset: load_cmapss(data_dir, s), repeat=3)
        pre = timed(f"fit_preprocessing({subset} train)",
                    lambda d=data: fit_preprocessing(d.train, DataConfig(window=30)), repeat=3)
        x = pre.transform_fleet(data.train)
        windows = timed(f"make_windows({subset} train, window 30)",
                        lambda v=x, d=data: make_windows(v, d.train.lengths(), 30))
        timed(f"  Windows.array() of {len(windows)} windows", windows.array)


if __name__ == "__main__":
    main()
