"""Built-in handwritten digits: the real 1,797 8×8 images that scikit-learn ships (no download)."""

from __future__ import annotations

import numpy as np

from visionkit.data.splits import SampleSet, complete_splits


class DigitsSource:
    """The UCI handwritten digits bundled with scikit-learn, as RGB uint8 images of 8×8 pixels.

    They are upscaled to `data.image_size` by the augmentation builder like any other image.
    """

    description = "built-in handwritten digits (scikit-learn, 1,797 images, 10 classes)"

    def class_names(self) -> list[str]:
        """Digit names "0".."9"."""
        return [str(d) for d in range(10)]

    def splits(self, val_fraction: float, test_fraction: float, seed: int) -> dict[str, SampleSet]:
        """Seeded stratified split of the 1,797 images."""
        from sklearn.datasets import load_digits

        bunch = load_digits()
        gray = np.clip(np.round(bunch.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        rgb = np.repeat(gray[..., None], 3, axis=3)
        pool = SampleSet(rgb, bunch.target.astype(np.int64))
        return complete_splits({"train": pool}, val_fraction, test_fraction, seed)
