"""The Colab notebook (notebooks/lipsync_colab.ipynb), run headless on the CPU as Colab runs it.

The notebook is executed in a real Jupyter kernel (nbclient + ipykernel: Colab's kernel is an
ipykernel too), so its form fields, display calls and error rendering behave as they do there.
Colab's own `google.colab.files` is replaced by tests/support/stand_ins/google/colab (uploads from a list
of paths, downloads recorded); the setup cell's install is skipped ($LIPSYNC_NOTEBOOK_SKIP_INSTALL)
and the model is the session's random-weight checkpoint.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path

import media
import pytest

from lipsync import Options
from lipsync.media.ffmpeg import ffmpeg_exe

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "lipsync_colab.ipynb"
STAND_INS = ROOT / "tests" / "support" / "stand_ins"
COLAB_LINK = re.compile(r"https://colab\.research\.google\.com/github/([^/\s)]+/[^/\s)]+)/blob/main/"
                        r"notebooks/lipsync_colab\.ipynb")
VIDEO_SOURCE = re.compile(r'<video[^>]*>\s*<source type="video/mp4" src="data:video/mp4;base64,([A-Za-z0-9+/=]+)"')
PROBE = ("import dataclasses, json\n"  # a cell the test appends: what the sync cell ran with
         "print('PROBE ' + json.dumps({'options': dataclasses.asdict(options), 'device': engine.device}))")


def nbformat():
    try:
        import nbclient  # noqa: F401
        import nbformat
    except ImportError:
        pytest.fail("Running the notebook needs nbclient, nbformat and ipykernel: pip install -r requirements-dev.txt")
    return nbformat


def cell(nb, cell_id: str):
    return next(c for c in nb.cells if c.get("id") == cell_id)


def text_of(c) -> str:
    """Everything a cell printed or displayed as text (streams, text/plain, text/html, error lines)."""
    parts = []
    for out in c.get("outputs", []):
        parts.append(out.get("text", ""))
        parts += [out.get("data", {}).get(kind, "") for kind in ("text/plain", "text/html", "text/markdown")]
        parts += out.get("traceback", [])
    return "\n".join(parts)


def execute(work: Path, monkeypatch, uploads: list[list[Path]], checkpoint: Path | None = None,
            extra_cells: tuple[str, ...] = (), skip_install: bool = True, project: Path = ROOT):
    """Run the notebook top to bottom as Run all does (it stops at the first error); (notebook, error or None)."""
    nb = nbformat().read(NOTEBOOK, as_version=4)  # first: says what to install when nbclient is missing
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    for source in extra_cells:
        nb.cells.append(nbformat().v4.new_code_cell(source))
    work.mkdir(parents=True, exist_ok=True)
    inherited = [os.path.abspath(p) for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(STAND_INS), *inherited]))  # the kernel runs elsewhere
    monkeypatch.setenv("LIPSYNC_PROJECT_DIR", str(project))
    if skip_install:
        monkeypatch.setenv("LIPSYNC_NOTEBOOK_SKIP_INSTALL", "1")
    if checkpoint is not None:
        monkeypatch.setenv("LIPSYNC_CHECKPOINT", str(checkpoint))
    monkeypatch.setenv("COLAB_STAND_IN_UPLOADS", json.dumps([[str(p) for p in batch] for batch in uploads]))
    monkeypatch.setenv("COLAB_STAND_IN_LOG", str(work / "colab.log"))
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(work)}})
    try:
        client.execute()
    except CellExecutionError as err:
        return nb, err
    return nb, None


def official_frame_count(audio: Path, fps: float) -> int:
    """Frames the official inference.py writes: one per 16-frame mel window (80 mel frames a second, hop 200)."""
    with wave.open(str(audio)) as w:
        assert w.getframerate() == 16000
        mel_frames = 1 + w.getnframes() // 200
    i = 0
    while int(i * 80 / fps) + 16 <= mel_frames:
        i += 1
    return i + 1  # the last window, taken from the end


def has_gpu() -> bool:
    smi = shutil.which("nvidia-smi")
    return bool(smi) and subprocess.run([smi, "-L"], capture_output=True, text=True).stdout.startswith("GPU")


def app_defaults() -> dict:
    """The settings the web app's page starts with, as Options (from its API's parameter defaults)."""
    from webapp import AppConfig, WebApp
    from webapp.jobs import AUTO_OFFSET

    api = WebApp(AppConfig.from_environment()).build().get_api_info()
    parameters = api["named_endpoints"]["/lipsync"]["parameters"]
    flat = {p["parameter_name"]: p["parameter_default"] for p in parameters
            if p["parameter_name"] not in ("face", "audio", "checkpoint_path", "device")}
    if flat.pop(AUTO_OFFSET, False):  # the page's switch beside the offset's box, as the page's job reads it
        flat["audio_offset"] = "auto"
    return json.loads(json.dumps(dataclasses.asdict(Options.from_flat(flat))))


def test_notebook_is_clean_and_linked_from_the_readme():
    nb = nbformat().read(NOTEBOOK, as_version=4)
    nbformat().validate(nb)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code")
    setup = cell(nb, "setup").source
    repo = re.search(r'REPO_URL = "https://github\.com/([^"]+)"', setup).group(1)
    readme_links = COLAB_LINK.findall((ROOT / "README.md").read_text())
    assert readme_links and set(readme_links) == {repo}, "the README's Colab link and REPO_URL must name one repo"
    assert set(COLAB_LINK.findall(cell(nb, "intro").source)) == {repo}
    form = dict(re.findall(r"^(\w+) = (\S+)  # @param", cell(nb, "sync").source, re.M))
    defaults = Options()
    assert [int(form[f"pads_{side}"]) for side in ("top", "bottom", "left", "right")] == list(defaults.pads)
    assert int(form["resize_factor"]) == defaults.resize_factor


@pytest.mark.slow
def test_notebook_syncs_an_upload_and_shows_it_beside_the_original(tmp_path, monkeypatch, checkpoint, face_video,
                                                                   speech):
    nb, error = execute(tmp_path / "work", monkeypatch, [[face_video], [speech]], checkpoint, extra_cells=(PROBE,))
    assert error is None, error
    setup = text_of(cell(nb, "setup"))
    assert ("GPU: " in setup) if has_gpu() else ("No GPU in this runtime: lipsync goes on on the CPU" in setup)

    sources = VIDEO_SOURCE.findall(text_of(cell(nb, "result")))
    assert len(sources) == 2, "the original and the result, side by side"
    shown = tmp_path / "shown.mp4"
    shown.write_bytes(base64.b64decode(sources[1]))
    header = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(shown)], capture_output=True, text=True).stderr
    assert "Input #0, mov,mp4" in header and re.search(r"Video: h264 .*yuv420p", header), header
    assert len(media.read_all_frames(shown)) == official_frame_count(speech, 25.0)
    original = tmp_path / "original.mp4"
    original.write_bytes(base64.b64decode(sources[0]))
    assert len(media.read_all_frames(original)) > 0

    downloads = [json.loads(line) for line in (tmp_path / "work" / "colab.log").read_text().splitlines()]
    assert len(downloads) == 1 and Path(downloads[0]["download"]).read_bytes() == shown.read_bytes()

    probe = json.loads(text_of(nb.cells[-1]).split("PROBE ", 1)[1])
    assert probe["device"] == ("cuda" if has_gpu() else "cpu")
    assert probe["options"] == app_defaults(), "the notebook must sync with the web app's defaults"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["cancelled upload", "empty file"])
def test_bad_upload_stops_with_one_sentence(tmp_path, monkeypatch, speech, case):
    work = tmp_path / "work"
    if case == "cancelled upload":
        nb, error = execute(work, monkeypatch, [[]])
    else:
        empty = tmp_path / "clip.mp4"
        empty.write_bytes(b"")
        nb, error = execute(work, monkeypatch, [[empty], [speech]])
    assert error is not None
    failed = cell(nb, "inputs")
    errors = [out for out in failed.outputs if out.output_type == "error"]
    assert len(errors) == 1 and len(errors[0].traceback) == 1, errors  # a sentence, no traceback
    sentence = errors[0].traceback[0]
    if case == "cancelled upload":
        assert sentence.startswith("Error: nothing was uploaded for the face")
    else:  # the CLI's own sentence for the same file
        saved = next(work.glob("uploads/*/clip.mp4"))
        cli = subprocess.run([sys.executable, "-m", "lipsync", "--face", str(saved), "--audio", str(speech),
                              "--outfile", str(tmp_path / "out.mp4")], cwd=ROOT, capture_output=True, text=True)
        assert cli.returncode == 1 and sentence == cli.stderr.strip() and "is empty (0 bytes)" in sentence
    assert all(c.get("execution_count") is None for c in nb.cells[nb.cells.index(failed) + 1:]
               if c.cell_type == "code"), "Run all stops at the sentence"


@pytest.mark.slow
@pytest.mark.parametrize("torch_case", ["kept", "replaced"])
def test_failed_install_names_the_package_and_what_to_do(tmp_path, monkeypatch, torch_case):
    """pip run for real but offline (PIP_NO_INDEX), so nothing can be installed: the requirements list what the
    environment has (every OpenCV wheel installed, so the cell removes none) and one thing no index has, a package
    or a torch no runtime has."""
    import importlib.metadata as metadata

    try:
        torch = metadata.version("torch")
    except metadata.PackageNotFoundError:
        pytest.skip("the torch cases need torch installed")
    project = tmp_path / "project"
    (project / "lipsync").mkdir(parents=True)
    opencv = sorted({d.metadata["Name"] for d in metadata.distributions()
                     if (d.metadata["Name"] or "").lower().startswith("opencv")})
    missing = "lipsync-no-such-package==0.0.1" if torch_case == "kept" else "torch>=99"
    lines = ["numpy", *opencv, *(["torch>=2.0", missing] if torch_case == "kept" else [missing])]
    for name in ("requirements.txt", "requirements-cpu.txt"):  # what a GPU runtime installs, and a CPU one
        (project / name).write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.delenv("LIPSYNC_NOTEBOOK_SKIP_INSTALL", raising=False)
    nb, error = execute(tmp_path / "work", monkeypatch, [], skip_install=False, project=project)
    assert error is not None
    setup = cell(nb, "setup")
    errors = [out for out in setup.outputs if out.output_type == "error"]
    assert len(errors) == 1 and len(errors[0].traceback) == 1, errors  # a sentence, no traceback
    sentence = errors[0].traceback[0]
    assert sentence.startswith(f"Error: installing {missing} failed (")  # and pip's reason
    assert "Run this cell again" in sentence and "Disconnect and delete runtime" in sentence
    said = text_of(setup)
    assert "Removing" not in said
    if torch_case == "kept":
        assert f"Keeping this runtime's torch {torch} (lipsync takes torch >=2.0)" in said
    else:
        assert f"This runtime's torch {torch} is not one lipsync supports (torch >=99): installing one" in said
