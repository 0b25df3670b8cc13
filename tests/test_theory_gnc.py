"""The GNC flow on a smoothed 1-D Gaussian mixture (Kobler & Pock, Fig. 1): the energy's calculus, its convexity
under smoothing, the flow against gradient descent, and the stage's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_stage, write_params

from sgilo.config import ConfigError, TheoryGNCConfig, load_params
from sgilo.theory import (
    Mixture1D,
    attainment,
    convexity_threshold,
    global_basin,
    gnc_flow,
    gradient_descent,
    min_curvature,
    sigma_schedule,
)

DEFAULT = TheoryGNCConfig()
MIXTURE = Mixture1D(np.array(DEFAULT.weights), np.array(DEFAULT.means), np.array(DEFAULT.stds))
STARTS = np.linspace(-1, 1, 101)


@pytest.mark.parametrize("sigma", [0.0, 0.05, 0.5])
def test_gradient_and_curvature_match_finite_differences(sigma):
    x, h = np.linspace(-1, 1, 41), 1e-5
    numeric_gradient = (MIXTURE.energy(x + h, sigma) - MIXTURE.energy(x - h, sigma)) / (2 * h)
    numeric_curvature = (MIXTURE.gradient(x + h, sigma) - MIXTURE.gradient(x - h, sigma)) / (2 * h)
    np.testing.assert_allclose(MIXTURE.gradient(x, sigma), numeric_gradient, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(MIXTURE.curvature(x, sigma), numeric_curvature, rtol=1e-4, atol=1e-3)


def test_smoothing_makes_the_energy_convex_on_the_domain():
    grid = np.linspace(-1, 1, 2001)
    assert MIXTURE.curvature(grid, 0.0).min() < 0  # five wells
    assert MIXTURE.curvature(grid, 1.0).min() >= 0
    sigmas = np.geomspace(0.01, 10, 300)
    threshold = convexity_threshold(sigmas, min_curvature(MIXTURE, -1, 1, sigmas))
    assert 0.01 < threshold < 1.0
    assert MIXTURE.curvature(grid, threshold).min() >= 0 and MIXTURE.curvature(grid, threshold * 0.9).min() < 0


def test_the_basin_holds_the_global_minimum_between_energy_maxima():
    minimum, left, right = global_basin(MIXTURE, -1, 1)
    grid = np.linspace(-1, 1, 20001)
    assert minimum == pytest.approx(grid[np.argmin(MIXTURE.energy(grid))], abs=1e-3)
    assert left < minimum < right
    assert MIXTURE.gradient(np.array([left + 1e-3]))[0] < 0 < MIXTURE.gradient(np.array([right - 1e-3]))[0]
    assert MIXTURE.gradient(np.array([left - 1e-3]))[0] > 0  # beyond the edge, descent leads elsewhere


def test_the_flow_from_a_convex_start_finds_the_global_minimum_where_descent_does_not():
    basin = global_basin(MIXTURE, -1, 1)
    assert attainment(gnc_flow(MIXTURE, STARTS, sigma_schedule(2.0, 0.01, 8)), basin) == 1.0
    assert attainment(gnc_flow(MIXTURE, STARTS, sigma_schedule(0.02, 0.01, 8)), basin) < 0.5  # no smoothing, no luck
    assert attainment(gradient_descent(MIXTURE, STARTS, 256, DEFAULT.gd_lr), basin) < 0.5
    assert sigma_schedule(2.0, 0.01, 8)[0] == 2.0 and sigma_schedule(2.0, 0.01, 8)[-1] == pytest.approx(0.01)


def test_stage_writes_the_figure_and_checks_the_claim(tmp_path):
    params = write_params(tmp_path / "params.yaml", {"theory_gnc": {"starts": 41, "initial_sigmas": 8, "steps": [1, 4, 16, 64]}})
    run_stage("theory_gnc", "--params", str(params), "--out", str(tmp_path / "theory"), cwd=tmp_path)
    result = json.loads((tmp_path / "theory" / "gnc.json").read_text())
    assert (tmp_path / "theory" / "gnc.png").stat().st_size > 10_000
    assert np.array(result["gnc_attainment"]).shape == (8, 4)
    assert result["claim_holds"] is True and max(result["gradient_descent_attainment"]) < 1
    assert result["fewest_steps_for_all"][-1] == 1  # from σ₀ = 3 one Tweedie step suffices


def test_components_must_agree(tmp_path):
    params = write_params(tmp_path / "params.yaml", {"theory_gnc": {"means": [0.0, 0.5]}})
    with pytest.raises(ConfigError, match="theory_gnc.weights, .means and .stds"):
        load_params(params)
    params = write_params(tmp_path / "params.yaml", {"theory_gnc": {"weights": [0.5, 0.2, 0.1, 0.1, 0.05]}})
    with pytest.raises(ConfigError, match="sum to 1"):
        load_params(params)
