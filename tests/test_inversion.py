"""CSGM/ILO on a tiny random generator: l1 projection, layer split, batching, constraints, best iterates."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch

from sgilo.config import load_params
from sgilo.inversion import (
    LayerPhase,
    Options,
    csgm_phases,
    decode,
    encode,
    geocross,
    ilo_radii,
    invert,
    project_l1_ball,
)
from sgilo.operators import OperatorSpec, build_operator
from sgilo.stylegan2 import Generator

from conftest import REPO


@pytest.fixture(scope="module")
def generator() -> Generator:
    torch.manual_seed(0)
    g = Generator(size=16, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=16).eval()
    g.fit_gaussian(2000, torch.Generator().manual_seed(0))
    return g


def _targets(generator: Generator, n: int, seed: int = 1) -> torch.Tensor:
    with torch.no_grad():
        z = torch.randn(n, generator.style_dim, generator=torch.Generator().manual_seed(seed))
        return (generator(z).clamp(-1, 1) + 1) / 2


# ----------------------------------------------------------------------------------------- l1 projection
def _projection_by_bisection(v: torch.Tensor, radius: float) -> torch.Tensor:
    """The KKT solution sign(v)·max(|v| − θ, 0) with θ ≥ 0 found by bisection on ‖·‖₁ = radius."""
    v = v.double()
    if v.abs().sum() <= radius:
        return v
    lo, hi = 0.0, float(v.abs().max())
    for _ in range(200):
        theta = (lo + hi) / 2
        if (v.abs() - theta).clamp_min(0).sum() > radius:
            lo = theta
        else:
            hi = theta
    return v.sign() * (v.abs() - hi).clamp_min(0)


@pytest.mark.parametrize("n", [1, 2, 7, 64])
def test_l1_projection_matches_brute_force(n):
    rng = torch.Generator().manual_seed(n)
    v = torch.randn(16, n, generator=rng, dtype=torch.float64) * 3
    radii = torch.rand(16, generator=rng, dtype=torch.float64) * 2 * v.abs().sum(1)  # some rows inside, some out
    projected = project_l1_ball(v, radii)
    for row, radius, out in zip(v, radii, projected):
        expected = _projection_by_bisection(row, float(radius))
        torch.testing.assert_close(out, expected, atol=1e-9, rtol=1e-9)
        assert out.abs().sum() <= radius * (1 + 1e-12)


def test_l1_projection_is_the_nearest_point_of_the_ball():
    rng = torch.Generator().manual_seed(3)
    v = torch.randn(1, 3, 4, 4, generator=rng, dtype=torch.float64)
    projected = project_l1_ball(v, 2.0)
    assert projected.shape == v.shape
    assert math.isclose(float(projected.abs().sum()), 2.0, rel_tol=1e-12)
    for _ in range(200):  # no feasible point is closer to v
        p = torch.randn_like(v, dtype=torch.float64)
        p = p * (2.0 * float(torch.rand(1, generator=rng)) / p.abs().sum())
        assert (p - v).norm() >= (projected - v).norm() - 1e-12


def test_l1_projection_leaves_points_inside_unchanged():
    v = torch.tensor([[0.1, -0.2, 0.3]])
    assert torch.equal(project_l1_ball(v, 1.0), v)


def test_geocross_is_zero_for_equal_rows_and_positive_otherwise():
    z = torch.randn(2, 1, 8).expand(2, 5, 8)
    assert torch.allclose(geocross(z), torch.zeros(2), atol=1e-3)
    assert (geocross(torch.randn(2, 5, 8)) > 0.1).all()


# ------------------------------------------------------------------------------------------ layer split
@pytest.mark.parametrize("layer", [1, 2])
def test_decode_of_encode_is_the_generator(generator, layer):
    w_plus = generator.mapping(torch.randn(3, generator.style_dim)).unsqueeze(1).expand(-1, generator.num_ws, -1)
    with torch.no_grad():
        h = encode(generator, layer, w_plus, None)
        c, size, _ = generator.layer_shape(layer)
        assert h.shape == (3, c + 3, size, size)
        torch.testing.assert_close(
            decode(generator, h, layer, w_plus), generator.synthesis(w_plus), atol=1e-5, rtol=1e-5
        )


# ------------------------------------------------------------------------------------------- ILO's radii
def _shapes_only(**architecture) -> Generator:
    with torch.device("meta"):  # layer shapes need no weights: config-f's would take seconds to initialise
        return Generator(**architecture)


@pytest.mark.parametrize(
    "profile",
    sorted({REPO / "params.yaml", *REPO.glob("profiles/*/params.yaml")}),
    ids=lambda p: str(p.relative_to(REPO)),
)
def test_ilo_radii_are_every_profiles_radii(profile: Path) -> None:
    """`sgilo reconstruct`'s default radii and each profile's invert.phases name the same numbers: the demo's 80, 160
    at layers 1, 2 of its 32² generator, ILO's 1000, 1000, 6000 at layers 1-3 of config-f."""
    params = load_params(profile)
    generator = _shapes_only(**dataclasses.asdict(params.generator.architecture))
    phases = params.invert.phases
    assert ilo_radii(generator, [phase.layer for phase in phases]) == [phase.radius for phase in phases]


def test_ilo_radii_elsewhere_keep_ilos_radius_per_entry() -> None:
    """Another generator's balls allow the deviation per entry of ILO's at the same resolution (16²'s beyond it)."""
    small = _shapes_only(
        size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=16
    )  # 19 channels with the skip
    assert ilo_radii(small, [0, 1, 2, 3]) == pytest.approx([None, 1000 / 515 * 19, 1000 / 515 * 19, 6000 / 515 * 19])
    config_f = _shapes_only(size=1024, style_dim=512, n_mlp=8, channel_multiplier=2, channel_max=512)
    assert ilo_radii(config_f, [4, 9]) == [
        6000 * 4,
        None,
    ]  # 515×32²: four times 16²'s entries; layer 9: none (invert refuses it)


# ---------------------------------------------------------------------------------------------- solvers
ILO = (LayerPhase(0, 4), LayerPhase(1, 3, radius=30.0), LayerPhase(2, 3, radius=60.0))


def test_batch_of_eight_equals_eight_batches_of_one(generator):
    x = _targets(generator, 8)
    seeds = list(range(100, 108))
    operator = build_operator(OperatorSpec("inpaint", 0.5), (3, 16, 16), seeds)
    batched = invert(generator, operator.physics.A, operator.measure(x), seeds, ILO)
    for i, seed in enumerate(seeds):
        single_op = build_operator(OperatorSpec("inpaint", 0.5), (3, 16, 16), [seed])
        single = invert(generator, single_op.physics.A, single_op.measure(x[i : i + 1]), [seed], ILO)
        torch.testing.assert_close(single.image[0], batched.image[i], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(single.latent[0], batched.latent[i], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(single.loss[0], batched.loss[i], atol=1e-6, rtol=1e-4)


def test_ilo_fits_measurements_and_keeps_the_best_iterate(generator):
    x = _targets(generator, 4, seed=5)
    seeds = [1, 2, 3, 4]
    operator = build_operator(OperatorSpec("inpaint", 0.5), (3, 16, 16), seeds)
    y = operator.measure(x)
    result = invert(generator, operator.physics.A, y, seeds, (LayerPhase(0, 30), LayerPhase(1, 30), LayerPhase(2, 30)))
    assert result.layer == 2 and result.steps == 90 and len(result.history) == 90
    assert result.loss.shape == (4,)
    assert float(result.loss.max()) < result.history[0] / 5
    # The reported loss is the loss of the returned image: the best iterate is kept together with its image.
    recomputed = (operator.physics.A((result.image + 1) / 2) - y).flatten(1).square().mean(1)
    torch.testing.assert_close(recomputed, result.loss, atol=1e-6, rtol=1e-4)
    assert not any(p.requires_grad for p in generator.parameters())


def test_l1_radius_bounds_the_deviation_from_the_previous_layer(generator):
    x = _targets(generator, 2, seed=7)
    seeds = [5, 6]
    start = invert(generator, lambda v: v, x, seeds, (LayerPhase(0, 0), LayerPhase(1, 0)))
    radius = 3.0
    constrained = invert(generator, lambda v: v, x, seeds, (LayerPhase(0, 0), LayerPhase(1, 20, radius=radius)))
    free = invert(generator, lambda v: v, x, seeds, (LayerPhase(0, 0), LayerPhase(1, 20)))
    deviation = (constrained.latent - start.latent).flatten(1).abs().sum(1)
    assert (deviation <= radius * (1 + 1e-4)).all()
    assert ((free.latent - start.latent).flatten(1).abs().sum(1) > radius).all()
    assert (free.loss <= constrained.loss + 1e-7).all()


def test_csgm_optimises_the_latent_only(generator):
    x = _targets(generator, 2, seed=9)
    result = invert(generator, lambda v: v, x, [1, 2], csgm_phases(20))
    assert result.latent is None and result.layer == 0
    torch.testing.assert_close(generator.synthesis(result.w_plus), result.image, atol=1e-5, rtol=1e-5)


def test_noise_optimisation_returns_per_image_noise(generator):
    x = _targets(generator, 2, seed=11)
    result = invert(
        generator, lambda v: v, x, [1, 2], (LayerPhase(0, 5), LayerPhase(1, 5)), Options(optimize_noise=True)
    )
    assert result.noise is not None and len(result.noise) == generator.num_noises
    assert all(n.shape[0] == 2 for n in result.noise)
    torch.testing.assert_close(
        decode(generator, result.latent, 1, result.w_plus, result.noise), result.image, atol=1e-5, rtol=1e-5
    )


def test_perceptual_term_is_used_when_weighted(generator):
    calls = []

    def perceptual(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        calls.append(a.shape)
        return (a - b).abs().flatten(1).mean(1)

    x = _targets(generator, 2, seed=13)
    invert(generator, lambda v: v, x, [1, 2], csgm_phases(3), Options(perceptual=0.5), perceptual=perceptual)
    assert calls == [(2, 3, 16, 16)] * 3


@pytest.mark.parametrize(
    ("task", "level", "term", "calls"), [("cs", 0.1, "mse", 0), ("inpaint", 0.5, "mse + 0.5·LPIPS", 10)]
)
def test_a_method_fits_a_non_image_measurement_by_mse_alone(generator, task, level, term, calls):
    """One perceptual weight for a profile's every task (the FFHQ profile's cs cells crashed on it): LPIPS where the
    measurement is an image, the pixel MSE where it is not, and the reconstruction says which."""
    from sgilo.methods import reconstruct

    seen = []

    def perceptual(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        seen.append(a.shape)
        return (a - b).abs().flatten(1).mean(1)

    x = _targets(generator, 2, seed=13)
    operator = build_operator(OperatorSpec(task, level), (3, 16, 16), [1, 2])
    result = reconstruct(
        "ilo",
        generator,
        operator.physics.A,
        operator.measure(x),
        [1, 2],
        ILO,
        Options(perceptual=0.5),
        perceptual=perceptual,
    )
    assert result.data_term == term and len(seen) == calls
    assert torch.isfinite(result.image).all()


@pytest.mark.parametrize(
    ("phases", "options", "message"),
    [
        ((LayerPhase(1, 2), LayerPhase(0, 2)), Options(), "forward"),
        ((LayerPhase(5, 2),), Options(), "layer"),
        ((LayerPhase(0, 2, radius=-1.0),), Options(), "radius"),
        ((), Options(), "at least one"),
        ((LayerPhase(0, 2),), Options(precision="fp8"), "precision"),
        ((LayerPhase(0, 2),), Options(perceptual=1.0), "perceptual"),
    ],
)
def test_bad_schedules_are_refused(generator, phases, options, message):
    x = _targets(generator, 1)
    with pytest.raises(ValueError, match=message):
        invert(generator, lambda v: v, x, [0], phases, options)


def test_one_seed_per_measurement(generator):
    with pytest.raises(ValueError, match="one seed per measurement"):
        invert(generator, lambda v: v, _targets(generator, 2), [0], csgm_phases(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
@pytest.mark.parametrize("optimize_noise", [False, True], ids=["stored-noise", "noise-optimised"])
def test_gpu_inversion_agrees_with_the_cpu(generator, precision, optimize_noise):
    """The noise-optimised case is the FFHQ profile's: its seeded noise maps must reach the GPU, and be the CPU's."""
    x = _targets(generator, 4, seed=21)
    seeds = [1, 2, 3, 4]
    cpu_op = build_operator(OperatorSpec("inpaint", 0.5), (3, 16, 16), seeds)
    cpu = invert(generator, cpu_op.physics.A, cpu_op.measure(x), seeds, ILO, Options(optimize_noise=optimize_noise))
    gpu_generator = Generator(**generator.config).cuda().eval()
    gpu_generator.load_state_dict(generator.state_dict())
    gpu_generator.w_gauss_mean.copy_(generator.w_gauss_mean)
    gpu_generator.w_gauss_std.copy_(generator.w_gauss_std)
    gpu_op = build_operator(OperatorSpec("inpaint", 0.5), (3, 16, 16), seeds, device="cuda")
    options = Options(precision=precision, optimize_noise=optimize_noise)
    gpu = invert(gpu_generator, gpu_op.physics.A, gpu_op.measure(x.cuda()), seeds, ILO, options)
    assert torch.equal(gpu_op.measure(x.cuda()).cpu(), cpu_op.measure(x))
    if precision == "fp32":
        torch.testing.assert_close(gpu.image.cpu(), cpu.image, atol=2e-3, rtol=0)
    else:
        # Adam's steps are nearly sign steps, so tf32/bf16 rounding sends the iterates elsewhere within these 10 steps
        # (docs/benchmarks.md, the GPU run): what must hold is the fit they reach.
        gpu_loss, cpu_loss = float(gpu.loss.mean()), float(cpu.loss.mean())
        assert gpu_loss <= 1.5 * cpu_loss, (
            f"{precision} on the GPU fits y to {gpu_loss:.5f}, fp32 on the CPU to {cpu_loss:.5f}"
        )


# -------------------------------------------------------------------------------------------- failures
class _PoisonAfter:
    """The identity, except that image `index` reads NaN (or Inf) from the `after`-th call on: a blow-up mid-run."""

    def __init__(self, index: int, after: int, value: float = math.nan) -> None:
        self.index, self.after, self.value, self.calls = index, after, value, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls < self.after:
            return x
        poison = torch.zeros(x.shape[0], *([1] * (x.ndim - 1)), dtype=x.dtype)
        poison[self.index] = self.value
        return x + poison


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_an_image_going_non_finite_is_marked_failed_and_the_others_are_untouched(generator, value):
    x = _targets(generator, 3, seed=2)
    seeds = [7, 8, 9]
    clean = invert(generator, lambda v: v, x, seeds, ILO)
    poisoned = invert(generator, _PoisonAfter(1, after=3, value=value), x, seeds, ILO)
    assert clean.failures == [None, None, None]
    assert poisoned.failures[0] is None and poisoned.failures[2] is None
    assert poisoned.failures[1] == "non-finite loss at step 3 of the layer-0 phase"
    for name in ("image", "latent", "w_plus", "loss"):
        assert torch.equal(getattr(poisoned, name)[[0, 2]], getattr(clean, name)[[0, 2]]), name
    assert all(math.isfinite(v) for v in poisoned.history)
