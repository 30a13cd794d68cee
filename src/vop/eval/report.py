"""Human-readable tables of retrieval metrics."""

from __future__ import annotations

DIRECTIONS = ("t2v", "v2t")
COLUMNS = ("r1", "r5", "r10", "mdr", "mnr")


def format_metrics(metrics: dict, title: str = "") -> str:
    lines = [title] if title else []
    lines.append(f"{'':5}" + "".join(f"{c.upper():>9}" for c in COLUMNS))
    for d in DIRECTIONS:
        lines.append(f"{d:5}" + "".join(f"{metrics[f'{d}_{c}']:>9.2f}" for c in COLUMNS))
    if "pair_accuracy" in metrics:
        lines.append(f"pair accuracy: {metrics['pair_accuracy']:.2f} %")
    lines.append(f"{metrics.get('num_captions', '?')} captions, {metrics.get('num_videos', '?')} videos"
                 + (f", {metrics['skipped_videos']} unreadable videos skipped" if metrics.get("skipped_videos") else ""))
    if metrics.get("post_processing"):
        lines.append(f"post-processing: {metrics['post_processing']} (not comparable to plain numbers)")
    return "\n".join(lines)
