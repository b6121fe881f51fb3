"""The two ways torch lays a checkpoint out on disk, opened for the reader: the pickle unpickled at once (at
most PICKLE_BYTES of it), each storage read later, only when asked for.

- zip (torch >= 1.6): `<name>/data.pkl` plus one entry `<name>/data/<key>` per storage;
- legacy (before 1.6, or `_use_new_zipfile_serialization=False`): four pickles (magic number, protocol,
  system info, the object) and the list of storage keys, then each storage as an int64 element count
  followed by its raw bytes.
"""

from __future__ import annotations

import io
import os
import pickle
import struct
import zipfile
from typing import BinaryIO

from .unpickle import Damaged, Storage, unpickle

PICKLE_BYTES = 8 << 20  # the most a checkpoint's pickle may take (largest measured: 110 KB, see reader.py)
READ_PIECE = 4 << 20  # bytes inflated from a zip entry at a time
LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # the first pickle of a legacy file (torch.serialization.MAGIC_NUMBER)
LEGACY_PROTOCOL = 1001


class ZipCheckpoint:
    """A zip-format checkpoint: the pickle is `<prefix>/data.pkl`, storage k is `<prefix>/data/k`."""

    def __init__(self, path: str) -> None:
        self.zip = zipfile.ZipFile(path)
        try:
            pickles = [n for n in self.zip.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pickles) != 1:
                raise Damaged("no data.pkl")
            self.prefix = pickles[0][: -len("data.pkl")]
            names = set(self.zip.namelist())
            if f"{self.prefix}byteorder" in names and self._small(f"{self.prefix}byteorder").strip() != b"little":
                raise Damaged("big-endian storages")
            self.storages: dict[str, Storage] = {}
            self.root = unpickle(io.BytesIO(self._small(pickles[0])), self.storages)
        except BaseException:
            self.zip.close()
            raise

    def _small(self, name: str) -> bytes:
        """An entry of at most PICKLE_BYTES (declared, and read no further whatever it inflates to)."""
        info = self.zip.getinfo(name)
        if info.file_size > PICKLE_BYTES:
            raise Damaged(f"{name} is {info.file_size:,} bytes")
        with self.zip.open(info) as entry:
            return entry.read(PICKLE_BYTES)

    def check(self, storage: Storage) -> None:
        """Before any data is read: the storage's entry exists and declares exactly its storage's size."""
        info = self.zip.getinfo(f"{self.prefix}data/{storage.key}")  # KeyError: a storage the file lacks
        if info.file_size != storage.nbytes:
            raise Damaged("storage of the wrong size")

    def read(self, storage: Storage) -> bytearray:
        """The storage's bytes, inflated a piece at a time into one buffer of its declared size, and no further."""
        buffer = bytearray(storage.nbytes)
        into, done = memoryview(buffer), 0
        with self.zip.open(f"{self.prefix}data/{storage.key}") as entry:
            while done < len(buffer):
                piece = entry.read(min(READ_PIECE, len(buffer) - done))
                if not piece:
                    raise Damaged("short storage")
                into[done:done + len(piece)] = piece
                done += len(piece)
            # ZipExtFile checks the CRC once the entry's declared size is read: here
        return buffer

    def close(self) -> None:
        self.zip.close()


class LegacyCheckpoint:
    """A legacy checkpoint: the pickles, then every storage (int64 count + bytes) in the order of the key list."""

    def __init__(self, path: str) -> None:
        self.file = open(path, "rb")  # kept open until close(): storages are read later
        self.storages: dict[str, Storage] = {}
        try:
            size = os.fstat(self.file.fileno()).st_size
            head = io.BytesIO(self.file.read(PICKLE_BYTES))  # the pickles, whatever they declare, come from here
            try:
                self._unpickle_head(head)
            except (EOFError, pickle.UnpicklingError):
                if size > PICKLE_BYTES:
                    raise Damaged(f"pickles over {PICKLE_BYTES:,} bytes") from None
                raise
            self.offsets = self._locate(head.tell(), size)
        except BaseException:
            self.file.close()
            raise

    def _unpickle_head(self, head: BinaryIO) -> None:
        header = [unpickle(head, {}) for _ in range(3)]
        if header[0] != LEGACY_MAGIC or header[1] != LEGACY_PROTOCOL:
            raise Damaged("not a torch file")
        info = header[2]
        if not isinstance(info, dict) or dict.get(info, "little_endian") is not True:
            raise Damaged("big-endian or unknown system")
        self.root = unpickle(head, self.storages)
        self.keys = unpickle(head, {})
        if not isinstance(self.keys, list) or set(self.keys) != set(self.storages) \
                or len(self.keys) != len(self.storages):
            raise Damaged("storage list does not match the pickle")

    def _locate(self, offset: int, size: int) -> dict[str, int]:
        """Where each storage's bytes start, found by reading only the 8-byte counts and seeking past the data."""
        offsets = {}
        for key in self.keys:
            self.file.seek(offset)
            count = self.file.read(8)
            if len(count) != 8 or struct.unpack("<q", count)[0] != self.storages[key].numel:
                raise Damaged("storage count does not match")
            offsets[key] = offset + 8
            offset += 8 + self.storages[key].nbytes
            if offset > size:
                raise Damaged("truncated")
        return offsets

    def check(self, storage: Storage) -> None:
        """Nothing left to check before reading: _locate found every storage whole inside the file."""

    def read(self, storage: Storage) -> bytearray:
        buffer = bytearray(storage.nbytes)
        self.file.seek(self.offsets[storage.key])
        if self.file.readinto(buffer) != len(buffer):
            raise Damaged("short storage")
        return buffer

    def close(self) -> None:
        self.file.close()


def open_checkpoint(path: str) -> ZipCheckpoint | LegacyCheckpoint:
    """The checkpoint at `path` in whichever format its first bytes say, its pickle already unpickled."""
    with open(path, "rb") as f:
        zipped = f.read(4) == b"PK\x03\x04"
    return ZipCheckpoint(path) if zipped else LegacyCheckpoint(path)
