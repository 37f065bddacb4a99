"""A batch job (`janus_sdk.batch_job`) over Ray actors, each holding one pipeline.

    with RayWorkers(ModelSpec.of_checkpoint("deepseek-ai/Janus-Pro-1B"), count=4) as workers:
        report = run_job(job, workers, "out/")

The driver (this process) owns the folder and its manifest: workers only make PNGs, and the driver saves each
exactly as a local run does (`JobRun.save`: record first, then the whole file), in the local run's order, so
the folder, its manifest and a rerun's resuming are the same whichever ran it. The model the records name is
the one the first worker to load reports; a worker that loaded another (e.g. `auto` chose another dtype or
linear backend on its node) stops the job, so that its images are never recorded as another model's. A batch
whose worker dies goes back to the queue for another; its images are saved once, when a live worker returns
them.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import ray
from ray.exceptions import RayActorError

from janus_adapters.ray.cluster import gpus_in_cluster
from janus_sdk.batch_job import (
    DEFAULT_BATCH,
    BatchJob,
    JobImage,
    JobModel,
    JobProgress,
    JobReport,
    batches,
    describe_model,
    fitting_prompts,
    job_model,
    make_images,
    png_bytes,
)
from janus_sdk.errors import JanusError
from janus_sdk.pipeline.janus import JanusPipeline
from janus_sdk.prompt_file import BadLine

log = logging.getLogger(__name__)


class WorkersLostError(JanusError):
    """Every worker of a job died before its images were made."""


class WorkersDisagreeError(JanusError):
    """The workers of a job loaded different models (`job_model`)."""


@dataclass(frozen=True)
class Made:
    """What a worker returns for a batch: each image made with its PNG, and the lines the model refused."""

    pngs: list[tuple[JobImage, bytes]]
    refused: list[BadLine]


class PipelineWorker:
    """A Ray actor's state: one pipeline, loaded when the actor starts."""

    def __init__(self, load: Callable[[], JanusPipeline]) -> None:
        self.pipe = load()

    def ready(self) -> JobModel:
        """Answers once the pipeline is loaded: the model, as the job's records name it."""
        return job_model(self.pipe)

    def make(self, chunk: list[JobImage]) -> Made:
        """The PNGs of a batch of one settings (each its own seed's image), less the prompts the model
        refuses."""
        refused: list[BadLine] = []
        fitting = fitting_prompts(self.pipe, chunk, refused)
        pictures = make_images(self.pipe, fitting) if fitting else []
        return Made([(image, png_bytes(p)) for image, p in zip(fitting, pictures, strict=True)], refused)


class RayWorkers:
    """`count` actors, each loading a pipeline with `load` (one GPU each when the cluster has GPUs, else one
    CPU); used as a context manager, they are ended on exit. Connect to Ray first (`cluster.connect`)."""

    def __init__(self, load: Callable[[], JanusPipeline], count: int) -> None:
        if count < 1:
            raise JanusError(f"a job needs at least one worker, got {count}")
        actor = ray.remote(PipelineWorker).options(num_cpus=1, num_gpus=1 if gpus_in_cluster() else 0)
        self.actors: list[Any] = [actor.remote(load) for _ in range(count)]

    def __enter__(self) -> RayWorkers:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for actor in self.actors:
            ray.kill(actor)


def run_job(
    job: BatchJob,
    workers: RayWorkers,
    out: str | Path,
    *,
    max_batch: int | None = None,
    overwrite: bool = False,
    on_progress: JobProgress | None = None,
) -> JobReport:
    """`job.run(pipe, out, ...)` with the images made by `workers`: a batch of at most `max_batch` images at a
    time to each worker that has loaded its pipeline and is free."""
    in_flight: dict[Any, tuple[Any, int | None]] = {
        actor.ready.remote(): (actor, None) for actor in workers.actors
    }
    model = first_loaded(list(in_flight))
    job_run = job.start(out, model=model, overwrite=overwrite)
    chunks = [chunk for _, chunk in batches(job_run.todo, max_batch or DEFAULT_BATCH)]
    queue = deque(range(len(chunks)))
    returned: dict[int, Made] = {}
    saved = done = 0  # batches saved (in order), images saved
    idle: list[Any] = []
    while saved < len(chunks):
        while queue and idle:
            actor, batch = idle.pop(), queue.popleft()
            in_flight[actor.make.remote(chunks[batch])] = (actor, batch)
        if not in_flight:
            raise WorkersLostError(
                f"every Ray worker died; the images made are in {out}: run the same command to make the rest"
            )
        [ref], _ = ray.wait(list(in_flight), num_returns=1)
        actor, index = in_flight.pop(ref)
        try:
            made = ray.get(ref)
        except RayActorError as exc:
            retried = "" if index is None else f"; its batch of {len(chunks[index])} image(s) goes to another"
            log.warning("a Ray worker died%s: %s", retried, str(exc).splitlines()[0])
            queue.extendleft([] if index is None else [index])
            continue
        if index is None and made != model:
            raise WorkersDisagreeError(
                f"the Ray workers loaded different models ({describe_model(model)}; {describe_model(made)}); "
                "give --device, --dtype and --linear so that every node loads the same"
            )
        idle.append(actor)
        if index is not None:
            returned[index] = made
        while saved in returned:
            made = returned.pop(saved)
            for image, png in made.pngs:
                job_run.save(image, png)
            job_run.bad.extend(line for line in made.refused if line not in job_run.bad)
            done += len(chunks[saved])
            saved += 1
            if on_progress is not None:
                on_progress(done, len(job_run.todo))
    return job_run.report()


def first_loaded(ready: list[Any]) -> JobModel:
    """The model of the first worker to load its pipeline, waiting for it (`ready` holds each worker's
    `ready` call); WorkersLostError when every worker died loading."""
    while ready:
        [ref], ready = ray.wait(ready, num_returns=1)
        try:
            model: JobModel = ray.get(ref)
            return model
        except RayActorError:
            continue  # run_job's loop logs it, as it meets the same answer
    raise WorkersLostError("every Ray worker died loading the model; nothing was made")
