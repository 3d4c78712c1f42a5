"""INT8 and plain-runtime rows of issue 35, on checkpoints this script trains on the built-in data.

1. INT8 per task: ResNet-18 classification (digits at 224 px), YOLOv8-n detection (shapes,
   128 px, timed at 640) and U-Net/ResNet-18 segmentation (shapes, 128 px, timed at 256): the validation metric in
   float32 and INT8 (`visionkit-export check=true` and `int8=true`, which calibrates on 300 training images), and
   ms per image of each file in its runtime at batch 1 and 16, float32 and INT8 timed in interleaved rounds.
2. visionkit's predictor on its ONNX export (`load_predictor("model.onnx")`, files in, labels / masks out) against
   a plain onnxruntime loop on the same file (PIL read, resize, normalize in NumPy, `session.run`, argmax; masks
   resized back with nearest): ResNet-18 at 224 px and U-Net at 256 px, the same image files, batch 1 and 16, the
   same thread count, rounds interleaved with who goes first alternating; agreement of the answers reported. A
   third visionkit side runs the OpenVINO file at the precision OpenVINO picks itself (`precision=auto`: bf16 on
   CPUs with native bf16), with its agreement with the float32 plain loop. The float32 networks alone (ONNX Runtime
   and visionkit's OpenVINO runtime on a ready input, in the same rounds) give the ceiling: the ratio a predictor
   that spent no time at all outside the network would reach.

Run:  .venv/bin/python bench/bench_exported.py [--rounds 5] [--images 48] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median
from typing import Any

from common import cpu_model

BIN = Path(sys.executable).parent
DATA = Path(os.environ.get("VISIONKIT_DATA", Path.home() / ".cache/visionkit/datasets"))  # conf/paths data_dir
# task -> (training overrides, timing size)
TASKS = {
    "classification": (
        ["task=classification", "model=resnet18", "data=digits", "data.image_size=224", "trainer.max_epochs=2"],
        224,
    ),
    "detection": (["task=detection", "data=shapes_det", "data.image_size=128", "trainer.max_epochs=12"], 640),
    "segmentation": (["task=segmentation", "data=shapes_seg", "data.image_size=128", "trainer.max_epochs=4"], 256),
}


def _cli(tool: str, args: list[str], cwd: Path) -> str:
    out = subprocess.run([str(BIN / tool), *args], capture_output=True, text=True, cwd=cwd)
    if out.returncode != 0:
        sys.exit(f"{tool} {' '.join(args)} failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")
    return out.stdout


def train(task: str, folder: Path) -> Path:
    """The best checkpoint of a short run of `task` (kept in `folder` for the next run)."""
    best = folder / task / "checkpoints" / "best.ckpt"
    if not best.is_file():
        overrides, _ = TASKS[task]
        args = [*overrides, f"hydra.run.dir={folder / task}", "trainer.enable_progress_bar=false"]
        _cli("visionkit-train", args, folder)
    return best


def export(ckpt: Path, folder: Path, int8: bool) -> list[dict]:
    """`visionkit-export formats=[onnx,openvino]` with the check (and INT8): the check.json records."""
    if not (folder / "check.json").is_file():
        args = [f"ckpt_path={ckpt}", "formats=[onnx,openvino]", "check=true", f"hydra.run.dir={folder}"]
        _cli("visionkit-export", args + (["int8=true"] if int8 else []), folder.parent)
    return json.loads((folder / "check.json").read_text())


def int8_rows(task: str, ckpt: Path, work: Path, rounds: int) -> list[dict]:
    """One row per runtime: metric float32 / INT8 and ms per image of each at batch 1 and 16, interleaved."""
    import torch

    from visionkit.checkpoints import load_checkpoint
    from visionkit.export import build_graph, load_runtime
    from visionkit.export.benchmark import time_per_image

    checks = {False: export(ckpt, work / f"{task}-fp32", False), True: export(ckpt, work / f"{task}-int8", True)}
    task_obj, data_state = load_checkpoint(ckpt)
    graph = build_graph(task_obj, data_state, TASKS[task][1])
    files = {
        ("onnx", False): work / f"{task}-fp32" / "model.onnx",
        ("onnx", True): work / f"{task}-int8" / "model_int8.onnx",
        ("openvino", False): work / f"{task}-fp32" / "model_openvino",
        ("openvino", True): work / f"{task}-int8" / "model_int8_openvino",
    }
    runtimes = {key: load_runtime(key[0], path) for key, path in files.items()}
    times: dict = {key: {1: [], 16: []} for key in files}
    torch.set_grad_enabled(False)
    for index in range(rounds):
        for batch in (1, 16):
            for key in list(files)[:: 1 if index % 2 == 0 else -1]:
                times[key][batch].append(time_per_image(graph, runtimes[key], batch, 1.0))
    rows = []
    for format in ("onnx", "openvino"):
        fp32 = next(r for r in checks[False] if r["format"] == format)
        int8 = next(r for r in checks[True] if r["format"] == format)
        row = {"task": task, "size": TASKS[task][1], "runtime": format, "metric": fp32["metric"]}
        row |= {"fp32": fp32["exported"], "int8": int8["exported"], "passed": int8["passed"]}
        for batch in (1, 16):
            row[f"fp32_b{batch}"] = median(times[(format, False)][batch])
            row[f"int8_b{batch}"] = median(times[(format, True)][batch])
        rows.append(row)
    return rows


def _image_files(folder: Path, source: Path, count: int, size: int) -> list[str]:
    """`count` JPEG files of `size`² made from the images under `source` (each side resizes nothing: the same
    network work for the predictor, which segments at each image's own size, and the plain loop)."""
    from PIL import Image

    pictures = sorted(p for p in source.rglob("*.png") if "mask" not in str(p))
    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        picture = Image.open(pictures[index % len(pictures)]).convert("RGB").resize((size, size), Image.BILINEAR)
        picture.save(folder / f"{index:04d}.jpg", quality=92)
    return sorted(str(p) for p in folder.glob("*.jpg"))


def plain_loop(path: Path, files: list[str], size: int, mean: list[float], std: list[float], task: str, batch: int):
    """What a plain onnxruntime user writes: (labels or masks) for `files`, in batches of `batch`."""
    import numpy as np
    import onnxruntime as ort
    from PIL import Image

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scale = 1 / (255 * np.asarray(std, np.float32).reshape(1, 3, 1, 1))
    shift = np.asarray(mean, np.float32).reshape(1, 3, 1, 1) * 255 * scale

    def run() -> list:
        answers = []
        for start in range(0, len(files), batch):
            pictures = [Image.open(f).convert("RGB") for f in files[start : start + batch]]
            pixels = np.stack([np.asarray(p.resize((size, size), Image.BILINEAR)) for p in pictures])
            inputs = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32) * scale - shift
            (out,) = session.run(None, {"images": inputs})
            if task == "classification":
                answers.extend(out.argmax(1).tolist())
            else:
                for picture, classes in zip(pictures, out.argmax(1).astype(np.uint8), strict=True):
                    answers.append(np.asarray(Image.fromarray(classes).resize(picture.size, Image.NEAREST)))
        return answers

    return run


def network_alone(folder: Path, openvino: Any, size: int, batch: int, count: int) -> dict[str, Callable[[], None]]:
    """The float32 networks alone on a ready input, `count` images in batches of `batch`: ONNX Runtime's session
    and visionkit's OpenVINO model (compiled for the shape and fed what the predictor feeds it: 8-bit pictures
    where it normalizes them itself). What a predictor with no reading, resizing or post-processing at all would
    reach: the ceiling of its ratio to the plain loop."""
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    inputs = rng.random((batch, 3, size, size), dtype=np.float32)
    pixels = rng.integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    fed = pixels if openvino.model.takes_pixels else inputs
    calls = max(count // batch, 1)

    def onnx() -> None:
        for _ in range(calls):
            session.run(None, {"images": inputs})

    def openvino_network() -> None:
        for _ in range(calls):
            openvino.model(fed)

    return {"onnx_network": onnx, "openvino_network": openvino_network}


def plain_rows(task: str, ckpt: Path, work: Path, rounds: int, count: int) -> list[dict]:
    """visionkit's predictor on its ONNX and OpenVINO exports against the plain onnxruntime loop on the ONNX file,
    at the task's timing size; rounds interleaved, the order rotating."""
    import numpy as np
    import torch

    from visionkit.inference import load_predictor

    size = TASKS[task][1]
    folder = work / f"{task}-plain"
    if not (folder / "model_openvino").is_dir():
        args = [f"ckpt_path={ckpt}", "formats=[onnx,openvino]", f"hydra.run.dir={folder}", f"image_size={size}"]
        _cli("visionkit-export", args, work)
    files = _image_files(work / f"images{size}", DATA / "shapes_seg_v2" / "images", count, size)
    ours = {
        "onnx": load_predictor(folder / "model.onnx", image_size=size),
        "openvino": load_predictor(folder / "model_openvino", image_size=size),
        # OpenVINO at the precision it picks itself (bf16 on CPUs that compute it natively): not like for like
        "openvino_auto": load_predictor(folder / "model_openvino", image_size=size, precision="auto"),
    }
    contract = ours["onnx"].contract
    names = list(contract.class_names)
    threads = torch.get_num_threads()
    rows = []
    for batch in (1, 16):
        calls = {"plain": plain_loop(folder / "model.onnx", files, size, contract.mean, contract.std, task, batch)}
        for runtime, predictor in ours.items():

            def mine(predictor=predictor, batch: int = batch) -> list:
                results = predictor(files, batch_size=batch)
                return [names.index(r.label) if task == "classification" else r.mask for r in results]

            calls[runtime] = mine
        calls.update(network_alone(folder, ours["openvino"], size, batch, len(files)))
        for call in calls.values():
            call()  # warm-up, twice: OpenVINO compiles a model for a shape on its second batch
            call()
        speeds: dict[str, list[float]] = {side: [] for side in calls}
        answers = {}
        sides = list(calls)
        for index in range(rounds):
            for side in sides[index % len(sides) :] + sides[: index % len(sides)]:
                start = time.perf_counter()
                answers[side] = calls[side]()
                speeds[side].append(len(files) / (time.perf_counter() - start))
        row = {"task": task, "size": size, "batch": batch, "threads": threads, "plain": median(speeds["plain"])}
        for runtime in ours:
            pairs = zip(answers[runtime], answers["plain"], strict=True)
            row[runtime] = median(speeds[runtime])
            row[f"{runtime}_ratio"] = median(a / b for a, b in zip(speeds[runtime], speeds["plain"], strict=True))
            row[f"{runtime}_agree"] = float(np.mean([np.mean(np.asarray(a) == np.asarray(b)) for a, b in pairs]))
        for side in ("onnx_network", "openvino_network"):
            row[side] = median(speeds[side])
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--no-int8", dest="int8", action="store_false", help="only the plain-loop rows")
    parser.add_argument("--keep", default=None, help="a folder to train and export in, kept (reused when run again)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.keep or scratch)
        work.mkdir(parents=True, exist_ok=True)
        ckpts = {task: train(task, work) for task in TASKS}
        int8 = [row for task in TASKS for row in int8_rows(task, ckpts[task], work, args.rounds)] if args.int8 else []
        plain = [
            row
            for task in ("classification", "segmentation")
            for row in plain_rows(task, ckpts[task], work, args.rounds, args.images)
        ]
    print(f"machine: {cpu_model()}, {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(
        "| task | size | runtime | metric | float32 | INT8 | change | ms/img b1 fp32 → INT8 | ms/img b16 fp32 → INT8 |"
    )
    print("|---|---:|---|---|---:|---:|---:|---:|---:|")
    for r in int8:
        print(
            f"| {r['task']} | {r['size']} | {r['runtime']} | {r['metric']} | {r['fp32']:.4f} | {r['int8']:.4f} | "
            f"{r['int8'] - r['fp32']:+.4f}{'' if r['passed'] else ' (over tolerance)'} | "
            f"{r['fp32_b1']:.2f} → {r['int8_b1']:.2f} (**{r['fp32_b1'] / r['int8_b1']:.2f}×**) | "
            f"{r['fp32_b16']:.2f} → {r['int8_b16']:.2f} (**{r['fp32_b16'] / r['int8_b16']:.2f}×**) |"
        )
    print()
    print(
        "| task | size | batch | plain onnxruntime img/s | visionkit ONNX img/s | ratio | visionkit OpenVINO img/s "
        "| ratio | agreement (ONNX, OpenVINO) | OpenVINO `precision=auto` img/s | ratio | agreement | "
        "float32 network alone img/s (ONNX Runtime, OpenVINO) | ceiling |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---|---:|")
    for r in plain:
        print(
            f"| {r['task']} | {r['size']} | {r['batch']} | {r['plain']:.1f} | {r['onnx']:.1f} | "
            f"**{r['onnx_ratio']:.2f}** | {r['openvino']:.1f} | **{r['openvino_ratio']:.2f}** | "
            f"{r['onnx_agree']:.4f}, {r['openvino_agree']:.4f} | {r['openvino_auto']:.1f} | "
            f"**{r['openvino_auto_ratio']:.2f}** | {r['openvino_auto_agree']:.4f} | "
            f"{r['onnx_network']:.1f}, {r['openvino_network']:.1f} | "
            f"{max(r['onnx_network'], r['openvino_network']) / r['plain']:.2f} |"
        )


if __name__ == "__main__":
    main()
