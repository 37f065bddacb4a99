"""Component contracts: what each kind of component takes and returns, at the tensor level.

The pipelines are written against these Protocols only, never against a concrete plugin, so any component
can be replaced by a third-party plugin that satisfies the same contract. Shapes use B for batch rows,
T for sequence positions, D for feature widths.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class VisualEncoder(Protocol):
    """Understanding encoder: pixels [B, 3, S, S] (normalised) -> features [B, num_tokens, feature_dim]."""

    image_size: int
    num_tokens: int
    feature_dim: int

    def __call__(self, pixel_values: Tensor) -> Tensor: ...


@runtime_checkable
class Aligner(Protocol):
    """Projector (the paper's "adaptor"): features [..., input_dim] -> LLM embeddings [..., output_dim]."""

    input_dim: int
    output_dim: int

    def __call__(self, features: Tensor) -> Tensor: ...


@runtime_checkable
class ImageTokenizer(Protocol):
    """Discrete image tokenizer (VQ): images in [-1, 1] <-> code grids flattened in raster order."""

    codebook_size: int
    code_dim: int
    image_size: int
    grid_size: int

    def encode(self, pixels: Tensor) -> Tensor:
        """[B, 3, image_size, image_size] in [-1, 1] -> codes [B, grid_size**2] (int64)."""
        ...

    def decode(self, codes: Tensor) -> Tensor:
        """codes [B, grid_size**2] -> images [B, 3, image_size, image_size], roughly in [-1, 1], unclipped."""
        ...


@runtime_checkable
class GenerationHead(Protocol):
    """Image-token head: LLM hidden states [..., hidden] -> image-code logits [..., codebook_size]."""

    codebook_size: int

    def __call__(self, hidden: Tensor) -> Tensor: ...


@runtime_checkable
class TextTokenizer(Protocol):
    """Text <-> token ids. `encode` adds BOS the way the checkpoint's tokenizer does."""

    bos_id: int
    eos_id: int
    pad_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str: ...

    def token_id(self, token: str) -> int:
        """The id of a special token, looked up by its string (ids differ between checkpoints)."""
        ...

    def __len__(self) -> int: ...


@runtime_checkable
class ChatTemplate(Protocol):
    """Turns a conversation into the prompt string the model was trained on."""

    image_tag: str
    user_role: str
    assistant_role: str
    default_system_prompt: str

    def render(self, turns: Sequence[tuple[str, str]], system_prompt: str) -> str:
        """(role, content) turns -> prompt; an empty last assistant turn leaves it open for the answer."""
        ...


@runtime_checkable
class KVCache(Protocol):
    """Opaque key/value cache owned by a backbone; only the backbone reads or writes it."""

    max_length: int


@runtime_checkable
class LLMBackbone(Protocol):
    """Decoder-only language model driven by input embeddings, with an explicit KV cache."""

    hidden_size: int
    vocab_size: int
    max_context: int

    def embed_tokens(self, input_ids: Tensor) -> Tensor:
        """[B, T] int64 -> [B, T, hidden_size]."""
        ...

    def new_cache(self, batch_size: int, max_length: int, padding: Tensor | None = None) -> KVCache:
        """A cache for `batch_size` rows and up to `max_length` positions, on the model's device and dtype.

        `padding` (int64 [batch_size]) batches prompts of different lengths, left-padded: the first
        padding[b] positions of row b are blanks, which no other position of the row attends to, and the
        row's positions count from its first real one, so that each row computes what it would alone. The
        pipeline passes it only when some row is padded."""
        ...

    def hidden_states(self, inputs_embeds: Tensor, cache: KVCache, start: int) -> Tensor:
        """Run positions start..start+T-1 ([B, T, hidden]), append them to `cache`, return the final-norm
        hidden
        states [B, T, hidden]."""
        ...

    def text_logits(self, hidden: Tensor) -> Tensor:
        """[..., hidden] -> text logits [..., vocab_size]."""
        ...


@runtime_checkable
class PreparedBackbone(Protocol):
    """An LLMBackbone that chooses how its steps run once, when its weights are loaded (optional).

    The pipeline calls `prepare(device, dtype)` where a backbone has it, after loading and converting the
    weights and before any generation: what a backbone measures or captures for its decode steps (kernels,
    fused ops, CUDA graphs kept with the model) is decided then, not per call."""

    def prepare(self, device: torch.device, dtype: torch.dtype) -> object: ...


@runtime_checkable
class Sampler(Protocol):
    """Strategy that picks the next token: logits [B, V] (float32) -> ids [B] (int64, on the logits' device).
    Randomness comes only from the explicit generator, so a seed reproduces a run.

    History (optional): a sampler whose attribute `uses_history` is true is called as
    ``sampler(logits, generator, history=ids)`` with the ids generated so far in this run, int64 [B, t] (t = 0
    at the first step; the prompt is not included), e.g. to penalise repeats. Without the attribute, or with
    it false, it is called with two arguments. A new sampler is built for every generation call, so it may
    keep state between the steps of one run.
    """

    def __call__(self, logits: Tensor, generator: torch.Generator | None) -> Tensor: ...


class HistorySampler(Protocol):
    """How a sampler with `uses_history = True` is called (see Sampler)."""

    uses_history: bool

    def __call__(self, logits: Tensor, generator: torch.Generator | None, *, history: Tensor) -> Tensor: ...


@runtime_checkable
class Guidance(Protocol):
    """The LLM rows one image sample needs, and how their logits combine into the sample's, step by step.

    A sample's rows are adjacent and `rows` builds them: the official classifier-free guidance has
    num_branches = 2, [cond, uncond]; no guidance has 1. `combine` is told the step and the number of steps,
    so the guidance may follow a schedule.
    """

    num_branches: int

    def rows(self, prompt_ids: Tensor, pad_id: int) -> Tensor:
        """prompt ids [L] (int64: BOS first, the image start token last) -> the sample's rows
        [num_branches, L] (int64, the same length: rows are batched), `pad_id` for positions to blank."""
        ...

    def combine(self, logits: Tensor, step: int, total: int) -> Tensor:
        """[B * num_branches, V] (float32) -> [B, V] at `step` (0-based) of `total` steps."""
        ...


@runtime_checkable
class AttentionBackend(Protocol):
    """Scaled dot-product attention: q [B, H, Tq, Dh], k/v [B, H, Tk, Dh] -> [B, H, Tq, Dh].

    `mask` is additive (0 / -inf), broadcastable to [B, H, Tq, Tk]; `causal` aligns the query block with the
    END of the key block (queries are the last Tq positions)."""

    name: str

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Raise BackendUnavailableError (why, and what to use instead) if this backend cannot run here."""
        ...

    def attend(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        *,
        causal: bool,
        mask: Tensor | None = None,
        scale: float | None = None,
    ) -> Tensor: ...


@runtime_checkable
class KernelDecodeAttention(Protocol):
    """What an AttentionBackend may add: whether its decode step (one query position, no mask) over `length`
    cached positions is the CPU kernels' `decode_attention`, so that a backbone running a decode step's layers
    as one kernel call (deepseek_llm's `native_step`) may call that kernel in its place."""

    def decodes_with_kernel(
        self, dtype: torch.dtype, rows: int, heads: int, dim: int, length: int
    ) -> bool: ...


@runtime_checkable
class KernelLinearModule(Protocol):
    """What a module a LinearBackend converts to may add: the CPU kernels' `linear_many` operands for its
    weight, and which build of that kernel its forward calls for `rows` rows (None: another path), so that a
    backbone running a decode step's layers as one kernel call may make those calls itself."""

    def route(self, rows: int, dtype: torch.dtype) -> str | None: ...

    def kernel_operands(self) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(weight as the kernel takes it, scale per output feature or None, bias or None)."""
        ...


@runtime_checkable
class CheckpointTensors(Protocol):
    """What a module a LinearBackend converts to may add when it holds a checkpoint tensor in another layout
    (the same values, repacked for a kernel): that tensor as the checkpoint stores it, made on request, so
    that saving writes the official layout one tensor at a time, never a second copy of the model."""

    def checkpoint_tensor(self, name: str) -> Tensor | None:
        """The tensor `name` of this module's own state dict in the checkpoint's layout, or None where the
        module holds it as the checkpoint does."""
        ...


@runtime_checkable
class LinearBackend(Protocol):
    """How the linear layers read once per generated token (LLM, generation head and aligner) compute.

    A decode step is a handful of rows against every weight: its speed is how fast the weights stream from
    memory. A backend may repack or quantize each layer's weights to read fewer bytes or read them faster."""

    name: str

    def check(self, device: torch.device, dtype: torch.dtype) -> None:
        """Raise BackendUnavailableError (why, and what to use instead) if this backend cannot run here."""
        ...

    def convert(self, linear: nn.Linear) -> nn.Module:
        """A module computing `linear`'s function its own way (or `linear` itself), holding loaded weights."""
        ...


@runtime_checkable
class SharedInputLinear(Protocol):
    """What a module a LinearBackend converts to may add: computing itself together with other layers that
    read the same input (a decoder layer's q, k and v projections; gate and up), see
    `janus_sdk.projections.project`."""

    def project_with(self, x: Tensor, others: Sequence[nn.Module]) -> list[Tensor] | None:
        """[self(x), *(other(x) for other in others)] with the same values, from one call; None where that
        does not apply (e.g. another kind of module among `others`, or inputs its fast path does not take)."""
        ...
