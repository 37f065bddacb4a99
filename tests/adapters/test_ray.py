"""Scale-out on Ray, on a local Ray on loopback (2 CPUs) with janus-tiny: a --prompts job over 2 actors makes
the local run's files and manifest, also when one actor is killed mid-job, and stops when its actors loaded
different models; `janus generate --ray` resumes like the local command and refuses a folder another model
made; an unreachable cluster is one line at once; `janus serve --ray` answers the real `openai`
client from 2 replicas. Skipped without the `ray` extra.

The jobs draw 64 x 64 images (small_pipeline's config, sent to the workers as a --config file): how the
images are shared out, resumed and recorded does not depend on their size, and each worker draws them 36
times faster."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'janus-sdk[ray]'")
pytest.importorskip("ray.serve", reason="the ray extra is not installed: pip install 'janus-sdk[ray]'")

import openai  # noqa: E402
import torch  # noqa: E402
from ray import serve  # noqa: E402

from janus_adapters.ray.batch import (  # noqa: E402
    PipelineWorker,
    RayWorkers,
    WorkersDisagreeError,
    run_job,
)
from janus_adapters.ray.cluster import connect  # noqa: E402
from janus_adapters.ray.loading import ModelSpec  # noqa: E402
from janus_adapters.ray.serving import deploy, shut_down  # noqa: E402
from janus_adapters.server import ServerSettings  # noqa: E402
from janus_sdk.batch_job import MANIFEST, BatchJob  # noqa: E402
from janus_sdk.cli.main import main  # noqa: E402
from janus_sdk.config.files import dump_config  # noqa: E402
from janus_sdk.pipeline.janus import JanusPipeline  # noqa: E402
from small_pipeline import fast_config  # noqa: E402

MODEL = str(Path(__file__).resolve().parents[1] / "fixtures" / "janus-tiny" / "checkpoint")
PROMPTS = "a red fox\na blue bird\na green tree\n"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray with 2 CPUs, and torch on one thread here and in every worker (the CPU images depend on
    the thread count; one thread keeps 2 workers on 2 cores quick)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    connect("local", num_cpus=2)
    try:
        yield
    finally:
        ray.shutdown()
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def prompts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("job") / "prompts.txt"
    path.write_text(PROMPTS, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A --config file: janus-tiny drawing 64 x 64 images."""
    path = tmp_path_factory.mktemp("config") / "small.yaml"
    path.write_text(dump_config(fast_config().model_dump(mode="json"), "yaml"), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def local_run(
    local_ray: None, prompts: Path, small: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, bytes]:
    """The files of the job run here without Ray: name -> bytes."""
    out = tmp_path_factory.mktemp("local")
    BatchJob.from_file(prompts, n=2).run(JanusPipeline.from_config(small), out)
    return files_in(out)


def files_in(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def models_recorded(folder: Path) -> list[dict[str, str]]:
    """The model of each record of the folder's manifest (none without one)."""
    manifest = folder / MANIFEST
    lines = manifest.read_text(encoding="utf-8").splitlines() if manifest.exists() else []
    return [json.loads(line)["model"] for line in lines]


@pytest.mark.slow
def test_a_job_on_two_workers_makes_the_local_runs_files_and_manifest(
    local_run: dict[str, bytes], prompts: Path, small: Path, tmp_path: Path
) -> None:
    with RayWorkers(ModelSpec.of_checkpoint(MODEL, config=str(small)), count=2) as workers:
        report = run_job(BatchJob.from_file(prompts, n=2), workers, tmp_path, max_batch=2)
    assert len(report.made) == 6 and not report.bad
    assert files_in(tmp_path) == local_run  # the manifest too, byte for byte: the model each record names too
    model = models_recorded(tmp_path)[0]
    assert {key: model[key] for key in ("checkpoint", "dtype", "device")} == {
        "checkpoint": "checkpoint",
        "dtype": "float32",
        "device": "cpu",
    }


@pytest.mark.slow
def test_workers_that_loaded_different_models_stop_the_job(
    local_ray: None, prompts: Path, small: Path, tmp_path: Path
) -> None:
    with RayWorkers(ModelSpec.of_checkpoint(MODEL, config=str(small)), count=1) as workers:
        bfloat16 = ModelSpec.of_checkpoint(MODEL, config=str(small), dtype="bfloat16")
        workers.actors.append(ray.remote(PipelineWorker).options(num_cpus=1).remote(bfloat16))
        ray.get([actor.ready.remote() for actor in workers.actors])  # both loaded before the job starts
        with pytest.raises(WorkersDisagreeError) as stopped:
            run_job(BatchJob.from_file(prompts, n=2), workers, tmp_path, max_batch=1)
    message = str(stopped.value)
    assert message.startswith("the Ray workers loaded different models (")
    assert "dtype=float32" in message and "dtype=bfloat16" in message
    assert message.endswith("give --device, --dtype and --linear so that every node loads the same")
    assert len({json.dumps(model) for model in models_recorded(tmp_path)}) <= 1  # one model's images only


@pytest.mark.slow
def test_a_killed_worker_has_its_images_made_by_another_and_none_twice(
    local_run: dict[str, bytes],
    prompts: Path,
    small: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with RayWorkers(ModelSpec.of_checkpoint(MODEL, config=str(small)), count=2) as workers:
        # Both loaded before the job starts (a small image takes less than a load): once the first batch is
        # saved, each worker has a batch in flight or is about to be given one.
        ray.get([actor.ready.remote() for actor in workers.actors])

        def kill_a_worker_after_the_first_batch(done: float, total: int) -> None:
            if done == 1:
                ray.kill(workers.actors[0])

        with caplog.at_level(logging.WARNING, logger="janus_adapters.ray.batch"):
            report = run_job(
                BatchJob.from_file(prompts, n=2),
                workers,
                tmp_path,
                max_batch=1,
                on_progress=kill_a_worker_after_the_first_batch,
            )
    assert "a Ray worker died; its batch of 1 image(s) goes to another" in caplog.text
    assert len(report.made) == 6 and not report.bad
    records = (tmp_path / MANIFEST).read_text(encoding="utf-8").splitlines()
    assert len(records) == 6  # each image recorded once
    assert files_in(tmp_path) == local_run


@pytest.mark.slow
def test_janus_generate_ray_writes_the_job_and_a_rerun_resumes(
    local_run: dict[str, bytes],
    prompts: Path,
    small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    command = ["generate", "--model", MODEL, "--config", str(small), "--prompts", str(prompts), "-n", "2"]
    command += ["--out", str(tmp_path), "--ray", "--workers", "2", "--no-progress"]
    assert main(command) == 0
    assert files_in(tmp_path) == local_run
    assert "6 made, 0 already done" in capsys.readouterr().err
    assert main(command) == 0
    assert "0 made, 6 already done" in capsys.readouterr().err
    assert files_in(tmp_path) == local_run
    assert main([*command, "--dtype", "bfloat16"]) == 1  # another model: refused, nothing made
    error = capsys.readouterr().err
    assert error.startswith(
        f"error: {tmp_path / '00001-00.png'} and 5 other image(s) of the job were made by "
    )
    assert "(checkpoint=checkpoint dtype=bfloat16 device=cpu" in error and "--overwrite" in error
    assert files_in(tmp_path) == local_run


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.mark.parametrize("how", ["flag", "environment"])
def test_an_unreachable_cluster_is_one_line_at_once(
    how: str,
    prompts: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    address = f"127.0.0.1:{closed_port()}"
    command = [
        "generate",
        "--model",
        MODEL,
        "--prompts",
        str(prompts),
        "--out",
        str(tmp_path / "out"),
        "--ray",
    ]
    if how == "flag":
        command += ["--ray-address", address]
    else:
        monkeypatch.setenv("RAY_ADDRESS", address)
    assert main(command) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith(f"error: cannot reach the Ray cluster at '{address}' (connection refused)")
    assert "\n" not in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("options", "complaint"),
    [
        (["--ray"], "--ray runs a --prompts FILE job"),
        (["--prompts", "p.txt", "--workers", "2"], "--workers and --ray-address go with --ray"),
        (["--prompts", "p.txt", "--ray", "--workers", "0"], "--workers must be at least 1, got 0"),
    ],
)
def test_ray_options_out_of_place_are_usage_errors(
    options: list[str], complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["generate", "--model", MODEL, *options])
    assert exit_.value.code == 2
    assert complaint in capsys.readouterr().err


@pytest.mark.slow
def test_serve_on_two_replicas_answers_the_openai_client(local_ray: None) -> None:
    url = deploy(
        ModelSpec.of_checkpoint(MODEL),
        ServerSettings(model_name="janus-tiny"),
        replicas=2,
        host="127.0.0.1",
        port=closed_port(),
    )
    try:
        deployment = serve.status().applications["janus"].deployments["janus"]
        # Ray types the keys as its ReplicaState enum; serve.status() hands back their str values
        replica_states = cast("dict[str, int]", deployment.replica_states)
        assert replica_states.get("RUNNING") == 2
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        answer = client.chat.completions.create(
            model="janus-tiny", messages=[{"role": "user", "content": "hello"}], max_tokens=4, seed=0
        )
        assert answer.choices[0].message.content
        assert answer.model == "janus-tiny"
    finally:
        shut_down()
