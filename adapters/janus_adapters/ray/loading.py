"""What a Ray worker or replica loads: the command's model options, sent to it and loaded there once, so that
every process holds the same pipeline as a local run would (the checkpoint and any --config file must be
readable on each node, or the model a Hub id each node can download).

It also runs torch with as many threads as the process that sent it: on a CPU the images depend on the thread
count (the kernels split their sums by thread), and Ray starts an actor with one (OMP_NUM_THREADS=1).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any

import torch

from janus_sdk.cli.model_cmds import check_model_options, load_pipeline
from janus_sdk.pipeline.janus import JanusPipeline

MODEL_OPTIONS = ("model", "config", "device", "dtype", "attention", "linear")


@dataclass(frozen=True)
class ModelSpec:
    """The model options of a command, picklable; calling it loads the pipeline they describe."""

    options: dict[str, Any]
    threads: int = field(default_factory=torch.get_num_threads)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelSpec:
        """The options of `args`, checked here first: a mistake is one line before any worker starts."""
        check_model_options(args)
        return cls({name: getattr(args, name) for name in MODEL_OPTIONS})

    @classmethod
    def of_checkpoint(cls, model: str, **options: Any) -> ModelSpec:
        """The spec of `model` (a folder or Hub id) with other model options (device=..., dtype=...)."""
        return cls({name: None for name in MODEL_OPTIONS} | options | {"model": model})

    def __call__(self) -> JanusPipeline:
        torch.set_num_threads(self.threads)
        pipe: JanusPipeline = load_pipeline(argparse.Namespace(**self.options, no_progress=True))
        return pipe
