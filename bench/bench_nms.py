"""visionkit's NumPy NMS (`visionkit.inference.nms.yolo_nms`, what predictors of exported files run, with or
without PyTorch installed) against ultralytics' `non_max_suppression` (torch + torchvision, what a PyTorch
predictor runs) on the same decoded YOLO output: one image of 8,400 anchors (640 px), 5 and 80 classes, the
predictor's conf 0.25 and the validator's 0.001, single- and multi-label, iou 0.7, max_det 300. Both on the same
thread count, rounds interleaved with who goes first alternating; the kept rows are checked equal first.

Run:  .venv/bin/python bench/bench_nms.py [--rounds 7] [--threads 2]
"""

from __future__ import annotations

import argparse
import time
from functools import partial
from statistics import median

import numpy as np
import torch
import torchvision  # noqa: F401 (imported, ultralytics' NMS takes torchvision's kernel, as in its predictor)
from common import cpu_model
from ultralytics.utils.nms import non_max_suppression

from visionkit.inference.nms import yolo_nms

CASES = [  # classes, conf, multi_label
    (5, 0.25, False),
    (80, 0.25, False),
    (80, 0.001, False),
    (80, 0.001, True),
]


def decoded(classes: int, anchors: int = 8400, seed: int = 0) -> np.ndarray:
    """(1, 4 + classes, anchors) decoded output: boxes clustered on 40 objects, class scores mostly low."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(40, 600, (40, 2))
    xy = centres[rng.integers(0, 40, anchors)] + rng.normal(0, 6, (anchors, 2))
    wh = rng.uniform(20, 160, (anchors, 2))
    scores = rng.beta(0.3, 3.0, (anchors, classes))
    return np.concatenate([xy, wh, scores], 1).T[None].astype(np.float32)


def _sorted(rows: np.ndarray) -> np.ndarray:
    """Rows in a fixed order (score, then the box), whatever order equal scores came in."""
    return rows[np.lexsort(rows[:, ::-1].T)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}, {args.threads} threads, torch {torch.__version__}\n")
    print("| classes | conf | multi-label | boxes kept | NumPy (visionkit) ms | ultralytics ms | ultralytics ÷ NumPy |")
    print("|---|---|---|---|---|---|---|")
    for classes, conf, multi_label in CASES:
        array = decoded(classes)
        tensor = torch.from_numpy(array)

        ours = partial(lambda a, c, m: yolo_nms(a, c, 0.7, 300, m)[0], array, conf, multi_label)
        theirs = partial(non_max_suppression, tensor, conf, 0.7, max_det=300, multi_label=multi_label, max_time_img=60)

        kept, expected = ours(), theirs()
        # the same boxes (boxes of equal scores may come in either order: sorted before comparing), or no row
        np.testing.assert_allclose(_sorted(kept[0]), _sorted(expected[0].numpy()), atol=1e-4)
        times: dict[str, list[float]] = {"ours": [], "theirs": []}
        for round_index in range(args.rounds):
            order = [("ours", ours), ("theirs", theirs)]
            for name, run in order if round_index % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
        a, b = median(times["ours"]) * 1000, median(times["theirs"]) * 1000
        print(f"| {classes} | {conf} | {multi_label} | {len(kept[0])} | {a:.1f} | {b:.1f} | {b / a:.2f} |")


if __name__ == "__main__":
    main()
