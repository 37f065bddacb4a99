"""Several linear layers that read the same input, computed together where their modules can.

A decoder layer projects one input three times (q, k, v) and its MLP twice (gate, up). In a decode step each
projection is a few rows against a weight read from memory; a linear backend whose modules stream weights
(`interfaces.SharedInputLinear`) computes such a group as one call: one preparation of the input, one split
of the work among threads and one wait for the slowest, where separate calls pay each of those every time.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


def project(x: Tensor, layers: Sequence[nn.Module]) -> list[Tensor]:
    """[layer(x) for layer in layers], the same values, in one call where the first layer's kind
    (`project_with`) takes the others along; else one call each."""
    together = getattr(type(layers[0]), "project_with", None)  # on the class: a module's own lookup is slow
    outs: list[Tensor] | None = None if together is None else together(layers[0], x, layers[1:])
    return [layer(x) for layer in layers] if outs is None else outs
