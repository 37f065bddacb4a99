"""Reading checkpoints (both official layouts of the janus-tiny fixture, and broken or malicious ones) and
loading them into meta-built modules."""

from __future__ import annotations

import json
import pickle
import random
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from janus_sdk.checkpoint import (
    CheckpointWeights,
    LayoutKind,
    RebuildsBuffers,
    detect_layout,
    load_state_into,
    open_checkpoint,
)
from janus_sdk.errors import CheckpointError, ConfigError, PluginError

FIXTURE = Path(__file__).parent / "fixtures" / "janus-tiny"
ST_DIR = FIXTURE / "checkpoint"
BIN_DIR = FIXTURE / "checkpoint-bin"
N_TENSORS = 420  # every parameter and persistent buffer of the tiny model


def snapshot(directory: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file: proof that nothing was written, renamed or created."""
    return {
        str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns) for p in directory.rglob("*")
    }


def make_checkpoint(directory: Path, tensors: dict[str, torch.Tensor]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text("{}")
    save_file(tensors, str(directory / "model.safetensors"))
    return directory


class Aligner(nn.Module):
    """The official `aligner.*` names: layers.0 Linear(32, 64), GELU, layers.2 Linear(64, 64)."""

    def __init__(self, out0: int = 64, extra: bool = False) -> None:
        super().__init__()
        self.layers = nn.Sequential(nn.Linear(32, out0), nn.GELU(), nn.Linear(64, 64))
        if extra:
            self.extra = nn.Linear(4, 4)


# ---------------------------------------------------------------- layouts and reading


def test_layouts_of_the_two_fixture_copies() -> None:
    single = detect_layout(ST_DIR)
    assert single.kind is LayoutKind.SAFETENSORS
    assert single.files == (ST_DIR / "model.safetensors",)
    sharded = detect_layout(BIN_DIR)
    assert sharded.kind is LayoutKind.BIN_SHARDED
    assert sharded.index == BIN_DIR / "pytorch_model.bin.index.json"
    assert [p.name for p in sharded.files] == [
        "pytorch_model-00001-of-00002.bin",
        "pytorch_model-00002-of-00002.bin",
    ]


def test_both_fixture_copies_hold_identical_tensors() -> None:
    with open_checkpoint(ST_DIR) as st, open_checkpoint(BIN_DIR) as pt:
        assert sorted(st.keys()) == sorted(pt.keys())
        assert len(st) == len(pt) == N_TENSORS
        for name in st:
            a, b = st.get(name), pt.get(name)
            assert st.shape_of(name) == pt.shape_of(name) == tuple(a.shape)
            assert st.dtype_of(name) == pt.dtype_of(name) == a.dtype == b.dtype == torch.bfloat16
            assert torch.equal(a, b), name


def test_shape_and_dtype_come_without_reading_the_data() -> None:
    weights = CheckpointWeights(ST_DIR)
    assert weights.shape_of("language_model.model.embed_tokens.weight") == (640, 64)
    assert weights.dtype_of("gen_vision_model.quantize.codebook_used") == torch.bfloat16
    assert weights.nbytes_of("language_model.model.embed_tokens.weight") == 640 * 64 * 2
    assert weights.file_of("aligner.layers.0.weight") == ST_DIR / "model.safetensors"
    assert "aligner.layers.0.weight" in weights and "nope" not in weights
    with pytest.raises(CheckpointError, match="no tensor named 'nope'"):
        weights.get("nope")


def test_single_bin_and_sharded_safetensors_layouts(tmp_path: Path) -> None:
    tensors = {"a.weight": torch.randn(3, 4).to(torch.bfloat16), "b.count": torch.arange(5)}
    single = tmp_path / "single"
    single.mkdir()
    (single / "config.json").write_text("{}")
    torch.save(tensors, single / "pytorch_model.bin")
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    (sharded / "config.json").write_text("{}")
    save_file({"a.weight": tensors["a.weight"]}, str(sharded / "model-00001-of-00002.safetensors"))
    save_file({"b.count": tensors["b.count"]}, str(sharded / "model-00002-of-00002.safetensors"))
    weight_map = {
        "a.weight": "model-00001-of-00002.safetensors",
        "b.count": "model-00002-of-00002.safetensors",
    }
    (sharded / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map})
    )
    for directory, kind in ((single, LayoutKind.BIN), (sharded, LayoutKind.SAFETENSORS_SHARDED)):
        weights = open_checkpoint(directory)
        assert weights.layout.kind is kind
        assert sorted(weights.keys()) == ["a.weight", "b.count"]
        for name, tensor in tensors.items():
            assert weights.dtype_of(name) == tensor.dtype
            assert torch.equal(weights.get(name), tensor)


def test_legacy_non_zip_bin_is_still_read_safely(tmp_path: Path) -> None:
    directory = tmp_path / "legacy"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    torch.save({"w": torch.ones(2)}, directory / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    assert torch.equal(open_checkpoint(directory).get("w"), torch.ones(2))


# ---------------------------------------------------------------- errors


def test_missing_directory_config_and_weights(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not found: .*nowhere"):
        open_checkpoint(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(CheckpointError, match="is a file"):
        open_checkpoint(tmp_path / "file")
    with pytest.raises(CheckpointError, match=r"config\.json is missing"):
        open_checkpoint(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(tmp_path)
    message = str(info.value)
    assert str(tmp_path) in message
    for looked_for in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        assert looked_for in message


class Evil:
    """Unpickling this runs code: it creates a marker file (a stand-in for os.system)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("legacy", [False, True], ids=["torch-zip", "plain-pickle"])
def test_bin_whose_pickle_would_run_code_is_refused(tmp_path: Path, legacy: bool) -> None:
    marker = tmp_path / "pwned"
    directory = tmp_path / "evil"
    directory.mkdir()
    (directory / "config.json").write_text("{}")
    payload = {"w": torch.zeros(2), "x": Evil(marker)}
    if legacy:
        (directory / "pytorch_model.bin").write_bytes(pickle.dumps(payload, protocol=2))
    else:
        torch.save(payload, directory / "pytorch_model.bin")
    assert not marker.exists()
    with pytest.raises(CheckpointError) as info:
        open_checkpoint(directory)
    message = str(info.value)
    assert "refused" in message and str(directory / "pytorch_model.bin") in message
    assert "run code" in message
    assert not marker.exists()


def test_truncated_safetensors_names_the_file(tmp_path: Path) -> None:
    directory = tmp_path / "cut"
    shutil.copytree(ST_DIR, directory)
    data = (directory / "model.safetensors").read_bytes()
    (directory / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        open_checkpoint(directory)


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_bin_names_the_file(tmp_path: Path, damage: str) -> None:
    directory = tmp_path / "bad"
    shutil.copytree(BIN_DIR, directory)
    shard = directory / "pytorch_model-00002-of-00002.bin"
    data = shard.read_bytes()
    garbage = random.Random(damage).randbytes(4096)
    shard.write_bytes(data[: len(data) // 2] if damage == "truncate" else garbage)
    weights = open_checkpoint(directory)
    first_shard_tensor = next(n for n in weights if weights.file_of(n) != shard)
    weights.get(first_shard_tensor)  # the intact shard still reads
    second_shard_tensor = next(n for n in weights if weights.file_of(n) == shard)
    with pytest.raises(CheckpointError, match=r"pytorch_model-00002-of-00002\.bin"):
        weights.get(second_shard_tensor)


def test_index_naming_a_missing_shard(tmp_path: Path) -> None:
    directory = tmp_path / "partial"
    shutil.copytree(BIN_DIR, directory)
    (directory / "pytorch_model-00002-of-00002.bin").unlink()
    with pytest.raises(CheckpointError, match=r"do not exist: pytorch_model-00002-of-00002\.bin"):
        open_checkpoint(directory)


def test_index_naming_a_tensor_its_shard_lacks(tmp_path: Path) -> None:
    directory = tmp_path / "lying"
    shutil.copytree(BIN_DIR, directory)
    index_path = directory / "pytorch_model.bin.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["ghost.weight"] = "pytorch_model-00001-of-00002.bin"
    index_path.write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"maps 'ghost\.weight' to .*00001-of-00002\.bin"):
        open_checkpoint(directory).shape_of("ghost.weight")


def test_index_pointing_outside_the_directory_is_refused(tmp_path: Path) -> None:
    directory = make_checkpoint(tmp_path / "ck", {"w": torch.ones(1)})
    (tmp_path / "outside.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    (directory / "model.safetensors").unlink()
    index = {"weight_map": {"w": "../outside.safetensors"}}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside its directory"):
        open_checkpoint(directory)


def test_unusable_dtype_is_reported_with_file_and_name(tmp_path: Path) -> None:
    directory = make_checkpoint(
        tmp_path / "ck", {"ok": torch.ones(2), "odd": torch.zeros(2, dtype=torch.complex64)}
    )
    weights = open_checkpoint(directory)
    assert weights.dtype_of("ok") == torch.float32
    with pytest.raises(CheckpointError, match=r"'odd' in .*model\.safetensors has dtype C64"):
        weights.get("odd")


# ---------------------------------------------------------------- loading into modules


@pytest.mark.parametrize("source", [ST_DIR, BIN_DIR], ids=["safetensors", "bin"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_load_aligner_slice_converting_dtype(source: Path, dtype: torch.dtype) -> None:
    weights = open_checkpoint(source)
    with torch.device("meta"):
        module = Aligner()
    assert load_state_into(module, weights, dtype=dtype, device="cpu", prefix="aligner.") is module
    for key, tensor in module.state_dict().items():
        assert tensor.device.type == "cpu" and tensor.dtype == dtype
        stored = weights.get(f"aligner.{key}")
        assert torch.equal(tensor, stored.to(dtype)), key  # bf16 -> fp32 is exact
    x = torch.randn(2, 32, dtype=dtype)
    assert module.layers(x).shape == (2, 64)


def test_loaded_tensors_do_not_alias_the_checkpoint_mapping() -> None:
    weights = open_checkpoint(ST_DIR)
    with torch.device("meta"):
        module = Aligner()
    load_state_into(module, weights, dtype=torch.bfloat16, device="cpu", prefix="aligner.")
    before = weights.get("aligner.layers.0.bias").clone()
    first = module.layers[0]
    assert isinstance(first, nn.Linear)
    with torch.no_grad():
        first.bias.add_(1.0)
    assert torch.equal(weights.get("aligner.layers.0.bias"), before)


def test_integer_tensors_keep_their_dtype(tmp_path: Path) -> None:
    directory = make_checkpoint(tmp_path / "ck", {"w": torch.randn(2, 2), "steps": torch.tensor([3, 4])})

    class WithCounter(nn.Module):
        steps: torch.Tensor

        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.empty(2, 2))
            self.register_buffer("steps", torch.zeros(2, dtype=torch.int64))

    with torch.device("meta"):
        module = WithCounter()
    load_state_into(module, open_checkpoint(directory), dtype=torch.bfloat16, device="cpu")
    assert module.w.dtype == torch.bfloat16
    assert module.steps.dtype == torch.int64 and module.steps.tolist() == [3, 4]


def test_mismatches_are_reported_in_one_error() -> None:
    with torch.device("meta"):
        module = Aligner(out0=65, extra=True)
        module.layers = nn.Sequential(
            module.layers[0], nn.GELU()
        )  # drops layers.2: its tensors are unexpected
    with pytest.raises(CheckpointError) as info:
        load_state_into(module, open_checkpoint(ST_DIR), dtype=torch.float32, device="cpu", prefix="aligner.")
    message = str(info.value)
    assert "2 tensor(s) missing from the checkpoint" in message
    assert "aligner.extra.weight [4, 4]" in message and "aligner.extra.bias [4]" in message
    assert "2 tensor(s) in the checkpoint but not in the model" in message
    assert "aligner.layers.2.weight [64, 64]" in message and "aligner.layers.2.bias [64]" in message
    assert "2 tensor(s) with the wrong shape" in message
    assert "aligner.layers.0.weight: model expects [65, 32], checkpoint has [64, 32]" in message
    assert "aligner.layers.0.bias: model expects [65], checkpoint has [64]" in message
    assert all(p.is_meta for p in module.parameters())  # nothing was half-loaded


def test_long_mismatch_lists_are_capped() -> None:
    class Many(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.items = nn.ModuleList(
                nn.Linear(1, 1) for _ in range(15)
            )  # 30 tensors, none in the checkpoint

    with torch.device("meta"):
        module = Many()
    with pytest.raises(CheckpointError) as info:
        load_state_into(module, open_checkpoint(ST_DIR), dtype=torch.float32, device="cpu", prefix="nothing.")
    message = str(info.value)
    assert "30 tensor(s) missing" in message and "... and 20 more" in message
    assert message.count("nothing.items.") == 10


def test_wrong_kind_of_dtype_is_reported(tmp_path: Path) -> None:
    directory = make_checkpoint(tmp_path / "ck", {"steps": torch.ones(2)})

    class IntBuffer(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.register_buffer("steps", torch.zeros(2, dtype=torch.int64))

    with torch.device("meta"):
        module = IntBuffer()
    with pytest.raises(
        CheckpointError, match=r"steps: model expects torch\.int64, checkpoint has torch\.float32"
    ):
        load_state_into(module, open_checkpoint(directory), dtype=torch.float32, device="cpu")


def test_ignored_checkpoint_names() -> None:
    with torch.device("meta"):
        module = Aligner()
        module.layers = nn.Sequential(module.layers[0])
    weights = open_checkpoint(ST_DIR)
    load_state_into(
        module, weights, dtype=torch.float32, device="cpu", prefix="aligner.", ignore=["aligner.layers.2.*"]
    )
    first = module.layers[0]
    assert isinstance(first, nn.Linear)
    assert torch.equal(first.weight, weights.get("aligner.layers.0.weight").float())


def test_model_dtype_must_be_floating() -> None:
    with torch.device("meta"):
        module = Aligner()
    with pytest.raises(ConfigError, match="floating-point"):
        load_state_into(module, open_checkpoint(ST_DIR), dtype=torch.int32, device="cpu", prefix="aligner.")


class Rotary(nn.Module):
    """A module with a computed, non-persistent table (like rotary inv_freq) next to a checkpoint weight."""

    inv_freq: torch.Tensor

    def __init__(self, rebuild: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(64, 32))
        self.bias = nn.Parameter(torch.empty(64))
        self.register_buffer("inv_freq", torch.empty(4), persistent=False)  # filled by rebuild_buffers
        self.rebuild = rebuild

    @staticmethod
    def table(device: torch.device | None = None) -> torch.Tensor:
        return 1.0 / (10000 ** (torch.arange(0, 8, 2, dtype=torch.float32, device=device) / 8))

    def rebuild_buffers(self, device: torch.device) -> None:
        if self.rebuild:
            self.inv_freq = self.table(device)


class Holder(nn.Module):
    """Puts the module where the aligner's first Linear is, so it loads `aligner.*`."""

    def __init__(self, rotary: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleDict({"0": rotary, "2": nn.Linear(64, 64)})


def test_computed_buffers_are_rebuilt_after_a_meta_build() -> None:
    with torch.device("meta"):
        module = Holder(Rotary(rebuild=True))
    assert isinstance(module.layers["0"], RebuildsBuffers)
    load_state_into(module, open_checkpoint(ST_DIR), dtype=torch.bfloat16, device="cpu", prefix="aligner.")
    rotary = module.layers["0"]
    assert isinstance(rotary, Rotary)
    assert rotary.inv_freq.dtype == torch.float32 and torch.equal(rotary.inv_freq, Rotary.table())
    assert rotary.weight.dtype == torch.bfloat16


def test_buffers_built_on_a_real_device_are_kept() -> None:
    with torch.device("meta"):
        rotary = Rotary(rebuild=False)
    with torch.device("cpu"):
        rotary.register_buffer("inv_freq", Rotary.table(), persistent=False)
    module = Holder(rotary)
    load_state_into(module, open_checkpoint(ST_DIR), dtype=torch.bfloat16, device="cpu", prefix="aligner.")
    assert torch.equal(rotary.inv_freq, Rotary.table()) and rotary.inv_freq.dtype == torch.float32


def test_meta_leftovers_are_a_plugin_error() -> None:
    with torch.device("meta"):
        module = Holder(Rotary(rebuild=False))
    with pytest.raises(PluginError, match=r"layers\.0\.inv_freq.*rebuild_buffers"):
        load_state_into(module, open_checkpoint(ST_DIR), dtype=torch.float32, device="cpu", prefix="aligner.")


def test_reading_and_loading_never_write_into_the_checkpoint() -> None:
    before = {d: snapshot(d) for d in (ST_DIR, BIN_DIR)}
    for directory in (ST_DIR, BIN_DIR):
        with open_checkpoint(directory) as weights:
            for name in weights:
                weights.dtype_of(name)
            with torch.device("meta"):
                module = Aligner()
            load_state_into(module, weights, dtype=torch.float32, device="cpu", prefix="aligner.")
    assert {d: snapshot(d) for d in (ST_DIR, BIN_DIR)} == before
