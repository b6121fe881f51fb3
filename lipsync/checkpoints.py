"""Reading a PyTorch checkpoint into numpy arrays: without torch, never running code from the file, and never
holding more memory than the weights it should contain. One reader for every checkpoint the package loads:
the Wav2Lip generator, S3FD, GFPGAN.

A `.pth` file is a pickle, and unpickling can call any function the file names. This
reader unpickles with an allow-list: the tensor and parameter rebuilds, torch's storage
types, OrderedDict and the plain containers and numbers pickle makes by itself. Every other
global is refused before anything is called, with the sentence the user reads ("Refused to
load …"). Both of torch's formats are read:

- zip (torch >= 1.6): `<name>/data.pkl` plus one entry `<name>/data/<key>` per storage;
- legacy (before 1.6, or `_use_new_zipfile_serialization=False`): four pickles (magic
  number, protocol, system info, the object) and the list of storage keys, then each
  storage as an int64 element count followed by its raw bytes.

A small file can ask for a lot of memory: a tensor that repeats one value 2**28 times
(a stride-0 view), a data.pkl or a storage deflated from a gigabyte to a megabyte. So
the work goes in this order, and nothing of the tensors' data is read before the last step:

1. the pickle: at most PICKLE_BYTES, inflated or not (the largest measured, an official
   Wav2Lip file with its optimizer state, is 110 KB);
2. the weights: the dict `select` names (e.g. 'state_dict', else the file itself);
3. the layout: every name and shape against what the caller expects (`layout`), before
   any data: a file of another model is named as such;
4. the views: each tensor inside its storage and no larger than it (a stride-0 view that
   repeats values is refused), each storage no larger than the tensors that view it (so a
   storage is never read for a sliver of it), a zip entry's declared size exactly its
   storage's, and, without a layout, the tensors together at most twice the file's size;
5. the data: only the storages of the wanted tensors (an official Wav2Lip file is two
   thirds optimizer state, skipped on disk), each read in pieces up to its declared size
   whatever the zip's deflate stream holds (its CRC checked at the end).

So the memory held is about the weights' own size: the arrays returned, plus one storage
while it is converted. Floating-point weights are returned as float32 whatever they were
stored as (float16 and bfloat16, as people convert checkpoints to halve them, and
float64): the OpenVINO graphs and the torch modules all run in float32. Integer counters
(batch norm's num_batches_tracked) are int64. Other dtypes get a sentence naming them.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np

from .errors import LipSyncError

PICKLE_BYTES = 8 << 20  # the most a checkpoint's pickle may take (largest measured: 110 KB, see the docstring)
READ_PIECE = 4 << 20  # bytes inflated from a zip entry at a time
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy file (torch.serialization.MAGIC_NUMBER)
LEGACY_PROTOCOL = 1001
ROOT = None  # in `select`: the file's own top-level dict (a bare state dict)
DAMAGED = "truncated, damaged or another kind of file"
COUNTER = "num_batches_tracked"  # batch norm's step counter, the one integer tensor of these state dicts

Weights = dict[str, np.ndarray]
Layout = Mapping[str, tuple[int, ...]]


class CheckpointError(LipSyncError):
    """A checkpoint this reader will not use. str(): the sentence a person reads; `reason`: the short why, for a
    caller that words its own sentence around it."""

    def __init__(self, sentence: str, reason: str) -> None:
        super().__init__(sentence)
        self.reason = reason


class CheckpointRefused(CheckpointError):
    """The file names a global outside the allow-list: loading it could run code."""


# ------------------------------------------------------------------------------------------------ storage types


@dataclass(frozen=True)
class _StorageType:
    """Stands in for `torch.FloatStorage` & co. in the pickle (never called): how its elements are stored."""

    dtype_name: str  # torch's name of the dtype, for the sentence
    itemsize: int
    stored: np.dtype | None  # how the raw bytes read; None: a dtype this reader does not convert

    def __setstate__(self, state: Any) -> None:
        raise _Damaged("state set on a storage type")


def _storage(dtype_name: str, itemsize: int, stored: str | None = None) -> _StorageType:
    return _StorageType(dtype_name, itemsize, np.dtype(stored) if stored else None)


# torch's typed storages (what torch.save names in the pickle), with what each reads as
STORAGE_TYPES: dict[str, _StorageType] = {
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


class _Refused(Exception):
    """The file names a global outside the allow-list: it could run code."""


class _Damaged(Exception):
    """The file is not a well-formed checkpoint (truncated, damaged, another kind of file, or crafted)."""


class _Sealed:
    """The reader's own stand-ins refuse a pickle BUILD (setting their state), which torch never writes on them."""

    __slots__ = ()

    def __setstate__(self, state: Any) -> None:
        raise _Damaged("state set on a stand-in object")


@dataclass(frozen=True)
class _Storage(_Sealed):
    """A storage the pickle refers to by key: read from the file only if a wanted tensor uses it."""

    key: str
    kind: _StorageType
    numel: int

    @property
    def nbytes(self) -> int:
        return self.numel * self.kind.itemsize


class _LazyTensor(_Sealed):
    """What `torch._utils._rebuild_tensor_v2` would build, as a recipe: storage, offset, shape, strides."""

    __slots__ = ("offset", "shape", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, shape: tuple[int, ...], stride: tuple[int, ...]) -> None:
        self.storage, self.offset, self.shape, self.stride = storage, offset, shape, stride

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

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


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None) -> _LazyTensor:
    """torch._utils._rebuild_parameter: an nn.Parameter is its tensor here (what torch.save writes for a state
    dict of parameters, e.g. `dict(model.named_parameters())`)."""
    if not isinstance(data, _LazyTensor):
        raise _Damaged("a parameter without a tensor")
    return data


def _rebuild_parameter_with_state(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                                  state: Any = None) -> _LazyTensor:
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
                       backward_hooks: Any, dtype: Any, metadata: Any = None) -> _LazyTensor:
    """torch._utils._rebuild_tensor_v3, which torch writes only for the dtypes above: a tensor of a dtype this
    reader does not convert (a wanted one gets the sentence naming it; an unwanted one is never read)."""
    if not isinstance(storage, _Storage) or storage.kind != _BYTES or not isinstance(dtype, _Dtype) \
            or type(storage_offset) is not int:
        raise _Damaged("bad tensor storage")
    return _LazyTensor(_Storage(storage.key, _storage(dtype.name, 1), storage.numel), storage_offset,
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
        storage = self.storages.setdefault(key, _Storage(key, kind, numel))
        if storage.kind != kind or storage.numel != numel:
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
            if f"{self.prefix}byteorder" in names and self._small(f"{self.prefix}byteorder").strip() != b"little":
                raise _Damaged("big-endian storages")
            self.storages: dict[str, _Storage] = {}
            self.root = _unpickle(io.BytesIO(self._small(pickles[0])), self.storages)
        except BaseException:
            self.zip.close()
            raise

    def _small(self, name: str) -> bytes:
        """An entry of at most PICKLE_BYTES (declared, and read no further whatever it inflates to)."""
        info = self.zip.getinfo(name)
        if info.file_size > PICKLE_BYTES:
            raise _Damaged(f"{name} is {info.file_size:,} bytes")
        with self.zip.open(info) as entry:
            return entry.read(PICKLE_BYTES)

    def check(self, storage: _Storage) -> None:
        """Before any data is read: the storage's entry exists and declares exactly its storage's size."""
        info = self.zip.getinfo(f"{self.prefix}data/{storage.key}")  # KeyError: a storage the file lacks
        if info.file_size != storage.nbytes:
            raise _Damaged("storage of the wrong size")

    def read(self, storage: _Storage) -> bytearray:
        """The storage's bytes, inflated a piece at a time into one buffer of its declared size, and no further."""
        buffer = bytearray(storage.nbytes)
        into, done = memoryview(buffer), 0
        with self.zip.open(f"{self.prefix}data/{storage.key}") as entry:
            while done < len(buffer):
                piece = entry.read(min(READ_PIECE, len(buffer) - done))
                if not piece:
                    raise _Damaged("short storage")
                into[done:done + len(piece)] = piece
                done += len(piece)
            # ZipExtFile checks the CRC once the entry's declared size is read: here
        return buffer

    def close(self) -> None:
        self.zip.close()


class _LegacyFile:
    """A legacy checkpoint: the pickles, then every storage (int64 count + bytes) in the order of the key list."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "rb")  # kept open until close(): storages are read later
        self.storages: dict[str, _Storage] = {}
        try:
            size = os.fstat(self.file.fileno()).st_size
            head = io.BytesIO(self.file.read(PICKLE_BYTES))  # the pickles, whatever they declare, come from here
            try:
                self._unpickle_head(head)
            except (EOFError, pickle.UnpicklingError):
                if size > PICKLE_BYTES:
                    raise _Damaged(f"pickles over {PICKLE_BYTES:,} bytes") from None
                raise
            self.offsets = self._locate(head.tell(), size)
        except BaseException:
            self.file.close()
            raise

    def _unpickle_head(self, head: BinaryIO) -> None:
        header = [_unpickle(head, {}) for _ in range(3)]
        if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
            raise _Damaged("not a torch file")
        info = header[2]
        if not isinstance(info, dict) or dict.get(info, "little_endian") is not True:
            raise _Damaged("big-endian or unknown system")
        self.root = _unpickle(head, self.storages)
        self.keys = _unpickle(head, {})
        if not isinstance(self.keys, list) or set(self.keys) != set(self.storages) \
                or len(self.keys) != len(self.storages):
            raise _Damaged("storage list does not match the pickle")

    def _locate(self, offset: int, size: int) -> dict[str, int]:
        """Where each storage's bytes start, found by reading only the 8-byte counts and seeking past the data."""
        offsets = {}
        for key in self.keys:
            self.file.seek(offset)
            count = self.file.read(8)
            if len(count) != 8 or struct.unpack("<q", count)[0] != self.storages[key].numel:
                raise _Damaged("storage count does not match")
            offsets[key] = offset + 8
            offset += 8 + self.storages[key].nbytes
            if offset > size:
                raise _Damaged("truncated")
        return offsets

    def check(self, storage: _Storage) -> None:
        """Nothing left to check before reading: _locate found every storage whole inside the file."""

    def read(self, storage: _Storage) -> bytearray:
        buffer = bytearray(storage.nbytes)
        self.file.seek(self.offsets[storage.key])
        if self.file.readinto(buffer) != len(buffer):
            raise _Damaged("short storage")
        return buffer

    def close(self) -> None:
        self.file.close()


def _open(path: str) -> _ZipFile | _LegacyFile:
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    return _ZipFile(path) if zipped else _LegacyFile(path)


# ------------------------------------------------------------------------------------------------ the sentences


@dataclass(frozen=True)
class _Said:
    """What the sentences say about the file: its path, what it should be, and how to fix it."""

    path: str
    what: str  # 'the Wav2Lip generator'
    hint: str  # the fix, e.g. 'Use wav2lip.pth or wav2lip_gan.pth (see weights/README.md).'
    redownload: str  # the fix for a damaged file

    def damaged(self) -> CheckpointError:
        size = os.path.getsize(self.path) if os.path.exists(self.path) else 0
        return CheckpointError(f"'{self.path}' is not a readable PyTorch checkpoint ({size:,} bytes: {DAMAGED}). "
                               f"{self.redownload}", DAMAGED)

    def refused(self) -> CheckpointRefused:
        return CheckpointRefused(f"Refused to load '{self.path}': it holds Python objects or code, not just weights, "
                                 f"and loading it could run that code. {self.hint}", "it holds Python objects or code")

    def no_weights(self, select: Sequence[str | None]) -> CheckpointError:
        named = [repr(key) for key in select if key is not ROOT]
        where = f" (no {' or '.join(named)})" if ROOT not in select else ""
        return CheckpointError(f"'{self.path}' is a PyTorch file but holds no model weights{where}. {self.hint}",
                               "no model weights")

    def wrong_layout(self, kind: str, missing: int, expected: int, wrong: int) -> CheckpointError:
        counts = f"{missing} of its {expected} weights are missing and {wrong} have the wrong shape"
        return CheckpointError(f"'{self.path}' is {kind}: {counts}. {self.hint}", f"{kind}: {counts}")

    def bad_tensor(self, name: str, problem: str) -> CheckpointError:
        return CheckpointError(f"'{self.path}' is not {self.what} as PyTorch saves it: its tensor '{name}' {problem}. "
                               f"{self.hint}", f"its tensor '{name}' {problem}")

    def too_big(self, tensors: int, size: int) -> CheckpointError:
        return CheckpointError(f"'{self.path}' declares {tensors:,} bytes of weights in a file of {size:,} bytes, "
                               "more than its storages can hold (compressed, or the same values viewed many times "
                               f"over), which no saved model does. {self.redownload}", "more weights than the file")

    def dtype(self, name: str, dtype_name: str) -> CheckpointError:
        return CheckpointError(f"'{self.path}' stores its weights as {dtype_name} ('{name}'): lipsync reads float32, "
                               f"float16, bfloat16 and float64 weights. {self.hint}",
                               f"weights stored as {dtype_name}")


# ------------------------------------------------------------------------------------------------ reading


def read_tensors(path: str, layout: Layout | None, *, select: Sequence[str | None] = (ROOT,),
                 strip_prefix: str = "module.", what: str = "a model checkpoint", hint: str = "",
                 redownload: str = "", others: Mapping[str, str] | None = None,
                 optional: Collection[str] = ()) -> Weights:
    """The tensors of one dict in a PyTorch checkpoint, by name, as numpy arrays (float32, or int64 counters).

    `select`: where the weights are, the first that is a dict: keys of the file's top-level dict, ROOT for the
    file itself (Wav2Lip: ('state_dict', ROOT); GFPGAN: ('params_ema', 'params')). `strip_prefix` is removed
    from each name (DataParallel's 'module.'). `layout`: every name with its shape, checked before any data is
    read (None: any names; then the tensors together may be at most twice the file's size). `what` and `hint`
    word the sentences (what the file should be; how to fix it), `redownload` the one for a damaged file (else
    `hint`); `others` names files of other models by a name prefix they hold ({'face_encoder.': 'a SyncNet
    checkpoint'}). `optional`: names of the layout a file may lack (counters an old torch did not save). Raises
    CheckpointError (a LipSyncError) with the sentence for each way a file can be wrong,
    CheckpointRefused for a file that names any global outside the allow-list (the module docstring).
    """
    said = _Said(path, what, hint, redownload or hint)
    if not os.path.isfile(path):
        raise CheckpointError(f"Checkpoint not found: '{path}'. {said.redownload}", "not found")
    try:
        file = _open(path)
        try:
            tensors = _select(file.root, select, strip_prefix, said)
            if layout is not None:
                _check_layout(tensors, layout, said, others or {}, set(optional))
            _check_views(tensors, said)
            _check_size(tensors, layout, path, said)
            for tensor in tensors.values():
                file.check(tensor.storage)
            return _materialise(tensors, file)
        finally:
            file.close()
    except _Refused:
        raise said.refused() from None
    except (_Damaged, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            IndexError, TypeError, AttributeError, RecursionError, MemoryError, struct.error):
        raise said.damaged() from None


def layout_of(module: Any) -> dict[str, tuple[int, ...]]:
    """Every name of a torch module's state dict with its shape (build the module on the meta device: no memory)."""
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def _select(root: Any, select: Sequence[str | None], strip_prefix: str, said: _Said) -> dict[str, _LazyTensor]:
    """The wanted tensors by name (prefix stripped), in the file's order; a sentence when there are none."""
    # dict's own methods, not the objects': a pickle can set attributes on the OrderedDicts it makes
    state = None
    for key in select:
        candidate = root if key is ROOT else dict.get(root, key) if isinstance(root, dict) else None
        if isinstance(candidate, dict):
            state = candidate
            break
    items = list(dict.items(state)) if state is not None else []
    if not items or not all(type(k) is str and isinstance(v, _LazyTensor) for k, v in items):
        raise said.no_weights(select)
    tensors = {key.removeprefix(strip_prefix): value for key, value in items}
    if len(tensors) != len(items):
        raise _Damaged("two tensors named alike once the prefix is removed")
    return tensors


def _check_layout(tensors: dict[str, _LazyTensor], layout: Layout, said: _Said, others: Mapping[str, str],
                  optional: set[str]) -> None:
    """A sentence naming the file when its names and shapes are not `layout`'s (before any data is read)."""
    missing = [name for name in layout if name not in tensors and name not in optional]
    wrong = [name for name in layout if name in tensors and tensors[name].shape != tuple(layout[name])]
    if missing or wrong or any(name not in layout for name in tensors):
        kind = next((other for prefix, other in others.items() if any(n.startswith(prefix) for n in tensors)),
                    f"not {said.what}")
        raise said.wrong_layout(kind, len(missing), len(layout), len(wrong))


def _check_views(tensors: dict[str, _LazyTensor], said: _Said) -> None:
    """Each tensor of a dtype this reader converts, no larger than its storage (a stride-0 view repeats values:
    2**28 floats from one), and each storage no larger than the tensors that view it (read for a sliver)."""
    viewed: dict[str, int] = {}
    for name, tensor in tensors.items():
        kind = tensor.storage.kind
        if kind.stored is None:
            raise said.dtype(name, kind.dtype_name)
        if tensor.numel > tensor.storage.numel:
            raise said.bad_tensor(name, f"repeats values: {tensor.numel:,} of them from a storage of "
                                        f"{tensor.storage.numel:,} (a stride-0 view)")
        viewed[tensor.storage.key] = viewed.get(tensor.storage.key, 0) + tensor.numel
    for name, tensor in tensors.items():
        if tensor.storage.numel > viewed[tensor.storage.key]:
            raise said.bad_tensor(name, f"is {tensor.numel:,} values of a storage of {tensor.storage.numel:,} that "
                                        "no other weight uses (a slice saved without .clone())")


def _check_size(tensors: dict[str, _LazyTensor], layout: Layout | None, path: str, said: _Said) -> None:
    """Without a layout to bound them, the tensors (as float32) may not be more than twice the file: PyTorch
    stores its storages uncompressed, and float16 doubles as float32."""
    if layout is not None:
        return  # bounded already: every name and shape is the layout's, every storage at most its views
    size = os.path.getsize(path)
    declared = sum(_output_dtype(t.storage.kind).itemsize * t.numel for t in tensors.values())
    if declared > 2 * size:
        raise said.too_big(declared, size)


def _output_dtype(kind: _StorageType) -> np.dtype:
    return np.dtype("<i8") if kind.stored == np.dtype("<i8") else np.dtype("<f4")


def _as_output(raw: bytearray, kind: _StorageType) -> np.ndarray:
    """A storage's bytes as a flat float32 (or int64) array: float16, bfloat16 and float64 converted."""
    flat = np.frombuffer(raw, kind.stored)
    if kind.dtype_name == "bfloat16":  # bfloat16 is the top 16 bits of a float32
        return (flat.astype("<u4") << 16).view("<f4")
    out = _output_dtype(kind)
    return flat if flat.dtype == out else flat.astype(out)


def _by_storage(tensors: dict[str, _LazyTensor]) -> dict[str, list[str]]:
    """The wanted tensors' names grouped by their storage, storages in the order first used."""
    groups: dict[str, list[str]] = {}
    for name, tensor in tensors.items():
        groups.setdefault(tensor.storage.key, []).append(name)
    return groups


def _materialise(tensors: dict[str, _LazyTensor], file: _ZipFile | _LegacyFile) -> Weights:
    """Every wanted tensor's values, each storage read once and let go once its tensors are made."""
    arrays: Weights = {}
    for names in _by_storage(tensors).values():
        flat = _as_output(file.read(tensors[names[0]].storage), tensors[names[0]].storage.kind)
        for name in names:
            array = _view(tensors[name], flat)
            # a counter stays an integer when a whole state dict was converted (`{k: v.half() for …}`)
            arrays[name] = array.astype("<i8") if name.endswith(COUNTER) and array.dtype != np.int64 else array
    return {name: arrays[name] for name in tensors}


def _view(tensor: _LazyTensor, flat: np.ndarray) -> np.ndarray:
    """The tensor's values as a C-contiguous, writable numpy array (a copy only when it is a strided view)."""
    if not all(tensor.shape):
        return np.zeros(tensor.shape, flat.dtype)
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], tensor.shape,
                                           tuple(s * flat.itemsize for s in tensor.stride), writeable=False)
    if view.flags.c_contiguous and view.size == flat.size:
        return flat.reshape(tensor.shape)
    return view.copy()  # C order by default
