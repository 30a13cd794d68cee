"""CLIP BPE tokenizer: known ids, row layout, truncation, cleanup, unicode round trips."""

from __future__ import annotations

import gzip
import html
import importlib.util
import random
from pathlib import Path

import ftfy
import pytest
import torch

import vop
from vop.backbone import tokenizer as tokenizer_module
from vop.backbone.tokenizer import Tokenizer, clean_text, get_tokenizer, tokenize

SOT, EOT = 49406, 49407
MERGES_PATH = Path(tokenizer_module.__file__).parent / "assets" / tokenizer_module.DEFAULT_MERGES_FILE


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return get_tokenizer()


@pytest.fixture(scope="module")
def merge_ids() -> dict[str, int]:
    """Token -> id read straight off the merges file: line k (0-based, header skipped) is
    id 512 + k. Kept independent of the tokenizer's own vocabulary building."""
    lines = gzip.decompress(MERGES_PATH.read_bytes()).decode("utf-8").split("\n")
    return {"".join(line.split()): 512 + k for k, line in enumerate(lines[1 : 49152 - 256 - 2 + 1])}


# Ids of OpenAI CLIP's tokenizer for these captions (the first is CLIP's README example).
KNOWN_IDS = [
    ("a photo of a cat", [320, 1125, 539, 320, 2368]),
    ("hello world!", [3306, 1002, 256]),
    ("a dog catches a frisbee", [320, 1929, 17213, 320, 45768]),
    ("a diagram", [320, 22697]),
    ("!", [256]),  # '!' is byte symbol 0, so '!</w>' is 256 + 0
]


def test_vocabulary_and_special_ids(tok: Tokenizer) -> None:
    assert tok.vocab_size == 49408
    assert (tok.sot_token_id, tok.eot_token_id) == (SOT, EOT)
    assert tok.decode([SOT]) == "<|startoftext|>"
    assert tok.decode([EOT]) == "<|endoftext|>"


@pytest.mark.parametrize("text,ids", KNOWN_IDS)
def test_known_ids(tok: Tokenizer, text: str, ids: list[int]) -> None:
    assert tok.encode(text) == ids
    row = tokenize(text)[0]
    assert row[: len(ids) + 2].tolist() == [SOT, *ids, EOT]


@pytest.mark.parametrize("word", ["cat", "dog", "photo", "hello", "world", "frisbee", "diagram", "catches"])
def test_common_words_are_their_merge_line(tok: Tokenizer, merge_ids: dict[str, int], word: str) -> None:
    assert tok.encode(word) == [merge_ids[word + "</w>"]]


def test_padding_and_shape() -> None:
    out = tokenize(["a cat", "a photo of a cat"])
    assert out.shape == (2, 77) and out.dtype == torch.long
    assert out[0, :4].tolist() == [SOT, 320, 2368, EOT]
    assert (out[0, 4:] == 0).all() and (out[1, 7:] == 0).all()
    assert tokenize("a cat", context_length=16).shape == (1, 16)


def test_empty_and_blank_strings() -> None:
    expected = [SOT, EOT] + [0] * 75
    assert tokenize("")[0].tolist() == expected
    assert tokenize("  \n\t ")[0].tolist() == expected


@pytest.mark.parametrize("context_length", [2, 3, 8, 77])
def test_truncation_keeps_end_token_last(tok: Tokenizer, context_length: int) -> None:
    text = "a dog runs after a red ball in the park " * 20
    row = tokenize(text, context_length=context_length)[0]
    assert row.shape == (context_length,)
    assert row[0] == SOT and row[-1] == EOT
    assert row[1:-1].tolist() == tok.encode(text)[: context_length - 2]


def test_exact_fit_is_not_truncated(tok: Tokenizer) -> None:
    text = " ".join(["cat"] * 75)
    row = tokenize(text, truncate=False)[0]
    assert row.tolist() == [SOT] + [2368] * 75 + [EOT]


def test_truncate_false_raises_with_details() -> None:
    text = "a very long caption about " + "many things " * 40
    with pytest.raises(ValueError) as err:
        tokenize(["short", text], truncate=False)
    message = str(err.value)
    assert text[:60] in message and "77" in message
    assert str(len(get_tokenizer().encode(text)) + 2) in message


@pytest.mark.parametrize("context_length", [1, 0, -5])
def test_context_length_below_two_rejected(context_length: int) -> None:
    with pytest.raises(ValueError, match="context_length"):
        tokenize("a cat", context_length=context_length)


@pytest.mark.parametrize(
    "word", ["café", "naïve", "crème brûlée", "猫が好き", "🐱", "👍🏽", "ελληνικά", "한국어", "e\u0301"]
)
def test_unicode_round_trips(tok: Tokenizer, word: str) -> None:
    ids = tok.encode(word)
    assert ids and all(0 <= i < 49406 for i in ids)
    assert tok.decode(ids) == clean_text(word)


def test_mixed_text_round_trips_up_to_word_spacing(tok: Tokenizer) -> None:
    # CLIP decodes with a space after every pre-tokenised word ("cat !"), so compare
    # with spaces removed; everything else must come back exactly.
    text = "Ｈｅｌｌｏ Café — 東京で🐱を見た! It's 2023, &amp; naïve…"
    decoded = tok.decode(tok.encode(text))
    assert "\ufffd" not in decoded
    assert decoded.replace(" ", "") == clean_text(text).replace(" ", "")


@pytest.mark.parametrize(
    "raw,clean",
    [
        ("A  Photo&amp;", "a photo&"),
        ("  A\tB\n\nC ", "a b c"),
        ("&amp;amp;", "&"),  # escaped twice
        ("cafÃ©", "café"),  # mojibake, fixed by ftfy
        ("ＬＯＵＤ　ＮＯＩＳＥＳ", "loud noises"),  # full-width
        ("it’s", "it's"),
    ],
)
def test_cleanup(raw: str, clean: str) -> None:
    assert clean_text(raw) == clean
    assert torch.equal(tokenize(raw), tokenize(clean))


def test_ascii_fast_path_skips_only_no_op_cleanup() -> None:
    # clean_text skips ftfy/html for plain ASCII; that is only valid if they change nothing there.
    rng = random.Random(0)
    alphabet = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "&") + "\t\n"
    for _ in range(300):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        assert tokenizer_module._NEEDS_FTFY.search(text) is None
        assert ftfy.fix_text(text) == text and html.unescape(text) == text


def test_single_string_equals_list_and_tuple() -> None:
    single = tokenize("a dog catches a frisbee")
    assert single.shape == (1, 77)
    assert torch.equal(single, tokenize(["a dog catches a frisbee"]))
    assert torch.equal(tokenize(("a cat", "a dog"))[1], tokenize("a dog")[0])
    assert tokenize([]).shape == (0, 77)
    assert torch.equal(vop.tokenize("a photo of a cat"), tokenize("a photo of a cat"))


def test_non_string_rejected() -> None:
    with pytest.raises(TypeError):
        tokenize(["a cat", 3])  # type: ignore[list-item]


def test_decode_rejects_unknown_ids(tok: Tokenizer) -> None:
    assert tok.decode(torch.tensor([320, 2368])) == "a cat"
    with pytest.raises(ValueError):
        tok.decode([49408])


def test_word_cache_is_used(tok: Tokenizer) -> None:
    tok.encode("zebra crossing")
    before = tok.cache_info().hits
    tok.encode("zebra crossing")
    assert tok.cache_info().hits >= before + 2


def test_import_reads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args, **kwargs):
        raise AssertionError("the merges file was read at import time")

    monkeypatch.setattr(gzip, "decompress", forbidden)
    monkeypatch.setattr(gzip, "open", forbidden)
    spec = importlib.util.spec_from_file_location("_fresh_vop_tokenizer", tokenizer_module.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.get_tokenizer.cache_info().currsize == 0
