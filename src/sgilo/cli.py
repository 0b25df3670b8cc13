"""`sgilo`: the command line for practitioners. The pipeline itself runs through Snakemake (see README)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from sgilo.allocator import retain_freed_memory
from sgilo.config import GNCConfig, SGILOConfig, load_params
from sgilo.data import DataError, load_user_image, save_image_grid
from sgilo.inversion import LayerPhase, Options, ilo_radii
from sgilo.io import CheckpointError, DiskFullError, save_json, save_safetensors
from sgilo.loader import ConfigError, to_dict
from sgilo.method_table import METHODS, method_names
from sgilo.methods import reconstruct, run_phases, total_steps
from sgilo.metrics import MissingWeightsError, image_metrics, lpips_distance
from sgilo.operators import TASKS, OperatorSpec, build_operator
from sgilo.posterior import LatentPrior
from sgilo.precision import PRECISIONS, resolve
from sgilo.seeding import item_seed, torch_generator
from sgilo.sharing import SharingError, pull, push, sync
from sgilo.stylegan2 import load_generator, save_generator


def _check_params(args: argparse.Namespace) -> None:
    print(json.dumps(to_dict(load_params(args.params)), indent=2, sort_keys=True))


def _resources(args: argparse.Namespace) -> None:
    from sgilo.resources import DEVICES, estimate, markdown

    device = DEVICES[args.device]
    print(
        f"{device.name}: {device.tflops:g} TFLOP/s effective, {device.startup_s:g} s start-up per job, {device.base_gib:g} GiB per "
        f"process before its data ({device.source})\n"
    )
    print(markdown(estimate(load_params(args.params), device), device))


def _convert(args: argparse.Namespace) -> None:
    generator = load_generator(args.checkpoint)
    save_generator(generator, args.out)
    print(f"wrote {args.out}: StyleGAN2 {generator.config}")


@torch.no_grad()
def _sample(args: argparse.Namespace) -> None:
    generator = load_generator(args.generator)
    z = torch.randn(args.n, generator.style_dim, generator=torch_generator(args.seed, "sample"))
    images = torch.cat([generator(chunk, truncation_psi=args.truncation) for chunk in z.split(16)])
    nrow = args.nrow or max(1, int(args.n**0.5))
    save_image_grid(images.clamp(-1, 1), args.out, nrow=nrow)
    print(f"wrote {args.out}: {args.n} samples, truncation {args.truncation}, seed {args.seed}")


def _numbers(kind: type) -> Callable[[str], list]:
    def parse(text: str) -> list:
        try:
            values = [kind(v) for v in text.split(",") if v.strip()]
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from exc
        if not values or any(v < 0 for v in values):
            raise argparse.ArgumentTypeError(f"expected one or more non-negative {kind.__name__}s, got {text!r}")
        return values

    return parse


def _phases(args: argparse.Namespace, generator) -> list[LayerPhase]:
    """ILO's schedule from --steps/--layers/--radii (default: ILO's radii for this generator, `ilo_radii`); each
    method runs its part of it (`sgilo.methods`)."""
    layers = args.layers or list(range(min(len(args.steps), generator.num_blocks)))
    if len(layers) != len(args.steps):
        raise ValueError(
            f"--layers has {len(layers)} entries but --steps has {len(args.steps)}; give one step count per layer"
        )
    radii = args.radii if args.radii else ilo_radii(generator, layers)
    if len(radii) != len(layers):
        raise ValueError(f"--radii has {len(radii)} entries for {len(layers)} layers")
    return [LayerPhase(k, n, r or None, args.lr) for k, n, r in zip(layers, args.steps, radii)]


def _describe(method: str, schedule: Sequence[LayerPhase], prior_layer: int | None) -> str:
    """The schedule a method runs, on one line: each phase's layer, steps and l1 radius."""

    def bound(phase: LayerPhase) -> str:
        if phase.layer == prior_layer:
            return "the prior"
        if phase.layer == 0:
            return "w+"
        return "no l1 ball" if phase.radius is None else f"l1 radius {round(phase.radius, 1):g}"

    return f"{method} schedule: " + ", ".join(f"layer {s.layer} × {s.steps} steps ({bound(s)})" for s in schedule)


def _weight(args: argparse.Namespace, method: str) -> float:
    """--weight, else the method's own default (`sgilo.method_table`)."""
    return args.weight if args.weight is not None else METHODS[method].cli_weight


def _reconstruct(args: argparse.Namespace) -> None:
    if args.out.exists() and not args.out.is_dir():
        raise ValueError(f"--out {args.out} is a file; give a folder to write into")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible; use --device auto or cpu")
    if METHODS[args.method].uses_prior and args.score is None:
        raise ValueError(f"--method {args.method} needs --score (a score stage's model.pt)")
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.threads:
        torch.set_num_threads(args.threads)
    generator = load_generator(args.generator).to(device)
    prior = LatentPrior.load(args.score, device) if METHODS[args.method].uses_prior else None
    truth = load_user_image(args.image, generator.size, resize=args.resize).to(device)
    spec = OperatorSpec(
        args.task,
        args.level,
        noise_std=args.noise_std,
        mask="file" if args.mask else args.mask_kind,
        mask_path=str(args.mask) if args.mask else None,
        sr_filter=args.sr_filter,
        cs_kind=args.cs_kind,
    )
    seed = item_seed(args.seed, "reconstruct")
    operator = build_operator(spec, tuple(truth.shape[1:]), [seed], device)
    y = operator.measure(truth)
    phases = _phases(args, generator)
    if prior is not None and prior.layer not in [phase.layer for phase in phases]:
        raise ValueError(
            f"{args.score} models layer {prior.layer}: give --layers/--steps that reach it (e.g. --layers 0,1,…,{prior.layer})"
        )
    perceptual = lpips_distance("vgg", device) if args.perceptual > 0 else None
    args.precision = resolve(args.precision, device, "--precision")
    options = Options(
        geocross=args.geocross, perceptual=args.perceptual, optimize_noise=args.optimize_noise, precision=args.precision
    )
    measurement_std = args.noise_std if args.measurement_std is None else args.measurement_std
    sgilo_config = SGILOConfig(
        steps=args.prior_steps,
        lr=args.prior_lr,
        weight=_weight(args, "sgilo"),
        temperature=args.temperature,
        t0=args.t0,
        hot_steps=args.hot_steps,
        data_step=args.data_step,
        measurement_std=measurement_std,
        chains=args.samples,
        warm_start=args.warm_start,
    )
    gnc_config = GNCConfig(
        steps=args.prior_steps, lr=args.prior_lr, weight=_weight(args, "gnc"), t_max=args.t_max, t_min=args.t_min
    )
    prior_layer = prior.layer if prior is not None else None
    print(
        _describe(args.method, run_phases(args.method, phases, prior_layer, sgilo_config, gnc_config), prior_layer),
        file=sys.stderr,
    )
    started = time.perf_counter()
    with tqdm(total=total_steps(args.method, phases, sgilo_config, gnc_config), desc=args.method, unit="step") as bar:
        result = reconstruct(
            args.method,
            generator,
            operator.physics.A,
            y,
            [seed],
            phases,
            options,
            prior=prior,
            sgilo_config=sgilo_config,
            gnc_config=gnc_config,
            perceptual=perceptual,
            progress=bar.update,
        )
    seconds = time.perf_counter() - started
    if result.failures[0] is not None:
        raise ValueError(
            f"the {args.method} reconstruction of {args.image} failed ({result.failures[0]}); nothing was written. "
            "Lower the step sizes (--lr, --prior-lr), use --precision fp32, or try another --seed"
        )
    _write_reconstruction(args, operator, y, truth, result, seconds)


def _write_reconstruction(args, operator, y, truth, result, seconds) -> None:
    out: Path = args.out
    recon01 = result.image
    naive01 = operator.naive(y)
    extra = {"samples": result.samples[0].cpu(), "std": result.std.cpu()} if result.samples is not None else {}
    if result.latent is not None:
        extra["latent"] = result.latent.cpu()
    save_safetensors(
        {"y": y.cpu(), "reconstruction": recon01.cpu(), "w_plus": result.w_plus.cpu(), **extra},
        out / "result.safetensors",
    )
    save_image_grid(naive01 * 2 - 1, out / "measurement.png", nrow=1)
    save_image_grid(recon01 * 2 - 1, out / "reconstruction.png", nrow=1)
    save_image_grid(torch.cat([naive01, recon01, truth]) * 2 - 1, out / "comparison.png", nrow=3)
    if result.samples is not None:
        save_image_grid(result.samples[0] * 2 - 1, out / "samples.png", nrow=result.chains)
        std = result.std.mean(1, keepdim=True)
        save_image_grid((std / std.max().clamp_min(1e-8)).expand(-1, 3, -1, -1) * 2 - 1, out / "std.png", nrow=1)
    quality = {k: float(v[0]) for k, v in image_metrics(recon01, truth).items()}
    record = {
        "image": str(args.image),
        "method": args.method,
        "generator": str(args.generator),
        "seed": args.seed,
        "score": str(args.score) if args.score else None,
        "operator": operator.describe(),
        "phases": [dataclasses.asdict(s) for s in result.phases],
        "steps": result.steps,
        "chains": result.chains,
        "seconds": seconds,
        "precision": args.precision,
        "data_term": result.data_term,
        "measurement_loss": float(result.loss[0]),
        "naive": {k: float(v[0]) for k, v in image_metrics(naive01, truth).items()},
        **quality,
    }
    save_json(record, out / "record.json")
    print(
        f"wrote {out}: PSNR {quality['psnr']:.2f} dB, SSIM {quality['ssim']:.3f} in {seconds:.1f} s "
        f"({args.method}, {result.steps} steps, {args.precision})"
    )


def _dvc_sync(args: argparse.Namespace) -> None:
    current = sync(Path.cwd(), args.params, check=args.check)
    if args.check and not current:
        raise SharingError("dvc.yaml does not match the Snakefile: run `sgilo dvc-sync` and commit it")
    print("dvc.yaml is current" if current else "wrote dvc.yaml")


def _push(args: argparse.Namespace) -> None:
    push(Path.cwd(), args.remote, args.params, args.target)
    print("pushed; commit dvc.lock so that teammates can pull what it records")


def _pull(args: argparse.Namespace) -> None:
    pull(Path.cwd(), args.remote, args.params, args.target)
    print(f"pulled; snakemake has nothing to redo for {args.target}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sgilo", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check-params", help="validate a params file and print it resolved")
    check.add_argument("params", nargs="?", default="params.yaml")
    check.set_defaults(run=_check_params)

    resources = commands.add_parser(
        "resources", help="the resource model: per rule jobs, time, memory and disk of a profile"
    )
    resources.add_argument("params", nargs="?", default="params.yaml")
    resources.add_argument(
        "--device", choices=["cpu", "a100"], default="a100", help="whose measured rate to use (sgilo.resources.DEVICES)"
    )
    resources.set_defaults(run=_resources)

    convert = commands.add_parser("convert", help="convert a rosinality .pt or NVIDIA .pkl StyleGAN2 to sgilo's format")
    convert.add_argument("checkpoint", type=Path)
    convert.add_argument("--out", type=Path, required=True)
    convert.set_defaults(run=_convert)

    sample = commands.add_parser("sample", help="write a grid of random samples from a generator")
    sample.add_argument("--generator", type=Path, required=True, help="any checkpoint load_generator reads")
    sample.add_argument("--out", type=Path, required=True, help="PNG to write")
    sample.add_argument("--n", type=int, default=16)
    sample.add_argument("--nrow", type=int, default=0, help="images per row (default: square)")
    sample.add_argument("--truncation", type=float, default=1.0, help="truncation psi (1: none)")
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(run=_sample)

    rec = commands.add_parser(
        "reconstruct",
        help="measure an image with a forward operator and reconstruct it (CSGM, ILO, SGILO or GNC)",
        description="Writes to --out: measurement.png (the naive reconstruction of y), reconstruction.png, comparison.png "
        "(measurement | reconstruction | input), result.safetensors (y, reconstruction; sgilo/gnc: samples, std) and "
        "record.json (PSNR/SSIM against the input, seconds, steps, operator). sgilo also writes samples.png (the "
        "posterior samples; the reconstruction is their mean) and std.png (their per-pixel spread). Greyscale and "
        "RGBA inputs are converted to RGB. The schedule it runs (layers, steps, l1 radii) is printed on stderr first.",
    )
    rec.add_argument("image", type=Path, help="PNG/JPEG of the generator's size (or any size with --resize)")
    rec.add_argument("--task", required=True, choices=TASKS)
    rec.add_argument(
        "--level",
        type=float,
        default=1.0,
        help="inpaint: fraction kept; cs: m/n; denoise: sigma on [0,1]; sr: factor; colorize/identity: ignored",
    )
    rec.add_argument(
        "--method",
        default="ilo",
        choices=method_names(),
        help="; ".join(f"{name}: {row.summary}" for name, row in METHODS.items()),
    )
    rec.add_argument("--generator", type=Path, required=True, help="any checkpoint load_generator reads")
    rec.add_argument("--out", type=Path, required=True, help="folder to write into")
    rec.add_argument("--mask", type=Path, help="inpaint: a mask PNG (white = kept); overrides --mask-kind")
    rec.add_argument("--mask-kind", default="random", choices=("random", "center", "box"))
    rec.add_argument("--sr-filter", default="area", choices=("area", "bicubic"))
    rec.add_argument("--cs-kind", default="auto", choices=("auto", "gaussian", "structured"))
    rec.add_argument("--noise-std", type=float, default=0.0, help="extra Gaussian measurement noise (on [0,1])")
    rec.add_argument("--seed", type=int, default=0)
    rec.add_argument(
        "--steps",
        type=_numbers(int),
        default=[100, 100, 100, 50],
        help="steps per phase, e.g. 100,100,100,50 (csgm: the first)",
    )
    rec.add_argument("--layers", type=_numbers(int), help="layer per phase (default 0,1,2,…)")
    rec.add_argument(
        "--radii",
        type=_numbers(float),
        help="l1 radius per phase (0: no ball at that phase; default: ILO's radii scaled to the generator, "
        "sgilo.inversion.ilo_radii); ilo-unconstrained ignores it",
    )
    rec.add_argument("--lr", type=float, default=0.1)
    rec.add_argument(
        "--score", type=Path, help="sgilo/gnc: the score stage's model.pt (its layer must be among --layers)"
    )
    rec.add_argument("--samples", type=int, default=4, help="sgilo: posterior samples (chains)")
    rec.add_argument(
        "--prior-steps", type=int, default=100, help="sgilo/gnc: steps at the prior's layer (replacing ILO's there)"
    )
    rec.add_argument(
        "--prior-lr", type=float, default=0.05, help="sgilo/gnc: Adam step on the data term at the prior's layer"
    )
    rec.add_argument(
        "--weight",
        type=float,
        help="sgilo/gnc: the prior's weight λ (default: "
        + ", ".join(f"{row.cli_weight:g} for {name}" for name, row in METHODS.items() if row.cli_weight is not None)
        + ")",
    )
    rec.add_argument(
        "--temperature",
        type=float,
        default=0.25,
        help="sgilo: T of the Langevin noise sqrt(2ηT), η = weight·(σ/a)²(t0) (0.25: noise 0.01 at weight 0.1, t0 0.01)",
    )
    rec.add_argument(
        "--data-step",
        default="adam",
        choices=("adam", "langevin"),
        help="sgilo: Adam on the measurement loss (the paper), or a Langevin step on the Gaussian likelihood of std "
        "--measurement-std: then the chains sample the posterior at temperature T (with --hot-steps 0)",
    )
    rec.add_argument(
        "--measurement-std", type=float, help="sgilo langevin: σ_y of the likelihood (default: --noise-std)"
    )
    rec.add_argument("--t0", type=float, default=0.01, help="sgilo: hot-start time")
    rec.add_argument(
        "--hot-steps", type=int, default=5, help="sgilo: reverse-SDE steps per hot start (0: one Tweedie step)"
    )
    rec.add_argument(
        "--warm-start",
        default="per_chain",
        choices=("per_chain", "shared"),
        help="sgilo: an ILO warm start per chain (dispersed starts) or one shared by the chains",
    )
    rec.add_argument(
        "--t-max", type=float, default=0.3, help="gnc: the smoothing's first time (large: a convex energy)"
    )
    rec.add_argument("--t-min", type=float, default=0.005, help="gnc: the smoothing's last time")
    rec.add_argument("--geocross", type=float, default=0.01)
    rec.add_argument("--perceptual", type=float, default=0.0, help="LPIPS-VGG weight (needs its weights on disk)")
    rec.add_argument("--optimize-noise", action="store_true")
    rec.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 where the device has it natively (a recent GPU, an AVX512_BF16/AMX CPU), else fp32",
    )
    rec.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    rec.add_argument("--resize", action="store_true", help="centre-crop and resize an image of another size")
    rec.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")
    rec.set_defaults(run=_reconstruct)

    sharing = {
        "dvc-sync": ("write dvc.yaml from the Snakefile (one DVC stage per Snakemake job)", _dvc_sync),
        "push": ("record the finished outputs in dvc.lock (dvc commit) and upload them to the DVC remote", _push),
        "pull": ("download the outputs dvc.lock records, check them, and mark them up to date for Snakemake", _pull),
    }
    for name, (summary, run) in sharing.items():
        command = commands.add_parser(name, help=summary, description=summary + ". Run it in the repository root.")
        command.add_argument("--params", default="params.yaml", help="the params file the workflow runs with")
        if name == "dvc-sync":
            command.add_argument(
                "--check", action="store_true", help="only check that dvc.yaml is current (exit 2 if not)"
            )
        else:
            command.add_argument("--remote", help="DVC remote name (default: the core.remote of .dvc/config)")
            command.add_argument("--target", default="all", help="the Snakemake target whose jobs are shared")
        command.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        retain_freed_memory()
        args.run(args)
    except (
        ConfigError,
        CheckpointError,
        DataError,
        DiskFullError,
        MissingWeightsError,
        SharingError,
        ValueError,
    ) as exc:
        print(f"sgilo: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
