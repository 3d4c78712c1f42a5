"""`visionkit-stylize` as users run it: outputs written where promised, inputs never overwritten, bad input
named in one line; and the fast stylizer trained under DDP, then used by the stylize and export commands."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_cli import QUIET, run, run_folder
from tests.test_style import content_photo, stripes
from visionkit.cli.stylize import main

RANDOM = ["--weights", "random", "--quiet"]


@pytest.fixture
def pictures(tmp_path: Path) -> Path:
    folder = tmp_path / "pictures"
    folder.mkdir()
    Image.fromarray(content_photo()).save(folder / "photo.jpg")
    Image.fromarray(content_photo(40, 56)[::-1].copy()).save(folder / "second.png")
    Image.fromarray(stripes()).save(tmp_path / "style.png")
    return folder


def stylize_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the command in this process: (exit status, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    return int(exit_info.value.code or 0), out, err


def test_one_photo_to_a_file_with_intermediate_images(
    tmp_path: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "result.jpg"
    args = [str(pictures / "photo.jpg"), "--style", str(tmp_path / "style.png"), "-o", str(out)]
    proc = run("visionkit-stylize", [*args, "--size", "64", "--steps", "4", "--save-every", "2", *RANDOM], tmp_path)
    assert Image.open(out).size == (64, 48) and Image.open(out).mode == "RGB"
    assert sorted(p.name for p in tmp_path.glob("result_step*.jpg")) == ["result_step00002.jpg", "result_step00004.jpg"]
    assert re.search(r"loss [\d.e+-]+ → [\d.e+-]+", proc.stdout)
    status, _, err = stylize_cli([*args, "--steps", "1", *RANDOM], capsys)
    assert status == 1 and "already exists; pass --overwrite" in err
    assert stylize_cli([*args, "--size", "48", "--steps", "1", "--overwrite", *RANDOM], capsys)[0] == 0
    assert Image.open(out).size == (48, 36)


def test_several_photos_and_styles_into_a_folder_skipping_a_corrupt_one(
    tmp_path: Path, pictures: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (pictures / "broken.jpg").write_bytes(b"not a jpeg")
    Image.fromarray(stripes(48, 3, (20, 200, 90))).save(tmp_path / "style2.png")
    args = [str(pictures), "--style", str(tmp_path / "style.png"), str(tmp_path / "style2.png")]
    args += [
        "--style-weights",
        "3",
        "1",
        "--size",
        "48",
        "--steps",
        "2",
        "--num-scales",
        "2",
        "-o",
        str(tmp_path / "out"),
        *RANDOM,
    ]
    status, out, err = stylize_cli(args, capsys)
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["photo.jpg", "second.png"], (out, err)
    assert status == 1 and "skipped" in err and "broken.jpg" in err and "not a readable image" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["-o", "{pictures}/photo.jpg", "--overwrite"], "is one of the inputs"),
        (["-o", "{tmp}/x.png", "--style", "{tmp}/missing.png"], "missing.png does not exist"),
        (["-o", "{tmp}/x.png", "--style-weights", "1", "2"], "2 style weights given for 1 style"),
        (["-o", "{tmp}/x.png", "--steps", "3", "4"], "one per scale"),
        (["-o", "{tmp}/x.png", "--preserve-colors", "--tiny"], "20x20 px; style transfer needs at least 32 px"),
    ],
)
def test_bad_input_gets_one_clear_line(
    tmp_path: Path, pictures: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(tmp_path / "tiny.png")
    content = str(tmp_path / "tiny.png") if "--tiny" in extra else str(pictures / "photo.jpg")
    extra = [e.format(pictures=pictures, tmp=tmp_path) for e in extra if e != "--tiny"]
    style = [] if "--style" in extra else ["--style", str(tmp_path / "style.png")]
    status, _, err = stylize_cli([content, *style, *extra, "--size", "48", *RANDOM], capsys)
    assert status == 1 and message in err and "Traceback" not in err, err
    assert Image.open(pictures / "photo.jpg").size == (64, 48)  # the input is untouched


def test_missing_vgg19_weights_say_where_to_put_the_file(
    tmp_path: Path, pictures: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    args = [str(pictures / "photo.jpg"), "--style", str(tmp_path / "style.png"), "-o", str(tmp_path / "x.png")]
    status, _, err = stylize_cli([*args, "--quiet"], capsys)
    assert status == 1 and "vgg19-dcbb9e9d.pth" in err and str(tmp_path / "torch") in err and "--weights" in err


def test_fast_stylizer_ddp_two_cpu_processes_then_stylize_export_and_predict(
    tmp_path: Path, pictures: Path, builtin_data: Path
) -> None:
    """task=style_transfer under DDP (2 CPU processes, gloo) on the built-in photos: one run folder, the
    sample grid; the checkpoint stylizes a folder in batches (--model), exports ONNX, and visionkit-predict
    points to visionkit-stylize."""
    args = [
        "task=style_transfer",
        "trainer=ddp_cpu",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=3",
        "+trainer.limit_val_batches=1",
        "+trainer.limit_test_batches=1",
        "vgg_weights=random",
        "model.width=8",
        "model.residual_blocks=1",
        "data.image_size=64",
        f"style_image={tmp_path / 'style.png'}",
        f"paths.data_dir={builtin_data}",
        *QUIET,
    ]
    out = run("visionkit-train", args, tmp_path).stdout
    runs = list((tmp_path / "outputs" / "style_transfer").glob("*/*"))
    assert runs == [run_folder(out)] and (runs[0] / "plots" / "val_samples.png").is_file()
    assert out.count("test_loss") >= 1
    best = runs[0] / "checkpoints" / "best.ckpt"
    styled = run("visionkit-stylize", [str(pictures), "--model", str(best), "-o", "fast", "--quiet"], tmp_path)
    assert "2 image(s) stylized" in styled.stdout
    assert Image.open(tmp_path / "fast" / "second.png").size == (56, 40)
    exported = run_folder(run("visionkit-export", [f"ckpt_path={best}", "formats=[onnx]"], tmp_path).stdout)
    assert (exported / "model.onnx").is_file()
    for named in ([], ["task=style_transfer"]):  # with or without naming the task: pointed to visionkit-stylize
        args = [*named, f"ckpt_path={best}", f"source={pictures}"]
        wrong = run("visionkit-predict", args, tmp_path, expect_ok=False)
        assert wrong.returncode == 1 and "visionkit-stylize photo.jpg --model" in wrong.stderr, wrong.stderr


def test_every_option_of_the_help_says_what_it_does() -> None:
    from visionkit.cli.stylize import build_parser

    silent = [a.dest for a in build_parser()._actions if not (a.help or "").strip()]
    assert not silent, f"options without help text: {silent}"
