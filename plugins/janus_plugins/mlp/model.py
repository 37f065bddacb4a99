"""Two-layer MLP modules of Janus: `MlpProjector` (understanding and generation aligners) and `VisionHead`
(the image-token head), with the official parameter names so checkpoint slices load as-is. Exact-erf GELU."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from janus_plugins.mlp.config import MlpProjectorConfig, VisionHeadConfig


class MlpProjector(nn.Module):
    """Aligner: features [..., input_dim] -> LLM embeddings [..., output_dim]. Parameters live under `layers`
    (`layers.0`, `layers.2`, ... for mlp_gelu, `layers` itself for linear) as upstream names them."""

    def __init__(self, config: MlpProjectorConfig) -> None:
        super().__init__()
        self.input_dim = config.input_dim
        self.output_dim = config.n_embed
        self.layers: nn.Module
        if config.projector_type == "identity":
            self.layers = nn.Identity()
        elif config.projector_type == "linear":
            self.layers = nn.Linear(config.input_dim, config.n_embed)
        else:
            hidden: list[nn.Module] = []
            for _ in range(config.depth - 1):
                hidden += [nn.GELU(), nn.Linear(config.n_embed, config.n_embed)]
            self.layers = nn.Sequential(nn.Linear(config.input_dim, config.n_embed), *hidden)

    def forward(self, features: Tensor) -> Tensor:
        out: Tensor = self.layers(features)
        return out


class VisionHead(nn.Module):
    """Image-token head: hidden [..., n_embed] -> Linear -> GELU -> Linear -> logits [..., codebook_size]."""

    def __init__(self, config: VisionHeadConfig) -> None:
        super().__init__()
        self.codebook_size = config.image_token_size
        self.output_mlp_projector = nn.Linear(config.n_embed, config.image_token_embed)
        self.vision_head = nn.Linear(config.image_token_embed, config.image_token_size)

    def forward(self, hidden: Tensor) -> Tensor:
        logits: Tensor = self.vision_head(F.gelu(self.output_mlp_projector(hidden)))
        return logits
