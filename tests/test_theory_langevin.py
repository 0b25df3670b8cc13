"""SGLD on random expansive ReLU generators (SGILO, Theorem 3.1): the generator as configured, the loss's calculus,
the spurious point −ρ_d z* of Hand & Voroninski's landscape, the sampler, and the stage's outputs."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from sgilo.config import load_params
from sgilo.loader import ConfigError
from sgilo.stages.theory_langevin import problem_for
from sgilo.theory import ReLUInversion, expansive_widths, langevin, spurious_scale

from conftest import run_stage, write_params


def _problem(latent: int = 3, depth: int = 2, expansion: float = 6.0, seed: int = 0) -> ReLUInversion:
    return ReLUInversion.random(
        expansive_widths(latent, depth, expansion), 8 * latent, 0.0, np.random.default_rng(seed)
    )


def test_the_generator_is_expansive_as_configured():
    assert expansive_widths(4, 3, 6.0) == [4, 24, 144, 864]
    problem = _problem(latent=5, depth=3, expansion=2.5)
    widths = problem.widths
    assert widths[0] == 5 and len(widths) == 4 and all(b >= 2.5 * a for a, b in itertools.pairwise(widths))
    assert [w.shape for w in problem.weights] == [(b, a) for a, b in itertools.pairwise(widths)]
    assert problem.sensing.shape == (40, widths[-1]) and np.linalg.norm(problem.z_star) == pytest.approx(1.0)


def test_spurious_scale_follows_huang_et_al():
    assert spurious_scale(1) == pytest.approx(0.0, abs=1e-12)
    assert spurious_scale(2) == pytest.approx(1 / math.pi)
    scales = [spurious_scale(d) for d in range(1, 12)]
    assert all(a < b < 1 for a, b in itertools.pairwise(scales))


def test_gradient_and_hessian_match_finite_differences():
    problem, rng = _problem(), np.random.default_rng(1)
    z, h = rng.normal(size=(4, 3)), 1e-6
    eye = np.eye(3)
    numeric = np.stack(
        [(problem.loss(z + h * eye[i]) - problem.loss(z - h * eye[i])) / (2 * h) for i in range(3)], axis=1
    )
    np.testing.assert_allclose(problem.gradient(z), numeric, rtol=1e-5, atol=1e-7)
    # at z* the loss is locally quadratic (the ReLU pattern is fixed nearby), so the gradient's differences are exact
    at = problem.z_star[None]
    hessian = np.stack(
        [(problem.gradient(at + h * eye[i]) - problem.gradient(at - h * eye[i]))[0] / (2 * h) for i in range(3)]
    )
    np.testing.assert_allclose(problem.hessian_at_truth(), hessian, rtol=1e-5, atol=1e-6)
    assert np.allclose(problem.gradient(at), 0.0) and problem.loss(at)[0] == pytest.approx(0.0)


def test_the_radial_gradient_vanishes_near_minus_rho_z_star_on_a_wide_network():
    """Hand & Voroninski's expected landscape: along −s·z* the gradient's z* component changes sign at s = ρ_d."""
    problem = _problem(latent=2, depth=2, expansion=60.0, seed=4)
    s = np.linspace(0.05, 1.0, 400)
    radial = problem.gradient(-s[:, None] * problem.z_star) @ -problem.z_star
    crossing = s[np.flatnonzero(np.diff(np.sign(radial)))[0]]
    assert crossing == pytest.approx(spurious_scale(2), abs=0.08)


def test_langevin_without_noise_is_gradient_descent_and_flips_lower_the_loss():
    problem, rng = _problem(), np.random.default_rng(2)
    start = rng.normal(size=(2, 3))
    trace = langevin(problem, start, 5, 0.05, np.full(2, np.inf), np.zeros(2, bool), rng, record_every=5)
    z = start.copy()
    for _ in range(5):
        z = z - 0.05 * problem.gradient(z)
    np.testing.assert_allclose(trace["final"], z)
    assert trace["iterations"].tolist() == [0, 5] and trace["to_truth"].shape == (2, 2)
    # from −z*, a sign flip lands on z* at once: f(z*) = 0
    flipped = langevin(
        problem, -problem.z_star[None], 1, 1e-9, np.array([np.inf]), np.array([True]), rng, record_every=1
    )
    assert flipped["to_truth"][-1, 0] == pytest.approx(0.0, abs=1e-6)


def test_sgld_spread_at_stationarity_follows_beta():
    problem, rng = _problem(latent=2), np.random.default_rng(3)
    betas = np.repeat([200.0, 3200.0], 64)
    trace = langevin(
        problem, np.repeat(problem.z_star[None], len(betas), 0), 400, 0.05, betas, np.zeros(len(betas), bool), rng
    )
    settled = trace["to_truth"][20:]
    loose, tight = np.sqrt(np.mean(settled[:, :64] ** 2)), np.sqrt(np.mean(settled[:, 64:] ** 2))
    assert loose / tight == pytest.approx(4.0, rel=0.25)  # spread ∝ β^(−1/2)


def test_stage_writes_the_figure_and_checks_the_claim(tmp_path):
    params = write_params(tmp_path / "params.yaml")
    run_stage(
        "theory_langevin",
        "--params",
        str(params),
        "--json",
        str(tmp_path / "theory" / "langevin.json"),
        "--figure",
        str(tmp_path / "theory" / "langevin.png"),
        cwd=tmp_path,
    )
    result = json.loads((tmp_path / "theory" / "langevin.json").read_text())
    assert (tmp_path / "theory" / "langevin.png").stat().st_size > 10_000
    assert [(m["depth"], m["latent"]) for m in result["mixing"]] == [(2, 2), (2, 3)]
    assert set(result["mixing"][0]["groups"]) == {
        "gd/random",
        "gd_flip/random",
        "sgld/random",
        "gd/spurious",
        "sgld/spurious",
    }
    assert len(result["spread"]["measured"]) == 2 and set(result["checks"]) and isinstance(result["claim_holds"], bool)
    loaded = load_params(params)
    config = loaded.theory_langevin
    # The verdict's numbers, recomputed here: the problem's sizes, ρ_2 = 1/π in closed form, and the Hessian at z* from
    # second differences of the loss through this test's own forward pass (not ReLUInversion.hessian_at_truth).
    for m in result["mixing"]:
        k = m["latent"]
        assert m["widths"] == [
            k,
            math.ceil(config.expansion * k),
            math.ceil(config.expansion * math.ceil(config.expansion * k)),
        ]
        assert (
            m["measurements"] == math.ceil(config.measurements_per_latent * k)
            and m["beta"] == config.beta_per_latent * k
        )
        assert m["rho"] == pytest.approx(1 / math.pi)  # Huang et al.'s ρ_2
        eigenvalues = np.linalg.eigvalsh(
            _hessian_by_differences(problem_for(config, loaded.seed, m["depth"], k, "mixing"))
        )
        assert m["hessian_eigenvalues"] == pytest.approx([eigenvalues.min(), eigenvalues.max()], rel=1e-4)
    spread = result["spread"]
    betas = np.array(config.spread_betas_per_latent) * spread["latent"]
    hessian = _hessian_by_differences(problem_for(config, loaded.seed, spread["depth"], spread["latent"], "spread"))
    assert spread["betas"] == pytest.approx(betas)
    assert spread["predicted"] == pytest.approx(np.sqrt(np.trace(np.linalg.inv(hessian)) / betas), rel=1e-4)  # Laplace
    log_betas, log_measured = np.log(betas), np.log(spread["measured"])
    slope = np.cov(log_betas, log_measured)[0, 1] / np.var(log_betas, ddof=1)  # least squares, by hand
    assert spread["slope"] == pytest.approx(slope)
    growth = {}
    for depth in sorted({m["depth"] for m in result["mixing"]}):
        runs = [m for m in result["mixing"] if m["depth"] == depth]
        times = [m["groups"]["sgld/random"]["median_hitting_time"] for m in runs]
        growth[str(depth)] = {
            "latents": [m["latent"] for m in runs],
            "hitting_times": times,
            "finite": None not in times,
        }
        assert {key: result["growth"][str(depth)][key] for key in growth[str(depth)]} == growth[str(depth)]
    # ... and the verdict follows from them by the stated rule
    ratio = spread["measured"][-1] / spread["predicted"][-1]
    sgld_reaches = min(
        m["groups"][f"sgld/{start}"]["reached"] for m in result["mixing"] for start in ("random", "spurious")
    )
    checks = {
        "sgld_reaches_truth_from_every_start": sgld_reaches >= 0.9,
        "hitting_time_finite_for_every_k": all(g["finite"] for g in growth.values()),
        "spread_scales_as_beta_to_minus_half": abs(slope + 0.5) <= 0.1,
        "spread_matches_laplace_at_largest_beta": 0.8 <= ratio <= 1.25,
    }
    assert result["checks"] == checks and result["claim_holds"] == all(checks.values())
    assert f"{ratio:.2f}× the Laplace prediction" in result["note"] and f"β^{slope:.2f}" in result["note"]
    assert result["note"].endswith(".") and ("Agrees" in result["note"]) == result["claim_holds"]
    assert all((name in result["note"]) != ok for name, ok in checks.items())  # the failed checks are named


def _hessian_by_differences(problem: ReLUInversion, step: float = 1e-4) -> np.ndarray:
    """∇²f at z* from central second differences of f(z) = 2^(d−1) ‖A ReLU(W_d ⋯ ReLU(W_1 z)) − y‖², computed here; f is
    quadratic near z* (the ReLU pattern is fixed there), so the differences are exact up to rounding."""

    def loss(z: np.ndarray) -> float:
        for weight in problem.weights:
            z = np.maximum(weight @ z, 0.0)
        return 2.0 ** (len(problem.weights) - 1) * float(np.sum(np.square(problem.sensing @ z - problem.y)))

    k, eye = len(problem.z_star), np.eye(len(problem.z_star)) * step
    at = problem.z_star
    return np.array(
        [
            [
                (
                    loss(at + eye[i] + eye[j])
                    - loss(at + eye[i] - eye[j])
                    - loss(at - eye[i] + eye[j])
                    + loss(at - eye[i] - eye[j])
                )
                / (4 * step**2)
                for j in range(k)
            ]
            for i in range(k)
        ]
    )


def test_bad_langevin_params_name_the_key(tmp_path):
    params = write_params(
        tmp_path / "params.yaml", {"theory_langevin": {"spread_architecture": {"depth": 2, "latents": [2, 4]}}}
    )
    with pytest.raises(ConfigError, match="spread_architecture.latents takes one latent size"):
        load_params(params)
    params = write_params(
        tmp_path / "params.yaml", {"theory_langevin": {"architectures": [{"depth": 2, "latents": []}]}}
    )
    with pytest.raises(ConfigError, match=r"theory_langevin.architectures\[0\].latents"):
        load_params(params)
