"""Backbones: plain torch modules mapping normalised windows [B, W, F] to features [B, D].

Registered by name; configs store the name. No Lightning here, so each exports and tests alone.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from rul.errors import ConfigError
from training.config import ModelConfig


class CNNBackbone(nn.Module):
    """1D-CNN over time in the style of Li, Ding & Sun (2018): stacked temporal convolutions,
    then the whole feature map flattened into a dense layer (the window length is fixed)."""

    def __init__(self, n_inputs: int, window: int, config: ModelConfig) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        channels, length = n_inputs, window
        for layer in range(config.layers):
            stride = config.first_stride if layer == 0 else config.later_stride
            blocks += [nn.Conv1d(channels, config.hidden, config.kernel_size, stride=stride,
                                 padding=config.kernel_size // 2), nn.ReLU()]
            channels = config.hidden
            length = (length + 2 * (config.kernel_size // 2) - config.kernel_size) // stride + 1
        self.convolutions = nn.Sequential(*blocks)
        self.dense = nn.Sequential(nn.Flatten(), nn.Linear(channels * length, config.hidden),
                                   nn.ReLU())
        self.out_features = config.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The convolutions run as 1xK Conv2d on [B, F, 1, W]: the same numbers as Conv1d (which
        # torch computes that way anyway), but 4-D Conv nodes in ONNX, the only ones
        # onnxruntime's blocked NCHWc kernels take: 2-3x its Conv1d throughput at large batch.
        return self.features_from_map(x.transpose(1, 2).unsqueeze(2))

    def features_from_map(self, h: torch.Tensor) -> torch.Tensor:
        """The backbone on windows already laid out as [B, F, 1, W]."""
        for layer in self.convolutions:
            h = _as_conv2d(layer, h) if isinstance(layer, nn.Conv1d) else layer(h)
        return self.dense(h)  # Flatten: [B, C, 1, L] -> [B, C * L], as [B, C, L] would


def _as_conv2d(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, conv.weight.unsqueeze(2), conv.bias, stride=(1, conv.stride[0]),
                    padding=(0, conv.padding[0]), dilation=(1, conv.dilation[0]),
                    groups=conv.groups)


class LSTMBackbone(nn.Module):
    """Stacked LSTM; the last time step's hidden state summarises the window (Zheng et al. 2017)."""

    def __init__(self, n_inputs: int, window: int, config: ModelConfig) -> None:
        super().__init__()
        del window  # any length works; kept for a uniform constructor
        self.lstm = nn.LSTM(n_inputs, config.hidden, num_layers=config.layers, batch_first=True,
                            dropout=config.dropout if config.layers > 1 else 0.0)
        self.out_features = config.hidden

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        output, _ = self.lstm(x)
        return output[:, -1]


BACKBONES: dict[str, type[nn.Module]] = {"cnn": CNNBackbone, "lstm": LSTMBackbone}


def build_backbone(n_inputs: int, window: int, config: ModelConfig) -> nn.Module:
    try:
        cls = BACKBONES[config.backbone]
    except KeyError:
        raise ConfigError(f"unknown backbone {config.backbone!r}; choose one of "
                          f"{sorted(BACKBONES)}") from None
    return cls(n_inputs, window, config)
