"""Scans and multi-band rasters: the readers keep what the file stores (16 bits, every band, DICOM units), the
pixel format turns it into what the pipeline was set for or names what does not fit, augmentations that cannot
work on N bands are refused, and first layers take N channels (RGB weights adapted as timm adapts them)."""

from __future__ import annotations

from pathlib import Path

import albumentations as A
import cv2
import numpy as np
import pytest
import tifffile
import torch

from visionkit.data.augment import check_augment
from visionkit.data.pixels import PixelFormat
from visionkit.errors import VisionkitError
from visionkit.models.classifier import build_classifier
from visionkit.models.segmentation import build_segmentation_model
from visionkit.utils.io import UnreadableImage, check_image, read_image
from visionkit.utils.rasters import display_rgb, read_raster


def write_dicom(
    path: Path,
    stored: np.ndarray,
    slope: float = 1.0,
    intercept: float = 0.0,
    photometric: str = "MONOCHROME2",
    window: tuple[float, float] | None = None,
) -> Path:
    """A minimal CT-like DICOM file of `stored` (uint16) written with pydicom."""
    pydicom = pytest.importorskip("pydicom")
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName = "CT", "Test^Phantom"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = stored.astype(np.uint16).tobytes()
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    return path


def test_16_bit_png_and_tiff_keep_every_level(tmp_path: Path) -> None:
    """Neighbouring 16-bit levels that 8 bits would merge stay apart in both formats."""
    levels = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) + 30_000).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "scan.png"), levels)
    tifffile.imwrite(tmp_path / "scan.tif", levels)
    for name in ("scan.png", "scan.tif"):
        raster = read_raster(tmp_path / name)
        assert raster.dtype == np.uint16 and raster.shape == (64, 64, 1)
        assert np.array_equal(raster[:, :, 0], levels)
    fmt = PixelFormat(channels=1, dtype="uint16")
    unit = fmt.to_unit(fmt.read(str(tmp_path / "scan.tif")))
    assert unit.dtype == np.float32 and len(np.unique(unit)) == 64 * 64  # nothing merged before normalization
    squeezed = read_image(tmp_path / "scan.png")  # the 8-bit RGB path: what visionkit did before
    assert squeezed.dtype == np.uint8 and len(np.unique(squeezed)) <= 17


def test_multi_band_tiff_band_first_or_last_and_picked_bands(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    bands = rng.integers(0, 10_000, (40, 48, 5), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "last.tif", bands, photometric="minisblack", planarconfig="contig")
    tifffile.imwrite(tmp_path / "first.tif", np.moveaxis(bands, -1, 0), photometric="minisblack")
    for name in ("last.tif", "first.tif"):
        assert np.array_equal(read_raster(tmp_path / name), bands)
    picked = PixelFormat(channels=3, dtype="uint16", bands=(3, 2, 1)).read(str(tmp_path / "first.tif"))
    assert np.array_equal(picked, bands[:, :, [3, 2, 1]])
    assert check_image(tmp_path / "last.tif") is None  # the scan reads the header, where PIL would fail
    # the RGB path names what to set instead of failing inside PIL
    with pytest.raises(UnreadableImage, match=r"has 5 bands \(uint16\).*data.channels=5"):
        read_image(tmp_path / "last.tif")
    with pytest.raises(VisionkitError, match=r"40x48, 5 band\(s\), uint16.*data.channels=4"):
        PixelFormat(channels=4, dtype="uint16").read(str(tmp_path / "last.tif"))


def test_photos_with_alpha_train_grey_or_colour() -> None:
    """An RGBA PNG (or grey + alpha) in a folder trained with data.channels=1 was refused as '4 band(s)': the alpha
    is dropped, then the colour made grey, as for an RGB photo; other band counts are still refused."""
    rgb = np.random.default_rng(0).integers(0, 256, (6, 5, 3), dtype=np.uint8)
    grey = PixelFormat(channels=1, dtype="uint8")
    expected = grey.conform(rgb, "rgb.png")
    assert expected.shape == (6, 5, 1)
    assert np.array_equal(grey.conform(np.dstack([rgb, np.full((6, 5), 9, np.uint8)]), "rgba.png"), expected)
    with_alpha = np.dstack([rgb[:, :, :1], np.zeros((6, 5, 1), np.uint8)])
    assert np.array_equal(grey.conform(with_alpha, "la.png"), rgb[:, :, :1])
    assert np.array_equal(PixelFormat(channels=3, dtype="uint8").conform(with_alpha, "la.png"), rgb[:, :, [0, 0, 0]])
    with pytest.raises(VisionkitError, match=r"6x5, 5 band\(s\), uint8\): data.channels=1"):
        grey.conform(np.zeros((6, 5, 5), np.uint8), "five.tif")


def test_unsupported_layouts_and_values_are_refused_with_what_was_found(tmp_path: Path) -> None:
    tifffile.imwrite(tmp_path / "volume.tif", np.zeros((4, 3, 40, 40), dtype=np.uint16))
    with pytest.raises(UnreadableImage, match=r"volume.tif.*shape \(4, 3, 40, 40\) \(uint16\)"):
        read_raster(tmp_path / "volume.tif")
    tifffile.imwrite(tmp_path / "float.tif", np.full((8, 8), -3.5, dtype=np.float32))
    with pytest.raises(VisionkitError, match=r"float.tif \(8x8, 1 band\(s\), float32\).*data.dtype=float32"):
        PixelFormat(channels=1, dtype="uint16").read(str(tmp_path / "float.tif"))
    assert PixelFormat(channels=1, dtype="float32").read(str(tmp_path / "float.tif")).min() == -3.5
    (tmp_path / "broken.tif").write_bytes(b"II*\x00garbage")
    assert "not a readable TIFF" in str(check_image(tmp_path / "broken.tif"))
    with pytest.raises(VisionkitError, match=r"data.bands=\[0, 1\] picks 2 bands but data.channels=3"):
        PixelFormat(channels=3, bands=(0, 1))
    with pytest.raises(VisionkitError, match=r"data.dtype='int8'"):
        PixelFormat(dtype="int8")


def test_dicom_rescale_monochrome1_and_window(tmp_path: Path) -> None:
    """Hounsfield units = stored x slope + intercept; MONOCHROME1 is inverted; a window maps [c - w/2, c + w/2]
    to 0..1; the header's size is read without the pixels."""
    stored = np.array([[0, 1000], [1024, 2048]], dtype=np.uint16).repeat(8, 0).repeat(8, 1)
    path = write_dicom(tmp_path / "ct.dcm", stored, slope=1.0, intercept=-1024.0, window=(40.0, 400.0))
    hu = read_raster(path)
    assert hu.dtype == np.float32 and hu.shape == (16, 16, 1)
    assert hu[0, 0, 0] == -1024 and hu[0, 8, 0] == -24 and hu[8, 0, 0] == 0 and hu[8, 8, 0] == 1024
    windowed = PixelFormat(channels=1, dtype="float32", window=(40.0, 400.0)).read(str(path))
    assert windowed[0, 0, 0] == 0.0 and windowed[8, 8, 0] == 1.0
    assert windowed[8, 0, 0] == pytest.approx((0 - (40 - 200)) / 400)
    inverted = read_raster(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    assert inverted[0, 0, 0] > inverted[8, 8, 0]  # stored 0 is white in MONOCHROME1
    assert inverted[0, 0, 0] - inverted[8, 8, 0] == 2048
    assert check_image(path) is None
    assert read_image(path).shape == (16, 16, 3)  # an RGB pipeline sees it as grey


def test_percentile_scaling_and_pictures_of_bands() -> None:
    rng = np.random.default_rng(0)
    dim = rng.normal(1000, 10, (32, 32, 1)).astype(np.uint16)
    unit = PixelFormat(channels=1, dtype="uint16", scaling="percentile").to_unit(dim)
    assert unit.min() == 0.0 and unit.max() == 1.0 and 0.4 < float(np.median(unit)) < 0.6
    bands = rng.integers(0, 10_000, (8, 8, 5), dtype=np.uint16)
    picture = display_rgb(bands, (3, 2, 1))
    assert picture.shape == (8, 8, 3) and picture.dtype == np.uint8
    assert np.argmax(bands[:, :, 3].ravel()) in np.flatnonzero(picture[:, :, 0].ravel() == 255)
    grey = display_rgb(bands[:, :, :1])
    assert np.array_equal(grey[:, :, 0], grey[:, :, 2])
    with pytest.raises(VisionkitError, match=r"viz\.bands"):
        PixelFormat(channels=5, dtype="uint16", viz_bands=(5, 2, 1))


def test_colour_transforms_on_n_bands_are_refused_with_the_ones_that_work() -> None:
    check_augment([A.HorizontalFlip(), A.Affine(rotate=10), A.RandomBrightnessContrast()], channels=5)
    with pytest.raises(VisionkitError, match=r"ColorJitter, HueSaturationValue cannot work on 5-band") as caught:
        check_augment([A.HorizontalFlip(), A.ColorJitter(), A.HueSaturationValue()], channels=5)
    assert "HorizontalFlip" in str(caught.value) and "ColorJitter," not in str(caught.value).split("e.g.")[1]
    # raw floats (Hounsfield units) are not 0..1: pixel-value transforms would clip them
    with pytest.raises(VisionkitError, match="RandomBrightnessContrast cannot work on 1-band raw float32"):
        check_augment([A.VerticalFlip(), A.RandomBrightnessContrast()], channels=1, unit_range=False)
    check_augment([A.ColorJitter()], channels=3)


def test_first_layers_take_n_channels_with_rgb_weights_adapted(tmp_path: Path) -> None:
    """A torchvision or timm backbone, LeNet-5 and an smp U-Net build N-channel first layers; RGB weights given to
    them are adapted as timm does: summed for 1 channel, repeated and scaled by 3/N for N."""
    from timm.models import adapt_input_conv

    rgb = build_classifier("resnet18", 4)
    torch.save(rgb.backbone.state_dict(), tmp_path / "rgb.pth")
    kernel = rgb.backbone.conv1.weight.detach()
    grey = build_classifier("resnet18", 4, weights=str(tmp_path / "rgb.pth"), in_channels=1)
    assert torch.allclose(grey.backbone.conv1.weight, kernel.sum(1, keepdim=True))
    five = build_classifier("resnet18", 4, weights=str(tmp_path / "rgb.pth"), in_channels=5)
    assert torch.allclose(five.backbone.conv1.weight, adapt_input_conv(5, kernel))
    assert five(torch.zeros(2, 5, 64, 64)).shape == (2, 4)
    assert build_classifier("timm:resnet18", 3, in_channels=7)(torch.zeros(1, 7, 64, 64)).shape == (1, 3)
    assert build_classifier("lenet5", 3, in_channels=2)(torch.zeros(1, 2, 32, 32)).shape == (1, 3)
    unet = build_segmentation_model("unet", "resnet18", 3, encoder_weights=str(tmp_path / "rgb.pth"), in_channels=4)
    assert unet(torch.zeros(1, 4, 64, 64)).shape == (1, 3, 64, 64)
    assert torch.allclose(unet.encoder.conv1.weight, adapt_input_conv(4, kernel))


def test_segmentation_reads_4_band_tiffs_and_tiles_them_at_their_own_size(tmp_path: Path) -> None:
    """A mask folder of 4-band 16-bit TIFFs: the data module's batches hold 4 normalized channels (auto statistics,
    stored in the checkpoint), a 4-channel U-Net takes them, and its predictor segments a larger raster through
    tiles, giving the same labels as one pass over the whole image."""
    from PIL import Image

    from tests.conftest import save_task_checkpoint
    from visionkit.data import MaskSource, VisionDataModule
    from visionkit.inference import load_predictor
    from visionkit.tasks import SegmentationTask

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for i in range(12):
        bands = rng.integers(1000, 3000, (40, 40, 4), dtype=np.uint16)
        mask = np.zeros((40, 40), dtype=np.uint8)
        mask[10:30, 5 + i : 20 + i] = 1
        bands[mask == 1, 3] += 5000
        tifffile.imwrite(tmp_path / "images" / f"{i}.tif", bands, photometric="minisblack", planarconfig="contig")
        Image.fromarray(mask).save(tmp_path / "masks" / f"{i}.png")
    fmt = PixelFormat(channels=4, dtype="uint16")
    dm = VisionDataModule(
        MaskSource(tmp_path, class_names=["ground", "field"]),
        image_size=32,
        batch_size=4,
        augment="flips",
        mean="auto",
        std="auto",
        pixel_format=fmt,
        cache_dir=str(tmp_path / "cache"),
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 4, 32, 32) and batch["image"].dtype == torch.float32
    assert abs(float(batch["image"][:, :3].mean())) < 0.5 and len(dm.mean) == 4 and dm.mean[3] > dm.mean[0]
    torch.manual_seed(0)  # an untrained network: its tiled and whole answers agree on most pixels for this seed
    task = SegmentationTask("unet", "resnet18", num_classes=2, in_channels=4).eval()
    assert task(batch["image"]).shape == (4, 2, 32, 32)
    ckpt = save_task_checkpoint(task, tmp_path / "seg.ckpt", dm.state_dict())
    scene = rng.integers(1000, 3000, (96, 80, 4), dtype=np.uint16)
    tiled = load_predictor(ckpt, device="cpu", tile_size=64)([scene])[0]
    whole = load_predictor(ckpt, device="cpu", tile_size=128)([scene])[0]
    assert tiled.mask.shape == (96, 80) and tiled.pixels.shape == (96, 80, 3)
    assert (tiled.mask == whole.mask).mean() > 0.9


@pytest.mark.parametrize("kind", ["ram", "disk"])
def test_caches_hold_rasters_in_their_stored_type(tmp_path: Path, kind: str) -> None:
    """data.cache=ram|disk keep 16-bit, 4-band pixels as read (uint16, every band), equal to a fresh decode."""
    from visionkit.data.augment import first_resize
    from visionkit.data.decoded import build_reader, decode

    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        paths.append(str(tmp_path / f"{i}.tif"))
        tifffile.imwrite(paths[-1], rng.integers(0, 65535, (30 + i, 40, 4), dtype=np.uint16), planarconfig="contig")
    fmt, first = PixelFormat(channels=4, dtype="uint16"), first_resize(24, "stretch")
    reader = build_reader(paths, first, kind, tmp_path / "cache", None, "train", fmt)
    for index, path in enumerate(paths):
        for _ in range(2):  # the second read comes from the cache
            pixels, full = reader(index)
            expected, expected_full = decode(path, first, fmt)
            assert pixels.dtype == np.uint16 and pixels.shape == (24, 24, 4) and full == expected_full
            assert np.array_equal(pixels, expected)
    if kind == "ram":
        assert reader.cache.filled.all() and reader.cache.nbytes == 3 * 24 * 24 * 4 * 2
    else:
        assert len(list((tmp_path / "cache").rglob("*.npy"))) == 3
