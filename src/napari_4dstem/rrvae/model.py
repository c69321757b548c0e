"""The networks and the loss of the rrVAE (the architecture of atomai's ``rVAE``, vectorised).

Encoder: MLP (``layers`` x [hidden, act]) with a mean and a log-sd head for 1 (+2) + K latents.
Decoder: a coordinate network ``act(W_c x + b_c + W_z z)`` -> ``layers`` x [hidden, act] -> linear 1,
evaluated at every detector pixel ``x`` of a grid on [-1, 1] rotated by the pattern's angle (latent 0)
and shifted by its translation (latents 1-2 when enabled).
"""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

_ACT = {"tanh": torch.tanh, "relu": F.relu, "lrelu": lambda x: F.leaky_relu(x, 0.01), "softplus": F.softplus}
_ACT_ = {"tanh": torch.tanh_, "relu": torch.relu_}  # in-place versions where autograd allows


def coord_grid(h: int, w: int, out_h: int | None = None, out_w: int | None = None) -> torch.Tensor:
    """Pixel centres of an ``h x w`` detector on [-1, 1] (x right, y up), shape ``(h*w, 2)``.

    With ``out_h, out_w`` smaller, the coordinates of the pixels after area binning to that size (the
    mean of the original centres in each bin), so a model trained on binned patterns decodes on the full
    grid at the right place.
    """
    y = torch.linspace(1.0, -1.0, h)
    x = torch.linspace(-1.0, 1.0, w)
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    g = torch.stack([xx, yy])  # (2, h, w)
    if out_h is not None and (out_h, out_w) != (h, w):
        g = F.adaptive_avg_pool2d(g[None], (out_h, out_w))[0]
    return g.reshape(2, -1).T.contiguous()


class Encoder(nn.Module):
    """MLP encoder with a mean and a log-sd head; output 0 is the rotation angle.

    ``angle="linear"`` (atomai): the angle's mean is one linear output, a real number with no wrap-around, so
    an encoder that follows a direction over a full turn must jump somewhere. ``angle="vector"``: the mean
    head gives a 2-vector ``(u, v)`` and the angle is ``atan2(v, u)``, continuous on the circle (the log-sd
    head and everything downstream are unchanged: the mean is still one angle per pattern).
    """

    def __init__(self, n_in: int, hidden: int, layers: int, n_out: int, activation: str = "tanh",
                 angle: str = "linear"):
        super().__init__()
        dims = [n_in] + [hidden] * layers
        self.dense = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.angle_vector = angle == "vector"
        self.mean = nn.Linear(hidden, n_out + int(self.angle_vector))
        self.logsd = nn.Linear(hidden, n_out)
        self.act = _ACT[activation]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = x.reshape(x.shape[0], -1)
        for lin in self.dense:
            h = self.act(lin(h))
        m = self.mean(h)
        if self.angle_vector:
            m = torch.cat([torch.atan2(m[:, 1:2], m[:, :1]), m[:, 2:]], 1)
        return m, self.logsd(h)


class Decoder(nn.Module):
    """Coordinate decoder. The first layer folds the rotation into its weights: ``W_c (R x) = (W_c R) x``."""

    def __init__(self, latent_dim: int, hidden: int, layers: int, activation: str = "tanh"):
        super().__init__()
        self.coord = nn.Linear(2, hidden)
        self.latent = nn.Linear(latent_dim, hidden, bias=False)
        self.dense = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
        self.out = nn.Linear(hidden, 1)
        self.activation = activation

    def forward(self, grid: torch.Tensor, z: torch.Tensor, angle: torch.Tensor,
                shift: torch.Tensor | None = None) -> torch.Tensor:
        """Decode ``z (B, K)`` at ``grid (P, 2)`` rotated by ``angle (B,)`` and shifted by ``shift (B, 2)``.

        Returns ``(B, P)``. Coordinates are transformed as atomai does: ``x' = x R(angle) + shift`` with
        ``R = [[cos, sin], [-sin, cos]]`` (row vectors).
        """
        act = _ACT[self.activation]
        act_ = _ACT_.get(self.activation, act)
        b = z.shape[0]
        c, s = torch.cos(angle)[:, None], torch.sin(angle)[:, None]
        w0, w1 = self.coord.weight[:, 0], self.coord.weight[:, 1]  # (H,)
        # (x R) W^T = x_x (c w0 + s w1) + x_y (-s w0 + c w1)
        a0 = c * w0 + s * w1  # (B, H)
        a1 = c * w1 - s * w0
        bias = self.coord.bias + self.latent(z)  # (B, H)
        if shift is not None:
            bias = bias + shift @ self.coord.weight.T
        coeff = torch.stack([a0, a1], 1)  # (B, 2, H)
        h = torch.baddbmm(bias[:, None, :], grid.expand(b, *grid.shape), coeff)  # (B, P, H)
        h = act_(h).reshape(-1, h.shape[-1])  # in place on the baddbmm output, not on a view of it
        for lin in self.dense:
            h = act_(torch.addmm(lin.bias, h, lin.weight.T))
        out = torch.addmm(self.out.bias, h, self.out.weight.T)
        return out.reshape(b, -1)


class RVAENet(nn.Module):
    """Encoder + decoder; latent layout: [angle, (dx, dy,) content...]."""

    def __init__(self, n_pixels: int, latent_dim: int, hidden: int, layers: int, activation: str,
                 translation: bool, angle: str = "linear"):
        super().__init__()
        self.n_pose = 3 if translation else 1
        self.latent_dim = latent_dim
        self.encoder = Encoder(n_pixels, hidden, layers, self.n_pose + latent_dim, activation, angle)
        self.decoder = Decoder(latent_dim, hidden, layers, activation)

    def split(self, z: torch.Tensor):
        """(angle, shift or None, content) from a latent vector laid out as the encoder's output."""
        angle = z[:, 0]
        shift = z[:, 1:3] if self.n_pose == 3 else None
        return angle, shift, z[:, self.n_pose:]


def kl_terms(mean: torch.Tensor, logsd: torch.Tensor, n_pose: int, rotation_prior: float):
    """Per-pattern KL terms (atomai's ``rvae_loss``).

    Rotation: ``-log sd + log sigma_p + sd^2 / (2 sigma_p^2) - 1/2`` (no mean term: the prior constrains only
    the spread). Translation and content: ``sum(-log sd + sd^2/2 + mean^2/2 - 1/2)`` against N(0, 1).
    """
    phi_logsd = logsd[:, 0]
    kl_rot = -phi_logsd + math.log(rotation_prior) + torch.exp(2 * phi_logsd) / (2 * rotation_prior**2) - 0.5
    m, ls = mean[:, 1:], logsd[:, 1:]
    kl_z = (-ls + 0.5 * torch.exp(2 * ls) + 0.5 * m**2 - 0.5).sum(1)
    return kl_rot, kl_z


def recon_term(pred: torch.Tensor, target: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """0.5 x squared error summed per pattern (x ``scale`` when only a share of the pixels is decoded)."""
    return 0.5 * scale * ((pred - target) ** 2).sum(1)
