"""Images of every common kind are read as HxWx3 uint8 RGB; broken files name themselves."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from visionkit.errors import VisionkitError
from visionkit.utils.io import atomic_write, check_image, read_image


def test_grayscale_is_replicated_to_three_channels(tmp_path: Path) -> None:
    gray = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(gray, mode="L").save(tmp_path / "g.png")
    out = read_image(tmp_path / "g.png")
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[..., 0] == gray).all() and (out[..., 2] == gray).all()


def test_rgba_is_composited_on_white(tmp_path: Path) -> None:
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 0  # fully transparent black
    rgba[0, 0] = (255, 0, 0, 255)  # one opaque red pixel
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert tuple(out[0, 0]) == (255, 0, 0)
    assert tuple(out[2, 2]) == (255, 255, 255)


def test_16_bit_grayscale_is_rescaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 16384], [32768, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "d.png")
    out = read_image(tmp_path / "d.png")[..., 0]
    assert out.tolist() == [[0, 64], [128, 255]]


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    img = np.zeros((10, 20, 3), dtype=np.uint8)  # wide image...
    img[:, :10] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # ...stored with "rotate 90° clockwise" orientation
    Image.fromarray(img).save(tmp_path / "r.jpg", exif=exif, quality=95)
    out = read_image(tmp_path / "r.jpg")
    assert out.shape == (20, 10, 3)  # displayed upright: tall
    assert out[:8].mean() > 200 and out[-8:].mean() < 50  # left half (white) is now on top


def test_palette_and_cmyk_images(tmp_path: Path) -> None:
    Image.new("P", (5, 5), color=3).save(tmp_path / "p.png")
    Image.new("CMYK", (5, 5), color=(0, 255, 255, 0)).save(tmp_path / "c.jpg")
    assert read_image(tmp_path / "p.png").shape == (5, 5, 3)
    cmyk = read_image(tmp_path / "c.jpg")
    assert cmyk[2, 2, 0] > 200 and cmyk[2, 2, 1] < 60  # pure red


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty (0 bytes)"), (b"not an image at all", "not a readable image"), (None, "corrupt or truncated")],
)
def test_broken_files_raise_with_their_path(tmp_path: Path, content: bytes | None, message: str) -> None:
    path = tmp_path / "bad.png"
    if content is None:  # a real PNG cut in half
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(VisionkitError, match=re.escape(message)) as info:
        read_image(path)
    assert str(path) in str(info.value)
    if content is not None:  # the up-front scan catches these without decoding
        assert check_image(path) is not None


def test_atomic_write_leaves_no_partial_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError), atomic_write(target, "w") as handle:
        handle.write("half")
        raise RuntimeError("crash")
    assert not target.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("suffix", "mode"),
    [(".png", m) for m in ("RGB", "L", "RGBA", "LA", "P")] + [(".jpg", "RGB"), (".jpg", "L"), (".bmp", "RGB")],
)
def test_the_fast_decoder_gives_what_pil_gives(
    tmp_path: Path, suffix: str, mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """JPEG, PNG and BMP are decoded by OpenCV (faster); the pixels are PIL's (EXIF, alpha on white, palettes).
    JPEGs come straight as RGB, or, with an OpenCV before 4.11, as BGR turned round: the same pixels."""
    import cv2

    from visionkit.utils import io

    rng = np.random.default_rng(0)
    image = Image.fromarray((rng.random((30, 40, 4)) * 255).astype(np.uint8), "RGBA").convert(mode)
    image.save(tmp_path / f"x{suffix}")
    ours = read_image(tmp_path / f"x{suffix}")
    assert ours.shape == (30, 40, 3) and ours.dtype == np.uint8
    assert np.abs(ours.astype(int) - io.pil_to_rgb(Image.open(tmp_path / f"x{suffix}"))).max() <= 1
    monkeypatch.setattr(io, "JPEG_IS_RGB", False)
    monkeypatch.setattr(io, "JPEG_FLAGS", cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(read_image(tmp_path / f"x{suffix}"), ours)


def test_text_is_written_in_utf8_whatever_the_locale(tmp_path: Path) -> None:
    """A class name in any script goes into predictions.csv even where the locale's encoding is ASCII (or, on
    Windows, cp1252): atomic_write's text mode is UTF-8."""
    import os
    import subprocess
    import sys

    target = tmp_path / "names.csv"
    script = (
        "from visionkit.utils.io import atomic_write\n"
        f"with atomic_write({str(target)!r}, 'w') as h: h.write('\\u72d7,caf\\u00e9\\n')"
    )
    env = {**os.environ, "LC_ALL": "C", "LANG": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True, capture_output=True)
    assert target.read_bytes() == "狗,café\n".encode()
