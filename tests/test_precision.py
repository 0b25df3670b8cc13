"""Precision that fits the hardware: `auto` is bf16 only where it is native, an explicit bf16 elsewhere warns with a
measured factor, and the stages record what they resolved to. The CPU's capability is mocked, so both branches run
on any machine."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import replace

import pytest
import torch

from sgilo import precision
from sgilo.config import ArchitectureConfig
from sgilo.gan import GANTrainer
from sgilo.inversion import LayerPhase, Options, invert
from sgilo.precision import autocast, resolve
from sgilo.stylegan2 import Generator

from conftest import demo_params

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_messages():
    # resolve() says each thing once per process; every test here must see its own messages.
    precision._log_once.cache_clear()
    precision._warn_slow_bf16.cache_clear()
    yield
    precision._log_once.cache_clear()
    precision._warn_slow_bf16.cache_clear()


def _cpu(monkeypatch, *, avx512_bf16: bool, amx: bool = False) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)


@pytest.mark.parametrize(
    ("avx512_bf16", "amx", "expected"), [(False, False, "fp32"), (True, False, "bf16"), (False, True, "bf16")]
)
def test_auto_is_bf16_only_on_a_cpu_with_native_bf16(monkeypatch, caplog, avx512_bf16, amx, expected):
    _cpu(monkeypatch, avx512_bf16=avx512_bf16, amx=amx)
    with caplog.at_level(logging.INFO, logger="sgilo"):
        assert resolve("auto", CPU, "invert.precision") == expected
    assert f"invert.precision: auto → {expected}" in caplog.text
    assert torch.backends.cpu.get_cpu_capability() in caplog.text  # the log says which hardware decided


@pytest.mark.parametrize("native", [False, True])
def test_auto_on_cuda_follows_the_device(monkeypatch, native):
    monkeypatch.setattr(
        torch.cuda, "is_bf16_supported", lambda including_emulation=True: native and not including_emulation
    )
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "a GPU")
    assert resolve("auto", torch.device("cuda"), "score.precision") == ("bf16" if native else "fp32")


def test_explicit_bf16_without_native_support_runs_and_warns_with_the_measured_factor(monkeypatch, caplog):
    _cpu(monkeypatch, avx512_bf16=False)
    monkeypatch.setattr(precision, "bf16_slowdown", lambda device: 23.5)
    with caplog.at_level(logging.INFO, logger="sgilo"):
        assert resolve("bf16", CPU, "generator.train.precision") == "bf16"
        resolve("bf16", CPU, "generator.train.precision")  # a stage resolves per batch: one warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "23.5× slower" in warnings[0].getMessage() and "generator.train.precision" in warnings[0].getMessage()


def test_explicit_bf16_with_native_support_says_nothing(monkeypatch, caplog):
    _cpu(monkeypatch, avx512_bf16=True)
    with caplog.at_level(logging.INFO, logger="sgilo"):
        assert resolve("bf16", CPU, "invert.precision") == "bf16"
    assert not caplog.records


def test_the_slowdown_is_measured_not_assumed():
    factor = precision.bf16_slowdown(CPU, repeats=1)
    assert math.isfinite(factor) and factor > 0
    if not precision.cpu_has_native_bf16():
        assert factor > 1.5, f"bf16 autocast without native support measured only {factor:.2f}× slower"


def test_tf32_off_cuda_is_fp32_and_says_so(caplog):
    with caplog.at_level(logging.INFO, logger="sgilo"):
        assert resolve("tf32", CPU, "evaluate.precision") == "fp32"
    assert "tf32 exists on CUDA devices only" in caplog.text


def test_unknown_and_unresolved_precisions_are_refused():
    with pytest.raises(ValueError, match="invert.precision must be one of"):
        resolve("fp16", CPU, "invert.precision")
    with pytest.raises(ValueError, match="resolved precision"), autocast("auto", CPU):
        pass


def test_the_trainer_autocasts_as_auto_resolves(monkeypatch):
    architecture = ArchitectureConfig(size=8, style_dim=16, n_mlp=1, channel_multiplier=1, channel_max=8)
    for native, expected in [(False, "fp32"), (True, "bf16")]:
        _cpu(monkeypatch, avx512_bf16=native)
        trainer = GANTrainer(
            architecture,
            replace(demo_params().generator.train, batch_size=2, disc_channel_max=8, precision="auto"),
            seed=0,
        )
        assert trainer.precision == expected
        with autocast(trainer.precision, CPU):
            assert torch.get_autocast_dtype("cpu") == torch.bfloat16 or expected == "fp32"
            assert torch.is_autocast_enabled("cpu") == (expected == "bf16")


def test_invert_with_auto_computes_what_the_resolved_precision_computes(monkeypatch):
    torch.manual_seed(0)
    generator = Generator(size=8, style_dim=8, n_mlp=1, channel_multiplier=1, channel_max=8).eval()
    generator.fit_gaussian(500, torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = (generator(torch.randn(2, 8, generator=torch.Generator().manual_seed(1))).clamp(-1, 1) + 1) / 2
    phases = (LayerPhase(0, 3), LayerPhase(1, 2, radius=10.0))

    def run(requested: str) -> torch.Tensor:
        return invert(generator, lambda x: x, y, [5, 6], phases, Options(precision=requested)).image

    for native, same_as, other in [(False, "fp32", "bf16"), (True, "bf16", "fp32")]:
        _cpu(monkeypatch, avx512_bf16=native)
        auto = run("auto")
        assert torch.equal(auto, run(same_as))
        assert not torch.equal(
            auto, run(other)
        )  # the two precisions do differ here, so the check above means something


def test_the_generator_stage_records_its_resolved_precision(tmp_path):
    from conftest import run_stage, write_params

    params = write_params(tmp_path / "params.yaml", {"generator": {"train": {"steps": 2, "precision": "auto"}}})
    run_stage("download", "--params", str(params), "--out", str(tmp_path / "synthfaces"), cwd=tmp_path)
    result = run_stage(
        "generator",
        "--params",
        str(params),
        "--data",
        str(tmp_path / "synthfaces"),
        *("--generator", str(tmp_path / "generator" / "generator.pt"), "--samples", str(tmp_path / "samples.png")),
        *("--metrics", str(tmp_path / "generator" / "metrics.json"), "--history", str(tmp_path / "history.csv")),
        cwd=tmp_path,
    )
    metrics = json.loads((tmp_path / "generator" / "metrics.json").read_text())
    expected = "bf16" if precision.cpu_has_native_bf16() else "fp32"
    assert metrics["precision"] == expected
    assert metrics["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert f"generator.train.precision: auto → {expected}" in result.stderr
