"""The single-frame U-Net of the method (DESIGN §1 step 2), in torch.

A small U-Net after Ronneberger, Fischer & Brox, "U-Net: Convolutional Networks for
Biomedical Image Segmentation", MICCAI 2015 (arXiv:1505.04597): an encoder of
convolutions and pooling, a decoder of upsampling with skip connections from the
encoder at the same scale. Adapted for restoration on small devices:

* **in**: the sRGB image ``(N, 3, H, W)`` in [0, 1] and a noise-level map
  ``(N, 1, H, W)`` (the image's noise std in the same units, as in FFDNet: Zhang, Zuo &
  Zhang, "FFDNet: Toward a Fast and Flexible Solution for CNN-Based Image Denoising",
  IEEE TIP 2018; scaled by :data:`NOISE_MAP_SCALE` inside the net) are concatenated and
  pixel-unshuffled (space-to-depth, block 2) to ``(N, 16, H/2, W/2)``. The map is what
  lets one network serve both passes: a noisy single frame (first pass, σ ≈ 0.01–0.04)
  and a fused image with a few times less noise (second pass);
* **head**: a 3×3 conv to level 0's width, **linear** (no ReLU): level 0 has as many
  channels (16) as the unshuffled input, and its skip is the only full-resolution path
  to the output, so it must carry the signed high frequencies the network subtracts (the
  noise). With a ReLU there, half of each signed signal is cut: the first trained model
  removed only ~25 % of white noise from a flat field, less than a fixed Gaussian blur;
* **down**: per level a 3×3 conv, ReLU, residual blocks (conv–ReLU–conv + identity);
  2×2 average pooling between levels;
* **up**: bilinear ×2 upsampling, a 1×1 conv to the level's width, added to the skip
  from the encoder, residual blocks;
* **out**: a 3×3 conv to 12 channels, pixel-shuffle (depth-to-space) to ``(N, 3, H, W)``,
  added to the input image (global residual: the net predicts a correction).

No normalisation layers (FP16 TensorRT breaks them), only conv/ReLU/pool/resize/add, so
it exports to ONNX opset 17 and runs on onnxruntime and TensorRT alike. H and W must be
multiples of :attr:`UNet.multiple` (2 · 2^(levels−1)).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812 - torch convention

from deblurd.errors import ConfigError

#: The noise map (σ in sRGB units, ~0.003–0.05) times this is ~0.15–2.5: the range of the
#: image channels, so the first conv weighs it like them.
NOISE_MAP_SCALE = 50.0


@dataclass(frozen=True)
class UNetConfig:
    """Widths per level (level 0 at H/2), residual blocks per level on the way down and up
    (the deepest level's ``down_blocks`` is the bottleneck; its ``up_blocks`` unused)."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    down_blocks: tuple[int, ...] = (0, 1, 1, 2)
    up_blocks: tuple[int, ...] = (1, 1, 1, 0)

    def __post_init__(self) -> None:
        """Raises :class:`~deblurd.errors.ConfigError` unless there is at least one level
        and ``down_blocks`` and ``up_blocks`` have one entry per level (``widths``)."""
        levels = len(self.widths)
        problems = [] if levels else [("widths", "no levels")]
        for name, blocks in (("down_blocks", self.down_blocks), ("up_blocks", self.up_blocks)):
            if len(blocks) != levels:
                problems.append((name, f"{len(blocks)} entries for {levels} levels (widths)"))
        if problems:
            details = "; ".join(f"{key}: {message}" for key, message in problems)
            raise ConfigError(f"UNetConfig: {details}", problems)

    def to_json(self) -> dict[str, list[int]]:
        return {k: list(v) for k, v in asdict(self).items()}


def _conv(cin: int, cout: int, k: int = 3) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class ResBlock(nn.Module):
    """``x + conv(relu(conv(x)))``, both convs 3×3 at width ``c``."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = _conv(c, c)
        self.conv2 = _conv(c, c)

    def forward(self, x: Tensor) -> Tensor:
        out: Tensor = x + self.conv2(F.relu(self.conv1(x)))
        return out


class UNet(nn.Module):
    """The U-Net (module docstring). ``forward(image (N,3,H,W), noise (N,1,H,W))``."""

    def __init__(self, config: UNetConfig | None = None) -> None:
        super().__init__()
        cfg = config or UNetConfig()
        self.config = cfg
        w = cfg.widths
        levels = len(w)
        self.multiple = 2 * 2 ** (levels - 1)
        self.head = _conv(4 * 4, w[0])
        self.down_convs = nn.ModuleList([_conv(w[i - 1], w[i]) for i in range(1, levels)])
        self.enc = nn.ModuleList(
            [
                nn.Sequential(*[ResBlock(w[i]) for _ in range(cfg.down_blocks[i])])
                for i in range(levels)
            ]
        )
        self.up_proj = nn.ModuleList([_conv(w[i + 1], w[i], 1) for i in range(levels - 1)])
        self.dec = nn.ModuleList(
            [
                nn.Sequential(*[ResBlock(w[i]) for _ in range(cfg.up_blocks[i])])
                for i in range(levels - 1)
            ]
        )
        self.tail = _conv(w[0], 12)
        with torch.no_grad():  # starts as the identity (global residual)
            self.tail.weight.zero_()
            if self.tail.bias is not None:
                self.tail.bias.zero_()

    def forward(self, image: Tensor, noise: Tensor) -> Tensor:
        x = F.pixel_unshuffle(torch.cat([image, noise * NOISE_MAP_SCALE], dim=1), 2)
        x = self.head(x)  # linear: see the module docstring (level-0 skip)
        skips: list[Tensor] = []
        levels = len(self.config.widths)
        for i in range(levels):
            if i > 0:
                x = F.relu(self.down_convs[i - 1](F.avg_pool2d(x, 2)))
            x = self.enc[i](x)
            skips.append(x)
        for i in range(levels - 2, -1, -1):
            x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
            x = F.relu(self.up_proj[i](x)) + skips[i]
            x = self.dec[i](x)
        out: Tensor = image + F.pixel_shuffle(self.tail(x), 2)
        return out


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_pixel(config: UNetConfig) -> float:
    """Multiply–accumulates per input pixel (convolutions only)."""
    w = config.widths
    total = 16 * w[0] * 9 / 4 + w[0] * 12 * 9 / 4  # head, tail at H/2
    for i, c in enumerate(w):
        scale = 1.0 / 4 ** (i + 1)
        blocks = config.down_blocks[i] + (config.up_blocks[i] if i < len(w) - 1 else 0)
        total += blocks * 2 * c * c * 9 * scale
        if i > 0:
            total += w[i - 1] * c * 9 * scale  # down conv
            total += c * w[i - 1] * (scale * 4)  # 1x1 up projection at the level above
    return total
