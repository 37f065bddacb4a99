"""Samplers and guidance strategies: the math, and reproducibility from an explicit generator."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from janus_plugins.guidance import CFGConfig, ClassifierFreeGuidance, NoGuidance
from janus_plugins.samplers import GreedySampler, SampleConfig, Sampler


def test_greedy_is_argmax() -> None:
    logits = torch.tensor([[0.1, 3.0, -1.0], [5.0, 0.0, 4.9]])
    assert GreedySampler()(logits, None).tolist() == [1, 0]


def test_default_sampler_is_the_official_softmax_multinomial() -> None:
    """Same generator state -> the very tokens of softmax(logits / t) + torch.multinomial."""
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(1))
    ours = Sampler(SampleConfig(temperature=0.7))(logits, torch.Generator().manual_seed(42))
    reference = torch.multinomial(
        torch.softmax(logits / 0.7, dim=-1), 1, generator=torch.Generator().manual_seed(42)
    )
    assert ours.tolist() == reference.squeeze(-1).tolist()


def test_top_k_only_draws_from_the_k_best() -> None:
    logits = torch.arange(10.0).repeat(200, 1)
    drawn = Sampler(SampleConfig(top_k=3))(logits, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {7, 8, 9}


def test_top_p_keeps_the_smallest_set_reaching_p() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(500, 1)
    drawn = Sampler(SampleConfig(top_p=0.8))(logits, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 1}  # 0.5 < 0.8 so the second token is needed; 0.8 reached, stop
    assert set(Sampler(SampleConfig(top_p=0.4))(logits, torch.Generator().manual_seed(0)).tolist()) == {0}


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": 0},
        {"temperature": float("nan")},
        {"top_p": 0},
        {"top_p": 1.5},
        {"top_k": -1},
        {"temperature": float("inf")},
    ],
)
def test_sampler_config_rejects_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        SampleConfig(**bad)


def test_cfg_combines_adjacent_cond_uncond_rows() -> None:
    logits = torch.tensor([[2.0, 0.0], [1.0, 1.0], [0.0, 4.0], [0.0, 0.0]])  # [c0, u0, c1, u1]
    combined = ClassifierFreeGuidance(5.0).combine(logits)
    expected = torch.stack([logits[1] + 5 * (logits[0] - logits[1]), logits[3] + 5 * (logits[2] - logits[3])])
    torch.testing.assert_close(combined, expected)


def test_cfg_weight_one_drops_the_unconditional_branch() -> None:
    assert ClassifierFreeGuidance(1.0).num_branches == 1
    assert ClassifierFreeGuidance(5.0).num_branches == 2
    assert NoGuidance().num_branches == 1


@pytest.mark.parametrize("weight", [-1.0, float("nan"), float("inf")])
def test_cfg_weight_must_be_finite_and_non_negative(weight: float) -> None:
    with pytest.raises(ValidationError):
        CFGConfig(cfg_weight=weight)
