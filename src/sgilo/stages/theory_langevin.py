"""Stage theory_langevin: the SGILO paper's Theorem 3.1, SGLD inverting random-weight expansive ReLU generators.

For each (depth, k) of theory_langevin.architectures: a random generator with Gaussian weights and expanding widths,
y = A G(z*) with Gaussian A, and from the same random starts gradient descent, gradient descent with Huang et al.'s
sign flips, and SGLD at β = beta_per_latent · k; gradient descent and SGLD also from just beside the spurious point
−ρ_d z*. Then, for one (depth, k), the stationary spread of SGLD started at z* against β, next to the Laplace
prediction sqrt(tr(H⁻¹)/β). Writes `--json` (every curve and number, the claim checks and a one-line
verdict) and `--figure`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sgilo.config import Params, TheoryLangevinConfig
from sgilo.figures import new_figure, save_figure
from sgilo.io import save_json
from sgilo.seeding import numpy_generator
from sgilo.stages._common import entry, log, set_threads, stage_parser, start
from sgilo.theory import ReLUInversion, expansive_widths, langevin, spurious_scale

# (method, start) groups of chains, in the order their rows are stacked
GROUPS = (("gd", "random"), ("gd_flip", "random"), ("sgld", "random"), ("gd", "spurious"), ("sgld", "spurious"))


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--json", required=True, type=Path, help="the JSON of results to write")
    parser.add_argument("--figure", required=True, type=Path, help="the PNG figure to write")
    args, params = start(parser, argv)
    set_threads(args.threads or 1)  # small tensors: a second thread costs more than it gives
    result = run(params)
    plot(result, args.figure)
    save_json(result, args.json)
    log.info("Langevin on random generators: %s", result["note"])


def problem_for(config: TheoryLangevinConfig, seed: int, depth: int, latent: int, purpose: str) -> ReLUInversion:
    rng = numpy_generator(seed, "theory_langevin", purpose, depth, latent, "problem")
    widths = expansive_widths(latent, depth, config.expansion)
    return ReLUInversion.random(widths, math.ceil(config.measurements_per_latent * latent), config.noise, rng)


def run(params: Params) -> dict:
    """Every number of the figure and the claim checks, as plain data."""
    config = params.theory_langevin
    mixing = [mixing_run(config, params.seed, arch.depth, k) for arch in config.architectures for k in arch.latents]
    spread = spread_run(config, params.seed)
    growth = {
        str(depth): _growth([m for m in mixing if m["depth"] == depth])
        for depth in sorted({m["depth"] for m in mixing})
    }
    sgld_reaches = min(m["groups"][f"sgld/{s}"]["reached"] for m in mixing for s in ("random", "spurious"))
    gd_stuck = max(m["groups"]["gd/spurious"]["stuck"] for m in mixing)
    flips_reach = min(m["groups"]["gd_flip/random"]["reached"] for m in mixing)
    ratio = spread["measured"][-1] / spread["predicted"][-1]
    checks = {
        "sgld_reaches_truth_from_every_start": sgld_reaches >= 0.9,
        "hitting_time_finite_for_every_k": all(g["finite"] for g in growth.values()),
        "spread_scales_as_beta_to_minus_half": abs(spread["slope"] + 0.5) <= 0.1,
        "spread_matches_laplace_at_largest_beta": 0.8 <= ratio <= 1.25,
    }
    slopes = ", ".join(f"depth {d}: k^{g['slope']:.2f}" for d, g in growth.items() if g["slope"] is not None)
    note = (
        f"SGLD without sign flips comes within {config.success_radius:g} of z* for at least {sgld_reaches:.0%} of chains "
        f"in every configuration, from random starts and from beside −ρ_d z*, where plain gradient descent stays in "
        f"up to {gd_stuck:.0%} of them (with sign flips it reaches z* in at least {flips_reach:.0%}); iterations to "
        f"reach z* grow like {slopes or 'n/a'}; the stationary spread falls as β^{spread['slope']:.2f} "
        f"(theory −0.5), {ratio:.2f}× the Laplace prediction at the largest β. "
        + (
            "Agrees with Theorem 3.1."
            if all(checks.values())
            else "Does not fully agree with Theorem 3.1: "
            + ", ".join(k for k, ok in checks.items() if not ok)
            + " failed."
        )
    )
    return {
        "mixing": mixing,
        "growth": growth,
        "spread": spread,
        "checks": checks,
        "claim_holds": all(checks.values()),
        "note": note,
    }


def mixing_run(config: TheoryLangevinConfig, seed: int, depth: int, latent: int) -> dict:
    problem = problem_for(config, seed, depth, latent, "mixing")
    rng = numpy_generator(seed, "theory_langevin", "mixing", depth, latent, "chains")
    chains, rho = config.chains, spurious_scale(depth)
    random_starts = rng.standard_normal((chains, latent)) / math.sqrt(latent)  # ‖z₀‖ ≈ 1 = ‖z*‖
    directions = rng.standard_normal((chains, latent))
    spurious_starts = -rho * problem.z_star + config.spurious_start * directions / np.linalg.norm(
        directions, axis=1, keepdims=True
    )
    starts = {"random": random_starts, "spurious": spurious_starts}
    beta_sgld = config.beta_per_latent * latent
    rows = np.concatenate([starts[where] for _, where in GROUPS])
    beta = np.repeat([beta_sgld if method == "sgld" else math.inf for method, _ in GROUPS], chains)
    flip = np.repeat([method == "gd_flip" for method, _ in GROUPS], chains)
    trace = langevin(problem, rows, config.steps, config.step_size, beta, flip, rng)
    eigenvalues = np.linalg.eigvalsh(problem.hessian_at_truth())
    groups = {}
    for g, (method, where) in enumerate(GROUPS):
        part = slice(g * chains, (g + 1) * chains)
        groups[f"{method}/{where}"] = _summarize(
            trace["iterations"], trace["to_truth"][:, part], trace["to_spurious"][:, part], config.success_radius
        )
    return {
        "depth": depth,
        "latent": latent,
        "widths": problem.widths,
        "measurements": len(problem.y),
        "rho": rho,
        "beta": beta_sgld,
        "hessian_eigenvalues": [float(eigenvalues.min()), float(eigenvalues.max())],
        "iterations": trace["iterations"].tolist(),
        "groups": groups,
    }


def _summarize(iterations: np.ndarray, to_truth: np.ndarray, to_spurious: np.ndarray, radius: float) -> dict:
    """Median and quartile curves over chains, the shares that reached z* and that end near −ρ_d z*, hitting times."""
    inside = to_truth <= radius
    hits = np.where(inside.any(0), iterations[inside.argmax(0)], np.inf)
    return {
        "median": np.median(to_truth, 1).tolist(),
        "quartiles": np.quantile(to_truth, [0.25, 0.75], axis=1).tolist(),
        "median_to_spurious": np.median(to_spurious, 1).tolist(),
        "reached": float(np.mean(inside.any(0))),  # came within the radius (SGLD then fluctuates around z*)
        "stuck": float(np.mean(to_spurious[-1] <= radius)),
        # the median chain's first iteration within the radius; None while fewer than half ever get there
        "median_hitting_time": float(np.median(hits)) if np.isfinite(np.median(hits)) else None,
    }


def _growth(runs: list[dict]) -> dict:
    """Least-squares fit of log(hitting time) on log k for SGLD from random starts: the exponent of k."""
    latents = [r["latent"] for r in runs]
    times = [r["groups"]["sgld/random"]["median_hitting_time"] for r in runs]
    finite = all(t is not None for t in times)
    slope = float(np.polyfit(np.log(latents), np.log(np.maximum(times, 1)), 1)[0]) if finite and len(runs) > 1 else None
    return {"latents": latents, "hitting_times": times, "finite": finite, "slope": slope}


def spread_run(config: TheoryLangevinConfig, seed: int) -> dict:
    """SGLD started at z* for each β: the root-mean-square ‖z − z*‖ over chains and the second half of the run."""
    depth, (latent,) = config.spread_architecture.depth, config.spread_architecture.latents
    problem = problem_for(config, seed, depth, latent, "spread")
    rng = numpy_generator(seed, "theory_langevin", "spread", depth, latent, "chains")
    betas = np.array(config.spread_betas_per_latent) * latent
    beta = np.repeat(betas, config.chains)
    rows = np.repeat(problem.z_star[None], len(beta), axis=0)
    trace = langevin(
        problem, rows, config.steps, config.step_size, beta, np.zeros(len(beta), bool), rng, record_every=1
    )
    settled = trace["to_truth"][len(trace["iterations"]) // 2 :]
    measured = [
        float(np.sqrt(np.mean(np.square(settled[:, i * config.chains : (i + 1) * config.chains]))))
        for i in range(len(betas))
    ]
    trace_inverse = float(np.trace(np.linalg.inv(problem.hessian_at_truth())))
    predicted = [math.sqrt(trace_inverse / b) for b in betas]
    slope = float(np.polyfit(np.log(betas), np.log(measured), 1)[0])
    return {
        "depth": depth,
        "latent": latent,
        "betas": betas.tolist(),
        "measured": measured,
        "predicted": predicted,
        "slope": slope,
    }


def plot(result: dict, dest: Path) -> None:
    depths = sorted({m["depth"] for m in result["mixing"]})
    fig = new_figure((5 * (len(depths) + 2), 4.4))
    axes = fig.subplots(1, len(depths) + 2)
    colors = {}
    for ax, depth in zip(axes, depths):
        for m in (m for m in result["mixing"] if m["depth"] == depth):
            color = colors.setdefault(m["latent"], f"C{len(colors)}")
            for where, style in (("random", "-"), ("spurious", "--")):
                ax.plot(
                    m["iterations"],
                    m["groups"][f"sgld/{where}"]["median"],
                    style,
                    color=color,
                    label=f"k = {m['latent']}" if where == "random" else None,
                )
            ax.plot(m["iterations"], m["groups"]["gd/spurious"]["median"], ":", color=color)
        ax.set(
            yscale="log",
            xlabel="iteration",
            ylabel="median ‖z − z*‖",
            title=f"depth {depth}: SGLD from random starts (—) and beside −ρz* (--); GD beside −ρz* (···)",
        )
        ax.title.set_fontsize(8)
        ax.legend(fontsize=8)
    times = axes[-2]
    for depth, growth in result["growth"].items():
        reached = [(k, t) for k, t in zip(growth["latents"], growth["hitting_times"]) if t is not None]
        if reached:
            label = f"depth {depth}" + (f": ∝ k^{growth['slope']:.2f}" if growth["slope"] is not None else "")
            times.plot(*zip(*reached), "o-", label=label)
    times.set(
        xscale="log",
        yscale="log",
        xlabel="latent size k",
        ylabel="iterations (median chain)",
        title="SGLD iterations to reach z*",
    )
    times.legend(fontsize=8)
    spread = result["spread"]
    axes[-1].plot(spread["betas"], spread["measured"], "o-", label=f"measured (∝ β^{spread['slope']:.2f})")
    axes[-1].plot(spread["betas"], spread["predicted"], "k--", label="Laplace: sqrt(tr H⁻¹ / β)")
    axes[-1].set(
        xscale="log",
        yscale="log",
        xlabel="β",
        ylabel="RMS ‖z − z*‖ at stationarity",
        title=f"stationary spread (depth {spread['depth']}, k = {spread['latent']})",
    )
    axes[-1].legend(fontsize=8)
    save_figure(fig, dest)


if __name__ == "__main__":
    entry(main)
