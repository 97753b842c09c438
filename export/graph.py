"""The exported computation as a torch module: raw readings -> preprocessing -> network -> heads.

The preprocessing here is the torch spelling of `rul.preprocessing.Preprocessing.transform`
(standardise settings, nearest centroid, per-condition z-score), built from the same plain
numbers; the export's parity check holds the two spellings together on real windows.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from rul.preprocessing import Preprocessing
from training.backbones import CNNBackbone
from training.network import Member, RulNetwork, ordered_quantiles


class PreprocessingLayer(nn.Module):
    def __init__(self, pre: Preprocessing) -> None:
        super().__init__()
        self.n_settings = len(pre.settings)
        self.multi_condition = pre.n_conditions > 1

        def tensor(values: object) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32)

        self.register_buffer("mean", tensor(pre.mean))  # [K, S]
        self.register_buffer("std", tensor(pre.std))
        if self.multi_condition:
            self.register_buffer("settings_mean", tensor(pre.settings_mean))
            self.register_buffer("settings_std", tensor(pre.settings_std))
            self.register_buffer("centroids", tensor(pre.centroids))  # [K, n_settings]

    def forward(self, readings: torch.Tensor) -> torch.Tensor:
        """[B, W, n_features] raw -> [B, W, n_inputs] normalised."""
        if not self.multi_condition:
            return (readings - self.mean[0]) / self.std[0]
        z = (readings[..., :self.n_settings] - self.settings_mean) / self.settings_std
        # Nearest centroid as in Preprocessing.condition_of: |c|^2 - 2 z.c, one MatMul.
        centroids = self.centroids
        score = (centroids * centroids).sum(-1) - 2.0 * (z @ centroids.T)  # [B, W, K]
        condition = score.argmin(-1)  # [B, W]
        sensors = readings[..., self.n_settings:]
        return (sensors - self.mean[condition]) / self.std[condition]


CHANNEL_MULTIPLE = 4
"""From 16 input channels on, the exported first convolution reads a multiple of this many:
onnxruntime's blocked (NCHWc) convolutions, measured here, run 16 or more input channels at
full speed only in multiples of 4 (17, 18, 19, 21 channels: 0.35-0.5x the windows/s of 16 or
20; fewer than 16 run at full speed as they are)."""


class FusedCNNMembers(nn.Module):
    """CNN members with their common steps done once: the input layout before the first
    convolution, and after the backbones one matrix product per member for its three heads,
    then the quantile arithmetic on all members' outputs stacked. The same arithmetic as
    RulNetwork.member_outputs, in a third of the graph nodes: at batch 1 each node's fixed
    cost in onnxruntime, more than the arithmetic, is what a member costs. The backbones stay
    one chain per member, which large batches run faster (cache-sized) than grouped
    convolutions over all members at once (measured: 0.7x at batch 1024). The inputs are
    padded with zero channels to a multiple of CHANNEL_MULTIPLE where that is needed, read by
    zero weights: the same numbers, at the blocked kernels' speed."""

    def __init__(self, members: list[Member], rul_cap: float) -> None:
        super().__init__()
        first = members[0].backbone.convolutions[0]
        self.pad_channels = (-first.in_channels % CHANNEL_MULTIPLE
                             if first.in_channels >= 16 else 0)
        self.backbones = nn.ModuleList(_with_input_channels(m.backbone, self.pad_channels)
                                       for m in members)
        self.rul_cap = rul_cap
        heads = [(m.rul_head, m.quantile_head, m.failure_head) for m in members]
        # [M, D, 2 + Q] and [M, 1, 2 + Q]: rul, quantile steps, failure logit side by side.
        self.register_buffer("head_weight", torch.stack(
            [torch.cat([h.weight for h in hs]).T for hs in heads]).detach().clone())
        self.register_buffer("head_bias", torch.stack(
            [torch.cat([h.bias for h in hs])[None] for hs in heads]).detach().clone())

    @staticmethod
    def applies_to(network: RulNetwork) -> bool:
        return all(isinstance(m.backbone, CNNBackbone) for m in network.members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised windows [B, W, F] -> every member's (rul [M, B], rul_quantiles [M, B, Q],
        failure logit [M, B]), RUL in cycles, as RulNetwork.member_outputs stacked."""
        if self.pad_channels:
            x = F.pad(x, (0, self.pad_channels))
        h = x.transpose(1, 2).unsqueeze(2)  # [B, F, 1, W], as CNNBackbone.forward starts
        features = torch.stack([b.features_from_map(h) for b in self.backbones])  # [M, B, D]
        out = torch.matmul(features, self.head_weight) + self.head_bias  # [M, B, 2 + Q]
        return (out[..., 0] * self.rul_cap, ordered_quantiles(out[..., 1:-1]) * self.rul_cap,
                out[..., -1])


def _with_input_channels(backbone: CNNBackbone, extra: int) -> CNNBackbone:
    """The backbone itself, or a copy whose first convolution reads `extra` more input
    channels with zero weights (the trained network is left as it is)."""
    if not extra:
        return backbone
    backbone = copy.deepcopy(backbone)
    conv = backbone.convolutions[0]
    wider = nn.Conv1d(conv.in_channels + extra, conv.out_channels, conv.kernel_size,
                      stride=conv.stride, padding=conv.padding, dilation=conv.dilation)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, :conv.in_channels] = conv.weight
        wider.bias.copy_(conv.bias)
    backbone.convolutions[0] = wider
    return backbone


class ExportModel(nn.Module):
    """What the .onnx file computes: `readings` -> (`rul`, `rul_quantiles`,
    `failure_probability`)."""

    def __init__(self, pre: Preprocessing, network: RulNetwork) -> None:
        super().__init__()
        self.preprocessing = PreprocessingLayer(pre)
        self.network = network
        self.fused = (FusedCNNMembers(list(network.members), network.rul_cap)
                      if FusedCNNMembers.applies_to(network) else None)

    def forward(self, readings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.preprocessing(readings)
        if self.fused is None:
            rul, quantiles, logit = self.network(x)
        else:
            rul, quantiles, logit = self.network.combine_stacked(*self.fused(x))
        return rul, quantiles, self.network.failure_probability(logit)
