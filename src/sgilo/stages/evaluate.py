"""evaluate stage: reconstruct held-out test images for one (task, level, method) cell, or tune that cell.

Images come from the test split, which the score model never saw: the first `evaluate.tune.validation` ids
are the validation images, the next `evaluate.images` the test images. Every method of a (task, level) sees
the same measurement of an image (operator and noise seeded by seed, task, level and image id).

--tune: try each candidate of the method's key hyper-parameter (ILO: a scale of the l1 radii; SGILO, GNC:
the prior weight λ) on the validation images and write the one with the lowest mean MSE, with every
candidate's score, to a JSON file (CSGM and unconstrained ILO have none: they run as configured, without
--tuned). Otherwise: run the tuned method
on the test images and write one record per image (`--records`, parquet) and the first `figure_images`
reconstructions, with their measurements and SGILO's samples and spread (`--figures`, safetensors).
Finished batches are checkpointed to `partial/<stem>.pt` beside the output, so a killed job resumes at its next batch.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from tqdm import tqdm

from sgilo.config import Params
from sgilo.data import DataError, load_images, read_index
from sgilo.inversion import LayerPhase, Options
from sgilo.io import (
    atomic_path,
    discard_checkpoint,
    fingerprint,
    resume_batches,
    save_json,
    save_safetensors,
    save_torch,
)
from sgilo.loader import to_dict
from sgilo.method_table import prior_methods, spec
from sgilo.methods import Reconstruction, Setting, reconstruct, total_steps, with_tuned
from sgilo.metrics import MissingWeightsError, image_metrics, lpips_distance
from sgilo.operators import Operator, OperatorSpec, build_operator
from sgilo.posterior import LatentPrior
from sgilo.precision import resolve
from sgilo.seeding import item_seed
from sgilo.stages._common import (
    entry,
    log,
    pick_device,
    set_threads,
    stage_parser,
    start,
)
from sgilo.stylegan2 import Generator, load_generator

LPIPS_NET = "alex"  # the usual evaluation backbone (Zhang et al. 2018); VGG stays the optimisation loss


def main(argv: Sequence[str] | None = None) -> None:
    parser = stage_parser(__doc__)
    parser.add_argument("--data", required=True, type=Path, help="dataset folder from the download stage")
    parser.add_argument("--generator", required=True, type=Path, help="generator checkpoint")
    parser.add_argument("--score", type=Path, help="the score stage's model.pt (needed by sgilo and gnc)")
    parser.add_argument("--task", required=True, help="the cell to run: task, level and method")
    parser.add_argument("--level", required=True, type=float)
    parser.add_argument("--method", required=True)
    parser.add_argument("--tune", action="store_true", help="choose the hyper-parameter on the validation images")
    parser.add_argument("--tuned", type=Path, help="the tuning JSON to use (evaluation)")
    parser.add_argument("--out", type=Path, help="--tune: the JSON to write")
    parser.add_argument("--records", type=Path, help="evaluation: the parquet of per-image records to write")
    parser.add_argument("--figures", type=Path, help="evaluation: the safetensors of kept images to write")
    args, params = start(parser, argv)
    config = params.evaluate
    grid = [
        (entry.task, level, method) for entry in config.tasks for level in entry.levels for method in config.methods
    ]
    if (args.task, args.level, args.method) not in grid:
        parser.error(
            f"{args.task} at {args.level:g} with {args.method} is not in evaluate.tasks × evaluate.methods of {args.params}"
        )
    if not args.tune and args.tuned is None and spec(args.method).tuned:
        parser.error(
            f"method {args.method} tunes {spec(args.method).tuned}: give --tuned (the tune step's JSON) or --tune"
        )
    if args.tune and args.out is None:
        parser.error("--tune writes the JSON --out: give it")
    if not args.tune and (args.records is None or args.figures is None):
        parser.error("evaluation writes --records and --figures: give both (or --tune with --out)")
    if spec(args.method).uses_prior and args.score is None:
        parser.error(f"--score: methods {', '.join(prior_methods())} need the score stage's model.pt")
    set_threads(args.threads or config.threads)
    device = pick_device(config.device, "evaluate.device")
    try:
        runner = Runner(params, args, args.task, args.level, args.method, device)
    except MissingWeightsError as exc:
        parser.exit(2, f"error: invert.perceptual is {params.invert.perceptual}: {exc}\n")
    if args.tune:
        tune(runner, args.out)
    else:
        evaluate(runner, json.loads(args.tuned.read_text())["chosen"] if args.tuned else {}, args.records, args.figures)


# ------------------------------------------------------------------------------------------------- running
class Runner:
    """Everything one cell needs: images, operator spec, generator, prior, and how to run the method."""

    def __init__(self, params: Params, args, task: str, level: float, method: str, device: torch.device) -> None:
        self.params, self.args, self.device = params, args, device
        self.task, self.level, self.method = task, float(level), method
        config = params.evaluate
        self.spec = OperatorSpec(
            self.task,
            self.level,
            noise_std=config.noise_std,
            mask=config.mask,
            sr_filter=config.sr_filter,
            cs_kind=config.cs_kind,
        )
        self.generator: Generator = load_generator(args.generator).to(device)
        self.prior = LatentPrior.load(args.score, device) if spec(self.method).uses_prior else None
        if self.prior is not None and self.prior.layer != params.invert.layer:
            raise SystemExit(
                f"error: {args.score} models layer {self.prior.layer}, but invert.layer is {params.invert.layer}; rerun the score stage"
            )
        invert = params.invert
        self.phases = [LayerPhase(**to_dict(s)) for s in invert.phases]
        self.precision = resolve(config.precision, device, "evaluate.precision")
        self.options = Options(
            geocross=invert.geocross,
            perceptual=invert.perceptual,
            optimize_noise=invert.optimize_noise,
            precision=self.precision,
        )
        self.perceptual = lpips_distance("vgg", device) if invert.perceptual > 0 else None
        ids = sorted(read_index(args.data).query("split == 'test'")["id"].tolist())
        needed = config.tune.validation + config.images
        if len(ids) < needed:
            raise DataError(
                f"{args.data}: the test split has {len(ids)} images; evaluate.tune.validation + evaluate.images needs {needed}"
            )
        self.validation_ids, self.test_ids = ids[: config.tune.validation], ids[config.tune.validation : needed]

    def seed(self, image_id: int) -> int:
        return item_seed(self.params.seed, "evaluate", self.task, f"{self.level:g}", int(image_id))

    def steps(self) -> int:
        config = self.params.evaluate
        return total_steps(self.method, self.phases, config.sgilo, config.gnc)

    def run(
        self, ids: Sequence[int], hyper: dict[str, float], progress=None
    ) -> tuple[torch.Tensor, Operator, torch.Tensor, Reconstruction, float]:
        """(truth, operator, y, reconstruction, seconds) for a batch of images, truth in [0, 1]."""
        config = self.params.evaluate
        truth = ((load_images(self.args.data, "test", self.generator.size, list(ids)) + 1) / 2).to(self.device)
        seeds = [self.seed(i) for i in ids]
        operator = build_operator(self.spec, tuple(truth.shape[1:]), seeds, self.device)
        y = operator.measure(truth)
        setting = Setting(1.0, config.sgilo, config.gnc)
        for key, value in hyper.items():
            setting = with_tuned(setting, self.method, key, value)
        started = time.perf_counter()
        result = reconstruct(
            self.method,
            self.generator,
            operator.physics.A,
            y,
            seeds,
            self.phases,
            self.options,
            radius_scale=setting.radius_scale,
            prior=self.prior,
            sgilo_config=setting.sgilo,
            gnc_config=setting.gnc,
            perceptual=self.perceptual,
            progress=progress,
        )
        return truth, operator, y, result, time.perf_counter() - started

    def batches(self, ids: Sequence[int]) -> list[list[int]]:
        size = self.params.evaluate.batch_size
        return [list(ids[i : i + size]) for i in range(0, len(ids), size)]


def _resume_key(runner: Runner, ids: Sequence[int], **extra) -> str:
    """What a partial tune or evaluate job must match to be resumed: params, the resolved precision, the images, the
    bytes of the generator (and prior), and `extra` (evaluate: the hyper-parameters)."""
    params = runner.params
    inputs = [runner.args.generator, *([runner.args.score] if spec(runner.method).uses_prior else [])]
    return fingerprint(
        {
            "seed": params.seed,
            "invert": to_dict(params.invert),
            "evaluate": to_dict(params.evaluate),
            **extra,
            "precision": runner.precision,
            "ids": list(ids),
        },
        *inputs,
    )


def _bar(runner: Runner, images: int, desc: str) -> tqdm:
    return tqdm(total=images * runner.steps(), desc=desc, unit="img·step", mininterval=5.0)


def _advance(bar: tqdm, images: int):
    """A progress callback for a batch: each optimisation step advances every image in it."""
    return lambda steps: bar.update(steps * images)


# -------------------------------------------------------------------------------------------------- tuning
def tune(runner: Runner, out: Path) -> None:
    """Each candidate on the validation images, lowest MSE wins. Every finished (candidate, batch) is checkpointed
    to `<out's folder>/partial/<out's name>.pt`, so a killed job resumes where it stopped, with the same choice."""
    method = runner.method
    if spec(method).tuned is None:
        save_json(
            {
                "task": runner.task,
                "level": runner.level,
                "method": method,
                "key": None,
                "candidates": [],
                "chosen": {},
                "precision": runner.precision,
            },
            out,
        )
        return
    key, field_name = spec(method).tuned, spec(method).candidates
    candidates = getattr(runner.params.evaluate.tune, field_name)
    ids = runner.validation_ids
    work = [(value, batch) for value in candidates for batch in runner.batches(ids)]
    partial = out.parent / "partial" / f"{out.stem}.pt"
    resume_key = _resume_key(runner, ids)
    done = resume_batches(partial, resume_key, "the tuning")
    log.info(
        "tuning %s on %d validation image(s): %d of %d candidate batches to run",
        key,
        len(ids),
        len(work) - len(done),
        len(work),
    )
    with _bar(runner, len(ids) * len(candidates), f"tune {runner.task} {runner.level:g} {method}") as bar:
        bar.update(sum(len(batch) for _, batch in work[: len(done)]) * runner.steps())
        for value, batch in work[len(done) :]:
            truth, _, _, result, _ = runner.run(batch, {key: value}, progress=_advance(bar, len(batch)))
            ok = torch.tensor([reason is None for reason in result.failures], device=truth.device)
            done.append(
                {
                    "value": value,
                    "failed": int((~ok).sum()),
                    "mse": image_metrics(result.image[ok], truth[ok], ["mse"])["mse"].cpu()
                    if bool(ok.any())
                    else torch.zeros(0),
                }
            )
            save_torch({"fingerprint": resume_key, "batches": done}, partial)
    scores = []
    for value in candidates:
        mine = [b for b in done if b["value"] == value]
        mse_all = torch.cat([b["mse"] for b in mine])
        scores.append(
            {
                key: value,
                "mse": float(mse_all.mean()) if len(mse_all) else None,
                "failed": sum(b["failed"] for b in mine),
            }
        )
        log.info("%s = %g: validation MSE %s (%d failed)", key, value, scores[-1]["mse"], scores[-1]["failed"])
    if all(s["mse"] is None for s in scores):
        discard_checkpoint(partial)
        raise SystemExit(
            f"error: every candidate of {key} made all validation images fail (NaN or Inf in the optimisation) for "
            f"{runner.task} {runner.level:g} {method}; lower the step sizes in invert.phases / evaluate.{method}"
        )
    # A candidate that makes images fail is not chosen over one that does not.
    best = min(scores, key=lambda s: (s["failed"], s["mse"] if s["mse"] is not None else math.inf))
    save_json(
        {
            "task": runner.task,
            "level": runner.level,
            "method": method,
            "key": key,
            "validation_ids": ids,
            "candidates": scores,
            "chosen": {key: best[key]},
            "precision": runner.precision,
        },
        out,
    )
    discard_checkpoint(partial)


# ---------------------------------------------------------------------------------------------- evaluation
def evaluate(runner: Runner, hyper: dict[str, float], parquet: Path, figures: Path) -> None:
    """The cell on the test images: records to `parquet`, kept images to `figures`. Every finished batch is
    checkpointed to `<parquet's folder>/partial/<parquet's stem>.pt`, so a killed job resumes where it stopped."""
    params, method = runner.params, runner.method
    partial = parquet.parent / "partial" / f"{parquet.stem}.pt"
    key = _resume_key(runner, runner.test_ids, hyper=hyper)
    done = resume_batches(partial, key, "the cell")
    lpips, lpips_note = _lpips(runner.device)
    batches = runner.batches(runner.test_ids)
    with _bar(runner, len(runner.test_ids), f"evaluate {runner.task} {runner.level:g} {method}") as bar:
        bar.update(sum(len(b["records"]) for b in done) * runner.steps())
        for batch in batches[len(done) :]:
            truth, operator, y, result, seconds = runner.run(batch, hyper, progress=_advance(bar, len(batch)))
            keep = max(0, params.evaluate.figure_images - sum(len(b["figures"]["ids"]) for b in done))
            done.append(
                _batch_records(runner, batch, hyper, truth, operator.naive(y), result, seconds, lpips, lpips_note, keep)
            )
            save_torch({"fingerprint": key, "batches": done}, partial)
    records = pd.DataFrame([r for b in done for r in b["records"]])
    _write_figure_data(runner, done, figures)
    with atomic_path(parquet) as tmp:
        records.to_parquet(tmp, index=False)
    discard_checkpoint(partial)
    log.info(
        "%s %g %s: mean PSNR %.2f dB, MSE %.5f over %d images",
        runner.task,
        runner.level,
        method,
        records["psnr"].mean(),
        records["mse"].mean(),
        len(records),
    )


def _batch_records(
    runner: Runner,
    batch: list[int],
    hyper: dict,
    truth,
    naive,
    result: Reconstruction,
    seconds: float,
    lpips,
    lpips_note: str,
    keep: int,
) -> dict[str, Any]:
    """The batch's records, and its first `keep` images for the report's figures. A failed image (its optimisation
    went NaN or Inf) keeps its record, with the reason and no metrics, so the report counts it and leaves it out."""
    image = torch.nan_to_num(result.image, nan=0.0, posinf=1.0, neginf=0.0)
    quality = image_metrics(image, truth)
    distance = lpips(image, truth).cpu().tolist() if lpips is not None else [float("nan")] * len(batch)
    nan = float("nan")
    records = []
    for i, image_id in enumerate(batch):
        failure = result.failures[i]
        if failure is not None:
            log.warning(
                "%s %g %s: image %d failed (%s); its record is kept without metrics",
                runner.task,
                runner.level,
                runner.method,
                image_id,
                failure,
            )
        records.append(
            {
                "image_id": int(image_id),
                "seed": runner.seed(image_id),
                "task": runner.task,
                "level": runner.level,
                "method": runner.method,
                **{
                    metric: nan if failure else float(value)
                    for metric, value in (
                        ("mse", quality["mse"][i]),
                        ("psnr", quality["psnr"][i]),
                        ("ssim", quality["ssim"][i]),
                        ("lpips", distance[i]),
                    )
                },
                "lpips_note": lpips_note,
                "seconds": seconds / len(batch),
                "steps": runner.steps(),
                "chains": result.chains,
                "measurement_loss": nan if failure else float(result.loss[i]),
                "hyper": json.dumps(hyper, sort_keys=True),
                "failure": failure or "",
                "precision": runner.precision,
                "data_term": result.data_term,
            }
        )
    figures = {
        "ids": torch.tensor(batch),
        "truth": truth.cpu(),
        "measurement": naive.clamp(0, 1).cpu(),
        "reconstruction": image.clamp(0, 1).cpu(),
    }
    if result.samples is not None:
        figures |= {
            "samples": torch.nan_to_num(result.samples, nan=0.0).clamp(0, 1).cpu(),
            "std": torch.nan_to_num(result.std, nan=0.0).cpu(),
        }
    return {"records": records, "figures": {k: v[:keep] for k, v in figures.items()}}


def _write_figure_data(runner: Runner, done: list[dict], path: Path) -> None:
    tensors = {key: torch.cat([b["figures"][key] for b in done]).contiguous() for key in done[0]["figures"]}
    save_safetensors(tensors, path, {"task": runner.task, "level": f"{runner.level:g}", "method": runner.method})


def _lpips(device: torch.device):
    try:
        return lpips_distance(LPIPS_NET, device), ""
    except MissingWeightsError as exc:
        log.warning("LPIPS is reported as missing: %s", exc)
        return None, f"LPIPS-{LPIPS_NET} weights absent: {exc}"


if __name__ == "__main__":
    entry(main)
