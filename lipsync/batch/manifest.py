"""Batch manifests: a CSV or JSON-lines file of jobs, each row read into a checked `Job`.

One job per row: `face`, `audio`, `output`, and any setting of `lipsync.options.Options`
by its CLI name (pads, blend, resize_factor, …). Relative paths are resolved against the
manifest's folder; defaults (the batch command's setting flags) apply where a row is
silent. Everything a row can get wrong is found here, before any job starts, as a
`ManifestError` (exit status 2): a manifest that cannot be parsed, an unknown column,
a bad value (each row's `Options` is built now). What the jobs' outputs may overwrite
is checked next, in lipsync.batch.outputs.
"""

from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..environment import parse_bool
from ..errors import LipSyncError
from ..options import EngineOptions, Options, declared

FILE_COLUMNS = ("face", "audio", "output")
ALIASES = {"outfile": "output"}  # the one-clip CLI's name for the output
JSON_SUFFIXES = (".jsonl", ".ndjson", ".json")


class ManifestError(LipSyncError):
    """The manifest or the jobs it describes cannot be run; found before any job starts (the command's exit status
    2, lipsync.cli.flags).

    `problems`: one sentence per row at fault (the message is them, one per line)."""

    def __init__(self, *problems: str) -> None:
        super().__init__("\n".join(problems))
        self.problems = list(problems)


@dataclass(frozen=True)
class Job:
    """One clip to dub: absolute paths and checked options. `row` is its 1-based place in the manifest."""

    row: int
    face: str
    audio: str
    output: str
    options: Options = field(default_factory=Options)


def setting_types() -> dict[str, Any]:
    """Each per-row setting's default (its type follows from it), from the one declaration in lipsync.options."""
    return {name: default for name, default, _ in declared(Options)}


def convert_value(name: str, value: Any, default: Any) -> Any:
    """A manifest cell as the type of its setting: CSV gives text ('0 10 0 0'), JSON gives numbers and lists.

    Numbers are left to `Options` itself, which checks and coerces them; only the two
    spellings it cannot read (a boolean as text, a rectangle as one string) are turned here.
    """
    if isinstance(default, bool):
        try:
            return parse_bool(value)
        except ValueError:
            raise LipSyncError(f"The setting {name} must be true or false, not {value!r}.") from None
    if isinstance(default, tuple) and isinstance(value, str):
        parts = value.replace(",", " ").split()
        if len(parts) != len(default):
            raise LipSyncError(f"The setting {name} takes {len(default)} numbers, not {value!r}.")
        return tuple(parts)
    if isinstance(default, tuple) and not isinstance(value, (list, tuple)):
        raise LipSyncError(f"The setting {name} takes {len(default)} numbers, not {value!r}.")
    return value


def _canonical(column: Any) -> str:
    """A column name as a setting name: '--pads' and ' Pads ' both mean pads; outfile means output."""
    name = str(column).strip().lstrip("-").lower().replace("-", "_")
    return ALIASES.get(name, name)


def check_columns(columns: Iterable[Any], where: str) -> None:
    """Refuse a column that is neither a file column nor a declared setting, naming the ones that exist."""
    known = setting_types()
    engine = {name for name, _, _ in declared(EngineOptions)}
    for column in columns:
        name = _canonical(column)
        if name in FILE_COLUMNS or name in known:
            continue
        if name in engine:
            raise ManifestError(f"{where}: '{column}' is chosen for the whole batch (one model per worker), not per "
                                f"row; give it as --{name} to the batch command.")
        raise ManifestError(f"{where}: unknown column '{column}'. Known: {', '.join(FILE_COLUMNS)}, "
                            f"{', '.join(known)}.")


def job_from_row(row: Mapping[str, Any], number: int, base: str | os.PathLike,
                 defaults: Mapping[str, Any] | None = None, where: str = "Job") -> Job:
    """One manifest row as a checked Job: paths made absolute against `base`, Options built (so checked) now."""
    where = f"{where} {number}"
    check_columns(row.keys(), where)
    types = setting_types()
    values: dict[str, Any] = dict(defaults or {})
    files: dict[str, str] = {}
    for column, value in row.items():
        name = _canonical(column)
        if value is None or (isinstance(value, str) and value.strip() == ""):
            continue  # an empty cell keeps the default (CSV rows all have every column)
        if name in FILE_COLUMNS:
            if not isinstance(value, str):
                raise ManifestError(f"{where}: '{column}' must be a file path, not {value!r}.")
            files[name] = os.path.abspath(os.path.join(base, os.path.expanduser(value.strip())))
        else:
            try:
                values[name] = convert_value(name, value, types[name])
            except LipSyncError as err:
                raise ManifestError(f"{where}: {err}") from None
    missing = [c for c in FILE_COLUMNS if c not in files]
    if missing:
        raise ManifestError(f"{where} has no {' and no '.join(missing)}; every job needs face, audio and output.")
    try:
        options = Options(**values)
    except LipSyncError as err:
        raise ManifestError(f"{where}: {err}") from None
    return Job(number, files["face"], files["audio"], files["output"], options)


def read_rows(path: str) -> tuple[list[tuple[int, dict[str, Any]]], str]:
    """(line number, row) for each job in a CSV or JSON-lines manifest, and what a row is called in errors.

    The format follows the name (.jsonl, .ndjson, .json: JSON lines; anything else: CSV),
    so a malformed file is an error about the format the user meant, not a guess.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            text = f.read()
    except FileNotFoundError:
        raise ManifestError(f"The manifest '{path}' does not exist. Check the path.") from None
    except IsADirectoryError:
        raise ManifestError(f"'{path}' is a folder; give the manifest file (CSV or JSON lines).") from None
    except UnicodeDecodeError:
        raise ManifestError(f"The manifest '{path}' is not UTF-8 text; save it as a UTF-8 CSV or JSON-lines file.") \
            from None
    except OSError as err:
        raise ManifestError(f"Cannot read the manifest '{path}' ({err.strerror}).") from None
    if path.lower().endswith(JSON_SUFFIXES):
        return _read_jsonl(text, path), "Line"
    return _read_csv(text, path), "Row"


def _read_jsonl(text: str, path: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise ManifestError(f"Line {number} of the manifest '{path}' is not valid JSON ({err.msg}); each line "
                                "must be one object like {\"face\": ..., \"audio\": ..., \"output\": ...}.") from None
        except RecursionError:  # lists in lists thousands deep: no row looks like that
            raise ManifestError(f"Line {number} of the manifest '{path}' is nested too deeply to be a job; each line "
                                "must be one flat object like {\"face\": ..., \"audio\": ..., \"output\": ...}.") \
                from None
        if not isinstance(row, dict):
            raise ManifestError(f"Line {number} of the manifest '{path}' is not a JSON object; each line must be one "
                                "object like {\"face\": ..., \"audio\": ..., \"output\": ...}.")
        rows.append((number, row))
    return rows


def _read_csv(text: str, path: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.reader(io.StringIO(text), strict=True)
    try:
        lines = [(reader.line_num, cells) for cells in reader]
    except csv.Error as err:
        raise ManifestError(f"The manifest '{path}' is not valid CSV (line {reader.line_num}: {err}).") from None
    lines = [(n, cells) for n, cells in lines if any(c.strip() for c in cells) and not cells[0].startswith("#")]
    if not lines:
        raise ManifestError(f"The manifest '{path}' is empty; its first line must name the columns, e.g. "
                            "face,audio,output.")
    _, header = lines[0]
    header = [h.strip() for h in header]
    if len(set(map(_canonical, header))) != len(header):
        raise ManifestError(f"The manifest '{path}' names a column twice in its first line.")
    rows = []
    for number, cells in lines[1:]:
        if len(cells) != len(header):
            raise ManifestError(f"Row {number} of the manifest '{path}' has {len(cells)} cells but the header has "
                                f"{len(header)}; quote a value that contains a comma.")
        rows.append((number, dict(zip(header, cells))))
    return rows


def load_manifest(path: str | os.PathLike, defaults: Mapping[str, Any] | None = None) -> list[Job]:
    """Every job of a manifest, checked; relative paths are resolved against the manifest's folder."""
    path = os.path.abspath(path)
    rows, word = read_rows(path)
    if not rows:
        raise ManifestError(f"The manifest '{path}' lists no jobs.")
    base = os.path.dirname(path)
    return [job_from_row(row, number, base, defaults, where=word) for number, row in rows]


def as_jobs(jobs: Iterable[Job | Mapping[str, Any]], base: str | os.PathLike | None = None,
            defaults: Mapping[str, Any] | None = None) -> list[Job]:
    """Jobs from Job objects or manifest-style dicts (relative paths against `base`, default the current folder)."""
    base = os.path.abspath(base or os.getcwd())
    out = []
    for number, job in enumerate(jobs, 1):
        out.append(job if isinstance(job, Job) else job_from_row(job, number, base, defaults))
    return out
