"""Time :func:`vop.backbone.tokenizer.tokenize` on MSR-VTT-like captions.

Builds ``--n`` varied captions of about ten words (templated sentences plus two words
drawn from the whole BPE vocabulary; half also get a place, so thousands of distinct words reach the BPE
cache cold), then times tokenising them all with an empty word cache (cold) and again
with the cache filled (warm). Loading the merges file is timed separately.

    python benchmarks/tokenizer_speed.py [--n 20000] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import time

import vop.backbone.tokenizer as tokenizer_module
from vop.backbone.tokenizer import Tokenizer, tokenize

_SUBJECTS = [
    "a man", "a woman", "a girl", "a boy", "two people", "a group of kids", "a chef",
    "a cartoon character", "a dog", "a cat", "the players", "a reporter", "someone",
    "an old man", "a band", "a teenager", "the crowd", "a baby", "a news anchor",
]
_VERBS = [
    "is talking about", "is cooking", "plays with", "is driving", "walks past",
    "explains how to make", "sings about", "is showing", "throws", "looks at",
    "dances near", "is reviewing", "runs toward", "fixes", "draws", "laughs at",
]
_OBJECTS = [
    "a red car", "the football", "some pasta", "a guitar", "a video game", "the ocean",
    "a small puppy", "a new phone", "the stage", "a blue ball", "a recipe", "the camera",
    "a funny movie", "an airplane", "a big cake", "the weather", "a tennis racket",
]
_PLACES = [
    "in the kitchen", "on the street", "at night", "on a tv show", "in a classroom",
    "outside", "on the beach", "in front of a crowd", "during a game", "in the rain",
    "while others watch", "at the park", "in a studio", "on youtube",
]


def make_captions(n: int, seed: int) -> list[str]:
    """``n`` captions of ~10 words; two words per caption come from the BPE vocabulary."""
    rng = random.Random(seed)
    tok = tokenizer_module.get_tokenizer()
    # Whole-word vocabulary entries ("cat</w>") as a pool of rarer, varied words.
    pool = [
        text
        for token_id in range(512, tok.eot_token_id - 1)
        if (text := tok.decode([token_id])).isalpha() and tok.encode(text) == [token_id]
    ]
    captions = []
    for _ in range(n):
        parts = [rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS)]
        if rng.random() < 0.5:
            parts.append(rng.choice(_PLACES))
        parts.append(f"with {rng.choice(pool)} {rng.choice(pool)}")
        caption = " ".join(parts)
        if rng.random() < 0.3:
            caption = caption.capitalize() + "."
        captions.append(caption)
    return captions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000, help="number of captions")
    parser.add_argument("--seed", type=int, default=0, help="caption sampling seed")
    args = parser.parse_args()

    captions = make_captions(args.n, args.seed)
    words = sum(len(c.split()) for c in captions) / len(captions)
    distinct = len({w for c in captions for w in c.lower().rstrip(".").split()})
    print(f"{len(captions)} captions, {words:.1f} words each on average, {distinct} distinct words")

    # A fresh tokenizer behind get_tokenizer() so the first run starts with an empty cache.
    tokenizer_module.get_tokenizer.cache_clear()
    start = time.perf_counter()
    tokenizer_module.get_tokenizer()
    print(f"load merges file:    {time.perf_counter() - start:.3f} s")

    start = time.perf_counter()
    ids = tokenize(captions)
    cold = time.perf_counter() - start
    print(f"tokenize cold cache: {cold:.3f} s  ({ids.shape[0] / cold:,.0f} captions/s) -> {tuple(ids.shape)}")

    start = time.perf_counter()
    tokenize(captions)
    warm = time.perf_counter() - start
    print(f"tokenize warm cache: {warm:.3f} s  ({ids.shape[0] / warm:,.0f} captions/s)")
    info = tokenizer_module.get_tokenizer().cache_info()
    print(f"word cache: {info.currsize} entries, {info.hits} hits, {info.misses} misses")
    assert isinstance(tokenizer_module.get_tokenizer(), Tokenizer)


if __name__ == "__main__":
    main()
