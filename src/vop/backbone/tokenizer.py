"""CLIP's byte-level BPE tokenizer.

The vocabulary, the pre-tokenisation pattern and the text cleanup are those of OpenAI
CLIP, so the ids match what a pretrained CLIP text tower was trained on:

- 256 byte symbols, the same 256 with the end-of-word marker ``</w>``, one token per
  BPE merge (48,894 of them) and ``<|startoftext|>`` (49406), ``<|endoftext|>`` (49407):
  49,408 tokens in all;
- text is cleaned (ftfy, HTML unescaping, whitespace collapsed, lower-cased), split into
  words by a regular expression, each word's UTF-8 bytes are mapped to printable
  characters and merged by BPE.

:func:`tokenize` turns captions into the ``(N, context_length)`` id matrix the text
tower reads. Nothing is read at import time; :func:`get_tokenizer` loads the merges
file on first use and keeps the one instance.
"""

from __future__ import annotations

import functools
import gzip
import html
import importlib.resources
from collections.abc import Iterable, Sequence
from pathlib import Path

import ftfy
import numpy as np
import regex
import torch

__all__ = ["Tokenizer", "get_tokenizer", "tokenize", "clean_text", "DEFAULT_MERGES_FILE"]

# Name of the merges file shipped in ``vop/backbone/assets``.
DEFAULT_MERGES_FILE = "bpe_simple_vocab_16e6.txt.gz"

# CLIP keeps the first 49152 - 256 - 2 merges so that the vocabulary is exactly 49,408.
_NUM_MERGES = 49152 - 256 - 2

_SOT = "<|startoftext|>"
_EOT = "<|endoftext|>"
_END_OF_WORD = "</w>"

# Pre-tokenisation: special tokens, English contractions, runs of letters, single digits
# (so numbers never become huge tokens), runs of anything else that is not whitespace.
# Every non-whitespace character is matched by some branch, so nothing is dropped.
_WORD_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)

# Text on which ftfy and html.unescape are provably no-ops: ASCII (ftfy's mojibake,
# width, ligature and quote fixes only touch non-ASCII), no '&' (no HTML entity), and
# no control character other than tab / newline (ftfy deletes or rewrites the others).
# Skipping ftfy there is the difference between ~25 us and ~1 us per caption.
_NEEDS_FTFY = regex.compile(r"[^\t\n\x20-\x7e]|&")
_WHITESPACE = regex.compile(r"\s+")


def _bytes_to_unicode() -> dict[int, str]:
    """The byte -> printable-character table of GPT-2/CLIP byte-level BPE.

    Printable Latin-1 bytes map to themselves; the other 68 bytes (controls, space,
    a few Latin-1 gaps) map to U+0100 onwards, in byte order, so that every byte is a
    visible, non-whitespace character the merges file can name. The insertion order
    (printable bytes first) is the order of the first 256 vocabulary ids.
    """
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\N{INVERTED EXCLAMATION MARK}"), ord("\N{NOT SIGN}") + 1),
        *range(ord("\N{REGISTERED SIGN}"), ord("\N{LATIN SMALL LETTER Y WITH DIAERESIS}") + 1),
    ]
    table = {b: chr(b) for b in printable}
    shifted = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + shifted)
            shifted += 1
    return table


def clean_text(text: str) -> str:
    """CLIP's cleanup: ftfy, HTML unescaped twice, whitespace collapsed, lower-cased.

    ``clean_text("A  Photo&amp;") == "a photo&"``.
    """
    if _NEEDS_FTFY.search(text) is not None:
        text = ftfy.fix_text(text)
        # Twice, as CLIP does: captions scraped from the web are often escaped twice.
        text = html.unescape(html.unescape(text))
    return _WHITESPACE.sub(" ", text).strip().lower()


class Tokenizer:
    """CLIP's byte-level BPE: ``encode`` text to ids and ``decode`` ids to text.

    Args:
        merges_path: gzip'd merges file (one ``"a b"`` pair per line after a header line);
            ``None`` uses the copy shipped with vop.
        cache_size: how many distinct words keep their BPE result in an LRU cache.
            Captions reuse a small vocabulary, so after warm-up nearly every word is a
            dictionary lookup instead of a merge loop.
    """

    sot_token_id: int = 49406
    eot_token_id: int = 49407

    def __init__(self, merges_path: str | Path | None = None, cache_size: int = 1 << 18):
        merges = _read_merges(merges_path)
        byte_encoder = _bytes_to_unicode()
        byte_symbols = list(byte_encoder.values())

        vocab = byte_symbols + [s + _END_OF_WORD for s in byte_symbols]
        vocab += ["".join(pair) for pair in merges]
        vocab += [_SOT, _EOT]

        self._encoder: dict[str, int] = {tok: i for i, tok in enumerate(vocab)}
        if len(self._encoder) != len(vocab):
            raise ValueError(f"merges file {merges_path} produces duplicate vocabulary entries")
        self._ranks: dict[tuple[str, str], int] = {pair: rank for rank, pair in enumerate(merges)}
        # Every id decodes to raw bytes plus whether it ends a word (adds a space), so
        # decoding never has to search for "</w>" inside already-joined text.
        byte_decoder = {ch: b for b, ch in byte_encoder.items()}
        self._decoder: list[tuple[bytes, bool]] = []
        for tok in vocab:
            if tok in (_SOT, _EOT):
                self._decoder.append((tok.encode("ascii"), False))
                continue
            ends_word = tok.endswith(_END_OF_WORD)
            body = tok[: -len(_END_OF_WORD)] if ends_word else tok
            self._decoder.append((bytes(byte_decoder[ch] for ch in body), ends_word))
        # str.translate over the Latin-1 view of the UTF-8 bytes maps a whole word in one
        # C call instead of a Python loop over its bytes.
        self._byte_table = dict(byte_encoder)
        self._pattern = regex.compile(_WORD_PATTERN, regex.IGNORECASE)
        self._word_ids = functools.lru_cache(maxsize=cache_size)(self._bpe_word)

        if self._encoder[_SOT] != self.sot_token_id or self._encoder[_EOT] != self.eot_token_id:
            raise ValueError(
                f"merges file {merges_path} gives a vocabulary of {len(vocab)} tokens; "
                f"CLIP's has {self.eot_token_id + 1}"
            )

    @property
    def vocab_size(self) -> int:
        """Number of token ids (49,408 for CLIP)."""
        return len(self._decoder)

    def _bpe_word(self, word: str) -> tuple[int, ...]:
        """Ids of one pre-tokenised word (a regex match, before byte mapping)."""
        if word == _SOT or word == _EOT:
            # CLIP lets the literal marker text through as the special token.
            return (self._encoder[word],)
        symbols = word.encode("utf-8").decode("latin-1").translate(self._byte_table)
        parts = list(symbols[:-1])
        parts.append(symbols[-1] + _END_OF_WORD)
        ranks = self._ranks
        # Greedy BPE: merge the adjacent pair learnt earliest, everywhere it occurs
        # (left to right, non-overlapping), until no adjacent pair is a known merge.
        while len(parts) > 1:
            best_rank = -1
            best: tuple[str, str] | None = None
            for pair in zip(parts, parts[1:]):
                rank = ranks.get(pair)
                if rank is not None and (best is None or rank < best_rank):
                    best_rank, best = rank, pair
            if best is None:
                break
            first, second = best
            merged: list[str] = []
            i, n = 0, len(parts)
            while i < n:
                if i < n - 1 and parts[i] == first and parts[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(parts[i])
                    i += 1
            parts = merged
        encoder = self._encoder
        return tuple(encoder[p] for p in parts)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` after CLIP's cleanup, without start/end tokens."""
        ids: list[int] = []
        word_ids = self._word_ids
        for word in self._pattern.findall(clean_text(text)):
            ids.extend(word_ids(word))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``: words joined by single spaces (CLIP puts a space after every
        pre-tokenised word, so ``"hello world!"`` decodes as ``"hello world !"``).

        Special tokens come out as their literal text; bytes that do not form valid
        UTF-8 (a cut multi-byte character) become U+FFFD.
        """
        out = bytearray()
        ends_word = False
        for token_id in ids:
            token_id = int(token_id)
            if not 0 <= token_id < len(self._decoder):
                raise ValueError(f"token id {token_id} is outside the vocabulary [0, {len(self._decoder)})")
            piece, ends_word = self._decoder[token_id]
            out += piece
            if ends_word:
                out += b" "
        if ends_word:
            # The last word's separator has nothing after it.
            del out[-1:]
        return out.decode("utf-8", errors="replace")

    def cache_info(self) -> functools._CacheInfo:
        """Hits/misses of the per-word BPE cache."""
        return self._word_ids.cache_info()


def _read_merges(merges_path: str | Path | None) -> list[tuple[str, str]]:
    """The first ``_NUM_MERGES`` merge pairs of a gzip'd merges file (header skipped)."""
    if merges_path is None:
        resource = importlib.resources.files("vop.backbone") / "assets" / DEFAULT_MERGES_FILE
        raw = resource.read_bytes()
    else:
        raw = Path(merges_path).read_bytes()
    lines = gzip.decompress(raw).decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : _NUM_MERGES + 1]]
    if len(merges) != _NUM_MERGES or any(len(m) != 2 for m in merges):
        raise ValueError(f"{merges_path or DEFAULT_MERGES_FILE} is not a CLIP merges file")
    return merges  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def get_tokenizer() -> Tokenizer:
    """The shared CLIP tokenizer, built from the bundled merges file on first call."""
    return Tokenizer()


def tokenize(
    texts: str | Sequence[str], context_length: int = 77, truncate: bool = True
) -> torch.Tensor:
    """Token ids for CLIP's text tower.

    Args:
        texts: one caption or a sequence of captions.
        context_length: row length; CLIP's text tower has 77 positions.
        truncate: cut over-long captions (keeping the end token as the last id, since
            CLIP pools the text feature at the end token's position) instead of raising.

    Returns:
        LongTensor ``(N, context_length)``: ``[49406, ids..., 49407, 0, ...]`` per caption
        (``N = 1`` for a single string).

    Raises:
        ValueError: ``context_length < 2``, or a caption does not fit and ``truncate`` is False.
    """
    if context_length < 2:
        raise ValueError(f"context_length must be >= 2 (start and end tokens), got {context_length}")
    if isinstance(texts, str):
        texts = [texts]
    tokenizer = get_tokenizer()
    sot, eot = tokenizer.sot_token_id, tokenizer.eot_token_id
    max_ids = context_length - 2

    # numpy rows filled in a loop, then one zero-copy conversion: per-row torch tensors
    # would cost several times more for tens of thousands of captions.
    result = np.zeros((len(texts), context_length), dtype=np.int64)
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"texts must be str or a sequence of str, got element {type(text).__name__}")
        ids = tokenizer.encode(text)
        if len(ids) > max_ids:
            if not truncate:
                raise ValueError(
                    f"Input {text[:60]!r} is too long for context length {context_length}: "
                    f"{len(ids) + 2} tokens with start and end tokens"
                )
            ids = ids[:max_ids]
        n = len(ids)
        result[row, 0] = sot
        result[row, 1 : n + 1] = ids
        result[row, n + 1] = eot
    return torch.from_numpy(result)
