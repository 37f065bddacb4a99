"""A resumable batch job: the images of a prompts file (`janus_sdk.prompt_file`), written into one folder with
a manifest.jsonl recording each image's file, line, prompt, seed, settings, model and sha256.

    job = BatchJob.from_file("prompts.jsonl", seed=0)      # read and checked, no model needed
    report = job.run(pipe, "out/")                          # again with the same folder: resumes

Every image has a seed of its own, so it is the image `generate_images(prompt, n=1, seed=seed, **settings)`
makes, however the job batched it. A line's images take the seeds first, first + 1, ..., where first is the
line's "seed" or, when it gives none, a hash of the job's seed and the line number (recorded either way).

A rerun with the same folder keeps every image whose file holds the bytes its record names, untouched, and
makes the others. Each record is appended to the manifest (and flushed to disk) before its file is written
whole (`write_atomic`), so Ctrl-C or a crash loses at most the batch in flight and leaves no file without a
record. A file the manifest does not account for is never replaced without `overwrite`.

Each record names the model that made its image (`job_model`: the checkpoint's name and what changes its
pixels). Images another model made are not done: without `overwrite` the whole run is refused before any work,
so that a folder never mixes models unawares. A record that names no model (written before records named
one) is taken as the current model's, so that such folders still resume.
"""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from janus_sdk.atomic_write import write_atomic
from janus_sdk.checkpoint.names import checkpoint_name
from janus_sdk.config import ImageGenerationConfig
from janus_sdk.config.generation import MAX_SEED
from janus_sdk.errors import InputError
from janus_sdk.pipeline.decoding import Progress, ProgressCallback
from janus_sdk.pipeline.janus import JanusPipeline, merge_settings
from janus_sdk.prompt_file import SETTING_KEYS, BadLine, read_prompt_file

MANIFEST = "manifest.jsonl"
DEFAULT_BATCH = 4
"""Images generated together when neither `run` nor the pipeline's config sets max_batch."""

JobModel = dict[str, str | None]
"""The model that makes a job's images, as its manifest records name it (`job_model`)."""
JobProgress = Callable[[float, int], object]
"""Told how far the job is: images done (counting the batch in flight's share), images it makes in all."""


@dataclass(frozen=True)
class JobImage:
    """One image of the job: which line asked for it, what makes it, and its file in the job's folder."""

    line: int
    index: int  # among the line's images
    prompt: str
    seed: int
    settings: dict[str, Any]

    @property
    def file(self) -> str:
        return f"{self.line:05d}-{self.index:02d}.png"

    def record(self, model: JobModel, sha256: str) -> dict[str, Any]:
        """The manifest's line for this image, made by `model`, its PNG's bytes hashing to `sha256`."""
        fields = ("file", "line", "prompt", "seed", "settings")
        return {name: getattr(self, name) for name in fields} | {"model": model, "sha256": sha256}

    def made_by(self, record: dict[str, Any]) -> bool:
        """Whether a manifest record is of this image: the same prompt, seed and settings."""
        mine = self.record({}, "")
        return all(_canonical(record.get(k)) == _canonical(mine[k]) for k in ("prompt", "seed", "settings"))


@dataclass(frozen=True)
class JobReport:
    """What a run did: the files it wrote, the files it found done and kept, the lines it could not make."""

    made: list[Path]
    kept: list[Path]
    bad: list[BadLine]
    manifest: Path


@dataclass(frozen=True)
class BatchJob:
    """The images a prompts file asks for, planned, and the lines that ask for none (bad)."""

    images: list[JobImage]
    bad: list[BadLine]

    @classmethod
    def from_file(
        cls,
        path: str | Path,
        *,
        seed: int = 0,
        n: int | None = None,
        settings: dict[str, Any] | None = None,
    ) -> BatchJob:
        """Read a prompts file and plan its images: `n` per line that gives none (default 1), `settings`
        (ImageGenerationConfig fields among SETTING_KEYS, None = unset) under each line's own.

        InputError when a job-wide argument is wrong or the file cannot be read or is empty; a bad line (its
        syntax, its settings) is listed in `bad` and the others are planned."""
        given = {key: value for key, value in (settings or {}).items() if value is not None}
        unknown = sorted(set(given) - set(SETTING_KEYS))
        if unknown:
            raise InputError(
                f"unknown job setting(s) {', '.join(unknown)}; allowed: {', '.join(SETTING_KEYS)}"
            )
        _check(given | {"n": n or 1})
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise InputError(f"the job's seed must be an integer in [0, 2**64), got {seed!r}")
        lines, bad = read_prompt_file(Path(path))
        images = []
        for line in lines:
            line_settings = given | line.settings
            count = line.n if line.n is not None else n or 1
            try:
                _check(line_settings | {"n": count})
            except InputError as exc:
                bad.append(BadLine(line.number, _one_line(exc)))
                continue
            first = line.seed if line.seed is not None else line_seed(seed, line.number)
            images += [
                JobImage(line.number, k, line.prompt, (first + k) % (MAX_SEED + 1), line_settings)
                for k in range(count)
            ]
        return cls(images, bad)

    def run(
        self,
        pipe: JanusPipeline,
        out: str | Path,
        *,
        max_batch: int | None = None,
        overwrite: bool = False,
        on_progress: JobProgress | None = None,
    ) -> JobReport:
        """Make the images not already in `out`, at most `max_batch` per batch (images of different
        settings never share one); a file in the way is replaced only with `overwrite`."""
        job_run = self.start(out, model=job_model(pipe), overwrite=overwrite)
        todo = fitting_prompts(pipe, job_run.todo, job_run.bad)
        batch = max_batch or pipe.config.image_generation.max_batch or DEFAULT_BATCH
        for first, chunk in batches(todo, batch):
            pictures = make_images(pipe, chunk, on_step=_share(on_progress, first, len(chunk), len(todo)))
            for image, picture in zip(chunk, pictures, strict=True):
                job_run.save(image, png_bytes(picture))
        return job_run.report()

    def start(self, out: str | Path, *, model: JobModel, overwrite: bool = False) -> JobRun:
        """A run of the job in `out` by `model` (`job_model`): its manifest read, the images done there kept,
        the rest to make; an image whose file is in the way is refused unless `overwrite`, and InputError when
        another model made any of them. What `run` does before the model works, for a runner that makes the
        images elsewhere (e.g. on a Ray cluster) and saves them with `save`."""
        folder = Path(out)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"{folder} exists and is not a directory; choose another output folder")
        job_run = JobRun(Manifest(folder / MANIFEST), model, overwrite, bad=list(self.bad))
        by_another: list[tuple[Path, dict[str, Any]]] = []
        for image in self.images:
            record = job_run.manifest.records.get(image.file)
            path = folder / image.file
            if (
                record is not None
                and image.made_by(record)
                and made_with(record, model)
                and _holds(path, record)
            ):
                job_run.kept.append(path)
            elif overwrite or not os.path.lexists(path):
                job_run.todo.append(image)
            elif record is not None and not made_with(record, model):
                by_another.append((path, record))
            else:
                job_run.bad.append(BadLine(image.line, f"{path} {_why_not_ours(image, record)}"))
        if by_another:
            raise InputError(_made_by_another_model(by_another, model))
        return job_run


@dataclass
class JobRun:
    """One run of a job in a folder: the images it has to make, and what it made, kept and refused so far."""

    manifest: Manifest
    model: JobModel
    overwrite: bool
    todo: list[JobImage] = field(default_factory=list)
    made: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    bad: list[BadLine] = field(default_factory=list)

    def save(self, image: JobImage, png: bytes) -> None:
        """Record `image` as the PNG `png` and write it in the job's folder; a file that appeared there
        meanwhile is left as it is and the image listed as bad."""
        path = self.manifest.path.parent / image.file
        try:
            record = image.record(self.model, hashlib.sha256(png).hexdigest())
            self.made.append(self.manifest.save(path, record, png, overwrite=self.overwrite))
        except FileExistsError:
            self.bad.append(BadLine(image.line, f"{path} appeared while the job ran; it was left as it is"))

    def report(self) -> JobReport:
        return JobReport(self.made, self.kept, sorted(self.bad, key=lambda b: b.number), self.manifest.path)


class Manifest:
    """A job folder's manifest.jsonl: one JSON record a line, the last record of a file its current one."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[str, dict[str, Any]] = {}
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read the job's manifest {path}: {exc}") from None
        for line in text.splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a record cut short by a crash: its image is made again
                continue
            if isinstance(record, dict) and isinstance(record.get("file"), str):
                self.records[record["file"]] = record

    def save(self, path: Path, record: dict[str, Any], png: bytes, *, overwrite: bool) -> Path:
        """Append the record of the PNG `png`, then write it at `path` whole."""
        self.append(record)
        write_atomic(path, lambda handle: handle.write(png), overwrite=overwrite)
        return path

    def append(self, record: dict[str, Any]) -> None:
        """Add a record, flushed to disk; after a line a crash cut short, on a line of its own."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n"
        with self.path.open("a+b") as handle:  # reads anywhere, writes at the end
            size = handle.seek(0, os.SEEK_END)
            if size:
                handle.seek(size - 1)
                line = line if handle.read(1) == b"\n" else b"\n" + line
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        self.records[record["file"]] = record


def job_model(pipe: JanusPipeline) -> JobModel:
    """The model as a manifest records it: the checkpoint, named as the server names it (`checkpoint_name`:
    the same model read from another folder or another node's Hub cache has the same name), and what changes
    its images: the dtype, the device type and the linear backend (int8 and int4 quantize the weights)."""
    source = pipe.config.checkpoint
    return {
        "checkpoint": None if source is None else checkpoint_name(source),
        "dtype": str(pipe.dtype).removeprefix("torch."),
        "device": pipe.device.type,
        "linear": "torch" if pipe.linear is None else pipe.linear.name,
    }


def made_with(record: dict[str, Any], model: JobModel) -> bool:
    """Whether a manifest record's image was made by `model`; a record that names no model (written before
    records named one) is taken as made by it."""
    return "model" not in record or _canonical(record["model"]) == _canonical(model)


def describe_model(model: object) -> str:
    """A recorded model on one line: key=value ..."""
    if not isinstance(model, dict):
        return json.dumps(model)
    return " ".join(f"{key}={value}" for key, value in model.items())


def line_seed(job_seed: int, line: int) -> int:
    """The first seed of a line that gives none: a hash of the job's seed and the line number, so that lines'
    seeds are unrelated (job_seed + line would give a line's second image the next line's first seed)."""
    digest = hashlib.sha256(f"janus-batch-job:{job_seed}:{line}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def make_images(
    pipe: JanusPipeline, chunk: list[JobImage], on_step: ProgressCallback | None = None
) -> list[Image.Image]:
    """The images of a batch of one settings: each the image its own seed makes."""
    return pipe.generate_images(
        [image.prompt for image in chunk],
        n=1,
        seed=[image.seed for image in chunk],
        on_step=on_step,
        **chunk[0].settings,
    )


def png_bytes(picture: Image.Image) -> bytes:
    """The PNG file of an image, as the manifest hashes it."""
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def _check(settings: dict[str, Any]) -> None:
    merge_settings(ImageGenerationConfig(), settings, ImageGenerationConfig)


def _one_line(error: Exception) -> str:
    """An error's message on one line, for the list of bad lines."""
    return " ".join(part.strip() for part in str(error).splitlines())


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True)


def _holds(path: Path, record: dict[str, Any]) -> bool:
    """Whether the file at `path` has the bytes `record` names."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == record.get("sha256")
    except OSError:
        return False


def _why_not_ours(image: JobImage, record: dict[str, Any] | None) -> str:
    if record is None:
        why = "is not in the job's manifest"
    elif not image.made_by(record):
        why = "was made from another prompt, seed or settings (see the manifest)"
    else:
        why = "does not hold the image its manifest record names"
    return f"exists but {why}; pass --overwrite to make it again, or choose another output folder"


def _made_by_another_model(found: list[tuple[Path, dict[str, Any]]], model: JobModel) -> str:
    path, record = found[0]
    files = f"{path} and {len(found) - 1} other image(s) of the job were" if len(found) > 1 else f"{path} was"
    return (
        f"{files} made by another model ({describe_model(record['model'])}) than the one loaded now "
        f"({describe_model(model)}); pass --overwrite to make the job's images again with this one, or "
        "choose another output folder"
    )


def fitting_prompts(pipe: JanusPipeline, images: list[JobImage], bad: list[BadLine]) -> list[JobImage]:
    """The images whose prompts the model takes; one BadLine per line whose prompt it does not."""
    refusals: dict[str, str | None] = {}
    for image in images:
        if image.prompt not in refusals:
            try:
                pipe.image_prompt_ids(image.prompt)
                refusals[image.prompt] = None
            except InputError as exc:
                refusals[image.prompt] = _one_line(exc)
    refused = {image.line: refusals[image.prompt] for image in images if refusals[image.prompt] is not None}
    bad += [BadLine(line, str(reason)) for line, reason in refused.items()]
    return [image for image in images if image.line not in refused]


def batches(images: list[JobImage], size: int) -> list[tuple[int, list[JobImage]]]:
    """(images before it, batch) for batches of at most `size` images of one settings, in order of first
    appearance."""
    groups: dict[str, list[JobImage]] = {}
    for image in images:
        groups.setdefault(_canonical(image.settings), []).append(image)
    chunks = [group[i : i + size] for group in groups.values() for i in range(0, len(group), size)]
    starts = itertools.accumulate((len(chunk) for chunk in chunks), initial=0)  # one more: the total
    return list(zip(starts, chunks, strict=False))


def _share(on_progress: JobProgress | None, done: int, count: int, total: int) -> ProgressCallback | None:
    """The pipeline's on_step for a batch of `count` images after `done` others: the job's progress."""
    if on_progress is None:
        return None

    def on_step(progress: Progress) -> None:
        on_progress(done + count * progress.step / progress.total, total)

    return on_step
