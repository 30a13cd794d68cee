"""Can a temporal head learn frame order on its own? A head-only probe on the synthetic world.

The shipped tiny CLIP encodes the synthetic world's train and val videos once, frozen
(zero-shot frame and caption embeddings, middle frames); then only a CLIP4Clip temporal
head is trained on them with the symmetric InfoNCE loss (AdamW, batch 32, CLIP's logit
scale 100, gradient clipping 1.0). Printed every 100 steps: the loss and the pair accuracy
on val and train (does a reversible video rank its own caption above its reversal's?
50 % is order-blind).

It isolates the head's start from everything else a training run does; docs/peers.md
uses it to choose how a seqTransf head starts where it cannot copy the text tower.

    python benchmarks/head_probe.py --head seqtransf --init identity --lr 1e-3
    python benchmarks/head_probe.py --head seqtransf --init identity --position-std 0.02   # CLIP4Clip's fresh table
    python benchmarks/head_probe.py --head seqlstm
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F


def encode(model, data, split: str, limit: int):
    """Frozen per-frame embeddings [N, F, D], caption embeddings, caption -> video, pairs."""
    from vop.data.datasets import open_split
    from vop.data.transforms import normalize

    opened = open_split(data, split)
    source, n = opened.split.source, min(limit, len(opened.split.source))
    with torch.no_grad():
        frames = torch.cat([
            model.encode_frames(torch.stack([normalize(source.load(i, opened.num_frames))
                                             for i in range(start, min(start + 64, n))]))
            for start in range(0, n, 64)])
        kept = [c for c, v in enumerate(opened.split.caption_to_video) if v < n]
        texts = model.encode_text(model.tokenize([opened.split.captions[c] for c in kept]))
    caption_to_video = torch.tensor([opened.split.caption_to_video[c] for c in kept])
    index = {c: i for i, c in enumerate(kept)}
    pairs = [(va, index[ca], vb, index[cb]) for va, ca, vb, cb in (opened.pairs or [])
             if va < n and vb < n and ca in index and cb in index]
    return frames, texts, caption_to_video, pairs


def pair_accuracy(pool, data) -> float:
    frames, texts, _, pairs = data
    with torch.no_grad():
        videos = pool(frames)
        hits = 0.0
        for video, caption, _, reversal_caption in pairs:
            margin = float(texts[caption] @ videos[video] - texts[reversal_caption] @ videos[video])
            hits += 1.0 if margin > 0 else 0.5 if margin == 0 else 0.0
    return 100 * hits / max(1, len(pairs))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--head", default="seqtransf", choices=["seqlstm", "seqtransf"])
    ap.add_argument("--init", default="auto", help="head_init for seqtransf: auto, identity, random")
    ap.add_argument("--position-std", type=float, default=None,
                    help="redraw the seqtransf frame positions from N(0, STD) after the start")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--train-videos", type=int, default=2000)
    ap.add_argument("--val-videos", type=int, default=600)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from vop.backbone import load
    from vop.demo import synthetic_config
    from vop.model import create

    config = synthetic_config("zero-shot", [])
    clip = load(config.backbone)
    frozen = create("zero-shot", clip).eval()
    started = time.time()
    train = encode(frozen, config.data, "train", args.train_videos)
    val = encode(frozen, config.data, "val", args.val_videos)
    print(f"encoded {len(train[0])} train and {len(val[0])} val videos in {time.time() - started:.0f} s; "
          f"{len(val[3])} val pairs")

    torch.manual_seed(args.seed)
    options = {"head_init": args.init} if args.head == "seqtransf" else {}
    head = create("zero-shot", clip, head=args.head, **options).head.train()
    if args.position_std is not None:
        torch.nn.init.normal_(head.frame_position_embeddings.weight, std=args.position_std)
    optimiser = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=0.2, betas=(0.9, 0.98), eps=1e-6)

    def pool(frames: torch.Tensor) -> torch.Tensor:
        return F.normalize(F.normalize(head(frames), dim=-1).mean(1), dim=-1)

    frames, texts, caption_to_video, _ = train
    target = torch.arange(32)
    started = time.time()
    for step in range(1, args.steps + 1):
        captions = torch.randint(0, len(texts), (32,))
        logits = 100 * texts[captions] @ pool(frames[caption_to_video[captions]]).t()
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        optimiser.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(head.parameters(), 1.0)
        optimiser.step()
        if step % 100 == 0:
            print(f"step {step}: loss {loss.item():.3f}, val pair {pair_accuracy(pool, val):.1f} %, "
                  f"train pair {pair_accuracy(pool, train):.1f} % ({time.time() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
