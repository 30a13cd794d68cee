"""CLIP with a ViT image tower and a causal text transformer, written with OpenAI's
parameter names. Both towers expose their stages (``embed`` -> blocks -> ``head``) so a
tuning method can run them layer by layer, inserting and dropping prompt tokens."""

from __future__ import annotations

import math

import torch
from torch import nn

from vop.backbone.config import CLIPConfig
from vop.backbone.layers import LayerNorm, Transformer


class VisionTower(nn.Module):
    """ViT image encoder: patches + [CLS] + positions -> ln_pre -> blocks -> ln_post([CLS]) @ proj."""

    def __init__(self, cfg: CLIPConfig):
        super().__init__()
        width = cfg.vision_width
        scale = width**-0.5
        self.input_resolution = cfg.image_resolution
        self.conv1 = nn.Conv2d(3, width, kernel_size=cfg.vision_patch_size, stride=cfg.vision_patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(cfg.num_patches + 1, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, cfg.vision_layers, cfg.vision_heads, cfg.activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, cfg.embed_dim))

    @property
    def blocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Pixels ``[N, 3, R, R]`` -> tokens ``[N, 1 + patches, width]`` (before ``ln_pre``)."""
        if images.ndim != 4 or images.shape[1] != 3 or images.shape[-2:] != (self.input_resolution,) * 2:
            raise ValueError(
                f"expected images (N, 3, {self.input_resolution}, {self.input_resolution}), "
                f"got {tuple(images.shape)}"
            )
        x = self.conv1(images.to(self.conv1.weight.dtype))  # [N, width, grid, grid]
        x = x.flatten(2).transpose(1, 2)  # [N, patches, width]
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)  # [N, 1, width]
        return torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)

    def head(self, cls_tokens: torch.Tensor) -> torch.Tensor:
        """[CLS] outputs ``[..., width]`` -> embeddings ``[..., embed_dim]`` (unnormalised)."""
        return self.ln_post(cls_tokens) @ self.proj

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.ln_pre(self.embed(images))
        x = self.transformer(x)
        return self.head(x[:, 0])


class CLIP(nn.Module):
    """OpenAI-compatible ViT CLIP. Text-tower parameters sit at the top level
    (``token_embedding``, ``transformer``, ``ln_final``, ``text_projection``) as in the
    official checkpoints.

    A reduced vocabulary (the shipped tiny model keeps only the tokens its world uses) is
    supported through ``token_map``: a ``[49408]`` buffer mapping BPE ids to embedding rows.
    """

    def __init__(self, cfg: CLIPConfig, token_map: torch.Tensor | None = None):
        super().__init__()
        self.config = cfg
        # Where the weights came from, in words (set by vop.backbone.load; run headers print it).
        self.weights_source = "random weights (built directly)"
        self.visual = VisionTower(cfg)
        self.transformer = Transformer(cfg.transformer_width, cfg.transformer_layers, cfg.transformer_heads,
                                       cfg.activation)
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.transformer_width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.transformer_width))
        self.ln_final = LayerNorm(cfg.transformer_width)
        self.text_projection = nn.Parameter(torch.empty(cfg.transformer_width, cfg.embed_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if token_map is not None:
            self.register_buffer("token_map", token_map.long(), persistent=True)
        else:
            self.token_map = None
        self._init_weights()

    def _init_weights(self) -> None:
        # OpenAI's initialisation, so that random backbones (benchmarks, tests) are well scaled.
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        for tower in (self.transformer, self.visual.transformer):
            proj_std = (tower.width**-0.5) * ((2 * tower.layers) ** -0.5)
            attn_std = tower.width**-0.5
            fc_std = (2 * tower.width) ** -0.5
            for block in tower.resblocks:
                nn.init.normal_(block.attn.in_proj_weight, std=attn_std)
                nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
                nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
                nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=self.transformer.width**-0.5)

    # -- text tower stages -------------------------------------------------------------
    @property
    def text_blocks(self) -> nn.ModuleList:
        return self.transformer.resblocks

    def embed_tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """BPE ids ``[N, L]`` -> token embeddings ``[N, L, width]`` (no positions yet)."""
        if ids.ndim != 2:
            raise ValueError(f"expected token ids (N, L), got shape {tuple(ids.shape)}")
        if self.token_map is not None:
            ids = self.token_map[ids]
        return self.token_embedding(ids)

    def text_head(self, x: torch.Tensor, readout: torch.Tensor) -> torch.Tensor:
        """Final tokens ``[N, L, width]`` read at ``readout`` ``[N]`` -> ``[N, embed_dim]``."""
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0], device=x.device), readout] @ self.text_projection

    # -- whole towers --------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """``[N, 3, R, R]`` normalised pixels -> ``[N, embed_dim]``, unnormalised."""
        return self.visual(images)

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """``[N, L]`` ids (L <= context_length) -> ``[N, embed_dim]``, unnormalised; read
        at the end-of-text token, which has the largest id."""
        length = ids.shape[-1]
        if length > self.config.context_length:
            raise ValueError(f"token ids of length {length} exceed the context length {self.config.context_length}")
        x = self.embed_tokens(ids) + self.positional_embedding[:length].to(self.token_embedding.weight.dtype)
        x = self.transformer(x, causal=True)
        return self.text_head(x, ids.argmax(dim=-1))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """OpenAI's interface: ``(logits_per_image, logits_per_text)``."""
        img = self.encode_image(images)
        txt = self.encode_text(ids)
        img = img / img.norm(dim=-1, keepdim=True)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        logits = self.logit_scale.exp() * img @ txt.t()
        return logits, logits.t()

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
