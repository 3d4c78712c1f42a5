"""A gallery of known identities: their images' embeddings, a FAISS index over them, and search for the nearest
identities of a query ("unknown" past the checkpoint's threshold). Saved as a folder (`embeddings.npy`,
`gallery.json`, `index.faiss`) replaced atomically, so an interrupted `add` leaves the previous gallery whole."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_dir

ACTIONS = ("build", "add", "search")  # visionkit-gallery's
INDEX_KINDS = ("auto", "flat", "hnsw", "ivf")
FLAT_LIMIT = 100_000  # exact search up to this many embeddings; HNSW past it (recall measured: docs/benchmarks.md)
UNKNOWN = "unknown"
FORMAT_VERSION = 1


def _faiss() -> Any:
    """The faiss module, its loader's INFO lines silenced (each run printed which CPU build it tried and the
    ModuleNotFoundError of the one it skipped, which reads as a failure)."""
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    import faiss

    return faiss


def faiss_index(vectors: np.ndarray, kind: str = "auto") -> Any:
    """A FAISS index over unit `vectors` by inner product (= cosine similarity): exact (`flat`), HNSW graph
    (`hnsw`, 32 links, efSearch 128) or inverted lists (`ivf`, √n·4 lists, 16 probed); `auto`: flat up to
    FLAT_LIMIT vectors, HNSW past it."""
    faiss = _faiss()

    if kind not in INDEX_KINDS:
        raise VisionkitError(f"index={kind!r} is not one of {', '.join(INDEX_KINDS)}")
    count, dim = vectors.shape
    if kind == "auto":
        kind = "flat" if count <= FLAT_LIMIT else "hnsw"
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    index: Any
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 80
        index.hnsw.efSearch = 128
    else:
        lists = max(1, min(count // 39, int(4 * math.sqrt(count))))  # FAISS wants ≥ 39 training points per list
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        index.train(vectors)
        index.nprobe = min(16, lists)
    index.add(vectors)
    return index


@dataclass
class Match:
    """One known identity near a query: its name, the cosine distance of its nearest image, that image."""

    identity: str
    distance: float
    source: str

    def to_dict(self) -> dict[str, Any]:
        return {"identity": self.identity, "distance": round(self.distance, 6), "source": self.source}


class Gallery:
    """Embeddings of known images with the identity of each (`identities`) and where it came from (`sources`).
    `threshold`: the cosine distance under which a query is one of them (the checkpoint's, for its FAR)."""

    def __init__(
        self,
        embeddings: np.ndarray,
        identities: list[str],
        sources: list[str],
        threshold: float,
        checkpoint: str = "",
        index: str = "auto",
    ) -> None:
        if len(embeddings) != len(identities) or len(identities) != len(sources):
            raise VisionkitError("a gallery needs one identity and one source per embedding")
        self.embeddings = np.ascontiguousarray(embeddings, dtype=np.float32).reshape(len(identities), -1)
        self.identities, self.sources = list(identities), list(sources)
        self.threshold, self.checkpoint, self.index_kind = float(threshold), checkpoint, index
        self._index: Any = None

    def __len__(self) -> int:
        return len(self.identities)

    @property
    def index(self) -> Any:
        """The FAISS index, built at first use."""
        if self._index is None:
            if not len(self):
                raise VisionkitError("the gallery is empty: build it from a folder of identities first")
            self._index = faiss_index(self.embeddings, self.index_kind)
        return self._index

    def added(self, embeddings: np.ndarray, identities: list[str], sources: list[str]) -> Gallery:
        """A gallery with these images too; images whose source is already in it are left out."""
        known = set(self.sources)
        keep = [i for i, s in enumerate(sources) if s not in known]
        new = np.asarray(embeddings, np.float32).reshape(len(sources), -1)[keep]
        stacked = np.concatenate([self.embeddings, new.reshape(len(keep), self.embeddings.shape[1])])
        return Gallery(
            stacked,
            self.identities + [identities[i] for i in keep],
            self.sources + [sources[i] for i in keep],
            self.threshold,
            self.checkpoint,
            self.index_kind,
        )

    def search(self, queries: np.ndarray, k: int = 5) -> list[list[Match]]:
        """For each query embedding, its `k` nearest identities (each at its nearest image), nearest first."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        depth = min(len(self), max(8 * k, 32))
        sims, found = self.index.search(queries, depth)
        results = []
        for row_sims, row_found in zip(sims, found):
            best: dict[str, Match] = {}
            for sim, i in zip(row_sims.tolist(), row_found.tolist()):
                if i >= 0 and self.identities[i] not in best:
                    best[self.identities[i]] = Match(self.identities[i], max(0.0, 1.0 - sim), self.sources[i])
            results.append(sorted(best.values(), key=lambda m: m.distance)[:k])
        return results

    def decide(self, matches: list[Match]) -> tuple[str, float]:
        """The identity a query is judged to be (`unknown` when its nearest is past the threshold) and its distance."""
        if not matches:
            return UNKNOWN, math.inf
        top = matches[0]
        within = not math.isnan(self.threshold) and top.distance <= self.threshold
        return (top.identity if within else UNKNOWN), top.distance

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the gallery folder (replacing one that is there, atomically)."""
        faiss = _faiss()

        folder = Path(folder).expanduser()
        with atomic_dir(folder) as tmp:
            np.save(tmp / "embeddings.npy", self.embeddings)
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            meta = {
                "format": FORMAT_VERSION,
                "checkpoint": self.checkpoint,
                "threshold": self.threshold,
                "index": self.index_kind,
                "dim": int(self.embeddings.shape[1]),
                "identities": self.identities,
                "sources": self.sources,
            }
            (tmp / "gallery.json").write_text(json.dumps(meta, indent=1))
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike[str], key: str = "gallery") -> Gallery:
        """A gallery folder written by `save` (its FAISS index read back, not rebuilt)."""
        faiss = _faiss()

        folder = Path(folder).expanduser()
        meta_file = folder / "gallery.json"
        if not meta_file.is_file():
            raise VisionkitError(
                f"{key}: {folder} is not a gallery (no gallery.json); build one with visionkit-gallery"
            )
        meta = json.loads(meta_file.read_text())
        embeddings = np.load(folder / "embeddings.npy", allow_pickle=False)
        gallery = cls(embeddings, meta["identities"], meta["sources"], meta["threshold"], meta["checkpoint"])
        gallery.index_kind = meta.get("index", "auto")
        gallery._index = faiss.read_index(str(folder / "index.faiss"))
        return gallery


def identity_of(path: str, root: Path) -> str:
    """An image's identity: its folder below the gallery's source root (one folder per identity), or the file's
    own name for images directly in it."""
    relative = Path(path).resolve().relative_to(root.resolve())
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def embedded_images(predictor: Any, source: str) -> tuple[np.ndarray, list[str], list[str]]:
    """(embeddings, sources, identities) of the readable images under `source` (a folder of identity folders, an
    image or a glob), with a progress bar; unreadable ones stop, or are skipped with `skip_bad_images`."""
    from rich.progress import track

    from visionkit.data.files import list_images

    paths = list_images(source)
    embeddings, sources = [], []
    for result in track(predictor.stream(paths), total=len(paths), description="embedding"):
        if result.ok:  # only the vector is kept, not the result with its decoded photo: galleries grow large
            embeddings.append(result.embedding)
            sources.append(result.source)
    vectors = np.stack(embeddings) if embeddings else np.zeros((0, 1), np.float32)
    root = Path(source).expanduser()
    root = root if root.is_dir() else root.parent
    return vectors, sources, [identity_of(path, root) for path in sources]


def search_records(gallery: Gallery, vectors: np.ndarray, sources: list[str], k: int) -> list[dict[str, Any]]:
    """Per query: its path, the identity it is judged to be (`unknown` past the threshold), the distance and the
    `k` nearest identities."""
    records = []
    for source, matches in zip(sources, gallery.search(vectors, k)):
        identity, distance = gallery.decide(matches)
        found = [m.to_dict() for m in matches]
        records.append({"path": source, "identity": identity, "distance": distance, "matches": found})
    return records
