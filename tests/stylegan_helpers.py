"""Deterministic StyleGAN2 weights and inputs shared by the generator tests and the reference fixture.

`tests/fixtures/stylegan2_reference.safetensors` holds what rosinality/stylegan2-pytorch (model.py at commit
bef283a, run on the CPU with its pure-PyTorch op fallbacks) computed for exactly these weights and inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sgilo.stylegan2 import Generator

# name → constructor arguments; "config_f" is the 1024² FFHQ generator of the papers.
CONFIGS: dict[str, dict[str, int]] = {
    "s32": {"size": 32, "style_dim": 64, "n_mlp": 2, "channel_multiplier": 2, "channel_max": 64},
    "s64": {"size": 64, "style_dim": 128, "n_mlp": 3, "channel_multiplier": 1, "channel_max": 512},
    "config_f": {"size": 1024, "style_dim": 512, "n_mlp": 8, "channel_multiplier": 2, "channel_max": 512},
}
TRUNCATION_PSI = 0.7


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


def seeded_inputs(generator: Generator, seed: int, batch: int = 2) -> tuple[Tensor, Tensor, list[Tensor]]:
    """z (B, D), a w+ (B, num_ws, D) with a different w per layer, and per-image noise maps."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(batch, generator.style_dim, generator=gen)
    w_plus = torch.randn(batch, generator.num_ws, generator.style_dim, generator=gen)
    noise = [torch.randn(batch, 1, n.shape[-1], n.shape[-1], generator=gen) for n in generator.stored_noise()]
    return z, w_plus, noise


def summarize_image(image: Tensor) -> dict[str, Tensor]:
    """Small but sensitive views of a large image: a 32² average pool and a full-resolution 16² crop."""
    crop = image.shape[-1] // 2
    return {"pooled": torch.nn.functional.adaptive_avg_pool2d(image, 32), "crop": image[..., crop : crop + 16, crop : crop + 16]}


# --------------------------------------------------------------------------- NVIDIA stylegan2-ada-pytorch layout
def rosinality_to_nvidia(state: dict[str, Tensor], latent_avg: Tensor, size: int) -> dict[str, dict]:
    """The inverse of the documented NVIDIA→rosinality renaming, as a tree of module dicts (test-side)."""
    import math

    def layer(src: str, noise: int) -> dict:
        return {
            "_parameters": {"weight": state[f"{src}.conv.weight"][0], "bias": state[f"{src}.activate.bias"],
                            "noise_strength": state[f"{src}.noise.weight"][0]},
            "_buffers": {"noise_const": state[f"noises.noise_{noise}"][0, 0], "resample_filter": torch.ones(4, 4) / 16},
            "_modules": {"affine": _affine(state, f"{src}.conv.modulation")},
        }

    def torgb(src: str) -> dict:
        return {"_parameters": {"weight": state[f"{src}.conv.weight"][0], "bias": state[f"{src}.bias"].reshape(3)},
                "_buffers": {}, "_modules": {"affine": _affine(state, f"{src}.conv.modulation")}}

    n_mlp = sum(1 for k in state if k.startswith("style.") and k.endswith(".weight"))
    mapping = {"_parameters": {}, "_buffers": {"w_avg": latent_avg},
               "_modules": {f"fc{i}": _affine(state, f"style.{i + 1}") for i in range(n_mlp)}}
    blocks = {"b4": {"_parameters": {"const": state["input.input"][0]}, "_buffers": {},
                     "_modules": {"conv1": layer("conv1", 0), "torgb": torgb("to_rgb1")}}}
    for k in range(3, int(math.log2(size)) + 1):
        blocks[f"b{2**k}"] = {"_parameters": {}, "_buffers": {"resample_filter": torch.ones(4, 4) / 16},
                              "_modules": {"conv0": layer(f"convs.{2 * k - 6}", 2 * k - 5),
                                           "conv1": layer(f"convs.{2 * k - 5}", 2 * k - 4),
                                           "torgb": torgb(f"to_rgbs.{k - 3}")}}
    synthesis = {"_parameters": {}, "_buffers": {}, "_modules": blocks, "architecture": "skip"}
    return {"_parameters": {}, "_buffers": {}, "_modules": {"mapping": mapping, "synthesis": synthesis}}


def _affine(state: dict[str, Tensor], src: str) -> dict:
    return {"_parameters": {"weight": state[f"{src}.weight"], "bias": state[f"{src}.bias"]}, "_buffers": {}, "_modules": {}}


def write_nvidia_pickle(path, tree: dict, module_src: str = "raise SystemExit('module_src must never be executed')") -> None:
    """Write `{G, D, G_ema, augment_pipe, training_set_kwargs}` the way torch_utils.persistence pickles it.

    Stand-in modules named `torch_utils.persistence` and `dnnlib.util` exist only while pickling, so the file
    references NVIDIA's globals by name exactly as an official pickle does.
    """
    import collections
    import pickle
    import sys
    import types

    import numpy as np

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
            self.meta = {"type": "class", "version": 6, "module_src": module_src, "class_name": class_name,
                         "state": _state(node)}

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    def _state(node: dict) -> dict:
        params = collections.OrderedDict((k, torch.nn.Parameter(v.clone(), requires_grad=False)) for k, v in node["_parameters"].items())
        buffers = collections.OrderedDict((k, v.clone()) for k, v in node["_buffers"].items())
        modules = collections.OrderedDict((k, Persistent(k, v)) for k, v in node["_modules"].items())
        extra = {k: v for k, v in node.items() if not k.startswith("_")}
        # Real NVIDIA modules carry numpy float64 gains (weight_gain, act_gain) in their __dict__.
        return {"training": False, "weight_gain": np.float64(0.125), "act_gain": np.sqrt(np.float64(2.0)), "_parameters": params, "_buffers": buffers, "_modules": modules,
                "_non_persistent_buffers_set": set(), **extra}

    payload = {"G": Persistent("Generator", tree), "D": Persistent("Discriminator", {"_parameters": {}, "_buffers": {}, "_modules": {}}),
               "G_ema": Persistent("Generator", tree), "augment_pipe": None,
               "training_set_kwargs": EasyDict(resolution=1024, path="ffhq.zip")}
    saved = {name: sys.modules.get(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib", "dnnlib.util")}
    sys.modules.update({"torch_utils": types.ModuleType("torch_utils"), "torch_utils.persistence": persistence,
                        "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util})
    try:
        with open(path, "wb") as handle:
            pickle.dump(payload, handle, protocol=pickle.HIGHEST_PROTOCOL)
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
