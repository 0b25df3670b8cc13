"""The `sgilo` console script."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from sgilo.cli import main
from sgilo.smoke import rosinality_to_nvidia, seeded_state_dict, write_nvidia_pickle
from sgilo.stylegan2 import Generator, load_generator, save_generator

from stylegan_helpers import CONFIGS


def test_console_script_lists_its_commands():
    result = subprocess.run(
        [str(Path(sys.executable).parent / "sgilo"), "--help"], capture_output=True, text=True, check=True
    )
    for command in ("check-params", "convert", "sample", "reconstruct"):
        assert command in result.stdout


def test_convert_then_sample(tmp_path):
    state = seeded_state_dict(Generator(**CONFIGS["s32"]).state_dict(), seed=8)
    write_nvidia_pickle(tmp_path / "net.pkl", rosinality_to_nvidia(state, torch.zeros(64), 32))
    main(["convert", str(tmp_path / "net.pkl"), "--out", str(tmp_path / "ours.pt")])
    converted = load_generator(tmp_path / "ours.pt")
    assert torch.equal(converted.state_dict()["to_rgbs.2.conv.weight"], state["to_rgbs.2.conv.weight"])

    main(
        [
            "sample",
            "--generator",
            str(tmp_path / "ours.pt"),
            "--out",
            str(tmp_path / "grid.png"),
            "--n",
            "4",
            "--seed",
            "1",
        ]
    )
    first = Image.open(tmp_path / "grid.png").tobytes()
    main(
        [
            "sample",
            "--generator",
            str(tmp_path / "ours.pt"),
            "--out",
            str(tmp_path / "grid.png"),
            "--n",
            "4",
            "--seed",
            "1",
        ]
    )
    assert Image.open(tmp_path / "grid.png").tobytes() == first


def test_unreadable_checkpoint_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "junk.pt").write_bytes(b"PK\x03\x04 not really a zip")
    try:
        main(["sample", "--generator", str(tmp_path / "junk.pt"), "--out", str(tmp_path / "g.png")])
    except SystemExit as exit_info:
        assert exit_info.code == 2
    else:
        raise AssertionError("expected exit code 2")
    assert "junk.pt" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- reconstruct
ILO_FAST = ("--steps", "4,3,3", "--layers", "0,1,2")
# ILO's radii for the tiny generator at ILO_FAST's layers (sgilo.inversion.ilo_radii, the default of --radii): ILO's
# 1000 per 515×4² and per 515×8² entries (config-f's layers 1 and 2) scaled to this generator's 19×4² and 19×8².
ILO_DEFAULT = [None, 1000 / (515 * 16) * (19 * 16), 1000 / (515 * 64) * (19 * 64)]
ILO_LONG = ("--steps", "100,50,50", "--layers", "0,1,2")  # long enough to invert the tiny generator's own sample
OUTPUTS = ("measurement.png", "reconstruction.png", "comparison.png", "result.safetensors", "record.json")


def _png(path: Path, images: torch.Tensor) -> Path:
    """Write a (1, 3, H, W) image in [-1, 1] as an 8-bit RGB PNG."""
    pixels = ((images[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(pixels).save(path)
    return path


def _pixels(path: Path) -> torch.Tensor:
    """A PNG as a (3, H, W) float tensor in [0, 255]."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float()


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread: these problems are tiny, and on a busy 2-core machine OpenMP's spinning threads
    made a 10-step reconstruction take 15 s instead of 0.1 s."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 32x32 generator checkpoint (g.pt) and one of its samples (image.png)."""
    root = tmp_path_factory.mktemp("reconstruct")
    torch.manual_seed(0)
    generator = Generator(size=32, style_dim=16, n_mlp=2, channel_multiplier=1, channel_max=16)
    save_generator(generator, root / "g.pt")
    with torch.no_grad():
        _png(root / "image.png", generator(torch.randn(1, 16, generator=torch.Generator().manual_seed(5))))
    return root


def _reconstruct(tiny: Path, out: Path, *extra: str, image: Path | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    main(_argv(tiny, out, *extra, image=image))
    return json.loads((out / "record.json").read_text()), load_file(str(out / "result.safetensors"))


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run the CLI, expecting the clean `sgilo: error:` exit with status 2; returns stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "sgilo: error:" in err and "Traceback" not in err
    return err


def _argv(tiny: Path, out: Path, *extra: str, image: Path | None = None) -> list[str]:
    # fp32 pinned, so that these tests compute the same on every CPU; the default is tested on its own below.
    return [
        "reconstruct",
        str(image or tiny / "image.png"),
        "--generator",
        str(tiny / "g.pt"),
        "--out",
        str(out),
        "--device",
        "cpu",
        "--precision",
        "fp32",
        *extra,
    ]


def test_reconstruct_ilo_inpaint_writes_everything(tiny: Path, tmp_path: Path) -> None:
    """image.png is the generator's own sample, so an exact inversion exists: ILO's schedule run long enough (1-2 s)
    must find it. Measured 32.8 dB; zero steps give 12.2 dB, another seed's mask or the transposed mask 14 dB."""
    out = tmp_path / "out"
    record, result = _reconstruct(tiny, out, "--task", "inpaint", "--level", "0.5", "--method", "ilo", *ILO_LONG)
    assert sorted(p.name for p in out.iterdir()) == sorted(OUTPUTS)

    assert record["method"] == "ilo" and record["seed"] == 0
    assert record["image"] == str(tiny / "image.png") and record["generator"] == str(tiny / "g.pt")
    assert record["operator"]["task"] == "inpaint" and record["operator"]["level"] == 0.5
    assert record["operator"]["mask"] == "random" and record["operator"]["shape"] == [3, 32, 32]
    assert record["steps"] == 200
    assert [(s["layer"], s["steps"]) for s in record["phases"]] == [(0, 100), (1, 50), (2, 50)]
    assert [s["radius"] for s in record["phases"]] == pytest.approx(ILO_DEFAULT)  # ILO's balls, not ilo-unconstrained
    assert record["seconds"] > 0
    assert record["precision"] == "fp32"
    for key in ("psnr", "ssim", "mse", "measurement_loss"):
        assert isinstance(record[key], float) and np.isfinite(record[key])
    assert set(record["naive"]) == {"psnr", "ssim", "mse"}
    assert record["psnr"] > 26, f"ILO recovered the generator's own sample at {record['psnr']:.1f} dB"
    assert record["psnr"] > record["naive"]["psnr"] + 10 and record["ssim"] > 0.8, (record["naive"], record["ssim"])

    assert set(result) == {"y", "reconstruction", "w_plus", "latent"}
    recon = result["reconstruction"]
    assert recon.shape == (1, 3, 32, 32) and 0 <= float(recon.min()) and float(recon.max()) <= 1
    assert result["w_plus"].shape == (1, 8, 16)  # num_ws = 2·log2(32) − 2
    assert result["latent"].shape == (1, 16 + 3, 8, 8)  # features + skip RGB entering block 2

    # y keeps exactly half the pixels of the input, unchanged, and zeroes the rest.
    truth = _pixels(tiny / "image.png").unsqueeze(0) / 255
    # the record's PSNR is that of the written reconstruction against the input (data range 1)
    assert record["psnr"] == pytest.approx(-10 * math.log10(float((recon - truth).square().mean())), abs=0.01)
    y = result["y"]
    assert y.shape == (1, 3, 32, 32)
    kept = (y != 0).any(1)
    assert int(kept.sum()) <= 512 and int((y == 0).all(1).sum()) >= 512
    assert torch.allclose(y[:, :, kept[0]], truth[:, :, kept[0]])

    # The PNGs are the tensors: reconstruction.png is the saved reconstruction, comparison.png shows the
    # naive reconstruction | reconstruction | input in a row (torchvision's 2-pixel padding).
    assert Image.open(out / "measurement.png").size == (32, 32)
    assert (_pixels(out / "reconstruction.png") - recon[0] * 255).abs().max() <= 1
    comparison = _pixels(out / "comparison.png")
    assert comparison.shape == (3, 36, 104)
    assert (comparison[:, 2:34, 36:68] - recon[0] * 255).abs().max() <= 1
    assert (comparison[:, 2:34, 70:102] - truth[0] * 255).abs().max() <= 1
    assert torch.equal(comparison[:, 2:34, 2:34], _pixels(out / "measurement.png"))


def test_reconstruct_is_deterministic_and_seeded(tiny: Path, tmp_path: Path) -> None:
    args = ("--task", "inpaint", "--level", "0.5", *ILO_FAST)
    _, first = _reconstruct(tiny, tmp_path / "a", *args)
    _, again = _reconstruct(tiny, tmp_path / "b", *args)
    for key in first:
        assert torch.equal(first[key], again[key]), key
    assert (
        json.loads((tmp_path / "a" / "record.json").read_text())["psnr"]
        == json.loads((tmp_path / "b" / "record.json").read_text())["psnr"]
    )

    record, other = _reconstruct(tiny, tmp_path / "c", *args, "--seed", "1")
    assert record["seed"] == 1
    assert not torch.equal((first["y"] != 0).any(1), (other["y"] != 0).any(1))  # another random mask
    assert not torch.equal(first["reconstruction"], other["reconstruction"])


@pytest.mark.parametrize("native", [False, True])
def test_reconstruct_precision_defaults_to_auto(tiny: Path, tmp_path: Path, monkeypatch, capsys, native: bool) -> None:
    # bf16 only where the CPU has it natively (mocked here, so both branches run on any machine)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    out = tmp_path / "out"
    main(
        [
            "reconstruct",
            str(tiny / "image.png"),
            "--generator",
            str(tiny / "g.pt"),
            "--out",
            str(out),
            "--device",
            "cpu",
            "--task",
            "inpaint",
            "--level",
            "0.5",
            "--method",
            "csgm",
            "--steps",
            "3",
        ]
    )
    expected = "bf16" if native else "fp32"
    assert json.loads((out / "record.json").read_text())["precision"] == expected
    assert f"csgm, 3 steps, {expected})" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("method", "extra", "expected"),
    [
        (
            "ilo",
            (),
            "ilo schedule: layer 0 × 4 steps (w+), layer 1 × 3 steps (l1 radius 36.9), layer 2 × 3 steps (l1 radius 36.9)",
        ),
        ("ilo", ("--radii", "0,0,3"), "layer 1 × 3 steps (no l1 ball), layer 2 × 3 steps (l1 radius 3)"),
        ("ilo-unconstrained", (), "layer 1 × 3 steps (no l1 ball), layer 2 × 3 steps (no l1 ball)"),
        ("csgm", (), "csgm schedule: layer 0 × 10 steps (w+)"),
    ],
    ids=["ilo", "ilo-radii", "ilo-unconstrained", "csgm"],
)
def test_reconstruct_prints_the_schedule_it_runs(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], method: str, extra: tuple[str, ...], expected: str
) -> None:
    """Before it runs, on stderr: the layers, steps and l1 radii, so a default is never silent."""
    _reconstruct(tiny, tmp_path / "out", "--task", "inpaint", "--level", "0.5", "--method", method, *ILO_FAST, *extra)
    assert expected in capsys.readouterr().err


def test_reconstruct_csgm_has_no_latent(tiny: Path, tmp_path: Path) -> None:
    record, result = _reconstruct(
        tiny, tmp_path / "out", "--task", "inpaint", "--level", "0.5", "--method", "csgm", "--steps", "5"
    )
    assert record["method"] == "csgm" and record["steps"] == 5
    assert [(s["layer"], s["steps"]) for s in record["phases"]] == [(0, 5)]
    assert set(result) == {"y", "reconstruction", "w_plus"}


@pytest.mark.parametrize(
    ("method", "radii", "expected"),
    [
        ("ilo", (), ILO_DEFAULT),
        ("ilo-unconstrained", (), [None, None, None]),
        ("ilo-unconstrained", ("--radii", "5,5,5"), [None, None, None]),
        ("ilo", ("--radii", "5,5,5"), [5.0, 5.0, 5.0]),
        ("ilo", ("--radii", "0,0,3"), [None, None, 3.0]),
        ("ilo", ("--radii", "0,0,0"), [None, None, None]),
    ],
)
def test_reconstruct_radii(tiny: Path, tmp_path: Path, method: str, radii: tuple[str, ...], expected: list) -> None:
    record, result = _reconstruct(
        tiny, tmp_path / "out", "--task", "inpaint", "--level", "0.5", "--method", method, *ILO_FAST, *radii
    )
    assert record["method"] == method and record["steps"] == 10
    assert [s["radius"] for s in record["phases"]] == pytest.approx(expected)
    assert result["latent"].shape == (1, 19, 8, 8)


@pytest.mark.parametrize(
    ("task", "level", "y_shape"),
    [
        ("cs", "0.25", (1, 768)),
        ("denoise", "0.1", (1, 3, 32, 32)),
        ("sr", "2", (1, 3, 16, 16)),
        ("colorize", "1", (1, 1, 32, 32)),
    ],
)
def test_reconstruct_each_task(tiny: Path, tmp_path: Path, task: str, level: str, y_shape: tuple[int, ...]) -> None:
    record, result = _reconstruct(
        tiny, tmp_path / "out", "--task", task, "--level", level, "--steps", "2,2", "--layers", "0,1"
    )
    assert record["operator"]["task"] == task and record["operator"]["level"] == float(level) and record["steps"] == 4
    assert result["y"].shape == y_shape
    assert result["reconstruction"].shape == (1, 3, 32, 32)
    assert Image.open(tmp_path / "out" / "measurement.png").size == (32, 32)
    truth = _pixels(tiny / "image.png").unsqueeze(0) / 255
    if task == "sr":
        assert torch.allclose(result["y"], torch.nn.functional.avg_pool2d(truth, 2), atol=1e-6)
    elif task == "denoise":
        assert record["operator"]["noise_sigma"] == pytest.approx(0.1)
        assert 0.07 < float((result["y"] - truth).std()) < 0.13
    elif task == "cs":
        assert record["operator"]["cs_kind"] == "structured"  # 3·32·32 unknowns is past the dense Gaussian limit
    else:
        grey = 0.299 * truth[:, 0] + 0.587 * truth[:, 1] + 0.114 * truth[:, 2]
        assert torch.allclose(result["y"][:, 0], grey, atol=2e-3)


def test_reconstruct_with_a_mask_file(tiny: Path, tmp_path: Path) -> None:
    mask = np.zeros((32, 32), dtype=np.uint8)
    mask[:, :16] = 255  # keep the left half
    Image.fromarray(mask).save(tmp_path / "mask.png")
    record, result = _reconstruct(
        tiny, tmp_path / "out", "--task", "inpaint", "--mask", str(tmp_path / "mask.png"), *ILO_FAST
    )
    assert record["operator"]["mask"] == "file" and record["operator"]["mask_path"] == str(tmp_path / "mask.png")
    truth = _pixels(tiny / "image.png").unsqueeze(0) / 255
    assert torch.equal(result["y"][..., 16:], torch.zeros(1, 3, 32, 16))
    assert torch.allclose(result["y"][..., :16], truth[..., :16])


def test_reconstruct_mask_kind_center(tiny: Path, tmp_path: Path) -> None:
    record, result = _reconstruct(
        tiny,
        tmp_path / "out",
        "--task",
        "inpaint",
        "--level",
        "0.75",
        "--mask-kind",
        "center",
        "--method",
        "csgm",
        "--steps",
        "2",
    )
    assert record["operator"]["mask"] == "center"
    assert torch.equal(result["y"][..., 8:24, 8:24], torch.zeros(1, 3, 16, 16))  # a 16x16 hole leaves 75%


def test_reconstruct_resizes_and_converts_when_asked(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wide = np.random.default_rng(2).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / "wide.png")
    err = _error(
        capsys,
        _argv(
            tiny, tmp_path / "refused", "--task", "inpaint", "--level", "0.5", *ILO_FAST, image=tmp_path / "wide.png"
        ),
    )
    assert "wide.png" in err and "48x40" in err and "--resize" in err
    assert not (tmp_path / "refused").exists()

    _, result = _reconstruct(
        tiny,
        tmp_path / "out",
        "--task",
        "inpaint",
        "--level",
        "0.5",
        "--method",
        "csgm",
        "--steps",
        "2",
        "--resize",
        image=tmp_path / "wide.png",
    )
    assert result["reconstruction"].shape == (1, 3, 32, 32)
    input_panel = _pixels(tmp_path / "out" / "comparison.png")[:, 2:34, 70:102]
    expected = np.array(Image.fromarray(wide).crop((4, 0, 44, 40)).resize((32, 32), Image.Resampling.LANCZOS))
    assert (input_panel - torch.from_numpy(expected).permute(2, 0, 1).float()).abs().max() <= 1

    Image.fromarray(np.arange(32 * 32, dtype=np.uint8).reshape(32, 32)).convert("L").save(tmp_path / "grey.png")
    _reconstruct(
        tiny, tmp_path / "grey", "--task", "colorize", "--method", "csgm", "--steps", "2", image=tmp_path / "grey.png"
    )
    grey_panel = _pixels(tmp_path / "grey" / "comparison.png")[:, 2:34, 70:102]
    assert torch.equal(grey_panel[0], grey_panel[1]) and torch.equal(grey_panel[1], grey_panel[2])


def test_reconstruct_rejects_a_text_file_named_png(tiny: Path, tmp_path: Path) -> None:
    """Through the console script: one line on stderr, status 2, no traceback."""
    (tmp_path / "notes.png").write_text("this is not an image\n")
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "sgilo"),
            *_argv(tiny, tmp_path / "out", "--task", "inpaint", "--level", "0.5", image=tmp_path / "notes.png"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("sgilo: error:") and "notes.png" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--layers", "0,1", "--steps", "3,3,3"), "--layers has 2 entries but --steps has 3"),
        (("--steps", "3,3", "--layers", "0,1", "--radii", "5"), "--radii has 1 entries"),
        (("--steps", "3,3", "--layers", "0,9"), "phase layer 9"),
        (("--level", "3", "--task", "sr"), "must divide"),
        (("--level", "1.5"), "must be in (0, 1]"),
        (("--data-step", "langevin"), "data_step langevin needs measurement_std > 0"),  # SGILOConfig's own check
    ],
)
def test_reconstruct_bad_options(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: tuple[str, ...], message: str
) -> None:
    task = () if "--task" in extra else ("--task", "inpaint")
    level = () if "--level" in extra else ("--level", "0.5")
    err = _error(capsys, _argv(tiny, tmp_path / "out", *task, *level, *extra))
    assert message in err
    assert not (tmp_path / "out").exists()


def test_reconstruct_missing_generator(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "reconstruct",
        str(tiny / "image.png"),
        "--task",
        "inpaint",
        "--generator",
        str(tmp_path / "absent.pt"),
        "--out",
        str(tmp_path / "out"),
    ]
    err = _error(capsys, argv)
    assert "absent.pt" in err and "not found" in err


def test_reconstruct_mask_of_the_wrong_size(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    Image.new("L", (16, 16), 255).save(tmp_path / "small_mask.png")
    err = _error(capsys, _argv(tiny, tmp_path / "out", "--task", "inpaint", "--mask", str(tmp_path / "small_mask.png")))
    assert "small_mask.png" in err and "32x32" in err


def test_reconstruct_perceptual_without_lpips_weights(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    err = _error(
        capsys, _argv(tiny, tmp_path / "out", "--task", "inpaint", "--level", "0.5", "--perceptual", "1", *ILO_FAST)
    )
    assert "vgg16" in err and str(tmp_path / "torch_home") in err
    assert not (tmp_path / "out").exists()


def test_reconstruct_bad_steps_is_a_usage_error(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(_argv(tiny, tmp_path / "out", "--task", "inpaint", "--steps", "ten"))
    assert info.value.code == 2
    assert "expected comma-separated ints" in capsys.readouterr().err


@pytest.mark.parametrize("steps", [",", "4.7", "-3"])
def test_reconstruct_empty_fractional_or_negative_steps_are_usage_errors(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main(_argv(tiny, tmp_path / "out", "--task", "inpaint", "--level", "0.5", "--method", "csgm", "--steps", steps))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--steps" in err and "Traceback" not in err


def test_reconstruct_out_must_be_a_folder(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    assert "is a file" in _error(capsys, _argv(tiny, tmp_path / "file", "--task", "inpaint", "--level", "0.5"))


def _score_model(tiny: Path) -> Path:
    """A random latent score model for the tiny generator's layer 2 (16 features + 3 skip channels at 8²)."""
    from sgilo.latents import LatentScaler
    from sgilo.posterior import LatentPrior
    from sgilo.score_model import Preconditioned, ScoreViT
    from sgilo.sde import build_sde

    path = tiny / "score.pt"
    if not path.exists():
        torch.manual_seed(0)
        backbone = ScoreViT((19, 8, 8), width=16, depth=1, heads=2, mlp=32)
        LatentPrior(
            Preconditioned(backbone, build_sde("vp"), data_std=0.3),
            LatentScaler(-torch.ones(19) * 3, torch.ones(19) * 3),
            {"name": "vp", "beta_min": 0.1, "beta_max": 20.0, "dt": 0.01},
            2,
            torch.zeros(1, 8, 16),
        ).save(path)
    return path


def test_reconstruct_sgilo_writes_samples_their_mean_and_spread(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    record, result = _reconstruct(
        tiny,
        out,
        "--task",
        "inpaint",
        "--level",
        "0.3",
        "--method",
        "sgilo",
        *ILO_FAST,
        "--score",
        str(_score_model(tiny)),
        "--samples",
        "3",
        "--prior-steps",
        "4",
        "--temperature",
        "1.0",
    )
    assert record["method"] == "sgilo" and record["chains"] == 3 and record["steps"] == 4 + 3 + 4
    assert [(s["layer"], s["steps"]) for s in record["phases"]] == [(0, 4), (1, 3), (2, 4)]
    assert [s["radius"] for s in record["phases"]] == pytest.approx([None, ILO_DEFAULT[1], None])  # ILO's warm start
    assert result["samples"].shape == (3, 3, 32, 32) and result["std"].shape == (1, 3, 32, 32)
    torch.testing.assert_close(result["reconstruction"][0], result["samples"].mean(0))
    assert float(result["std"].mean()) > 0
    for name in (*OUTPUTS, "samples.png", "std.png"):
        assert (out / name).is_file(), name


def test_reconstruct_gnc_and_prior_errors(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record, result = _reconstruct(
        tiny,
        tmp_path / "gnc",
        "--task",
        "cs",
        "--level",
        "0.2",
        "--method",
        "gnc",
        *ILO_FAST,
        "--score",
        str(_score_model(tiny)),
        "--prior-steps",
        "3",
    )
    assert record["method"] == "gnc" and record["chains"] == 1 and result["samples"].shape == (1, 3, 32, 32)
    assert [s["radius"] for s in record["phases"]] == pytest.approx([None, ILO_DEFAULT[1], None])  # ILO's warm start
    assert (
        "gnc schedule: layer 0 × 4 steps (w+), layer 1 × 3 steps (l1 radius 36.9), layer 2 × 3 steps (the prior)"
        in capsys.readouterr().err
    )
    assert "needs --score" in _error(capsys, _argv(tiny, tmp_path / "x", "--task", "inpaint", "--method", "sgilo"))
    assert "models layer 2" in _error(
        capsys,
        _argv(
            tiny,
            tmp_path / "y",
            "--task",
            "inpaint",
            "--method",
            "sgilo",
            "--steps",
            "2,2",
            "--layers",
            "0,1",
            "--score",
            str(_score_model(tiny)),
        ),
    )
    assert "not an sgilo score model" in _error(
        capsys, _argv(tiny, tmp_path / "z", "--task", "inpaint", "--method", "gnc", "--score", str(tiny / "g.pt"))
    )
    gnc_argv = ["--task", "inpaint", "--method", "gnc", *ILO_FAST, "--score", str(_score_model(tiny))]
    assert "t_min: (0.5) must be <= t_max (0.1)" in _error(
        capsys, _argv(tiny, tmp_path / "w", *gnc_argv, "--t-min", "0.5", "--t-max", "0.1")
    )


def test_a_reconstruction_gone_non_finite_is_a_clean_error_and_writes_nothing(
    tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    import sgilo.cli

    real = sgilo.cli.reconstruct

    def diverging(*args, **kwargs):
        result = real(*args, **kwargs)
        result.failures = ["non-finite loss at step 3 of the layer-1 phase"]
        return result

    monkeypatch.setattr(sgilo.cli, "reconstruct", diverging)
    out = tmp_path / "out"
    err = _error(capsys, _argv(tiny, out, "--task", "inpaint", "--method", "ilo", *ILO_FAST))
    assert (
        "image.png failed (non-finite loss at step 3 of the layer-1 phase); nothing was written" in err
        and "--lr" in err
    )
    assert not out.exists() or not any(out.iterdir())
