"""ScoreViT and the DSM/IGO losses: shapes, batching, time and position, size, learning, IGO gradients, config."""

from __future__ import annotations

import json
import math

import pytest
import torch

from sgilo.score_model import (
    GaussianFourierTime,
    Preconditioned,
    ScoreViT,
    count_parameters,
    dsm_loss,
)
from sgilo.sde import VPSDE, build_sde

TINY = {"width": 32, "depth": 2, "heads": 2, "mlp": 64, "head_dim": 16}
BETA_MIN, BETA_MAX = 0.1, 20.0


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models' steps are mostly thread overhead: one thread is fastest and immune to a busy machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny(shape: tuple[int, ...], seed: int = 0, **kwargs) -> ScoreViT:
    torch.manual_seed(seed)
    return ScoreViT(shape, **{**TINY, **kwargs}).eval()


def vp_marginal(x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """VP-SDE p(x_t | x0): mean scale and std per item, written out here so the test does not trust sgilo.sde."""
    log_mean = -0.25 * t**2 * (BETA_MAX - BETA_MIN) - 0.5 * t * BETA_MIN
    view = (-1,) + (1,) * (x0.dim() - 1)
    return log_mean.exp().view(view) * x0, (1 - (2 * log_mean).exp()).sqrt().view(view)


def perturb(x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    t = 1e-3 + (1 - 1e-3) * torch.rand(len(x0), generator=generator)
    eps = torch.randn(x0.shape, generator=generator)
    mean, std = vp_marginal(x0, t)
    return mean + std * eps, t, eps


# ------------------------------------------------------------------------------------------------ forward
@pytest.mark.parametrize("shape", [(6, 3, 4), (5, 7)])
def test_output_shape_and_batch_equals_single_items(shape):
    model = tiny(shape)
    x, t = torch.randn(4, *shape), torch.rand(4)
    with torch.no_grad():
        out = model(x, t)
        singles = torch.cat([model(x[i : i + 1], t[i : i + 1]) for i in range(4)])
    assert out.shape == x.shape
    torch.testing.assert_close(out, singles, atol=1e-5, rtol=1e-5)


def test_time_matters_and_scalar_time_broadcasts():
    model = tiny((4, 2, 2))
    x = torch.randn(3, 4, 2, 2)
    with torch.no_grad():
        early, late = model(x, torch.full((3,), 0.05)), model(x, torch.full((3,), 0.9))
        assert (early - late).abs().max() > 1e-3
        torch.testing.assert_close(model(x, torch.tensor(0.05)), early)


def test_positional_embedding_breaks_permutation_equivariance():
    model = tiny((6, 8))
    x, t = torch.randn(2, 6, 8), torch.rand(2)
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert not torch.allclose(model(x[:, perm], t), model(x, t)[:, perm], atol=1e-4)
        model.pos_embedding.zero_()  # control: without positions a transformer is permutation-equivariant
        torch.testing.assert_close(model(x[:, perm], t), model(x, t)[:, perm], atol=1e-5, rtol=1e-5)


def test_time_features_are_fixed_fourier_features():
    torch.manual_seed(0)
    features = GaussianFourierTime(8, scale=16.0)
    assert "frequencies" in dict(features.named_buffers())
    assert all(p is not features.frequencies for p in features.parameters())
    assert features(torch.rand(5)).shape == (5, 8)


# ---------------------------------------------------------------------------------------------------- size
@pytest.mark.parametrize("shape", [(512, 16, 16), (18, 512)])
def test_paper_size_is_about_70m_parameters(shape):
    with torch.device("meta"):
        model = ScoreViT(shape, width=1024, depth=8, heads=1, mlp=4096)
    assert 60e6 < count_parameters(model) < 80e6


# ---------------------------------------------------------------------------------------------- learning
def test_dsm_training_reduces_held_out_loss():
    shape = (4, 2, 2)
    generator = torch.Generator().manual_seed(0)
    pattern = torch.randn(shape, generator=generator)

    def sample(n: int) -> torch.Tensor:
        return pattern + 0.05 * torch.randn((n, *shape), generator=generator)

    held_out = perturb(sample(512), generator)
    model = tiny(shape, width=32, depth=2, mlp=64).train()

    def held_out_loss() -> float:
        with torch.no_grad():
            return dsm_loss(model.eval(), *held_out)[0].item()

    initial = held_out_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        model.train()
        loss, logs = dsm_loss(model, *perturb(sample(128), generator))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert math.isfinite(logs["loss_t"])
    final = held_out_loss()
    assert final < 0.2 * initial, (initial, final)  # typically ~0.03x


def test_the_score_is_minus_eps_over_the_sdes_marginal_std():
    model = Preconditioned(tiny((5, 7)), VPSDE(BETA_MIN, BETA_MAX), data_std=0.5)
    x, t = torch.randn(3, 5, 7), torch.tensor([0.1, 0.5, 1.0])
    _, sigma = vp_marginal(torch.ones(3), t)
    with torch.no_grad():
        torch.testing.assert_close(model.score(x, t), -model(x, t) / sigma[:, None, None])
        # a scalar time applies to every item
        torch.testing.assert_close(model.score(x, torch.tensor(0.5)), model.score(x, torch.full((3,), 0.5)))


def test_a_drift_sdes_score_divides_by_its_last_em_steps_std():
    """No marginal: σ(t) is the std of the EM step that reached t, the target the trajectories were drawn with."""
    sde = build_sde("catmap", BETA_MIN, BETA_MAX, dt=0.05)
    model = Preconditioned(tiny((5, 7)), sde, data_std=0.5, keep=(0.5,))
    x, t = torch.randn(2, 5, 7), torch.tensor([0.3, 0.7])
    h = [0.15 / 3, 0.35 / 7]  # [τ, t] = [t/2, t] in ceil(length/dt) equal steps
    std = torch.tensor(
        [math.sqrt((BETA_MIN + (ti - hi) * (BETA_MAX - BETA_MIN)) * hi) for ti, hi in zip((0.3, 0.7), h)]
    )
    with torch.no_grad():
        torch.testing.assert_close(model.score(x, t), -model(x, t) / std[:, None, None], rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------------- IGO
def igo_batch(shape: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(2)
    x_t, t, eps = perturb(torch.randn((4, *shape), generator=generator), generator)
    x_tau, tau, eps_tau = perturb(torch.randn((4, *shape), generator=generator), generator)
    return x_t, t, eps, (x_tau, tau, eps_tau)


def grad_size(module: torch.nn.Module) -> float:
    return sum(p.grad.abs().sum().item() for p in module.parameters() if p.grad is not None)


def test_igo_loss_mixes_both_paths_and_reaches_all_parts():
    shape = (4, 2, 2)
    model = tiny(shape, depth=3, igo=True, igo_depth=2)
    x_t, t, eps, intermediate = igo_batch(shape)
    assert model.forward_intermediate(intermediate[0], intermediate[1]).shape == intermediate[0].shape
    loss, logs = dsm_loss(model, x_t, t, eps, intermediate=intermediate, alpha=0.5)
    assert set(logs) == {"loss_t", "loss_tau"}
    assert loss.item() == pytest.approx(0.5 * logs["loss_t"] + 0.5 * logs["loss_tau"], rel=1e-6)
    loss.backward()
    for part in (model.encoder_tau, model.decoder_tau, model.embed, model.head, model.blocks[0], model.blocks[2]):
        assert grad_size(part) > 0


def test_igo_path_uses_only_the_first_igo_depth_blocks():
    shape = (4, 2, 2)
    model = tiny(shape, depth=3, igo=True, igo_depth=2)
    x_t, t, eps, intermediate = igo_batch(shape)
    dsm_loss(model, x_t, t, eps, intermediate=intermediate, alpha=0.0)[0].backward()
    assert grad_size(model.blocks[1]) > 0 and grad_size(model.encoder_tau) > 0
    assert all(p.grad is None for m in (model.blocks[2], model.embed, model.head) for p in m.parameters())


def test_igo_alpha_one_leaves_intermediate_coders_without_gradient():
    shape = (5, 7)
    model = tiny(shape, igo=True)
    x_t, t, eps, intermediate = igo_batch(shape)
    loss, logs = dsm_loss(model, x_t, t, eps, intermediate=intermediate, alpha=1.0)
    assert math.isfinite(logs["loss_tau"]) and loss.item() == pytest.approx(logs["loss_t"])
    loss.backward()
    assert all(p.grad is None for m in (model.encoder_tau, model.norm_tau, model.decoder_tau) for p in m.parameters())
    assert grad_size(model.blocks[0]) > 0


def test_intermediate_without_igo_is_a_clear_error():
    shape = (4, 2, 2)
    model = tiny(shape)
    x_t, t, eps, intermediate = igo_batch(shape)
    with pytest.raises(ValueError, match="igo=False"):
        dsm_loss(model, x_t, t, eps, intermediate=intermediate, alpha=0.5)
    with pytest.raises(ValueError, match="igo=True"):
        model.forward_intermediate(intermediate[0], intermediate[1])
    with pytest.raises(ValueError, match="alpha"):
        dsm_loss(model, x_t, t, eps, alpha=1.5)


# ------------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("kwargs", [{}, {"igo": True, "igo_depth": 1, "dropout": 0.1, "fourier_scale": 4.0}])
def test_config_round_trip_loads_state_dict_strictly(kwargs):
    model = tiny((4, 2, 2), **kwargs)
    config = json.loads(json.dumps(model.config()))
    clone = ScoreViT(**config).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    x, t = torch.randn(2, 4, 2, 2), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(clone(x, t), model(x, t))


# ------------------------------------------------------------------------------------------------- errors
def test_bad_shapes_name_the_expected_shape():
    model = tiny((4, 2, 2))
    with pytest.raises(ValueError, match=r"\(B, 4, 2, 2\)"):
        model(torch.randn(3, 4, 2, 3), torch.rand(3))
    with pytest.raises(ValueError, match=r"\(B, 4, 2, 2\)"):
        model(torch.randn(4, 2, 2), torch.rand(4))
    with pytest.raises(ValueError, match=r"t of shape \(3,\)"):
        model(torch.randn(3, 4, 2, 2), torch.rand(2))
    with pytest.raises(ValueError, match=r"\(C, H, W\) or \(N, D\)"):
        ScoreViT((16,), **TINY)
    with pytest.raises(ValueError, match="igo_depth"):
        ScoreViT((4, 2, 2), igo=True, igo_depth=3, **TINY)


def test_skip_connection_is_the_gaussian_optimum_and_grows_with_x():
    torch.manual_seed(0)
    backbone = ScoreViT((3, 2, 2), width=8, depth=1, heads=1, mlp=8)
    model = Preconditioned(backbone, VPSDE(BETA_MIN, BETA_MAX), data_std=0.5).eval()
    torch.nn.init.zeros_(backbone.head.weight)
    torch.nn.init.zeros_(backbone.head.bias)
    x = torch.randn(4, 3, 2, 2)
    t = torch.tensor([1e-3, 0.3, 0.7, 1.0])
    log_a = -0.25 * t**2 * (20.0 - 0.1) - 0.5 * t * 0.1
    a2 = torch.exp(2 * log_a)
    sigma = (1 - a2).sqrt()
    expected = (sigma / (a2 * 0.25 + sigma**2)).reshape(-1, 1, 1, 1) * x
    with torch.no_grad():
        torch.testing.assert_close(model(x, t), expected)
        torch.testing.assert_close(model(10 * x, t), 10 * expected)  # a restoring force that scales with x
    assert set(model.state_dict()) == {f"backbone.{key}" for key in backbone.state_dict()}  # no state of its own
    with pytest.raises(ValueError, match="data_std"):
        Preconditioned(backbone, VPSDE(), data_std=-1.0)
