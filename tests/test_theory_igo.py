"""IGO's forward iterates and its α on a 2-D toy set: the toy set, the energy distance, and the stage's outputs."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_stage, write_params

from sgilo.config import ConfigError, load_params
from sgilo.io import save_safetensors
from sgilo.latents import LatentScaler
from sgilo.theory import energy_distance, ring_of_gaussians


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
    run_stage("theory_igo", "--params", str(params), "--latents", str(tmp_path / "shard.safetensors"),
              "--stats", str(tmp_path / "stats.safetensors"), "--out", str(tmp_path / "theory"), cwd=tmp_path)
    result = json.loads((tmp_path / "theory" / "igo.json").read_text())
    assert (tmp_path / "theory" / "igo.png").stat().st_size > 10_000
    assert [a["alpha"] for a in result["alphas"]] == [0.0, 0.5, 1.0]
    # one time (0.5) and its τ, for two sources and two SDEs
    assert {(i["source"], i["sde"], i["time"]) for i in result["iterates"]} == {
        (s, sde, time) for s in ("toy", "latents") for sde in ("catmap", "lotka_volterra") for time in ("τ = 0.25", "t = 0.5")}
    assert result["note"].endswith(".") and ("Agrees" in result["note"]) == result["claim_holds"]


def test_bad_igo_params_name_the_key(tmp_path):
    params = write_params(tmp_path / "params.yaml", {"theory_igo": {"sdes": ["vp"]}})
    with pytest.raises(ConfigError, match="theory_igo.sdes: .vp. is not a simulated SDE"):
        load_params(params)
