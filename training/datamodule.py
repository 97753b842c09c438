"""LightningDataModule over rul's preprocessing: engine-wise split, windows, targets."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from rul.config import DataConfig
from rul.errors import ConfigError
from rul.fleet import Fleet
from rul.preprocessing import Preprocessing, fit_preprocessing
from rul.split import fold_assets, join_fleets, split_assets
from rul.targets import capped, failure_label, rul_per_row
from rul.windowing import Windows, make_windows


class WindowDataset(Dataset):
    """Windows cut on access from one padded array (memory: rows, not rows x window).

    A DataLoader fetches a whole batch with one gather (`__getitems__`, already collated: pass
    `collate_fn=stacked`); cutting windows one by one and stacking them took a fifth of a small
    CNN's epoch."""

    def __init__(self, windows: Windows, rul: np.ndarray, rul_cap: float, horizon: float) -> None:
        self.values = torch.from_numpy(np.ascontiguousarray(windows.values, dtype=np.float32))
        self.starts = torch.from_numpy(np.asarray(windows.starts, dtype=np.int64))
        self.window = windows.window
        true = rul[windows.end_rows]
        self.rul = torch.from_numpy(capped(true, rul_cap).astype(np.float32))
        self.failure = torch.from_numpy(failure_label(true, horizon).astype(np.float32))

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s = int(self.starts[i])
        return self.values[s:s + self.window], self.rul[i], self.failure[i]

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows = torch.as_tensor(indices, dtype=torch.long)
        x = self.values[self.starts[rows, None] + torch.arange(self.window)]
        return x, self.rul[rows], self.failure[rows]


def stacked(batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    """The collate_fn of WindowDataset's loaders: its batches come collated already."""
    return batch


def build_dataset(fleet: Fleet, preprocessing: Preprocessing, config: DataConfig, ends: str,
                  rul_at_end: np.ndarray | None = None, stride: int = 1,
                  from_life_fraction: float = 0.0) -> WindowDataset:
    """Normalised windows of a fleet with their capped RUL and failure targets; with
    `from_life_fraction`, only the windows ending at or after that fraction of their asset's
    life (cycles up to the window's end / the asset's cycles)."""
    lengths = fleet.lengths()
    windows = make_windows(preprocessing.transform_fleet(fleet), lengths, config.window,
                           stride=stride, ends=ends)
    if from_life_fraction > 0:
        first_rows = np.cumsum(lengths) - lengths
        seen = windows.end_rows - first_rows[windows.asset_index] + 1
        windows = windows.select(seen >= from_life_fraction * lengths[windows.asset_index])
    return WindowDataset(windows, rul_per_row(fleet, rul_at_end), config.rul_cap, config.horizon)


class RulDataModule(pl.LightningDataModule):
    """Train and validation windows of two disjoint sets of whole assets.

    Validation windows end at every cycle of the held-out engines (short histories padded), or
    from `validation_from` of each one's life on, so validation sees the mix of early-life and
    late-life windows that truncated test engines give.
    """

    def __init__(self, train_fleet: Fleet, val_fleet: Fleet, preprocessing: Preprocessing,
                 config: DataConfig, batch_size: int, seed: int) -> None:
        super().__init__()
        self.config = config
        self.batch_size = batch_size
        self.seed = seed
        self.train_fleet, self.val_fleet = train_fleet, val_fleet
        self.preprocessing = preprocessing
        self.train_set = build_dataset(train_fleet, preprocessing, config,
                                       "every" if config.padded_windows else "full",
                                       stride=config.stride)
        self.val_set = build_dataset(val_fleet, preprocessing, config, "every",
                                     from_life_fraction=config.validation_from)

    def train_dataloader(self) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True,
                          generator=generator, drop_last=len(self.train_set) > self.batch_size,
                          collate_fn=stacked)

    def transfer_batch_to_device(self, batch: tuple[torch.Tensor, ...], device: torch.device,
                                 dataloader_idx: int) -> tuple[torch.Tensor, ...]:
        # Batches are flat tuples of tensors; Lightning's generic walk over nested collections
        # was a visible share of a small network's step on the CPU.
        return tuple(t.to(device) for t in batch)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=max(self.batch_size, 1024), collate_fn=stacked)


def fold_datamodules(fleet: Fleet, config: DataConfig, batch_size: int, seed: int,
                     extra: list[Fleet] | None = None) -> list[RulDataModule]:
    """One data module per network of the run: the single split (folds = 1) or one per fold.
    `extra` (data.extra_training's fleets) joins every network's training assets.

    The preprocessing is fitted once, on the fleet's assets the networks train on: the
    training split, or with folds the whole fleet (one normalisation serves every member of the
    exported graph; it is unsupervised, so no fold sees another's targets). Extra fleets add
    training windows, not inputs: the model reads the sensors chosen on its own fleet, so it
    takes the same readings as without them (docs/ACCURACY.md)."""
    if config.extra_training and extra is None:
        # Training without them would be another model than the configuration describes.
        raise ConfigError(f"data.extra_training names {list(config.extra_training)}: load them "
                          "with rul.loaders.load_extra_training and pass them as `extra`")
    extra = extra or []
    if config.folds == 1:
        splits = [split_assets(fleet, config.validation_fraction, config.seed)]
        preprocessing = fit_preprocessing(splits[0][0], config)
    else:
        splits = fold_assets(fleet, config.folds, config.seed)
        preprocessing = fit_preprocessing(fleet, config)
    # Each fold's network gets its own seed for batch order.
    return [RulDataModule(join_fleets([train, *extra]) if extra else train, val, preprocessing,
                          config, batch_size, seed + k)
            for k, (train, val) in enumerate(splits)]
