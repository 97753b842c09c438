"""The network: backbone + three heads (rul, rul_quantiles, failure logit), a plain nn.Module.

RUL is learnt in units of rul_cap, so one learning rate suits every cap; quantiles are made
monotone by construction (a base plus non-negative increments), so intervals never cross.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from training.backbones import build_backbone
from training.config import ModelConfig


def ordered_quantiles(raw: torch.Tensor) -> torch.Tensor:
    """The quantile head's raw outputs [..., Q] as quantiles that never cross: the first, then
    non-negative (softplus) increments, summed along the last axis."""
    # Running adds, not torch.cumsum: CUDA's float cumsum raises under
    # torch.use_deterministic_algorithms (which `rul train` sets) before torch 2.6.
    quantiles = [raw[..., :1]]
    for k in range(1, raw.shape[-1]):
        quantiles.append(quantiles[-1] + F.softplus(raw[..., k:k + 1]))
    return torch.cat(quantiles, dim=-1)


class Member(nn.Module):
    """One backbone with its three heads: raw outputs, RUL in units of rul_cap."""

    def __init__(self, n_inputs: int, window: int, config: ModelConfig) -> None:
        super().__init__()
        self.backbone = build_backbone(n_inputs, window, config)
        width = self.backbone.out_features
        self.dropout = nn.Dropout(config.dropout)
        self.rul_head = nn.Linear(width, 1)
        self.quantile_head = nn.Linear(width, len(config.quantiles))
        self.failure_head = nn.Linear(width, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.dropout(self.backbone(x))
        return (self.rul_head(h).squeeze(-1), ordered_quantiles(self.quantile_head(h)),
                self.failure_head(h).squeeze(-1))


class RulNetwork(nn.Module):
    """`config.members` members (an ensemble of independently initialised backbones and heads,
    trained side by side on the same batches, each on its own loss), averaged into one answer:
    the mean RUL, the mean of each quantile (still ordered) and the mean failure logit."""

    def __init__(self, n_inputs: int, window: int, rul_cap: float, config: ModelConfig,
                 members: int | None = None) -> None:
        super().__init__()
        self.members = nn.ModuleList(Member(n_inputs, window, config)
                                     for _ in range(members or config.members))
        self.rul_cap = float(rul_cap)
        # Set after training on validation engines: temperature scaling of the failure logit,
        # and the conformal offset of the outer quantiles (0 while training).
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("interval_offset", torch.zeros(()))

    def member_outputs(self, x: torch.Tensor
                       ) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Each member's (rul, rul_quantiles, failure logit), RUL in cycles, uncalibrated:
        what each member's loss is taken on."""
        return [(rul * self.rul_cap, quantiles * self.rul_cap, logit)
                for rul, quantiles, logit in (member(x) for member in self.members)]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised windows [B, W, F] -> (rul [B], rul_quantiles [B, Q], failure logit [B]),
        RUL in cycles: the members' mean."""
        return self.combine(self.member_outputs(x))

    def combine(self, outputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
                clip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The members' outputs (`member_outputs`) as the network's answer: their mean, the
        outer quantiles widened, clipped to [0, rul_cap] at inference unless `clip` is off
        (calibration: clipped intervals hide how far they miss a capped target)."""
        if len(outputs) == 1:
            return self.finish(*outputs[0], clip=clip)
        return self.combine_stacked(*(torch.stack(parts) for parts in zip(*outputs,
                                                                           strict=True)),
                                    clip=clip)

    def combine_stacked(self, rul: torch.Tensor, quantiles: torch.Tensor, logit: torch.Tensor,
                        clip: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`combine` for outputs stacked on a leading members axis: [M, B], [M, B, Q], [M, B]."""
        return self.finish(rul.mean(0), quantiles.mean(0), logit.mean(0), clip=clip)

    def finish(self, rul: torch.Tensor, quantiles: torch.Tensor, logit: torch.Tensor,
               clip: bool = True, widen: bool = True
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One answer from (mean) outputs: outer quantiles widened (unless `widen` is off:
        they already are), clipped to [0, rul_cap] at inference (with `clip`)."""
        if widen:
            quantiles = self.widen(quantiles)
        if clip and not self.training:
            # The target is min(RUL, rul_cap), never negative: an answer outside [0, rul_cap] is
            # extrapolation (out-of-fold, clipping at the cap cut FD002's validation RMSE from
            # 16.9 to 16.1). Clipping only at inference keeps every training sample's gradient.
            rul = rul.clamp(min=0.0, max=self.rul_cap)
            quantiles = quantiles.clamp(min=0.0, max=self.rul_cap)
        return rul, quantiles, logit

    def widen(self, quantiles: torch.Tensor) -> torch.Tensor:
        """Move the outer quantiles out by interval_offset (in by a negative one), never past
        their neighbours, so the quantiles stay ordered."""
        if quantiles.shape[1] < 2:
            return quantiles
        lower = quantiles[:, :1] - self.interval_offset
        upper = quantiles[:, -1:] + self.interval_offset
        if quantiles.shape[1] > 2:
            lower = torch.minimum(lower, quantiles[:, 1:2])
            upper = torch.maximum(upper, quantiles[:, -2:-1])
        else:
            middle = (quantiles[:, :1] + quantiles[:, -1:]) / 2
            lower, upper = torch.minimum(lower, middle), torch.maximum(upper, middle)
        return torch.cat([lower, quantiles[:, 1:-1], upper], dim=1)

    def failure_probability(self, logit: torch.Tensor) -> torch.Tensor:
        """Calibrated P(RUL <= horizon)."""
        return torch.sigmoid(logit / self.temperature)
