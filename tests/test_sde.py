"""Forward SDEs and reverse samplers, checked against closed forms: VP marginals, EM simulation of the
linear drift, exact scores of Gaussians and Gaussian mixtures, and a small score model trained by DSM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from sgilo.sde import (
    SDE,
    VPSDE,
    CatMapDrift,
    DriftSDE,
    LinearDrift,
    LotkaVolterraDrift,
    build_sde,
    probability_flow_sample,
    reverse_sde_sample,
    target_std,
)
from sgilo.theory import energy_distance

CLT_SIGMAS = 5.0  # tolerances are this many standard errors: a false alarm is a ~1e-6 event per check
MIXTURE_MEANS = torch.tensor([[-1.5, -1.5], [-1.5, 1.5], [1.5, -1.5], [1.5, 1.5]])
MIXTURE_STD = 0.3


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """These tensors are tiny: intra-op threads only add sync overhead, badly so on a busy shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def vp_moments(sde: VPSDE, x0: float, t: float) -> tuple[float, float]:
    mean, std = sde.marginal(torch.tensor([[x0]]), t)
    return float(mean), float(std)


def assert_moments(samples: Tensor, mean: float, std: float, bias: float = 0.0) -> None:
    """Empirical mean/std within CLT_SIGMAS standard errors (+ a known discretisation bias)."""
    n = samples.numel()
    assert abs(float(samples.mean()) - mean) < CLT_SIGMAS * std / math.sqrt(n) + bias
    assert abs(float(samples.std()) - std) < CLT_SIGMAS * std / math.sqrt(2 * n) + bias


def gaussian_score(sde: VPSDE, mu: Tensor, sigma0: float):
    """Exact score of p_t when data ~ N(mu, sigma0² I): p_t = N(m(t)mu, (m(t)²sigma0² + 1 − m(t)²) I)."""

    def score(x: Tensor, t: Tensor) -> Tensor:
        m = sde.log_mean_coeff(t).exp()[:, None]
        return -(x - m * mu) / (m**2 * sigma0**2 + 1 - m**2)

    return score


def mixture_score(sde: VPSDE, means: Tensor = MIXTURE_MEANS, sigma0: float = MIXTURE_STD):
    """Exact score of p_t for an equal-weight mixture of N(mean_k, sigma0² I)."""

    def score(x: Tensor, t: Tensor) -> Tensor:
        m = sde.log_mean_coeff(t).exp()[:, None, None]
        var = m**2 * sigma0**2 + 1 - m**2
        diff = x[:, None, :] - m * means[None]  # (B, K, 2)
        resp = torch.softmax(-(diff**2).sum(-1) / (2 * var[:, :, 0]), dim=1)
        return -(resp[..., None] * diff / var).sum(1)

    return score


def sample_mixture(n: int, generator: torch.Generator) -> Tensor:
    which = torch.randint(len(MIXTURE_MEANS), (n,), generator=generator)
    return MIXTURE_MEANS[which] + MIXTURE_STD * torch.randn(n, 2, generator=generator)


# --- 1. VP-SDE marginals -------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [0.01, 0.3, 1.0])
def test_vp_sample_marginal_matches_closed_form(t: float) -> None:
    sde = VPSDE()
    x0 = torch.full((20000, 1), 1.5)
    x_t, eps, std = sde.sample_marginal(x0, t, gen(1))
    mean, expected_std = vp_moments(sde, 1.5, t)
    assert_moments(x_t, mean, expected_std)
    torch.testing.assert_close(x_t, mean + std[:, None] * eps)
    assert std.shape == (20000,)


def test_vp_marginal_limits() -> None:
    sde = VPSDE()
    x0 = torch.tensor([[2.0, -1.0]])
    mean, std = sde.marginal(x0, 1e-7)
    torch.testing.assert_close(mean, x0, atol=1e-5, rtol=0)
    assert float(std) < 1e-3
    mean, std = sde.marginal(x0, 1.0)
    assert float(mean.abs().max()) < 0.02  # m(1) = exp(−5.025) ≈ 0.0066
    assert abs(float(std) - 1.0) < 1e-3
    torch.testing.assert_close(sde.marginal(x0, 0.4)[1] ** 2, 1 - (sde.log_mean_coeff(torch.tensor([0.4])).exp()) ** 2)


# --- 2. Euler–Maruyama simulation -------------------------------------------------------------------------


@pytest.mark.parametrize("x0_value", [-1.0, 2.0])
def test_linear_drift_simulation_reproduces_vp_marginals(x0_value: float) -> None:
    vp, sim = VPSDE(), DriftSDE(LinearDrift())
    n = 10000
    x0 = torch.full((2 * n, 1), x0_value)
    t = torch.cat([torch.full((n,), 0.3), torch.full((n,), 1.0)])  # per-item times in one batch
    trajectory = sim.simulate(x0, t, gen(2), dt=1e-3)
    for rows, t_value in ((slice(0, n), 0.3), (slice(n, 2 * n), 1.0)):
        # EM's stationary variance is 1/(1 − βΔ/4): ≤ 0.25 % in std at dt = 1e-3, hence the small bias allowance.
        assert_moments(trajectory.x_t[rows], *vp_moments(vp, x0_value, t_value), bias=5e-3)
        assert_moments(trajectory.intermediates[0.5][rows], *vp_moments(vp, x0_value, t_value / 2), bias=5e-3)


class ConstantVelocity(SDE):
    """dx = 1 dt, no noise: x_t − x0 is exactly the time integrated, so it shows where simulate lands."""

    def __init__(self) -> None:
        self.calls = 0

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return torch.ones_like(x)

    def diffusion(self, t: Tensor) -> Tensor:
        return torch.zeros_like(t)


def test_simulate_lands_exactly_on_t_and_kept_fractions() -> None:
    sde = ConstantVelocity()
    x0 = torch.zeros(3, 2)
    t = torch.tensor([0.537, 0.05, 0.3])
    trajectory = sde.simulate(x0, t, gen(0), dt=0.1, keep=(0.25, 0.5))
    torch.testing.assert_close(trajectory.x_t, t[:, None].expand(3, 2))
    torch.testing.assert_close(trajectory.intermediates[0.5], t[:, None].expand(3, 2) / 2)
    torch.testing.assert_close(trajectory.intermediates[0.25], t[:, None].expand(3, 2) / 4)
    # pieces [0, t/4], [t/4, t/2], [t/2, t] of the longest item: ceil(1.3425) + ceil(1.3425) + ceil(2.685) steps
    assert sde.calls == 2 + 2 + 3


def test_simulate_last_step_is_the_dsm_target() -> None:
    sde = DriftSDE(LinearDrift())
    x0 = torch.randn(5, 3, generator=gen(3))
    t = torch.full((5,), 0.005)  # t < dt: a single EM step from 0
    trajectory = sde.simulate(x0, t, gen(4), dt=1e-2, keep=())
    beta0 = sde.beta_min
    torch.testing.assert_close(trajectory.target_std, torch.full((5,), math.sqrt(beta0 * 0.005)))
    expected = x0 - 0.5 * beta0 * x0 * 0.005 + trajectory.target_std[:, None] * trajectory.target_eps
    torch.testing.assert_close(trajectory.x_t, expected)
    # several steps: the target std is g at the start of the last step times sqrt(step)
    t = torch.tensor([0.537, 0.3])
    std = sde.simulate(torch.zeros(2, 3), t, gen(5), dt=0.1).target_std
    h = t / 2 / torch.tensor([3.0, 2.0])  # second halves: ceil(2.685) = 3 and ceil(1.5) = 2 steps
    torch.testing.assert_close(std, sde.diffusion(t - h) * h.sqrt())


def test_drift_sde_sample_marginal_goes_through_simulation() -> None:
    sde = DriftSDE(CatMapDrift())
    assert sde.marginal(torch.zeros(2, 2), 0.5) is None
    x_t, eps, std = sde.sample_marginal(torch.zeros(2, 4), 0.5, gen(6))
    trajectory = sde.simulate(torch.zeros(2, 4), 0.5, gen(6), keep=())
    torch.testing.assert_close(x_t, trajectory.x_t)
    torch.testing.assert_close(eps, trajectory.target_eps)
    assert (std > 0).all()


def test_build_sde_and_target_std_match_how_targets_are_drawn() -> None:
    t = torch.tensor([0.537, 0.3, 0.004])
    vp = build_sde("vp", 0.1, 20.0, 0.05)
    torch.testing.assert_close(target_std(vp, t), vp.marginal(torch.zeros(3, 2), t)[1])
    for name in ("linear", "catmap", "lotka_volterra"):
        sde = build_sde(name, 0.1, 20.0, 0.05)
        assert isinstance(sde, DriftSDE) and sde.dt == 0.05
        for keep in ((), (0.5,), (0.25, 1.0)):
            simulated = sde.simulate(torch.zeros(3, 2), t, gen(0), keep=keep).target_std  # dt from build_sde
            torch.testing.assert_close(target_std(sde, t, keep=keep), simulated)
    with pytest.raises(ValueError, match="unknown SDE"):
        build_sde("ve")


# --- 3. Non-affine drifts -----------------------------------------------------------------------------------


def test_drift_formulas_on_known_points() -> None:
    beta = torch.tensor([[2.0]])
    x = torch.tensor([[0.3, 0.2, 0.7]])  # one pair and an odd trailing coordinate
    cat = CatMapDrift(strength=1.0, period=2.0)
    # cat image of (0.3, 0.2) is (0.5, 0.7): displacement (0.2, 0.5); trailing coordinate: linear only
    torch.testing.assert_close(cat(x, beta), 2.0 * (-0.5 * x + torch.tensor([[0.2, 0.5, 0.0]])))
    torch.testing.assert_close(cat(torch.zeros(1, 2), beta), torch.zeros(1, 2))  # (0, 0) is a fixed point
    lv = LotkaVolterraDrift(strength=1.0, bound=1e6)  # bound far away: plain Lotka–Volterra
    u, v = 0.3, 0.2
    expected = torch.tensor([[lv.a * u - lv.b * u * v, lv.d * u * v - lv.c * v, 0.0]])
    torch.testing.assert_close(lv(x, beta), 2.0 * (-0.5 * x + expected))


@pytest.mark.parametrize("drift", [CatMapDrift(), LotkaVolterraDrift()], ids=["catmap", "lotka_volterra"])
def test_non_affine_drifts_simulate_stably_and_deterministically(drift) -> None:
    x0 = torch.randn(4, 67, 8, 8, generator=gen(7))
    sde, linear = DriftSDE(drift), DriftSDE(LinearDrift())
    first = sde.simulate(x0, 1.0, gen(8))
    again = sde.simulate(x0, 1.0, gen(8))
    assert torch.isfinite(first.x_t).all() and torch.isfinite(first.intermediates[0.5]).all()
    assert first.intermediates[0.5].shape == x0.shape and first.target_eps.shape == x0.shape
    assert torch.equal(first.x_t, again.x_t) and torch.equal(first.intermediates[0.5], again.intermediates[0.5])
    same_noise_linear = linear.simulate(x0, 1.0, gen(8))
    assert float((first.x_t - same_noise_linear.x_t).abs().mean()) > 0.05
    assert float((first.intermediates[0.5] - same_noise_linear.intermediates[0.5]).abs().mean()) > 0.05
    assert float(first.x_t.std()) < 2.0  # p_T stays near the N(0, I) prior
    huge = sde.simulate(100 * x0, 1.0, gen(9))  # far-out inputs are contracted, not blown up
    assert torch.isfinite(huge.x_t).all() and float(huge.x_t.abs().max()) < 20


# --- 4. Reverse samplers with exact scores ----------------------------------------------------------------

MU, SIGMA0 = torch.tensor([1.0, -0.5]), 0.5


def test_reverse_sde_with_exact_gaussian_score_recovers_data_moments() -> None:
    sde = VPSDE()
    x = reverse_sde_sample(sde, gaussian_score(sde, MU, SIGMA0), (4000, 2), gen(10), steps=500)
    torch.testing.assert_close(x.mean(0), MU, atol=0.05, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((2,), SIGMA0), atol=0.05, rtol=0)


def test_probability_flow_with_exact_gaussian_score_recovers_data_moments() -> None:
    sde = VPSDE()
    x_T = sde.prior_sample((4000, 2), gen(11))
    x, nfe = probability_flow_sample(sde, gaussian_score(sde, MU, SIGMA0), x_T)
    torch.testing.assert_close(x.mean(0), MU, atol=0.05, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((2,), SIGMA0), atol=0.05, rtol=0)
    assert 10 < nfe < 2000


def test_exact_mixture_score_beats_wrong_score() -> None:
    sde = VPSDE()
    target = sample_mixture(2000, gen(12))

    def standard_normal_score(x: Tensor, t: Tensor) -> Tensor:
        return -x

    exact = reverse_sde_sample(sde, mixture_score(sde), (2000, 2), gen(13), steps=300)
    wrong = reverse_sde_sample(sde, standard_normal_score, (2000, 2), gen(13), steps=300)
    ode, _ = probability_flow_sample(
        sde, mixture_score(sde), sde.prior_sample((2000, 2), gen(14)), rtol=1e-4, atol=1e-4
    )
    assert energy_distance(exact, target) < 0.02
    assert energy_distance(ode, target) < 0.02
    assert energy_distance(wrong, target) > 10 * energy_distance(exact, target)


# --- 5. A trained score model --------------------------------------------------------------------------------


class TinyScoreNet(nn.Module):
    """ε-prediction MLP with Fourier time features; score = −ε̂/σ(t)."""

    def __init__(self, sde: VPSDE, width: int = 128) -> None:
        super().__init__()
        self.sde = sde
        self.register_buffer("frequencies", math.pi * 2.0 ** torch.arange(4))
        self.net = nn.Sequential(
            nn.Linear(2 + 8, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, width),
            nn.SiLU(),
            nn.Linear(width, 2),
        )

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        phase = t[:, None] * self.frequencies
        return self.net(torch.cat([x, phase.sin(), phase.cos()], dim=1))

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        return -self(x, t) / self.sde.marginal(x, t)[1][:, None]


def train_dsm(model: TinyScoreNet, steps: int, generator: torch.Generator) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    sde = model.sde
    for _ in range(steps):
        x0 = sample_mixture(256, generator)
        t = sde.eps + (sde.T - sde.eps) * torch.rand(256, generator=generator)
        x_t, eps, std = sde.sample_marginal(x0, t, generator)
        loss = ((std[:, None] * model.score(x_t, t) + eps) ** 2).sum(1).mean()  # ‖σ(t)·s(x_t, t) + ε‖²
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def sample_both_ways(sde: VPSDE, model: TinyScoreNet, seed: int) -> tuple[Tensor, Tensor]:
    sde_samples = reverse_sde_sample(sde, model.score, (1500, 2), gen(seed), steps=200)
    ode_samples, _ = probability_flow_sample(
        sde, model.score, sde.prior_sample((1500, 2), gen(seed + 1)), rtol=1e-3, atol=1e-3
    )
    return sde_samples, ode_samples


def test_dsm_trained_mlp_samples_the_mixture() -> None:
    torch.manual_seed(0)
    sde = VPSDE()
    model = TinyScoreNet(sde)
    target = sample_mixture(1500, gen(20))
    untrained = [energy_distance(s, target) for s in sample_both_ways(sde, model, 21)]
    train_dsm(model, 1500, gen(22))
    trained = [energy_distance(s, target) for s in sample_both_ways(sde, model, 21)]
    for before, after in zip(untrained, trained):
        assert after < 0.5 * before, (untrained, trained)
        assert after < 0.1, (untrained, trained)


# --- 6. Hot start -----------------------------------------------------------------------------------------------


def test_hot_start_returns_close_to_the_input() -> None:
    sde, t_start = VPSDE(), 0.01
    exact = mixture_score(sde)
    seen = []

    def recording_score(x: Tensor, t: Tensor) -> Tensor:
        seen.append(float(t.max()))
        return exact(x, t)

    x0 = sample_mixture(500, gen(30))
    x_t, _, _ = sde.sample_marginal(x0, t_start, gen(31))
    # no corrector: its Langevin step is set by snr, not by the time step, so it would re-sample within the mode
    hot = reverse_sde_sample(
        sde, recording_score, x0.shape, gen(32), steps=50, corrector_steps=0, x_T=x_t, t_start=t_start
    )
    assert max(seen) <= t_start + 1e-7 and len(seen) == 50  # only [eps, t_start] is run
    assert float((hot - x0).norm(dim=1).mean()) < 0.1
    cold = reverse_sde_sample(sde, exact, x0.shape, gen(32), steps=100)
    assert float((cold - x0).norm(dim=1).mean()) > 1.0  # a full run forgets x0


def test_hot_start_with_narrow_gaussian_score() -> None:
    sde, sigma0, t_start = VPSDE(), 0.05, 0.005
    score = gaussian_score(sde, MU, sigma0)
    x0 = MU + sigma0 * torch.randn(1000, 2, generator=gen(33))
    x_t, _, _ = sde.sample_marginal(x0, t_start, gen(34))
    hot = reverse_sde_sample(sde, score, x0.shape, gen(35), steps=50, corrector_steps=0, x_T=x_t, t_start=t_start)
    cold = reverse_sde_sample(sde, score, x0.shape, gen(35), steps=200)
    # posterior of x0 given x_t: per-coordinate RMS to x0 ≈ 0.034 here, against sqrt(2)·sigma0 ≈ 0.071 cold
    assert float((hot - x0).pow(2).mean().sqrt()) < 0.045
    assert float((cold - x0).pow(2).mean().sqrt()) > 0.06


def test_the_sampler_draws_its_steps_noise_from_the_source_it_is_given() -> None:
    """SGILO's hot start runs this loop with one noise stream per chain; the draws it makes are part of the result."""
    sde = VPSDE()
    score = gaussian_score(sde, MU, 0.3)
    x_t = torch.randn(6, 2, generator=gen(40))
    drawn: list[tuple[int, ...]] = []

    def counted(like: Tensor) -> Tensor:
        drawn.append(tuple(like.shape))
        return torch.randn(like.shape, generator=stream)

    stream = gen(41)
    hot = reverse_sde_sample(
        sde, score, x_t.shape, None, steps=6, corrector_steps=0, x_T=x_t, t_start=0.5, noise=counted
    )
    assert drawn == [(6, 2)] * 5  # one draw per step but the last, which returns the mean
    drawn.clear()
    stream = gen(41)
    reverse_sde_sample(sde, score, x_t.shape, None, steps=6, corrector_steps=1, x_T=x_t, t_start=0.5, noise=counted)
    assert len(drawn) == 6 + 5  # the corrector's draws come from the same source
    # A generator is the same as its noise source, and the result is the source's alone.
    from_generator = reverse_sde_sample(
        sde, score, x_t.shape, gen(41), steps=6, corrector_steps=0, x_T=x_t, t_start=0.5
    )
    assert torch.equal(from_generator, hot)
    with pytest.raises(ValueError, match="a generator or a noise source"):
        reverse_sde_sample(sde, score, x_t.shape, None, steps=2, x_T=x_t)
