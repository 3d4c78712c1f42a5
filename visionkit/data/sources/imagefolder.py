"""Class-per-folder datasets: `root/<class>/<image>`, or `root/{train,val,test}/<class>/<image>`."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from visionkit.data.splits import SPLITS, SampleSet, complete_splits
from visionkit.errors import VisionkitError
from visionkit.utils.io import IMAGE_EXTENSIONS


def _visible_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def images_under(folder: Path) -> list[str]:
    """Image files anywhere under `folder` (hidden ones left out), sorted."""
    return sorted(
        str(p)
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    )


def split_folders(root: Path, contents: str) -> dict[str, Path]:
    """The split folders under `root`: its `train/` (`val/`, `test/`) folders when it has them, else root itself
    as the one `train` pool. `contents` says what belongs directly under root in the second layout."""
    if not root.is_dir():
        raise VisionkitError(f"data.root: folder {root} does not exist")
    explicit = {name: root / name for name in SPLITS if (root / name).is_dir()}
    if explicit and "train" not in explicit:
        raise VisionkitError(
            f"data.root {root} has {sorted(explicit)} folders but no train/ folder; add train/ "
            f"or put {contents} directly under data.root"
        )
    return explicit or {"train": root}


class ImageFolderSource:
    """Images sorted into one folder per class (the torchvision ImageFolder layout).

    With `train/` (and optionally `val/`, `test/`) under `root`, those are the splits; any split that is
    missing is carved out of train by the seeded split. Without them, `root` itself holds the class
    folders and all three splits are drawn from it.
    """

    def __init__(self, root: str) -> None:
        if root in (None, "", "???"):
            raise VisionkitError("data.root is not set: pass data.root=/path/to/images (one folder per class)")
        self.root = Path(root).expanduser()
        self.description = f"image folders under {self.root}"
        self._class_names: list[str] | None = None

    def _layout(self) -> dict[str, Path]:
        return split_folders(self.root, "the class folders")

    def class_names(self) -> list[str]:
        """Names of the class folders under the training folder, sorted."""
        if self._class_names is None:
            train_dir = self._layout()["train"]
            names = [p.name for p in _visible_dirs(train_dir)]
            if not names:
                raise VisionkitError(
                    f"data.root {train_dir} has no class folders: expected {train_dir}/<class name>/<images>"
                )
            self._class_names = names
        return self._class_names

    def _read_split(self, folder: Path, names: list[str]) -> SampleSet:
        index = {name: i for i, name in enumerate(names)}
        paths: list[str] = []
        labels: list[int] = []
        for class_dir in _visible_dirs(folder):
            if class_dir.name not in index:
                raise VisionkitError(
                    f"class folder {class_dir} is not a class of the training folder ({', '.join(names)})"
                )
            found = images_under(class_dir)
            paths += found
            labels += [index[class_dir.name]] * len(found)
        if not paths:
            raise VisionkitError(
                f"no images found under {folder} (looked for {', '.join(IMAGE_EXTENSIONS)} inside class folders)"
            )
        return SampleSet(paths, np.asarray(labels, dtype=np.int64))

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Samples per split (explicit folders, or seeded stratified split)."""
        names = self.class_names()
        given = {name: self._read_split(folder, names) for name, folder in self._layout().items()}
        counts = np.bincount(given["train"].targets, minlength=len(names))
        empty = [names[i] for i in np.flatnonzero(counts == 0)]
        if empty:
            raise VisionkitError(
                f"class folder(s) {empty} under {self._layout()['train']} hold no images (looked for "
                f"{', '.join(IMAGE_EXTENSIONS)}): add images to them or remove them; every class folder is a class"
            )
        return complete_splits(given, val_fraction, test_fraction, seed)
