"""Import the peers' released checkpoints as vop models (``vop.load(path, format=...)``).

- ``format="clip4clip"``: ``pytorch_model.bin.N`` (the model's state dict). Method ``full``
  with ``head`` = the file's temporal head (``seqlstm`` / ``seqtransf``, found from its
  tensors when ``head`` is not given; ``mean`` for meanP). CLIP comes from the file (fine-tuned).
- ``format="xpool"``: ``{epoch, state_dict, optimizer}`` with a Hugging Face CLIPModel under
  ``clip.`` and the pooling under ``pool_frames.``. Method ``xpool``.
- ``format="dgl"``: DGL's DDP checkpoint (``module.clip.*``: its whole CLIP plus the prompt
  tensors). Method ``dgl`` (transformer generator) or ``dgl-linear``; ``variant`` is found
  from the tensors when not given, and the frame count from the generator's table.

Quirks reproduced by default (docs/peers.md): CLIP4Clip's seqTransf LayerNorm eps 1e-12 and
its head-tiled padding mask (inert here: vop samples every frame of a video); DGL's postfix
text prompts after the end-of-text token, hidden by the causal mask; DGL ignores frame masks.
Key maps: :mod:`vop.methods.peer_keys`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from vop.backbone import from_state_dict
from vop.backbone.clip import CLIP
from vop.backbone.convert import unwrap
from vop.backbone.config import ARCHITECTURES, CLIPConfig
from vop.methods import peer_keys
from vop.model.factory import create
from vop.model.video_text import VideoTextModel

FORMATS = peer_keys.FORMATS


def _read(source: str | Path | Mapping) -> Mapping:
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file (a peer's checkpoint is one file, e.g. "
                                "CLIP4Clip's pytorch_model.bin.4 or X-Pool's model_best.pth)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickles of arbitrary objects (e.g. an argparse Namespace) are refused
        raise ValueError(
            f"{path}: cannot be read as plain tensors ({type(exc).__name__}: {str(exc).splitlines()[0]}); "
            "re-save it with torch.save({'state_dict': model.state_dict()}, path) in the peer's environment"
        ) from exc


def _backbone(state: dict[str, torch.Tensor], backbone: str | CLIPConfig | None, dtype: torch.dtype) -> CLIP:
    config = None
    if isinstance(backbone, CLIPConfig):
        config = backbone
    elif isinstance(backbone, str):
        if backbone not in ARCHITECTURES:
            raise ValueError(f"backbone= names the architecture of the CLIP inside the file; unknown "
                             f"{backbone!r}, known: {sorted(ARCHITECTURES)} (or leave it out to infer it)")
        config = ARCHITECTURES[backbone]
    elif backbone is not None:
        raise ValueError("for a peer checkpoint, backbone= is an architecture name or CLIPConfig: the weights "
                         "come from the file")
    return from_state_dict(state, dtype=dtype, config=config)


def _clip4clip_head(sd: Mapping[str, torch.Tensor]) -> str:
    if any(k.startswith(("cross.", "similarity_dense.")) for k in sd):
        raise ValueError("this CLIP4Clip checkpoint was trained with --sim_header tightTransf (a cross-encoder); "
                         "vop imports meanP, seqLSTM and seqTransf checkpoints")
    if any(k.startswith("lstm_visual.") for k in sd):
        return "seqlstm"
    if any(k.startswith("transformerClip.") for k in sd):
        return "seqtransf"
    return "mean"


def import_peer(source: str | Path | Mapping, format: str, *, variant: str | None = None,
                head: str | None = None, backbone: str | CLIPConfig | None = None,
                dtype: torch.dtype = torch.float32, **options: Any) -> VideoTextModel:
    """A peer's checkpoint (a file, or the object ``torch.load`` gave) as a vop model in
    eval mode. ``options``: further method options (e.g. ``num_frames``)."""
    if format not in FORMATS:
        raise ValueError(f"unknown checkpoint format {format!r}; known: {', '.join(FORMATS)} "
                         "(leave format out for a vop checkpoint folder)")
    if variant is not None and format != "dgl":
        raise ValueError("variant= applies to format='dgl' only (its two generators)")
    if head is not None and format != "clip4clip":
        raise ValueError("head= applies to format='clip4clip' only (X-Pool and DGL checkpoints have no temporal "
                         "head); to add a fresh head to an imported model, create the method instead")
    ck = _read(source)
    sd = unwrap(ck)
    clip = _backbone(peer_keys.backbone_state(ck, format), backbone, dtype)
    if format == "clip4clip":
        head = head or _clip4clip_head(sd)
        if head == "mean":
            model = create("full", clip, **options)
        else:
            state = peer_keys.clip4clip_head_state(ck, head)
            if head == "seqtransf":
                layers = len({k.split(".")[2] for k in state if k.startswith("transformerClip.resblocks.")})
                options = {"head_layers": layers, "head_init": "random", **options}
            model = create("full", clip, head=head, **options)
            model.to(dtype).head.load_state_dict(state)
            if head == "seqtransf":
                model.head.clip4clip_mask_tiling = True
    elif format == "xpool":
        model = create("xpool", clip, **options)
        model.to(dtype).pool.load_state_dict(peer_keys.xpool_head_state(ck))
    else:
        variant = variant or peer_keys.dgl_variant(ck)
        state = peer_keys.dgl_prompts_state(ck, variant)
        wv = clip.config.vision_width
        n_global = state["global_prompts"].shape[1]
        if variant == "linear":
            n_local, table = state["generator.visual_prompt_embedding"].shape[1:]
            found = {"dgl_local_prompts": n_local, "dgl_text_prompts": 2 * n_local}
        else:
            n_text, n_local = options.get("dgl_text_prompts", 8), options.get("dgl_local_prompts", 4)
            rows, table = state["generator.prompt_embedding.weight"].shape
            if (rows - n_text) % n_local:
                raise ValueError(f"DGL's prompt table has {rows} rows, not {n_text} text + frames x {n_local} local "
                                 "prompts: pass the dgl_text_prompts / dgl_local_prompts it was trained with")
            found = {"num_frames": (rows - n_text) // n_local, "dgl_local_prompts": n_local, "dgl_text_prompts": n_text}
        if table % wv:
            raise ValueError(f"DGL's prompt tables are {table} wide, not a multiple of the image tower's width {wv}: "
                             "the checkpoint's CLIP and prompts disagree")
        found.update(dgl_global_prompts=n_global, dgl_depth=table // wv)
        for key, value in options.items():
            if key in found and found[key] != value:
                raise ValueError(f"{key}={value} contradicts the checkpoint, which holds {found[key]}")
        model = create("dgl-linear" if variant == "linear" else "dgl", clip, **{**options, **found})
        model.to(dtype).tower.load_state_dict(state)
    return model.eval()
