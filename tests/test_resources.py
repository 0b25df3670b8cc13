"""The resource model: work counted on the meta device, disk exact from the shapes, and the SLURM profile's memory
taken from it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from sgilo.cli import main
from sgilo.config import load_params
from sgilo.resources import DEVICES, estimate, generator_step, markdown, slurm_mem_mb
from sgilo.stylegan2 import Generator

from conftest import REPO, tiny_workspace


def test_meta_device_count_matches_a_real_step():
    """The meta-device count is what the real step computes (the counter itself, on real tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    from sgilo.inversion import decode

    architecture = {"size": 32, "style_dim": 16, "n_mlp": 2, "channel_multiplier": 1, "channel_max": 16}
    generator = Generator(**architecture).requires_grad_(False)
    h = torch.zeros(1, generator.layer_shape(2)[0] + 3, 8, 8, requires_grad=True)
    w = torch.zeros(1, generator.num_ws, 16, requires_grad=True)
    with FlopCounterMode(display=False) as counter:
        decode(generator, h, 2, w).sum().backward()
    modelled = generator_step(tuple(sorted(architecture.items())), 2)
    assert modelled.flop == counter.get_total_flops() > 0
    assert modelled.weights == sum(t.numel() * 4 for t in [*generator.parameters(), *generator.buffers()])
    assert generator_step(tuple(sorted(architecture.items())), 0).flop > modelled.flop  # from layer 0: more blocks


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    return tiny_workspace(tmp_path_factory.mktemp("resources"), upto="trajectories")


def test_disk_of_invert_and_trajectories_is_what_the_stages_write(workspace):
    rows = {row.rule: row for row in estimate(load_params(workspace / "params.yaml"), DEVICES["cpu"])}
    written = {
        rule: sum(p.stat().st_size for p in (workspace / rule).rglob("*.safetensors") if p.name != "stats.safetensors")
        / 2**30
        for rule in ("invert", "trajectories")
    }
    assert rows["invert"].disk_gib == pytest.approx(written["invert"], rel=0.1)
    assert rows["trajectories"].disk_gib == pytest.approx(written["trajectories"], rel=0.1)


def test_the_slurm_profile_asks_for_the_memory_the_model_gives(capsys):
    """workflow/profiles/slurm's mem_mb per rule is the model's, for the FFHQ profile on the GPU it names."""
    rows = {row.rule: row for row in estimate(load_params(REPO / "profiles/ffhq/params.yaml"), DEVICES["a100"])}
    profile = yaml.safe_load((REPO / "workflow/profiles/slurm/config.yaml").read_text())
    for rule, resources in profile["set-resources"].items():
        assert resources["mem_mb"] == slurm_mem_mb(rows[rule]), (
            f"{rule}: run `sgilo resources profiles/ffhq/params.yaml` and copy its mem_mb"
        )
    main(["resources", str(REPO / "profiles/ffhq/params.yaml")])
    table = capsys.readouterr().out
    assert "| invert | 60 |" in table and "SLURM mem_mb" in table
    # The README's GPU-hours, memory and storage table is the model's output, as printed.
    assert markdown(list(rows.values()), DEVICES["a100"]) in (REPO / "README.md").read_text()
