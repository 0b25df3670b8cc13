"""The generator against the reference implementation, its loaders, and its refusals."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sgilo.io import CheckpointError
from sgilo.smoke import rosinality_to_nvidia, write_nvidia_pickle
from sgilo.stylegan2 import Discriminator, Generator, load_generator, save_generator

from stylegan_helpers import (
    CONFIGS,
    INPUT_SEED,
    fixture_outputs,
    reference_views,
    seeded_inputs,
    seeded_weights,
)

FIXTURE = Path(__file__).parent / "fixtures" / "stylegan2_reference.safetensors"
TOLERANCE = 1e-3


@pytest.fixture(scope="module")
def reference() -> dict[str, torch.Tensor]:
    return load_file(FIXTURE)


def _write_rosinality(path: Path, name: str) -> Path:
    state, latent_avg = seeded_weights(name)
    torch.save({"g_ema": state, "latent_avg": latent_avg}, path)
    return path


def _write_nvidia(path: Path, name: str) -> Path:
    state, latent_avg = seeded_weights(name)
    write_nvidia_pickle(path, rosinality_to_nvidia(state, latent_avg, CONFIGS[name]["size"]))
    return path


def _assert_matches_reference(generator: Generator, name: str, reference: dict[str, torch.Tensor]) -> None:
    outputs = fixture_outputs(generator, *seeded_inputs(generator, seed=INPUT_SEED))
    for key, view in reference_views(name, outputs).items():
        error = (view - reference[key]).abs().max().item()
        assert error <= TOLERANCE, f"{key}: max abs error {error:.2e} > {TOLERANCE}"


@pytest.mark.parametrize("name", ["s32", "s64", "config_f"])
def test_rosinality_checkpoint_matches_reference(tmp_path, reference, name):
    generator = load_generator(_write_rosinality(tmp_path / "g.pt", name))
    assert generator.config == CONFIGS[name]
    _assert_matches_reference(generator, name, reference)


@pytest.mark.parametrize("name", ["s32", "s64", "config_f"])
def test_nvidia_pickle_matches_reference(tmp_path, reference, name):
    generator = load_generator(_write_nvidia(tmp_path / "network.pkl", name))
    assert generator.config == CONFIGS[name]
    _assert_matches_reference(generator, name, reference)


def test_config_f_has_the_official_key_set():
    state = Generator(**CONFIGS["config_f"]).state_dict()
    assert state["input.input"].shape == (1, 512, 4, 4)
    assert state["convs.15.conv.weight"].shape == (1, 32, 32, 3, 3)
    assert state["to_rgbs.7.conv.weight"].shape == (1, 3, 32, 1, 1)
    assert state["noises.noise_16"].shape == (1, 1, 1024, 1024)
    assert {f"style.{i}.weight" for i in range(1, 9)} <= set(state)
    assert Generator(**CONFIGS["config_f"]).num_ws == 18


def test_project_format_round_trip(tmp_path):
    generator = load_generator(_write_rosinality(tmp_path / "g.pt", "s32"))
    save_generator(generator, tmp_path / "ours.pt")
    again = load_generator(tmp_path / "ours.pt")
    z, w_plus, noise = seeded_inputs(generator, seed=5)
    with torch.no_grad():
        assert torch.equal(generator.synthesis(w_plus, noise), again.synthesis(w_plus, noise))
        assert torch.equal(generator.mapping(z, 0.5), again.mapping(z, 0.5))


def test_layer_split_synthesis_equals_full_synthesis():
    torch.manual_seed(0)
    generator = Generator(**CONFIGS["s64"]).eval()
    _, w_plus, noise = seeded_inputs(generator, seed=3)
    with torch.no_grad():
        full = generator.synthesis(w_plus, noise)
        for layer in range(1, generator.num_blocks):
            features, skip = generator.synthesis_features(w_plus, layer, noise)
            assert features.shape[1:] == generator.layer_shape(layer)
            assert skip.shape[-1] == features.shape[-1]
            assert torch.allclose(generator.synthesis_from(layer, features, skip, w_plus, noise), full, atol=1e-5)


def test_layer_input_receives_gradients_under_bf16_autocast():
    torch.manual_seed(0)
    generator = Generator(**CONFIGS["s32"]).eval().requires_grad_(False)
    _, w_plus, noise = seeded_inputs(generator, seed=4)
    features, skip = generator.synthesis_features(w_plus, 2, noise)
    features = features.detach().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        image = generator.synthesis_from(2, features, skip, w_plus, noise)
    image.float().square().mean().backward()
    assert features.grad is not None and torch.isfinite(features.grad).all() and features.grad.abs().sum() > 0


def test_batch_gives_the_same_images_as_one_at_a_time():
    torch.manual_seed(0)
    generator = Generator(**CONFIGS["s32"]).eval()
    _, w_plus, noise = seeded_inputs(generator, seed=6, batch=3)
    with torch.no_grad():
        together = generator.synthesis(w_plus, noise)
        alone = torch.cat([generator.synthesis(w_plus[i : i + 1], [n[i : i + 1] for n in noise]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_stored_noise_is_the_default_and_random_noise_is_seeded():
    generator = Generator(**CONFIGS["s32"]).eval()
    w = torch.randn(2, generator.style_dim)
    with torch.no_grad():
        assert torch.equal(generator.synthesis(w), generator.synthesis(w, generator.stored_noise()))
        first = generator.random_noise(2, torch.Generator().manual_seed(9))
        second = generator.random_noise(2, torch.Generator().manual_seed(9))
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_discriminator_scores_a_batch():
    discriminator = Discriminator(32, channel_multiplier=2, channel_max=64)
    assert discriminator(torch.randn(6, 3, 32, 32)).shape == (6, 1)


# ------------------------------------------------------------------------------------------- bad checkpoints
def test_truncated_checkpoint_is_named(tmp_path):
    path = _write_rosinality(tmp_path / "g.pt", "s32")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="g.pt"):
        load_generator(path)


def test_truncated_nvidia_pickle_is_named(tmp_path):
    path = _write_nvidia(tmp_path / "network.pkl", "s32")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="network.pkl"):
        load_generator(path)


def test_missing_key_is_refused(tmp_path):
    state, latent_avg = seeded_weights("s32")
    del state["convs.1.noise.weight"]
    torch.save({"g_ema": state, "latent_avg": latent_avg}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="convs.1.noise.weight"):
        load_generator(tmp_path / "g.pt")


def test_checkpoint_without_g_ema_is_refused(tmp_path):
    torch.save({"generator": {}}, tmp_path / "g.pt")
    with pytest.raises(CheckpointError, match="g_ema"):
        load_generator(tmp_path / "g.pt")


class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


class _Evaluates:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsCode, _Evaluates])
def test_pickle_that_runs_code_is_refused_and_nothing_runs(tmp_path, payload):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as handle:
        pickle.dump({"G_ema": payload(marker)}, handle)
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_torch_checkpoint_that_runs_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"g_ema": _RunsCode(marker)}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_generator(tmp_path / "evil.pt")
    assert not marker.exists()


def test_pickle_with_unknown_class_is_refused(tmp_path):
    with open(tmp_path / "odd.pkl", "wb") as handle:
        pickle.dump({"G_ema": Path("x")}, handle)
    with pytest.raises(CheckpointError, match="pathlib"):
        load_generator(tmp_path / "odd.pkl")
