"""Column names of the one data shape every part of rul reads (DESIGN.md, "The data contract")."""

from __future__ import annotations

ASSET_ID = "asset_id"
CYCLE = "cycle"
TIMESTAMP = "timestamp"

N_CMAPSS_SETTINGS = 3
N_CMAPSS_SENSORS = 21
SETTINGS: list[str] = [f"setting_{i}" for i in range(1, N_CMAPSS_SETTINGS + 1)]
SENSORS: list[str] = [f"sensor_{i}" for i in range(1, N_CMAPSS_SENSORS + 1)]

# Column order of a C-MAPSS text file: unit number, cycle, 3 settings, 21 sensors.
CMAPSS_COLUMNS: list[str] = [ASSET_ID, CYCLE, *SETTINGS, *SENSORS]
