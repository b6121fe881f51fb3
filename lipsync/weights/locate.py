"""Finding checkpoints on disk, or downloading them from the Hugging Face Hub with a checksum.

Search order for the Wav2Lip checkpoint: an explicit path, the LIPSYNC_CHECKPOINT
environment variable, the weights/ folder, then a download into weights/. The authors'
own links are dead; the files below are byte-identical mirrors on the Hub, pinned by
repository, file name, size and SHA256.

The optional extras whose authors' links still work (GFPGAN for --enhance, SyncNet for
the sync scores) are `ReleaseFile`s: $<ENV> names a file of your own (used as is), else
weights/<name> (SHA256 checked), else a download from that URL, hashed as it streams and
kept only if the SHA256 matches (`download_release`).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .. import environment
from ..errors import LipSyncError
from ..runtime.devices import torch_available
from ..storage import atomic
from ..storage.files import sha256_file

log = logging.getLogger(__name__)


PACKAGE_DIR = Path(__file__).resolve().parents[1]  # lipsync/ (this module is lipsync/weights/locate.py)


def default_weights_dir(package_dir: Path = PACKAGE_DIR) -> Path:
    """weights/ beside the package in a source checkout (where run.sh, the Space and the README put them);
    ~/.cache/lipsync/weights for an installed package, whose parent folder is site-packages: no place for
    436 MB of downloads, and often not writable."""
    checkout = package_dir.parent
    if (checkout / "pyproject.toml").is_file():
        return checkout / "weights"
    return Path.home() / ".cache" / "lipsync" / "weights"


WEIGHTS_DIR = Path(environment.WEIGHTS_DIR.read() or default_weights_dir())
CHECKPOINT_ENV = environment.CHECKPOINT.name


@dataclass(frozen=True)
class HubFile:
    """A file pinned on the Hugging Face Hub: where it lives and what its bytes must be."""

    filename: str
    repo_id: str
    repo_path: str
    sha256: str
    size: int

    @property
    def url(self) -> str:
        return f"https://huggingface.co/{self.repo_id}/resolve/main/{self.repo_path}"


CHECKPOINTS: dict[str, HubFile] = {
    "wav2lip_gan": HubFile("wav2lip_gan.pth", "Nekochu/Wav2Lip", "wav2lip_gan.pth",
                           "ca9ab7b7b812c0e80a6e70a5977c545a1e8a365a6c49d5e533023c034d7ac3d8", 435_801_865),
    "wav2lip": HubFile("wav2lip.pth", "Nekochu/Wav2Lip", "wav2lip.pth",
                       "b78b681b68ad9fe6c6fb1debc6ff43ad05834a8af8a62ffc4167b7b34ef63c37", 435_807_851),
}
DEFAULT_CHECKPOINT = "wav2lip_gan"

S3FD = HubFile("s3fd-619a316812.pth", "camenduru/Wav2Lip", "checkpoints/s3fd-619a316812.pth",
               "619a31681264d3f7f7fc7a16a42cbbe8b23f31a256f75a366e5a1bcd59b33543", 89_843_225)


def available_checkpoints() -> list[str]:
    """Names of the known checkpoints already in weights/ (what the app can offer without a download)."""
    return [name for name, hub in CHECKPOINTS.items() if (WEIGHTS_DIR / hub.filename).is_file()]


def resolve_checkpoint(spec: str | None = None, download: bool = True) -> str:
    """The path of the Wav2Lip checkpoint to load.

    `spec` is a file path or a known name ('wav2lip', 'wav2lip_gan'). A path given
    explicitly is used as is (a missing file is an error, never silently replaced);
    a name, or nothing, is looked up in the environment, then weights/, then downloaded.
    """
    if spec and spec not in CHECKPOINTS:
        return spec
    if not spec and environment.CHECKPOINT.is_set():
        return str(environment.CHECKPOINT.read())
    hub = CHECKPOINTS[spec or DEFAULT_CHECKPOINT]
    local = WEIGHTS_DIR / hub.filename
    if local.is_file():
        return str(local)
    if not download:
        raise LipSyncError(_manual_hint(hub, "is not in the weights/ folder"))
    return str(download_file(hub))


def find_s3fd(download: bool) -> str | None:
    """A local S3FD weights file (weights/ or torch's hub cache), or one downloaded now, or None.

    None without torch (the CPU install): S3FD runs on PyTorch, so its 90 MB are not fetched."""
    if not torch_available():
        return None
    import torch.hub

    candidates = [WEIGHTS_DIR / S3FD.filename, WEIGHTS_DIR / "s3fd.pth",
                  Path(torch.hub.get_dir()) / "checkpoints" / S3FD.filename]
    for path in candidates:
        if path.is_file() and path.stat().st_size > 0:
            return str(path)
    if not download:
        return None
    try:
        return str(download_file(S3FD))
    except LipSyncError:
        return None


def _manual_hint(hub: HubFile, problem: str) -> str:
    return (f"The checkpoint {hub.filename} {problem}. Download it by hand from {hub.url} "
            f"({hub.size:,} bytes) and put it in {WEIGHTS_DIR}/, or pass --checkpoint_path.")


def download_file(hub: HubFile) -> Path:
    """Fetch a pinned file into weights/ with a progress bar; keep it only if its SHA256 matches."""
    if environment.OFFLINE.read():
        raise LipSyncError(_manual_hint(hub, "is not in the weights/ folder and HF_HUB_OFFLINE is set"))
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover - huggingface_hub is in requirements.txt
        raise LipSyncError(_manual_hint(hub, "is missing and huggingface_hub is not installed")) from None
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    log.warning("Downloading %s (%.0f MB) from the Hugging Face Hub (%s) ...", hub.filename, hub.size / 1e6,
                hub.repo_id)
    try:
        fetched = Path(hf_hub_download(repo_id=hub.repo_id, filename=hub.repo_path, local_dir=WEIGHTS_DIR))
    except Exception as err:  # network, auth, missing repo: all mean the same thing to the user
        raise LipSyncError(_manual_hint(hub, f"could not be downloaded ({type(err).__name__})")) from None
    if fetched.stat().st_size != hub.size or sha256_file(fetched) != hub.sha256:
        fetched.unlink()
        raise LipSyncError(_manual_hint(hub, "was downloaded but its checksum does not match (damaged download)"))
    target = WEIGHTS_DIR / hub.filename
    if fetched != target:
        os.replace(fetched, target)
    return target


# GFPGAN v1.4, the face restorer behind --enhance gfpgan (lipsync.restore). The SHA256 is the one two independent
# download lists record for the release file; it could not be checked against a download here (no network).
GFPGAN_URL = "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth"
GFPGAN_FILE = "GFPGANv1.4.pth"
GFPGAN_SHA256 = "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad"
GFPGAN_ENV = environment.GFPGAN  # a GFPGAN file of your own, used as it is (no checksum)


def resolve_restorer(download: bool = True) -> str:
    """The GFPGAN v1.4 file: $LIPSYNC_GFPGAN (as is), else weights/GFPGANv1.4.pth (its SHA256 checked), else a
    download from the GFPGAN release into weights/ (kept only if its SHA256 matches)."""
    return _resolve_release(GFPGAN, download)


# SyncNet (joonson/syncnet_python), the lip-sync judge behind the Wav2Lip paper's LSE-D and LSE-C (lipsync.scoring).
# Its SHA256 is the one about ten public repositories pin; the weights' licence is unstated.
SYNCNET_URL = "http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model"
SYNCNET_FILE = "syncnet_v2.model"
SYNCNET_SHA256 = "961e8696f888fce4f3f3a6c3d5b3267cf5b343100b238e79b2659bff2c605442"
SYNCNET_SIZE = 54_573_114
SYNCNET_ENV = environment.SYNCNET  # a SyncNet file of your own, used as it is (no checksum)


@dataclass(frozen=True)
class ReleaseFile:
    """A file pinned at its authors' own URL (not the Hub): what its bytes must be, and how the user replaces it."""

    filename: str
    url: str
    sha256: str
    megabytes: int  # about how big it is, for the messages (the SHA256 is what is checked)
    env: environment.Variable  # the variable naming a file of your own, used as it is
    what: str  # "The face restorer's weights"
    otherwise: str = ""  # what else the user can do, e.g. ", or run with --enhance none"

    def hint(self, problem: str) -> str:
        return (f"{self.what} {self.filename} {problem}. Download the file from {self.url} (about {self.megabytes} "
                f"MB) and put it in the folder '{WEIGHTS_DIR}', or set ${self.env.name} to it{self.otherwise}.")


GFPGAN = ReleaseFile(GFPGAN_FILE, GFPGAN_URL, GFPGAN_SHA256, 332, GFPGAN_ENV, "The face restorer's weights",
                     ", or run with --enhance none")
SYNCNET = ReleaseFile(SYNCNET_FILE, SYNCNET_URL, SYNCNET_SHA256, round(SYNCNET_SIZE / 1e6), SYNCNET_ENV,
                      "The lip-sync scorer's weights")


def resolve_syncnet(spec: str | None = None, download: bool = True) -> str:
    """The syncnet_v2.model to load: `spec` (a path, used as is), else $LIPSYNC_SYNCNET (as is), else
    weights/syncnet_v2.model (its SHA256 checked), else a download from the authors' URL into weights/ (kept only
    if its SHA256 matches)."""
    if spec:
        if not os.path.isfile(spec):
            raise LipSyncError(f"The SyncNet weights '{spec}' do not exist. Give the path of syncnet_v2.model, or "
                               f"leave it out to use the one in '{WEIGHTS_DIR}'.")
        return spec
    return _resolve_release(SYNCNET, download)


def _downloads_off(download: bool) -> bool:
    return not download or environment.OFFLINE.read()


def _resolve_release(pinned: ReleaseFile, download: bool) -> str:
    own = pinned.env.read()
    if own:
        if not os.path.isfile(own):
            raise LipSyncError(f"${pinned.env.name} names '{own}', which is not a file. Fix or unset it.")
        return str(own)
    local = WEIGHTS_DIR / pinned.filename
    if local.is_file():
        from ..storage.files import cache_root, checkpoint_sha256

        if checkpoint_sha256(local, cache_root()) != pinned.sha256:
            raise LipSyncError(pinned.hint("in weights/ does not match its SHA256 (a damaged or partial download, "
                                           "or another file under its name): delete it and download it again"))
        return str(local)
    if _downloads_off(download):
        raise LipSyncError(pinned.hint("is not in the weights/ folder and downloads are off"))
    return str(download_release(pinned, local))


def download_release(pinned: ReleaseFile, target: Path) -> Path:
    """Fetch a pinned release file into `target`, hashing as it streams, with a progress line; nothing is kept
    under `target` unless its SHA256 matches."""
    import hashlib
    import urllib.request

    target.parent.mkdir(parents=True, exist_ok=True)
    log.warning("Downloading %s (about %d MB) from %s ...", pinned.filename, pinned.megabytes, pinned.url)
    digest = hashlib.sha256()
    progress = _ProgressLine(pinned.filename, pinned.megabytes * 1_000_000)
    try:
        with atomic.replacing(target) as partial, open(partial, "wb") as out, \
                urllib.request.urlopen(pinned.url, timeout=60) as response:
            for chunk in iter(lambda: response.read(1 << 20), b""):
                digest.update(chunk)
                out.write(chunk)
                progress.update(len(chunk))
            progress.close()
            if digest.hexdigest() != pinned.sha256:
                raise LipSyncError(pinned.hint("was downloaded but its SHA256 does not match (damaged download)"))
        return target
    except OSError as err:  # network, DNS, disk: all mean the same thing to the user
        progress.close()
        raise LipSyncError(pinned.hint(f"could not be downloaded ({type(err).__name__})")) from None


class _ProgressLine:
    """'Downloading NAME: 12 / 55 MB' rewritten in place on a terminal; on anything else one log line per quarter."""

    def __init__(self, name: str, size: int) -> None:
        import sys

        self.name, self.size, self.done, self.logged = name, size, 0, 0
        self.stream = sys.stderr
        self.terminal = bool(getattr(sys.stderr, "isatty", lambda: False)())

    def update(self, count: int) -> None:
        self.done += count
        text = f"Downloading {self.name}: {self.done / 1e6:.0f} of about {self.size / 1e6:.0f} MB"
        if self.terminal:
            self.stream.write("\r" + text)
            self.stream.flush()
        elif min(4, self.done * 4 // self.size) > self.logged:
            self.logged = min(4, self.done * 4 // self.size)
            log.info(text)

    def close(self) -> None:
        if self.terminal and self.done:
            self.stream.write("\n")
            self.stream.flush()
            self.done = 0
