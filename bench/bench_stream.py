"""Streamed-loader benchmark: the same photos read by visionkit's training loader from a local folder, from local
shards (`visionkit-pack`), and from those shards in moto's S3 server on localhost; and packing speed and size.

The photos: 10,000 camera-like JPEGs of 640x480 (scikit-image's colour pictures cropped, flipped, tinted, noisy,
quality 90) in two class folders. Packed with `visionkit-pack data=imagefolder data.image_size=224` (every split;
images over the size needed re-encoded at the size that covers 224 px, quality 95), once to a local folder and
once into the S3 server. Each loader: the training split (70 %), 224 px, the `light` preset, batch 32, 2 workers,
one pass timed from the first batch (its wait is reported separately) in a fresh process; the S3 pass starts with
an empty chunk cache. Rounds are interleaved, the order alternating; medians and median per-round ratios.

Run:  .venv/bin/python bench/bench_stream.py [--photos 10000] [--rounds 2] [--root /tmp/stream-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median

import numpy as np
from common import camera_photo, cpu_model, photo_pictures, run_child

BATCH, WORKERS, SIZE = 32, 2, 224
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1"}


def make_photos(root: Path, count: int) -> Path:
    """`count` 640x480 JPEGs in root/photos/{a,b}/ (made once)."""
    import cv2

    folder = root / "photos"
    marker = root / f".photos-{count}"
    if marker.is_file():
        return folder
    rng = np.random.default_rng(0)
    pictures = photo_pictures()
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True, exist_ok=True)
    for index in range(count):
        picture = pictures[index % len(pictures)]
        photo = camera_photo(picture, rng, (640, 480), trim=4, interpolation=cv2.INTER_AREA)
        path = folder / ("a" if index % 2 == 0 else "b") / f"{index:05d}.jpg"
        cv2.imwrite(str(path), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    marker.touch()
    return folder


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


SERVER = """
import sys, time
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address="127.0.0.1", port=int(sys.argv[1]), verbose=False)
server.start()
print("ready", flush=True)
time.sleep(86400)
"""


def pack(photos: Path, out: str, workdir: Path, env: dict[str, str]) -> dict:
    """Run visionkit-pack; the line it prints (count, time, images/s, sizes)."""
    exe = Path(sys.executable).with_name("visionkit-pack")
    args = [f"data.root={photos}", "data=imagefolder", f"data.image_size={SIZE}", f"out={out}"]
    done = subprocess.run([str(exe), *args], cwd=workdir, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        sys.exit(f"visionkit-pack failed:\n{done.stderr[-3000:]}")
    line = next(line for line in done.stdout.splitlines() if line.startswith("packed "))
    return {"line": line}


def child(side: str, where: str, cache: str) -> dict:
    import torch

    torch.set_num_threads(1)  # a loader benchmark: the main process only collects batches
    from visionkit.data import ImageFolderSource, StreamSource, VisionDataModule

    source = ImageFolderSource(where) if side == "folder" else StreamSource(where, cache_dir=cache)
    dm = VisionDataModule(
        source, image_size=SIZE, augment="light", batch_size=BATCH, num_workers=WORKERS, persistent_workers=False
    )
    dm.setup("fit")
    loader = dm.train_dataloader()
    start = time.perf_counter()
    iterator = iter(loader)
    seen = len(next(iterator)["image"])
    first = time.perf_counter() - start
    start = time.perf_counter()
    for batch in iterator:
        seen += len(batch["image"])
    return {"images_per_s": (seen - BATCH) / (time.perf_counter() - start), "first_batch_s": first, "images": seen}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3)
    parser.add_argument("--photos", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--root", default="/tmp/stream-bench")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return
    root = Path(args.root)
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    photos = make_photos(root, args.photos)
    print(f"{args.photos} photos ready in {time.perf_counter() - started:.0f} s")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(port)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        env = os.environ | CREDENTIALS | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}
        os.environ.update(env)  # the children read the store through the usual AWS variables
        import boto3

        boto3.client("s3").create_bucket(Bucket="bench")
        local = root / "packed"
        shutil.rmtree(local, ignore_errors=True)
        packed_local = pack(photos, str(local), root, env)
        packed_s3 = pack(photos, "s3://bench/photos", root, env)
        source_mb = sum(p.stat().st_size for p in photos.rglob("*.jpg")) / 2**20
        shards_mb = sum(p.stat().st_size for p in local.rglob("*") if p.is_file()) / 2**20
        sides = {"folder": str(photos), "shards": str(local), "s3": "s3://bench/photos"}
        runs: dict[str, list[dict]] = {side: [] for side in sides}
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(reversed(sides))
            for side in order:
                cache = root / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                kind = "folder" if side == "folder" else "stream"
                runs[side].append(run_child(__file__, [kind, sides[side], str(cache)]))
                print(side, runs[side][-1], flush=True)
    finally:
        server.kill()
    rate = {side: median(r["images_per_s"] for r in runs[side]) for side in runs}
    first = {side: median(r["first_batch_s"] for r in runs[side]) for side in runs}
    ratio = {
        side: median(a["images_per_s"] / b["images_per_s"] for a, b in zip(runs[side], runs["folder"])) for side in runs
    }
    print(f"\nCPU: {cpu_model()}, {os.cpu_count()} cores; {args.photos} photos 640x480, {args.rounds} rounds")
    print(f"packing to a local folder: {packed_local['line']}")
    print(f"packing into moto S3:      {packed_s3['line']}")
    print(f"source {source_mb:.0f} MB, local shards {shards_mb:.0f} MB ({shards_mb / source_mb:.2f}x)\n")
    print("| loader (train split, 224 px, light, batch 32, 2 workers) | images/s | ÷ folder | first batch |")
    print("|---|---:|---:|---:|")
    names = {"folder": "local folder (JPEG files)", "shards": "local shards", "s3": "shards in moto S3 (localhost)"}
    for side in runs:
        print(f"| {names[side]} | {rate[side]:.0f} | {ratio[side]:.2f} | {first[side]:.2f} s |")


if __name__ == "__main__":
    main()
