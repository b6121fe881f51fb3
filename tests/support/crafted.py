"""Checkpoints crafted to attack a reader: small files that ask for much memory, as issue 28 replayed them.

Each is written the way torch writes its files (the same globals, persistent ids and zip
entries), only with sizes or strides that torch.save would never produce for a model's
weights, or with entries deflated so that a megabyte on disk inflates to a gigabyte.
"""

from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch

GIB = 1 << 30


class FakeStorage:
    """A storage named in a pickle by its persistent id, as torch names one: (type, key, numel)."""

    def __init__(self, kind: type, key: str, numel: int) -> None:
        self.kind, self.key, self.numel = kind, key, numel


class FakeTensor:
    """Pickles as torch pickles a tensor: torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, …)."""

    def __init__(self, storage: FakeStorage, shape: tuple[int, ...], stride: tuple[int, ...], offset: int = 0) -> None:
        self.storage, self.shape, self.stride, self.offset = storage, shape, stride, offset

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (self.storage, self.offset, self.shape, self.stride, False, OrderedDict()))


class _Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, FakeStorage):
            return ("storage", obj.kind, obj.key, "cpu", obj.numel)
        return None


def pickled(root: object) -> bytes:
    """`root` pickled (protocol 2) as torch's zip writer pickles a checkpoint's data.pkl."""
    out = io.BytesIO()
    _Pickler(out, protocol=2).dump(root)
    return out.getvalue()


@dataclass(frozen=True)
class Deflated:
    """A zip entry of `total` zero bytes, deflated (about 1 MB per GiB), whose central directory declares
    `declared` bytes (default: `total`) with the CRC of that many zeros: a zip that may lie about its size."""

    total: int
    declared: int | None = None


def write_zip(path: Path, entries: dict[str, bytes | Deflated]) -> Path:
    """A zip-format checkpoint with these entries ('archive/data.pkl', 'archive/data/0', …)."""
    deflated = {name: entry for name, entry in entries.items() if isinstance(entry, Deflated)}
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        archive.writestr("archive/byteorder", "little")
        for name, entry in entries.items():
            archive.writestr(name, deflated_zeros(entry.total) if isinstance(entry, Deflated) else entry)
    data = bytearray(path.read_bytes())
    for name, entry in deflated.items():
        declared = entry.total if entry.declared is None else entry.declared
        _declare_deflated(data, name.encode(), declared, _zeros_crc(declared))
    path.write_bytes(bytes(data))
    return path


BLOCK = 16 << 20  # zero bytes per repeated deflate block


def deflated_zeros(total: int) -> bytes:
    """A raw deflate stream of `total` zero bytes (a multiple of BLOCK), made in a tenth of a second: one block
    compressed once and repeated (each ends in a full flush, so its copies follow one another), then the end."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(BLOCK)) + compressor.flush(zlib.Z_FULL_FLUSH)
    assert total % BLOCK == 0
    return block * (total // BLOCK) + compressor.flush(zlib.Z_FINISH)


def _zeros_crc(total: int) -> int:
    crc, zeros = 0, bytes(min(total, BLOCK))
    for start in range(0, total, BLOCK):
        crc = zlib.crc32(zeros[: min(BLOCK, total - start)], crc)
    return crc


def _declare_deflated(data: bytearray, name: bytes, size: int, crc: int) -> None:
    """Rewrite a stored entry's two headers (central and local) to say: deflated, `size` bytes, this CRC."""
    central = _central_entry(data, name)
    local = int.from_bytes(data[central + 42:central + 46], "little")
    for at, method, crc_at, size_at in ((central, 10, 16, 24), (local, 8, 14, 22)):
        data[at + method:at + method + 2] = zipfile.ZIP_DEFLATED.to_bytes(2, "little")
        data[at + crc_at:at + crc_at + 4] = crc.to_bytes(4, "little")
        data[at + size_at:at + size_at + 4] = size.to_bytes(4, "little")


def _central_entry(data: bytearray, name: bytes) -> int:
    """Where the central directory's record of entry `name` starts."""
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = int.from_bytes(data[at + 28:at + 30], "little")
        if data[at + 46:at + 46 + length] == name:
            return at
        at = data.find(b"PK\x01\x02", at + 4)
    raise ValueError(f"no entry {name!r}")


def stride_zero(path: Path, numel: int = 1 << 28, legacy: bool = True) -> Path:
    """One float repeated `numel` times: a stride-0 view, as torch.save writes `torch.zeros(1).expand(n)`
    (458 bytes in the legacy format)."""
    torch.save({"state_dict": {"w": torch.zeros(1).expand(numel)}}, path, _use_new_zipfile_serialization=not legacy)
    return path


def pickle_bomb(path: Path, inflated: int = GIB) -> Path:
    """A 1 MB zip whose data.pkl inflates to `inflated` bytes."""
    return write_zip(path, {"archive/data.pkl": Deflated(inflated)})


def storage_bomb(path: Path, inflated: int = GIB) -> Path:
    """A 1 MB zip whose one tensor's storage is `inflated` bytes of float32 zeros. Its declared sizes are all
    consistent: only the deflation makes it small."""
    numel = inflated // 4
    tensor = FakeTensor(FakeStorage(torch.FloatStorage, "0", numel), (numel,), (1,))
    return write_zip(path, {"archive/data.pkl": pickled({"state_dict": {"w": tensor}}),
                            "archive/data/0": Deflated(inflated)})


def lying_storage(path: Path, numel: int = 16, inflated: int = GIB) -> Path:
    """A 1 MB zip whose storage entry declares `numel` float32 zeros (its size and CRC say so) while its deflate
    stream inflates to `inflated` bytes: a reader that trusts the stream runs on."""
    tensor = FakeTensor(FakeStorage(torch.FloatStorage, "0", numel), (numel,), (1,))
    return write_zip(path, {"archive/data.pkl": pickled({"state_dict": {"w": tensor}}),
                            "archive/data/0": Deflated(inflated, declared=numel * 4)})
