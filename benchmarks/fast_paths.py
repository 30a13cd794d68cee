"""Before/after of the backbone's fast paths, against straightforward reference versions
run in the same process, in alternation.

The references are the plain implementations the library used before
(``x * sigmoid(1.702 x)`` through autograd; LayerNorm always round-tripping 16-bit inputs
through fp32). A model is turned into its "before" twin by swapping those modules'
classes on a deep copy, so both share the same weights.

Figures: activation memory saved for backward (counted exactly, with
``saved_tensors_hooks``, over distinct storages), and time ratios for one ViT block
(frozen weights; fp32 forward + backward, bf16 inference) and, with ``--model``, for a
whole ``vop`` training step and a bf16 ``encode_video``.

    python benchmarks/fast_paths.py [--model] [--reps 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import vop.backbone  # noqa: E402
import vop.methods  # noqa: E402
from vop.backbone import layers
from vop.backbone.reference import ReferenceLayerNorm, ReferenceQuickGELU, to_reference  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--frames", type=int, default=12, help="images per block call (one video)")
    p.add_argument("--reps", type=int, default=5, help="timed calls of each version")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--model", action="store_true", help="also time a whole vop step and bf16 encode")
    args = p.parse_args(argv)
    common.start(args, device="cpu")
    clip = vop.backbone.load(args.backbone)
    width = clip.config.vision_width
    tokens = clip.config.num_patches + 1 + 8  # [CLS], patches, 8 VoP prompts
    rows = []

    # One frozen block, fp32, input requiring grad (as in prompt tuning): fwd + bwd.
    block = clip.visual.blocks[0].requires_grad_(False)
    ref_block = to_reference(block)
    params = list(block.parameters()) + list(ref_block.parameters())
    x = torch.randn(args.frames, tokens, width, requires_grad=True)
    g = torch.randn(args.frames, tokens, width)

    def train(b):
        def run():
            b(x).backward(g)
            x.grad = None
        return run

    lib_saved, _ = common.saved_bytes(lambda: block(x), params)
    ref_saved, _ = common.saved_bytes(lambda: ref_block(x), params)
    rows.append(["block fp32, saved for backward (MiB)", f"{ref_saved / common.MIB:.1f}",
                 f"{lib_saved / common.MIB:.1f}", f"{lib_saved / ref_saved:.2f}"])
    t = common.interleaved({"ref": train(ref_block), "lib": train(block)}, args.reps, warmup=1)
    rows.append(_time_row("block fp32 forward + backward (ms)", t))

    low, ref_low = copy.deepcopy(block).to(torch.bfloat16), to_reference(block).to(torch.bfloat16)
    xl = x.detach().to(torch.bfloat16)

    def infer(b):
        def run():
            with torch.inference_mode():
                b(xl)
        return run

    t = common.interleaved({"ref": infer(ref_low), "lib": infer(low)}, args.reps * 2, warmup=1)
    rows.append(_time_row("block bf16 weights, inference (ms)", t))
    with torch.inference_mode():
        cos = F.cosine_similarity(low(xl).float().flatten(1), ref_low(xl).float().flatten(1)).min().item()
        same_fp32 = torch.equal(block(x.detach()), ref_block(x.detach()))
    print(f"block outputs: fp32 inference bitwise equal to the reference: {same_fp32}; "
          f"bf16 min cosine to the reference {cos:.6f}")

    if args.model:
        model = vop.create("vop", clip)
        ref_model = to_reference(model)
        params = list(model.parameters()) + list(ref_model.parameters())
        frames = common.fake_frames(1, args.frames, clip.config.image_resolution, torch.Generator().manual_seed(0))
        ids = common.fake_ids(1, model.caption_length)

        def step(m):
            def run():
                video, text, scale = m(frames, ids)
                common.info_nce(video, text, scale).backward()
                for q in m.parameters():
                    q.grad = None
            return run

        lib_saved, _ = common.saved_bytes(lambda: model(frames, ids), params)
        ref_saved, _ = common.saved_bytes(lambda: ref_model(frames, ids), params)
        rows.append(["vop model, 1 video, saved for backward (MiB)", f"{ref_saved / common.MIB:.0f}",
                     f"{lib_saved / common.MIB:.0f}", f"{lib_saved / ref_saved:.2f}"])
        t = common.interleaved({"ref": step(ref_model), "lib": step(model)}, args.reps, warmup=1)
        rows.append(_time_row("vop step fp32, 1 video (ms)", t))
        low_m, ref_low_m = copy.deepcopy(model).to(torch.bfloat16), ref_model.to(torch.bfloat16)

        def encode(m):
            def run():
                with torch.inference_mode():
                    m.encode_video(frames)
            return run

        t = common.interleaved({"ref": encode(ref_low_m), "lib": encode(low_m)}, args.reps, warmup=1)
        rows.append(_time_row("vop encode_video bf16 weights, 1 video (ms)", t))

    print(common.markdown_table(["measure", "reference (before)", "library (after)", "after / before"], rows))


def _time_row(label: str, t: dict[str, list[float]]) -> list:
    ref, lib = common.median(t["ref"]), common.median(t["lib"])
    return [label, f"{ref * 1e3:.1f}", f"{lib * 1e3:.1f}", f"{lib / ref:.2f}"]


if __name__ == "__main__":
    main()
