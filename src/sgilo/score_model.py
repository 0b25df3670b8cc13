"""The SGILO score model: a ViT over the layer-k latent, predicting the noise ε of a VP-SDE sample.

The latent is read as tokens with patch size 1: a (C, H, W) feature map gives H·W tokens of C entries, a
(N, D) latent such as w+ (18, 512) gives N tokens of D entries. Time enters as Gaussian random Fourier
features (Tancik et al. 2020, as in Song et al.'s score models), added to every token.

`ScoreViT` is the plain backbone F(x, t). `Preconditioned` wraps it as the SDE sees it (EDM's split, Karras
et al. 2022): the prediction ε̂ = F + c(t)·x, with the skip c(t) from the SDE's own mean coefficient, and the
score −ε̂/σ(t). The network predicts ε rather than the score, so its output has unit scale at every t. With
`igo=True` the backbone also carries the Intermediate Generator of IGO (Mishra et al.): D_τ ∘ s_τ ∘ E_τ, a
shallow encoder/decoder pair around the first `igo_depth` blocks of the shared trunk, trained on the
intermediate forward iterate x_τ with α·L(x_t) + (1−α)·R(x_τ) (`dsm_loss`).

Paper size (8 blocks, width 1024, 1 head, MLP 4096) is ≈70M parameters because attention works in
`heads · head_dim` = 64 dimensions (the reference code's `dim_head=64`), not in the full width.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sgilo.sde import SDE, VPSchedule, per_item, target_std

TIME_FEATURES = 256  # sin + cos of 128 random frequencies; the MLP lifts them to the width


class GaussianFourierTime(nn.Module):
    """t ↦ MLP([sin 2πWt, cos 2πWt]), W ~ N(0, scale²) fixed: lets a network resolve fine changes in t."""

    def __init__(self, width: int, scale: float = 16.0, features: int = TIME_FEATURES) -> None:
        super().__init__()
        if features < 2 or features % 2:
            raise ValueError(f"GaussianFourierTime needs an even number of features >= 2, got {features}")
        # A buffer, not a parameter: fixed after construction but saved with the state dict, so a checkpoint
        # reproduces the same features.
        self.register_buffer("frequencies", torch.randn(features // 2) * scale)
        self.mlp = nn.Sequential(nn.Linear(features, width), nn.SiLU(), nn.Linear(width, width))

    def forward(self, t: Tensor) -> Tensor:
        """(B,) times → (B, width) features."""
        # float32 at least: with scale 16 the angles reach hundreds of radians, beyond bf16's resolution.
        angles = 2 * math.pi * t.to(self.frequencies.dtype)[:, None] * self.frequencies[None, :]
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class SelfAttention(nn.Module):
    """Multi-head self-attention in `heads · head_dim` dimensions, which may be narrower than the width."""

    def __init__(self, width: int, heads: int, head_dim: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim, self.dropout = heads, head_dim, dropout
        self.qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, width)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, _ = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        return self.proj_drop(self.proj(y.transpose(1, 2).reshape(batch, tokens, -1)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN x), then x + MLP(LN x)."""

    def __init__(self, width: int, heads: int, head_dim: int, mlp: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = SelfAttention(width, heads, head_dim, dropout)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, mlp), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp, width), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ScoreViT(nn.Module):
    """The backbone ViT over a latent of shape `shape` (no batch): (C, H, W) or (N, D), patch size 1.

    Its output is the residual F(x, t) that `Preconditioned` turns into ε̂; the backbone knows no SDE."""

    def __init__(
        self,
        shape: Sequence[int],
        width: int = 1024,
        depth: int = 8,
        heads: int = 1,
        mlp: int = 4096,
        fourier_scale: float = 16.0,
        dropout: float = 0.0,
        igo: bool = False,
        igo_depth: int | None = None,
        head_dim: int = 64,
    ) -> None:
        super().__init__()
        self.shape = _check_shape(shape)
        for name, value in (("width", width), ("depth", depth), ("heads", heads), ("mlp", mlp), ("head_dim", head_dim)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ScoreViT {name} must be a positive int, got {value!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"ScoreViT dropout must be in [0, 1), got {dropout}")
        igo_depth = max(1, depth // 2) if igo_depth is None else igo_depth
        if not 1 <= igo_depth <= depth:
            raise ValueError(f"ScoreViT igo_depth must be in [1, depth={depth}], got {igo_depth}")
        self._config = {
            "shape": list(self.shape),
            "width": width,
            "depth": depth,
            "heads": heads,
            "mlp": mlp,
            "fourier_scale": float(fourier_scale),
            "dropout": float(dropout),
            "igo": bool(igo),
            "igo_depth": igo_depth,
            "head_dim": head_dim,
        }
        self.igo, self.igo_depth = bool(igo), igo_depth
        # (C, H, W): H·W tokens of C entries; (N, D): N tokens of D entries.
        channels = self.shape[0] if len(self.shape) == 3 else self.shape[1]
        self.num_tokens = math.prod(self.shape[1:]) if len(self.shape) == 3 else self.shape[0]
        self.embed = nn.Linear(channels, width)
        self.pos_embedding = nn.Parameter(0.02 * torch.randn(1, self.num_tokens, width))
        self.time = GaussianFourierTime(width, fourier_scale)
        self.blocks = nn.ModuleList(Block(width, heads, head_dim, mlp, dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, channels)
        if self.igo:  # IGO's E_τ and D_τ: own in/out projections, the trunk's first igo_depth blocks shared
            self.encoder_tau = nn.Linear(channels, width)
            self.norm_tau = nn.LayerNorm(width)
            self.decoder_tau = nn.Linear(width, channels)

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """F(x, t), the same shape as x; t is (B,) in (0, 1] (a scalar is broadcast)."""
        h = self._trunk(self.embed(self._to_tokens(x)), self._time_features(t, x), self.blocks)
        return self._from_tokens(self.head(self.norm(h)), x)

    def forward_intermediate(self, x_tau: Tensor, t: Tensor) -> Tensor:
        """IGO's intermediate generator D_τ ∘ s_τ ∘ E_τ: F of x_τ at time t = τ, through the first igo_depth blocks."""
        if not self.igo:
            raise ValueError("forward_intermediate needs a ScoreViT built with igo=True")
        blocks = self.blocks[: self.igo_depth]
        h = self._trunk(self.encoder_tau(self._to_tokens(x_tau)), self._time_features(t, x_tau), blocks)
        return self._from_tokens(self.decoder_tau(self.norm_tau(h)), x_tau)

    def config(self) -> dict:
        """Constructor keyword arguments (JSON-able): a checkpoint is state_dict() + config()."""
        return dict(self._config, shape=list(self.shape))

    def _trunk(self, h: Tensor, time_features: Tensor, blocks: Sequence[nn.Module]) -> Tensor:
        h = h + self.pos_embedding + time_features[:, None, :]
        for block in blocks:
            h = block(h)
        return h

    def _to_tokens(self, x: Tensor) -> Tensor:
        """(B, C, H, W) → (B, H·W, C); (B, N, D) is already tokens."""
        if x.dim() != len(self.shape) + 1 or tuple(x.shape[1:]) != self.shape:
            expected = ", ".join(str(s) for s in self.shape)
            raise ValueError(f"ScoreViT expects x of shape (B, {expected}), got {tuple(x.shape)}")
        return x.flatten(2).transpose(1, 2) if len(self.shape) == 3 else x

    def _from_tokens(self, tokens: Tensor, like: Tensor) -> Tensor:
        return tokens.transpose(1, 2).reshape(like.shape) if len(self.shape) == 3 else tokens

    def _time_features(self, t: Tensor | float, x: Tensor) -> Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"ScoreViT expects t of shape ({x.shape[0]},) (one time per item), got {tuple(t.shape)}")
        return self.time(t)


class Preconditioned(nn.Module):
    """The score model as the SDE sees it: ε̂(x, t) = F(x, t) + c(t)·x around a backbone F, and the score −ε̂/σ(t).

    c(t) = σ/(a²s² + σ²) is the optimal ε̂ for data N(0, s²I) when x_t = a·x0 + σ·ε, with a = m(t) the SDE's mean
    coefficient (`VPSchedule.log_mean_coeff`; a DriftSDE uses its schedule's) and σ² = 1 − a². The backbone ends in
    a LayerNorm, so on its own its output cannot grow with x; off the data (where a reverse-time sampler drifts) ε̂
    then stops pulling x back and samples diverge. The skip gives the network a linear restoring force and leaves
    it only the residual to learn. `data_std` None: no skip.

    The score divides by σ(t) = `target_std(sde, t, keep=keep)`, the std its training targets were drawn with (the
    marginal's for an SDE that has one). Parameters and state dict are the backbone's alone.
    """

    def __init__(
        self, backbone: ScoreViT, sde: SDE, data_std: float | None = None, keep: Sequence[float] = (0.5,)
    ) -> None:
        super().__init__()
        if not isinstance(sde, VPSchedule):
            raise ValueError(f"Preconditioned needs an SDE on the VP schedule (vp or a DriftSDE), got {sde!r}")
        if data_std is not None and not data_std > 0:
            raise ValueError(f"Preconditioned data_std must be positive or None, got {data_std}")
        self.backbone, self.sde, self.keep = backbone, sde, tuple(float(k) for k in keep)
        self.data_std = None if data_std is None else float(data_std)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.backbone.shape

    @property
    def igo(self) -> bool:
        return bool(getattr(self.backbone, "igo", False))

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        """ε̂(x, t), the same shape as x; t is (B,) in (0, 1] (a scalar is broadcast)."""
        return self.backbone(x, t) + self.skip(x, t)

    def forward_intermediate(self, x_tau: Tensor, t: Tensor) -> Tensor:
        """ε̂ of IGO's intermediate generator at x_τ, time t = τ (`ScoreViT.forward_intermediate`)."""
        return self.backbone.forward_intermediate(x_tau, t) + self.skip(x_tau, t)

    def skip(self, x: Tensor, t: Tensor) -> Tensor | float:
        """c(t)·x (class docstring)."""
        if self.data_std is None:
            return 0.0
        t = t.to(x.dtype).reshape(-1) * torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        a2 = torch.exp(2 * self.sde.log_mean_coeff(t))
        # 1 − a², not the marginal's −expm1(2 log a): this is the arithmetic every trained checkpoint was fitted
        # with, and the two differ in the last bits, so loading one must give its exact outputs.
        sigma = (1 - a2).clamp_min(1e-12).sqrt()
        c = sigma / (a2 * self.data_std**2 + sigma.square())
        return per_item(c, x) * x

    def std(self, t: Tensor) -> Tensor:
        """σ(t) that turns ε̂ into a score, as in training (the marginal std, or the last EM step's)."""
        return target_std(self.sde, t, keep=self.keep).to(t.device, t.dtype)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """∇log p_t(x) ≈ −ε̂(x, t)/σ(t)."""
        t = torch.as_tensor(t, device=x.device)
        return -self(x, t) / per_item(self.std(t).to(x.dtype), x)


def preconditioned_score_vit(
    shape: Sequence[int],
    options: dict,
    seed: int,
    sde: SDE,
    data_std: float,
    keep: Sequence[float] = (0.5,),
    **settings,
) -> Preconditioned:
    """A `Preconditioned` ScoreViT whose backbone is initialised from `seed` alone, leaving the global RNG as it was.

    `options` is a params `*.model` mapping (width, depth, …; its `skip` turns on the skip for data of std
    `data_std`); `settings` (igo, head_dim, …) go to ScoreViT as they are."""
    options = dict(options)
    skip = options.pop("skip")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone = ScoreViT(shape, **options, **settings)
    return Preconditioned(backbone, sde, data_std if skip else None, keep)


def _check_shape(shape: Sequence[int]) -> tuple[int, ...]:
    shape = tuple(shape)
    if len(shape) not in (2, 3) or not all(isinstance(s, int) and s > 0 for s in shape):
        raise ValueError(f"ScoreViT shape must be (C, H, W) or (N, D) of positive ints, got {shape}")
    return shape


def dsm_loss(
    model: nn.Module,
    x_t: Tensor,
    t: Tensor,
    eps: Tensor,
    intermediate: tuple[Tensor, Tensor, Tensor] | None = None,
    alpha: float = 1.0,
) -> tuple[Tensor, dict[str, float]]:
    """Denoising score matching in ε form, the per-entry mean of (ε̂(x_t, t) − ε)² (≈1 for ε̂ = 0 at any latent size).

    `model`: the ε̂ model, `Preconditioned` (or a bare ScoreViT: ε̂ = F, no skip).

    `intermediate` = (x_τ, τ, ε_τ) adds IGO's regulariser R, the same loss through `forward_intermediate`:
    α·L(x_t) + (1−α)·R(x_τ). A term with weight 0 is still logged but computed without a graph, so it costs
    no backward and leaves its modules without gradients.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"dsm_loss alpha must be in [0, 1], got {alpha}")
    if intermediate is None:
        if alpha != 1.0:
            raise ValueError(f"dsm_loss alpha={alpha} weights R(x_τ), but no intermediate (x_τ, τ, ε_τ) was given")
        loss = F.mse_loss(model(x_t, t), eps)
        return loss, {"loss_t": loss.item()}
    if not getattr(model, "igo", False):
        raise ValueError("dsm_loss got an intermediate (x_τ, τ, ε_τ) but the model was built with igo=False")
    if len(intermediate) != 3:
        raise ValueError(f"dsm_loss intermediate must be (x_tau, tau, eps_tau), got {len(intermediate)} items")
    x_tau, tau, eps_tau = intermediate
    with torch.set_grad_enabled(torch.is_grad_enabled() and alpha > 0.0):
        loss_t = F.mse_loss(model(x_t, t), eps)
    with torch.set_grad_enabled(torch.is_grad_enabled() and alpha < 1.0):
        loss_tau = F.mse_loss(model.forward_intermediate(x_tau, tau), eps_tau)
    loss = loss_t if alpha == 1.0 else loss_tau if alpha == 0.0 else alpha * loss_t + (1.0 - alpha) * loss_tau
    return loss, {"loss_t": loss_t.item(), "loss_tau": loss_tau.item()}


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (buffers such as the Fourier frequencies excluded); works on the meta device."""
    return sum(p.numel() for p in model.parameters())
