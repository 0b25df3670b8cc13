"""IGO's forward iterates and its α on a 2-D toy set: the toy set, the energy distance, and the stage's outputs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from sgilo.config import load_params
from sgilo.io import save_safetensors
from sgilo.latents import LatentScaler
from sgilo.loader import ConfigError
from sgilo.seeding import torch_generator
from sgilo.stages import theory_igo
from sgilo.theory import energy_distance, ring_of_gaussians

from conftest import run_stage, write_params


def test_the_ring_has_its_modes_on_the_circle():
    points = ring_of_gaussians(4000, 8, 0.6, 0.01, torch.Generator().manual_seed(0))
    assert points.shape == (4000, 2)
    assert points.norm(dim=1).sub(0.6).abs().max() < 0.06
    angles = torch.atan2(points[:, 1], points[:, 0])
    assert len(torch.unique(torch.round(angles / (2 * torch.pi / 8)) % 8)) == 8


def test_energy_distance_separates_distributions():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(800, 2, generator=g), torch.randn(800, 2, generator=g)
    same, shifted = energy_distance(a, b), energy_distance(a, b + torch.tensor([1.0, 0.0]))
    assert 0 <= same < 0.02 < shifted
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert energy_distance(a, b + 1) == pytest.approx(energy_distance(b + 1, a))


def test_stage_writes_the_figure_and_every_alpha(tmp_path):
    params = write_params(tmp_path / "params.yaml")
    latents = torch.randn(12, 3, 2, 2)
    save_safetensors({"latents": latents, "ids": torch.arange(12)}, tmp_path / "shard.safetensors")
    save_safetensors(LatentScaler.fit(latents).state_dict(), tmp_path / "stats.safetensors")
    run_stage(
        "theory_igo",
        "--params",
        str(params),
        "--latents",
        str(tmp_path / "shard.safetensors"),
        "--stats",
        str(tmp_path / "stats.safetensors"),
        "--json",
        str(tmp_path / "theory" / "igo.json"),
        "--figure",
        str(tmp_path / "theory" / "igo.png"),
        cwd=tmp_path,
    )
    result = json.loads((tmp_path / "theory" / "igo.json").read_text())
    loaded = load_params(params)
    _check_the_verdicts_numbers(
        result, loaded, LatentScaler.fit(latents).normalize(latents[: loaded.theory_igo.latents])
    )
    assert (tmp_path / "theory" / "igo.png").stat().st_size > 10_000
    assert [a["alpha"] for a in result["alphas"]] == [0.0, 0.5, 1.0]
    # one time (0.5) and its τ, for two sources and two SDEs
    assert {(i["source"], i["sde"], i["time"]) for i in result["iterates"]} == {
        (s, sde, time)
        for s in ("toy", "latents")
        for sde in ("catmap", "lotka_volterra")
        for time in ("τ = 0.25", "t = 0.5")
    }


def _energy(a: torch.Tensor, b: torch.Tensor) -> float:
    """Székely's energy distance (V-statistic) with scipy's pairwise distances, not sgilo.theory.energy_distance."""
    a, b = a.double().numpy(), b.double().numpy()
    return 2 * cdist(a, b).mean() - cdist(a, a).mean() - cdist(b, b).mean()


def _check_the_verdicts_numbers(result: dict, params, latents: torch.Tensor) -> None:
    """Every iterate's statistics and distances and the energy floor, recomputed from the stage's seeded draws with this
    test's own energy distance; then the checks and the verdict, from those numbers by the stated rule."""
    config, fraction = params.theory_igo, params.trajectories.tau_fraction
    toy = theory_igo.toy_set(params, "train")
    floor = _energy(toy[: config.samples], theory_igo.toy_set(params, "test")[: config.samples])
    assert result["energy_floor"] == pytest.approx(floor, rel=1e-6)
    gaussian = torch.randn(config.points, 2, generator=torch_generator(params.seed, "theory_igo", "gaussian"))
    iterates = {(i["source"], i["sde"], i["time"]): i for i in result["iterates"]}
    for source, x0 in (("toy", toy), ("latents", latents)):
        for name in config.sdes:
            for t in config.times:
                path = theory_igo.sde_for(params, name).simulate(
                    x0, t, torch_generator(params.seed, "theory_igo", source, name, str(t)), keep=(fraction,)
                )
                for label, x in ((f"τ = {fraction * t:g}", path.intermediates[fraction]), (f"t = {t:g}", path.x_t)):
                    pair, recorded = x.reshape(len(x), -1)[:, :2], iterates[(source, name, label)]
                    assert recorded["mean"] == pytest.approx(pair.double().mean(0).tolist(), abs=1e-5)
                    assert recorded["std"] == pytest.approx(np.std(pair.double().numpy(), axis=0, ddof=1), abs=1e-5)
                    assert recorded["energy_to_data"] == pytest.approx(
                        _energy(pair, x0.reshape(len(x0), -1)[:, :2]), rel=1e-5
                    )
                    assert recorded["energy_to_gaussian"] == pytest.approx(_energy(pair, gaussian), rel=1e-5)
    final = f"t = {max(config.times):g}"
    half, full = ({a["alpha"]: a for a in result["alphas"]}[alpha] for alpha in (0.5, 1.0))
    checks = {
        "forward_iterates_end_near_gaussian": all(
            i["energy_to_gaussian"] < 0.05 for i in result["iterates"] if i["source"] == "toy" and i["time"] == final
        ),
        "toy_model_learns_the_set": full["energy_distance"] <= 3 * floor,
        "alpha_half_trains_intermediate_generator": half["held_out_r"] < full["held_out_r"],
        "alpha_half_samples_comparable_to_alpha_one": half["energy_distance"] <= 2 * full["energy_distance"] + floor,
    }
    assert result["checks"] == checks and result["claim_holds"] == all(checks.values())
    assert f"(two toy samples: {floor:.3f})" in result["note"]
    verdict = (
        "Agrees"
        if all(checks.values())
        else "Inconclusive"
        if not checks["toy_model_learns_the_set"]
        else "Does not fully agree"
    )
    assert result["note"].endswith(".") and verdict in result["note"]


def test_bad_igo_params_name_the_key(tmp_path):
    params = write_params(tmp_path / "params.yaml", {"theory_igo": {"sdes": ["vp"]}})
    with pytest.raises(ConfigError, match="theory_igo.sdes: .vp. is not a simulated SDE"):
        load_params(params)
