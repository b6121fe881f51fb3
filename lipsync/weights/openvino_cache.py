"""OpenVINO models built once and kept on disk, compiled for the CPU in fp32 with an explicit thread count.

What any of the package's networks needs to run on OpenVINO (the generator does;
a face restorer can do the same):

    folder = ovmodels.entry_dir(f"{sha256_of_weights}", FORMAT)      # None: no cache
    core = openvino.Core()
    made = ovmodels.load_or_build(folder, "restorer.xml", build=lambda: graph_from(weights),
                                  prepare=lambda model: ovmodels.compile_cpu(core, model, threads), core=core)
    compiled, ran = made.value; made.state  # 'cached', 'built now', 'built again, the cached copy …'

- The cache entry is a folder `<key>-openvino<version>-f<format>` under the model cache
  (lipsync.storage.files.cache_root: $LIPSYNC_MODEL_CACHE, default ~/.cache/lipsync/models): keyed
  by what the weights are (a SHA256), the OpenVINO version that wrote it and the caller's
  FORMAT (bump it when the graph changes: old entries are then ignored). It is written
  atomically (a reader sees the whole entry or none), with fp32 weights, and built again
  when missing or unreadable.
- Its meta.json holds the SHA256 of its .xml and .bin, checked before the entry is used:
  a file that does not match (a same-size corrupted .bin reads and compiles without an
  error) is built again, with a log line and `Made.state` saying so. An entry without
  hashes (written before they were kept) is built again once. Hashing costs about 0.2 s
  for the generator's 145 MB .bin and 0.6 s for GFPGAN's 350 MB on a 2-core EPYC, at
  every start: so the hash is remembered per file with its size, mtime, inode and ctime
  (lipsync.storage.files.file_sha256), and a file written since, in place or replaced (a new ctime
  either way), is hashed again.
- `compile_cpu` enforces fp32 (INFERENCE_PRECISION_HINT=f32, EXECUTION_MODE_HINT=ACCURACY:
  OpenVINO's default on CPUs with AMX or AVX512-BF16 is bf16) and checks it on the compiled
  model; bf16 only when asked, and reported as fp32 where the CPU has no bf16 arithmetic.
  The thread count is always given by the caller, never guessed from another library.
"""

from __future__ import annotations

import functools
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..storage import atomic
from ..storage.files import cache_root, file_sha256, sha256_file

log = logging.getLogger(__name__)
T = TypeVar("T")


def version() -> str:
    """The OpenVINO version as its cache entries name it (e.g. 2026.4.1-22982-e213a147257-releases_2026_4)."""
    import openvino as ov

    return ov.__version__.replace("/", "_")


def entry_dir(key: str, fmt: int, root: Path | None = None) -> Path:
    """The cache folder of the model whose weights are `key`, written by this OpenVINO in layout `fmt`."""
    return (root or cache_root()) / f"{key}-openvino{version()}-f{fmt}"


def model_files(ir_name: str) -> tuple[str, str]:
    """The files of a saved model: the IR's graph (.xml) and its weights (.bin)."""
    return ir_name, str(Path(ir_name).with_suffix(".bin"))


def save(model: Any, target: Path, ir_name: str, meta: dict[str, Any]) -> None:
    """Save the IR (fp32 weights) and a meta.json with the SHA256 of each of its files into `target` atomically:
    a reader sees the whole entry or none."""
    import openvino as ov

    with atomic.replacing_folder(target, done_marker=ir_name) as tmp:
        ov.save_model(model, str(tmp / ir_name), compress_to_fp16=False)
        hashes = {name: sha256_file(tmp / name) for name in model_files(ir_name)}
        (tmp / "meta.json").write_text(json.dumps({"openvino": ov.__version__, **meta, "sha256": hashes}))


def mismatch(folder: Path, ir_name: str) -> str:
    """Why the entry's files are not those it saved ('' when they are): each file's SHA256 against its meta.json
    (remembered per file identity, lipsync.storage.files.file_sha256, in the entry's cache root)."""
    try:
        hashes = json.loads((folder / "meta.json").read_text()).get("sha256")
    except (OSError, ValueError, AttributeError):
        return "had no readable meta.json"
    if not isinstance(hashes, dict) or set(hashes) != set(model_files(ir_name)):
        return "had no hash of its files (an older version's)"
    try:
        wrong = [name for name in model_files(ir_name) if file_sha256(folder / name, folder.parent) != hashes[name]]
    except OSError:
        return "had a file missing"
    return f"did not match its hash ({', '.join(wrong)})" if wrong else ""


@dataclass
class Made(Generic[T]):
    """What load_or_build gives: the prepared model (e.g. compiled), the model itself, and where it came from."""

    value: T
    model: Any
    state: str  # 'cached', 'built now', 'built again, the cached copy was damaged' (or 'did not match its hash', …)


def load_or_build(folder: Path | None, ir_name: str, build: Callable[[], Any], prepare: Callable[[Any], T],
                  check: Callable[[T], None] | None = None, meta: dict[str, Any] | None = None,
                  timings: dict[str, float] | None = None, core: Any = None) -> Made[T]:
    """The model from the cache entry `folder` (prepared), or built now, cached, read back and prepared.

    `prepare` turns a model into what the caller runs (compiles it); a cached entry whose
    files do not match the hashes in its meta.json, or that fails to read or prepare, is
    built again (logged, and said in `Made.state`). `check` runs on a freshly built model only
    (e.g. against a reference implementation) and may raise: the entry is then removed.
    With `folder` None nothing is cached. Raises whatever `build` or `prepare` raise.
    `timings` receives the seconds of each step (verify_s, read_compile_s, or build_s, save_s, compile_s, check_s).
    """
    import openvino as ov

    timings = timings if timings is not None else {}
    core = core or ov.Core()
    state = "built now"
    if folder is not None and (folder / ir_name).is_file():
        cached, state = _from_cache(folder, ir_name, prepare, core, timings)
        if cached is not None:
            return cached
    t = time.perf_counter()
    model = build()
    timings["build_s"] = time.perf_counter() - t
    if folder is not None:
        t = time.perf_counter()
        try:
            save(model, folder, ir_name, meta or {})
            if mismatch(folder, ir_name):  # hashed once more here, so the next start finds it remembered
                raise OSError("the saved files do not match their hashes")
            model = core.read_model(str(folder / ir_name))  # run what is cached, as later starts will
        except OSError as err:
            log.info("Could not cache the OpenVINO model in %s (%s)", folder, err)
        timings["save_s"] = time.perf_counter() - t
    t = time.perf_counter()
    value = prepare(model)
    timings["compile_s"] = time.perf_counter() - t
    if check is not None:
        t = time.perf_counter()
        try:
            check(value)
        except BaseException:
            if folder is not None:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        timings["check_s"] = time.perf_counter() - t
    return Made(value, model, state)


def _from_cache(folder: Path, ir_name: str, prepare: Callable[[Any], T], core: Any,
                timings: dict[str, float]) -> tuple[Made[T] | None, str]:
    """The cached entry verified, read and prepared, and 'cached'; else None and the state saying why it is
    built again (logged: a mismatch is worth a warning, it means the disk or someone changed the files)."""
    t = time.perf_counter()
    problem = mismatch(folder, ir_name)
    timings["verify_s"] = time.perf_counter() - t
    if problem:
        log.warning("Cached OpenVINO model at %s %s; building it again", folder, problem)
        return None, f"built again, the cached copy {problem}"
    try:
        t = time.perf_counter()
        model = core.read_model(str(folder / ir_name))
        value = prepare(model)
        timings["read_compile_s"] = time.perf_counter() - t
        return Made(value, model, "cached"), "cached"
    except Exception as err:  # a damaged entry: build again
        log.info("Cached OpenVINO model at %s unreadable (%s); building it again", folder, err)
        return None, "built again, the cached copy was damaged"


@functools.lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as OpenVINO reports it: there bf16 runs about
    twice as fast as fp32, elsewhere OpenVINO would emulate it (no faster). False when OpenVINO is missing."""
    try:
        import openvino as ov

        return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    except Exception:  # no OpenVINO, or no CPU plugin: then there is no bf16 to choose
        return False


def cpu_config(threads: int, streams: int = 1, precision: str = "fp32") -> dict[str, Any]:
    """OpenVINO CPU properties: fp32 enforced (bf16 when asked), `streams` streams sharing `threads` threads."""
    hint, mode = ("bf16", "PERFORMANCE") if precision == "bf16" else ("f32", "ACCURACY")
    return {"INFERENCE_PRECISION_HINT": hint, "EXECUTION_MODE_HINT": mode, "NUM_STREAMS": streams,
            "INFERENCE_NUM_THREADS": threads}


def compile_cpu(core: Any, model: Any, threads: int, streams: int = 1, precision: str = "fp32") -> tuple[Any, str]:
    """`model` compiled for the CPU; returns it and what it computes in ('fp32' or 'bf16').

    Raises if fp32 was asked and OpenVINO chose otherwise; bf16 asked on a CPU without
    bf16 arithmetic compiles in fp32 and says so."""
    compiled = core.compile_model(model, "CPU", cpu_config(threads, streams, precision))
    chosen = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    is_f32 = "f32" in chosen or "float32" in chosen
    if precision == "fp32" and not is_f32:
        raise RuntimeError(f"OpenVINO compiled the model in {chosen}, not fp32")
    if precision == "bf16" and not is_f32 and "bf16" not in chosen and "bfloat16" not in chosen:
        raise RuntimeError(f"OpenVINO compiled the model in {chosen}, not bf16 or fp32")
    return compiled, "fp32" if is_f32 else "bf16"
