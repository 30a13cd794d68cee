"""Score agreement of X-Pool's text-conditioned scores from float16 per-frame features
(what a search index stores in ``frames.npy``) with the same scores from float32 ones.

The synthetic downstream world's test split (one video of each reversal pair, with its
caption) is encoded once in
fp32; ``model.score_features`` then scores every caption against every video from the
fp32 frame features and from the same features rounded to float16. Printed: the largest
and mean absolute score difference (next to the spread of the scores), text-to-video
R@1/R@10 both ways, how many captions keep exactly the same top-10, and the mean overlap
of the two top-10 sets.

No trained X-Pool weights can be had here: the pooling head is X-Pool's identity
initialisation plus Gaussian noise (``--head-noise``, on every tensor of the head), so
that the pooling depends on the caption.

    python benchmarks/rerank_precision.py                                  # tiny-synthetic, 300 videos
    python benchmarks/rerank_precision.py --backbone ViT-B-32 --pairs 32   # random ViT-B/32 (224 px), 32 videos
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbone", default="tiny-synthetic", help="backbone source (a bare architecture: random)")
    ap.add_argument("--pairs", type=int, default=300, help="reversal pairs of the test split (one video of each is used)")
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--head-noise", type=float, default=0.1, help="std of the noise added to the pooling head")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import vop
    import vop.backbone
    from vop.data.synthetic import DownstreamWorld
    from vop.data.transforms import normalize, resize_center_crop
    from vop.search.store import FRAMES_DTYPE

    torch.manual_seed(args.seed)
    clip = vop.backbone.load(args.backbone, random_ok=True)
    model = vop.create("xpool", clip).eval()
    with torch.no_grad():
        for p in model.pool.parameters():
            p.add_(args.head_noise * torch.randn_like(p))
    res = clip.config.image_resolution
    world = DownstreamWorld(seed=args.seed, test_pairs=args.pairs, train_pairs=0, val_pairs=0)
    split = world.split("test")
    # One video of each reversal pair: X-Pool is order-blind, so a video and its reversal
    # score the same up to rounding, and their tie would be broken by that rounding alone.
    pairs = world.reversal_pairs("test")
    videos = [a for a, _, _, _ in pairs]
    captions = [split.captions[ca] for _, ca, _, _ in pairs]

    started = time.perf_counter()
    feats = []
    with torch.inference_mode():
        for i in range(0, len(videos), args.batch):
            raw = split.source.load_batch(videos[i:i + args.batch], args.frames)  # [B, F, H, W, 3]
            x = normalize(torch.stack([resize_center_crop(v, res) for v in raw]))
            feats.append(model.frame_features(x))
        feats = torch.cat(feats)  # [N, F, D] fp32
        text = model.text_features(model.tokenize(captions))
        s32 = model.score_features(text, feats, chunk=64).numpy()
        stored = torch.from_numpy(feats.numpy().astype(FRAMES_DTYPE).astype(np.float32))  # as frames.npy holds them
        s16 = model.score_features(text, stored, chunk=64).numpy()
    seconds = time.perf_counter() - started

    n = len(videos)
    target = np.arange(n)  # caption i describes video i

    def recall(s: np.ndarray, k: int) -> float:
        rank = (s > s[target, target][:, None]).sum(axis=1)
        return float((rank < k).mean())

    top32 = np.argsort(-s32, axis=1, kind="stable")[:, :10]
    top16 = np.argsort(-s16, axis=1, kind="stable")[:, :10]
    same_order = float((top32 == top16).all(axis=1).mean())
    overlap = float(np.mean([len(set(a) & set(b)) / len(a) for a, b in zip(top32, top16)]))  # top-min(10, N)
    diff = np.abs(s32 - s16)
    print(f"backbone {args.backbone} (D={clip.config.embed_dim}, {res} px), {n} videos x {args.frames} frames, "
          f"{n} captions, head noise {args.head_noise}; {seconds:.1f} s")
    print(f"frame features per video: {args.frames * clip.config.embed_dim * 4} B fp32, "
          f"{args.frames * clip.config.embed_dim * 2} B float16")
    print(f"|score fp16 - fp32|: max {diff.max():.2e}, mean {diff.mean():.2e}; score std {s32.std():.3f}, "
          f"range {s32.min():.3f}..{s32.max():.3f}")
    print(f"t2v R@1 fp32 {recall(s32, 1):.4f} fp16 {recall(s16, 1):.4f}; R@10 fp32 {recall(s32, 10):.4f} "
          f"fp16 {recall(s16, 10):.4f}")
    print(f"captions with the identical top-10 (order too): {same_order:.4f}; mean top-10 overlap: {overlap:.4f}")


if __name__ == "__main__":
    main()
