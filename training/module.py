"""The one LightningModule: losses, validation metric, optimiser and schedule."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torchmetrics
from torch.nn import functional as F

from training.config import RunConfig, TrainConfig
from training.network import RulNetwork


def pinball_loss(quantiles: torch.Tensor, target: torch.Tensor,
                 levels: torch.Tensor) -> torch.Tensor:
    """Mean quantile (pinball) loss of predictions [B, Q] at `levels` [Q] against target [B]."""
    error = target[:, None] - quantiles
    return torch.maximum(levels * error, (levels - 1) * error).mean()


def multitask_loss(outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor], rul: torch.Tensor,
                   failure: torch.Tensor, levels: torch.Tensor, rul_cap: float,
                   quantile_weight: float, failure_weight: float) -> dict[str, torch.Tensor]:
    """RUL MSE + pinball + binary cross-entropy; RUL terms in units of rul_cap."""
    pred_rul, quantiles, logit = outputs
    rul_loss = F.mse_loss(pred_rul / rul_cap, rul / rul_cap)
    quantile_loss = pinball_loss(quantiles / rul_cap, rul / rul_cap, levels)
    failure_loss = F.binary_cross_entropy_with_logits(logit, failure)
    total = rul_loss + quantile_weight * quantile_loss + failure_weight * failure_loss
    return {"loss": total, "rul_loss": rul_loss, "quantile_loss": quantile_loss,
            "failure_loss": failure_loss}


_SINGLE_MEMBER = tuple(f"network.{part}." for part in ("backbone", "dropout", "rul_head",
                                                        "quantile_head", "failure_head"))


class RulModule(pl.LightningModule):
    """Rebuilt from plain saved arguments: the run config, input width and preprocessing.

    members: the network's member count when it is not model.members, as in the model of a
    cross-fitted run (folds x model.members networks, one group per fold)."""

    def __init__(self, config: dict[str, Any], n_inputs: int,
                 preprocessing: dict[str, Any], members: int | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.run_config = RunConfig.from_dict(config)
        data, model = self.run_config.data, self.run_config.model
        self.network = RulNetwork(n_inputs, data.window, data.rul_cap, model, members)
        self.register_buffer("levels", torch.tensor(model.quantiles, dtype=torch.float32),
                             persistent=False)
        self.val_rmse = torchmetrics.MeanSquaredError(squared=False)
        self._train_losses: list[tuple[torch.Tensor, int]] = []

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.network(x)

    def _loss(self, batch: tuple[torch.Tensor, ...], members: list[Any]) -> torch.Tensor:
        """The mean of the members' own losses: each member learns as if alone."""
        _, rul, failure = batch
        t = self.run_config.train
        losses = [multitask_loss(outputs, rul, failure, self.levels,
                                 self.run_config.data.rul_cap, t.quantile_weight,
                                 t.failure_weight)["loss"]
                  for outputs in members]
        return torch.stack(losses).mean()

    def on_train_epoch_start(self) -> None:
        self._train_losses = []

    def training_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> torch.Tensor:
        loss = self._loss(batch, self.network.member_outputs(batch[0]))
        # Kept here and logged once an epoch: self.log on every step adds to Lightning's fixed
        # cost per step, which shows against a small CNN's ~6 ms steps.
        self._train_losses.append((loss.detach(), len(batch[0])))
        return loss

    def on_train_epoch_end(self) -> None:
        if self._train_losses:
            losses, sizes = zip(*self._train_losses, strict=True)
            weights = torch.tensor(sizes, dtype=torch.float32, device=losses[0].device)
            mean = (torch.stack(losses).float() * weights).sum() / weights.sum()
            self.log("train_loss", mean, prog_bar=True)

    def validation_step(self, batch: tuple[torch.Tensor, ...], batch_idx: int) -> None:
        members = self.network.member_outputs(batch[0])
        loss = self._loss(batch, members)
        # Model selection judges what ships: the members' mean.
        self.val_rmse.update(self.network.combine(members)[0].float(), batch[1])
        n = len(batch[0])
        self.log("val_loss", loss, on_epoch=True, sync_dist=True, batch_size=n)
        self.log("val_rmse", self.val_rmse, on_epoch=True, prog_bar=True, batch_size=n)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Checkpoints from before ensembles held one member's weights at the network's top
        # level (network.backbone...); they are member 0 now.
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith(_SINGLE_MEMBER)]:
            state["network.members.0." + key[len("network."):]] = state.pop(key)

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer, scheduler = build_optimizer(self.parameters(), self.run_config.train)
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "monitor": "val_rmse"}}


def build_optimizer(parameters: Any, t: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    """AdamW, and the learning-rate schedule `t.lr_schedule` (stepped once per epoch; the
    plateau schedule reads validation RMSE, see step_schedule)."""
    optimizer = torch.optim.AdamW(parameters, lr=t.learning_rate, weight_decay=t.weight_decay)
    if t.lr_schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=t.max_epochs, eta_min=t.learning_rate / 100)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                           patience=max(1, t.patience // 3))
    return optimizer, scheduler


def step_schedule(scheduler: Any, val_rmse: float) -> None:
    """One epoch's step of a build_optimizer schedule, for loops without Lightning."""
    if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        scheduler.step(val_rmse)
    else:
        scheduler.step()
