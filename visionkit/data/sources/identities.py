"""Identities for the embedding task: one folder per identity (`root/<identity>/<images>`), a CSV of
`path,identity[,split]`, or the built-in glyph identities. Splits are by identity, not by image: validation and
test identities are never trained on (an open set), and an LFW-style `pairs.txt` picks the test identities and
the verification pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visionkit.data.sources.csv import CsvSource
from visionkit.data.sources.imagefolder import images_under
from visionkit.data.splits import SPLITS, SampleSet
from visionkit.errors import VisionkitError

BUILTIN = {
    "glyphs": "built-in glyph identities (160 synthetic identities × 16 views, 32×32)",
    "patches": "built-in photo-patch identities (120 patches of scikit-learn's 2 photographs × 16 views, 32×32)",
}


@dataclass(frozen=True)
class IdentityScan:
    """What one split holds, for the scan summary the data module logs."""

    split: str
    identities: int
    images: int

    def summary(self) -> str:
        return f"{self.split}: {self.identities:,} identities, {self.images:,} images"


def read_pairs(path: Path, files: dict[str, list[str]]) -> list[tuple[str, str, bool]]:
    """(image a, image b, same identity) from an LFW `pairs.txt`: `name n1 n2` lines are pairs of one identity,
    `name1 n1 name2 n2` lines of two; image n of `name` is its file whose name ends in `_000n` (LFW's layout),
    else its n-th file in sorted order. A header line of counts is skipped."""
    if not path.is_file():
        raise VisionkitError(f"data.pairs: file {path} does not exist")

    def image(line: int, name: str, number: str) -> str:
        if name not in files:
            raise VisionkitError(f"{path}:{line}: identity {name!r} has no folder under data.root")
        if not number.isdigit():
            raise VisionkitError(f"{path}:{line}: image number {number!r} is not a number")
        n = int(number)
        named = [f for f in files[name] if Path(f).stem.endswith(f"_{n:04d}")]
        if named:
            return named[0]
        if not 1 <= n <= len(files[name]):
            raise VisionkitError(f"{path}:{line}: {name} has {len(files[name])} images, no image number {n}")
        return files[name][n - 1]

    pairs = []
    for line, text in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        fields = text.split()
        if not fields or all(f.isdigit() for f in fields):
            continue
        if len(fields) == 3:
            pairs.append((image(line, fields[0], fields[1]), image(line, fields[0], fields[2]), True))
        elif len(fields) == 4:
            pairs.append((image(line, fields[0], fields[1]), image(line, fields[2], fields[3]), False))
        else:
            raise VisionkitError(
                f"{path}:{line}: expected 'name n1 n2' (same identity) or 'name1 n1 name2 n2' (two), got {text!r}"
            )
    if not pairs:
        raise VisionkitError(f"data.pairs: {path} holds no pairs")
    return pairs


class IdentitySource:
    """Images of identities, split by identity with `val_fraction`/`test_fraction` of the identities (seeded):
    training identities are classes 0..K-1 (a margin loss keeps one weight per class), validation and test
    identities get ids from K on, never shared with training ones.

    root: one folder per identity. csv: rows of `path,identity` (an optional third column `split` puts an
    identity's rows in train, val or test). builtin: "glyphs" when neither is given. pairs: an LFW-style
    `pairs.txt` under the root's identities: its identities are the test split, its pairs the verification set.
    """

    task = "embedding"

    def __init__(
        self,
        root: str | None = None,
        csv: str | None = None,
        pairs: str | None = None,
        builtin: str = "glyphs",
        val_fraction: float = 0.1,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if root and csv:
            raise VisionkitError("give data.root (one folder per identity) or data.csv (path,identity rows), not both")
        if pairs and not root:
            raise VisionkitError("data.pairs names images as <identity> <number>: it needs data.root=<folders>")
        if not root and not csv and builtin not in BUILTIN:
            raise VisionkitError(f"data.builtin={builtin!r}: built-in identities are {', '.join(BUILTIN)}")
        if not 0 <= val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise VisionkitError(
                f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: each in [0, 1), sum below 1"
            )
        self.root = Path(root).expanduser() if root else None
        self.csv = CsvSource(csv) if csv else None
        self.pairs_file = Path(pairs).expanduser() if pairs else None
        self.builtin = builtin
        self.fractions = (val_fraction, test_fraction)
        self.seed = seed
        where = f"identity folders under {self.root}" if self.root else f"CSV {csv}" if csv else BUILTIN[builtin]
        self.description = where
        self.reports: dict[str, IdentityScan] = {}
        self._split: dict[str, SampleSet] | None = None
        self._names: list[str] = []
        self._pairs: list[tuple[str, str, bool]] | None = None

    def _pool(self) -> tuple[list[str] | np.ndarray, np.ndarray, list[str], dict[int, str]]:
        """(images, identity id per image, identity names, the split a CSV gives an identity)."""
        if self.root is not None:
            if not self.root.is_dir():
                raise VisionkitError(f"data.root: folder {self.root} does not exist")
            folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
            files = {folder.name: images_under(folder) for folder in folders}
            files = {name: found for name, found in files.items() if found}
            if not files:
                raise VisionkitError(f"data.root {self.root} has no identity folders with images (<identity>/<img>)")
            if self.pairs_file is not None:
                self._pairs = read_pairs(self.pairs_file, files)
            names = sorted(files)
            images = [path for name in names for path in files[name]]
            ids = np.concatenate([np.full(len(files[name]), i) for i, name in enumerate(names)])
            return images, ids.astype(np.int64), names, {}
        if self.csv is not None:
            rows = self.csv.read_rows()
            names = sorted({identity for _, _, identity, _ in rows})
            index = {name: i for i, name in enumerate(names)}
            paths: list[str] = []
            labels: list[int] = []
            given: dict[int, str] = {}
            for line, rel_path, identity, split in rows:
                path = self.csv.resolve(line, rel_path)
                if split is not None and given.setdefault(index[identity], split) != split:
                    raise VisionkitError(
                        f"{self.csv.csv}:{line}: identity {identity!r} is in split {given[index[identity]]} on an "
                        f"earlier row; an identity's images belong to one split (open-set evaluation)"
                    )
                paths.append(path)
                labels.append(index[identity])
            return paths, np.asarray(labels, dtype=np.int64), names, given
        from visionkit.data.glyphs import glyph_identities, photo_patch_identities

        if self.builtin == "patches":
            pictures, identities = photo_patch_identities(identities=120)
            return pictures, identities, [f"patch{i:03d}" for i in range(int(identities.max()) + 1)], {}
        pictures, identities = glyph_identities()
        return pictures, identities, [f"glyph{i:03d}" for i in range(int(identities.max()) + 1)], {}

    def _split_identities(self, count: int, given: dict[int, str], pair_names: set[int]) -> dict[str, np.ndarray]:
        """Identity ids per split: the CSV's split column and the pairs' identities first, the rest seeded."""
        fixed = {i: s for i, s in given.items()} | {i: "test" for i in pair_names}
        free = np.random.default_rng(self.seed).permutation([i for i in range(count) if i not in fixed])
        val_fraction, test_fraction = self.fractions
        n_test = 0 if pair_names or any(s == "test" for s in fixed.values()) else round(len(free) * test_fraction)
        n_val = 0 if any(s == "val" for s in fixed.values()) else round(len(free) * val_fraction)
        drawn = {"test": free[:n_test], "val": free[n_test : n_test + n_val], "train": free[n_test + n_val :]}
        return {
            name: np.sort(np.concatenate([drawn[name], [i for i, s in fixed.items() if s == name]])).astype(np.int64)
            for name in SPLITS
        }

    def _build(self) -> dict[str, SampleSet]:
        if self._split is not None:
            return self._split
        images, ids, names, given = self._pool()
        pair_ids: set[int] = set()
        if self._pairs is not None:
            owner = {path: ids[i] for i, path in enumerate(images)}
            pair_ids = {int(owner[p]) for a, b, _ in self._pairs for p in (a, b)}
        chosen = self._split_identities(len(names), given, pair_ids)
        if len(chosen["train"]) < 2:
            raise VisionkitError(
                f"{self.description}: {len(chosen['train'])} training identities; an embedding needs at least 2 "
                f"(found {len(names)} identities in all: add identities or lower data.val_fraction/test_fraction)"
            )
        order = np.concatenate([chosen[name] for name in SPLITS])  # training identities get ids 0..K-1
        new_id = np.empty(len(names), dtype=np.int64)
        new_id[order] = np.arange(len(order))
        self._names = [names[i] for i in chosen["train"]]
        self._split = {}
        for name in SPLITS:
            members = np.flatnonzero(np.isin(ids, chosen[name]))
            pool = SampleSet(images, new_id[ids]).subset(members)
            self._split[name] = pool
            self.reports[name] = IdentityScan(name, len(chosen[name]), len(members))
        for name in ("val", "test"):
            self._check_pairs_possible(name, ids[np.isin(ids, chosen[name])], len(names))
        return self._split

    def _check_pairs_possible(self, split: str, ids: np.ndarray, total: int) -> None:
        """A val or test split with identities must give both kinds of verification pair: two identities, one of
        them with two images (else its metrics, the monitored one among them, are never computed)."""
        counts = np.bincount(ids)[np.unique(ids)] if len(ids) else np.zeros(0, dtype=np.int64)
        if len(counts) == 0 or (len(counts) >= 2 and (counts >= 2).any()):
            return
        fraction = f"data.{split}_fraction={self.fractions[0 if split == 'val' else 1]}"
        raise VisionkitError(
            f"{self.description}: the {split} split holds {len(counts)} identit{'y' if len(counts) == 1 else 'ies'} "
            f"({int(counts.sum())} images); verifying needs pairs of one identity and pairs of two, so at least 2 "
            f"identities, one with 2+ images: raise {fraction} (of {total} identities) or add identities"
        )

    def class_names(self) -> list[str]:
        """The training identities' names, in class-id order (what a margin loss keeps a weight for)."""
        self._build()
        return list(self._names)

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Samples per split, split by identity with the source's own fractions and seed (the identity split
        decides the training classes, which are known before the data module asks for splits)."""
        return self._build()

    def pairs(self, split: str) -> list[tuple[str, str, bool]] | None:
        """The verification pairs (image path a, image path b, same) of `pairs.txt` for the test split, else None."""
        self._build()
        return self._pairs if split == "test" else None
