"""Samplers and guidance chosen by name: the shorthand rule of the settings, the Python API on the tiny
checkpoint, what a strategy sees (history, step, total), and what a broken plugin strategy gets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from torch import Tensor

from janus_sdk import JanusPipeline, hookimpl
from janus_sdk.config import ComponentSpec, GenerationConfig, ImageGenerationConfig, PipelineConfig
from janus_sdk.errors import ConfigError, InputError, PluginError
from janus_sdk.pipeline.decoding import Progress
from janus_sdk.pipeline.janus import merge_settings
from janus_sdk.plugins import PluginHost
from janus_sdk.registry import BuildContext, Register
from small_pipeline import fast_pipeline

# -- the shorthand rule --------------------------------------------------------------------------------


def test_a_bare_name_is_a_spec_without_params() -> None:
    assert GenerationConfig(sampler="min-p").sampler_spec == ComponentSpec(name="min-p", params={})
    image = ImageGenerationConfig(guidance="cfg-zero-star", sampler="greedy")
    assert (image.guidance_spec.name, image.sampler_spec.name) == ("cfg-zero-star", "greedy")


def test_without_a_spec_the_shorthand_describes_the_built_ins() -> None:
    gen = GenerationConfig(do_sample=True, temperature=0.7, top_k=5, presence_penalty=0.5)
    assert gen.sampler_spec.name == "sample"
    assert (
        gen.sampler_spec.params["temperature"] == 0.7 and gen.sampler_spec.params["presence_penalty"] == 0.5
    )
    assert GenerationConfig(temperature=0.7).sampler_spec.name == "greedy"  # as before: do_sample decides
    assert ImageGenerationConfig(cfg_weight=3).guidance_spec == ComponentSpec(
        name="cfg", params={"cfg_weight": 3}
    )


def test_shorthand_set_with_a_spec_overrides_its_param_of_the_same_name() -> None:
    spec = {"name": "min-p", "params": {"p": 0.05, "temperature": 0.5}}
    assert GenerationConfig(sampler=spec, temperature=0.7).sampler_spec.params == {
        "p": 0.05,
        "temperature": 0.7,
    }
    image = ImageGenerationConfig(guidance={"name": "cfg", "params": {"schedule": "cosine"}}, cfg_weight=4.5)
    assert image.guidance_spec.params == {"schedule": "cosine", "cfg_weight": 4.5}
    # Shorthand left at its default does not count: the spec's own param stands.
    assert GenerationConfig(sampler=spec).sampler_spec.params == spec["params"]


@pytest.mark.parametrize(
    ("section", "data", "message"),
    [
        (
            "generation",
            {"sampler": "min-p", "top_k": 5},
            "generation: top_k set, but sampler 'min-p' has no such param (its params: "
            "repetition_penalty, presence_penalty, frequency_penalty, p, temperature); set sampler.params",
        ),
        ("generation", {"sampler": "greedy", "do_sample": True}, "do_sample picks between the built-in"),
        ("image_generation", {"guidance": "none", "cfg_weight": 3}, "guidance 'none' has no such param"),
        (
            "generation",
            {"sampler": {"name": "min-p", "params": {"p": 2}}},
            "generation.sampler.params.p: Input should be less than or equal to 1, got 2",
        ),
        (
            "image_generation",
            {"guidance": {"name": "cfg", "params": {"schedul": "linear"}}},
            "image_generation.guidance.params.schedul: unknown key "
            "(allowed: cfg_weight, schedule, start_weight)",
        ),
        (
            "generation",
            {"sampler": "nucleus"},
            "generation.sampler: no sampler called 'nucleus'; available: ",
        ),
        ("image_generation", {"sampler": {"nam": "greedy"}}, "image_generation.sampler.nam: unknown key"),
    ],
)
def test_settings_that_do_not_fit_are_reported_with_their_path(
    section: str, data: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        PipelineConfig.parse({section: data})
    assert message in str(info.value)


def test_an_unknown_name_lists_the_available_ones_and_their_plugins() -> None:
    with pytest.raises(ValidationError) as info:
        ImageGenerationConfig(guidance="cfg-zero")
    text = str(info.value)
    assert "no guidance called 'cfg-zero'" in text
    assert "cfg-zero-star (also cfg-zero*, cfg_zero_star; plugin guidance)" in text
    assert "none (plugin guidance)" in text


def test_a_call_naming_a_strategy_replaces_the_defaults_choice() -> None:
    defaults = GenerationConfig(do_sample=True, temperature=0.7)
    call = merge_settings(defaults, {"sampler": "greedy"}, GenerationConfig)
    assert call.sampler_spec.name == "greedy"  # the defaults' do_sample / temperature went with their choice
    defaults = GenerationConfig(sampler={"name": "min-p", "params": {"p": 0.2}})
    call = merge_settings(defaults, {"temperature": 0.5}, GenerationConfig)
    assert call.sampler_spec == ComponentSpec(name="min-p", params={"p": 0.2, "temperature": 0.5})
    with pytest.raises(InputError, match="do_sample picks between the built-in samplers"):
        merge_settings(defaults, {"do_sample": True}, GenerationConfig)
    image = merge_settings(
        ImageGenerationConfig(cfg_weight=2.0), {"guidance": "cfg-zero-star"}, ImageGenerationConfig
    )
    assert image.guidance_spec == ComponentSpec(name="cfg-zero-star", params={})


CONFIG_FILES = {
    "pipeline.json": '{"generation": {"sampler": {"name": "min-p", "params": {"p": 0.05}},'
    ' "temperature": 0.8},'
    ' "image_generation": {"guidance": {"name": "cfg", "params": {"schedule": "linear"}}, "cfg_weight": 4}}',
    "pipeline.yaml": "generation:\n  sampler: {name: min-p, params: {p: 0.05}}\n  temperature: 0.8\n"
    "image_generation:\n  guidance:\n    name: cfg\n    params: {schedule: linear}\n  cfg_weight: 4\n",
    "pipeline.toml": "[generation]\ntemperature = 0.8\n[generation.sampler]\nname = 'min-p'\n"
    "params = {p = 0.05}\n[image_generation]\ncfg_weight = 4\n[image_generation.guidance]\nname = 'cfg'\n"
    "params = {schedule = 'linear'}\n",
}


@pytest.mark.parametrize("name", sorted(CONFIG_FILES))
def test_config_files_choose_strategies(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text(CONFIG_FILES[name], encoding="utf-8")
    config = PipelineConfig.from_file(tmp_path / name)
    assert config.generation.sampler_spec == ComponentSpec(
        name="min-p", params={"p": 0.05, "temperature": 0.8}
    )
    guidance = config.image_generation.guidance_spec
    assert guidance == ComponentSpec(name="cfg", params={"schedule": "linear", "cfg_weight": 4})


# -- the pipeline --------------------------------------------------------------------------------------


class NoOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Mode(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: str = Field("ok", description="How to misbehave.")


class Recorder:
    """Greedy, recording the history and the logits' rows it is shown."""

    uses_history = True

    def __init__(self) -> None:
        self.histories: list[list[list[int]]] = []

    def __call__(self, logits: Tensor, generator: torch.Generator | None, *, history: Tensor) -> Tensor:
        self.histories.append(history.tolist())
        return logits.argmax(dim=-1)


class Scheduled:
    """No guidance, recording (step, total) and the rows' prompt."""

    num_branches = 1

    def __init__(self) -> None:
        self.steps: list[tuple[int, int]] = []

    def rows(self, prompt_ids: Tensor, pad_id: int) -> Tensor:
        return prompt_ids[None]

    def combine(self, logits: Tensor, step: int, total: int) -> Tensor:
        self.steps.append((step, total))
        return logits


class Broken:
    """A sampler and a guidance that return what `mode` says."""

    num_branches = 2

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, logits: Tensor, generator: torch.Generator | None) -> object:
        ids = logits.argmax(dim=-1)
        outputs: dict[str, Callable[[], object]] = {
            "float": lambda: ids.float(),
            "shape": lambda: ids[:, None],
            "range": lambda: ids + logits.shape[-1],
            "list": lambda: ids.tolist(),
            "raise": lambda: torch.cat([ids, ids[None]]),  # a torch error inside the plugin
        }
        return outputs.get(self.mode, lambda: ids)()

    def rows(self, prompt_ids: Tensor, pad_id: int) -> Tensor:
        rows = prompt_ids.repeat(2, 1)
        return {"rows-shape": rows[:, 1:], "rows-range": rows + 10**6, "rows-dtype": rows.int()}.get(
            self.mode, rows
        )

    def combine(self, logits: Tensor, step: int, total: int) -> Tensor:
        if self.mode == "combine-shape":
            return logits
        if self.mode == "combine-dtype":
            return logits[0::2].double()
        return logits[0::2]


class StrategyPlugin:
    """Registers the test strategies; the recorders are kept to be read by the tests."""

    def __init__(self) -> None:
        self.recorder, self.scheduled = Recorder(), Scheduled()

    @hookimpl
    def register_samplers(self, register: Register) -> None:
        register("recorder", lambda config, context: self.recorder, config=NoOptions)
        register("broken", lambda config, context: Broken(config.mode), config=Mode)

    @hookimpl
    def register_guidances(self, register: Register) -> None:
        register("scheduled", lambda config, context: self.scheduled, config=NoOptions)
        register("broken-guidance", lambda config, context: Broken(config.mode), config=Mode)


@pytest.fixture(scope="module")
def plugin() -> StrategyPlugin:
    return StrategyPlugin()


@pytest.fixture(scope="module")
def pipe(plugin: StrategyPlugin) -> JanusPipeline:
    host = PluginHost()
    host.load_entry_points()
    host.register(plugin, "test_strategies", "test-dist")
    pipeline: JanusPipeline = fast_pipeline(plugins=host)
    return pipeline


def test_chat_takes_a_sampler_spec(pipe: JanusPipeline) -> None:
    greedy = pipe.chat("hi", max_new_tokens=6)
    assert pipe.chat("hi", max_new_tokens=6, sampler="greedy") == greedy
    spec = {"name": "min-p", "params": {"p": 0.05}}
    answer = pipe.chat("hi", max_new_tokens=6, sampler=spec, seed=3)
    assert answer == pipe.chat("hi", max_new_tokens=6, sampler=spec, seed=3)
    with pytest.raises(InputError, match=r"sampler\.params\.p: Input should be less than or equal to 1"):
        pipe.chat("hi", sampler={"name": "min-p", "params": {"p": 3}})
    with pytest.raises(InputError, match=r"no sampler called 'top-a'; available: .*recorder"):
        pipe.chat("hi", sampler="top-a")


def test_a_history_aware_sampler_sees_the_tokens_generated_so_far(
    pipe: JanusPipeline, plugin: StrategyPlugin
) -> None:
    plugin.recorder.histories.clear()
    pipe.chat("hi", max_new_tokens=5, sampler="recorder")
    tokens = plugin.recorder.histories[-1][0] if plugin.recorder.histories else []
    histories = plugin.recorder.histories
    assert [len(h[0]) for h in histories] == list(range(len(histories)))
    assert all(h[0] == tokens[: len(h[0])] for h in histories)  # each a prefix of the next
    plugin.recorder.histories.clear()
    codes = pipe.generate_image_codes("a cube", sampler="recorder", guidance="none")
    assert plugin.recorder.histories[-1] == [codes[0, :-1].tolist()]


def test_penalties_reach_the_built_in_samplers(pipe: JanusPipeline) -> None:
    """The tiny model's greedy answer repeats nothing in 12 tokens; negative penalties (rewards) loop it."""
    plain = pipe.chat("hi", max_new_tokens=12)
    looping = pipe.chat("hi", max_new_tokens=12, presence_penalty=-2.0, frequency_penalty=-2.0)
    assert looping != plain and looping.startswith(plain[:3])
    spec = {"name": "greedy", "params": {"repetition_penalty": 0.2}}
    assert pipe.chat("hi", max_new_tokens=12, sampler=spec) == looping
    assert pipe.chat("hi", max_new_tokens=12, sampler="greedy", presence_penalty=0.0) == plain


def test_images_take_guidance_and_sampler_specs(pipe: JanusPipeline) -> None:
    default = pipe.generate_image_codes("a cube", n=2, seed=0)
    spec = {"name": "cfg", "params": {"cfg_weight": 5.0, "schedule": "constant"}}
    assert torch.equal(pipe.generate_image_codes("a cube", n=2, seed=0, guidance=spec), default)
    assert torch.equal(
        pipe.generate_image_codes("a cube", n=2, seed=0, guidance="cfg", cfg_weight=5), default
    )
    sampler = {"name": "sample", "params": {"temperature": 1.0}}
    assert torch.equal(pipe.generate_image_codes("a cube", n=2, seed=0, sampler=sampler), default)
    for guidance in ({"name": "cfg", "params": {"schedule": "cosine"}}, "cfg-zero-star"):
        codes = pipe.generate_image_codes("a cube", n=2, seed=0, guidance=guidance, sampler="min-p")
        assert codes.shape == default.shape
    assert len(pipe.generate_images("a cube", seed=0, guidance="cfg-zero-star")) == 1


def test_guidance_is_told_the_step_and_the_total(pipe: JanusPipeline, plugin: StrategyPlugin) -> None:
    plugin.scheduled.steps.clear()
    pipe.generate_image_codes("a cube", n=2, max_batch=1, guidance="scheduled", seed=0)
    assert plugin.scheduled.steps == [(step, 16) for step in range(16)] * 2


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (
            {"sampler": {"name": "broken", "params": {"mode": "float"}}},
            "ids at step 0 of dtype torch.float32",
        ),
        ({"sampler": {"name": "broken", "params": {"mode": "shape"}}}, "ids at step 0 of shape [1, 1]"),
        ({"sampler": {"name": "broken", "params": {"mode": "range"}}}, "ids at step 0 outside [0, "),
        ({"sampler": {"name": "broken", "params": {"mode": "list"}}}, "returned list for ids at step 0"),
        ({"sampler": {"name": "broken", "params": {"mode": "raise"}}}, "failed in picking ids at step 0: "),
    ],
)
def test_a_broken_sampler_is_named_at_the_first_step(
    pipe: JanusPipeline, settings: dict[str, Any], message: str
) -> None:
    steps: list[Progress] = []
    with pytest.raises(PluginError) as info:
        pipe.chat("hi", max_new_tokens=4, on_step=steps.append, **settings)
    assert "sampler 'broken' of plugin 'test_strategies' (test-dist)" in str(info.value)
    assert message in str(info.value) and steps == []
    with pytest.raises(PluginError, match="sampler 'broken'"):
        pipe.generate_image_codes("a cube", guidance="none", **settings)
    assert pipe.chat("hi", max_new_tokens=4)  # still usable


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("rows-shape", "rows of shape [2, "),
        ("rows-range", "rows outside [0, "),
        ("rows-dtype", "rows of dtype torch.int32"),
        ("combine-shape", "combined logits at step 0 of shape [2, "),
        ("combine-dtype", "combined logits at step 0 of dtype torch.float64"),
    ],
)
def test_a_broken_guidance_is_named_before_it_does_harm(pipe: JanusPipeline, mode: str, message: str) -> None:
    steps: list[Progress] = []
    guidance = {"name": "broken-guidance", "params": {"mode": mode}}
    with pytest.raises(PluginError) as info:
        pipe.generate_image_codes("a cube", guidance=guidance, on_step=steps.append, seed=0)
    assert "guidance 'broken-guidance' of plugin 'test_strategies' (test-dist)" in str(info.value)
    assert message in str(info.value) and steps == []
    assert pipe.generate_image_codes("a cube", seed=0).shape == (1, 16)  # still usable


def test_strategies_are_built_per_call_with_the_pipeline_context(pipe: JanusPipeline) -> None:
    seen: list[BuildContext] = []
    host = PluginHost()
    host.load_entry_points()

    class Spy:
        @hookimpl
        def register_samplers(self, register: Register) -> None:
            def build(config: NoOptions, context: BuildContext) -> Any:
                seen.append(context)
                return lambda logits, generator: logits.argmax(dim=-1)

            register("spy", build, config=NoOptions)

    host.register(Spy(), "spy", "spy-dist")
    spied = JanusPipeline(
        pipe.config, pipe.model, pipe.tokenizer, pipe.chat_template, pipe.attention, host.registry
    )
    spied.chat("hi", max_new_tokens=2, sampler="spy")
    spied.chat("hi", max_new_tokens=2, sampler="spy")
    assert len(seen) == 2 and seen[0].device == pipe.device and seen[0].dtype == pipe.dtype
