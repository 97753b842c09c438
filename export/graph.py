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
from training.network import RulNetwork


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
    """A CNN network's members as one graph with their common steps done once: the input
    layout before the first convolution, and after the backbones the members' mean answer
    in a few matrix products on their features side by side. The same arithmetic as
    RulNetwork.combine_stacked before its clipping, in a third of the graph nodes: at batch 1
    each node's fixed cost in onnxruntime, more than the arithmetic, is what a member costs.
    The backbones stay one chain per member, which large batches run faster (cache-sized)
    than grouped convolutions over all members at once (measured: 0.7x at batch 1024). The
    inputs are padded with zero channels to a multiple of CHANNEL_MULTIPLE where that is
    needed, read by zero weights: the same numbers, at the blocked kernels' speed.

    The heads fold into the mean because all but the quantile steps are linear. With F the
    members' features side by side [B, M * D]: the mean RUL, mean first quantile and mean
    failure logit are F @ `linear_weight`; each member's quantile steps are softplus of F @
    `step_weight` (block-diagonal), and `gap_sum` adds them up into the mean's gaps between
    neighbouring quantiles. The quantiles are the first one plus the gaps summed
    (`gap_to_quantile`); RulNetwork.widen moves the outer two by interval_offset without
    passing their neighbours, which is a ReLU of the outer gaps plus the offset
    (`widening`; with two quantiles, of the half-gap to their middle)."""

    def __init__(self, network: RulNetwork) -> None:
        super().__init__()
        members = list(network.members)
        first = members[0].backbone.convolutions[0]
        self.pad_channels = (-first.in_channels % CHANNEL_MULTIPLE
                             if first.in_channels >= 16 else 0)
        self.backbones = nn.ModuleList(_with_input_channels(m.backbone, self.pad_channels)
                                       for m in members)
        scale = network.rul_cap / len(members)  # a member's share of the mean, in cycles
        q = members[0].quantile_head.out_features
        with torch.no_grad():
            # [M * D, 3]: the mean RUL and mean first quantile in cycles, the mean logit.
            self.register_buffer("linear_weight", torch.cat([torch.stack(
                [m.rul_head.weight[0] * scale, m.quantile_head.weight[0] * scale,
                 m.failure_head.weight[0] / len(members)], dim=1) for m in members]).clone())
            self.register_buffer("linear_bias", sum(torch.stack(
                [m.rul_head.bias[0] * scale, m.quantile_head.bias[0] * scale,
                 m.failure_head.bias[0] / len(members)]) for m in members).clone())
            # [M * D, M * (Q - 1)] and [M * (Q - 1)]: each member's raw quantile steps.
            self.register_buffer("step_weight", torch.block_diag(
                *[m.quantile_head.weight[1:].T for m in members]).clone())
            self.register_buffer("step_bias", torch.cat(
                [m.quantile_head.bias[1:] for m in members]).clone())
            self.register_buffer("interval_offset", network.interval_offset.clone())
        half = 0.5 if q == 2 else 1.0  # two quantiles widen from their middle
        self.register_buffer("gap_sum", torch.eye(q - 1).repeat(len(members), 1) * scale * half)
        to_quantile = torch.zeros(max(q - 1, 0), q)  # [Q - 1, Q]
        widening = torch.zeros(max(q - 1, 0), q)
        if q == 2:
            to_quantile[0] = 1.0
            widening[0] = torch.tensor([-1.0, 1.0])
        elif q > 2:
            for k in range(1, q):
                to_quantile[k - 1, k:] = 1.0
            to_quantile[0, 0] += 1.0  # the first: the second minus what the ReLU gives
            to_quantile[q - 2, q - 1] -= 1.0  # the last: the one before plus the ReLU
            widening[0, 0], widening[q - 2, q - 1] = -1.0, 1.0
        self.register_buffer("gap_to_quantile", to_quantile)
        self.register_buffer("widening", widening)

    @staticmethod
    def applies_to(network: RulNetwork) -> bool:
        return all(isinstance(m.backbone, CNNBackbone) for m in network.members)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised windows [B, W, F] -> the members' mean (rul [B], widened rul_quantiles
        [B, Q], failure logit [B]), RUL in cycles, not yet clipped: what RulNetwork.finish
        takes with widen=False."""
        if self.pad_channels:
            x = F.pad(x, (0, self.pad_channels))
        h = x.transpose(1, 2).unsqueeze(2)  # [B, F, 1, W], as CNNBackbone.forward starts
        features = torch.cat([b.features_from_map(h) for b in self.backbones], 1)  # [B, M * D]
        linear = torch.addmm(self.linear_bias, features, self.linear_weight)  # [B, 3]
        quantiles = linear[:, 1:2]
        if self.gap_sum.shape[1]:  # more than one quantile
            steps = F.softplus(torch.addmm(self.step_bias, features, self.step_weight))
            gaps = steps @ self.gap_sum  # [B, Q - 1]
            quantiles = (torch.addmm(quantiles, gaps, self.gap_to_quantile)
                         + torch.relu(gaps + self.interval_offset) @ self.widening)
        return linear[:, 0], quantiles, linear[:, 2]


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
        self.fused = FusedCNNMembers(network) if FusedCNNMembers.applies_to(network) else None

    def forward(self, readings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.preprocessing(readings)
        if self.fused is None:
            rul, quantiles, logit = self.network(x)
        else:
            rul, quantiles, logit = self.network.finish(*self.fused(x), widen=False)
        return rul, quantiles, self.network.failure_probability(logit)
