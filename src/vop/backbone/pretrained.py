"""Known pretrained CLIP weights, named as open_clip names them: ``(architecture, tag)``,
also written ``ARCH:TAG`` (``ViT-B-32:openai``).

Each row records where the file comes from, its published checksum (OpenAI's URLs carry
their sha256; the LAION weights on the Hugging Face hub publish none beyond the hub's own),
and what the tensors cannot tell: the MLP activation and the attention heads. Sources:
``openai/CLIP`` ``clip/clip.py`` and ``mlfoundations/open_clip`` ``pretrained.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vop.backbone.config import ARCHITECTURES
from vop.backbone.download import OPENAI_BASE_URL, cache_dir, fetch_hub_file, fetch_url, hub_cache_hint

__all__ = ["PRETRAINED", "PretrainedWeights", "fetch", "format_table", "get", "split_name", "tags"]

QUICKGELU_SUFFIX = "-quickgelu"
# open_clip's hub files: safetensors first (newer uploads), the pickle otherwise.
OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


@dataclass(frozen=True)
class PretrainedWeights:
    """One row of the table."""

    architecture: str  # a name in vop.backbone.ARCHITECTURES
    tag: str  # open_clip's pretrained tag
    activation: str  # MLP activation the weights were trained with
    vision_heads: int  # image-tower attention heads
    text_heads: int  # text-tower attention heads
    image_size: int  # input side in pixels
    url: str = ""  # a plain download (OpenAI's releases)
    sha256: str | None = None  # published digest of the file at ``url``
    hf_hub: str = ""  # a Hugging Face hub repository holding open_clip files
    normalization: str = "openai"  # pixel mean/std: "openai" or "inception" (0.5, 0.5, 0.5)

    @property
    def name(self) -> str:
        return f"{self.architecture}:{self.tag}"

    @property
    def source(self) -> str:
        return self.url if self.url else f"hf-hub:{self.hf_hub}"

    def cache_path(self) -> Path:
        """Where a URL download is kept (hub files live in the Hugging Face cache)."""
        return cache_dir() / "openai" / self.url.rsplit("/", 1)[-1]


def _openai(arch: str, digest: str, filename: str, vision_heads: int, text_heads: int, size: int = 224):
    return PretrainedWeights(arch, "openai", "quick_gelu", vision_heads, text_heads, size,
                             url=f"{OPENAI_BASE_URL}/{digest}/{filename}", sha256=digest)


def _laion(arch: str, tag: str, repo: str, vision_heads: int, text_heads: int, normalization: str = "openai"):
    return PretrainedWeights(arch, tag, "gelu", vision_heads, text_heads, 224, hf_hub=repo,
                             normalization=normalization)


PRETRAINED: dict[tuple[str, str], PretrainedWeights] = {(w.architecture, w.tag): w for w in [
    _openai("ViT-B-32", "40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", "ViT-B-32.pt", 12, 8),
    _openai("ViT-B-16", "5806e77cd80f8b59890b7e101eabd078d9fb84e6937f9e85e4ecb61988df416f", "ViT-B-16.pt", 12, 8),
    _openai("ViT-L-14", "b8cca3fd41ae0c99ba7e8951adf17d267cdb84cd88be6f7c2e0eca1737a03836", "ViT-L-14.pt", 16, 12),
    _openai("ViT-L-14-336", "3035c92b350959924f9f00213499208652fc7ea050643e8b385c2dac08641f02",
            "ViT-L-14-336px.pt", 16, 12, size=336),
    _laion("ViT-B-32", "laion2b_s34b_b79k", "laion/CLIP-ViT-B-32-laion2B-s34B-b79K", 12, 8),
    _laion("ViT-B-16", "laion2b_s34b_b88k", "laion/CLIP-ViT-B-16-laion2B-s34B-b88K", 12, 8),
    _laion("ViT-L-14", "laion2b_s32b_b82k", "laion/CLIP-ViT-L-14-laion2B-s32B-b82K", 16, 12, "inception"),
    _laion("ViT-H-14", "laion2b_s32b_b79k", "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", 16, 16),
]}


def clean_tag(tag: str) -> str:
    """open_clip's tag normalisation: lower case, ``-`` as ``_``."""
    return tag.strip().lower().replace("-", "_")


def tags(architecture: str) -> list[str]:
    """The pretrained tags known for ``architecture``."""
    base = architecture.removesuffix(QUICKGELU_SUFFIX)
    return [t for (a, t) in PRETRAINED if a == base]


def split_name(source: str) -> tuple[str, str] | None:
    """``"ViT-B-32:openai"`` -> ``("ViT-B-32", "openai")`` when the left side is an
    architecture (optionally ``-quickgelu``); ``None`` otherwise."""
    if ":" not in source:
        return None
    arch, tag = source.split(":", 1)
    if arch.removesuffix(QUICKGELU_SUFFIX) not in ARCHITECTURES or not tag:
        return None
    return arch, tag


def get(architecture: str, tag: str) -> PretrainedWeights:
    """The row for ``architecture`` and ``tag``; a clear error listing the known ones."""
    base = architecture.removesuffix(QUICKGELU_SUFFIX)
    row = PRETRAINED.get((base, clean_tag(tag)))
    if row is None:
        known = ", ".join(w.name for w in PRETRAINED.values())
        raise ValueError(f"no pretrained weights {architecture}:{tag} in vop's table; known: {known} "
                         "(`vop weights list`). Other weights load from a file or a hub id (hf-hub:ORG/NAME).")
    if architecture.endswith(QUICKGELU_SUFFIX) and row.activation != "quick_gelu":
        raise ValueError(f"{row.name} was trained with {row.activation}; {architecture} would run it with "
                         f"QuickGELU and give wrong embeddings. Use {base} instead.")
    return row


def fetch(row: PretrainedWeights, progress: bool = True) -> Path:
    """The local file of ``row``: downloaded and verified once, then taken from the cache."""
    hint = f"vop weights fetch {row.architecture} --pretrained {row.tag}"
    if row.url:
        return fetch_url(row.url, row.cache_path(), row.sha256, progress=progress, fetch_hint=hint)
    path = fetch_hub_file(row.hf_hub, OPEN_CLIP_FILES)
    if path is None:
        raise FileNotFoundError(
            f"{row.name}: hf-hub:{row.hf_hub} holds none of {list(OPEN_CLIP_FILES)} in the Hugging Face cache "
            f"({hub_cache_hint()}) or online. Offline: run `{hint}` (or `hf download {row.hf_hub} "
            f"{OPEN_CLIP_FILES[0]}`) where there is internet and copy that cache folder here.")
    return path


def format_table() -> str:
    """The table as text (``vop weights list``)."""
    header = ("name", "activation", "heads (image/text)", "image", "checksum", "source")
    rows = [(w.name, w.activation, f"{w.vision_heads}/{w.text_heads}", f"{w.image_size} px",
             f"sha256 {w.sha256[:12]}..." if w.sha256 else "none published", w.source)
            for w in PRETRAINED.values()]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(wd) for c, wd in zip(r[:-1], widths)) + "  " + r[-1] for r in [header, *rows]]
    notes = [w.name for w in PRETRAINED.values() if w.normalization != "openai"]
    if notes:
        lines.append(f"normalise pixels with mean = std = 0.5 (not OpenAI's) for: {', '.join(notes)}")
    return "\n".join(lines)
