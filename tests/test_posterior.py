"""sgilo.posterior: the prior checkpoint, SGILO's Langevin move and the GNC flow against exact Gaussian scores,
chain independence, and end-to-end reconstruction through a tiny generator."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import pytest
import torch
from torch import nn

from sgilo import posterior as posterior_module
from sgilo.inversion import LayerPhase, Options, invert
from sgilo.io import CheckpointError, save_torch
from sgilo.latents import LatentScaler
from sgilo.operators import OperatorSpec, build_operator
from sgilo.posterior import (
    GNCStep,
    LatentPrior,
    Posterior,
    SGLDStep,
    chain_seeds,
    gnc,
    per_chain,
    score_guided_ilo,
    warm_phases,
)
from sgilo.score_model import Preconditioned, ScoreViT
from sgilo.sde import build_sde
from sgilo.stylegan2 import Generator

from conftest import demo_params


def sgilo_config(**changes):
    return replace(demo_params().evaluate.sgilo, **changes)


def gnc_config(**changes):
    return replace(demo_params().evaluate.gnc, **changes)


SHAPE = (2, 2, 2)  # C, H, W of the toy latent


class GaussianEps(nn.Module):
    """The exact ε-prediction for data N(μ, s²) under the VP-SDE: E[ε | x_t] = σ(x_t − aμ)/(a²s² + σ²)."""

    def __init__(self, mean: float, std: float, sde) -> None:
        super().__init__()
        self.mean, self.std, self.sde = mean, std, sde
        self.shape = SHAPE

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sigma = self.sde.marginal(torch.ones_like(x), t)
        sigma = sigma.reshape(-1, *([1] * (x.ndim - 1)))
        return sigma * (x - a * self.mean) / (a**2 * self.std**2 + sigma**2)


def _identity_scaler(channels: int) -> LatentScaler:
    return LatentScaler(-torch.ones(channels), torch.ones(channels))


def _gaussian_prior(mean: float, std: float) -> LatentPrior:
    sde = build_sde("vp")
    return LatentPrior(
        Preconditioned(GaussianEps(mean, std, sde), sde),
        _identity_scaler(SHAPE[0]),
        {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "dt": 0.01},
        layer=1,
        w_plus_mean=torch.zeros(1, 4, 8),
    )


def test_gnc_step_with_full_weight_is_tweedies_posterior_mean():
    prior = _gaussian_prior(mean=0.3, std=0.2)
    step = GNCStep(prior, gnc_config(weight=1.0, t_max=0.2, t_min=0.2))
    u = torch.linspace(-1, 1, 8).reshape(1, *SHAPE)
    a, sigma = prior.sde.marginal(torch.ones(1), torch.tensor([0.2]))
    smoothing2 = float(sigma**2 / a**2)  # u = x0 + (σ/a)·ε
    expected = (0.2**2 * u + smoothing2 * 0.3) / (0.2**2 + smoothing2)
    torch.testing.assert_close(step(u, 0, 1), expected, rtol=1e-5, atol=1e-6)


def test_gnc_schedule_anneals_geometrically_from_t_max_to_t_min():
    step = GNCStep(_gaussian_prior(0.0, 0.5), gnc_config(t_max=0.4, t_min=0.004))
    times = [step.time(k, 5) for k in range(5)]
    assert times[0] == pytest.approx(0.4) and times[-1] == pytest.approx(0.004)
    assert all(b / a == pytest.approx(0.1**0.5) for a, b in itertools.pairwise(times))


def test_hot_start_moves_sample_the_prior_from_a_far_start():
    """Perturb-then-denoise with the exact score is a Gibbs step on (x0, x_t0): the prior is its fixed point."""
    prior = _gaussian_prior(mean=0.3, std=0.2)
    config = sgilo_config(weight=1.0, temperature=0.0, t0=0.5, hot_steps=60)
    step = SGLDStep(prior, config, seeds=list(range(200)))
    u = torch.full((200, *SHAPE), -0.9)
    for k in range(15):
        u = step(u, k, 15)
    assert float(u.mean()) == pytest.approx(0.3, abs=0.03)
    assert float(u.std()) == pytest.approx(0.2, abs=0.03)


def test_chains_do_not_depend_on_the_batch_they_run_in():
    prior = _gaussian_prior(mean=0.0, std=0.5)
    config = sgilo_config(weight=0.5, temperature=1.0, t0=0.05, hot_steps=3)
    u = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(0))
    together = SGLDStep(prior, config, [11, 12, 13])(u, 0, 1)
    alone = torch.cat([SGLDStep(prior, config, [seed])(u[i : i + 1], 0, 1) for i, seed in enumerate([11, 12, 13])])
    torch.testing.assert_close(together, alone)
    assert not torch.allclose(together[0], SGLDStep(prior, config, [99])(u[:1], 0, 1)[0])


def test_tweedie_mode_without_noise_is_deterministic_and_contracts_to_the_mean():
    prior = _gaussian_prior(mean=0.0, std=0.1)
    step = SGLDStep(prior, sgilo_config(weight=1.0, temperature=0.0, t0=0.3, hot_steps=0), [1])
    u = torch.full((1, *SHAPE), 0.8)
    out = step(u, 0, 1)
    torch.testing.assert_close(out, step(u, 0, 1))
    assert 0 < float(out.mean()) < 0.8


def test_prior_checkpoint_round_trip(tmp_path):
    torch.manual_seed(0)
    sde = build_sde("vp")
    model = Preconditioned(ScoreViT((5, 2, 2), width=16, depth=1, heads=2, mlp=32), sde, data_std=0.3).eval()
    prior = LatentPrior(
        model,
        LatentScaler(torch.zeros(5), torch.ones(5) * 2),
        {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "dt": 0.01},
        layer=1,
        w_plus_mean=torch.randn(1, 4, 8),
    )
    prior.save(tmp_path / "model.pt")
    loaded = LatentPrior.load(tmp_path / "model.pt")
    x, t = torch.randn(3, 5, 2, 2), torch.rand(3)
    torch.testing.assert_close(loaded.score(x, t), prior.score(x, t))
    assert loaded.layer == 1 and loaded.shape == (5, 2, 2) and loaded.model.data_std == 0.3
    torch.testing.assert_close(loaded.scaler.maximum, prior.scaler.maximum)
    save_torch({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="other.pt.*score stage's model.pt"):
        LatentPrior.load(tmp_path / "other.pt")


def test_a_format_1_checkpoint_loads_to_the_same_scores_and_a_mismatched_one_is_refused(tmp_path):
    """Format 1 kept the skip's data std and the schedule in the ScoreViT's config (before `Preconditioned`)."""
    torch.manual_seed(0)
    sde_config = {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "dt": 0.01}
    backbone = ScoreViT((5, 2, 2), width=16, depth=1, heads=2, mlp=32)
    current = LatentPrior(
        # as loaded: without gradients (torch's kernels for it differ from those with them in the last bits)
        Preconditioned(backbone, build_sde(**sde_config), data_std=0.3).eval().requires_grad_(False),
        LatentScaler(torch.zeros(5), torch.ones(5) * 2),
        sde_config,
        layer=1,
        w_plus_mean=torch.randn(1, 4, 8),
    )
    old = {
        "format": "sgilo.score/1",
        "model": backbone.state_dict(),
        "config": {**backbone.config(), "skip_data_std": 0.3, "beta_min": 0.1, "beta_max": 20.0},
        "scaler": current.scaler.state_dict(),
        "sde": sde_config,
        "layer": 1,
        "w_plus_mean": current.w_plus_mean,
        "tau_fraction": 0.5,
    }
    save_torch(old, tmp_path / "v1.pt")
    loaded = LatentPrior.load(tmp_path / "v1.pt")
    x, t = torch.randn(3, 5, 2, 2), torch.rand(3)
    with torch.no_grad():
        assert torch.equal(loaded.score(x, t), current.score(x, t))
    save_torch({**old, "config": {**old["config"], "beta_max": 10.0}}, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="mismatch.pt.*rerun the score stage"):
        LatentPrior.load(tmp_path / "mismatch.pt")
    save_torch({**old, "format": "sgilo.score/9"}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="future.pt.*'sgilo.score/9'"):
        LatentPrior.load(tmp_path / "future.pt")


# ------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    generator = Generator(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=16).eval()
    generator.fit_gaussian(500, torch.Generator().manual_seed(0))
    channels = 16 + 3  # features + RGB skip entering block 1 (4×4)
    sde = build_sde("vp")
    backbone = ScoreViT((channels, 4, 4), width=16, depth=1, heads=2, mlp=32)
    model = Preconditioned(backbone, sde, data_std=0.3).eval().requires_grad_(False)
    prior = LatentPrior(
        model,
        LatentScaler(-torch.ones(channels) * 2, torch.ones(channels) * 2),
        {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "dt": 0.01},
        layer=1,
        w_plus_mean=torch.zeros(1, generator.num_ws, 16),
    )
    truth = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    spec = OperatorSpec("inpaint", 0.3)
    seeds = [5, 6]
    y = build_operator(spec, (3, 16, 16), seeds).measure(truth)
    return generator, prior, spec, seeds, y


PHASES = [LayerPhase(0, 3), LayerPhase(1, 3, radius=10.0)]


def test_sgilo_returns_chains_their_mean_and_spread(tiny):
    generator, prior, spec, seeds, y = tiny
    config = sgilo_config(steps=4, chains=3, temperature=1.0)
    operator = build_operator(spec, (3, 16, 16), seeds)
    post = score_guided_ilo(generator, operator.physics.A, y, seeds, prior, config, PHASES)
    assert isinstance(post, Posterior)
    assert (
        post.samples.shape == (2, 3, 3, 16, 16) and post.latents.shape == (2, 3, 19, 4, 4) and post.loss.shape == (2, 3)
    )
    torch.testing.assert_close(post.mean, post.samples.mean(1))
    assert float(post.std.min()) >= 0 and float(post.std.mean()) > 0
    assert post.steps == 3 + 4
    again = score_guided_ilo(generator, operator.physics.A, y, seeds, prior, config, PHASES)
    torch.testing.assert_close(again.samples, post.samples)


def test_shared_warm_start_branches_chains_from_one_inversion(tiny):
    generator, prior, spec, seeds, y = tiny
    forward = build_operator(spec, (3, 16, 16), seeds).physics.A
    deterministic = {"steps": 2, "chains": 2, "temperature": 0.0, "hot_steps": 0}
    shared = score_guided_ilo(
        generator, forward, y, seeds, prior, sgilo_config(**deterministic, warm_start="shared"), PHASES
    )
    torch.testing.assert_close(shared.samples[:, 0], shared.samples[:, 1])
    dispersed = score_guided_ilo(
        generator, forward, y, seeds, prior, sgilo_config(**deterministic, warm_start="per_chain"), PHASES
    )
    assert not torch.allclose(dispersed.samples[:, 0], dispersed.samples[:, 1])


def test_gnc_is_one_deterministic_chain(tiny):
    generator, prior, spec, seeds, y = tiny
    operator = build_operator(spec, (3, 16, 16), seeds)
    post = gnc(generator, operator.physics.A, y, seeds, prior, gnc_config(steps=4), PHASES)
    assert post.samples.shape == (2, 1, 3, 16, 16)
    assert float(post.std.abs().max()) == 0.0
    torch.testing.assert_close(
        gnc(generator, operator.physics.A, y, seeds, prior, gnc_config(steps=4), PHASES).mean, post.mean
    )


def test_a_latent_step_changes_the_result_and_must_match_a_phase(tiny):
    generator, prior, spec, seeds, y = tiny
    operator = build_operator(spec, (3, 16, 16), seeds)
    phases = [LayerPhase(0, 2), LayerPhase(1, 3)]
    plain = invert(generator, operator.physics.A, y, seeds, phases, Options(keep="last"))
    stepped = invert(
        generator,
        operator.physics.A,
        y,
        seeds,
        phases,
        Options(keep="last"),
        latent_step=GNCStep(prior, gnc_config(weight=1.0)),
    )
    assert not torch.allclose(plain.latent, stepped.latent)
    with pytest.raises(ValueError, match="no phase runs there"):
        invert(generator, operator.physics.A, y, seeds, [LayerPhase(0, 2)], latent_step=GNCStep(prior, gnc_config()))
    with pytest.raises(ValueError, match="keep"):
        invert(generator, operator.physics.A, y, seeds, phases, Options(keep="mean"))


def test_continuing_from_a_result_equals_one_run(tiny):
    generator, _, spec, seeds, y = tiny
    forward = build_operator(spec, (3, 16, 16), seeds).physics.A
    whole = invert(generator, forward, y, seeds, [LayerPhase(0, 3), LayerPhase(1, 3, radius=10.0)])
    first = invert(generator, forward, y, seeds, [LayerPhase(0, 3)])
    rest = invert(generator, forward, y, seeds, [LayerPhase(1, 3, radius=10.0)], init=first)
    torch.testing.assert_close(rest.latent, whole.latent)
    torch.testing.assert_close(rest.image, whole.image)
    assert rest.steps == whole.steps == 6
    twice = first.repeat_interleave(2)
    assert twice.z.shape[0] == 4 and torch.equal(twice.z[0], twice.z[1]) and torch.equal(twice.z[2], first.z[1])
    with pytest.raises(ValueError, match="cannot start before"):
        invert(generator, forward, y, seeds, [LayerPhase(0, 3)], init=rest)


def test_per_chain_applies_each_images_operator_to_its_chains(tiny):
    _, _, spec, seeds, _ = tiny
    operator = build_operator(spec, (3, 16, 16), seeds)
    x = torch.rand(2 * 3, 3, 16, 16)
    repeated = build_operator(spec, (3, 16, 16), [s for s in seeds for _ in range(3)])
    torch.testing.assert_close(per_chain(operator.physics.A, 3)(x), repeated.physics.A(x))


def test_warm_start_and_chain_layout():
    assert warm_phases([LayerPhase(0, 5), LayerPhase(1, 4), LayerPhase(2, 3)], 2) == [
        LayerPhase(0, 5),
        LayerPhase(1, 4),
    ]
    with pytest.raises(ValueError, match="below the prior's layer"):
        warm_phases([LayerPhase(2, 3)], 2)
    seeds = chain_seeds([1, 2], 3)
    assert len(seeds) == len(set(seeds)) == 6 and seeds[:3] == chain_seeds([1], 3)


def test_a_chain_going_non_finite_fails_its_measurement_only(tiny, monkeypatch):
    generator, prior, spec, seeds, y = tiny
    forward = build_operator(spec, (3, 16, 16), seeds).physics.A
    config = sgilo_config(steps=3, chains=2, temperature=1.0)
    clean = score_guided_ilo(generator, forward, y, seeds, prior, config, PHASES)

    class Exploding(posterior_module.SGLDStep):
        def __call__(self, h, step, steps, grad=None):
            out = super().__call__(h, step, steps, grad)
            if step == 1:
                out[3] = math.inf  # measurement 1, chain 1
            return out

    monkeypatch.setattr(posterior_module, "SGLDStep", Exploding)
    broken = score_guided_ilo(generator, forward, y, seeds, prior, config, PHASES)
    assert clean.failures == [None, None]
    assert broken.failures == [None, "chain 1: non-finite latent after the prior's step 2 at layer 1"]
    assert torch.equal(broken.samples[0], clean.samples[0]) and torch.equal(broken.mean[0], clean.mean[0])


# ------------------------------------------------------------------ SGILO against an exact linear-Gaussian posterior
class LinearGenerator(nn.Module):
    """A generator with the layer split `invert` uses, linear from layer 1 on: h = 0.3·w⁺[0, :4] enters block 1 as
    (1 feature channel + 3 skip channels) at 1×1, and the 2×2 RGB image is W·h. With a Gaussian prior on h and a linear
    measurement with Gaussian noise, the posterior of h is Gaussian in closed form."""

    num_ws, style_dim, num_blocks, size, gaussian_fitted = 2, 4, 2, 2, True

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # (12, 4)
        self.w_gauss_mean, self.w_gauss_std = torch.zeros(4), torch.ones(4)

    def synthesis_features(self, w_plus, layer, noise=None):
        h = 0.3 * w_plus[:, 0, :4]
        return h[:, :1].reshape(-1, 1, 1, 1), h[:, 1:].reshape(-1, 3, 1, 1)

    def synthesis_from(self, layer, features, skip, w_plus, noise=None):
        h = torch.cat([features, skip], 1).flatten(1)
        return (h @ self.weight.T).reshape(-1, 3, 2, 2)

    def synthesis(self, w_plus, noise=None):
        return self.synthesis_from(1, *self.synthesis_features(w_plus, 1), w_plus)


class FullGaussianEps(nn.Module):
    """Exact ε-prediction for data N(m, Σ) in the score model's coordinates: σ·(a²Σ + σ²I)⁻¹(x − a·m)."""

    def __init__(self, mean: torch.Tensor, cov: torch.Tensor, sde, score_scale: float = 1.0) -> None:
        super().__init__()
        self.mean, self.cov, self.sde, self.score_scale = mean, cov, sde, score_scale
        self.shape = (4, 1, 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, sigma = self.sde.marginal(torch.ones(1), t[:1])
        a, sigma = float(a), float(sigma)
        precision = torch.linalg.inv(a**2 * self.cov + sigma**2 * torch.eye(4, dtype=torch.float64))
        eps = sigma * (x.flatten(1).double() - a * self.mean) @ precision.T
        return (self.score_scale * eps).to(x.dtype).reshape(x.shape)


def _linear_gaussian_problem(score_scale: float = 1.0):
    """The linear model, its prior, one measurement, and the exact posterior of u (the prior's coordinates) at T = 1."""
    g = torch.Generator().manual_seed(7)
    weight = 0.1 * torch.randn(12, 4, generator=g)
    A = torch.randn(3, 12, generator=g, dtype=torch.float64)
    basis = torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64))[0]
    cov = basis @ torch.diag(torch.tensor([0.08, 0.12, 0.2, 0.3], dtype=torch.float64)) @ basis.T
    mean = torch.tensor([0.2, -0.3, 0.1, 0.4], dtype=torch.float64)
    sde = build_sde("vp")
    scaler = LatentScaler(torch.tensor([-1.0, -2.0, 0.0, -3.0]), torch.tensor([1.0, 1.0, 4.0, 1.0]))
    prior = LatentPrior(
        Preconditioned(FullGaussianEps(mean, cov, sde, score_scale), sde),
        scaler,
        {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "dt": 0.01},
        layer=1,
        w_plus_mean=torch.zeros(1, 2, 4),
    )
    generator = LinearGenerator(weight)
    sigma_y = 0.3
    # y = A·(image + 1)/2 with image = W·h and h = J·u + c: affine in u, y = B·u + c_y
    jac = (scaler.maximum - scaler.minimum).double() / 2
    shift = jac + scaler.minimum.double()
    B = A @ weight.double() @ torch.diag(jac) / 2
    c_y = A @ (weight.double() @ shift + 1) / 2
    u_true = mean + torch.linalg.cholesky(cov) @ torch.randn(4, generator=g, dtype=torch.float64)
    y = B @ u_true + c_y + sigma_y * torch.randn(3, generator=g, dtype=torch.float64)
    return generator, prior, A, y, sigma_y, B, c_y, mean, cov


def _exact_posterior(B, c_y, y, sigma_y, mean, cov, smoothing2, temperature):
    """N(μ, T·P⁻¹) with P = (Σ + s²I)⁻¹ + BᵀB/σ_y²: the posterior under the prior smoothed to t0, tempered."""
    prior_precision = torch.linalg.inv(cov + smoothing2 * torch.eye(4, dtype=torch.float64))
    precision = prior_precision + B.T @ B / sigma_y**2
    post_cov = torch.linalg.inv(precision)
    post_mean = post_cov @ (prior_precision @ mean + B.T @ (y - c_y) / sigma_y**2)
    return post_mean, temperature * post_cov


def _sgilo_against_exact(
    temperature: float = 1.0,
    score_scale: float = 1.0,
    noise_scale: float = 1.0,
    measurements: int = 500,
    chains: int = 4,
    monkeypatch=None,
):
    """Run SGILO's sampler (the pipeline's `sgilo` → `invert` → `SGLDStep` path) on the linear model with the exact prior
    score; return the chains' latents in u, the exact posterior, the pixel std maps and the exact pixel std."""
    generator, prior, A, y, sigma_y, B, c_y, mean, cov = _linear_gaussian_problem(score_scale)
    config = sgilo_config(
        steps=600,
        weight=0.1,
        temperature=temperature,
        t0=0.05,
        hot_steps=0,
        data_step="langevin",
        measurement_std=sigma_y,
        chains=chains,
    )
    if noise_scale != 1.0:
        original = posterior_module.SGLDStep.__init__

        def louder(self, *args, **kwargs):
            original(self, *args, **kwargs)
            self.noise_std *= noise_scale

        monkeypatch.setattr(posterior_module.SGLDStep, "__init__", louder)
    forward = lambda x: x.flatten(1) @ A.float().T  # noqa: E731  (an operator on [0, 1] images)
    ys = y.float().expand(measurements, 3)
    result = score_guided_ilo(
        generator, forward, ys, list(range(measurements)), prior, config, [LayerPhase(0, 5, None, 0.05)]
    )
    u = prior.scaler.normalize(result.latents.reshape(-1, 4, 1, 1)).flatten(1).double()
    s2 = posterior_module.smoothing_std(prior, config.t0) ** 2
    post_mean, post_cov = _exact_posterior(B, c_y, y, sigma_y, mean, cov, s2, temperature)
    # pixel std on the [0, 1] scale: image01 = (W·J·u + …)/2
    jac = torch.diag((prior.scaler.maximum - prior.scaler.minimum).double() / 2)
    pixels = generator.weight.double() @ jac / 2
    pixel_std = (pixels @ post_cov @ pixels.T).diagonal().sqrt()
    return u, post_mean, post_cov, result, pixel_std


def _whitened_errors(u, post_mean, post_cov):
    """(largest |mean error| in Monte-Carlo standard errors, largest |eigenvalue − 1| of the whitened sample covariance)."""
    n = u.shape[0]
    root = torch.linalg.cholesky(post_cov)
    z = torch.linalg.solve_triangular(root, (u - post_mean).T, upper=False).T  # N(0, I) if the chains are right
    mean_error = float(z.mean(0).abs().max() * math.sqrt(n))
    eig = torch.linalg.eigvalsh(torch.cov(z.T))
    return mean_error, float((eig - 1).abs().max())


@pytest.mark.parametrize("temperature, measurements", [(1.0, 500), (0.5, 200)])
def test_sgilo_langevin_chains_sample_the_exact_posterior(temperature, measurements):
    """Langevin data step, Tweedie prior step with the exact score: the chains' mean and covariance are the closed-form
    posterior's (tempered by T, prior smoothed to t0) within Monte-Carlo error; the step's O(η) bias is below it here."""
    u, post_mean, post_cov, result, pixel_std = _sgilo_against_exact(temperature, measurements=measurements)
    mean_error, cov_error = _whitened_errors(u, post_mean, post_cov)
    assert mean_error < 4.0, f"chains' mean is {mean_error:.1f} standard errors off the posterior mean"
    assert cov_error < 0.15, f"chains' covariance is off the posterior's by {cov_error:.2f} (whitened eigenvalue)"
    assert float((result.samples.abs() >= 1).float().mean()) < 1e-3  # no clamping: the images stay linear in u
    # The std map: per pixel, the spread over each measurement's 4 chains, averaged in variance over measurements.
    spread = result.std.double().square().mean(0).flatten().sqrt()
    assert (spread / pixel_std - 1).abs().max() < 0.08, (spread / pixel_std).tolist()


@pytest.mark.parametrize("fault", ["score ×2", "noise ×1.3", "data step without the scaler's chain rule"])
def test_the_exact_posterior_check_fails_a_wrong_score_or_noise(fault, monkeypatch):
    """The same check as above, on a sampler with one planted fault: it must fail."""
    if fault == "data step without the scaler's chain rule":
        monkeypatch.setattr(LatentScaler, "jacobian", lambda self, x: torch.ones(1, x.shape[1], 1, 1))
    u, post_mean, post_cov, _, _ = _sgilo_against_exact(
        score_scale=2.0 if fault == "score ×2" else 1.0,
        noise_scale=1.3 if fault == "noise ×1.3" else 1.0,
        measurements=150,
        monkeypatch=monkeypatch,
    )
    mean_error, cov_error = _whitened_errors(u, post_mean, post_cov)
    assert mean_error > 4.0 or cov_error > 0.15, (fault, mean_error, cov_error)


def test_sgld_noise_follows_step_size_and_temperature():
    """noise = sqrt(2ηT), η = weight·(σ/a)²(t0); the old default noise 0.01 is T = 0.25 at weight 0.1, t0 0.01."""
    prior = _gaussian_prior(0.0, 0.5)
    a, sigma = prior.sde.marginal(torch.ones(1), torch.tensor([0.01]))
    step = SGLDStep(prior, sgilo_config(weight=0.1, temperature=0.25, t0=0.01), [0])
    assert step.step_size == pytest.approx(0.1 * float(sigma / a) ** 2, rel=1e-6)
    assert step.noise_std == pytest.approx(math.sqrt(2 * step.step_size * 0.25), rel=1e-9)
    assert step.noise_std == pytest.approx(0.01, rel=0.002)
    assert SGLDStep(prior, sgilo_config(weight=0.3, temperature=0.25, t0=0.01), [0]).noise_std == pytest.approx(
        step.noise_std * math.sqrt(3)
    )


def test_langevin_data_step_needs_a_measurement_std():
    with pytest.raises(ValueError, match="measurement_std > 0"):
        sgilo_config(data_step="langevin")
