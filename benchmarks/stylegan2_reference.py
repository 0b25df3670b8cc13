"""The StyleGAN2 reference fixture and the comparison with NVIDIA's code, made again from that code.

`tests/fixtures/stylegan2_reference.safetensors` holds what rosinality/stylegan2-pytorch's model.py (commit bef283a)
computed on the CPU for the seeded weights and inputs of `tests/stylegan_helpers.py`; docs/generator.md's comparison
with NVIDIA's own code used NVlabs/stylegan2-ada-pytorch (commit d72cc7d). Neither code is part of this project:
clone it yourself; this script imports it from the path given and copies or fetches nothing.

    git clone https://github.com/rosinality/stylegan2-pytorch && git -C stylegan2-pytorch checkout bef283a
    python benchmarks/stylegan2_reference.py --rosinality stylegan2-pytorch --write tests/fixtures/stylegan2_reference.safetensors

    git clone https://github.com/NVlabs/stylegan2-ada-pytorch && git -C stylegan2-ada-pytorch checkout d72cc7d
    python benchmarks/stylegan2_reference.py --nvidia stylegan2-ada-pytorch

    python benchmarks/stylegan2_reference.py --smoke      # no checkout: the committed fixture stands in, s32 only

For each generator of the fixture (s32, s64, config_f; `--configs` picks), the reference code gets the same seeded
weights, loaded into its own modules under its own names (its blur and resample filters stay its own), and the same
inputs, and computes the fixture's entries: the mapping of z, the synthesis of a w+ with explicit per-image noise, and
the image of z truncated at ψ = 0.7 (1024² images as a 32² average pool and a full-resolution 16² crop). The table
gives each entry's max abs difference from ours, loaded by `load_generator` from a rosinality checkpoint; with
--nvidia also from a pickle that NVIDIA's own `persistence` module wrote of its Generator (what `ffhq.pkl` is).
`--write FILE` saves the reference's entries in the fixture's layout: the same keys, shapes and metadata key.

How each code runs on the CPU:
- rosinality: its `op` package compiles CUDA kernels when imported; `torch.utils.cpp_extension.load` is replaced while
  it is imported (only its CUDA paths would call the kernels, and anything that did fails naming them). Its channel
  table is fixed; a subclass caps it at the config's channel_max as the Generator assigns it (s32 has 64 channels).
- NVIDIA: `training.networks.Generator` with num_fp16_res=0, conv_clamp=None, architecture 'skip' and channel_base
  16384 × channel_multiplier; its ops take their reference paths off CUDA. Its synthesis has no per-image noise, so
  each image is synthesised alone with its noise maps as the layers' noise_const (noise_mode='const').

CI has neither code: tests/test_benchmarks.py runs --smoke and checks the message a missing checkout gets. The session
that wrote this ran it with `--configs s32,s64` on both codes at those commits (exported from snapshots of the public
repositories, not committed here): every entry within 2.0e-5 of ours, w identical, the same errors for ours loaded from
NVIDIA's pickle; the entries it computed were within 1.4e-5 of the committed fixture's, from either code.
config_f (a 1024² synthesis per image in the reference code) was not run there.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import pickle
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import torch
from torch import Tensor

from _common import add_smoke, names_from, smoke_run

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from sgilo.io import load_safetensors, save_safetensors
from sgilo.smoke import rosinality_to_nvidia
from sgilo.stylegan2 import load_generator

from stylegan_helpers import (  # the fixture's weights, inputs and layout, as the tests use them
    CONFIGS,
    INPUT_SEED,
    TRUNCATION_PSI,
    fixture_outputs,
    reference_views,
    seeded_inputs,
    seeded_weights,
)

FIXTURE = REPO / "tests" / "fixtures" / "stylegan2_reference.safetensors"
# code → (repository, the commit the fixture or docs/generator.md's table came from, a file that marks a checkout)
CODES = {
    "rosinality": ("rosinality/stylegan2-pytorch", "bef283a", "model.py"),
    "nvidia": ("NVlabs/stylegan2-ada-pytorch", "d72cc7d", "training/networks.py"),
}
Outputs = dict[str, Tensor]


def checkout_problem(code: str, path: Path) -> str | None:
    """Why `path` is not a checkout of `code`'s repository, with the commands that make one; None if it is."""
    repository, commit, marker = CODES[code]
    if (path / marker).is_file():
        return None
    return (
        f"--{code} {path}: no {marker} there. This script imports {repository}'s code from your own checkout (it is "
        f"not part of this project): git clone https://github.com/{repository} {path} && git -C {path} checkout {commit}"
    )


def describe(code: str, path: Path) -> str:
    """The metadata line of a fixture written from `path`: repository, its commit, the file, how it ran."""
    repository, commit, marker = CODES[code]
    head = subprocess.run(
        ["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    found = head.stdout.strip() if head.returncode == 0 else "unknown commit"
    if not found.startswith(commit):
        print(
            f"note: {path} is at {found}, not {commit} (the commit the fixture or the docs' table came from)",
            file=sys.stderr,
        )
    how = "CPU fallbacks" if code == "rosinality" else "CPU reference ops"
    return f"{repository}@{found} {marker}, {how}"


def import_from(path: Path, module: str):
    """`module` from the checkout at `path`, which is first on sys.path only while it imports."""
    sys.path.insert(0, str(path))
    try:
        return importlib.import_module(module)
    finally:
        sys.path.remove(str(path))


def load_own_names(module: torch.nn.Module, weights: dict[str, Tensor], constants: str) -> None:
    """`weights` into a reference module under its own names, every key but its filter constants (names ending in
    `constants`), which stay its own; any other key it has and `weights` lacks stops the run."""
    own = module.state_dict()
    missing = [k for k in own if k not in weights and not k.endswith(constants)]
    if missing:
        sys.exit(
            f"{type(module).__name__} has keys the seeded weights lack: {missing[:6]}; is the checkout at the right commit?"
        )
    module.load_state_dict({k: v if k.endswith(constants) else weights[k] for k, v in own.items()})


# --------------------------------------------------------------------------------------------- rosinality/stylegan2-pytorch
class _NoCompiledOps:
    """Stands in for the CUDA extensions rosinality's `op` package compiles when imported; its CPU paths never call them."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.name = args[0] if args else kwargs.get("name", "?")

    def __getattr__(self, attribute: str):
        raise RuntimeError(f"rosinality's compiled op {self.name}.{attribute} was called: only its CUDA paths use it")


def rosinality_outputs(
    path: Path,
    name: str,
    weights: dict[str, Tensor],
    latent_avg: Tensor,
    z: Tensor,
    w_plus: Tensor,
    noise: list[Tensor],
) -> tuple[Outputs, Outputs | None]:
    with mock.patch("torch.utils.cpp_extension.load", _NoCompiledOps):
        model = import_from(path, "model")
    config = CONFIGS[name]

    class Capped(model.Generator):
        def __setattr__(self, key: str, value: object) -> None:
            if key == "channels":  # the fixed table, capped as it is assigned (rosinality has no channel_max)
                value = {res: min(channels, config["channel_max"]) for res, channels in value.items()}
            super().__setattr__(key, value)

    generator = Capped(
        config["size"], config["style_dim"], config["n_mlp"], channel_multiplier=config["channel_multiplier"]
    ).eval()
    load_own_names(generator, weights, ".kernel")
    with torch.no_grad():
        return {
            "w": generator.style(z),
            "image": generator([w_plus], input_is_latent=True, noise=noise, randomize_noise=False)[0],
            "image_trunc": generator(
                [z], truncation=TRUNCATION_PSI, truncation_latent=latent_avg, noise=noise, randomize_noise=False
            )[0],
        }, None


# ---------------------------------------------------------------------------------------------- NVlabs/stylegan2-ada-pytorch
def flatten(tree: dict, prefix: str = "") -> dict[str, Tensor]:
    """A `rosinality_to_nvidia` tree of module dicts as NVIDIA's state_dict names."""
    flat = {prefix + k: v for group in ("_parameters", "_buffers") for k, v in tree[group].items()}
    for child, subtree in tree["_modules"].items():
        flat.update(flatten(subtree, f"{prefix}{child}."))
    return flat


def nvidia_outputs(
    path: Path,
    name: str,
    weights: dict[str, Tensor],
    latent_avg: Tensor,
    z: Tensor,
    w_plus: Tensor,
    noise: list[Tensor],
) -> tuple[Outputs, Outputs]:
    networks = import_from(path, "training.networks")
    config = CONFIGS[name]
    synthesis = {
        "channel_base": 16384 * config["channel_multiplier"],
        "channel_max": config["channel_max"],
        "num_fp16_res": 0,
        "conv_clamp": None,
        "architecture": "skip",
    }
    generator = networks.Generator(
        z_dim=config["style_dim"],
        c_dim=0,
        w_dim=config["style_dim"],
        img_resolution=config["size"],
        img_channels=3,
        mapping_kwargs={"num_layers": config["n_mlp"]},
        synthesis_kwargs=synthesis,
    )
    generator = generator.eval().requires_grad_(False)

    def load(noise_maps: list[Tensor]) -> None:
        per_image = {**weights, **{f"noises.noise_{i}": n for i, n in enumerate(noise_maps)}}
        load_own_names(
            generator, flatten(rosinality_to_nvidia(per_image, latent_avg, config["size"])), "resample_filter"
        )

    with torch.no_grad():
        images, truncated = [], []
        for b in range(len(z)):
            load([n[b : b + 1] for n in noise])
            images.append(generator.synthesis(w_plus[b : b + 1], noise_mode="const"))
            truncated.append(generator(z[b : b + 1], None, truncation_psi=TRUNCATION_PSI, noise_mode="const"))
        outputs = {
            "w": generator.mapping(z, None)[:, 0],
            "image": torch.cat(images),
            "image_trunc": torch.cat(truncated),
        }
    with tempfile.TemporaryDirectory() as folder:
        pickled = Path(folder) / "network.pkl"
        with open(pickled, "wb") as handle:
            pickle.dump({"G_ema": generator}, handle)  # through NVIDIA's persistence, as its training loop saves
        from_pickle = load_generator(pickled)
    return outputs, fixture_outputs(from_pickle, z, w_plus, noise)


# ----------------------------------------------------------------------------------------------------------- the comparison
Reference = Callable[[str, dict[str, Tensor], Tensor, Tensor, Tensor, list[Tensor]], tuple[Outputs, Outputs | None]]


def compare(reference: Reference, names: list[str]) -> tuple[dict[str, Tensor], list[tuple[str, float, float | None]]]:
    """The reference's fixture entries for `names`, and per entry (key, max abs error of ours, of ours from its pickle)."""
    entries, rows = {}, []
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            weights, latent_avg = seeded_weights(name)
            checkpoint = Path(folder) / f"{name}.pt"
            torch.save({"g_ema": weights, "latent_avg": latent_avg}, checkpoint)  # as tests/test_stylegan2.py loads it
            ours = load_generator(checkpoint)
            z, w_plus, noise = seeded_inputs(ours, seed=INPUT_SEED)
            theirs, from_pickle = reference(name, weights, latent_avg, z, w_plus, noise)
            views = reference_views(name, theirs)
            mine = reference_views(name, fixture_outputs(ours, z, w_plus, noise))
            pickled = reference_views(name, from_pickle) if from_pickle is not None else {}
            for key, view in views.items():
                rows.append((key, _error(mine[key], view), _error(pickled[key], view) if pickled else None))
            entries.update(views)
    return entries, rows


def committed_fixture(name: str, *_: object) -> tuple[Outputs, None]:
    """--smoke's stand-in for a reference code: the committed fixture's entries, as outputs `reference_views` gives back."""
    if CONFIGS[name]["size"] > 64:
        sys.exit("--smoke stands the fixture in for the code at 32² and 64² only")
    stored, _ = load_safetensors(FIXTURE)
    return {tag: stored[f"{name}.{tag}"] for tag in ("w", "image", "image_trunc")}, None


def _error(a: Tensor, b: Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


def write(entries: dict[str, Tensor], path: Path, description: str) -> None:
    """The fixture's layout: its keys and shapes (checked against the committed file's) and its metadata key."""
    committed, _ = load_safetensors(FIXTURE)
    expected = {
        k: tuple(v.shape) for k, v in committed.items() if k.split(".")[0] in {key.split(".")[0] for key in entries}
    }
    written = {k: tuple(v.shape) for k, v in entries.items()}
    if written != expected:
        sys.exit(
            f"the entries do not have the committed fixture's keys and shapes: {sorted(set(written.items()) ^ set(expected.items()))[:6]}"
        )
    save_safetensors({k: v.float().contiguous() for k, v in entries.items()}, path, metadata={"reference": description})
    print(
        f"\nwrote {path}: {len(entries)} entries, the committed fixture's keys and shapes; metadata reference = {description!r}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    code = parser.add_mutually_exclusive_group()
    code.add_argument(
        "--rosinality", type=Path, metavar="CHECKOUT", help="a checkout of rosinality/stylegan2-pytorch (bef283a)"
    )
    code.add_argument(
        "--nvidia", type=Path, metavar="CHECKOUT", help="a checkout of NVlabs/stylegan2-ada-pytorch (d72cc7d)"
    )
    parser.add_argument(
        "--configs", type=names_from(list(CONFIGS)), default=list(CONFIGS), help="comma-separated, of s32,s64,config_f"
    )
    parser.add_argument(
        "--write", type=Path, metavar="FILE", help="save the reference's entries here, in the fixture's layout"
    )
    add_smoke(parser)
    args = parser.parse_args()
    if args.smoke:
        if args.rosinality or args.nvidia:
            parser.error("--smoke runs without a checkout; leave out --rosinality and --nvidia")
        folder = tempfile.TemporaryDirectory(prefix="sgilo-reference-")
        smoke_run(args, configs=["s32"], write=Path(folder.name) / "fixture.safetensors")
    elif not (args.rosinality or args.nvidia):
        parser.error("give --rosinality CHECKOUT or --nvidia CHECKOUT (or --smoke)")
    elif args.write and args.configs != list(CONFIGS):
        parser.error(f"--write writes the whole fixture: leave out --configs (it has {', '.join(CONFIGS)})")
    chosen = "rosinality" if args.rosinality else "nvidia" if args.nvidia else None
    if chosen:
        path = getattr(args, chosen)
        problem = checkout_problem(chosen, path)
        if problem:
            parser.error(problem)
        description = describe(chosen, path)
        run = rosinality_outputs if chosen == "rosinality" else nvidia_outputs
        reference: Reference = functools.partial(run, path.resolve())
    else:
        description, reference = f"the committed {FIXTURE.relative_to(REPO)} (--smoke)", committed_fixture

    entries, rows = compare(reference, args.configs)
    print(
        f"reference: {description}; ours: sgilo.stylegan2 through load_generator, torch {torch.__version__}, CPU; "
        f"tests/test_stylegan2.py allows 1e-3\n"
    )
    print("| entry | shape | max abs error, ours | max abs error, ours from the reference's own pickle |")
    print("|---|---|---|---|")
    for key, error, from_pickle in rows:
        shown = "–" if from_pickle is None else f"{from_pickle:.1e}"
        print(f"| {key} | {'×'.join(map(str, entries[key].shape))} | {error:.1e} | {shown} |")
    print(f"\nlargest: {max(error for _, error, _ in rows):.1e} over {len(rows)} entries")
    if args.write:
        write(entries, args.write, description)


if __name__ == "__main__":
    main()
