"""The resumable batch job over a prompts file: `BatchJob` against a stand-in pipeline (what it plans, writes,
records, keeps and refuses), then `janus generate --prompts` end to end on janus-tiny."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest
import torch
from PIL import Image

from janus_sdk import InputError, JanusPipeline
from janus_sdk.batch_job import MANIFEST, BatchJob, line_seed
from janus_sdk.cli.main import main
from janus_sdk.config import ImageGenerationConfig
from janus_sdk.config.files import dump_config
from janus_sdk.pipeline.decoding import Progress, ProgressCallback
from small_pipeline import fast_config

MODEL = str(Path(__file__).parent / "fixtures" / "janus-tiny" / "checkpoint")


class StandIn:
    """A pipeline whose image is a colour computed from its prompt, seed and settings; records each call, and
    can be interrupted (as by Ctrl-C) in a given call. Its model is the checkpoint `checkpoint` in float32 on
    the CPU."""

    def __init__(self, interrupt_call: int | None = None, checkpoint: str = "stand-in") -> None:
        self.calls: list[tuple[list[str], list[int], dict[str, Any]]] = []
        self.interrupt_call = interrupt_call
        self.config = SimpleNamespace(image_generation=ImageGenerationConfig(), checkpoint=checkpoint)
        self.dtype, self.device, self.linear = torch.float32, torch.device("cpu"), None

    def image_prompt_ids(self, prompt: str) -> list[int]:
        if len(prompt) > 60:
            raise InputError(f"the prompt is {len(prompt)} tokens, beyond the model's context")
        return [1, 2]

    def generate_images(
        self,
        prompts: list[str],
        *,
        n: int,
        seed: list[int],
        on_step: ProgressCallback | None,
        **settings: Any,
    ) -> list[Image.Image]:
        assert n == 1
        self.calls.append((prompts, seed, settings))
        if len(self.calls) == self.interrupt_call:
            raise KeyboardInterrupt
        for step in (1, 2):
            if on_step is not None:
                on_step(Progress(step, 2, len(prompts), 1.0))
        return [colour(p, s, settings) for p, s in zip(prompts, seed, strict=True)]

    def run(self, job: BatchJob, out: Path, **options: Any) -> Any:
        return job.run(cast(JanusPipeline, self), out, **options)


def stand_in_model(checkpoint: str = "stand-in") -> dict[str, str]:
    return {"checkpoint": checkpoint, "dtype": "float32", "device": "cpu", "linear": "torch"}


def colour(prompt: str, seed: int, settings: dict[str, Any]) -> Image.Image:
    digest = hashlib.sha256(json.dumps([prompt, seed, settings], sort_keys=True).encode()).digest()
    return Image.new("RGB", (4, 4), (digest[0], digest[1], digest[2]))


def records(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / MANIFEST).read_text().splitlines()]


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_a_text_file_makes_one_image_a_line_with_a_record_each(tmp_path: Path) -> None:
    prompts = write(tmp_path / "prompts.txt", "a cat", "", "  a dog  ", "a red fox")
    pipe, out = StandIn(), tmp_path / "out"
    progress: list[tuple[float, int]] = []
    report = pipe.run(
        BatchJob.from_file(prompts, seed=7),
        out,
        max_batch=2,
        on_progress=lambda d, t: progress.append((d, t)),
    )
    assert [p.name for p in report.made] == ["00001-00.png", "00003-00.png", "00004-00.png"]
    assert report.kept == [] and report.bad == []
    assert [len(prompts) for prompts, _, _ in pipe.calls] == [2, 1]  # batches of max_batch
    assert progress[-1] == (3, 3) and progress[0] == (1, 3)  # one bar over the whole job
    seeds = [line_seed(7, line) for line in (1, 3, 4)]
    assert [r["seed"] for r in records(out)] == seeds
    assert [r["prompt"] for r in records(out)] == ["a cat", "a dog", "a red fox"]
    for record in records(out):
        data = (out / record["file"]).read_bytes()
        assert record["sha256"] == hashlib.sha256(data).hexdigest()
        assert record["settings"] == {}
        assert record["model"] == stand_in_model()
        # each image is its own one-prompt call's: here, a function of its prompt, seed and settings
        assert np.array_equal(
            np.asarray(Image.open(out / record["file"])),
            np.asarray(colour(record["prompt"], record["seed"], {})),
        )


def test_jsonl_lines_set_their_seed_n_and_settings(tmp_path: Path) -> None:
    prompts = write(
        tmp_path / "prompts.jsonl",
        json.dumps({"prompt": "a cat", "seed": 5, "n": 2}),
        json.dumps({"prompt": "a dog", "cfg_weight": 3}),
        json.dumps({"prompt": "a fox"}),
    )
    pipe, out = StandIn(), tmp_path / "out"
    report = pipe.run(BatchJob.from_file(prompts, settings={"temperature": 0.9, "top_k": None}), out)
    assert report.bad == [] and len(report.made) == 4
    by_file = {r["file"]: r for r in records(out)}
    assert [by_file[f"00001-0{k}.png"]["seed"] for k in (0, 1)] == [5, 6]
    assert by_file["00002-00.png"]["settings"] == {"temperature": 0.9, "cfg_weight": 3}
    assert by_file["00003-00.png"]["settings"] == {"temperature": 0.9}
    # images of other settings never share a batch
    assert sorted((prompts, settings) for prompts, _, settings in pipe.calls) == [
        (["a cat", "a cat", "a fox"], {"temperature": 0.9}),
        (["a dog"], {"temperature": 0.9, "cfg_weight": 3}),
    ]


def test_a_rerun_keeps_the_finished_images_and_makes_the_rest(tmp_path: Path) -> None:
    """Ctrl-C in the second batch: the first batch stays; the rerun makes only what is missing."""
    prompts = write(tmp_path / "prompts.txt", "one", "two", "three", "four", "five")
    job, out = BatchJob.from_file(prompts), tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        StandIn(interrupt_call=2).run(job, out, max_batch=2)
    first = {p.name: p.read_bytes() for p in out.glob("*.png")}
    assert sorted(first) == ["00001-00.png", "00002-00.png"]
    (out / "00002-00.png").unlink()  # lost, e.g. deleted by hand: made again
    rerun = StandIn()
    report = rerun.run(job, out, max_batch=2)
    assert [prompts for prompts, _, _ in rerun.calls] == [["two", "three"], ["four", "five"]]
    assert [p.name for p in report.kept] == ["00001-00.png"]
    assert (out / "00001-00.png").read_bytes() == first["00001-00.png"]
    assert StandIn().run(job, out).made == []  # and a third run has nothing left to do


def test_bad_lines_are_named_and_the_others_still_run(tmp_path: Path) -> None:
    prompts = write(
        tmp_path / "prompts.jsonl",
        json.dumps({"prompt": "a cat"}),
        "{not json",
        json.dumps({"prompt": "a dog", "colour": "red"}),
        json.dumps({"prompt": "a fox", "cfg_weight": -1}),
        json.dumps({"prompt": "an owl " * 10}),
        json.dumps({"prompt": "", "seed": 1}),
        json.dumps({"prompt": "a cow", "seed": -1}),
        json.dumps(["a list"]),
        json.dumps({"prompt": "a hen", "n": 2}),
    )
    report = StandIn().run(BatchJob.from_file(prompts), tmp_path / "out")
    assert [p.name for p in report.made] == ["00001-00.png", "00009-00.png", "00009-01.png"]
    reasons = {line.number: line.reason for line in report.bad}
    assert sorted(reasons) == [2, 3, 4, 5, 6, 7, 8]
    assert "not a JSON object" in reasons[2]
    assert "unknown key(s) colour" in reasons[3]
    assert "cfg_weight" in reasons[4]
    assert "beyond the model's context" in reasons[5]
    assert '"prompt" must be a non-empty string' in reasons[6]
    assert '"seed" must be an integer' in reasons[7]
    assert "got a list" in reasons[8]
    assert str(report.bad[0]).startswith("line 2: ")


@pytest.mark.parametrize("text", ["", "\n  \n\n"])
def test_an_empty_prompts_file_is_an_error(tmp_path: Path, text: str) -> None:
    (tmp_path / "p.txt").write_text(text)
    with pytest.raises(InputError, match="holds no prompt"):
        BatchJob.from_file(tmp_path / "p.txt")


def test_job_wide_mistakes_are_errors_before_any_line(tmp_path: Path) -> None:
    prompts = write(tmp_path / "p.txt", "a cat")
    with pytest.raises(InputError, match="cfg_weight"):
        BatchJob.from_file(prompts, settings={"cfg_weight": -2})
    with pytest.raises(InputError, match="unknown job setting"):
        BatchJob.from_file(prompts, settings={"max_batch": 2})
    with pytest.raises(InputError, match="cannot read the prompts file"):
        BatchJob.from_file(tmp_path / "missing.txt")


def test_files_the_manifest_does_not_account_for_are_kept_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    StandIn().run(BatchJob.from_file(write(tmp_path / "p.txt", "a cat", "a dog")), out)
    (out / "00001-00.png").write_bytes(b"edited by hand")
    changed = BatchJob.from_file(write(tmp_path / "p.txt", "a cat", "a wolf"))  # line 2 now asks another
    report = StandIn().run(changed, out)
    assert report.made == []
    assert [str(line) for line in report.bad] == [
        f"line 1: {out / '00001-00.png'} exists but does not hold the image its manifest record names; pass "
        "--overwrite to make it again, or choose another output folder",
        f"line 2: {out / '00002-00.png'} exists but was made from another prompt, seed or settings (see the "
        "manifest); pass --overwrite to make it again, or choose another output folder",
    ]
    assert (out / "00001-00.png").read_bytes() == b"edited by hand"
    report = StandIn().run(changed, out, overwrite=True)
    assert [p.name for p in report.made] == ["00001-00.png", "00002-00.png"] and report.bad == []
    assert records(out)[-1]["prompt"] == "a wolf"


def test_images_of_another_model_refuse_the_job_unless_overwrite(tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = BatchJob.from_file(write(tmp_path / "p.txt", "a cat", "a dog", "a fox"))
    StandIn().run(job, out)
    before = files_and_times(out)
    another = StandIn(checkpoint="another")
    with pytest.raises(InputError) as refused:
        another.run(job, out)
    assert str(refused.value) == (
        f"{out / '00001-00.png'} and 2 other image(s) of the job were made by another model "
        "(checkpoint=stand-in dtype=float32 device=cpu linear=torch) than the one loaded now "
        "(checkpoint=another dtype=float32 device=cpu linear=torch); pass --overwrite to make the job's "
        "images again with this one, or choose another output folder"
    )
    assert another.calls == [] and files_and_times(out) == before  # nothing made, nothing overwritten
    (out / "00002-00.png").unlink()  # an image another model made but whose file is gone is simply made
    with pytest.raises(InputError, match="and 1 other image"):
        another.run(job, out)
    report = another.run(job, out, overwrite=True)
    assert [p.name for p in report.made] == ["00001-00.png", "00002-00.png", "00003-00.png"]
    assert [r["model"] for r in records(out)[-3:]] == [stand_in_model("another")] * 3
    assert StandIn(checkpoint="another").run(job, out).made == []  # its own images now: resumed


def test_a_manifest_whose_records_name_no_model_still_resumes(tmp_path: Path) -> None:
    """Records written before they named their model are taken as the current model's."""
    out = tmp_path / "out"
    job = BatchJob.from_file(write(tmp_path / "p.txt", "a cat", "a dog"))
    StandIn().run(job, out)
    old = [{k: v for k, v in record.items() if k != "model"} for record in records(out)]
    (out / MANIFEST).write_text("".join(json.dumps(record) + "\n" for record in old))
    (out / "00002-00.png").unlink()
    before = files_and_times(out)
    another = StandIn(checkpoint="another")
    report = another.run(job, out)
    assert [p.name for p in report.kept] == ["00001-00.png"] and report.bad == []
    assert [p.name for p in report.made] == ["00002-00.png"]
    assert files_and_times(out)["00001-00.png"] == before["00001-00.png"]
    assert records(out)[-1]["model"] == stand_in_model("another")


def files_and_times(out: Path) -> dict[str, tuple[bytes, int]]:
    """Each file of the folder: its bytes and its modification time (ns)."""
    return {path.name: (path.read_bytes(), path.stat().st_mtime_ns) for path in sorted(out.iterdir())}


def test_a_record_cut_short_by_a_crash_is_made_again(tmp_path: Path) -> None:
    out = tmp_path / "out"
    job = BatchJob.from_file(write(tmp_path / "p.txt", "a cat", "a dog"))
    StandIn().run(job, out)
    text = (out / MANIFEST).read_text()
    (out / MANIFEST).write_text(text[: text.rindex("\n", 0, -1) + 20])  # the second record half written
    (out / "00002-00.png").unlink()
    report = StandIn().run(job, out)
    assert [p.name for p in report.made] == ["00002-00.png"]
    assert [r["file"] for r in records_skipping_broken(out)] == ["00001-00.png", "00002-00.png"]


def records_skipping_broken(out: Path) -> list[dict[str, Any]]:
    found = []
    for line in (out / MANIFEST).read_text().splitlines():
        try:
            found.append(json.loads(line))
        except ValueError:
            continue
    return found


def test_the_cli_runs_a_prompts_file_resumes_and_lists_bad_lines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """janus-tiny end to end: two prompts of different lengths in one batch, a bad line, then a rerun."""
    prompts = write(
        tmp_path / "prompts.jsonl",
        json.dumps({"prompt": "a cat"}),
        json.dumps({"prompt": "a lighthouse on a cliff at dusk, oil painting", "seed": 3}),
        json.dumps({"prompt": "a dog", "cfg_weight": "strong"}),
    )
    out = tmp_path / "out"
    command = [
        "generate",
        "--model",
        MODEL,
        "--device",
        "cpu",
        "--dtype",
        "float32",
        "--prompts",
        str(prompts),
    ]
    command += ["--out", str(out), "--seed", "11", "--no-progress"]
    assert main(command) == 1
    captured = capsys.readouterr()
    assert captured.out.split() == [str(out / "00001-00.png"), str(out / "00002-00.png")]
    assert f"{prompts}: line 3: " in captured.err and "cfg_weight" in captured.err
    made = records(out)
    assert [r["seed"] for r in made] == [line_seed(11, 1), 3]
    pipe = JanusPipeline.from_pretrained(MODEL, device="cpu", dtype="float32")
    for record in made:
        alone = pipe.generate_images(record["prompt"], n=1, seed=record["seed"], **record["settings"])[0]
        assert np.array_equal(np.asarray(Image.open(out / record["file"])), np.asarray(alone))
    assert main([*command, "--json"]) == 1  # the bad line is still bad; the rest is done
    summary = json.loads(capsys.readouterr().out)
    assert summary["made"] == [] and len(summary["kept"]) == 2
    assert summary["bad"][0]["line"] == 3


def test_the_cli_refuses_a_folder_another_model_made_and_overwrite_makes_it_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """janus-tiny (64 x 64 images, a --config file) and the same checkpoint in bfloat16: another model."""
    config = tmp_path / "small.yaml"
    config.write_text(dump_config(fast_config().model_dump(mode="json"), "yaml"), encoding="utf-8")
    out = tmp_path / "out"
    command = ["generate", "--model", MODEL, "--config", str(config), "--linear", "torch", "--no-progress"]
    command += ["--prompts", str(write(tmp_path / "p.txt", "a cat")), "--out", str(out)]
    assert main(command) == 0
    [record] = records(out)
    float32 = {"checkpoint": "checkpoint", "dtype": "float32", "device": "cpu", "linear": "torch"}
    assert record["model"] == float32
    before = files_and_times(out)
    capsys.readouterr()
    assert main(command) == 0  # the same model: kept untouched
    assert "0 made, 1 already done" in capsys.readouterr().err
    assert files_and_times(out) == before
    assert main([*command, "--dtype", "bfloat16"]) == 1
    assert capsys.readouterr().err == (
        f"error: {out / '00001-00.png'} was made by another model (checkpoint=checkpoint dtype=float32 "
        "device=cpu linear=torch) than the one loaded now (checkpoint=checkpoint dtype=bfloat16 device=cpu "
        "linear=torch); pass --overwrite to make the job's images again with this one, or choose another "
        "output folder\n"
    )
    assert files_and_times(out) == before
    assert main([*command, "--dtype", "bfloat16", "--overwrite"]) == 0
    assert "1 made, 0 already done" in capsys.readouterr().err
    assert [r["model"]["dtype"] for r in records(out)] == ["float32", "bfloat16"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["a cat"], "not both"),
        ([], None),
        (["--grid"], "--grid is for one prompt's images"),
    ],
)
def test_usage_errors_of_a_prompts_job_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str | None
) -> None:
    prompts = write(tmp_path / "p.txt", "a cat")
    base = ["generate", "--model", "/no/such/model"]
    args = [*base, "--prompts", str(prompts), *extra] if message else base
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    assert (message or "give a PROMPT, or --prompts FILE") in capsys.readouterr().err


def test_an_empty_prompts_file_fails_before_the_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.txt").write_text("")
    assert main(["generate", "--model", "/no/such/model", "--prompts", str(tmp_path / "p.txt")]) == 1
    assert "holds no prompt" in capsys.readouterr().err
