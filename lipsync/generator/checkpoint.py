"""Reading a PyTorch checkpoint into numpy arrays without torch, and without ever running code from it.

A `.pth` file is a pickle, and unpickling can call any function the file names. This
reader unpickles with an allow-list: the tensor rebuild, float32/int64 storages,
OrderedDict and the plain containers and numbers pickle makes by itself. Every other
global is refused before anything is called, with the sentence the user reads ("Refused
to load …"). Both of torch's formats are read:

- zip (torch >= 1.6): `<name>/data.pkl` plus one entry `<name>/data/<key>` per storage;
- legacy (before 1.6, or `_use_new_zipfile_serialization=False`): four pickles (magic
  number, protocol, system info, the object) and the list of storage keys, then each
  storage as an int64 element count followed by its raw bytes.

Only the storages of the `state_dict` are read: an official checkpoint is two thirds
optimizer state, whose storages are skipped (seeked past or never opened), not
materialised. The result is checked against the generator's layout
(lipsync.generator.layout): a file that is not the Wav2Lip generator is named as such.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from ..errors import LipSyncError
from .layout import state_dict_shapes

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy file (torch.serialization.MAGIC_NUMBER)
LEGACY_PROTOCOL = 1001
STORAGE_DTYPES = {"FloatStorage": np.dtype("<f4"), "LongStorage": np.dtype("<i8")}  # what a state dict holds

Weights = dict[str, np.ndarray]


class _Refused(Exception):
    """The file names a global outside the allow-list: it could run code."""


class _Damaged(Exception):
    """The file is not a well-formed checkpoint (truncated, damaged, or another kind of file)."""


class _Sealed:
    """The reader's own stand-ins refuse a pickle BUILD (setting their state), which torch never writes on them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise _Damaged("state set on a stand-in object")


@dataclass(frozen=True)
class _StorageType(_Sealed):
    """Stands in for `torch.FloatStorage` & co. in the pickle: only its dtype matters. Not callable."""

    dtype: np.dtype


@dataclass(frozen=True)
class _Storage(_Sealed):
    """A storage the pickle refers to by key: read from the file only if a wanted tensor uses it."""

    key: str
    dtype: np.dtype
    numel: int


class _LazyTensor(_Sealed):
    """What `torch._utils._rebuild_tensor_v2` would build, as a recipe: storage, offset, shape, strides."""

    __slots__ = ("storage", "offset", "shape", "stride")

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    def last_element(self) -> int:
        return self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride)) if all(self.shape) else -1


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(type(v) is int for v in value):
        raise _Damaged(f"bad tensor {what}")
    return tuple(value)


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       backward_hooks: Any = None, metadata: Any = None) -> _LazyTensor:
    """torch._utils._rebuild_tensor_v2, minus torch: checks its arguments and keeps them."""
    if not isinstance(storage, _Storage) or type(storage_offset) is not int or storage_offset < 0:
        raise _Damaged("bad tensor storage")
    shape, strides = _ints(size, "size"), _ints(stride, "stride")
    if len(shape) != len(strides) or min(shape, default=0) < 0 or min(strides, default=0) < 0:
        raise _Damaged("bad tensor shape")
    tensor = _LazyTensor(storage, storage_offset, shape, strides)
    if tensor.last_element() >= storage.numel:
        raise _Damaged("tensor past the end of its storage")
    return tensor


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    **{("torch", name): _StorageType(dtype) for name, dtype in STORAGE_DTYPES.items()},
}


class _Unpickler(pickle.Unpickler):
    """pickle.Unpickler that can build only what `_ALLOWED` lists; storages become `_Storage` references."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file, encoding="utf-8")
        self.storages = storages

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage type, key, location, numel) in zip files; legacy ones add a storage view, always
        # None since torch 0.4 (2018): views are not read
        if not isinstance(pid, tuple) or len(pid) not in (5, 6) or pid[0] != "storage" or \
                (len(pid) == 6 and pid[5] is not None):
            raise _Damaged("unknown persistent id")
        kind, key, location, numel = pid[1:5]
        if not isinstance(kind, _StorageType) or not isinstance(key, str) or not isinstance(location, str) \
                or type(numel) is not int or numel < 0:
            raise _Damaged("bad storage reference")
        storage = self.storages.setdefault(key, _Storage(key, kind.dtype, numel))
        if storage.dtype != kind.dtype or storage.numel != numel:
            raise _Damaged("one storage seen with two types")
        return storage


def _unpickle(file: BinaryIO, storages: dict[str, _Storage]) -> Any:
    return _Unpickler(file, storages).load()


# ------------------------------------------------------------------------------------------------ the two formats


class _ZipFile:
    """A zip-format checkpoint: the pickle is `<prefix>/data.pkl`, storage k is `<prefix>/data/k`."""

    def __init__(self, path: str) -> None:
        self.zip = zipfile.ZipFile(path)
        try:
            pickles = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise _Damaged("no data.pkl")
            self.prefix = pickles[0][: -len("data.pkl")]
            names = set(self.zip.namelist())
            if f"{self.prefix}byteorder" in names and self.zip.read(f"{self.prefix}byteorder").strip() != b"little":
                raise _Damaged("big-endian storages")
            self.storages: dict[str, _Storage] = {}
            self.root = _unpickle(io.BytesIO(self.zip.read(pickles[0])), self.storages)
        except BaseException:
            self.zip.close()
            raise

    def read(self, storage: _Storage) -> np.ndarray:
        info = self.zip.getinfo(f"{self.prefix}data/{storage.key}")  # KeyError: a storage the file lacks
        nbytes = storage.numel * storage.dtype.itemsize
        if info.file_size != nbytes:
            raise _Damaged("storage of the wrong size")
        buffer = bytearray(nbytes)
        with self.zip.open(info) as entry:
            if entry.readinto(buffer) != nbytes:  # ZipExtFile checks the CRC at the end of the entry
                raise _Damaged("short storage")
        return np.frombuffer(buffer, storage.dtype)

    def close(self) -> None:
        self.zip.close()


class _LegacyFile:
    """A legacy checkpoint: the pickles, then every storage (int64 count + bytes) in the order of the key list."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "rb")
        self.storages: dict[str, _Storage] = {}
        try:
            header = [_unpickle(self.file, {}) for _ in range(3)]
            if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
                raise _Damaged("not a torch file")
            info = header[2]
            if not isinstance(info, dict) or dict.get(info, "little_endian") is not True:
                raise _Damaged("big-endian or unknown system")
            self.root = _unpickle(self.file, self.storages)
            keys = _unpickle(self.file, {})
            if not isinstance(keys, list) or set(keys) != set(self.storages) or len(keys) != len(self.storages):
                raise _Damaged("storage list does not match the pickle")
            self.offsets = self._locate(keys)
        except BaseException:
            self.file.close()
            raise

    def _locate(self, keys: list[str]) -> dict[str, int]:
        """Where each storage's bytes start, found by reading only the 8-byte counts and seeking past the data."""
        size = os.fstat(self.file.fileno()).st_size
        offset, offsets = self.file.tell(), {}
        for key in keys:
            self.file.seek(offset)
            count = self.file.read(8)
            if len(count) != 8 or struct.unpack("<q", count)[0] != self.storages[key].numel:
                raise _Damaged("storage count does not match")
            offsets[key] = offset + 8
            offset += 8 + self.storages[key].numel * self.storages[key].dtype.itemsize
            if offset > size:
                raise _Damaged("truncated")
        return offsets

    def read(self, storage: _Storage) -> np.ndarray:
        nbytes = storage.numel * storage.dtype.itemsize
        buffer = bytearray(nbytes)
        self.file.seek(self.offsets[storage.key])
        if self.file.readinto(buffer) != nbytes:
            raise _Damaged("short storage")
        return np.frombuffer(buffer, storage.dtype)

    def close(self) -> None:
        self.file.close()


def _open(path: str) -> _ZipFile | _LegacyFile:
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    return _ZipFile(path) if zipped else _LegacyFile(path)


def _materialise(tensor: _LazyTensor, file: _ZipFile | _LegacyFile) -> np.ndarray:
    """The tensor's values as a C-contiguous, writable numpy array (a copy only when it is a strided view)."""
    flat = file.read(tensor.storage)
    if not all(tensor.shape):
        return np.zeros(tensor.shape, flat.dtype)
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], tensor.shape,
                                           tuple(s * flat.itemsize for s in tensor.stride), writeable=False)
    if view.flags.c_contiguous and view.size == flat.size:
        return flat.reshape(tensor.shape)
    return view.copy()  # C order by default


# ------------------------------------------------------------------------------------------------ the generator


def read_state_dict(path: str) -> Weights:
    """The tensors of a checkpoint's `state_dict` (or of the file itself, when it is a bare state dict), by name,
    with any `module.` prefix removed. Raises LipSyncError with the sentence for each way a file can be wrong."""
    if not os.path.isfile(path):
        raise LipSyncError(f"Checkpoint not found: '{path}'. Check --checkpoint_path, or put wav2lip_gan.pth "
                           "in the weights/ folder (see weights/README.md).")
    try:
        file = _open(path)
        try:
            # dict's own methods, not the objects': a pickle can set attributes on the OrderedDicts it makes
            state = dict.get(file.root, "state_dict", file.root) if isinstance(file.root, dict) else None
            items = list(dict.items(state)) if isinstance(state, dict) else []
            if not items or not all(type(k) is str and isinstance(v, _LazyTensor) for k, v in items):
                raise LipSyncError(f"'{path}' is a PyTorch file but holds no model weights. "
                                   "Use wav2lip.pth or wav2lip_gan.pth (see weights/README.md).")
            return {key.removeprefix("module."): _materialise(value, file) for key, value in items}
        finally:
            file.close()
    except _Refused:
        raise LipSyncError(
            f"Refused to load '{path}': it holds Python objects or code, not just weights, and loading it "
            "could run that code. Use an official Wav2Lip checkpoint (see weights/README.md).") from None
    except LipSyncError:
        raise
    except (_Damaged, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            IndexError, TypeError, AttributeError, RecursionError, MemoryError, struct.error):
        raise LipSyncError(damaged(path)) from None


def damaged(path: str) -> str:
    size = os.path.getsize(path)
    return (f"'{path}' is not a readable PyTorch checkpoint ({size:,} bytes: truncated, damaged or another "
            "kind of file). Download it again (the official files are about 436 MB); see weights/README.md.")


def read_weights(path: str) -> Weights:
    """The Wav2Lip generator's weights from an official checkpoint, every name and shape checked."""
    state = read_state_dict(path)
    check_layout(state, path)
    return state


def check_layout(state: Weights, path: str) -> None:
    """A clear sentence when `state` is not the generator's state dict (a SyncNet checkpoint, another model)."""
    expected = state_dict_shapes()
    missing = [k for k in expected if k not in state]
    wrong_shape = [k for k in expected if k in state and tuple(state[k].shape) != expected[k]]
    wrong_type = [k for k in expected if k in state and state[k].dtype != (np.int64 if k.endswith("tracked")
                                                                           else np.float32)]
    if missing or wrong_shape or wrong_type or len(state) != len(expected):
        kind = "a SyncNet (lip-sync expert) checkpoint" if any(k.startswith("face_encoder.") for k in state) \
            else "not the Wav2Lip generator"
        raise LipSyncError(
            f"'{path}' is {kind}: {len(missing)} of its {len(expected)} weights are missing and "
            f"{len(wrong_shape) + len(wrong_type)} have the wrong shape. Use wav2lip.pth or wav2lip_gan.pth "
            "(see weights/README.md).")
