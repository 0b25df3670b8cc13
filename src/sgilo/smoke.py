"""Stand-in inputs in the real layouts, with seeded random values, served from 127.0.0.1: the FFHQ smoke run.

The FFHQ profile needs files nobody can fetch offline (FFHQ, NVIDIA's `ffhq.pkl`, the VGG16 and Inception weights).
This module writes files of exactly those layouts, so the download and generator stages fetch, verify and convert
them as they would the real ones, and LPIPS and FID load their backbones from `$TORCH_HOME/hub/checkpoints/`:

- `<served>/ffhq-dataset-v1.json` and `<served>/images1024x1024/00000/00000.png ...`: FFHQ's metadata layout
  (category, image and thumbnail records with sizes and md5s), the images being synthetic faces rendered at the
  profile's resolution; the first half is "training", the rest "validation";
- `<served>/ffhq.pkl`: a stylegan2-ada-pytorch network pickle of the profile's architecture with seeded weights;
- `<torch_home>/hub/checkpoints/vgg16-397923af.pth`, `alexnet-owt-7be5be79.pth` and
  `pt_inception-2015-12-05-6726825d.pth`: torchvision's VGG16 and AlexNet (the LPIPS backbones of the ILO loss and of
  the evaluation) and pytorch-fid's Inception state dicts with seeded values.

`python -m sgilo.smoke --params profiles/ffhq-smoke/params.yaml --workdir smoke-ffhq` writes them, serves `<served>`
on the host and port of the profile's URLs, runs the workflow to `results/table1.csv` in the work folder with
TORCH_HOME pointing at the stand-ins, checks that every cell is present and none failed, and prints each rule's wall
time and peak RSS from Snakemake's benchmark files. Every number such a run produces comes from random weights.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import io
import json
import math
import os
import pickle
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import Tensor

from sgilo.config import Params, load_params
from sgilo.ffhq import METADATA_NAME
from sgilo.io import atomic_path
from sgilo.metrics import FID_WEIGHTS_URL, LPIPS_BACKBONES
from sgilo.nvidia_pickle import STANDIN_KEY
from sgilo.synthfaces import render_face

# Where FFHQ keeps each kind's files, and at what side.
FFHQ_FOLDERS = {"images": ("images1024x1024", 1024), "thumbnails": ("thumbnails128x128", 128)}
PICKLE_NAME = "ffhq.pkl"
SNAKEFILE = Path(__file__).resolve().parents[2] / "Snakefile"
# Carried by the pickle into generator.pt and from there onto every figure and table made with it.
STANDIN_NOTE = "stand-in weights: seeded random values (sgilo.smoke), not a trained network"


# ------------------------------------------------------------------------------------------------ weights
def seeded_state_dict(template: dict[str, Tensor], seed: int) -> dict[str, Tensor]:
    """Random but well-scaled weights for every key of a rosinality-layout state dict (blur kernels kept)."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name in sorted(template):
        value = template[name]
        if name.endswith(".kernel"):
            out[name] = value.clone()
            continue
        noise = torch.randn(value.shape, generator=gen)
        if name.endswith("modulation.bias"):
            noise = 1.0 + 0.1 * noise
        elif name.endswith(("bias", "noise.weight")):
            noise = 0.1 * noise
        out[name] = noise
    return out


def rosinality_to_nvidia(state: dict[str, Tensor], latent_avg: Tensor, size: int) -> dict[str, dict]:
    """The inverse of `sgilo.nvidia_pickle.nvidia_to_rosinality`, as a tree of NVIDIA module dicts."""

    def affine(src: str) -> dict:
        return {
            "_parameters": {"weight": state[f"{src}.weight"], "bias": state[f"{src}.bias"]},
            "_buffers": {},
            "_modules": {},
        }

    def layer(src: str, noise: int) -> dict:
        return {
            "_parameters": {
                "weight": state[f"{src}.conv.weight"][0],
                "bias": state[f"{src}.activate.bias"],
                "noise_strength": state[f"{src}.noise.weight"][0],
            },
            "_buffers": {"noise_const": state[f"noises.noise_{noise}"][0, 0], "resample_filter": torch.ones(4, 4) / 16},
            "_modules": {"affine": affine(f"{src}.conv.modulation")},
        }

    def torgb(src: str) -> dict:
        return {
            "_parameters": {"weight": state[f"{src}.conv.weight"][0], "bias": state[f"{src}.bias"].reshape(3)},
            "_buffers": {},
            "_modules": {"affine": affine(f"{src}.conv.modulation")},
        }

    n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
    mapping = {
        "_parameters": {},
        "_buffers": {"w_avg": latent_avg},
        "_modules": {f"fc{i}": affine(f"style.{i + 1}") for i in range(n_mlp)},
    }
    blocks = {
        "b4": {
            "_parameters": {"const": state["input.input"][0]},
            "_buffers": {},
            "_modules": {"conv1": layer("conv1", 0), "torgb": torgb("to_rgb1")},
        }
    }
    for k in range(3, int(math.log2(size)) + 1):
        blocks[f"b{2**k}"] = {
            "_parameters": {},
            "_buffers": {"resample_filter": torch.ones(4, 4) / 16},
            "_modules": {
                "conv0": layer(f"convs.{2 * k - 6}", 2 * k - 5),
                "conv1": layer(f"convs.{2 * k - 5}", 2 * k - 4),
                "torgb": torgb(f"to_rgbs.{k - 3}"),
            },
        }
    synthesis = {"_parameters": {}, "_buffers": {}, "_modules": blocks, "architecture": "skip"}
    return {"_parameters": {}, "_buffers": {}, "_modules": {"mapping": mapping, "synthesis": synthesis}}


def write_nvidia_pickle(
    path: str | Path,
    tree: dict,
    resolution: int = 1024,
    module_src: str = "raise SystemExit('module_src must never be executed')",
) -> None:
    """Write `{G, D, G_ema, augment_pipe, training_set_kwargs}` the way torch_utils.persistence pickles it.

    Stand-in modules named `torch_utils.persistence` and `dnnlib.util` exist only while pickling, so the file
    references NVIDIA's globals by name exactly as an official pickle does. G and G_ema are one object (the pickle
    stores its tensors once); D is an empty module, as the loader never reads it.
    """
    persistence = types.ModuleType("torch_utils.persistence")
    util = types.ModuleType("dnnlib.util")

    def _reconstruct_persistent_obj(meta):  # never called: the loader must not resolve this for real
        raise AssertionError("unreachable")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict

    class Persistent:
        def __init__(self, class_name: str, node: dict):
            self.meta = {
                "type": "class",
                "version": 6,
                "module_src": module_src,
                "class_name": class_name,
                "state": _state(node),
            }

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    def _state(node: dict) -> dict:
        params = collections.OrderedDict(
            (k, torch.nn.Parameter(v.clone(), requires_grad=False)) for k, v in node["_parameters"].items()
        )
        buffers = collections.OrderedDict((k, v.clone()) for k, v in node["_buffers"].items())
        modules = collections.OrderedDict((k, Persistent(k, v)) for k, v in node["_modules"].items())
        extra = {k: v for k, v in node.items() if not k.startswith("_")}
        # Real NVIDIA modules carry numpy float64 gains (weight_gain, act_gain) in their __dict__.
        return {
            "training": False,
            "weight_gain": np.float64(0.125),
            "act_gain": np.sqrt(np.float64(2.0)),
            "_parameters": params,
            "_buffers": buffers,
            "_modules": modules,
            "_non_persistent_buffers_set": set(),
            **extra,
        }

    generator = Persistent("Generator", tree)
    payload = {
        "G": generator,
        "D": Persistent("Discriminator", {"_parameters": {}, "_buffers": {}, "_modules": {}}),
        "G_ema": generator,
        "augment_pipe": None,
        "training_set_kwargs": EasyDict(resolution=resolution, path="ffhq.zip"),
        STANDIN_KEY: STANDIN_NOTE,
    }
    saved = {
        name: sys.modules.get(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")
    }
    sys.modules.update(
        {
            "torch_utils": types.ModuleType("torch_utils"),
            "torch_utils.persistence": persistence,
            "dnnlib": types.ModuleType("dnnlib"),
            "dnnlib.util": util,
        }
    )
    try:
        with atomic_path(Path(path)) as tmp, open(tmp, "wb") as handle:
            pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def write_generator_pickle(path: Path, architecture: dict[str, int], seed: int) -> None:
    """An NVIDIA-layout pickle of a generator of `architecture` with seeded weights and a seeded w_avg."""
    from sgilo.stylegan2 import Generator

    template = Generator(**architecture).state_dict()
    state = seeded_state_dict(template, seed)
    latent_avg = 0.1 * torch.randn(architecture["style_dim"], generator=torch.Generator().manual_seed(seed + 1))
    write_nvidia_pickle(path, rosinality_to_nvidia(state, latent_avg, architecture["size"]), architecture["size"])


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    # torchvision and pytorch-fid initialise their modules from the global generator.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def torchvision_state_dict(name: str, seed: int) -> dict[str, Tensor]:
    """torchvision's `name` (vgg16: the LPIPS-VGG backbone of the ILO loss; alexnet: LPIPS-Alex of the evaluation)
    keys and shapes, torchvision's initialisation, seeded."""
    import torchvision

    with _seeded(seed):
        return getattr(torchvision.models, name)(weights=None).state_dict()


def fid_inception_state_dict(seed: int) -> dict[str, Tensor]:
    """pytorch-fid's FID Inception keys and shapes, torchvision's initialisation, seeded.

    pytorch-fid builds the network and loads the weights in one function (`fid_inception_v3`); the network is
    taken from it just before the load, so the keys are exactly the ones it will ask for.
    """
    from unittest import mock

    from pytorch_fid import inception

    built: list[torch.nn.Module] = []
    build = inception._inception_v3

    def keep(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    class _Built(Exception):
        pass

    with (
        _seeded(seed),
        mock.patch.object(inception, "_inception_v3", keep),
        mock.patch.object(inception, "load_state_dict_from_url", side_effect=_Built),
    ):
        try:
            inception.fid_inception_v3()
        except _Built:
            pass
    if not built:
        raise RuntimeError(
            "pytorch_fid.inception.fid_inception_v3 no longer builds through _inception_v3; update sgilo.smoke"
        )
    return built[0].state_dict()


def write_torch_weights(torch_home: Path, seed: int) -> list[Path]:
    """The LPIPS-VGG, LPIPS-Alex and FID Inception weight files under `<torch_home>/hub/checkpoints/`, seeded."""
    folder = torch_home / "hub" / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for url, build in (
        (LPIPS_BACKBONES["vgg"], partial(torchvision_state_dict, "vgg16")),
        (LPIPS_BACKBONES["alex"], partial(torchvision_state_dict, "alexnet")),
        (FID_WEIGHTS_URL, fid_inception_state_dict),
    ):
        path = folder / url.rsplit("/", 1)[1]
        if not path.is_file():
            with atomic_path(path) as tmp:
                torch.save(build(seed), tmp)
        written.append(path)
    return written


# ------------------------------------------------------------------------------------------------ FFHQ
def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _record(url: str, file_path: str, data: bytes, pixels: np.ndarray) -> dict:
    return {
        "file_url": url,
        "file_path": file_path,
        "file_size": len(data),
        "file_md5": hashlib.md5(data).hexdigest(),
        "pixel_size": list(pixels.shape[:2]),
        "pixel_md5": hashlib.md5(pixels.tobytes()).hexdigest(),
    }


def write_ffhq(served: Path, count: int, resolution: int, seed: int, base_url: str) -> Path:
    """FFHQ's metadata and ids 0..count-1 as images (and thumbnails) at their `file_path`s.

    The images are synthetic faces rendered at `resolution` (FFHQ's is 1024). The first half of the ids is
    "training" and the rest "validation" (FFHQ draws that line at 60,000), so a few ids hold both splits.
    """
    n_train = max(1, count // 2)
    metadata = {}
    for idx in range(count):
        pixels, _ = render_face(seed, idx, resolution)
        records = {}
        for kind, (folder, side) in FFHQ_FOLDERS.items():
            view = (
                pixels
                if side == resolution
                else np.asarray(Image.fromarray(pixels).resize((side, side), Image.LANCZOS))
            )
            file_path = f"{folder}/{idx // 1000 * 1000:05d}/{idx:05d}.png"
            data = _png(view)
            target = served / file_path
            target.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(target) as tmp:
                tmp.write_bytes(data)
            records[kind] = _record(f"{base_url}/{file_path}", file_path, data, view)
        metadata[str(idx)] = {
            "category": "training" if idx < n_train else "validation",
            "metadata": {
                "photo_url": "",
                "photo_title": f"synthetic face {idx} (sgilo smoke run)",
                "author": "sgilo.synthfaces",
                "country": "",
                "license": "Public Domain Mark",
                "license_url": "",
                "date_uploaded": "",
                "date_crawled": "",
            },
            "image": records["images"],
            "thumbnail": records["thumbnails"],
        }
    path = served / METADATA_NAME
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(metadata, indent=2))
    return path


def write_standins(params: Params, served: Path, torch_home: Path, seed: int = 0) -> None:
    """Every stand-in a profile with `download.dataset: ffhq` and `generator.source: pretrained` needs."""
    f = params.download.ffhq
    base = _server_address(params)
    if not (served / METADATA_NAME).is_file():
        write_ffhq(served, f.index_stop, params.download.resolution, seed, f"http://{base[0]}:{base[1]}")
    if not (served / PICKLE_NAME).is_file():
        write_generator_pickle(served / PICKLE_NAME, dict(vars(params.generator.architecture)), seed)
    write_torch_weights(torch_home, seed)


# ------------------------------------------------------------------------------------------------ server
def _server_address(params: Params) -> tuple[str, int]:
    """The one local host:port that every URL of the profile points at (refused otherwise: nothing else is served)."""
    urls = {
        "download.ffhq.mirror_url": params.download.ffhq.mirror_url,
        "download.ffhq.metadata_url": params.download.ffhq.metadata_url,
        "generator.pretrained.url": params.generator.pretrained.url,
    }
    hosts = {}
    for key, url in urls.items():
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost") or parts.port is None:
            raise SystemExit(
                f"error: {key} = {url!r}: the smoke run serves its stand-ins on 127.0.0.1:<port>; "
                "point every URL of the profile there"
            )
        hosts[key] = (parts.hostname, parts.port)
    if len(set(hosts.values())) != 1:
        raise SystemExit(f"error: the profile's URLs point at more than one server: {hosts}")
    if urlsplit(params.generator.pretrained.url).path.lstrip("/") != PICKLE_NAME:
        raise SystemExit(f"error: generator.pretrained.url must end in /{PICKLE_NAME} for the smoke server")
    return next(iter(hosts.values()))


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args) -> None:  # one line per file would bury Snakemake's output
        pass


@contextmanager
def serve(folder: Path, host: str, port: int) -> Iterator[str]:
    """Serve `folder` over HTTP on host:port in a background thread while the block runs."""
    server = ThreadingHTTPServer((host, port), partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_workflow(
    params_file: Path, workdir: Path, torch_home: Path, cores: str = "all", extra: Sequence[str] = (), **kwargs
) -> subprocess.CompletedProcess:
    """`snakemake results/table1.csv` for a params file, writing in `workdir`, with TORCH_HOME at the stand-ins."""
    if not SNAKEFILE.is_file():
        raise SystemExit(
            f"error: no Snakefile at {SNAKEFILE}: run the smoke run from a clone installed with `pip install -e .`"
        )
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        "--cores",
        str(cores),
        *extra,
        "results/table1.csv",
        "--configfile",
        str(Path(params_file).resolve()),
    ]
    return subprocess.run(command, env={**os.environ, "TORCH_HOME": str(torch_home)}, check=False, **kwargs)


# ------------------------------------------------------------------------------------------------ checks
def check_table(table: Path, params: Params) -> pd.DataFrame:
    """Every task × level × method of the profile has a row, and no row counts a failed image."""
    frame = pd.read_csv(table)
    expected = {
        (t.task, float(level), method)
        for t in params.evaluate.tasks
        for level in t.levels
        for method in params.evaluate.methods
    }
    present = {(row.task, float(row.level), row.method) for row in frame.itertuples()}
    missing = expected - present
    if missing:
        raise SystemExit(f"error: {table} lacks the cells {sorted(missing)}")
    failed = frame[frame["failed"] > 0]
    if len(failed):
        raise SystemExit(f"error: {table}: cells with failed images:\n{failed.to_string(index=False)}")
    return frame


def benchmark_table(folder: Path) -> pd.DataFrame:
    """Snakemake's benchmark files (one per job) as one table: job, wall seconds, peak RSS in MiB."""
    rows = []
    for path in sorted(folder.rglob("*.tsv")):
        frame = pd.read_csv(path, sep="\t")
        rows.append(
            {
                "job": str(path.relative_to(folder).with_suffix("")),
                "wall_s": float(frame["s"].iloc[-1]),
                "max_rss_mib": float(frame["max_rss"].iloc[-1]) if str(frame["max_rss"].iloc[-1]) != "-" else math.nan,
            }
        )
    return pd.DataFrame(rows, columns=["job", "wall_s", "max_rss_mib"])


def against_model(jobs: pd.DataFrame, params: Params) -> pd.DataFrame:
    """Per rule: measured job-seconds and largest RSS next to what `sgilo.resources` predicts for a CPU."""
    from sgilo.resources import DEVICES, estimate

    rule_of = jobs["job"].str.split("/").str[0]  # logs/benchmarks/<rule>.tsv or <rule>/<wildcards>.tsv
    measured = (
        jobs.assign(rule=rule_of)
        .groupby("rule")
        .agg(jobs=("job", "size"), seconds=("wall_s", "sum"), rss_gib=("max_rss_mib", "max"))
    )
    measured["rss_gib"] /= 1024
    rows = []
    for row in estimate(params, DEVICES["cpu"]):
        if row.rule in measured.index:
            m = measured.loc[row.rule]
            rows.append(
                {
                    "rule": row.rule,
                    "jobs": int(m.jobs),
                    "seconds": m.seconds,
                    "model_seconds": row.hours * 3600,
                    "rss_gib": m.rss_gib,
                    "model_ram_gib": row.ram_gib,
                }
            )
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("profiles/ffhq-smoke/params.yaml"))
    parser.add_argument(
        "--workdir", type=Path, default=Path("smoke-ffhq"), help="where the run writes (data/, results/, logs/)"
    )
    parser.add_argument("--cores", default="all", help="snakemake --cores")
    parser.add_argument("--seed", type=int, default=0, help="seed of the stand-in images and weights")
    parser.add_argument("--build-only", action="store_true", help="write the stand-ins and stop")
    parser.add_argument("snakemake_args", nargs="*", help="more snakemake arguments, after --")
    args = parser.parse_args(argv)
    params_file = args.params.resolve()
    params = load_params(params_file)
    if params.download.dataset != "ffhq" or params.generator.source != "pretrained":
        raise SystemExit(
            f"error: {params_file}: the smoke run is for FFHQ profiles (download.dataset: ffhq, generator.source: pretrained)"
        )
    workdir = args.workdir.resolve()
    served, torch_home = workdir / "standins" / "served", workdir / "standins" / "torch"
    started = time.perf_counter()
    write_standins(params, served, torch_home, args.seed)
    print(f"stand-ins ready in {time.perf_counter() - started:.0f} s: {served}, {torch_home}", flush=True)
    if args.build_only:
        return
    host, port = _server_address(params)
    started = time.perf_counter()
    with serve(served, host, port):
        done = run_workflow(params_file, workdir, torch_home, args.cores, args.snakemake_args)
    wall = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(
            f"error: snakemake exited with {done.returncode} after {wall:.0f} s; logs in {workdir / 'logs'}"
        )
    check_table(workdir / "results" / "table1.csv", params)
    jobs = benchmark_table(workdir / "logs" / "benchmarks")
    print(jobs.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    print("\nMeasured against the resource model (sgilo.resources, device cpu):")
    print(against_model(jobs, params).to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    print(
        f"\nsmoke run passed in {wall / 60:.1f} min on {os.cpu_count()} CPUs "
        f"(torch CPU capability {torch.backends.cpu.get_cpu_capability()}); every number in {workdir / 'results'} "
        "comes from random weights"
    )


if __name__ == "__main__":
    main()
