"""Samplers and guidance strategies: the math, and reproducibility from an explicit generator."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from janus_plugins.guidance import (
    CFGConfig,
    CFGZeroStar,
    CFGZeroStarConfig,
    ClassifierFreeGuidance,
    NoGuidance,
)
from janus_plugins.samplers import (
    GreedyConfig,
    GreedySampler,
    MinPConfig,
    MinPSampler,
    Penalties,
    SampleConfig,
    Sampler,
    penalize,
)
from janus_sdk.plugins import get_registry


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
    combined = ClassifierFreeGuidance(5.0).combine(logits, 0, 576)
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


# -- penalties -----------------------------------------------------------------------------------------


def test_penalties_follow_the_openai_formula_and_the_ctrl_rule() -> None:
    logits = torch.tensor([[2.0, -1.0, 0.5, 3.0]])
    history = torch.tensor([[0, 0, 1]])  # token 0 twice, token 1 once
    counts = torch.tensor([[2.0, 1.0, 0.0, 0.0]])
    openai = Penalties(presence_penalty=0.5, frequency_penalty=0.25)
    expected = logits - 0.25 * counts - 0.5 * (counts > 0)
    torch.testing.assert_close(penalize(logits, history, openai), expected)
    ctrl = penalize(logits, history, Penalties(repetition_penalty=2.0))
    torch.testing.assert_close(ctrl, torch.tensor([[1.0, -2.0, 0.5, 3.0]]))  # positive /2, negative *2
    assert torch.equal(penalize(logits, history[:, :0], openai), logits)  # nothing generated yet


def test_neutral_penalties_leave_the_sampler_history_free() -> None:
    """Default params: no history asked for, so the official sampler's path is untouched."""
    assert not Sampler(SampleConfig()).uses_history and not GreedySampler().uses_history
    assert GreedySampler(GreedyConfig(presence_penalty=1.0)).uses_history


def test_presence_penalty_steers_greedy_away_from_repeats() -> None:
    greedy = GreedySampler(GreedyConfig(presence_penalty=2.0))
    logits = torch.tensor([[3.0, 2.0, 0.0]])
    assert greedy(logits, None, history=torch.empty(1, 0, dtype=torch.long)).tolist() == [0]
    assert greedy(logits, None, history=torch.tensor([[0]])).tolist() == [1]


@pytest.mark.parametrize(
    "bad", [{"presence_penalty": 2.5}, {"frequency_penalty": -3}, {"repetition_penalty": 0}]
)
def test_penalty_ranges(bad: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        SampleConfig(**bad)


# -- min-p ---------------------------------------------------------------------------------------------


def test_min_p_keeps_tokens_at_least_p_times_the_top_probability() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = probs.log().repeat(500, 1)
    drawn = MinPSampler(MinPConfig(p=0.5))(logits, torch.Generator().manual_seed(0))
    assert set(drawn.tolist()) == {0, 1}  # 0.3 >= 0.5 * 0.5, 0.15 is not
    assert set(MinPSampler(MinPConfig(p=0.2))(logits, torch.Generator().manual_seed(0)).tolist()) == {0, 1, 2}


def test_min_p_with_tiny_p_draws_like_plain_sampling() -> None:
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(3))
    ours = MinPSampler(MinPConfig(p=1e-9, temperature=0.8))(logits, torch.Generator().manual_seed(5))
    plain = Sampler(SampleConfig(temperature=0.8))(logits, torch.Generator().manual_seed(5))
    assert ours.tolist() == plain.tolist()


# -- guidance ------------------------------------------------------------------------------------------


def test_cfg_rows_are_the_official_layout() -> None:
    prompt = torch.tensor([100, 5, 6, 7, 200])
    assert ClassifierFreeGuidance(5.0).rows(prompt, 0).tolist() == [[100, 5, 6, 7, 200], [100, 0, 0, 0, 200]]
    assert ClassifierFreeGuidance(1.0).rows(prompt, 0).tolist() == [[100, 5, 6, 7, 200]]
    assert NoGuidance().rows(prompt, 0).tolist() == [[100, 5, 6, 7, 200]]


@pytest.mark.parametrize(
    ("schedule", "weights"),
    [
        ("constant", [5.0, 5.0, 5.0]),
        ("linear", [1.0, 3.0, 5.0]),
        ("cosine", [1.0, 3.0, 5.0]),
    ],
)
def test_cfg_schedules_go_from_start_weight_to_cfg_weight(schedule: str, weights: list[float]) -> None:
    cfg = ClassifierFreeGuidance(5.0, schedule, start_weight=1.0)  # type: ignore[arg-type]
    assert [cfg.weight(step, 577) for step in (0, 288, 576)] == pytest.approx(weights)
    logits = torch.randn(4, 10, generator=torch.Generator().manual_seed(0))
    cond, uncond = logits[0::2], logits[1::2]
    torch.testing.assert_close(cfg.combine(logits, 288, 577), uncond + weights[1] * (cond - uncond))


def test_cosine_schedule_starts_and_ends_slower_than_linear() -> None:
    linear = ClassifierFreeGuidance(5.0, "linear")
    cosine = ClassifierFreeGuidance(5.0, "cosine")
    assert cosine.weight(50, 576) < linear.weight(50, 576) and cosine.weight(525, 576) > linear.weight(
        525, 576
    )
    assert ClassifierFreeGuidance(1.0, "linear", start_weight=3.0).num_branches == 2  # guided early on
    assert ClassifierFreeGuidance(5.0, "linear").weight(0, 1) == 1.0  # one step: no division by zero


def test_cfg_zero_star_matches_the_optimized_scale_formula() -> None:
    logits = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    guided = CFGZeroStar(CFGZeroStarConfig(cfg_weight=4.0)).combine(logits, 0, 576)
    for sample in range(2):
        cond, uncond = logits[2 * sample], logits[2 * sample + 1]
        c, u = cond - cond.mean(), uncond - uncond.mean()
        scale = torch.dot(c, u) / torch.dot(u, u)
        torch.testing.assert_close(guided[sample], scale * u + 4.0 * (c - scale * u))


def test_cfg_zero_star_leaves_the_conditional_distribution_where_it_should() -> None:
    cond = torch.randn(1, 32, generator=torch.Generator().manual_seed(1))
    at_one = CFGZeroStar(CFGZeroStarConfig(cfg_weight=1.0)).combine(torch.cat([cond, cond * 0.3 + 2]), 0, 9)
    torch.testing.assert_close(at_one.softmax(-1), cond.softmax(-1))  # w = 1: the conditional logits
    parallel = CFGZeroStar(CFGZeroStarConfig(cfg_weight=7.0)).combine(torch.cat([cond, cond * 0.3 + 2]), 0, 9)
    torch.testing.assert_close(
        parallel.softmax(-1), cond.softmax(-1)
    )  # uncond adds nothing to push away from


def test_built_in_strategies_are_registered_with_described_params() -> None:
    registry = get_registry()
    for kind, name in [("sampler", "min-p"), ("guidance", "cfg-zero-star"), ("guidance", "cfg")]:
        reg = registry.get(kind, name)
        assert reg.plugin in ("samplers", "guidance") and reg.config.model_config.get("extra") == "forbid"
        assert all((field.description or "").strip() for field in reg.config.model_fields.values())
    with pytest.raises(ValidationError):
        CFGConfig(schedule="exponential")
