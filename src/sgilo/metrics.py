"""Per-image quality metrics on [0, 1] images, from DeepInverse (SSIM through torchmetrics).

Every metric returns one value per image, so results tables keep a row per image and any average is taken
by whoever reads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import deepinv as dinv
import torch
from torch import Tensor

# Each metric's DeepInverse class, built on demand: SSIM's first use imports torchmetrics (and SciPy), which a job that
# reads only the MSE, such as tuning, need not load (docs/benchmarks.md, "Job start-up").
IMAGE_METRICS: dict[str, Callable[[], Callable[[Tensor, Tensor], Tensor]]] = {
    "mse": lambda: dinv.metric.MSE(),
    "psnr": lambda: dinv.metric.PSNR(max_pixel=1.0, min_pixel=0.0),
    "ssim": lambda: dinv.metric.SSIM(max_pixel=1.0, min_pixel=0.0),
}


def image_metrics(x: Tensor, reference: Tensor, names: Sequence[str] = tuple(IMAGE_METRICS)) -> dict[str, Tensor]:
    """MSE, PSNR (dB, data range 1) and SSIM of each image of x against its reference, as (B,) tensors; `names`: only
    these of them.

    Both are clamped to [0, 1] first, the range the metrics assume. deepinv's PSNR adds 1e-8 to the MSE,
    so identical images score 80 dB rather than infinity.
    """
    if x.ndim != 4 or x.shape != reference.shape:
        raise ValueError(
            f"x and reference must be (B, C, H, W) of one shape; got {tuple(x.shape)} and {tuple(reference.shape)}"
        )
    unknown = [name for name in names if name not in IMAGE_METRICS]
    if unknown:
        raise ValueError(
            f"unknown image metric(s) {', '.join(map(repr, unknown))}; choose from {', '.join(IMAGE_METRICS)}"
        )
    with torch.no_grad():
        x, reference = x.detach().float().clamp(0, 1), reference.detach().float().clamp(0, 1)
        return {name: IMAGE_METRICS[name]()(x, reference) for name in names}


class MissingWeightsError(FileNotFoundError):
    """Pretrained weights a metric needs are not on disk (nothing is downloaded); the message says where to put them."""


# torchvision backbones LPIPS is built on; torchmetrics ships the linear heads.
LPIPS_BACKBONES = {
    "vgg": "https://download.pytorch.org/models/vgg16-397923af.pth",
    "alex": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "squeeze": "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
}


def lpips_backbone_path(net: str = "vgg") -> Path:
    """Where torchvision looks for the LPIPS backbone: $TORCH_HOME/hub/checkpoints/<file>."""
    if net not in LPIPS_BACKBONES:
        raise ValueError(f"LPIPS net must be one of {', '.join(LPIPS_BACKBONES)}; got {net!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONES[net].rsplit("/", 1)[1]


# ILO (its `downsampler_image_256`) compares images larger than this at this side: LPIPS's backbones were calibrated
# near it, and VGG16 at 1024² costs 16 times as much as at 256².
LPIPS_SIZE = 256


def lpips_distance(
    net: str = "vgg", device: str | torch.device = "cpu", size: int | None = LPIPS_SIZE
) -> Callable[[Tensor, Tensor], Tensor]:
    """LPIPS (Zhang et al. 2018) between [0, 1] images, one differentiable value per image.

    Images larger than `size` (None: never) are first bicubically downsampled, with antialiasing, to size × size.
    Raises MissingWeightsError when the backbone file is absent, instead of letting torchvision try to download.
    """
    path = lpips_backbone_path(net)
    if not path.is_file():
        raise MissingWeightsError(
            f"LPIPS-{net} needs the torchvision backbone {path.name} at {path} (from {LPIPS_BACKBONES[net]}); "
            "place it there (or point TORCH_HOME elsewhere), or set the perceptual weight to 0"
        )
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    model = (
        LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True).net.to(device).eval().requires_grad_(False)
    )

    def shrink(image: Tensor) -> Tensor:
        if size is None or max(image.shape[-2:]) <= size:
            return image
        return torch.nn.functional.interpolate(
            image, size=(size, size), mode="bicubic", antialias=True, align_corners=False
        )

    def distance(x: Tensor, reference: Tensor) -> Tensor:
        return model(shrink(x), shrink(reference), normalize=True).reshape(x.shape[0])

    return distance


# pytorch-fid's Inception weights (the TF FID Inception, ported); torch.hub looks for them under this name.
FID_WEIGHTS_URL = (
    "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
)


def fid_weights_path() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints" / FID_WEIGHTS_URL.rsplit("/", 1)[1]


def require_fid_weights() -> Path:
    """The Inception weights' path; MissingWeightsError (naming where to put them) when they are absent."""
    path = fid_weights_path()
    if not path.is_file():
        raise MissingWeightsError(
            f"FID needs pytorch-fid's Inception weights {path.name} at {path} (from {FID_WEIGHTS_URL}); "
            "place them there (or point TORCH_HOME elsewhere)"
        )
    return path


def frechet_distance(
    images: Tensor, reference: Tensor, device: str | torch.device = "cpu", batch_size: int = 64
) -> float:
    """FID (Heusel et al. 2017) between two sets of [0, 1] images, with pytorch-fid's Inception (pool3, 2048-d).

    Raises MissingWeightsError when the Inception weights are absent, instead of letting pytorch-fid download.
    Few images give a biased FID: compare values only at equal set sizes.
    """
    require_fid_weights()
    if min(len(images), len(reference)) < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {len(images)} and {len(reference)}")
    from pytorch_fid.fid_score import calculate_frechet_distance
    from pytorch_fid.inception import InceptionV3

    model = InceptionV3([InceptionV3.BLOCK_INDEX_BY_DIM[2048]]).to(device).eval()

    def statistics(batch: Tensor):
        with torch.no_grad():
            features = torch.cat(
                [
                    model(chunk.to(device).float().clamp(0, 1))[0].flatten(1).double().cpu()
                    for chunk in batch.split(batch_size)
                ]
            )
        return features.mean(0).numpy(), torch.cov(features.T).numpy()

    return float(calculate_frechet_distance(*statistics(images), *statistics(reference)))
