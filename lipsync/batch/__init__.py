"""Batch dubbing: many clips from a manifest, on this machine or a Ray cluster, one loaded model per worker.

    manifest.py     CSV or JSON-lines rows read into checked Jobs
    outputs.py      what the jobs may write, checked before any starts (never an input, the manifest, the report)
    report.py       what became of each job, and the file scripts read
    worker.py       one loaded model running jobs one after another
    local.py        workers in this process or in worker processes
    ray_cluster.py  workers as Ray actors
    run.py          run_batch: checks, skips, the executor, the report
The command is lipsync.cli.batch.
"""
