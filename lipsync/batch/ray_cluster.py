"""Running a batch's jobs on a Ray cluster: one actor (one loaded model) per GPU, or per node on CPUs.

Scheduling is Ray's: it places the actors, restarts one lost with its node and retries
its job (twice); a job that still cannot run is reported as failed, the others go on.
The lipsync package is shipped to the workers (`py_modules`), so nodes need only its
dependencies; inputs, outputs and the checkpoint must be at the same paths on every node.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import Any, Callable, Iterator, Sequence

from ..errors import LipSyncError
from ..options import EngineOptions
from .manifest import Job
from .report import JobResult
from .worker import Worker

log = logging.getLogger("lipsync.batch.run")


def _ray_module():
    try:
        import ray
    except ImportError:
        raise LipSyncError("--ray needs Ray, which is not installed: pip install -r requirements-ray.txt") from None
    return ray


def _package_runtime_env() -> dict[str, Any]:
    """This lipsync package as Ray's py_modules: uploaded once per job, so cluster nodes need only its dependencies.

    Ray accepts a local folder only for the whole job (ray.init); when the caller started
    Ray, the workers import lipsync as the caller's job environment provides it.
    """
    import lipsync

    return {"py_modules": [os.path.dirname(os.path.abspath(lipsync.__file__))]}


def ray_plan(ray: Any, workers: int | None) -> tuple[int, dict[str, Any]]:
    """How many actors and what each requests, from what the cluster has.

    With GPUs: one actor per GPU, each asking for num_gpus=1 (Ray then sets its
    CUDA_VISIBLE_DEVICES). Without: one actor per node, each asking for that node's cores,
    since one model uses all the cores it has (see `default_workers`).
    """
    resources = ray.cluster_resources()
    gpus = int(resources.get("GPU", 0))
    if gpus:
        return (workers or gpus), {"num_gpus": 1, "num_cpus": 1}
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU", 0) > 0]
    node_cpus = min(int(n["Resources"]["CPU"]) for n in nodes) if nodes else max(1, int(resources.get("CPU", 1)))
    count = workers or max(1, len(nodes))
    total = int(resources.get("CPU", node_cpus))
    return count, {"num_cpus": max(1, min(node_cpus, total // count))}


def run_on_ray(jobs: Sequence[Job], engine_options: EngineOptions, workers: int | None,
                address: str | None, started: Callable[[int], None]) -> Iterator[JobResult]:
    """Ray actors, one model each, fed one job at a time each (ray.wait): Ray places them and restarts lost ones."""
    ray = _ray_module()
    started_here = not ray.is_initialized()
    if started_here:  # ship this lipsync package to the workers (py_modules), so nodes need its dependencies only
        ray.init(address=address or None, log_to_driver=False, include_dashboard=False,
                 logging_level=logging.WARNING, configure_logging=False, runtime_env=_package_runtime_env())
    actors: list[Any] = []
    running: dict[Any, tuple[Job, Any]] = {}
    try:
        count, request = ray_plan(ray, workers)
        actor_class = ray.remote(Worker).options(max_restarts=2, max_task_retries=2, **request)
        threads = 0 if request.get("num_gpus") else int(request["num_cpus"])
        actors = [actor_class.remote(engine_options, threads) for _ in range(count)]
        errors = ray.get([a.ready.remote() for a in actors])
        if all(errors):
            raise LipSyncError(errors[0])
        for error in errors:
            if error:
                log.warning("A Ray worker could not load the model and is left out: %s", error)
        idle = [a for a, e in zip(actors, errors) if not e]
        started(len(idle))
        queue = deque(jobs)
        while queue or running:
            while queue and idle:
                job, actor = queue.popleft(), idle.pop()
                running[actor.run.remote(job)] = (job, actor)
            [ref], _ = ray.wait(list(running), num_returns=1)
            job, actor = running.pop(ref)
            idle.append(actor)
            try:
                yield ray.get(ref)
            except ray.exceptions.RayError as err:
                yield JobResult.of(job, "failed", f"The Ray worker running it was lost ({type(err).__name__}).")
    except BaseException:
        # Ctrl-C: ask the jobs in flight to stop (Ray raises KeyboardInterrupt in the actor, so the writer
        # deletes its partial file), give them a moment, then end the actors.
        for ref in running:
            try:
                ray.cancel(ref)
            except Exception:
                pass
        if running:
            ray.wait(list(running), num_returns=len(running), timeout=10)
        raise
    finally:
        for actor in actors:
            try:
                ray.kill(actor)
            except Exception:
                pass
        if started_here:
            ray.shutdown()
