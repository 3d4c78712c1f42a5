"""What a run leaves on disk: every file and folder with the mode a plain open()/mkdir() gives under the user's
umask (atomic writes go through private temporary files), and the good images of a predict batch that holds a
corrupt one are written before the run stops."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import compose_config
from visionkit.data.shapes_video import write_shapes_video
from visionkit.errors import VisionkitError


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_train_predict_export_and_video_outputs_follow_the_umask(tmp_path: Path, umask: int) -> None:
    from visionkit.run import export, predict, train

    previous = os.umask(umask)
    try:
        run = tmp_path / "run"
        train(compose_config(run, ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "data.batch_size=32"]))
        ckpt = run / "checkpoints" / "best.ckpt"
        folder = tmp_path / "photos"
        folder.mkdir()
        for index in range(3):
            Image.new("RGB", (20, 20), (index * 80, 40, 200)).save(folder / f"{index}.jpg")
        write_shapes_video(tmp_path / "clip.mp4", frames=6, height=32, width=32, fps=6)
        predict(compose_config(tmp_path / "predicted", [f"ckpt_path={ckpt}", f"source={folder}"], name="predict"))
        predict(compose_config(tmp_path / "video", [f"ckpt_path={ckpt}", f"source={tmp_path / 'clip.mp4'}"], "predict"))
        export(compose_config(tmp_path / "export", [f"ckpt_path={ckpt}", "formats=[onnx,openvino]"], name="export"))
    finally:
        os.umask(previous)
    written = {}
    for place in ("run", "predicted", "video", "export"):
        written.update({f"{place}/{k}": v for k, v in _modes(tmp_path / place).items()})
    files = {k for k in written if (tmp_path / k).is_file()}
    assert {"run/checkpoints/best.ckpt", "run/report.html", "predicted/predictions.json", "video/clip.mp4"} <= files
    assert "export/model_openvino" in written and "export/model.onnx" in files, sorted(written)
    wrong = {k: oct(v) for k, v in written.items() if v != (0o666 if k in files else 0o777) & ~umask}
    assert not wrong, wrong


def test_a_corrupt_image_does_not_lose_the_good_ones_of_its_batch(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    """Five good images and one corrupt JPEG in one batch of 16: the five are predicted and written (csv, json,
    drawn images), then the run stops naming the file and the skip_bad_images=true way on."""
    from visionkit.run import predict

    ckpt, digit = digits_checkpoint
    folder = tmp_path / "in"
    folder.mkdir()
    for index in range(5):
        (folder / f"{index}.png").write_bytes(digit.read_bytes())
    (folder / "2b_corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    out = tmp_path / "out"
    cfg = compose_config(out, [f"ckpt_path={ckpt}", f"source={folder}", "batch_size=16"], name="predict")
    with pytest.raises(VisionkitError, match=r"2b_corrupt.jpg.*set skip_bad_images=true"):
        predict(cfg)
    records = json.loads((out / "predictions.json").read_text())
    assert sorted(Path(r["path"]).name for r in records) == [f"{i}.png" for i in range(5)]
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + 5
    assert len(list((out / "images").glob("*.png"))) == 5
