"""Read official NVIDIA stylegan2-ada-pytorch pickles without NVIDIA's code, and without running any code.

Those pickles store each network as `torch_utils.persistence._reconstruct_persistent_obj(meta)`, where `meta`
holds the class's full source (`module_src`, which NVIDIA's loader `exec`s) and the module's `__dict__`
(`state`). We never execute `module_src`: an allow-list unpickler turns every persistent object into a plain
`PersistentStub` carrying its state, rebuilds tensors with torch's own functions, and refuses any other global,
so a pickle that calls e.g. `os.system` fails before anything runs.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy._core.multiarray import scalar as numpy_scalar
from torch import Tensor

from sgilo.io import CheckpointError


class PersistentStub:
    """Stands in for an NVIDIA network object: its class name and the `__dict__` it was pickled with."""

    def __init__(self, class_name: str = "", state: dict[str, Any] | None = None):
        self.class_name = class_name
        self.state = state or {}

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {"_state": state}


def _reconstruct_persistent_obj(meta: dict[str, Any]) -> PersistentStub:
    if not isinstance(meta, dict) or meta.get("type") != "class":
        raise pickle.UnpicklingError(f"unsupported persistent object {type(meta).__name__}")
    return PersistentStub(str(meta.get("class_name", "")), meta.get("state"))


def _load_storage_from_bytes(data: bytes) -> Any:
    # torch pickles storages as nested torch.save bytes; torch's own helper would load them with
    # weights_only=False, so route them through the safe loader instead.
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


class _EasyDict(dict):
    """dnnlib.util.EasyDict holds only items; a plain dict subclass receives them."""


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): torch._utils._rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): torch._utils._rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): torch._tensor._rebuild_from_type_v2,
    ("torch", "Tensor"): torch.Tensor,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Size"): torch.Size,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    # NVIDIA's layers keep numpy float64 gains in their attributes; these rebuild a scalar from raw bytes.
    ("numpy.core.multiarray", "scalar"): numpy_scalar,
    ("numpy._core.multiarray", "scalar"): numpy_scalar,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the globals in `_ALLOWED` (plus torch dtypes and standard nn containers, as stubs)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        if module == "torch" and isinstance(getattr(torch, name, None), torch.dtype):
            return getattr(torch, name)
        if module.startswith("torch.nn.modules."):
            return PersistentStub
        raise pickle.UnpicklingError(
            f"refused to load global {module}.{name}: not a StyleGAN2 network, tensor or plain container"
        )


def read_nvidia_pickle(path: str | Path) -> dict[str, Any]:
    """Unpickle an NVIDIA network pickle into plain data; `G_ema` etc. become `PersistentStub`s."""
    path = Path(path)
    try:
        with open(path, "rb") as handle:
            data = RestrictedUnpickler(handle).load()
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: {exc}; only official stylegan2-ada-pytorch network pickles are accepted"
        ) from exc
    except (EOFError, ValueError, TypeError, AttributeError, RuntimeError, IndexError, KeyError) as exc:
        raise CheckpointError(
            f"{path}: truncated or corrupt pickle ({type(exc).__name__}: {exc}); download it again"
        ) from exc
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentStub):
        raise CheckpointError(f"{path}: not a stylegan2-ada-pytorch network pickle (expected a dict with 'G_ema')")
    return data


def flatten_state(stub: PersistentStub, prefix: str = "") -> dict[str, Tensor]:
    """The `state_dict()` that the pickled module would have: parameters and buffers, recursively."""
    state = stub.state
    flat: dict[str, Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, Tensor):
                flat[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentStub):
            flat.update(flatten_state(child, f"{prefix}{name}."))
    return flat


def nvidia_to_rosinality(nv: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor | None]:
    """Rename an NVIDIA generator state dict into rosinality's layout (see data-and-weights.md, §2b)."""
    out: dict[str, Tensor] = {}
    n_mlp = sum(1 for k in nv if k.startswith("mapping.fc") and k.endswith(".weight"))
    for i in range(n_mlp):
        out[f"style.{i + 1}.weight"] = nv[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = nv[f"mapping.fc{i}.bias"]
    out["input.input"] = nv["synthesis.b4.const"].unsqueeze(0)
    _layer(out, nv, "synthesis.b4.conv1", "conv1", 0)
    _torgb(out, nv, "synthesis.b4.torgb", "to_rgb1")
    resolutions = sorted(
        int(k.split(".")[1][1:]) for k in nv if k.startswith("synthesis.b") and k.endswith(".torgb.weight")
    )
    for res in resolutions[1:]:
        k = int(math.log2(res))
        _layer(out, nv, f"synthesis.b{res}.conv0", f"convs.{2 * k - 6}", 2 * k - 5)
        _layer(out, nv, f"synthesis.b{res}.conv1", f"convs.{2 * k - 5}", 2 * k - 4)
        _torgb(out, nv, f"synthesis.b{res}.torgb", f"to_rgbs.{k - 3}")
    return out, nv.get("mapping.w_avg")


def _layer(out: dict[str, Tensor], nv: dict[str, Tensor], src: str, dst: str, noise_index: int) -> None:
    out[f"{dst}.conv.weight"] = nv[f"{src}.weight"].unsqueeze(0)
    out[f"{dst}.conv.modulation.weight"] = nv[f"{src}.affine.weight"]
    out[f"{dst}.conv.modulation.bias"] = nv[f"{src}.affine.bias"]
    out[f"{dst}.noise.weight"] = nv[f"{src}.noise_strength"].reshape(1)
    out[f"{dst}.activate.bias"] = nv[f"{src}.bias"]
    out[f"noises.noise_{noise_index}"] = nv[f"{src}.noise_const"].reshape(1, 1, *nv[f"{src}.noise_const"].shape[-2:])


def _torgb(out: dict[str, Tensor], nv: dict[str, Tensor], src: str, dst: str) -> None:
    out[f"{dst}.conv.weight"] = nv[f"{src}.weight"].unsqueeze(0)
    out[f"{dst}.conv.modulation.weight"] = nv[f"{src}.affine.weight"]
    out[f"{dst}.conv.modulation.bias"] = nv[f"{src}.affine.bias"]
    out[f"{dst}.bias"] = nv[f"{src}.bias"].reshape(1, 3, 1, 1)


# A top-level key official pickles never have: sgilo.smoke's stand-ins say there that their weights are random.
STANDIN_KEY = "sgilo_standin"


def load_nvidia_generator_state(path: str | Path) -> tuple[dict[str, Tensor], Tensor | None, str]:
    """`G_ema` of an NVIDIA pickle as a rosinality-layout state dict (without the constant blur kernels), its w_avg,
    and the stand-in note ("" for a real network)."""
    data = read_nvidia_pickle(path)
    stub = data["G_ema"]
    note = data.get(STANDIN_KEY, "")
    synthesis = (stub.state.get("_modules") or {}).get("synthesis")
    architecture = getattr(synthesis, "state", {}).get("architecture", "skip") if synthesis else "skip"
    if architecture != "skip":
        raise CheckpointError(f"{path}: generator architecture {architecture!r} is not StyleGAN2's 'skip' (config-f)")
    try:
        return (*nvidia_to_rosinality(flatten_state(stub)), str(note))
    except KeyError as exc:
        raise CheckpointError(
            f"{path}: G_ema lacks {exc}: not a StyleGAN2 generator in the stylegan2-ada-pytorch layout"
        ) from exc
