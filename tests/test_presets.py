"""The real Janus architectures, built on the meta device: exact checkpoint names, shapes and counts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from safetensors import safe_open

from janus_sdk.pipeline.presets import preset_info, preset_model

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny" / "checkpoint" / "model.safetensors"

# Parameters + buffers in the official checkpoints (the reference README's table).
OFFICIAL_TOTALS = {"Janus-Pro-1B": 2_089_297_547, "Janus-Pro-7B": 7_420_434_059, "Janus-1.3B": 2_089_297_547}


def _patterns(names: object) -> set[str]:
    return {re.sub(r"\.\d+\.", ".N.", name) for name in names}  # type: ignore[attr-defined]


@pytest.mark.parametrize("name", sorted(OFFICIAL_TOTALS))
def test_preset_builds_with_the_official_parameter_count(name: str) -> None:
    info = preset_info(name)
    assert info["total_parameters"] == OFFICIAL_TOTALS[name]
    assert set(info["parameters"]) == {
        "vision_model",
        "aligner",
        "gen_vision_model",
        "gen_aligner",
        "gen_head",
        "language_model",
        "gen_embed",
    }


def test_real_key_patterns_equal_the_official_checkpoint_patterns() -> None:
    """The tiny checkpoint carries exactly the name patterns of a real-size official model."""
    _, model = preset_model("Janus-Pro-1B")
    with safe_open(str(FIXTURE), "pt") as f:
        assert _patterns(model.state_dict().keys()) == _patterns(f.keys())


def test_7b_relies_on_llama_defaults_for_its_sizes() -> None:
    config, model = preset_model("Janus-Pro-7B")
    assert config.llm_backbone.params["hidden_size"] == 4096
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes["language_model.model.layers.0.mlp.gate_proj.weight"] == (11008, 4096)
    assert shapes["language_model.lm_head.weight"] == (102400, 4096)
    assert (
        sum(k.startswith("language_model.model.layers.") and k.endswith("q_proj.weight") for k in shapes)
        == 30
    )
    assert shapes["gen_head.vision_head.weight"] == (16384, 4096)
    assert shapes["vision_model.vision_tower.pos_embed"] == (1, 576, 1024)
