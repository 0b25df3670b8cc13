"""The `sgilo` console script."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from PIL import Image
from stylegan_helpers import CONFIGS, rosinality_to_nvidia, seeded_state_dict, write_nvidia_pickle

from sgilo.cli import main
from sgilo.stylegan2 import Generator, load_generator


def test_console_script_lists_its_commands():
    result = subprocess.run([str(Path(sys.executable).parent / "sgilo"), "--help"], capture_output=True, text=True, check=True)
    for command in ("check-params", "convert", "sample"):
        assert command in result.stdout


def test_convert_then_sample(tmp_path):
    state = seeded_state_dict(Generator(**CONFIGS["s32"]).state_dict(), seed=8)
    write_nvidia_pickle(tmp_path / "net.pkl", rosinality_to_nvidia(state, torch.zeros(64), 32))
    main(["convert", str(tmp_path / "net.pkl"), "--out", str(tmp_path / "ours.pt")])
    converted = load_generator(tmp_path / "ours.pt")
    assert torch.equal(converted.state_dict()["to_rgbs.2.conv.weight"], state["to_rgbs.2.conv.weight"])

    main(["sample", "--generator", str(tmp_path / "ours.pt"), "--out", str(tmp_path / "grid.png"), "--n", "4", "--seed", "1"])
    first = Image.open(tmp_path / "grid.png").tobytes()
    main(["sample", "--generator", str(tmp_path / "ours.pt"), "--out", str(tmp_path / "grid.png"), "--n", "4", "--seed", "1"])
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
