"""Shared fixtures: tiny seeded simulated fleets, and the real C-MAPSS directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rul.loaders import CmapssSubset, default_cmapss_dir, load_cmapss
from rul.simulate import SimulationConfig, simulate_fleet, write_cmapss


@pytest.fixture(scope="session")
def cmapss_dir() -> Path:
    """$RUL_CMAPSS_DIR or ../shared/data/cmapss; tests needing it skip when it is absent
    (except in CI, where its absence is a failure)."""
    path = default_cmapss_dir()
    if not path.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"C-MAPSS data not found at {path}")
        pytest.skip(f"C-MAPSS data not found at {path} (set RUL_CMAPSS_DIR)")
    return path


@pytest.fixture(scope="session")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-asset simulated fleet in the C-MAPSS layout (subset SIM)."""
    out = tmp_path_factory.mktemp("sim")
    write_cmapss(simulate_fleet(SimulationConfig(assets=24, seed=7)), out, "SIM")
    return out


@pytest.fixture(scope="session")
def sim(sim_dir: Path) -> CmapssSubset:
    return load_cmapss(sim_dir, "SIM")


@pytest.fixture(scope="session")
def sim_multi(tmp_path_factory: pytest.TempPathFactory) -> CmapssSubset:
    """A 30-asset fleet with 3 operating conditions and 2 fault modes."""
    out = tmp_path_factory.mktemp("sim_multi")
    write_cmapss(simulate_fleet(SimulationConfig(assets=30, seed=3, conditions=3,
                                                 fault_modes=2)), out, "SIM")
    return load_cmapss(out, "SIM")
