"""Orchestration of identity embeddings after training: `gallery` (build, add, search a FAISS gallery of known
identities) and `verify` (are two images the same identity), for `visionkit-gallery` and `visionkit-verify`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from visionkit.config import check_config
from visionkit.data.files import list_images
from visionkit.errors import VisionkitError
from visionkit.inference.gallery import Gallery, identity_of
from visionkit.training.fit import plain
from visionkit.utils.io import atomic_write
from visionkit.utils.logging import get_logger

log = get_logger(__name__)
ACTIONS = ("build", "add", "search")


def embedding_predictor(ckpt_path: Any, cfg: DictConfig, key: str = "ckpt_path") -> Any:
    """The EmbeddingPredictor of `ckpt_path` (any other task's checkpoint is refused, naming it)."""
    from visionkit.inference import build_predictor, open_checkpoint

    state, task_cls, predictor_cls = open_checkpoint(ckpt_path, key)
    if predictor_cls.task_name != "embedding":
        raise VisionkitError(f"{key}: {ckpt_path} holds a {predictor_cls.task_name} model, not an embedding one")
    options = {k: plain(cfg[k]) for k in ("device", "batch_size", "precision", "skip_bad_images") if k in cfg}
    return build_predictor(state, task_cls, image_size=plain(cfg.get("image_size")), **options)


def _embedded(predictor: Any, source: str) -> tuple[Any, list[str]]:
    """(embeddings, sources) of the readable images under `source` (unreadable ones skipped or stopping)."""
    import numpy as np
    from rich.progress import track

    paths = list_images(source)
    found = [r for r in track(predictor.stream(paths), total=len(paths), description="embedding") if r.ok]
    vectors = np.stack([r.embedding for r in found]) if found else np.zeros((0, 1), np.float32)
    return vectors, [r.source for r in found]


def gallery(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-gallery build|add|search`: build a gallery folder from one folder per identity, add images to
    one, or search it for the nearest identities of each image of `source` (written to search.json)."""
    check_config(cfg)
    action = str(cfg.action)
    if action not in ACTIONS:
        raise VisionkitError(f"visionkit-gallery {action}: the actions are {', '.join(ACTIONS)}")
    if not cfg.get("out"):
        raise VisionkitError("out is not set: pass out=<gallery folder>")
    out = Path(str(cfg.out)).expanduser()
    if action == "build":
        predictor = embedding_predictor(cfg.get("ckpt_path"), cfg)
        vectors, sources = _embedded(predictor, str(cfg.source))
        root = Path(str(cfg.source)).expanduser()
        root = root if root.is_dir() else root.parent
        identities = [identity_of(s, root) for s in sources]
        threshold = predictor.threshold if cfg.get("threshold") is None else float(cfg.threshold)
        built = Gallery(vectors, identities, sources, threshold, str(cfg.ckpt_path), str(cfg.index))
        built.save(out)
        log.info(f"gallery {out}: {len(built)} images of {len(set(identities))} identities ({built.index_kind} index)")
        return {"images": float(len(built)), "identities": float(len(set(identities)))}
    known = Gallery.load(out, "out")
    predictor = embedding_predictor(cfg.get("ckpt_path") or known.checkpoint, cfg)
    vectors, sources = _embedded(predictor, str(cfg.source))
    if action == "add":
        root = Path(str(cfg.source)).expanduser()
        root = root if root.is_dir() else root.parent
        grown = known.added(vectors, [identity_of(s, root) for s in sources], sources)
        grown.save(out)
        log.info(f"gallery {out}: {len(grown) - len(known)} image(s) added, {len(grown)} in all")
        return {"images": float(len(grown)), "added": float(len(grown) - len(known))}
    threshold = known.threshold if cfg.get("threshold") is None else float(cfg.threshold)
    known.threshold = threshold
    records = []
    for source, matches in zip(sources, known.search(vectors, int(cfg.k))):
        identity, distance = known.decide(matches)
        records.append(
            {"path": source, "identity": identity, "distance": distance, "matches": [m.to_dict() for m in matches]}
        )
        nearest = ", ".join(f"{m.identity} {m.distance:.3f}" for m in matches)
        print(f"{source}: {identity} (nearest: {nearest}; threshold {threshold:.3f})", flush=True)
    output = Path(str(cfg.paths.output_dir))
    with atomic_write(output / "search.json", "w") as handle:
        json.dump(records, handle, indent=1)
    unknown = sum(r["identity"] == "unknown" for r in records)
    return {"queries": float(len(records)), "unknown": float(unknown)}


def verify(cfg: DictConfig) -> dict[str, float]:
    """`visionkit-verify a.jpg b.jpg ckpt_path=...`: whether the two images show the same identity."""
    check_config(cfg)
    images = [str(i) for i in plain(cfg.get("images")) or []]
    if len(images) != 2:
        raise VisionkitError(
            f"give two images to compare (visionkit-verify a.jpg b.jpg ckpt_path=...); got {len(images)}"
        )
    predictor = embedding_predictor(cfg.get("ckpt_path"), cfg)
    answer = predictor.verify(*images, threshold=cfg.get("threshold"))
    verdict = "the same identity" if answer["same"] else "not the same identity"
    sign = "≤" if answer["same"] else ">"
    print(
        f"{images[0]} and {images[1]}: {verdict} (distance {answer['distance']:.4f} {sign} threshold "
        f"{answer['threshold']:.4f})",
        flush=True,
    )
    return {"same": float(answer["same"]), "distance": answer["distance"], "threshold": answer["threshold"]}


def served_gallery(folder: Any, predictor: Any) -> str | None:
    """The gallery folder `visionkit-serve` answers `/search` from, checked before any worker starts (None when
    not given)."""
    if not folder:
        return None
    if predictor.task_name != "embedding":
        raise VisionkitError(
            f"gallery={folder}: a gallery is searched with an embedding checkpoint, not a {predictor.task_name} one"
        )
    Gallery.load(folder, "gallery")
    return str(Path(str(folder)).expanduser().resolve())


def with_detector(embedder: Any, cfg: DictConfig) -> Any:
    """`visionkit-predict ... detector=det.ckpt [gallery=...]`: the embedding predictor behind a detection
    checkpoint's boxes (`IdentityPredictor`), with the predict config's detection and device settings."""
    from visionkit.inference import build_predictor, open_checkpoint
    from visionkit.inference.faces import IdentityPredictor

    if embedder.task_name != "embedding":
        raise VisionkitError(
            f"detector= embeds each detected box: ckpt_path must be an embedding checkpoint, not {embedder.task_name}"
        )
    state, task_cls, predictor_cls = open_checkpoint(cfg.detector, "detector")
    if predictor_cls.task_name != "detection":
        raise VisionkitError(f"detector: {cfg.detector} holds a {predictor_cls.task_name} model, not a detector")
    keys = ("conf", "iou", "max_det", "device", "batch_size", "precision", "skip_bad_images", "num_workers")
    detector = build_predictor(state, task_cls, **{k: plain(cfg[k]) for k in keys if k in cfg})
    gallery = Gallery.load(cfg.gallery, "gallery") if cfg.get("gallery") else None
    if gallery is not None and cfg.get("threshold") is not None:
        gallery.threshold = float(cfg.threshold)
    return IdentityPredictor(embedder, detector, gallery, float(cfg.get("crop_margin", 0.2)))
