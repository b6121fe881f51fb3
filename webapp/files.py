"""The web app's files on disk, and only those: where they go, when they are deleted, how big a download may be.

Everything the app writes goes into one folder of its own, `lipsync-app/` under LIPSYNC_OUTPUT_DIR (default: the
temp folder), so the variable may point at any folder, a home folder included:
- a folder per job, named by a random id and marked by a `.lipsync-job` file inside it;
- Gradio's own temp files (uploads, URL downloads, copies of results, MCP inputs) in `gradio/`, marked by a
  `.lipsync-gradio` file, unless GRADIO_TEMP_DIR names another folder (which is then not ours to sweep).

`sweep` deletes what is older than the retention among those, and nothing else: a folder without our mark, a
folder that only looks like ours, a symbolic link, a file next to our folder all stay, however old. It runs at
start-up (so what a previous run left is swept too) and then every few minutes.

Inputs given by URL (the API, the MCP tool) are downloaded by Gradio whole, whatever their size; the page's file
inputs go through `cap_url_downloads`, which downloads them itself, safely (public addresses only, as Gradio does),
and stops at the upload limit.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable

from lipsync import LipSyncError, prune_detection_cache, replacing

from .config import GRADIO_TEMP

log = logging.getLogger("lipsync.app")
CLEAN_EVERY_S = 600  # how often the app's old files are swept
APP_FOLDER = "lipsync-app"
GRADIO_FOLDER = "gradio"
JOB_MARK = ".lipsync-job"
GRADIO_MARK = ".lipsync-gradio"
JOB_NAME = re.compile(r"[0-9a-f]{32}")  # uuid4().hex
MAX_REDIRECTS = 10
UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}  # as Gradio reads max_file_size


def app_dir(output_root: Path) -> Path:
    """The app's own folder under the output root: the only place the app writes results and cleans."""
    return Path(output_root) / APP_FOLDER


def claim_gradio_temp(output_root: Path) -> Path | None:
    """Point Gradio's temp files at the app's folder (GRADIO_TEMP_DIR), and return it, or None when it is not ours.

    Must run before gradio is imported (it reads the variable then). Not ours, so never swept: a GRADIO_TEMP_DIR
    set by the user, or a `gradio/` folder that is already there without our mark.
    """
    if GRADIO_TEMP.is_set():
        return None
    folder = app_dir(output_root) / GRADIO_FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        mark = folder / GRADIO_MARK
        if not mark.is_file():
            if any(folder.iterdir()):
                return None
            mark.write_text("Made by the lipsync app: files here are deleted after LIPSYNC_KEEP_MINUTES.\n")
    except OSError:
        return None  # Gradio's default folder then; it reports its own errors
    os.environ["GRADIO_TEMP_DIR"] = str(folder)
    return folder


def new_job_dir(output_root: Path) -> Path:
    """A fresh folder for one job's files, marked as the app's (`sweep` deletes only marked folders)."""
    folder = app_dir(output_root) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    (folder / JOB_MARK).touch()
    return folder


def is_job_dir(path: Path) -> bool:
    """A folder the app made for a job: its name, a real folder (not a link) and our mark inside."""
    return bool(JOB_NAME.fullmatch(path.name)) and path.is_dir() and not path.is_symlink() \
        and (path / JOB_MARK).is_file()


def sweep(output_root: Path, max_age_s: float, active: Iterable[Path] = (), gradio_dir: Path | None = None,
          kept: Iterable[str] = (), now: float | None = None) -> int:
    """Delete the app's files older than `max_age_s`; returns how many job folders and files went.

    `active`: job folders in use (never touched, whatever their age); `gradio_dir`: Gradio's temp folder when
    it is ours (`claim_gradio_temp`); `kept`: files there that Gradio keeps for as long as it runs (examples).
    """
    now = time.time() if now is None else now
    active = {Path(p) for p in active}
    removed = 0
    folder = app_dir(output_root)
    for entry in _listing(folder):
        try:
            if entry not in active and is_job_dir(entry) and now - entry.stat().st_mtime > max_age_s:
                shutil.rmtree(entry, ignore_errors=True)
                removed += 1
        except OSError:
            pass
    if gradio_dir is not None and (Path(gradio_dir) / GRADIO_MARK).is_file():
        removed += _sweep_gradio(Path(gradio_dir), max_age_s, set(map(str, kept)), now)
    return removed


class JobFolders:
    """The app's folders for jobs and live sessions, and its cleaner: a folder in use is never swept.

    Made in main() (webapp.server), one per server: the registry and the thread live here, not on module globals.
    """

    def __init__(self, output_root: Path, keep_minutes: float, gradio_dir: Path | None = None) -> None:
        self.output_root = Path(output_root)
        self.keep_seconds = keep_minutes * 60
        self.gradio_dir = gradio_dir  # Gradio's temp folder when it is ours to sweep (claim_gradio_temp)
        self._active: set[Path] = set()
        self._lock = threading.Lock()

    def new(self) -> Path:
        """A fresh job folder, claimed: the cleaner spares it until `release`."""
        with self._lock:
            folder = new_job_dir(self.output_root)
            self._active.add(folder)
        return folder

    def release(self, folder: Path) -> None:
        with self._lock:
            self._active.discard(folder)

    def discard(self, folder: Path) -> None:
        """Release and delete a folder whose work was given up (a failed or cancelled job, an ended session)."""
        self.release(folder)
        shutil.rmtree(folder, ignore_errors=True)

    def clean(self, kept: Iterable[str] | None = None) -> int:
        """Delete the app's own files older than the retention (finished jobs' folders; with `kept`, the files
        Gradio keeps for as long as it runs, Gradio's temp files) and old cached face boxes. Nothing the app did
        not make is touched."""
        prune_detection_cache(self.keep_seconds)  # visitors' face boxes go with their results
        with self._lock:
            active = set(self._active)
        return sweep(self.output_root, self.keep_seconds, active, self.gradio_dir if kept is not None else None,
                     kept or ())

    def start_cleaner(self, kept: Callable[[], set[str]], interval_s: float = CLEAN_EVERY_S,
                      stop: threading.Event | None = None) -> threading.Thread:
        """Clean now (what a previous run left) and every `interval_s` seconds until `stop`, so an idle server
        keeps nothing long. `kept()` names Gradio's files to spare (the examples)."""
        stop = stop or threading.Event()

        def loop() -> None:
            while True:
                try:
                    self.clean(kept())
                except OSError:
                    log.exception("cleaning old results failed")
                if stop.wait(interval_s):
                    return

        thread = threading.Thread(target=loop, name="lipsync-cleaner", daemon=True)
        thread.start()
        return thread


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def _sweep_gradio(folder: Path, max_age_s: float, kept: set[str], now: float) -> int:
    """Gradio's files by their change time (when Gradio copied them in, as its own cleaner reads it), then the
    folders they leave empty; links are removed as links, never followed."""
    removed = 0
    for parent, dirs, files in os.walk(folder, topdown=False):
        for name in files:
            path = os.path.join(parent, name)
            if name == GRADIO_MARK and parent == str(folder) or path in kept:
                continue
            try:
                if now - os.lstat(path).st_ctime > max_age_s:
                    os.unlink(path)
                    removed += 1
            except OSError:
                pass
        for name in dirs:
            path = os.path.join(parent, name)
            try:
                if os.path.islink(path):
                    if now - os.lstat(path).st_ctime > max_age_s:
                        os.unlink(path)
                elif now - os.stat(path).st_mtime > max_age_s:
                    os.rmdir(path)  # only when empty
            except OSError:
                pass
    return removed


def parse_size(text: str | int) -> int:
    """'500mb' as bytes, read as Gradio reads `max_file_size` (1 kb = 1024 bytes)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", str(text))
    unit = (match.group(2) or "B").upper() if match else ""
    if not match or unit not in UNITS:
        raise LipSyncError(f"LIPSYNC_MAX_UPLOAD={text!r} is not a size; give e.g. 500mb or 2gb.")
    return int(match.group(1)) * UNITS[unit]


def describe_size(size: int) -> str:
    for unit in ("GB", "MB", "KB"):
        if size >= UNITS[unit]:
            return f"{size / UNITS[unit]:g} {unit}"
    return f"{size} bytes"


class TooLarge(ValueError):
    """A download past the upload limit; the message is the sentence a visitor reads."""


async def capped_download(url: str, cache_dir: str | Path, limit: int, transport: Any = None) -> str:
    """Download `url` into Gradio's cache as Gradio would (same folder and name, same address checks), but stop
    at `limit` bytes: a Content-Length over it is refused before the body, a body that grows past it as it comes.

    `transport`: an httpx transport for tests; otherwise each hop (redirects included) goes only to a public
    address or a Hugging Face host (Gradio's own list), checked as Gradio checks it.
    """
    import httpx
    import safehttpx
    from gradio import processing_utils
    from gradio_client import utils as client_utils

    name = client_utils.strip_invalid_filename_characters(Path(httpx.URL(url).path.rstrip("/")).name) or "file"
    folder = Path(cache_dir) / processing_utils.hash_url(url)
    target = folder / name
    if target.exists():
        return str(target)
    with replacing(target) as partial:
        for _ in range(MAX_REDIRECTS + 1):
            async with httpx.AsyncClient(transport=transport or await _safe_transport(url, safehttpx)) as client:
                async with client.stream("GET", url, follow_redirects=False) as response:
                    if response.has_redirect_location:
                        url = str(response.url.join(response.headers["Location"]))
                        continue
                    if response.status_code != 200:
                        raise ValueError(f"Could not download '{name}' (the server answered {response.status_code}).")
                    _check_size(response.headers.get("content-length"), name, limit)
                    received = 0
                    with open(partial, "wb") as out:
                        async for chunk in response.aiter_bytes():
                            received += len(chunk)
                            _check_size(received, name, limit)
                            out.write(chunk)
                    return str(target)
        raise ValueError(f"Could not download '{name}': more than {MAX_REDIRECTS} redirects.")


async def _safe_transport(url: str, safehttpx: Any) -> Any:
    import httpx
    from gradio import processing_utils

    host = httpx.URL(url).host
    if not host:
        raise ValueError(f"'{url}' is not a web address.")
    if safehttpx.matches_domain_whitelist(host, processing_utils.PUBLIC_HOSTNAME_WHITELIST):
        return None
    return safehttpx.AsyncSecureTransport(await safehttpx.async_validate_url(host))


def _check_size(size: Any, name: str, limit: int) -> None:
    try:
        size = int(size)
    except (TypeError, ValueError):
        return
    if size > limit:
        raise TooLarge(f"'{name}' is larger than the upload limit of {describe_size(limit)} "
                       "(LIPSYNC_MAX_UPLOAD); give a smaller file.")


def cap_url_downloads(component: Any, limit: int) -> Any:
    """Make a Gradio file input (gr.File, gr.Audio, …) download a file given by URL with `capped_download`, within
    `limit` bytes; files given any other way take Gradio's own path. Returns the component.

    An override on the instance, not a subclass: Gradio writes a stub file next to the module of every component
    class it sees defined, and draws a subclass as a component of that name.
    """
    gradios_own = component.async_move_resource_to_block_cache

    async def move(url_or_file_path: Any) -> str | None:
        from gradio import Error
        from gradio_client import utils as client_utils

        if isinstance(url_or_file_path, str) and client_utils.is_http_url_like(url_or_file_path):
            try:
                path = await capped_download(url_or_file_path, component.GRADIO_CACHE, limit)
            except TooLarge as err:
                raise Error(str(err)) from None
            component.temp_files.add(path)
            return path
        return await gradios_own(url_or_file_path)

    component.async_move_resource_to_block_cache = move
    return component
