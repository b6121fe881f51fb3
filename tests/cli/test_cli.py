"""End-to-end runs of `python -m lipsync` as a user runs it: real files in, a playable MP4 out."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import media
import pytest
from cli_runner import run_lipsync

from lipsync.media.probe import probe_media
from lipsync.media.video import read_frames

ROOT = Path(__file__).resolve().parents[2]


def test_help_explains_every_flag():
    proc = run_lipsync("--help")
    assert proc.returncode == 0
    for flag in ("--checkpoint_path", "--static", "--fps", "--pads", "--face_det_batch_size", "--wav2lip_batch_size",
                 "--resize_factor", "--crop", "--box", "--rotate", "--nosmooth", "--blend", "--device", "--detector"):
        assert flag in proc.stdout


@pytest.mark.slow
def test_video_to_synced_mp4(checkpoint, face_video, speech, tmp_path):
    out = tmp_path / "my result; 'quoted' $(x).mp4"
    proc = run_lipsync("--face", str(face_video), "--audio", str(speech), "--outfile", str(out),
                   "--checkpoint_path", str(checkpoint), "--detector", "haar", "--blend", "feather")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Face detector: haar" in proc.stderr
    info = probe_media(str(out))
    assert (info.width, info.height, info.fps) == (320, 240, 25.0)
    assert info.has_audio
    assert len(list(read_frames(info))) == 22  # 81 mel frames: starts int(i * 3.2) <= 65 (21), then the last window
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no partial file left behind


def test_photo_to_synced_mp4(checkpoint, face_photo, speech, tmp_path):
    out = tmp_path / "photo.mp4"
    proc = run_lipsync("--face", str(face_photo), "--audio", str(speech), "--outfile", str(out),
                   "--checkpoint_path", str(checkpoint), "--fps", "30")
    assert proc.returncode == 0, proc.stderr
    info = probe_media(str(out))
    assert (info.width, info.height, info.fps) == (512, 512, 30.0) and info.has_audio
    assert len(list(read_frames(info))) == 26  # starts int(i * 80 / 30) <= 65 (24), then the last


@pytest.mark.parametrize("case", ["missing face", "audio as face", "no face", "bad box", "bad checkpoint"])
def test_bad_input_is_one_clear_sentence(case, checkpoint, face_video, speech, tmp_path):
    args = {"face": str(face_video), "audio": str(speech), "ckpt": str(checkpoint), "extra": []}
    expected = {"missing face": "File not found", "audio as face": "has no picture", "no face": "No face was found",
                "bad box": "is not inside", "bad checkpoint": "not a readable PyTorch checkpoint"}[case]
    if case == "missing face":
        args["face"] = str(tmp_path / "nope.mp4")
    elif case == "audio as face":
        args["face"] = str(speech)
    elif case == "no face":
        blank = tmp_path / "blank.png"
        import cv2
        import numpy as np
        cv2.imwrite(str(blank), np.full((200, 200, 3), 90, np.uint8))
        args["face"] = str(blank)
    elif case == "bad box":
        args["extra"] = ["--box", "0", "500", "0", "100"]
    elif case == "bad checkpoint":
        bad = tmp_path / "bad.pth"
        bad.write_bytes(b"\x00" * 1000)
        args["ckpt"] = str(bad)
    out = tmp_path / "out.mp4"
    proc = run_lipsync("--face", args["face"], "--audio", args["audio"], "--outfile", str(out),
                   "--checkpoint_path", args["ckpt"], "--detector", "haar", *args["extra"])
    assert proc.returncode == 1
    assert expected in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args.replace("\0", " "))
    return found


@pytest.mark.slow  # a child process stopped mid-job, once per signal
@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_stopping_leaves_no_output_no_temp_file_and_no_ffmpeg(how, checkpoint, tmp_path):
    """Ctrl-C (SIGINT to the terminal's whole group: exit 130) and SIGTERM to the CLI alone (`kill`, `timeout`,
    `docker stop`: exit 143) both stop the job with no output, no partial file, no ffmpeg left running."""
    import signal

    face = media.make_face_video(tmp_path / "interrupted face.mp4", seconds=2.0)
    audio = media.write_wav(tmp_path / "long.wav", media.speech_samples(8.0))
    out_dir, tmp = tmp_path / "out", tmp_path / "tmp"
    out_dir.mkdir()
    tmp.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), TMPDIR=str(tmp))
    proc = subprocess.Popen([sys.executable, "-m", "lipsync", "--face", str(face), "--audio", str(audio),
                             "--outfile", str(out_dir / "out.mp4"), "--checkpoint_path", str(checkpoint),
                             "--detector", "haar"], stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True,
                            # as in a terminal: a runner started in the background may pass SIGINT on ignored
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    seen = ""
    while "Syncing lips" not in seen:  # interrupt in the middle of the work, the encoder running
        char = proc.stderr.read(1)
        assert char, f"the CLI ended before syncing: {seen}"
        seen += char
    if how == "ctrl-c":
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    else:
        proc.send_signal(signal.SIGTERM)  # what kill does: this process only
    err = seen + proc.stderr.read()
    assert proc.wait(timeout=60) == (130 if how == "ctrl-c" else 143), err
    assert "Stopped; no output was written." in err and "Traceback" not in err
    assert list(out_dir.iterdir()) == [] and list(tmp.iterdir()) == []
    assert _processes_mentioning(str(face)) == []


def test_the_flag_table_lists_every_flag_the_cli_takes():
    """docs/cli.md's table is checked against the declarations the CLI is built from."""
    import re

    from lipsync.cli.sync import build_parser

    readme = (ROOT / "docs" / "cli.md").read_text()
    table = readme[readme.index("| flag | meaning (default) |"):]
    table = table[: table.index("\n\n")]
    documented = {m.group(1) for m in re.finditer(r"^\| `(--\w+)", table, re.M)}
    flags = {s for a in build_parser()._actions for s in a.option_strings if s.startswith("--") and s != "--help"}
    assert documented == flags, (sorted(flags - documented), sorted(documented - flags))


def test_every_setting_is_declared_through_setting():
    """A plain dataclass field would get no flag, no help and no app control: each must come from setting()."""
    from dataclasses import fields

    from lipsync.options import EngineOptions, Options, setting

    for cls in (Options, EngineOptions):
        for f in fields(cls):
            assert "help" in f.metadata, f"{cls.__name__}.{f.name} is not declared with setting(...)"
    with pytest.raises(ValueError):
        setting(1, " ")


def test_the_documented_exit_statuses_are_the_ones_the_commands_return():
    import re

    from lipsync.cli import flags
    from lipsync.runtime.interrupts import Terminated

    readme = (ROOT / "docs" / "cli.md").read_text()
    table = readme.split("| status | meaning")[1].split("\n\n")[0]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", table, flags=re.M)}
    assert documented == {0, flags.EXIT_FAILED, flags.EXIT_USAGE, flags.EXIT_BUG,
                          flags.stop_status(KeyboardInterrupt()), flags.stop_status(Terminated())}
    assert (flags.EXIT_FAILED, flags.EXIT_USAGE, flags.EXIT_BUG) == (1, 2, 3)


def test_an_unexpected_error_is_status_3_with_one_line(capsys, monkeypatch):
    from lipsync.cli import flags

    monkeypatch.delenv("LIPSYNC_DEBUG", raising=False)
    assert flags.command_status(RuntimeError("boom"), "Stopped.") == 3
    assert "Unexpected error (RuntimeError: boom). This is a bug in lipsync" in capsys.readouterr().err
    monkeypatch.setenv("LIPSYNC_DEBUG", "1")
    with pytest.raises(RuntimeError):
        flags.command_status(RuntimeError("boom"), "Stopped.")


# ------------------------------------------------------------------------------------------------ the score command


@pytest.mark.slow  # two child processes: a job with its score, then the score command on its result (about 15 s)
def test_score_json_on_a_result_made_with_random_weights(checkpoint, syncnet_files, face_video, speech, tmp_path):
    """`--score` prints the three figures; `score --json` on the result prints exactly one JSON object."""
    import json

    env = {"LIPSYNC_SYNCNET": str(syncnet_files["legacy"]), "LIPSYNC_MODEL_CACHE": str(tmp_path / "models")}
    out = tmp_path / "result.mp4"
    proc = run_lipsync("--face", face_video, "--audio", speech, "--outfile", out, "--checkpoint_path", checkpoint,
                       "--blend", "mouth", "--score", env=env)  # 'mouth': the random mouth leaves the face findable
    assert proc.returncode == 0, proc.stderr
    assert "Sync (SyncNet): confidence LSE-C" in proc.stderr and "paper 7.781" in proc.stderr
    proc = run_lipsync("score", out, "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)  # the whole of stdout is one object
    assert {"offset", "lse_c", "lse_d", "frames", "framewise", "vshift", "crop", "backend"} <= set(got)
    assert got["frames"] == len(got["framewise"]) > 0 and got["vshift"] == 15 and got["crop"] == "face"
    assert isinstance(got["offset"], int) and -15 <= got["offset"] <= 15 and "blazeface" in got["detector"]


def test_score_command_in_process(syncnet_files, face_video, speech, capsys, monkeypatch):
    import json

    from lipsync.cli import main

    monkeypatch.setenv("LIPSYNC_SYNCNET", str(syncnet_files["legacy"]))
    assert main(["score", str(face_video), "--audio", str(speech), "--crop", "none", "--vshift", "4", "--json",
                 "--quiet"]) == 0
    out = capsys.readouterr().out
    got = json.loads(out)
    assert out.count("\n") == 1 and got["vshift"] == 4 and len(got["curve"]) == 9 and got["crop"] == "none"
    assert main(["score", str(face_video), "--audio", str(speech), "--crop", "none", "--quiet"]) == 0
    line = capsys.readouterr().out
    assert "confidence LSE-C" in line and "paper 6.386" in line and "the whole frame" in line


@pytest.mark.parametrize("case", ["missing", "no sound", "photo", "bad crop", "bad vshift"])
def test_score_bad_input_is_one_sentence_and_its_status(case, face_video, face_photo, speech, tmp_path, capsys):
    from lipsync.cli import main

    args = {"missing": [str(tmp_path / "nope.mp4")], "no sound": [str(face_video)], "photo": [str(face_photo)],
            "bad crop": [str(face_video), "--crop", "mouth"], "bad vshift": [str(face_video), "--vshift", "-1"]}[case]
    if case in ("bad crop", "bad vshift"):  # the command line: argparse's status 2
        with pytest.raises(SystemExit) as stopped:
            main(["score", *args])
        assert stopped.value.code == 2
        return
    assert main(["score", *args, "--quiet"]) == 1
    err = capsys.readouterr().err
    expected = {"missing": "File not found", "no sound": "has no sound to score the lips against",
                "photo": "is not a video"}[case]
    assert expected in err and err.count("Error: ") == 1 and "Traceback" not in err
