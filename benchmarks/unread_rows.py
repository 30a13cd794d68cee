"""Skipping the rows nobody reads (``VideoTextModel.skip_unread_tokens``), before and after,
in one process, in alternation.

What is skipped (exact): the query, output projection and MLP of a layer's prompt rows
when the next layer replaces them (VoP's deep prompts, VoP^F's video prompts, the
intra-frame prompts before the joint layers), every row but [CLS] in the last image
block, and the text slots after the last read-out position (the text mask is causal).
Every row still serves as key and value.

For each method: a training step (forward, InfoNCE, backward; fp32, trainable tensors
only) and a bf16-weights ``encode_video`` under ``inference_mode``, each with the skip
off ("plain") and on, plus the activation memory autograd keeps for backward (counted
exactly over distinct storages). ``full`` runs both ways in the same rounds as every
method, so the table gives each method's step time as a fraction of full's *with the same
setting*, measured at the same time.

    python benchmarks/unread_rows.py --threads 1 --batch 2 --reps 3
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402

import vop.backbone  # noqa: E402
import vop.methods  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backbone", default="ViT-B-32", help="vop.backbone.load name (random weights)")
    p.add_argument("--methods", default="full,vop,vop-p,vop-f,vop-fc", help="comma-separated; full comes first")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32", help="training step precision (bf16: autocast)")
    p.add_argument("--batch", type=int, default=2, help="videos (and captions) per step")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--words", type=int, default=12, help="words per fake caption (MSR-VTT averages ~9)")
    p.add_argument("--reps", type=int, default=3, help="timed calls of each version")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--no-encode", action="store_true", help="skip the bf16 encode timing")
    args = p.parse_args(argv)
    device = common.start(args)
    names = list(dict.fromkeys(["full", *args.methods.split(",")]))
    print(f"# {args.backbone}, batch {args.batch} x {args.frames} frames, {args.dtype} step, captions of {args.words} words, "
          f"{args.reps} reps (+1 warm-up), plain and skip interleaved")
    torch.manual_seed(0)
    clip = vop.backbone.load(args.backbone)
    gen = torch.Generator().manual_seed(0)
    frames = common.fake_frames(args.batch, args.frames, clip.config.image_resolution, gen).to(device)
    def autocast():
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.dtype == "bf16")

    def pair(name: str, backbone) -> tuple:
        model = vop.create(name, backbone, num_frames=args.frames).to(device)
        plain = copy.deepcopy(model)
        plain.skip_unread_tokens = False
        ids = common.fake_ids(args.batch, model.caption_length, words=args.words,
                              generator=torch.Generator().manual_seed(1)).to(device)
        return model, plain, ids

    def step(m, ids):
        def run():
            with autocast():
                video, text, scale = m(frames, ids)
            common.info_nce(video.float(), text.float(), scale).backward()
            for q in m.parameters():
                q.grad = None
        return run

    def encode(m):
        def run():
            with torch.inference_mode():
                m.encode_video(frames.to(torch.bfloat16))
        return run

    # full, both ways, runs in the same rounds as every method, so "x full" is a same-time ratio
    full, full_plain, full_ids = pair("full", copy.deepcopy(clip))
    full_times: dict[str, list[float]] = {"plain": [], "skip": []}
    rows = []
    for name in names:
        if name == "full":
            model, plain, ids = full, full_plain, full_ids
        else:
            model, plain, ids = pair(name, clip)
        params = list(model.parameters()) + list(plain.parameters())

        def forward(m, ids=ids):
            with autocast():
                return m(frames, ids)

        saved = {k: common.saved_bytes(lambda m=m: forward(m), params)[0] for k, m in (("plain", plain), ("skip", model))}
        candidates = {"plain": step(plain, ids), "skip": step(model, ids)}
        if name != "full":
            candidates.update({"full plain": step(full_plain, full_ids), "full skip": step(full, full_ids)})
        t = common.interleaved(candidates, args.reps, warmup=1, device=device)
        s = {k: common.median(v) for k, v in t.items()}
        f = {"plain": s.get("full plain", s["plain"]), "skip": s.get("full skip", s["skip"])}
        for k in ("plain", "skip"):
            full_times[k] += t.get(f"full {k}", t[k])
        enc = {"plain": float("nan"), "skip": float("nan")}
        if not args.no_encode:
            low, low_plain = copy.deepcopy(model).to(torch.bfloat16), copy.deepcopy(plain).to(torch.bfloat16)
            e = common.interleaved({"plain": encode(low_plain), "skip": encode(low)}, args.reps, warmup=1, device=device)
            enc = {k: common.median(v) for k, v in e.items()}
            del low, low_plain
        rows.append([name, f"{s['plain']:.3f}", f"{s['skip']:.3f}", f"{s['skip'] / s['plain']:.2f}",
                     f"{s['plain'] / f['plain']:.2f}", f"{s['skip'] / f['skip']:.2f}",
                     f"{saved['plain'] / common.MIB:.0f}", f"{saved['skip'] / common.MIB:.0f}",
                     f"{saved['skip'] / saved['plain']:.2f}",
                     f"{enc['plain']:.3f}", f"{enc['skip']:.3f}", f"{enc['skip'] / enc['plain']:.2f}"])
        print(f"# {name}: done", flush=True)
        if name != "full":
            del model, plain
    print(f"# full over all rounds: plain {common.median(full_times['plain']):.3f} s, "
          f"skip {common.median(full_times['skip']):.3f} s")
    print(common.markdown_table(
        ["method", "step plain s", "step skip s", "skip / plain", "x full (plain)", "x full (skip)",
         "saved plain MiB", "saved skip MiB", "skip / plain", "encode bf16 plain s", "encode bf16 skip s",
         "skip / plain"], rows))


if __name__ == "__main__":
    main()
