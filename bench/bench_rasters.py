"""Scans and bands: what the full pipeline gains over the same data squeezed to 8-bit RGB, and how fast the
loader reads 16-bit TIFF and DICOM next to the 8-bit JPEG photo path.

gain: the built-in `scans16` (16-bit, 1 channel) and `bands5` (5 bands, uint16) jobs, LeNet-5, 15 epochs,
augment=flips, per seed: the full pipeline, then the same files read as 8-bit RGB (scans: `data.channels=3
data.dtype=uint8`, the photo path's grey; bands: `data.bands=[0,1,2]` at 8 bits); test accuracy, mean of the seeds.

loader: 240 pictures at 512x512 (scikit-image's, in grey for the scans) as JPEG (quality 90, 8-bit RGB), 16-bit
single-channel TIFF and 16-bit DICOM (MONOCHROME2, rescale slope/intercept); the training split through the data
module's loader (224 px, the `light` preset, batch 32, no workers: the per-image cost), one fresh process per
format and round, rounds interleaved; images/s, median of the rounds. `--ref <git worktree>` adds the JPEG path of
another checkout (e.g. the commit before scans were supported) in the same rounds: the photo path's regression check.

Run:  .venv/bin/python bench/bench_rasters.py [--seeds 3] [--rounds 3] [--skip gain|loader] [--ref /tmp/vk_ref]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import mean, median

import numpy as np
from common import REPO, cpu_model, train_metrics

PICTURES = ("astronaut", "camera", "coffee", "rocket", "moon", "brick", "grass", "gravel", "retina", "chelsea")
COUNT, SIZE, BATCH = 240, 512, 32
JOBS = {
    "scans16": (["data=scans16"], ["data=scans16", "data.channels=3", "data.dtype=uint8"]),
    "bands5": (["data=bands5"], ["data=bands5", "data.channels=3", "data.bands=[0,1,2]", "data.dtype=uint8"]),
}


def write_dicom(path: Path, stored: np.ndarray) -> None:
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, meta.MediaStorageSOPInstanceUID, "CT"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = 1.0, -1024.0
    ds.PixelData = stored.astype(np.uint16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)


def make_files(root: Path) -> dict[str, Path]:
    """The same 240 pictures as JPEG, 16-bit TIFF and DICOM, two class folders each."""
    import cv2
    import skimage.data
    import tifffile

    folders = {kind: root / kind for kind in ("jpeg", "tiff16", "dicom")}
    if all((f / "b").is_dir() for f in folders.values()):
        return folders
    rng = np.random.default_rng(0)
    for index in range(COUNT):
        picture = np.asarray(getattr(skimage.data, PICTURES[index % len(PICTURES)])())
        picture = np.repeat(picture[:, :, None], 3, axis=2) if picture.ndim == 2 else picture[:, :, :3]
        picture = cv2.resize(picture, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        if index % 2:
            picture = picture[:, ::-1]
        grey = cv2.cvtColor(np.ascontiguousarray(picture), cv2.COLOR_RGB2GRAY).astype(np.float64) * 257
        scan = np.clip(grey + rng.normal(0, 40, grey.shape), 0, 65535).astype(np.uint16)
        label = "ab"[index % 2]
        for folder in folders.values():
            (folder / label).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folders["jpeg"] / label / f"{index}.jpg"), picture[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        tifffile.imwrite(folders["tiff16"] / label / f"{index}.tif", scan)
        write_dicom(folders["dicom"] / label / f"{index}.dcm", scan)
    return folders


def loader_child(folder: str, kind: str) -> dict:
    """One pass over the training split of `folder`: images/s from the first batch on."""
    import torch

    from visionkit.data import ImageFolderSource, VisionDataModule

    torch.set_num_threads(2)
    options: dict = {}
    if kind != "jpeg":  # a scan: 1 channel; DICOM in Hounsfield units through a window that spans them all
        from visionkit.data.pixels import PixelFormat

        window = (31_743.5, 65_535.0) if kind == "dicom" else None
        fmt = PixelFormat(1, "float32" if kind == "dicom" else "uint16", window=window)
        options = {"pixel_format": fmt, "mean": (0.5,), "std": (0.25,)}
    dm = VisionDataModule(
        ImageFolderSource(folder), image_size=224, batch_size=BATCH, augment="light", val_fraction=0.05,
        test_fraction=0.05, num_workers=0, **options,
    )  # fmt: skip
    dm.setup("fit")
    loader = dm.train_dataloader()
    images, start = 0, None
    for batch in loader:
        if start is None:
            start = time.perf_counter()
            continue
        images += len(batch["image"])
    return {"images_per_s": images / (time.perf_counter() - start)}


def run_loader(folder: Path, kind: str, repo: Path | None) -> float:
    env = dict(os.environ)
    if repo is not None:
        env["PYTHONPATH"] = str(repo)
    args = [sys.executable, __file__, "--child", str(folder), kind]
    out = subprocess.run(args, capture_output=True, text=True, cwd=repo or REPO, env=env)
    if out.returncode != 0:
        sys.exit(f"{kind} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


def loader_table(rounds: int, ref: Path | None) -> None:
    folders = make_files(Path(tempfile.gettempdir()) / "vk_bench_rasters")
    rows = [("jpeg", "8-bit RGB JPEG (photo path)", None), ("tiff16", "16-bit TIFF, 1 channel", None)]
    rows += [("dicom", "16-bit DICOM, 1 channel", None)]
    if ref is not None:
        rows.insert(1, ("jpeg", f"8-bit RGB JPEG, {ref.name} checkout", ref))
    seen: dict[str, list[float]] = {label: [] for _, label, _ in rows}
    for round_index in range(rounds):
        for kind, label, repo in rows if round_index % 2 == 0 else rows[::-1]:
            seen[label].append(run_loader(folders[kind], kind, repo))
    base = median(seen[rows[0][1]])
    print(f"\nloader, {SIZE}x{SIZE} files -> 224 px, `light` preset, batch {BATCH}, no workers ({cpu_model()})")
    print("| files | images/s (median of rounds) | vs JPEG |\n|---|---:|---:|")
    for _, label, _ in rows:
        value = median(seen[label])
        print(f"| {label} | {value:.0f} ({', '.join(f'{v:.0f}' for v in seen[label])}) | {value / base:.2f}x |")


def gain_table(seeds: int) -> None:
    print(f"\ninformation gain, LeNet-5, 15 epochs, augment=flips, test accuracy ({cpu_model()})")
    print("| set | full pipeline | same files as 8-bit RGB | seeds |\n|---|---:|---:|---:|")
    for name, (full, squeezed) in JOBS.items():
        results: dict[str, list[float]] = {"full": [], "squeezed": []}
        for seed in range(seeds):
            for side, overrides in (("full", full), ("squeezed", squeezed)):
                with tempfile.TemporaryDirectory() as work:
                    args = [*overrides, "augment=flips", "trainer.max_epochs=15", f"seed={seed}"]
                    results[side].append(train_metrics(args, Path(work), "acc")["test_acc"])
        cells = [f"{mean(v):.3f} ({', '.join(f'{x:.2f}' for x in v)})" for v in results.values()]
        print(f"| {name} | {cells[0]} | {cells[1]} | {seeds} |", flush=True)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(loader_child(sys.argv[2], sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--skip", choices=("gain", "loader"))
    parser.add_argument("--ref", type=Path, help="a checkout whose JPEG path is measured alongside")
    args = parser.parse_args()
    if args.skip != "loader":
        loader_table(args.rounds, args.ref)
    if args.skip != "gain":
        gain_table(args.seeds)


if __name__ == "__main__":
    main()
