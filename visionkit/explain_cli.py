"""`visionkit-explain ckpt_path=best.ckpt source=photo.jpg`: first-layer filters, feature maps, Grad-CAM and
the receptive-field table of a classification, detection or segmentation checkpoint, or of the VGG19 used
for style transfer (`model=vgg19`). Settings are given as key=value (like the other commands) or --flags."""

from __future__ import annotations

import argparse
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from visionkit.console import run_console
from visionkit.errors import VisionkitError

if TYPE_CHECKING:
    from visionkit.explain.subjects import Subject

PROG = "visionkit-explain"
_SETTING = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)=(.*)$")


def build_parser() -> argparse.ArgumentParser:
    """The command line, with its defaults."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="See inside a network: first-layer filters, feature maps of chosen layers (edges → textures "
        "→ parts), Grad-CAM heat maps and every conv/pool layer's output shape and receptive field.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--ckpt-path", default=None, help="a visionkit checkpoint (classification, detection, segmentation)")
    p.add_argument("--model", default=None, choices=("vgg19",), help="explain the VGG19 style transfer uses instead")
    p.add_argument("--weights", default="imagenet", help="VGG19 weights: imagenet (torch hub cache), a file, random")
    p.add_argument("--source", default=None, help="image file, folder or glob pattern")
    p.add_argument("-o", "--output-dir", default="explain", help="folder for the results (one subfolder per image)")
    p.add_argument("--layers", nargs="+", default=None, help="layers whose feature maps to draw (default: early, "
                   "middle, deep conv; see --list-layers)")  # fmt: skip
    p.add_argument("--list-layers", action="store_true", help="print the layer names --layers takes, and stop")
    p.add_argument("--cam-layers", nargs="+", default=None, help="layers Grad-CAM reads (default per task)")
    p.add_argument("--top-k", type=int, default=3, help="Grad-CAMs of the top-k classes (detection: boxes)")
    p.add_argument("--target-class", nargs="+", default=[], help="Grad-CAM for these classes (names or ids)")
    p.add_argument("--conf", type=float, default=0.25, help="detection: lowest box score explained")
    p.add_argument("--image-size", type=int, default=None, help="network input size (default: the training size)")
    p.add_argument("--max-channels", type=int, default=32, help="feature-map channels drawn per layer")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    return p


def normalize_argv(argv: Sequence[str]) -> list[str]:
    """`key=value` settings (Hydra style, as in visionkit-predict) become `--key value`."""
    out: list[str] = []
    for token in argv:
        match = _SETTING.match(token)
        if match:
            out += [f"--{match.group(1).replace('_', '-')}", match.group(2)]
        else:
            out.append(token)
    return out


def load_subject(args: argparse.Namespace) -> Subject:
    """The network to explain, on the chosen device."""
    from visionkit.explain.subjects import subject_from_checkpoint, vgg19_subject
    from visionkit.style.optimize import pick_device

    if args.model and args.ckpt_path:
        raise VisionkitError("give either ckpt_path=... or model=vgg19, not both")
    if args.model == "vgg19":
        subject = vgg19_subject(args.weights, args.image_size or 224)
    elif args.ckpt_path:
        subject = subject_from_checkpoint(args.ckpt_path, args.image_size, args.conf)
    else:
        raise VisionkitError("nothing to explain: pass ckpt_path=/path/to/best.ckpt, or model=vgg19")
    subject.network.to(pick_device(args.device))
    return subject


def _print_layers(subject: Subject) -> None:
    import torch

    from visionkit.explain.features import list_layers

    device = next(subject.network.parameters()).device
    probe = torch.zeros(1, 3, *subject.image_size, device=device)
    print(f"layers of the {subject.kind} network for a {subject.image_size[0]}×{subject.image_size[1]} input "
          "(name, type, output C×H×W):")  # fmt: skip
    for layer in list_layers(subject.network, probe):
        print(f"  {layer.name:<48} {layer.kind:<22} {layer.output}")


def _folders(paths: Sequence[str], root: Path) -> list[Path]:
    """One output folder per image, named after it (numbered when two images share a name)."""
    seen: dict[str, int] = {}
    folders = []
    for path in paths:
        stem = Path(path).stem
        seen[stem] = seen.get(stem, 0) + 1
        folders.append(root / (stem if seen[stem] == 1 else f"{stem}_{seen[stem]}"))
    return folders


def run(argv: Sequence[str] | None = None) -> int:
    """Parse, explain every image, print the layer table; the exit status is 1 when some images were skipped."""
    args = build_parser().parse_args(normalize_argv(sys.argv[1:] if argv is None else argv))
    subject = load_subject(args)
    if subject.note:
        print(f"{PROG}: note: {subject.note}", file=sys.stderr)
    if args.list_layers:
        _print_layers(subject)
        return 0
    from visionkit.data.files import list_images
    from visionkit.explain.receptive_field import table_markdown
    from visionkit.explain.report import explain_image
    from visionkit.utils.io import read_image

    paths = list_images(args.source, "source")
    folders = _folders(paths, Path(args.output_dir).expanduser())
    inputs = {Path(p).resolve() for p in paths}
    for folder in folders:  # before any work: never write among the inputs
        if folder.resolve() in inputs or any(p.parent == folder.resolve() for p in inputs):
            raise VisionkitError(f"output folder {folder} holds the input images; choose another output_dir")
    failures, table, started = [], "", time.perf_counter()
    for index, (path, folder) in enumerate(zip(paths, folders), 1):
        try:  # only unreadable images are skipped; a wrong setting stops on the first image
            image = read_image(path)
        except VisionkitError as exc:
            if len(paths) == 1:
                raise
            failures.append(path)
            print(f"{PROG}: skipped {path}: {exc}", file=sys.stderr)
            continue
        result = explain_image(
            subject, image, folder, layers=args.layers, top_k=max(1, args.top_k), classes=args.target_class,
            cam_layers=args.cam_layers, max_channels=args.max_channels,
        )  # fmt: skip
        table = table or table_markdown(result.layers)
        cams = ", ".join(h.title for h in result.heatmaps) or "none (no detection above the threshold)"
        print(f"[{index}/{len(paths)}] {path} → {folder}/  Grad-CAM: {cams}", flush=True)
    if table:
        print(f"\nconv/pool layers ({subject.image_size[0]}×{subject.image_size[1]} input; receptive field in "
              f"input pixels):\n{table}")  # fmt: skip
    done = len(paths) - len(failures)
    print(f"{done} image(s) explained in {time.perf_counter() - started:.1f} s: {Path(args.output_dir)}")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: one clean error line for bad input (--verbose for the traceback)."""
    run_console(PROG, run, argv)


if __name__ == "__main__":
    main()
