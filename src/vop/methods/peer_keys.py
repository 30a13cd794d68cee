"""Key maps from the peers' released checkpoints to vop's modules: pure functions from a
loaded checkpoint (a tensor dict, or the dict a training script saved around it) to state
dicts that load strictly into

- the backbone (:func:`backbone_state`: OpenAI names, for ``vop.backbone.from_state_dict``),
- CLIP4Clip's heads (:func:`clip4clip_head_state`: :class:`vop.methods.heads.SeqLSTM` /
  :class:`~vop.methods.heads.SeqTransf`),
- X-Pool's pooling (:func:`xpool_head_state`: :class:`vop.methods.xpool.XPoolHead`),
- DGL's prompts (:func:`dgl_prompts_state`: :class:`vop.methods.dgl.DGLPrompts`).

Layouts (``../shared/PEERS.md``): CLIP4Clip saves its model's ``state_dict`` as is (CLIP
under ``clip.`` with OpenAI names, ``lstm_visual.*``, ``frame_position_embeddings.weight``,
``transformerClip.resblocks.*``); X-Pool saves ``{epoch, state_dict, optimizer}`` with a
Hugging Face ``CLIPModel`` under ``clip.`` and its head under ``pool_frames.``; DGL saves
its DDP model (``module.clip.*``: the whole CLIP, OpenAI names, plus the prompt tensors).
"""

from __future__ import annotations

from typing import Mapping

import torch

from vop.backbone.convert import from_huggingface, unwrap

FORMATS = ("clip4clip", "xpool", "dgl")
HEADS = ("seqlstm", "seqtransf")
DGL_VARIANTS = ("linear", "transformer")

# DGL's trainable tensors (names after ``module.clip.``) -> DGLPrompts' names.
_DGL_PREFIXES = {
    "transformer": {
        "unified_prompt_embedding.": "generator.prompt_embedding.",
        "PromptTransformer.": "generator.prompt_transformer.",
        "unified_prompt_mlp.": "generator.prompt_mlp.",
        "visual.prompt_embeddings": "global_prompts",
    },
    "linear": {
        "visual_prompt_embedding": "generator.visual_prompt_embedding",
        "prefix_text_prompt_proj_layer.": "generator.prefix_proj.",
        "postfix_text_prompt_proj_layer.": "generator.postfix_proj.",
        "visual.prompt_embeddings": "global_prompts",
    },
}
# Tensors in DGL's CLIP that are not OpenAI CLIP weights (besides the prompts above).
_DGL_CLIP_EXTRA = ("visual.position_ids", "visual.frame_embedding")


def _tensors(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """The model's tensors (X-Pool and DGL wrap them with optimizer states and counters),
    without DDP's ``module.``."""
    return unwrap(checkpoint)


def _under(sd: Mapping[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown checkpoint format {fmt!r}; known: {', '.join(FORMATS)}")


def backbone_state(checkpoint: Mapping, fmt: str) -> dict[str, torch.Tensor]:
    """The CLIP inside a peer's checkpoint, in OpenAI names (ready for
    ``vop.backbone.from_state_dict``). CLIP4Clip and X-Pool fine-tune it; DGL's is the
    frozen one it started from."""
    _check_format(fmt)
    sd = _under(_tensors(checkpoint), "clip.")
    if not sd:
        raise ValueError(f"no 'clip.' tensors in this checkpoint: not a {fmt} checkpoint "
                         "(CLIP4Clip, X-Pool and DGL all keep their CLIP under 'clip.')")
    if fmt == "xpool":
        if not any(k.startswith("vision_model.") for k in sd):
            raise ValueError("X-Pool checkpoints hold a Hugging Face CLIPModel (clip.vision_model.*); "
                             "this one does not: is it another format?")
        return from_huggingface(sd)
    if fmt == "clip4clip" and "visual.conv2.weight" in sd:
        raise ValueError("this CLIP4Clip checkpoint was trained with 3D patches (--linear_patch 3d, "
                         "clip.visual.conv2.weight); vop's image tower has 2D patches only")
    drop = _DGL_CLIP_EXTRA if fmt == "dgl" else ()
    prompt_names = tuple(p for table in _DGL_PREFIXES.values() for p in table) if fmt == "dgl" else ()
    return {k: v for k, v in sd.items() if not k.startswith(drop + prompt_names)}


def clip4clip_head_state(checkpoint: Mapping, head: str) -> dict[str, torch.Tensor]:
    """CLIP4Clip's temporal head tensors, named for :class:`SeqLSTM` (``head="seqlstm"``) or
    :class:`SeqTransf` (``"seqtransf"``). The head is not recorded in the file: pass the
    ``--sim_header`` it was trained with."""
    if head not in HEADS:
        raise ValueError(f"unknown CLIP4Clip head {head!r}; choose one of {', '.join(HEADS)} "
                         "(meanP has no parameters, tightTransf is not supported)")
    sd = _tensors(checkpoint)
    if head == "seqlstm":
        out = _under(sd, "lstm_visual.")
        out = {f"lstm_visual.{k}": v for k, v in out.items()}  # the unused position table is dropped
    else:
        out = {k: v for k, v in sd.items()
               if k == "frame_position_embeddings.weight" or k.startswith("transformerClip.resblocks.")}
    if not out:
        found = [h for h, key in (("seqlstm", "lstm_visual."), ("seqtransf", "transformerClip."))
                 if any(k.startswith(key) for k in sd)]
        hint = f"it holds a {found[0]} head: pass head={found[0]!r}" if found else \
            "it holds no temporal head (a meanP checkpoint: use head='mean')"
        raise ValueError(f"no CLIP4Clip {head} tensors in this checkpoint; {hint}")
    return out


def xpool_head_state(checkpoint: Mapping) -> dict[str, torch.Tensor]:
    """X-Pool's ``pool_frames.*`` tensors, named for :class:`XPoolHead`."""
    out = _under(_tensors(checkpoint), "pool_frames.")
    if not out:
        raise ValueError("no 'pool_frames.' tensors in this checkpoint: not an X-Pool checkpoint trained "
                         "with --pooling_type transformer (X-Pool's text-conditioned pooling)")
    return out


def dgl_variant(checkpoint: Mapping) -> str:
    """Which DGL generator a checkpoint holds (its trainable tensors tell)."""
    sd = _under(_tensors(checkpoint), "clip.")
    found = [v for v in DGL_VARIANTS if any(k.startswith(next(iter(_DGL_PREFIXES[v]))) for k in sd)]
    if len(found) != 1:
        raise ValueError("this checkpoint holds neither DGL generator (clip.unified_prompt_embedding for "
                         "the transformer variant, clip.visual_prompt_embedding for the linear one)"
                         if not found else "this checkpoint holds both DGL generators")
    return found[0]


def dgl_prompts_state(checkpoint: Mapping, variant: str) -> dict[str, torch.Tensor]:
    """DGL's trainable tensors, named for :class:`DGLPrompts` of that ``variant``."""
    if variant not in DGL_VARIANTS:
        raise ValueError(f"unknown DGL variant {variant!r}; choose one of {', '.join(DGL_VARIANTS)}")
    sd = _under(_tensors(checkpoint), "clip.")
    out: dict[str, torch.Tensor] = {}
    for theirs, ours in _DGL_PREFIXES[variant].items():
        for key, value in sd.items():
            if key == theirs or (theirs.endswith(".") and key.startswith(theirs)):
                out[ours + key[len(theirs):]] = value
    if len(out) <= 1:  # the global prompts alone: the generator is missing
        other = next(v for v in DGL_VARIANTS if v != variant)
        hint = f"; it holds the {other} generator: pass variant={other!r}" if \
            any(k.startswith(next(iter(_DGL_PREFIXES[other]))) for k in sd) else ""
        raise ValueError(f"no DGL {variant} generator in this checkpoint{hint}")
    if "global_prompts" not in out:
        raise ValueError("this DGL checkpoint lacks clip.visual.prompt_embeddings (the global prompts)")
    return out
