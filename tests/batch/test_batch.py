"""Batch dubbing (`python -m lipsync batch`, `lipsync.run_batch`): mixed good and bad jobs, locally and on Ray.

Tiny clips (160x120, half a second) and the session's random checkpoint keep it fast;
Ray is a local instance started once for the module, never a network address.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import media
import numpy as np
import pytest
from cli_runner import run_lipsync

from lipsync.batch import manifest as batch_manifest
from lipsync.batch import ray_cluster as batch_ray
from lipsync.batch.manifest import load_manifest
from lipsync.batch.run import run_batch
from lipsync.cli import batch as batch_cli
from lipsync.media.probe import probe_media
from lipsync.options import Options

ROOT = Path(__file__).resolve().parents[2]
SIZE = (160, 120)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    """A folder with a face clip, speech, silence and a clip without a face (relative names in the manifests)."""
    folder = tmp_path_factory.mktemp("batch")
    media.make_face_video(folder / "face.mp4", seconds=0.6, fps=25, size=SIZE)
    media.write_wav(folder / "speech.wav", media.speech_samples(0.5))
    media.write_wav(folder / "speech2.wav", media.speech_samples(0.4, seed=1))
    media.write_wav(folder / "silent.wav", np.zeros(8000, dtype=np.float32))
    media.write_video(folder / "noface.mp4", (np.full((SIZE[1], SIZE[0], 3), 120, np.uint8) for _ in range(12)), 25,
                      SIZE)
    return folder


GOOD = [{"face": "face.mp4", "audio": "speech.wav", "output": "out/a.mp4"},
        {"face": "face.mp4", "audio": "speech2.wav", "output": "out/b.mp4", "pads": "0 12 0 0", "blend": "feather"}]
BAD = [{"face": "missing.mp4", "audio": "speech.wav", "output": "out/missing.mp4"},
       {"face": "noface.mp4", "audio": "speech.wav", "output": "out/noface.mp4"},
       {"face": "face.mp4", "audio": "silent.wav", "output": "out/silent.mp4"}]


def write_csv(path: Path, rows: list[dict]) -> Path:
    columns = sorted({k for r in rows for k in r}, key=lambda c: (c not in batch_manifest.FILE_COLUMNS, c))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cli(*args: str) -> subprocess.CompletedProcess:
    return run_lipsync("batch", *args, timeout=300)


def partial_files(folder: Path) -> list[str]:
    return [p.name for p in folder.rglob("*") if "partial" in p.name]


def by_output(report) -> dict[str, object]:
    return {Path(j.output).name: j for j in report.jobs}


# ------------------------------------------------------------------------------------------ the manifest


def test_csv_and_jsonl_manifests_read_alike(clips):
    jobs_csv = load_manifest(write_csv(clips / "m.csv", GOOD), {"detector": "haar"})
    rows = [dict(GOOD[0]), dict(GOOD[1], pads=[0, 12, 0, 0])]
    jobs_jsonl = load_manifest(write_jsonl(clips / "m.jsonl", rows), {"detector": "haar"})
    assert [dataclasses.replace(j, row=0) for j in jobs_csv] == [dataclasses.replace(j, row=0) for j in jobs_jsonl]
    assert jobs_csv[0].face == str(clips / "face.mp4") and jobs_csv[1].output == str(clips / "out" / "b.mp4")
    assert jobs_csv[1].options == Options(pads=(0, 12, 0, 0), blend="feather", detector="haar")
    assert jobs_csv[0].options == Options(detector="haar")  # an empty CSV cell keeps the default
    assert [j.row for j in jobs_csv] == [2, 3] and [j.row for j in jobs_jsonl] == [1, 2]  # file line numbers


@pytest.mark.parametrize("case, expected", [
    ("unknown option", "unknown column 'padz'"),
    ("engine option", "for the whole batch"),
    ("bad value", "Unknown blend"),
    ("bad pads", "takes 4 numbers"),
    ("duplicate output", "both write"),
    ("unwritable folder", "Cannot write in the output folder"),
    ("bad csv", "has 2 cells but the header has 3"),
    ("bad json", "is not valid JSON"),
    ("no file column", "has no output"),
])
def test_bad_manifest_is_refused_before_any_job(case, expected, clips, tmp_path, capsys):
    (tmp_path / "a_file").write_text("not a folder")
    rows = [dict(GOOD[0], output=str(tmp_path / "out" / "a.mp4"))]
    name = "m.csv"
    if case == "unknown option":
        rows[0]["padz"] = "0 1 0 0"
    elif case == "engine option":
        rows[0]["checkpoint_path"] = "x.pth"
    elif case == "bad value":
        rows[0]["blend"] = "smudge"
    elif case == "bad pads":
        rows[0]["pads"] = "0 10 0"
    elif case == "duplicate output":
        rows.append(dict(rows[0], audio="speech2.wav"))
    elif case == "unwritable folder":
        rows[0]["output"] = str(tmp_path / "a_file" / "a.mp4")
    elif case == "no file column":
        del rows[0]["output"]
    rows = [dict(r, face=str(clips / r["face"]), audio=str(clips / r["audio"])) for r in rows]
    manifest = write_csv(tmp_path / name, rows)
    if case == "bad csv":
        manifest.write_text(manifest.read_text() + "only,two\n")
    elif case == "bad json":
        manifest = tmp_path / "m.jsonl"
        manifest.write_text(json.dumps(rows[0]) + "\n{\"face\": oops}\n")
    code = batch_cli.main([str(manifest), "--detector", "haar", "--device", "cpu", "--checkpoint_path", "unused.pth"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and err.startswith("Error: ") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())  # nothing ran
    assert not list(tmp_path.glob("*.report.*"))


def test_a_batch_never_overwrites_inputs_the_manifest_the_report_or_other_files(clips, tmp_path, capsys):
    """The rows from the issue (an output named important.txt, another row's audio, ...), the manifest and the
    report as outputs, an input under another name: refused before any job, one sentence per row, files intact."""
    import shutil

    for name in ("anna.mp4", "anna.wav", "ben.wav"):
        shutil.copy(clips / ("face.mp4" if name.endswith(".mp4") else "speech.wav"), tmp_path / name)
    (tmp_path / "important.txt").write_text("my notes")
    (tmp_path / "old.mp4").write_text("not a video")
    os.link(tmp_path / "anna.wav", tmp_path / "anna_link.mp4")  # the same file as an input, under a video name
    rows = [("anna.mp4", "anna.wav", "important.txt"), ("anna.mp4", "anna.wav", "ben.wav"),
            ("anna.mp4", "ben.wav", "out3.mp4"), ("anna.mp4", "anna.wav", "jobs.csv"),
            ("anna.mp4", "anna.wav", "jobs.report.csv"), ("anna.mp4", "anna.wav", "anna_link.mp4"),
            ("anna.mp4", "anna.wav", "old.mp4"), ("anna.mp4", "anna.wav", "out3.mp4")]
    manifest = write_csv(tmp_path / "jobs.csv", [dict(zip(batch_manifest.FILE_COLUMNS, r)) for r in rows])
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    code = batch_cli.main([str(manifest), "--detector", "haar", "--device", "cpu", "--checkpoint_path", "unused"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and all(line.startswith("Error: ") for line in lines) and len(lines) == 7, lines
    expected = ["job 2, '{}/important.txt', is not named as a video", "Job 3 would overwrite the audio of job 4",
                "Job 5 would overwrite the manifest", "Job 6 would overwrite the report",
                "Job 7 would overwrite the audio of job 2, '{}/anna_link.mp4'",
                "job 8, '{}/old.mp4', already exists and is not a complete video", "Jobs 4 and 9 both write"]
    for line, text in zip(lines, expected):
        assert text.format(tmp_path) in line, (line, text)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before and not list(tmp_path.glob("*.report.*"))
    # --force lets the batch replace old.mp4, never an input, the manifest or the report.
    code = batch_cli.main([str(manifest), "--force", "--detector", "haar", "--device", "cpu", "--checkpoint_path",
                           "unused"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 6 and not any("old.mp4" in line for line in lines), lines


# ------------------------------------------------------------------------------------------ local


@pytest.mark.slow
def test_local_batch_mixed_rerun_and_force(checkpoint, clips, capsys):
    manifest = write_csv(clips / "mixed.csv", GOOD + BAD)
    args = [str(manifest), "--detector", "haar", "--device", "cpu", "--checkpoint_path", str(checkpoint)]
    assert batch_cli.main(args) == 1  # some failed
    err = capsys.readouterr().err
    report_path = clips / "mixed.report.csv"
    rows = list(csv.DictReader(report_path.open()))
    jobs, total = rows[:-1], rows[-1]
    status = {Path(r["output"]).name: r for r in jobs}
    assert {k: v["status"] for k, v in status.items()} == {
        "a.mp4": "done", "b.mp4": "done", "missing.mp4": "failed", "noface.mp4": "failed", "silent.mp4": "failed"}
    assert "File not found" in status["missing.mp4"]["error"]
    assert "No face was found" in status["noface.mp4"]["error"]
    assert "is silent" in status["silent.mp4"]["error"]
    assert int(status["a.mp4"]["frames"]) == 10 and float(status["a.mp4"]["seconds"]) > 0  # 0.5 s of audio at 25 fps
    assert total["row"] == "total" and total["status"].startswith("2 done; 3 failed; 0 skipped")
    assert int(total["frames"]) == int(status["a.mp4"]["frames"]) + int(status["b.mp4"]["frames"])
    for name in ("a.mp4", "b.mp4"):
        info = probe_media(str(clips / "out" / name))
        assert info.has_video and info.has_audio and (info.width, info.height) == SIZE
    assert sorted(p.name for p in (clips / "out").iterdir()) == ["a.mp4", "b.mp4"]  # no partial, nothing for bad rows
    lines = [line for line in err.splitlines() if "row " in line]
    assert len(lines) == 5 and sum("failed" in line for line in lines) == 3
    assert "Traceback" not in err and "2 done, 3 failed, 0 skipped" in err

    # A rerun skips what is complete and retries what failed.
    mtime = (clips / "out" / "a.mp4").stat().st_mtime_ns
    assert batch_cli.main(args) == 1
    jobs = list(csv.DictReader(report_path.open()))[:-1]
    assert [r["status"] for r in jobs] == ["skipped", "skipped", "failed", "failed", "failed"]
    assert (clips / "out" / "a.mp4").stat().st_mtime_ns == mtime

    # Only good rows: exit 0. A damaged output is not "complete": refused (it may be someone's file), unless --force.
    good = write_jsonl(clips / "good.jsonl", GOOD)
    (clips / "out" / "b.mp4").write_bytes(b"\x00" * 100)
    assert batch_cli.main([str(good), *args[1:], "--report", str(clips / "good.json")]) == 2
    assert "is not a complete video from an earlier run; move it away, or give --force" in capsys.readouterr().err
    assert (clips / "out" / "b.mp4").read_bytes() == b"\x00" * 100
    (clips / "out" / "b.mp4").unlink()
    assert batch_cli.main([str(good), *args[1:], "--report", str(clips / "good.json")]) == 0
    report = json.loads((clips / "good.json").read_text())
    assert [j["status"] for j in report["jobs"]] == ["skipped", "done"]
    assert report["totals"]["skipped"] == 1 and report["totals"]["done"] == 1
    assert batch_cli.main([str(good), *args[1:], "--force"]) == 0
    report = json.loads((clips / "good.report.json").read_text())
    assert [j["status"] for j in report["jobs"]] == ["done", "done"]
    assert (clips / "out" / "a.mp4").stat().st_mtime_ns != mtime
    capsys.readouterr()


def test_api_and_ctrl_c_report(checkpoint, clips, tmp_path):
    """From Python: dicts in, a BatchReport out; Ctrl-C after the first job leaves the rest cancelled, no partials."""
    rows = [dict(r, output=f"{tmp_path}/{i}.mp4") for i, r in enumerate([GOOD[0], GOOD[1], GOOD[0]])]
    seen = []

    def stop_after_first(result, done, total):
        seen.append((result.status, done, total))
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as stopped:
        run_batch(rows, base=clips, defaults={"detector": "haar"}, checkpoint=str(checkpoint), device="cpu",
                  progress=stop_after_first)
    report = stopped.value.report
    assert [j.status for j in report.jobs] == ["done", "cancelled", "cancelled"] and report.interrupted
    assert seen == [("done", 1, 3)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.mp4"]


@pytest.mark.slow
@pytest.mark.parametrize("signum, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["sigint", "sigterm"])
def test_cli_dispatch_and_stopping(signum, status, checkpoint, clips, tmp_path):
    """`python -m lipsync batch`: SIGINT or SIGTERM (`kill`, `docker stop`) during the batch exits 130 or 143 with
    the report written and no partial file."""
    rows = [dict(GOOD[i % 2], output=str(tmp_path / "out" / f"{i}.mp4"),
                 face=str(clips / "face.mp4"), audio=str(clips / GOOD[i % 2]["audio"])) for i in range(40)]
    manifest = write_csv(tmp_path / "many.csv", rows)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "lipsync", "batch", str(manifest), "--detector", "haar",
                             "--device", "cpu", "--checkpoint_path", str(checkpoint)], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    lines = []
    for line in proc.stderr:  # wait for the first finished job, then stop the batch in the middle of the next
        lines.append(line)
        if " done " in line:
            break
    proc.send_signal(signum)  # lands in the second job (or between jobs): both must stop the batch cleanly
    rest = proc.stderr.read()
    assert proc.wait(timeout=60) == status, "".join(lines) + rest
    assert "Stopped" in rest and "Traceback" not in rest
    statuses = [r["status"] for r in csv.DictReader((tmp_path / "many.report.csv").open())][:-1]
    assert statuses[0] == "done" and statuses[-1] == "cancelled" and set(statuses) <= {"done", "cancelled"}
    outputs = sorted((tmp_path / "out").iterdir())
    assert len(outputs) == statuses.count("done") and not partial_files(tmp_path)
    for path in outputs:
        assert probe_media(str(path)).duration > 0


@pytest.mark.slow  # two jobs and their scores in this process, the model and SyncNet loaded (about 8 s)
def test_min_sync_confidence_scores_every_job_and_marks_the_weak_ones(checkpoint, syncnet_files, clips, tmp_path,
                                                                     capsys, monkeypatch):
    """--min_sync_confidence X: every job scored (its figures in offset, lse_c, lse_d), those under X marked low_sync,
    counted in the summary. Random weights give confidences near 0, so 1000 marks both."""
    monkeypatch.setenv("LIPSYNC_SYNCNET", str(syncnet_files["legacy"]))
    rows = [dict(r, output=str(tmp_path / r["output"])) for r in GOOD]
    manifest = write_csv(tmp_path / "scored.csv", [dict(r, face=str(clips / r["face"]), audio=str(clips / r["audio"]))
                                                   for r in rows])
    args = [str(manifest), "--detector", "haar", "--device", "cpu", "--checkpoint_path", str(checkpoint),
            "--min_sync_confidence", "1000"]
    assert batch_cli.main(args) == 0
    err = capsys.readouterr().err
    rows = list(csv.DictReader((tmp_path / "scored.report.csv").open()))
    jobs, total = rows[:-1], rows[-1]
    assert all(r["status"] == "done" and r["low_sync"] == "True" and -15 <= int(r["offset"]) <= 15
               and float(r["lse_c"]) < 1000 and float(r["lse_d"]) > 0 for r in jobs), jobs
    assert total["low_sync"] == "2" and "2 of 2 scored under sync confidence 1000" in err
    assert "sync LSE-C" in err and "(low)" in err


def test_the_report_leaves_the_score_empty_when_not_scored(tmp_path):
    from lipsync.batch.report import BatchReport, JobResult

    job = batch_manifest.Job(1, "a.mp4", "a.wav", "out.mp4")
    plain = JobResult.of(job, "done", frames=10, seconds=1.0)
    scored = JobResult.of(job, "done", frames=10, seconds=1.0, score=type("S", (), {"offset": -1, "lse_c": 4.56789,
                                                                                     "lse_d": 7.0})())
    for result in (plain, scored):
        result.judge(5.0)
    assert (plain.low_sync, scored.low_sync, scored.lse_c) == (None, True, 4.5679)
    report = BatchReport([plain, scored], seconds=2.0, workers=1, min_sync_confidence=5.0)
    rows = list(csv.DictReader(open(report.write(tmp_path / "r.csv"))))
    assert [rows[0][k] for k in ("offset", "lse_c", "lse_d", "low_sync")] == ["", "", "", ""]
    assert [rows[1][k] for k in ("offset", "lse_c", "lse_d", "low_sync")] == ["-1", "4.5679", "7.0", "True"]
    assert "1 of 1 scored under sync confidence 5" in report.summary()
    assert json.loads(open(report.write(tmp_path / "r.json")).read())["jobs"][0]["lse_c"] is None


def test_min_sync_confidence_without_weights_stops_before_any_job(clips, tmp_path, capsys, monkeypatch):
    from lipsync.weights import locate as weights

    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "none")
    monkeypatch.delenv("LIPSYNC_SYNCNET", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    manifest = write_csv(tmp_path / "m.csv", [dict(GOOD[0], face=str(clips / "face.mp4"),
                                                   audio=str(clips / "speech.wav"), output=str(tmp_path / "o.mp4"))])
    assert batch_cli.main([str(manifest), "--min_sync_confidence", "3", "--checkpoint_path", "unused"]) == 1
    err = capsys.readouterr().err
    assert "syncnet_v2.model" in err and err.count("Error: ") == 1 and not (tmp_path / "o.mp4").exists()


def test_local_workers_each_report_at_start_and_one_that_cannot_load_is_left_out(tmp_path, monkeypatch, caplog):
    """Three worker processes, the first cannot load its model: the other two take every job; a worker that dies
    mid-job fails that job alone; when none loads, the batch stops with the worker's sentence."""
    import batch_stand_ins

    from lipsync.batch.local import run_in_processes
    from lipsync.batch.manifest import Job
    from lipsync.errors import LipSyncError
    from lipsync.options import EngineOptions

    monkeypatch.setenv(batch_stand_ins.FIRST_MARKER, str(tmp_path / "first"))
    names = ["1.txt", "2.txt", "die.txt", "4.txt", "5.txt", "6.txt"]
    jobs = [Job(row, "face.mp4", "voice.wav", str(tmp_path / name)) for row, name in enumerate(names, 1)]
    loaded = []
    results = sorted(run_in_processes(jobs, EngineOptions(device="cpu"), 3, loaded.append,
                                      make_worker=batch_stand_ins.first_fails), key=lambda r: r.row)
    assert loaded == [2] and "could not load the model and is left out: The checkpoint 'x.pth'" in caplog.text
    assert [r.status for r in results] == ["done", "done", "failed", "done", "done", "done"]
    assert "worker process running it stopped (exit status 3)" in results[2].error
    assert len({r.frames for r in results if r.status == "done"}) >= 1  # the surviving worker(s) ran them all
    with pytest.raises(LipSyncError, match="The checkpoint 'x.pth' is damaged"):
        list(run_in_processes(jobs[:2], EngineOptions(device="cpu"), 2, make_worker=batch_stand_ins.all_fail))


@pytest.mark.slow
def test_two_workers_from_the_command_line(checkpoint, clips, tmp_path):
    """`--workers 2` (in the README): two processes, one model each, every job done or failed as alone."""
    rows = [dict(r, output=str(tmp_path / Path(r["output"]).name), face=str(clips / r["face"]),
                 audio=str(clips / r["audio"])) for r in GOOD + BAD[1:2] + [dict(GOOD[0], output="out/c.mp4")]]
    manifest = write_jsonl(tmp_path / "two.jsonl", rows)
    proc = cli(str(manifest), "--workers", "2", "--detector", "haar", "--device", "cpu", "--checkpoint_path",
               str(checkpoint))
    assert proc.returncode == 1, proc.stderr[-3000:]
    report = json.loads((tmp_path / "two.report.json").read_text())
    assert report["totals"]["workers"] == 2 and report["totals"]["done"] == 3 and report["totals"]["failed"] == 1
    assert "No face was found" in next(j["error"] for j in report["jobs"] if j["status"] == "failed")
    assert sorted(p.name for p in tmp_path.glob("*.mp4")) == ["a.mp4", "b.mp4", "c.mp4"]
    assert not partial_files(tmp_path) and "Traceback" not in proc.stderr


# ------------------------------------------------------------------------------------------ Ray


@pytest.fixture(scope="module")
def local_ray():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.mark.slow
def test_ray_batch_mixed(local_ray, checkpoint, clips, tmp_path):
    rows = [dict(r, output=str(tmp_path / Path(r["output"]).name)) for r in GOOD + BAD]
    report = run_batch(rows, ray=True, base=clips, defaults={"detector": "haar"}, checkpoint=str(checkpoint),
                       device="cpu")
    assert report.backend == "ray" and report.workers == 1  # one node of 2 CPUs: one actor using both
    status = {k: v.status for k, v in by_output(report).items()}
    assert status == {"a.mp4": "done", "b.mp4": "done", "missing.mp4": "failed", "noface.mp4": "failed",
                      "silent.mp4": "failed"}
    assert "No face was found" in by_output(report)["noface.mp4"].error
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.mp4", "b.mp4"]
    assert by_output(report)["a.mp4"].frames == 10
    # rerun on Ray: the complete outputs are skipped
    again = run_batch(rows[:2], ray=True, base=clips, defaults={"detector": "haar"}, checkpoint=str(checkpoint),
                      device="cpu")
    assert [j.status for j in again.jobs] == ["skipped", "skipped"] and again.ok


@pytest.mark.slow
def test_ray_plan_requests_gpus_when_the_cluster_has_them():
    class FakeRay:
        def __init__(self, resources, nodes):
            self.resources, self._nodes = resources, nodes

        def cluster_resources(self):
            return self.resources

        def nodes(self):
            return self._nodes

    gpu = FakeRay({"CPU": 32, "GPU": 4}, [])
    assert batch_ray.ray_plan(gpu, None) == (4, {"num_gpus": 1, "num_cpus": 1})
    nodes = [{"Alive": True, "Resources": {"CPU": 8}}, {"Alive": True, "Resources": {"CPU": 16}}]
    cpu = FakeRay({"CPU": 24}, nodes)
    assert batch_ray.ray_plan(cpu, None) == (2, {"num_cpus": 8})  # one actor per node, using its cores
    assert batch_ray.ray_plan(cpu, 6) == (6, {"num_cpus": 4})
