"""Training cost: Lightning vs a plain torch loop, and flushing denormals (prints, asserts nothing).

    PYTHONPATH=. .venv/bin/python bench/train_cost.py [--subsets FD001 FD002 FD003 FD004]
        [--backbones cnn lstm] [--epochs 3] [--repeats 1] [--threads 2] [--seed 0]
        [--denormal-backbones lstm] [--denormal-lightning] [--warmup-batches 10] [--data DIR]

For each subset and backbone, on the CPU, with the subset's default config and early stopping
off, it times the same network, data, loss, optimiser and gradient clipping trained two ways:
  lightning   pl.Trainer.fit on RulModule + RulDataModule, configured as training.run.train_run
              does (CSV logger, best/last checkpoints, validation every epoch, deterministic);
  plain       a hand-written torch loop over RulDataModule's loaders, with a validation pass.
An epoch runs from the first training batch to the end of validation (for Lightning, also its
checkpoint and log writes); "train only" stops before validation. windows/s is training windows
over the row's time. Then it repeats the plain loop (and, with --denormal-lightning, the Lightning
fit) with torch.set_flush_denormal(False); its ratio is against the flushed run.

Timings move with other load on the machine: take numbers to quote on a quiet one.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import math
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytorch_lightning as pl
import torch

from rul.loaders import default_cmapss_dir, load_cmapss, load_extra_training
from training.config import BACKBONES, RunConfig, default_config, merge
from training.datamodule import RulDataModule, fold_datamodules
from training.module import RulModule, build_optimizer, multitask_loss, step_schedule
from training.network import RulNetwork
from training.run import build_trainer

Batch = tuple[torch.Tensor, ...]
Loss = Callable[[RulNetwork, Batch], tuple[dict[str, torch.Tensor], torch.Tensor]]
"""(network, batch) -> (multitask losses, predicted RUL)."""


@dataclass
class Timings:
    """Seconds per epoch (whole and training part) and training windows per epoch."""

    epoch: list[float] = field(default_factory=list)
    train: list[float] = field(default_factory=list)
    windows: list[int] = field(default_factory=list)
    val_rmse: float = math.nan
    fit: float = math.nan
    """Lightning only: seconds in Trainer.fit (set-up, sanity check and teardown included)."""

    def add(self, start: float, trained: float, end: float, windows: int) -> None:
        self.epoch.append(end - start)
        self.train.append(trained - start)
        self.windows.append(windows)

    def extend(self, other: Timings) -> None:
        """Pool another run's epochs (the last run's val_rmse; fit times add up)."""
        self.epoch += other.epoch
        self.train += other.train
        self.windows += other.windows
        self.val_rmse = other.val_rmse
        self.fit = other.fit if math.isnan(self.fit) else self.fit + other.fit


class EpochTimer(pl.Callback):
    """Times Lightning epochs: on_train_epoch_start to on_validation_start (training) and to
    on_train_epoch_end (validation, checkpoint and log writes included; ModelCheckpoint runs
    after this callback, Lightning moves it last)."""

    def __init__(self) -> None:
        self.timings = Timings()
        self._start = self._trained = 0.0
        self._windows = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._windows, self._trained = 0, 0.0
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._windows += len(batch[0])

    def on_validation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._trained = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        end = time.perf_counter()
        self.timings.add(self._start, self._trained or end, end, self._windows)


def set_flush(flush: bool) -> bool:
    """Flush denormals or not; False when this CPU cannot (the setting then does nothing)."""
    return torch.set_flush_denormal(flush)


def bench_config(subset: str, backbone: str, epochs: int, seed: int) -> RunConfig:
    """The subset's default config, on the CPU for a fixed number of epochs."""
    return merge(default_config(subset, backbone),
                 {"train": {"max_epochs": epochs, "seed": seed, "accelerator": "cpu",
                            "devices": 1}})


def lightning_run(datamodule: RulDataModule, config: RunConfig) -> Timings:
    """One Trainer.fit as train_run does it, less early stopping and the progress bar."""
    t = config.train
    pl.seed_everything(t.seed, workers=True, verbose=False)
    module = RulModule(config.to_dict(), datamodule.preprocessing.n_inputs,
                       datamodule.preprocessing.to_dict())
    timer = EpochTimer()
    with tempfile.TemporaryDirectory(prefix="train_cost-") as out:
        trainer = build_trainer(t, out, progress=False, callbacks=[timer])
        start = time.perf_counter()
        trainer.fit(module, datamodule=datamodule)
        timer.timings.fit = time.perf_counter() - start
    timer.timings.val_rmse = float(trainer.callback_metrics["val_rmse"])
    return timer.timings


def plain_run(datamodule: RulDataModule, config: RunConfig) -> Timings:
    """The same network, loaders, loss, optimiser, schedule and clipping, without Lightning."""
    t = config.train
    pl.seed_everything(t.seed, workers=True, verbose=False)
    torch.use_deterministic_algorithms(True)  # as Trainer(deterministic=True) sets it
    network = build_network(datamodule, config)
    optimizer, scheduler = build_optimizer(network.parameters(), t)
    train_loader, val_loader = datamodule.train_dataloader(), datamodule.val_dataloader()
    loss, timings = make_loss(config), Timings()
    for _ in range(t.max_epochs):
        start = time.perf_counter()
        windows = train_epoch(network, optimizer, train_loader, loss, t.gradient_clip)
        trained = time.perf_counter()
        _, timings.val_rmse = validate(network, val_loader, loss)
        step_schedule(scheduler, timings.val_rmse)
        timings.add(start, trained, time.perf_counter(), windows)
    return timings


def build_network(datamodule: RulDataModule, config: RunConfig) -> RulNetwork:
    return RulNetwork(datamodule.preprocessing.n_inputs, config.data.window,
                      config.data.rul_cap, config.model)


def make_loss(config: RunConfig) -> Loss:
    """The loss RulModule._losses computes, for a plain network."""
    levels = torch.tensor(config.model.quantiles, dtype=torch.float32)
    t, rul_cap = config.train, config.data.rul_cap

    def loss(network: RulNetwork, batch: Batch) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        x, rul, failure = batch
        outputs = network(x)
        return multitask_loss(outputs, rul, failure, levels, rul_cap, t.quantile_weight,
                              t.failure_weight), outputs[0]

    return loss


def train_epoch(network: RulNetwork, optimizer: torch.optim.Optimizer,
                batches: Iterable[Batch], loss: Loss, clip: float) -> int:
    """One pass of optimiser steps (clipping the gradient norm at `clip`, 0: not at all);
    returns the windows trained on."""
    network.train()
    windows, total = 0, torch.zeros(())
    for batch in batches:
        optimizer.zero_grad(set_to_none=True)
        value = loss(network, batch)[0]["loss"]
        value.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(network.parameters(), clip)
        optimizer.step()
        n = len(batch[0])
        total += value.detach() * n  # the epoch-mean train_loss Lightning logs
        windows += n
    return windows


@torch.inference_mode()
def validate(network: RulNetwork, batches: Iterable[Batch],
             loss: Loss) -> tuple[float, float]:
    """Mean loss and RMSE over every validation window, as RulModule logs them."""
    network.eval()
    squared, total, n = 0.0, 0.0, 0
    for batch in batches:
        losses, rul = loss(network, batch)
        squared += float(((rul - batch[1]) ** 2).sum())
        total += float(losses["loss"]) * len(batch[0])
        n += len(batch[0])
    network.train()
    return total / n, math.sqrt(squared / n)


def warm_up(datamodule: RulDataModule, config: RunConfig, batches: int) -> None:
    """A few untimed steps so one-time kernel and allocator set-up lands on no variant."""
    if batches:
        network = build_network(datamodule, config)
        optimizer, _ = build_optimizer(network.parameters(), config.train)
        train_epoch(network, optimizer, itertools.islice(datamodule.train_dataloader(), batches),
                    make_loss(config), config.train.gradient_clip)


def row(subset: str, backbone: str, variant: str, times: list[float], windows: list[int],
        base: tuple[str, list[float]] | None, val_rmse: float) -> str:
    mean = sum(times) / len(times)
    ratio = f"{mean / (sum(base[1]) / len(base[1])):.2f} vs {base[0]}" if base else ""
    return (f"| {subset} | {backbone} | {variant} | {mean:.3f} | {min(times):.3f} | "
            f"{max(times):.3f} | {sum(windows) / sum(times):,.0f} | {ratio} | {val_rmse:.2f} |")


def bench_backbone(subset: str, backbone: str, datamodule: RulDataModule,
                   args: argparse.Namespace) -> list[str]:
    """Every variant of one subset x backbone, as table rows; the overhead also to stderr."""
    config = bench_config(subset, backbone, args.epochs, args.seed)
    warm_up(datamodule, config, args.warmup_batches)
    set_flush(True)
    # Alternated, so that a slow spell of the machine falls on both variants.
    light, plain = Timings(), Timings()
    for _ in range(args.repeats):
        light.extend(lightning_run(datamodule, config))
        plain.extend(plain_run(datamodule, config))
    rows = [
        row(subset, backbone, "plain", plain.epoch, plain.windows, None, plain.val_rmse),
        row(subset, backbone, "lightning", light.epoch, light.windows, ("plain", plain.epoch),
            light.val_rmse),
        row(subset, backbone, "plain, train only", plain.train, plain.windows, None,
            plain.val_rmse),
        row(subset, backbone, "lightning, train only", light.train, light.windows,
            ("plain, train only", plain.train), light.val_rmse),
    ]
    if backbone in args.denormal_backbones:
        set_flush(False)
        slow = plain_run(datamodule, config)
        rows.append(row(subset, backbone, "plain, no flush", slow.epoch, slow.windows,
                        ("plain", plain.epoch), slow.val_rmse))
        if args.denormal_lightning:
            slow = lightning_run(datamodule, config)
            rows.append(row(subset, backbone, "lightning, no flush", slow.epoch, slow.windows,
                            ("lightning", light.epoch), slow.val_rmse))
        set_flush(True)
    overhead = (sum(light.epoch) / len(light.epoch)) / (sum(plain.epoch) / len(plain.epoch))
    median = statistics.median(light.epoch) / statistics.median(plain.epoch)
    print(f"{subset} {backbone}: Lightning overhead {overhead:.2f} of mean epochs, {median:.2f} "
          f"of median epochs (target < 1.2; {args.repeats} x {args.epochs} epochs each); fit() "
          f"{light.fit:.2f} s for {sum(light.epoch):.2f} s of epochs", file=sys.stderr, flush=True)
    return rows


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subsets", nargs="+", default=["FD001"], help="C-MAPSS subsets")
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (no early stop)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="Lightning and plain runs, alternated, pooled per variant")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--seed", type=int, default=0, help="weights, batch order and split")
    parser.add_argument("--denormal-backbones", nargs="*", default=["lstm"], choices=BACKBONES,
                        help="backbones also timed without flushing denormals (none: skip)")
    parser.add_argument("--denormal-lightning", action="store_true",
                        help="time the Lightning fit without flushing too (one more fit)")
    parser.add_argument("--warmup-batches", type=int, default=10,
                        help="untimed training steps before each backbone (0: none)")
    parser.add_argument("--data", default=None, help="C-MAPSS directory (default: "
                        "$RUL_CMAPSS_DIR or ../shared/data/cmapss)")
    return parser.parse_args(argv)


def quiet_lightning() -> None:
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning_fabric").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*(num_workers|does not have many workers).*")
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*")  # torch 2.13 on Lightning 2.6


def load_average() -> str:
    # Other work skews every row: before the runs a quiet machine reads near 0; after them,
    # this script's own threads add about --threads.
    return f"1-min load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    quiet_lightning()
    torch.set_num_threads(args.threads)
    flush_supported = set_flush(True)
    print(f"`{shlex.join(sys.orig_argv)}`\n")
    print(f"torch {torch.__version__}, pytorch-lightning {pl.__version__}, "
          f"{platform.processor() or platform.machine()}, torch threads "
          f"{torch.get_num_threads()}, flush_denormal supported: {flush_supported}, "
          f"{args.epochs} epochs, seed {args.seed}, {load_average()}\n")
    print("| subset | backbone | variant | s/epoch mean | min | max | windows/s | ratio | "
          "final val_rmse |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    data_dir = args.data or default_cmapss_dir()
    for subset in args.subsets:
        fleet = load_cmapss(data_dir, subset).train
        # One datamodule (the first backbone's: the CNN's first fold by default) serves every
        # backbone, so they are timed on the same windows; a cross-fitted run trains one such
        # network per fold.
        config = bench_config(subset, args.backbones[0], args.epochs, args.seed)
        extra = load_extra_training(config.data.extra_training, data_dir)
        datamodule = fold_datamodules(fleet, config.data, config.train.batch_size,
                                      config.train.seed, extra)[0]
        for backbone in args.backbones:
            print("\n".join(bench_backbone(subset, backbone, datamodule, args)), flush=True)
    print(f"\ntorch threads after the runs: {torch.get_num_threads()}, {load_average()}")


if __name__ == "__main__":
    main()
