"""Unpickle OpenMMLab's `.pth` files without running anything they name.

OpenMMLab's files are more than tensors: mmengine 1.x writes `meta.dataset_meta` with numpy
arrays (mmpose's `flip_indices`, `sigmas`), `message_hub` with mmengine `HistoryBuffer` objects,
`optimizer` and `param_schedulers`. torch's `weights_only=True` refuses all of that, and
`weights_only=False` would run whatever a downloaded file names. This unpickler resolves only
torch's tensor rebuild functions, numpy's array reconstruction and plain containers; any other
class becomes an `Inert` placeholder holding its data, and a pickle that *calls* anything else
(its `__reduce__` names a function, as an exploit's does) is refused before the call.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint whose pickle would call a function this loader does not allow."""


class Inert:
    """Stands for an instance of a class this loader does not import (e.g. mmengine's HistoryBuffer).

    Made only by pickle's NEWOBJ (`cls.__new__`) and filled by BUILD; calling the class (REDUCE)
    is what an exploit does, and is refused.
    """

    pickled_class = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Inert:
        obj = super().__new__(cls)
        obj.__dict__["args"] = args
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise UnsafeCheckpointError(f"the checkpoint calls {self.pickled_class}(...) while loading: refused")

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def __repr__(self) -> str:
        return f"<inert {self.pickled_class}>"


_TORCH_DTYPES = (
    *("float16", "float32", "float64", "bfloat16", "complex64", "complex128"),
    *("uint8", "int8", "int16", "int32", "int64", "bool"),
)


def _numpy_multiarray() -> Any:
    try:
        from numpy._core import multiarray  # numpy ≥ 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    return multiarray


def _allowed() -> dict[tuple[str, str], Any]:
    multiarray = _numpy_multiarray()
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "slice"): slice,
        ("builtins", "complex"): complex,
        # numpy arrays pickled with protocol 2 carry their bytes as `_codecs.encode(str, "latin1")`.
        ("_codecs", "encode"): _latin1_encode,
        ("torch", "Size"): torch.Size,
        ("torch", "device"): torch.device,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
    }
    for name in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter"):
        if hasattr(torch._utils, name):
            allowed["torch._utils", name] = getattr(torch._utils, name)
    for dtype in _TORCH_DTYPES:
        allowed["torch", dtype] = getattr(torch, dtype)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[module, "_reconstruct"] = multiarray._reconstruct
        allowed[module, "scalar"] = multiarray.scalar
    for module in ("numpy", "numpy.dtypes"):
        for name in dir(np.dtypes):
            if name.endswith("DType"):
                allowed[module, name] = getattr(np.dtypes, name)
    return allowed


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding not in ("latin1", "latin-1"):
        raise UnsafeCheckpointError(f"unexpected encoding {encoding!r} in a pickled array")
    return text.encode("latin1")


_ALLOWED = _allowed()
_INERT_CLASSES: dict[tuple[str, str], type[Inert]] = {}


def _inert_class(module: str, name: str) -> type[Inert]:
    key = (module, name)
    if key not in _INERT_CLASSES:
        cls = type(f"Inert_{name}", (Inert,), {"pickled_class": f"{module}.{name}"})
        _INERT_CLASSES[key] = cls
    return _INERT_CLASSES[key]


class Unpickler(pickle.Unpickler):
    """pickle's Unpickler that resolves only the allowed globals; torch adds `persistent_load`."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return _ALLOWED[module, name]
        return _inert_class(module, name)


def load(file: IO[bytes], **kwargs: Any) -> Any:
    """`pickle.load` with the restricted Unpickler (torch's legacy format reads its header so)."""
    return Unpickler(file, **kwargs).load()


def torch_load(path: Path) -> Any:
    """`torch.load` of a checkpoint through this module's Unpickler, on the CPU.

    `weights_only=False` is what lets torch take a pickle module; the module is this one, which
    never resolves a global outside `_ALLOWED`, so nothing the file names is imported or run.
    """
    import sys

    try:
        return torch.load(path, map_location="cpu", pickle_module=sys.modules[__name__], weights_only=False)
    except UnsafeCheckpointError:
        raise
    except (pickle.UnpicklingError, EOFError, RuntimeError, ValueError, TypeError, AttributeError) as exc:
        raise pickle.UnpicklingError(f"{path.name}: not a readable checkpoint ({exc})") from exc
