"""Per-image metrics on [0, 1] images."""

from __future__ import annotations

import pytest
import torch

from sgilo.metrics import image_metrics


def _images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_constant_offset_of_a_tenth_is_20_db():
    x = 0.9 * _images()
    metrics = image_metrics(x + 0.1, x)
    assert torch.allclose(metrics["psnr"], torch.full((3,), 20.0), atol=1e-3)
    assert torch.allclose(metrics["mse"], torch.full((3,), 0.01), atol=1e-6)


def test_identical_images_score_perfectly():
    x = _images()
    metrics = image_metrics(x, x.clone())
    assert torch.allclose(metrics["ssim"], torch.ones(3), atol=1e-6)
    assert torch.equal(metrics["mse"], torch.zeros(3))
    assert (metrics["psnr"] >= 80).all()


def test_one_value_per_image_in_its_own_order():
    reference = _images(4)
    noise = torch.randn(reference.shape, generator=torch.Generator().manual_seed(1))
    noisy = reference + 0.05 * torch.arange(4.0).view(4, 1, 1, 1) * noise  # image 0 clean, then noisier
    metrics = image_metrics(noisy, reference)
    assert set(metrics) == {"mse", "psnr", "ssim"}
    assert all(value.shape == (4,) for value in metrics.values())
    assert (metrics["ssim"].diff() < 0).all() and (metrics["psnr"][1:].diff() < 0).all()
    single = image_metrics(noisy[2:3], reference[2:3])
    assert all(torch.allclose(single[k], metrics[k][2:3]) for k in metrics)


def test_inputs_are_clamped_to_the_unit_range():
    x = _images()
    assert torch.equal(image_metrics(x + 5.0, x)["mse"], image_metrics(torch.ones_like(x), x)["mse"])


def test_mismatched_shapes_are_rejected():
    with pytest.raises(ValueError, match="shape"):
        image_metrics(_images(2), _images(3))


def test_fid_without_inception_weights_names_the_file(tmp_path, monkeypatch):
    from sgilo.metrics import MissingWeightsError, frechet_distance

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        frechet_distance(_images(), _images())


def test_fid_loads_weights_of_the_real_layout_and_ranks_sets(tmp_path, monkeypatch):
    """Weights in pytorch-fid's key layout (random values) go through the real loading path."""
    import torchvision
    from pytorch_fid import inception

    from sgilo.metrics import fid_weights_path, frechet_distance

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with monkeypatch.context() as patch:  # build the architecture once without loading anything
        patch.setattr(inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
        patch.setattr(torchvision.models.Inception3, "load_state_dict", lambda self, state: None)
        torch.manual_seed(0)
        layout = inception.fid_inception_v3().state_dict()
    fid_weights_path().parent.mkdir(parents=True)
    torch.save(layout, fid_weights_path())
    generator = torch.Generator().manual_seed(0)
    a, b = torch.rand(4, 3, 32, 32, generator=generator), torch.rand(4, 3, 32, 32, generator=generator)
    far = torch.rand(4, 3, 32, 32, generator=generator) * 0.2
    same, different = frechet_distance(a, b), frechet_distance(a, far)
    assert 0 <= same < different


def test_lpips_loads_a_backbone_of_the_real_layout(tmp_path, monkeypatch):
    """torchvision's AlexNet key layout (random values) at the path torchvision reads: the real loading code runs."""
    import torchvision

    from sgilo.metrics import lpips_backbone_path, lpips_distance

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    lpips_backbone_path("alex").parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), lpips_backbone_path("alex"))
    distance = lpips_distance("alex")
    x, y = _images(2), _images(2).flip(-1)
    assert torch.allclose(distance(x, x), torch.zeros(2), atol=1e-6)
    assert bool((distance(x, y) > 0).all())


def test_lpips_compares_large_images_at_256_as_ilo_does(tmp_path, monkeypatch):
    import torchvision

    from sgilo.metrics import LPIPS_SIZE, lpips_backbone_path, lpips_distance

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    lpips_backbone_path("alex").parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.alexnet().state_dict(), lpips_backbone_path("alex"))
    x, y = torch.rand(2, 3, 512, 512, generator=torch.Generator().manual_seed(1)), torch.rand(2, 3, 512, 512)

    def shrink(image):
        return torch.nn.functional.interpolate(image, size=LPIPS_SIZE, mode="bicubic", antialias=True)

    full = lpips_distance("alex", size=None)
    assert torch.allclose(lpips_distance("alex")(x, y), full(shrink(x), shrink(y)), atol=1e-6)
    assert not torch.allclose(lpips_distance("alex")(x, y), full(x, y), atol=1e-3)


def test_a_subset_of_metrics_is_the_same_values_and_an_unknown_name_is_named():
    reference = _images()
    x = reference.flip(0)
    every = image_metrics(x, reference)
    only_mse = image_metrics(x, reference, ["mse"])
    assert set(only_mse) == {"mse"} and torch.equal(only_mse["mse"], every["mse"])
    with pytest.raises(ValueError, match="'lpips'.*mse, psnr, ssim"):
        image_metrics(x, reference, ["mse", "lpips"])
