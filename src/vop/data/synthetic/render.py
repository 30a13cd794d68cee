"""Drawing of the synthetic worlds: the visual vocabulary (shapes, colours, sizes,
positions) and a vectorised renderer that paints a batch of scenes at once.

A scene is ``K`` object slots. Each slot is a shape id and seven numbers,
``[r, g, b, x, y, radius, alpha]``: colour in 0..255, centre and radius as fractions of
the image side (so one scene description renders at any resolution), and an opacity
(0 = absent). Shapes are drawn from signed distance functions in pixel units, which gives
one pixel of anti-aliasing for free and makes sub-pixel jitter visible.
"""

from __future__ import annotations

from functools import lru_cache

import torch

__all__ = [
    "SHAPES",
    "COLOURS",
    "SIZES",
    "POSITIONS",
    "NUM_PARAMS",
    "render_scenes",
]

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "cross")

# Distinct in RGB: every pair differs by at least ~100 in some channel.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (40, 90, 255),
    "yellow": (240, 220, 40),
    "white": (235, 235, 235),
    "purple": (160, 50, 220),
}

# Radius (circumscribed-ish) as a fraction of the image side.
SIZES: dict[str, float] = {"small": 0.08, "large": 0.16}

# Centre (x, y) as fractions of the image side; y grows downwards. Caption phrases are
# the names themselves, so a move's end point and an image's position read the same.
POSITIONS: dict[str, tuple[float, float]] = {
    "on the left": (0.2, 0.5),
    "on the right": (0.8, 0.5),
    "at the top": (0.5, 0.2),
    "at the bottom": (0.5, 0.8),
    "in the center": (0.5, 0.5),
}

NUM_PARAMS = 7  # r, g, b, x, y, radius, alpha
_CHUNK = 64  # scenes per chunk: keeps the float intermediates (1 MB each at 64 px) in cache


@lru_cache(maxsize=8)
def _grid(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel-centre coordinates: xs ``[1, 1, S]`` and ys ``[1, S, 1]`` (float32, pixels)."""
    c = torch.arange(size, dtype=torch.float32) + 0.5
    return c.view(1, 1, size), c.view(1, size, 1)


# Signed distance (pixels; negative inside) of each shape centred at the origin.
# x: [B, 1, S], y: [B, S, 1], r: [B, 1, 1] -> [B, S, S]. Box distances use the Chebyshev
# form, exact inside and close enough outside for a one-pixel edge ramp. Each builds one
# full-size tensor and works in place on it: rendering is memory-bound.
def _sdf_circle(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.add(x * x, y * y).sqrt_().sub_(r)


def _sdf_square(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # half side 0.886 r: the same area as the circle of radius r
    return torch.maximum(x.abs(), y.abs()).sub_(0.886 * r)


def _sdf_triangle(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # Equilateral, apex up, circumradius 1.3 r (inradius 0.65 r): the maximum of three
    # half-plane distances; the two slanted edges fold into one |x| term.
    rho = 0.65 * r
    d = torch.add(0.866 * x.abs(), -0.5 * y - rho)  # slanted edges
    return torch.maximum(d, y - rho, out=d)  # base


def _sdf_cross(x: torch.Tensor, y: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    # A plus sign: two bars of half-length r and half-thickness 0.32 r.
    ax, ay = x.abs(), y.abs()
    w = 0.32 * r
    horizontal = torch.maximum(ax - r, ay - w)
    return torch.minimum(horizontal, torch.maximum(ax - w, ay - r), out=horizontal)


_SDFS = (_sdf_circle, _sdf_square, _sdf_triangle, _sdf_cross)
assert len(_SDFS) == len(SHAPES)


def render_scenes(shape_ids: torch.Tensor, params: torch.Tensor, image_size: int = 64) -> torch.Tensor:
    """Paint ``B`` scenes of ``K`` object slots on a black background.

    Args:
        shape_ids: ``[B, K]`` integer index into :data:`SHAPES`; ``-1`` leaves the slot empty.
        params: ``[B, K, 7]`` float ``[r, g, b, x, y, radius, alpha]`` (colour 0..255,
            geometry as fractions of the image side, alpha 0..1). Slots are painted in
            order, later ones over earlier ones.
        image_size: side ``S`` of the square output in pixels.

    Returns:
        ``[B, S, S, 3]`` uint8 images.
    """
    if shape_ids.dim() != 2 or params.shape != (*shape_ids.shape, NUM_PARAMS):
        raise ValueError(
            f"expected shape_ids [B, K] and params [B, K, {NUM_PARAMS}], got "
            f"{tuple(shape_ids.shape)} and {tuple(params.shape)}"
        )
    if image_size < 1:
        raise ValueError(f"image_size must be positive, got {image_size}")
    shape_ids = shape_ids.long()
    params = params.float()
    out = torch.empty(shape_ids.shape[0], image_size, image_size, 3, dtype=torch.uint8)
    for lo in range(0, shape_ids.shape[0], _CHUNK):
        hi = lo + _CHUNK
        out[lo:hi] = _render_chunk(shape_ids[lo:hi], params[lo:hi], image_size)
    return out


def _render_chunk(shape_ids: torch.Tensor, params: torch.Tensor, size: int) -> torch.Tensor:
    xs, ys = _grid(size)
    b, k_slots = shape_ids.shape
    geometry = params[..., 3:6] * size  # [B, K, 3] x, y, radius in pixels
    # Coverage of every slot (alpha times the anti-aliased shape mask), one channel each.
    cover: list[torch.Tensor | None] = []
    for k in range(k_slots):
        a = None
        for s, sdf in enumerate(_SDFS):
            rows = torch.nonzero((shape_ids[:, k] == s) & (params[:, k, 6] > 0)).flatten()
            if rows.numel() == 0:
                continue
            g = geometry[rows, k]  # [n, 3]
            x = xs - g[:, 0].view(-1, 1, 1)  # [n, 1, S]
            y = ys - g[:, 1].view(-1, 1, 1)  # [n, S, 1]
            d = sdf(x, y, g[:, 2].view(-1, 1, 1))  # [n, S, S]
            d = d.neg_().add_(0.5).clamp_(0.0, 1.0).mul_(params[rows, k, 6].view(-1, 1, 1))
            if rows.numel() == b:
                a = d
            else:
                if a is None:
                    a = torch.zeros(b, size, size)
                a[rows] = d
        cover.append(a)
    # Back to front: slot k shows through every later slot, weight a_k * prod_{j>k}(1 - a_j).
    # Channel-first so the colour broadcast runs over contiguous pixels.
    img: torch.Tensor | None = None  # [B, 3, S, S]
    behind: torch.Tensor | None = None  # prod (1 - a_j) over the later slots
    for k in reversed(range(k_slots)):
        a = cover[k]
        if a is None:
            continue
        w = (a if behind is None else a * behind).unsqueeze(1)  # [B, 1, S, S]
        colour = params[:, k, 0:3].reshape(b, 3, 1, 1)
        img = w * colour if img is None else img.addcmul_(w, colour)
        behind = (1.0 - a) if behind is None else behind.mul_(1.0 - a)
    if img is None:
        return torch.zeros(b, size, size, 3, dtype=torch.uint8)
    # Convex weights keep values in [0, 255]: truncating x + 0.5 rounds half up.
    return img.add_(0.5).to(torch.uint8).permute(0, 2, 3, 1)  # [B, S, S, 3]
