"""Scans and multi-band rasters read as they are stored: 16-bit PNG and TIFF, multi-page and multi-band TIFF
(GeoTIFF bands included, without geo-referencing) through tifffile, and DICOM through pydicom (rescale slope and
intercept applied, MONOCHROME1 inverted). The result is always (height, width, bands) in the file's own type;
`visionkit.data.pixels` turns it into what the pipeline was configured for."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from visionkit.utils.io import UnreadableImage, _checked_file, read_image

TIFF_SUFFIXES = (".tif", ".tiff")
DICOM_SUFFIXES = (".dcm", ".dicom")


def _unreadable(path: Path, reason: str) -> UnreadableImage:
    return UnreadableImage(f"image {path}: {reason}; delete or replace it", path, reason)


def _bands_last(array: np.ndarray, path: Path) -> np.ndarray:
    """(H, W) or (H, W, B) as (H, W, B): a planar (B, H, W) stack (multi-page TIFF, band-first GeoTIFF) is turned
    so its bands come last; anything else is refused with the shape found."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3:
        # band-first when the first axis is short and the last is not (a 5x512x512 stack vs a 512x512x5 image)
        if array.shape[0] <= 32 and array.shape[2] > 32:
            return np.ascontiguousarray(np.moveaxis(array, 0, -1))
        return array
    raise _unreadable(
        path,
        f"a raster of shape {array.shape} ({array.dtype}); expected height x width, height x width x bands "
        "or bands x height x width (one image, not a volume or a time series)",
    )


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            series = tif.series[0]
            array = series.asarray()
    except Exception as exc:  # tifffile raises many types for damaged files
        raise _unreadable(path, f"not a readable TIFF ({type(exc).__name__}: {exc})") from None
    return _bands_last(np.squeeze(array) if array.ndim > 3 else array, path)


def dicom_pixels(path: Path) -> np.ndarray:
    """A DICOM file's pixels as float32 in the modality's units (CT: Hounsfield units): the stored values times
    RescaleSlope plus RescaleIntercept; MONOCHROME1 (where white is 0) inverted so bright means dense everywhere."""
    try:
        import pydicom
    except ImportError:
        raise _unreadable(
            path, "DICOM needs pydicom: pip install 'visionkit[formats]' (or pip install pydicom)"
        ) from None
    try:
        dataset = pydicom.dcmread(path)
        stored = dataset.pixel_array
    except Exception as exc:
        raise _unreadable(path, f"not a readable DICOM file ({type(exc).__name__}: {exc})") from None
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    pixels = stored.astype(np.float32) * slope + intercept
    if str(getattr(dataset, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        bits = int(getattr(dataset, "BitsStored", 16))
        top = ((1 << bits) - 1) * slope + intercept
        pixels = top + (intercept - pixels)  # the stored range mirrored onto itself
    if pixels.ndim == 3 and pixels.shape[-1] not in (3, 4):
        raise _unreadable(path, f"a multi-frame DICOM ({pixels.shape[0]} frames); give one frame per file")
    return _bands_last(pixels, path)


def dicom_window(path: Path) -> tuple[float, float] | None:
    """The (centre, width) display window the DICOM file names (its first, when it lists several); None if none."""
    import pydicom

    dataset = pydicom.dcmread(path, stop_before_pixels=True)
    centre, width = getattr(dataset, "WindowCenter", None), getattr(dataset, "WindowWidth", None)
    if centre is None or width is None:
        return None
    first = [float(v[0] if isinstance(v, pydicom.multival.MultiValue) else v) for v in (centre, width)]
    return first[0], first[1]


def read_raster(path: str | os.PathLike[str]) -> np.ndarray:
    """The file's pixels as (H, W, bands) in their stored type (uint8, uint16, float32 ...): TIFF through tifffile,
    DICOM through pydicom, other formats through OpenCV unchanged (16-bit PNG kept; colour as RGB)."""
    path = Path(path)
    _checked_file(path)
    suffix = path.suffix.lower()
    if suffix in TIFF_SUFFIXES:
        return _read_tiff(path)
    if suffix in DICOM_SUFFIXES:
        return dicom_pixels(path)
    image = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        return read_image(path)  # formats OpenCV lacks (GIF, WebP variants) through PIL
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGBA)
    return image


def raster_size(path: str | os.PathLike[str]) -> tuple[int, int, int]:
    """(height, width, bands) from the header alone (TIFF, DICOM); other formats are decoded."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix in TIFF_SUFFIXES:
            import tifffile

            with tifffile.TiffFile(path) as tif:
                shape = tif.series[0].shape
            if len(shape) == 3 and shape[0] <= 32 and shape[2] > 32:
                shape = (shape[1], shape[2], shape[0])
            return (int(shape[0]), int(shape[1]), int(shape[2]) if len(shape) == 3 else 1)
        if suffix in DICOM_SUFFIXES:
            import pydicom

            dataset = pydicom.dcmread(path, stop_before_pixels=True)
            return int(dataset.Rows), int(dataset.Columns), int(getattr(dataset, "SamplesPerPixel", 1))
    except Exception as exc:
        kind = "TIFF" if suffix in TIFF_SUFFIXES else "DICOM file"
        raise _unreadable(path, f"not a readable {kind} ({type(exc).__name__}: {exc})") from None
    return read_raster(path).shape


def check_raster(path: str | os.PathLike[str]) -> str | None:
    """The up-front scan's check for TIFF and DICOM files (PIL knows neither multi-band TIFF nor DICOM): None if
    the header reads, else the reason."""
    try:
        raster_size(path)
    except UnreadableImage as exc:
        return exc.reason
    return None


def stretched(band: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """One band (H, W) of any type as float32 0..1 between its `low` and `high` percentiles (the usual way to
    show a scan or a reflectance band: a few hot pixels do not darken the rest)."""
    band = np.nan_to_num(band.astype(np.float32, copy=False))
    bottom, top = np.percentile(band, (low, high))
    if top <= bottom:
        top = bottom + 1.0
    return np.clip((band - bottom) / (top - bottom), 0.0, 1.0)


def display_rgb(pixels: np.ndarray, bands: Sequence[int] | None = None) -> np.ndarray:
    """An (H, W, B) raster of any type as HxWx3 uint8 RGB to draw on: `bands` picks the three bands shown as red,
    green and blue (e.g. (3, 2, 1): near-infrared false colour), one band shows as grey; without `bands`, 1 band is
    grey, 3 or more show their first three. uint8 pixels are shown as they are, other types stretched per band."""
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    count = pixels.shape[2]
    chosen = list(bands) if bands else ([0] if count < 3 else [0, 1, 2])
    wrong = [b for b in chosen if not 0 <= int(b) < count]
    if wrong or len(chosen) not in (1, 3):
        raise ValueError(
            f"viz.bands={list(chosen)}: give 1 or 3 band indices between 0 and {count - 1} (the image has {count})"
        )
    picked = pixels[:, :, [int(b) for b in chosen]]
    if picked.dtype == np.uint8:
        out = picked
    else:
        out = np.stack([stretched(picked[:, :, i]) for i in range(picked.shape[2])], axis=2)
        out = (out * 255.0 + 0.5).astype(np.uint8)
    if out.shape[2] == 1:
        out = np.repeat(out, 3, axis=2)
    return np.ascontiguousarray(out)
