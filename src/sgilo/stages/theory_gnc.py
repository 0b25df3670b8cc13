"""Stage theory_gnc: Kobler & Pock's Fig. 1, the GNC flow on a smoothed 1-D Gaussian mixture.

For every initial smoothing σ_0 and flow length, the fraction of equally spaced starts whose GNC flow (a logarithmic
σ schedule from σ_0 to theory_gnc.sigma_min) ends in the global minimum's basin, next to gradient descent on the
unsmoothed energy for as many steps. Writes `--json` (the grid, the convexity threshold and whether the
paper's claim holds: the larger σ_0, the fewer steps every start needs) and `--figure` (energies, attainment,
smallest curvature against σ).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sgilo.config import TheoryGNCConfig
from sgilo.figures import new_figure, save_figure
from sgilo.io import save_json
from sgilo.stages._common import entry, log, set_threads, stage_parser, start
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--json", required=True, type=Path, help="the JSON of results to write")
    parser.add_argument("--figure", required=True, type=Path, help="the PNG figure to write")
    args, params = start(parser, argv)
    set_threads(args.threads or 1)  # small tensors: a second thread costs more than it gives
    result = run(params.theory_gnc)
    plot(params.theory_gnc, result, args.figure)
    save_json(result, args.json)
    log.info("GNC 1-D: convex from sigma %.3g; claim holds: %s", result["convex_from_sigma"], result["claim_holds"])


def _mixture(config: TheoryGNCConfig) -> Mixture1D:
    return Mixture1D(np.array(config.weights), np.array(config.means), np.array(config.stds))


def run(config: TheoryGNCConfig) -> dict:
    """Every number of the figure and the claim check, as plain data."""
    mixture = _mixture(config)
    lo, hi = config.domain
    starts = np.linspace(lo, hi, config.starts)
    basin = global_basin(mixture, lo, hi)
    initial = np.geomspace(config.sigma_min, config.sigma_max, config.initial_sigmas)
    grid = [
        [
            attainment(gnc_flow(mixture, starts, sigma_schedule(sigma0, config.sigma_min, steps)), basin)
            for steps in config.steps
        ]
        for sigma0 in initial
    ]
    descent = [attainment(gradient_descent(mixture, starts, steps, config.gd_lr), basin) for steps in config.steps]
    # the claim: once some flow length brings every start to the global minimum, a larger σ_0 needs no more steps
    fewest = [next((steps for steps, rate in zip(config.steps, row) if rate == 1.0), None) for row in grid]
    reached = [steps for steps in fewest if steps is not None]
    first = next((i for i, steps in enumerate(fewest) if steps is not None), len(fewest))
    monotone = all(b is not None and b <= a for a, b in zip(fewest[first:], fewest[first + 1 :]))
    sigmas = np.geomspace(config.sigma_min, config.sigma_max * 4, 200)
    curvature = min_curvature(mixture, lo, hi, sigmas)
    threshold = convexity_threshold(sigmas, curvature)
    claim = bool(reached) and monotone and max(descent) < 1.0
    note = (
        f"The smoothed energy is convex from σ = {threshold:.3g}; "
        + (
            f"from σ₀ = {initial[first]:.3g} the GNC flow brings all {config.starts} starts to the global minimum "
            f"in {fewest[first]} steps"
            if reached
            else "no GNC flow tried brings every start to the global minimum"
        )
        + f", plain gradient descent at most {max(descent):.0%} of them. "
        + ("Agrees with Kobler & Pock's Fig. 1." if claim else "Does not agree with Kobler & Pock's Fig. 1.")
    )
    return {
        "global_minimum": basin[0],
        "basin": [basin[1], basin[2]],
        "convex_from_sigma": threshold,
        "initial_sigmas": initial.tolist(),
        "steps": list(config.steps),
        "gnc_attainment": grid,
        "gradient_descent_attainment": descent,
        "fewest_steps_for_all": fewest,
        "claim_holds": claim,
        "note": note,
        "curvature_sigmas": sigmas.tolist(),
        "min_curvature": curvature.tolist(),
    }


def plot(config: TheoryGNCConfig, result: dict, dest: Path) -> None:
    mixture = _mixture(config)
    lo, hi = config.domain
    x = np.linspace(lo, hi, 1000)
    fig = new_figure((15, 4.4))
    energies, rates, curvature = fig.subplots(1, 3)
    for sigma in (0.0, 0.05, 0.1, 0.2, 0.4):
        energy = mixture.energy(x, sigma)
        energies.plot(x, energy - energy.min(), label=f"σ = {sigma:g}")
    energies.axvline(result["global_minimum"], color="k", lw=0.8, ls=":")
    energies.set(xlabel="x", ylabel="E(x, σ) − min", title="smoothed energy")
    energies.legend(fontsize=8)
    steps, initial = np.array(result["steps"]), np.array(result["initial_sigmas"])
    image = rates.pcolormesh(
        steps, initial, np.array(result["gnc_attainment"]), shading="nearest", vmin=0, vmax=1, cmap="viridis"
    )
    rates.contour(
        steps, initial, np.array(result["gnc_attainment"]), levels=[0.5, 0.9, 0.999], colors="w", linewidths=0.8
    )
    rates.axhline(result["convex_from_sigma"], color="r", lw=0.8, ls="--")
    rates.set(
        xscale="log",
        yscale="log",
        xlabel="flow steps",
        ylabel="initial smoothing σ₀",
        title=f"GNC flow: share reaching the global minimum\n(gradient descent: ≤ {max(result['gradient_descent_attainment']):.2f})",
    )
    fig.colorbar(image, ax=rates)
    curvature.plot(result["curvature_sigmas"], result["min_curvature"])
    curvature.set(xscale="log", yscale="symlog")
    curvature.axhline(0, color="k", lw=0.8)
    curvature.axvline(
        result["convex_from_sigma"],
        color="r",
        lw=0.8,
        ls="--",
        label=f"convex from σ = {result['convex_from_sigma']:.3g}",
    )
    curvature.set(xlabel="σ", ylabel="min over x of ∂²E/∂x²", title="convexity of the smoothed energy")
    curvature.legend(fontsize=8)
    save_figure(fig, dest)


if __name__ == "__main__":
    entry(main)
