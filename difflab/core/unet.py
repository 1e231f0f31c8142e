"""The CS180 Project 5 UNet, block for block as the spec draws it, with optional time and class conditioning."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 10
CONDITIONINGS = ("none", "time", "class")
MODULATIONS = ("add", "mul")


def _bn_gelu(layer: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(layer, nn.BatchNorm2d(channels), nn.GELU())


def Conv(cin: int, cout: int) -> nn.Sequential:
    return _bn_gelu(nn.Conv2d(cin, cout, 3, 1, 1), cout)


def DownConv(cin: int, cout: int) -> nn.Sequential:
    return _bn_gelu(nn.Conv2d(cin, cout, 3, 2, 1), cout)


def UpConv(cin: int, cout: int) -> nn.Sequential:
    return _bn_gelu(nn.ConvTranspose2d(cin, cout, 4, 2, 1), cout)


def Flatten() -> nn.Sequential:
    return nn.Sequential(nn.AvgPool2d(7), nn.GELU())


def Unflatten(channels: int) -> nn.Sequential:
    return _bn_gelu(nn.ConvTranspose2d(channels, channels, 7, 7, 0), channels)


def ConvBlock(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(Conv(cin, cout), Conv(cout, cout))


def DownBlock(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(DownConv(cin, cout), ConvBlock(cout, cout))


def UpBlock(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(UpConv(cin, cout), ConvBlock(cout, cout))


def FCBlock(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(cin, cout), nn.GELU(), nn.Linear(cout, cout))


class UNet(nn.Module):
    """1x28x28 -> 1x28x28 UNet of width D.

    conditioning: "none" (denoisers), "time" (t in [0, 1]) or "class" (time + one-hot class, zero = unconditional).
    modulation: how the time-only UNet's embedding enters at the Unflatten output (2D) and first UpBlock output (D):
      "add" (DDPM page):  h = h + t
      "mul" (flow page):  h = h * t
    With class conditioning both pages give h = c * h + t (`unflatten = c1 * unflatten + t1`, `up1 = c2 * up1 + t2`).
    The FC blocks that embed t and c run in fp32 even under bf16 autocast (`_embed`).
    prediction: what a DDPM UNet's output is, "eps" or "v" (difflab.core.families); other families keep "eps",
    unused. Model files record it, and the samplers read it from here.
    """

    def __init__(self, hidden: int = 64, conditioning: str = "none", modulation: str = "add",
                 prediction: str = "eps"):
        super().__init__()
        if conditioning not in CONDITIONINGS:
            raise ValueError(f"conditioning must be one of {CONDITIONINGS}, got {conditioning!r}")
        if modulation not in MODULATIONS:
            raise ValueError(f"modulation must be one of {MODULATIONS}, got {modulation!r}")
        d = hidden
        self.hidden, self.conditioning, self.modulation = hidden, conditioning, modulation
        self.prediction = prediction
        self.conv_in = ConvBlock(1, d)
        self.down1 = DownBlock(d, d)
        self.down2 = DownBlock(d, 2 * d)
        self.flatten = Flatten()
        self.unflatten = Unflatten(2 * d)
        self.up1 = UpBlock(4 * d, d)
        self.up2 = UpBlock(2 * d, d)
        self.conv_out = ConvBlock(2 * d, d)
        self.head = nn.Conv2d(d, 1, 3, 1, 1)
        if conditioning != "none":
            self.fc1_t, self.fc2_t = FCBlock(1, 2 * d), FCBlock(1, d)
        if conditioning == "class":
            self.fc1_c, self.fc2_c = FCBlock(NUM_CLASSES, 2 * d), FCBlock(NUM_CLASSES, d)

    def _modulate(self, h: torch.Tensor, t_emb: torch.Tensor, c_emb: torch.Tensor | None) -> torch.Tensor:
        t_emb = t_emb[:, :, None, None]
        if c_emb is not None:
            return c_emb[:, :, None, None] * h + t_emb
        return h * t_emb if self.modulation == "mul" else h + t_emb

    @staticmethod
    def _embed(block: nn.Module, v: torch.Tensor) -> torch.Tensor:
        """An FC block in fp32, autocast or not: bf16's step near t = 1 is 2^-8, more than a timestep of 300, so
        under bf16 neighbouring timesteps would reach the model as one value."""
        with torch.autocast(v.device.type, enabled=False):
            return block(v.float())

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, c: torch.Tensor | None = None) -> torch.Tensor:
        """x: (N,1,28,28); t: (N,) in [0,1]; c: (N,10) one-hot or zero rows for the unconditional model."""
        x0 = self.conv_in(x)
        x1 = self.down1(x0)
        x2 = self.down2(x1)
        h = self.unflatten(self.flatten(x2))
        if self.conditioning != "none":
            if t is None:
                raise ValueError("this UNet is time-conditioned: pass t")
            t = t.view(-1, 1)
            c1 = c2 = None
            if self.conditioning == "class":
                if c is None:
                    raise ValueError("this UNet is class-conditioned: pass c (zeros for unconditional)")
                c1, c2 = self._embed(self.fc1_c, c), self._embed(self.fc2_c, c)
            h = self._modulate(h, self._embed(self.fc1_t, t), c1)
        h = self.up1(torch.cat([x2, h], 1))
        if self.conditioning != "none":
            h = self._modulate(h, self._embed(self.fc2_t, t), c2)
        h = self.up2(torch.cat([x1, h], 1))
        h = self.conv_out(torch.cat([x0, h], 1))
        return self.head(h)


def one_hot(labels: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """One-hot class vectors; rows where `drop` is True become zero (the unconditional class for CFG)."""
    c = F.one_hot(labels.long(), NUM_CLASSES).float()
    if drop is not None:
        c = c * (~drop).float().unsqueeze(1)
    return c
