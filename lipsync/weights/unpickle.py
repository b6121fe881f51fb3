"""Unpickling a PyTorch checkpoint's pickle without torch and without running anything the file names.

A `.pth` file is a pickle, and unpickling can call any function the file names. This unpickler builds only
what an allow-list names: the tensor and parameter rebuilds, torch's storage types, OrderedDict and the plain
containers and numbers pickle makes by itself. Any other global raises `Refused` before anything is called.
Tensors come out as `LazyTensor` recipes (storage, offset, shape, strides) over `Storage` references: no data
is read here; the reader (reader.py) checks the recipes and reads only the storages it wants.
"""

from __future__ import annotations

import math
import pickle
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np


class Refused(Exception):
    """The file names a global outside the allow-list: it could run code."""


class Damaged(Exception):
    """The file is not a well-formed checkpoint (truncated, damaged, another kind of file, or crafted)."""


# ------------------------------------------------------------------------------------------------ storage types


@dataclass(frozen=True)
class StorageType:
    """Stands in for `torch.FloatStorage` & co. in the pickle (never called): how its elements are stored."""

    dtype_name: str  # torch's name of the dtype, for the sentence
    itemsize: int
    stored: np.dtype | None  # how the raw bytes read; None: a dtype this reader does not convert

    def __setstate__(self, state: Any) -> None:
        raise Damaged("state set on a storage type")


def _storage(dtype_name: str, itemsize: int, stored: str | None = None) -> StorageType:
    return StorageType(dtype_name, itemsize, np.dtype(stored) if stored else None)


# torch's typed storages (what torch.save names in the pickle), with what each reads as
STORAGE_TYPES: dict[str, StorageType] = {
    "FloatStorage": _storage("float32", 4, "<f4"),
    "HalfStorage": _storage("float16", 2, "<f2"),
    "BFloat16Storage": _storage("bfloat16", 2, "<u2"),  # no numpy dtype: the top half of a float32's bits
    "DoubleStorage": _storage("float64", 8, "<f8"),
    "LongStorage": _storage("int64", 8, "<i8"),
    # read past (in an optimizer state, say) but never converted: a wanted tensor of these gets a sentence
    "IntStorage": _storage("int32", 4), "ShortStorage": _storage("int16", 2), "CharStorage": _storage("int8", 1),
    "ByteStorage": _storage("uint8", 1), "BoolStorage": _storage("bool", 1),
    "ComplexFloatStorage": _storage("complex64", 8), "ComplexDoubleStorage": _storage("complex128", 16),
    "QInt8Storage": _storage("qint8", 1), "QUInt8Storage": _storage("quint8", 1),
    "QInt32Storage": _storage("qint32", 4), "QUInt4x2Storage": _storage("quint4x2", 1),
    "QUInt2x4Storage": _storage("quint2x4", 1),
}


# ------------------------------------------------------------------------------------------------ the pickle


class _Sealed:
    """The reader's own stand-ins refuse a pickle BUILD (setting their state), which torch never writes on them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise Damaged("state set on a stand-in object")


@dataclass(frozen=True)
class Storage(_Sealed):
    """A storage the pickle refers to by key: read from the file only if a wanted tensor uses it."""

    key: str
    kind: StorageType
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.kind.itemsize


class LazyTensor(_Sealed):
    """What `torch._utils._rebuild_tensor_v2` would build, as a recipe: storage, offset, shape, strides."""

    __slots__ = ("offset", "shape", "storage", "stride")

    def __init__(self, storage: Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def last_element(self) -> int:
        return self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) if all(self.shape) else -1


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise Damaged(f"bad tensor {what}")
    return tuple(value)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> LazyTensor:
    """torch._utils._rebuild_tensor_v2, minus torch: checks its arguments and keeps them."""
    if not isinstance(storage, Storage) or type(storage_offset) is not int or storage_offset < 0:
        raise Damaged("bad tensor storage")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if len(shape) != len(strides) or min(shape, default=0) < 0 or min(strides, default=0) < 0:
        raise Damaged("bad tensor shape")
    tensor = LazyTensor(storage, storage_offset, shape, strides)
    if tensor.last_element() >= storage.numel:
        raise Damaged("tensor past the end of its storage")
    return tensor


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> LazyTensor:
    """torch._utils._rebuild_parameter: an nn.Parameter is its tensor here (what torch.save writes for a state
    dict of parameters, e.g. `dict(model.named_parameters())`)."""
    if not isinstance(data, LazyTensor):
        raise Damaged("a parameter without a tensor")
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                                  state: Any = None) -> LazyTensor:
    """torch._utils._rebuild_parameter_with_state (a parameter with attributes set on it): the tensor; the
    attributes (made by this same allow-list) are not weights and are dropped."""
    return _rebuild_parameter(data)


# dtypes without a typed storage: torch saves them as an untyped storage (bytes) and _rebuild_tensor_v3
UNTYPED_DTYPES = ("float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu",
                  "float4_e2m1fn_x2", "uint16", "uint32", "uint64", "complex32")
_BYTES = _storage("bytes", 1)  # torch.storage.UntypedStorage: its count is in bytes


@dataclass(frozen=True)
class _Dtype(_Sealed):
    """Stands in for `torch.float8_e4m3fn` & co. in the pickle: only its name matters."""

    name: str


def _rebuild_tensor_v3(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> LazyTensor:
    """torch._utils._rebuild_tensor_v3, which torch writes only for the dtypes above: a tensor of a dtype this
    reader does not convert (a wanted one gets the sentence naming it; an unwanted one is never read)."""
    if not isinstance(storage, Storage) or storage.kind != _BYTES or not isinstance(dtype, _Dtype) \
            or type(storage_offset) is not int:
        raise Damaged("bad tensor storage")
    return LazyTensor(Storage(storage.key, _storage(dtype.name, 1), storage.numel), storage_offset,
                       _ints(size, "size"), _ints(stride, "stride"))


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch.storage", "UntypedStorage"): _BYTES,
    **{("torch", name): kind for name, kind in STORAGE_TYPES.items()},
    **{("torch", name): _Dtype(name) for name in UNTYPED_DTYPES},
}


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler that can build only what `_ALLOWED` lists; storages become `Storage` references."""

    def __init__(self, file: BinaryIO, storages: dict[str, Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Storage:
        # ('storage', storage type, key, location, numel) in zip files; legacy ones add a storage view, always
        # None since torch 0.4 (2018): views are not read
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage" or \
                (len(pid) == 6 and pid[5] is not None):
            raise Damaged("unknown persistent id")
        kind, key, location, numel = pid[1:5]
        if not isinstance(kind, StorageType) or not isinstance(key, str) or not isinstance(location, str) \
                or type(numel) is not int or numel < 0:
            raise Damaged("bad storage reference")
        storage = self.storages.setdefault(key, Storage(key, kind, numel))
        if storage.kind != kind or storage.numel != numel:
            raise Damaged("one storage seen with two types")
        return storage


def unpickle(file: BinaryIO, storages: dict[str, Storage]) -> Any:
    """One pickle from `file`, built by the allow-list; each storage it names is added to `storages` by key."""
    return _Unpickler(file, storages).load()
