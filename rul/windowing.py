"""The one windowing function: per-row model inputs -> [windows, window, features].

Windows live as start offsets into one padded array, so a training set costs its rows, not
rows x window; batches (or the whole set, as a strided view gathered once) are cut on demand.
Assets shorter than the window are padded by repeating their first reading, and every window
says how many of its cycles are padding.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

WINDOW_ENDS = ("full", "every", "last")


@dataclass(frozen=True)
class Windows:
    """Windows over a fleet, as offsets into `values`."""

    values: np.ndarray
    """[padded rows, features]: every asset's rows, each preceded by its padding."""
    starts: np.ndarray
    """[windows] first row of each window in `values`."""
    window: int
    end_rows: np.ndarray
    """[windows] row (in the original fleet order) of the cycle each window ends at."""
    asset_index: np.ndarray
    """[windows] index of the window's asset (0..n_assets-1, in fleet order)."""
    padded: np.ndarray
    """[windows] cycles of padding at the start of each window."""

    def __len__(self) -> int:
        return len(self.starts)

    def select(self, keep: np.ndarray) -> Windows:
        """The windows where `keep` (a boolean mask or indices) is true, same `values`."""
        return replace(self, starts=self.starts[keep], end_rows=self.end_rows[keep],
                       asset_index=self.asset_index[keep], padded=self.padded[keep])

    def batch(self, index: np.ndarray | slice) -> np.ndarray:
        """Windows `index` as a new [n, window, features] array."""
        starts = self.starts[index]
        return self.values[starts[:, None] + np.arange(self.window)]

    def array(self) -> np.ndarray:
        """Every window, [windows, window, features] (one gather of a strided view)."""
        return sliding_window_view(self.values, self.window, axis=0)[self.starts].transpose(0, 2, 1)


def make_windows(values: np.ndarray, lengths: np.ndarray, window: int, *, stride: int = 1,
                 ends: str = "full") -> Windows:
    """Windows over consecutive assets of `values` [rows, features], `lengths` rows each.

    ends: 'full' windows ending at every `stride`-th cycle down to cycle `window` (an asset
    shorter than the window gives one padded window ending at its last cycle); 'every' the
    same down to the asset's first cycles, padded where the history is short (trajectories;
    training that also shows the network young assets); 'last' one window per asset, ending
    at its last cycle (the evaluation protocol, and serving). Strided ends are counted back
    from each asset's last cycle, so that one is always among them.
    """
    if ends not in WINDOW_ENDS:
        raise ValueError(f"ends must be one of {WINDOW_ENDS}, got {ends!r}")
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be >= 1, got {window}, {stride}")
    lengths = np.asarray(lengths, dtype=np.int64)
    if (lengths < 1).any() or lengths.sum() != len(values):
        raise ValueError("lengths must be positive and add up to the number of rows")
    # Padding before each asset: just enough that every requested window fits.
    pad = np.full_like(lengths, window - 1) if ends == "every" else np.maximum(window - lengths, 0)
    block = pad + lengths
    block_start = _starts_of(block)
    first_rows = _starts_of(lengths)
    offset = _ragged_arange(block)
    source = np.repeat(first_rows, block) + np.maximum(offset - np.repeat(pad, block), 0)

    # End positions e (0-based cycle index within the asset) of each asset's windows.
    if ends == "last":
        count = np.ones_like(lengths)
    else:
        first_end = np.zeros_like(lengths) if ends == "every" else np.minimum(window, lengths) - 1
        count = (lengths - 1 - first_end) // stride + 1
    asset_index = np.repeat(np.arange(len(lengths)), count)
    back = np.repeat(count, count) - 1 - _ragged_arange(count)  # windows after this one
    e = lengths[asset_index] - 1 - back * stride
    return Windows(
        values=values[source],
        starts=block_start[asset_index] + pad[asset_index] + e - window + 1,
        window=window,
        end_rows=first_rows[asset_index] + e,
        asset_index=asset_index,
        padded=np.maximum(window - 1 - e, 0),
    )


def _starts_of(sizes: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def _ragged_arange(sizes: np.ndarray) -> np.ndarray:
    """0..size-1 for each size, concatenated."""
    return np.arange(int(sizes.sum())) - np.repeat(_starts_of(sizes), sizes)
