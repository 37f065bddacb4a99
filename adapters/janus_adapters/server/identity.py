"""What the server calls its model, and whether that model is only a test model, read from the checkpoint.

The name clients send as `model` is the checkpoint's own name where it has one (`checkpoint_name`, whose rules
`janus_sdk.checkpoint.names` lists), so that a client written for `deepseek-ai/Janus-Pro-1B` on another
OpenAI-compatible server works here unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

from janus_sdk.checkpoint.names import checkpoint_name

__all__ = ["TEST_MODEL_PARAMETERS", "ServedModel", "checkpoint_name"]

TEST_MODEL_PARAMETERS = 100_000_000
"""Below this many parameters a checkpoint is a test model: every released Janus has over a billion (its
SigLIP encoder alone about 300 million), and nothing that small was trained, so its weights are random (the
janus-tiny fixture has 6 million)."""


@dataclass(frozen=True)
class ServedModel:
    """The model as clients see it: its id, its size, and whether it is a random-weight test model."""

    name: str
    parameters: int

    @property
    def test_model(self) -> bool:
        """Too small to be a trained Janus: its answers are gibberish, its images noise."""
        return self.parameters < TEST_MODEL_PARAMETERS
