"""The one write-then-replace helper (lipsync.storage.atomic): whole or nothing, and no partial left behind."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from lipsync.storage import atomic

ROOT = Path(__file__).resolve().parents[1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_write_text_replaces_whole_and_leaves_no_partial(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "report.csv"
    atomic.write_text(target, "old\n")
    atomic.write_text(target, "a,b\r\n1,2\r\n")
    assert target.read_bytes() == b"a,b\r\n1,2\r\n"  # newlines as given (CSV writes its own)
    assert oct(target.stat().st_mode & 0o777) == oct(0o644)
    assert _leftovers(target.parent) == []


def test_replacing_keeps_the_old_file_when_the_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "result.mp4"
    target.write_bytes(b"earlier result")
    with pytest.raises(RuntimeError):
        with atomic.replacing(target, suffix=".partial.mp4") as partial:
            assert partial.parent == tmp_path and partial.name.startswith(".result.")
            partial.write_bytes(b"half")
            raise RuntimeError("encoder died")
    assert target.read_bytes() == b"earlier result"
    assert _leftovers(tmp_path) == []


def test_partial_file_discard_after_commit_is_harmless(tmp_path: Path) -> None:
    partial = atomic.PartialFile(tmp_path / "out.mp4", suffix=".partial.mp4")
    partial.path.write_bytes(b"frames")
    assert partial.commit() == tmp_path / "out.mp4"
    partial.discard()
    assert (tmp_path / "out.mp4").read_bytes() == b"frames" and _leftovers(tmp_path) == []


def test_replacing_folder_swaps_a_damaged_entry_and_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "model-entry"
    target.mkdir()
    (target / "junk").write_text("damaged")
    with atomic.replacing_folder(target, done_marker="model.xml") as tmp:
        (tmp / "model.xml").write_text("<net/>")
    assert sorted(p.name for p in target.iterdir()) == ["model.xml"]
    with pytest.raises(ValueError):
        with atomic.replacing_folder(tmp_path / "other", done_marker="model.xml") as tmp:
            (tmp / "model.xml").write_text("<half")
            raise ValueError("conversion failed")
    assert not (tmp_path / "other").exists() and _leftovers(tmp_path) == []


def test_no_module_moves_files_into_place_by_itself() -> None:
    """Every write-then-replace goes through lipsync.storage.atomic, so there is one place to get it right. The one
    exception moves a download that the Hugging Face client already wrote whole."""
    allowed = {("lipsync/weights/locate.py", "os.replace(fetched, target)")}
    found = set()
    for path in [*ROOT.glob("lipsync/**/*.py"), *ROOT.glob("app*.py")]:
        rel = path.relative_to(ROOT).as_posix()
        if rel == "lipsync/storage/atomic.py":
            continue
        for line in path.read_text().splitlines():
            if re.search(r"\bos\.(replace|rename)\(|\.rename\(", line):
                found.add((rel, line.strip()))
    assert found <= allowed, f"move files into place with lipsync.storage.atomic instead: {sorted(found - allowed)}"
