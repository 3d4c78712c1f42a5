"""Built-in identities for the embedding task: each identity is a glyph (a few coloured strokes and shapes in
fixed places), or a patch of one of the two photographs scikit-learn ships (real texture), and each image one view
of it under a new pose, lighting, background and noise. An open set in the small: a network must learn what stays
the same across views, not the views, to match identities it never trained on. Deterministic, made in memory in
about a second."""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

IDENTITIES = 160
IMAGES_PER_IDENTITY = 16
SIZE = 32
_CANVAS = 64  # drawn at twice the size, then warped and reduced: smooth edges


def _glyph(rng: np.random.Generator) -> list[tuple[str, tuple[float, ...], tuple[int, int, int]]]:
    """An identity's parts: 3 to 4 (kind, geometry, colour) strokes, discs and polygons on the canvas."""
    parts: list[tuple[str, tuple[float, ...], tuple[int, int, int]]] = []
    for _ in range(int(rng.integers(3, 5))):
        kind = str(rng.choice(["disc", "bar", "triangle", "ring"]))
        cx, cy = rng.uniform(16, 48, 2)
        size = float(rng.uniform(6, 14))
        angle = float(rng.uniform(0, math.pi))
        red, green, blue = (int(v) for v in rng.integers(30, 256, 3))
        parts.append((kind, (float(cx), float(cy), size, angle), (red, green, blue)))
    return parts


def _draw(parts: list, background: tuple[int, int, int]) -> np.ndarray:
    image = Image.new("RGB", (_CANVAS, _CANVAS), background)
    draw = ImageDraw.Draw(image)
    for kind, (cx, cy, size, angle), colour in parts:
        if kind in ("disc", "ring"):
            box = [cx - size, cy - size, cx + size, cy + size]
            draw.ellipse(box, fill=colour if kind == "disc" else None, outline=colour, width=3)
        elif kind == "bar":
            dx, dy = math.cos(angle) * size * 1.4, math.sin(angle) * size * 1.4
            draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=colour, width=4)
        else:
            corners = [
                (cx + size * math.cos(angle + k * 2 * math.pi / 3), cy + size * math.sin(angle + k * 2 * math.pi / 3))
                for k in range(3)
            ]
            draw.polygon(corners, fill=colour)
    return np.asarray(image, dtype=np.float32)


def _view(glyph: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One view: rotated ±25°, scaled 0.8-1.2, shifted ±4 px, lit ×0.6-1.4 with a colour cast, noise, 32×32."""
    import cv2

    centre = (_CANVAS / 2 + rng.uniform(-4, 4), _CANVAS / 2 + rng.uniform(-4, 4))
    matrix = cv2.getRotationMatrix2D(centre, float(rng.uniform(-25, 25)), float(rng.uniform(0.8, 1.2)))
    fill = tuple(float(v) for v in rng.uniform(0, 90, 3))
    warped = cv2.warpAffine(glyph, matrix, (_CANVAS, _CANVAS), borderValue=fill)
    lit = warped * rng.uniform(0.6, 1.4) + rng.uniform(-25, 25, 3) + rng.normal(0, 10, warped.shape)
    small = cv2.resize(np.clip(lit, 0, 255), (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.clip(np.round(small), 0, 255).astype(np.uint8)


def glyph_identities(
    identities: int = IDENTITIES, per_identity: int = IMAGES_PER_IDENTITY, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(N×32×32×3 uint8 images, N identity ids): `per_identity` views of each of `identities` glyphs."""
    images, labels = [], []
    for identity in range(identities):
        rng = np.random.default_rng([seed, identity])
        glyph = _draw(_glyph(rng), (0, 0, 0))
        for _ in range(per_identity):
            images.append(_view(glyph, rng))
            labels.append(identity)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def photo_patch_identities(
    identities: int = IDENTITIES, per_identity: int = IMAGES_PER_IDENTITY, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(N×32×32×3 uint8 images, N identity ids): views of 64×64 patches of scikit-learn's two sample photographs
    (a temple in China, a flower), each patch an identity, drawn without overlap from a seeded grid."""
    from sklearn.datasets import load_sample_images

    photos = [np.asarray(p, dtype=np.float32) for p in load_sample_images().images]
    cells = [(k, y, x) for k, p in enumerate(photos) for y in range(0, p.shape[0] - _CANVAS + 1, _CANVAS)
             for x in range(0, p.shape[1] - _CANVAS + 1, _CANVAS)]  # fmt: skip
    chosen = np.random.default_rng(seed).permutation(len(cells))[:identities]
    images, labels = [], []
    for identity, cell in enumerate(chosen):
        k, y, x = cells[cell]
        patch = photos[k][y : y + _CANVAS, x : x + _CANVAS]
        rng = np.random.default_rng([seed, identity, 1])
        for _ in range(per_identity):
            images.append(_view(patch, rng))
            labels.append(identity)
    return np.stack(images), np.asarray(labels, dtype=np.int64)
