"""Prompt checkpoints on the Hugging Face hub: publish one (``vop push``) and load one by
hub id (``vop.load("hf-hub:ORG/NAME")``).

A published checkpoint is the folder ``vop train`` writes, minus the training state:
``meta.json``, ``weights.safetensors`` and a generated ``README.md`` model card. The
backbone is not uploaded: ``meta.json`` names it by a source every receiver can fetch (a
pretrained tag such as ``ViT-B-32:openai``, a hub id, or the shipped ``tiny-synthetic``),
and the receiver's load checks the weight fingerprint, so a wrong backbone is refused
rather than used. A checkpoint trained on a local file must be pushed with
``backbone=`` naming where others get the same weights.

``huggingface_hub`` is the client (``pip install 'vop[hub]'``); offline mode
(``HF_HUB_OFFLINE=1`` / ``VOP_OFFLINE=1``) loads from the Hugging Face cache.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vop.backbone import identity
from vop.backbone import load as load_backbone
from vop.backbone.config import ARCHITECTURES
from vop.backbone.download import hub_cache_hint, is_offline
from vop.backbone.packaged import PACKAGED_FILES
from vop.backbone.pretrained import split_name
from vop.checkpoint import META, WEIGHTS, read_meta

__all__ = ["CHECKPOINT_FILES", "fetch_checkpoint", "hub_id", "prepare_upload", "push_checkpoint",
           "resolve_checkpoint"]

CHECKPOINT_FILES = (META, WEIGHTS)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def hub_id(source: str | os.PathLike) -> str | None:
    """``ORG/NAME`` when ``source`` names a hub repository (``hf-hub:ORG/NAME``, or a plain
    ``ORG/NAME`` that is not an existing path), else None."""
    text = os.fspath(source)
    if text.startswith("hf-hub:"):
        repo = text[len("hf-hub:"):]
        if not _HUB_ID.match(repo):
            raise ValueError(f"{text!r}: a hub id looks like hf-hub:ORG/NAME")
        return repo
    if _HUB_ID.match(text) and not Path(text).exists():
        return text
    return None


def _hub():
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError("checkpoints on the Hugging Face hub need the huggingface_hub package: "
                          "pip install 'vop[hub]' (or pip install huggingface_hub)") from exc
    return huggingface_hub


def fetch_checkpoint(repo_id: str, revision: str | None = None) -> Path:
    """The checkpoint folder of hub repository ``repo_id``, downloaded into (or, offline,
    found in) the Hugging Face cache."""
    hub = _hub()
    from huggingface_hub import errors

    try:
        folder = Path(hub.snapshot_download(repo_id, revision=revision, allow_patterns=[*CHECKPOINT_FILES, "README.md"],
                                            cache_dir=os.environ.get("HF_HUB_CACHE") or None,
                                            local_files_only=is_offline()))
    except errors.LocalEntryNotFoundError as exc:
        if not is_offline():  # online, but the hub could not be reached
            raise FileNotFoundError(f"hf-hub:{repo_id}: the Hugging Face hub could not be reached and the checkpoint "
                                    f"is not in the cache ({hub_cache_hint()}); check the network or HF_ENDPOINT"
                                    ) from exc
        raise FileNotFoundError(
            f"hf-hub:{repo_id} is not in the Hugging Face cache ({hub_cache_hint()}) and offline mode is on "
            "(HF_HUB_OFFLINE / VOP_OFFLINE); fetch it on a machine with internet first "
            f"(python -c \"import vop; vop.load('hf-hub:{repo_id}')\") and copy the cache") from exc
    except (errors.RepositoryNotFoundError, errors.RevisionNotFoundError) as exc:
        raise FileNotFoundError(f"hf-hub:{repo_id}: no such repository or revision on the hub "
                                f"({type(exc).__name__}); check the id (ORG/NAME)") from exc
    except errors.GatedRepoError as exc:
        raise PermissionError(f"hf-hub:{repo_id} is gated: accept its terms on the hub and log in "
                              "(`hf auth login` or HF_TOKEN)") from exc
    if not (folder / META).is_file():
        raise ValueError(f"hf-hub:{repo_id} holds no {META}: it is not a vop prompt checkpoint. A CLIP backbone "
                         f"repository loads with vop.backbone.load('hf-hub:{repo_id}')")
    return folder


def resolve_checkpoint(source: str | os.PathLike, revision: str | None = None) -> Path:
    """A checkpoint folder on disk: ``source`` itself, or the download of a hub id."""
    repo = hub_id(source)
    return fetch_checkpoint(repo, revision) if repo is not None else Path(source)


def _fetchable(source: str) -> bool:
    """Whether a receiver can get backbone ``source`` by name (not a path of this machine)."""
    if source in ARCHITECTURES or source in PACKAGED_FILES or split_name(source) is not None:
        return True
    try:
        return hub_id(source) is not None
    except ValueError:
        return False


def _model_card(meta: dict, repo_id: str) -> str:
    method = meta["method"]["method"]
    metrics = meta.get("metrics", {}).get("val", {})
    shown = ", ".join(f"{k} {v:.1f}" for k, v in metrics.items() if k.endswith(("_r1", "_r5", "pair_accuracy"))
                      and isinstance(v, (int, float)))
    count = meta.get("trainable_parameters")
    count = f"{count:,}" if isinstance(count, int) else "?"
    return f"""---
library_name: vop
tags: [text-video-retrieval, prompt-tuning, clip]
---
# {repo_id}

A `{method}` prompt checkpoint for [vop](https://pypi.org/project/vop/) (VoP: text-video
co-operative prompt tuning of a frozen CLIP): {count} trained parameters on
the frozen backbone `{meta['backbone']['source']}` (weight fingerprint `{meta['backbone']['fingerprint']}`).
Trained on `{meta.get('data', {}).get('benchmark', '?')}`{'; validation: ' + shown if shown else ''}.

```python
import vop
model = vop.load("hf-hub:{repo_id}")
```
"""


def prepare_upload(checkpoint: str | os.PathLike, staging: str | os.PathLike, *, repo_id: str = "ORG/NAME",
                   backbone: str | None = None, check_backbone: bool = True) -> dict[str, Any]:
    """Write what :func:`push_checkpoint` uploads into folder ``staging``: the weights, the
    meta (its backbone source replaced by ``backbone`` when given) and a model card.

    Refuses a checkpoint whose backbone a receiver could not fetch (a local file) unless
    ``backbone`` names it; with ``check_backbone``, ``backbone`` is loaded and must have the
    recorded weight fingerprint."""
    checkpoint, staging = Path(checkpoint), Path(staging)
    meta = read_meta(checkpoint)
    source = backbone or meta["backbone"]["source"]
    if not _fetchable(source):
        raise ValueError(
            f"{checkpoint} was trained on backbone {source!r}, a file of this machine that receivers cannot "
            "fetch; name where they get the same weights, e.g. --backbone ViT-B-32:openai or hf-hub:ORG/NAME "
            "(`vop weights list` shows the pretrained tags)")
    if backbone is not None and check_backbone:
        have = identity(load_backbone(backbone))["fingerprint"]
        if have != meta["backbone"]["fingerprint"]:
            raise ValueError(f"backbone {backbone!r} has weight fingerprint {have}, but {checkpoint} was trained on "
                             f"{meta['backbone']['fingerprint']} ({meta['backbone']['source']!r}): not the same weights")
    staging.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(checkpoint / WEIGHTS, staging / WEIGHTS)
    # This machine's paths stay here: the training config (data root, output folder) is
    # left out and the data record keeps what names the benchmark, not where it lies.
    data = {k: v for k, v in meta.get("data", {}).items() if k not in ("root", "video_dir", "cache_dir")}
    published = {k: v for k, v in meta.items() if k != "train_config"}
    published.update(backbone={**meta["backbone"], "source": source}, data=data)
    (staging / META).write_text(json.dumps(published, indent=2, sort_keys=True))
    (staging / "README.md").write_text(_model_card(published, repo_id))
    return published


def push_checkpoint(checkpoint: str | os.PathLike, repo_id: str, *, backbone: str | None = None,
                    private: bool = False, token: str | None = None, api: Any = None) -> str:
    """Publish a prompt checkpoint to hub repository ``repo_id`` (created if needed);
    returns its URL. ``api`` is a ``huggingface_hub.HfApi`` (tests pass a stand-in)."""
    if hub_id(f"hf-hub:{repo_id.removeprefix('hf-hub:')}") is None:
        raise ValueError(f"{repo_id!r} is not a hub repository id (ORG/NAME)")
    repo_id = repo_id.removeprefix("hf-hub:")
    api = api if api is not None else _hub().HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="vop-push-") as staging:
        meta = prepare_upload(checkpoint, staging, repo_id=repo_id, backbone=backbone)
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        api.upload_folder(folder_path=staging, repo_id=repo_id, repo_type="model",
                          commit_message=f"vop {meta['method']['method']} checkpoint")
    return f"https://huggingface.co/{repo_id}"
