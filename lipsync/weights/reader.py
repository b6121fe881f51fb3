"""Reading a PyTorch checkpoint into numpy arrays: without torch, never running code from the file, and never
holding more memory than the weights it should contain. One reader for every checkpoint the package loads:
the Wav2Lip generator, S3FD, GFPGAN, SyncNet.

The file is opened by formats.py (zip or legacy) and its pickle built by unpickle.py's allow-list: a file
naming any other global is refused before anything is called, with the sentence the user reads ("Refused to
load …"). Here, the checks and the reading.

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

import os
import pickle
import struct
import zipfile
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import LipSyncError
from .formats import LegacyCheckpoint, ZipCheckpoint, open_checkpoint
from .unpickle import Damaged, LazyTensor, Refused, StorageType

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
        file = open_checkpoint(path)
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
    except Refused:
        raise said.refused() from None
    except (Damaged, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError,
            IndexError, TypeError, AttributeError, RecursionError, MemoryError, struct.error):
        raise said.damaged() from None


def layout_of(module: Any) -> dict[str, tuple[int, ...]]:
    """Every name of a torch module's state dict with its shape (build the module on the meta device: no memory)."""
    return {name: tuple(tensor.shape) for name, tensor in module.state_dict().items()}


def _select(root: Any, select: Sequence[str | None], strip_prefix: str, said: _Said) -> dict[str, LazyTensor]:
    """The wanted tensors by name (prefix stripped), in the file's order; a sentence when there are none."""
    # dict's own methods, not the objects': a pickle can set attributes on the OrderedDicts it makes
    state = None
    for key in select:
        candidate = root if key is ROOT else dict.get(root, key) if isinstance(root, dict) else None
        if isinstance(candidate, dict):
            state = candidate
            break
    items = list(dict.items(state)) if state is not None else []
    if not items or not all(type(k) is str and isinstance(v, LazyTensor) for k, v in items):
        raise said.no_weights(select)
    tensors = {key.removeprefix(strip_prefix): value for key, value in items}
    if len(tensors) != len(items):
        raise Damaged("two tensors named alike once the prefix is removed")
    return tensors


def _check_layout(tensors: dict[str, LazyTensor], layout: Layout, said: _Said, others: Mapping[str, str],
                  optional: set[str]) -> None:
    """A sentence naming the file when its names and shapes are not `layout`'s (before any data is read)."""
    missing = [name for name in layout if name not in tensors and name not in optional]
    wrong = [name for name in layout if name in tensors and tensors[name].shape != tuple(layout[name])]
    if missing or wrong or any(name not in layout for name in tensors):
        kind = next((other for prefix, other in others.items() if any(n.startswith(prefix) for n in tensors)),
                    f"not {said.what}")
        raise said.wrong_layout(kind, len(missing), len(layout), len(wrong))


def _check_views(tensors: dict[str, LazyTensor], said: _Said) -> None:
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


def _check_size(tensors: dict[str, LazyTensor], layout: Layout | None, path: str, said: _Said) -> None:
    """Without a layout to bound them, the tensors (as float32) may not be more than twice the file: PyTorch
    stores its storages uncompressed, and float16 doubles as float32."""
    if layout is not None:
        return  # bounded already: every name and shape is the layout's, every storage at most its views
    size = os.path.getsize(path)
    declared = sum(_output_dtype(t.storage.kind).itemsize * t.numel for t in tensors.values())
    if declared > 2 * size:
        raise said.too_big(declared, size)


def _output_dtype(kind: StorageType) -> np.dtype:
    return np.dtype("<i8") if kind.stored == np.dtype("<i8") else np.dtype("<f4")


def _as_output(raw: bytearray, kind: StorageType) -> np.ndarray:
    """A storage's bytes as a flat float32 (or int64) array: float16, bfloat16 and float64 converted."""
    flat = np.frombuffer(raw, kind.stored)
    if kind.dtype_name == "bfloat16":  # bfloat16 is the top 16 bits of a float32
        return (flat.astype("<u4") << 16).view("<f4")
    out = _output_dtype(kind)
    return flat if flat.dtype == out else flat.astype(out)


def _by_storage(tensors: dict[str, LazyTensor]) -> dict[str, list[str]]:
    """The wanted tensors' names grouped by their storage, storages in the order first used."""
    groups: dict[str, list[str]] = {}
    for name, tensor in tensors.items():
        groups.setdefault(tensor.storage.key, []).append(name)
    return groups


def _materialise(tensors: dict[str, LazyTensor], file: ZipCheckpoint | LegacyCheckpoint) -> Weights:
    """Every wanted tensor's values, each storage read once and let go once its tensors are made."""
    arrays: Weights = {}
    for names in _by_storage(tensors).values():
        flat = _as_output(file.read(tensors[names[0]].storage), tensors[names[0]].storage.kind)
        for name in names:
            array = _view(tensors[name], flat)
            # a counter stays an integer when a whole state dict was converted (`{k: v.half() for …}`)
            arrays[name] = array.astype("<i8") if name.endswith(COUNTER) and array.dtype != np.int64 else array
    return {name: arrays[name] for name in tensors}


def _view(tensor: LazyTensor, flat: np.ndarray) -> np.ndarray:
    """The tensor's values as a C-contiguous, writable numpy array (a copy only when it is a strided view)."""
    if not all(tensor.shape):
        return np.zeros(tensor.shape, flat.dtype)
    view = np.lib.stride_tricks.as_strided(flat[tensor.offset:], tensor.shape,
                                           tuple(s * flat.itemsize for s in tensor.stride), writeable=False)
    if view.flags.c_contiguous and view.size == flat.size:
        return flat.reshape(tensor.shape)
    return view.copy()  # C order by default
