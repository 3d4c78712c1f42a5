"""visionkit-serve: uploads checked, results encoded, and real servers (subprocesses on free localhost ports)
answering real HTTP requests, good and bad, and the page drawing a result in headless Chromium."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import TrainedDetector, TrainedSegmenter, chromium_or_skip, compose_config, save_task_checkpoint
from tests.serve_requests import bad_requests, bomb_png, encoded, running_server
from visionkit.errors import VisionkitError
from visionkit.inference import load_predictor
from visionkit.serve.api import PredictorAPI, ServeOptions
from visionkit.serve.encode import mask_to_rle, rle_to_mask
from visionkit.serve.uploads import BadUpload, Upload, content_kind, decode_upload, uploads_from_json

KEY = "s3cret-key"
CONF = 0.05  # the shared detector trains for 12 epochs only


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_uploads_are_read_and_every_bad_one_is_named() -> None:
    picture = np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    png = encoded(picture)
    uploads = uploads_from_json(json.dumps({"images": [_b64(png), f"data:image/png;base64,{_b64(png)}"]}).encode())
    assert [u.name for u in uploads] == ["image0", "image1"] and all(u.data == png for u in uploads)
    assert (decode_upload(uploads[0], 10_000) == picture).all()
    cases = [
        (lambda: uploads_from_json(b"{nope"), 400, "not valid JSON"),
        (lambda: uploads_from_json(b'{"img": 1}'), 422, 'needs "image"'),
        (lambda: uploads_from_json(b'{"images": []}'), 422, "non-empty list"),
        (lambda: uploads_from_json(b'{"images": ["aGk=", 3]}'), 422, r'"images"\[1\] must be a base64 string, not int'),
        (lambda: uploads_from_json(b'{"image": "%%%"}'), 400, '"image" is not valid base64'),
        (lambda: content_kind("text/plain"), 415, "Content-Type text/plain is not accepted"),
        (lambda: decode_upload(Upload("a.png", b""), 10_000), 400, r"a.png is empty \(0 bytes\)"),
        (lambda: decode_upload(Upload("a.txt", b"hello"), 10_000), 400, "a.txt is not an image"),
        (lambda: decode_upload(Upload("c.png", png[:-30]), 10_000), 400, "c.png is corrupt or truncated"),
        (
            lambda: decode_upload(Upload("b.png", bomb_png()), 40_000_000),
            413,
            r"b.png: Image size \(400000000 pixels\) exceeds.*at most 40 megapixels",
        ),
    ]
    for call, status, message in cases:
        with pytest.raises(BadUpload, match=message) as caught:
            call()
        assert caught.value.status == status
    assert content_kind("multipart/form-data; boundary=x") == "form" and content_kind("application/json") == "json"


def test_segmentation_and_stylizer_answers_hold_their_pictures(trained_segmenter: TrainedSegmenter, tmp_path) -> None:
    from visionkit.tasks import StyleTransferTask

    images = [
        np.asarray(Image.open(p).convert("RGB"))
        for p in sorted((trained_segmenter.root / "images" / "test").glob("*.png"))[:3]
    ]
    api = PredictorAPI(ServeOptions(str(trained_segmenter.ckpt), mask_format="both"), max_batch_size=4)
    api.setup("cpu")
    batch = [{"names": ["a.png", "b.png"], "images": images[:2]}, {"names": ["c.png"], "images": images[2:]}]
    answers = [api.encode_response(output) for output in api.predict(batch)]  # one pass over both requests
    expected = load_predictor(trained_segmenter.ckpt, device="cpu")(images)
    records = [record for answer in answers for record in answer]
    assert [len(a) for a in answers] == [2, 1] and [r["path"] for r in records] == ["a.png", "b.png", "c.png"]
    for record, result in zip(records, expected):
        assert "mask" not in record and record["classes"] == result.class_shares
        png = Image.open(io.BytesIO(base64.b64decode(record["mask_png"])))
        assert png.mode == "P" and (np.asarray(png) == result.mask).all()  # pixel values are the class ids
        assert (rle_to_mask(record["mask_rle"]) == result.mask).all()
    assert mask_to_rle(np.array([[0, 0, 1], [1, 1, 2]])) == {"size": [2, 3], "values": [0, 1, 2], "counts": [2, 3, 1]}

    task = StyleTransferTask(vgg_weights="random", width=8, residual_blocks=1).eval()
    state = {"image_size": 64, "resize": "crop", "mean": [0.0] * 3, "std": [1.0] * 3}
    ckpt = save_task_checkpoint(task, tmp_path / "stylizer.ckpt", state)
    stylizer = PredictorAPI(ServeOptions(str(ckpt)), max_batch_size=1)  # one request at a time: no batch list
    stylizer.setup("cpu")
    record = stylizer.encode_response(stylizer.predict({"names": ["p.png"], "images": images[:1]}))[0]
    picture = np.asarray(Image.open(io.BytesIO(base64.b64decode(record["image"]))))
    assert "output" not in record and record["image_format"] == "png"
    assert (picture == load_predictor(ckpt)(images[:1])[0].image).all()  # PNG: the very pixels


def test_serve_refuses_bad_settings_before_starting(digits_checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    from visionkit.run import serve

    ckpt, _ = digits_checkpoint
    cases = [
        (["host=192.168.1.4"], r"host=192.168.1.4: give 127.0.0.1 \(this machine\), 0.0.0.0 or ::"),
        (["port=80"], "port=80: expected a port from 1024 to 65535"),
        (["batch_timeout=60"], "batch_timeout=60: give 0 or more seconds, less than timeout=30.0"),
        (["mask_format=jpg"], "mask_format"),
    ]
    for overrides, message in cases:
        cfg = compose_config(tmp_path, [f"ckpt_path={ckpt}", *overrides], name="serve")
        with pytest.raises(VisionkitError, match=message):
            serve(cfg)
    with pytest.raises(VisionkitError, match=r"ckpt_path: checkpoint .*missing.ckpt does not exist"):
        serve(compose_config(tmp_path, [f"ckpt_path={tmp_path / 'missing.ckpt'}"], name="serve"))


def test_serve_without_its_extra_says_what_to_install(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `serve` extra is apart from `train` and `runtime`: without LitServe the command names it."""
    from visionkit.errors import user_message
    from visionkit.run import serve

    for name in [m for m in sys.modules if m.startswith("visionkit.serve")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "litserve", None)  # as if not installed: importing it fails
    cfg = compose_config(tmp_path, [f"ckpt_path={digits_checkpoint[0]}"], name="serve")
    with pytest.raises(ModuleNotFoundError) as missing:
        serve(cfg)
    assert user_message(missing.value) == "litserve is not installed: pip install 'visionkit[serve]'"


def _expected_top(predictor, images: list[np.ndarray]) -> list[list]:
    return [r.to_dict()["top_k"] for r in predictor(images)]


def test_a_classification_server_answers_good_requests_and_refuses_bad_ones(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path
) -> None:
    """Health, info, docs and the page; multipart and JSON; several images per request; answers equal to the
    predictor's; a stream of bad requests mixed with good ones from 8 clients: each bad one a 4xx JSON error,
    each good one right, and the server healthy after."""
    ckpt, digit = digits_checkpoint
    rng = np.random.default_rng(1)
    images = [np.asarray(Image.open(digit).convert("RGB")), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)]
    jpeg = encoded(images[0], "JPEG")
    reference = load_predictor(ckpt, device="cpu")
    expected = _expected_top(reference, [images[0], images[1], np.asarray(Image.open(io.BytesIO(jpeg)))])
    overrides = ["max_batch_size=8", "batch_timeout=0.02", "max_upload_mb=2", "workers=1"]
    with running_server(ckpt, tmp_path, *overrides, api_key=KEY) as server, httpx.Client(timeout=60) as client:
        headers = server.headers
        assert client.get(f"{server.url}/health").status_code == 401  # the key guards every endpoint
        info = client.get(f"{server.url}/info", headers=headers).json()["model"]
        assert info["task"] == "classification" and info["classes"] == [str(i) for i in range(10)]
        assert info["input_size"] == [32, 32] and info["model"] == "lenet5" and info["visionkit_version"]
        schema = client.get(f"{server.url}/openapi.json").json()
        assert "multipart/form-data" in schema["paths"]["/predict"]["post"]["requestBody"]["content"]
        page = client.get(f"{server.url}/")
        assert page.status_code == 200 and "<canvas" in page.text
        assert "http://" not in page.text and "https://" not in page.text  # nothing fetched from elsewhere

        files = [("image", ("digit.png", encoded(images[0]))), ("image", ("noise.png", encoded(images[1])))]
        answer = client.post(f"{server.url}/predict", files=files, headers=headers)
        assert answer.status_code == 200, answer.text
        records = answer.json()
        assert [r["path"] for r in records] == ["digit.png", "noise.png"]
        assert [(r["height"], r["width"]) for r in records] == [(64, 64), (40, 50)]
        for record, top in zip(records, expected):
            assert [name for name, _ in record["top_k"]] == [name for name, _ in top]
            assert np.allclose([p for _, p in record["top_k"]], [p for _, p in top], atol=1e-5)
        body = {"images": [_b64(encoded(images[1])), _b64(jpeg)]}
        records = client.post(f"{server.url}/predict", json=body, headers=headers).json()
        assert [r["top_k"][0][0] for r in records] == [expected[1][0][0], expected[2][0][0]]

        oversize = client.post(f"{server.url}/predict", files={"image": ("big.png", b"0" * 2_500_000)}, headers=headers)
        assert oversize.status_code == 413 and "max_upload_mb" in oversize.json()["detail"]

        bad = bad_requests(jpeg, headers)
        stream = [("good", None)] * 24 + [("bad", case) for case in bad * 3]
        order = rng.permutation(len(stream))

        def send(index: int) -> tuple[str, object, httpx.Response]:
            kind, case = stream[index]
            if case is None:
                return (
                    kind,
                    None,
                    client.post(f"{server.url}/predict", files={"image": ("d.jpg", jpeg)}, headers=headers),
                )
            return kind, case, client.post(f"{server.url}/predict", **case.request)

        with ThreadPoolExecutor(8) as pool:
            replies = list(pool.map(send, order.tolist()))
        for kind, case, reply in replies:
            if kind == "good":
                assert reply.status_code == 200, reply.text
                assert reply.json()[0]["top_k"][0][0] == expected[2][0][0]
            else:
                assert reply.status_code == case.status, (case.name, reply.status_code, reply.text)
                assert reply.json()["detail"], case.name  # a JSON error that says what is wrong
        assert client.get(f"{server.url}/health", headers=headers).status_code == 200
        log = server.log_text()
    assert "Traceback" not in log and " 500 " not in log, log[-3000:]


def test_the_page_draws_a_detectors_boxes_in_chromium(trained_detector: TrainedDetector, tmp_path: Path) -> None:
    browser = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    paths = sorted((Path(trained_detector.data_yaml).parent / "images" / "val").glob("*"))[:16]
    found = load_predictor(trained_detector.ckpt, device="cpu", conf=CONF)(paths)
    image_path, expected = max(zip(paths, found), key=lambda pair: len(pair[1].boxes))  # the briefly trained
    image = np.asarray(Image.open(image_path).convert("RGB"))  # detector finds little at a usual threshold
    assert len(expected.boxes) > 0
    errors: list[str] = []
    with running_server(trained_detector.ckpt, tmp_path, f"conf={CONF}") as server, sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = chromium.new_page()
        page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(server.url)
        page.wait_for_selector("body[data-state=ready]", timeout=30_000)
        page.set_input_files("#file", str(image_path))
        page.wait_for_selector("body[data-state=done], body[data-state=error]", timeout=60_000)
        status = page.inner_text("#status")
        summary = page.inner_text("#summary")
        answer = json.loads(page.inner_text("#json"))
        x1, y1, x2, _ = (round(v) for v in expected.boxes[0].tolist())
        size = page.evaluate("[document.getElementById('canvas').width, document.getElementById('canvas').height]")
        pixel = f"getImageData({(x1 + x2) // 2}, {y1}, 1, 1).data"  # the colour drawn on the first box's top edge
        edge = page.evaluate(f"Array.from(document.getElementById('canvas').getContext('2d').{pixel})")
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        chromium.close()
        info = httpx.get(f"{server.url}/info").json()["model"]
    assert "answered in" in status and summary == f"{len(expected.boxes)} object(s)", (status, summary)
    assert len(answer[0]["detections"]) == len(expected.boxes) and size == [image.shape[1], image.shape[0]]
    colour = info["colours"][int(expected.classes[0])]
    wanted = [int(colour[i : i + 2], 16) for i in (1, 3, 5)]
    assert max(abs(a - b) for a, b in zip(edge[:3], wanted)) <= 40, (edge, wanted)
    assert not errors, errors


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("workers", [1, 2])
def test_sigterm_answers_the_request_in_flight_then_stops_every_process(
    digits_checkpoint: tuple[Path, Path], tmp_path: Path, workers: int
) -> None:
    """`kill <pid>` (SIGTERM to the main process only) as systemd, Docker and Kubernetes stop a service: the
    request waiting in a batch at the signal is answered, the command exits 0, no process of the server's group is
    left, and the port can be bound again."""
    ckpt, digit = digits_checkpoint
    overrides = [f"workers={workers}", "batch_timeout=2.0", "max_batch_size=16"]  # a request waits 2 s in its batch
    with running_server(ckpt, tmp_path, *overrides) as server, ThreadPoolExecutor(1) as pool:
        port = int(server.url.rsplit(":", 1)[1])
        files = {"image": ("digit.png", digit.read_bytes())}
        reply = pool.submit(httpx.post, f"{server.url}/predict", files=files, timeout=30)
        time.sleep(0.8)
        assert not reply.done()
        server.process.send_signal(signal.SIGTERM)
        answer = reply.result()
        assert answer.status_code == 200 and answer.json()[0]["top_k"], answer.text
        assert server.process.wait(timeout=30) == 0, server.log_text()[-3000:]
        deadline = time.monotonic() + 15
        while _group_alive(server.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(server.process.pid), "a worker outlived the server"
        with socket.socket() as probe:  # as servers bind (uvicorn too): the closed connections' TIME_WAIT is no hold
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))
            probe.listen()
        log = server.log_text()
    assert "Traceback" not in log and "visionkit-serve: stopped" in log, log[-3000:]


def test_a_port_in_use_is_named_before_anything_is_announced(digits_checkpoint: tuple[Path, Path]) -> None:
    ckpt, _ = digits_checkpoint
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = subprocess.run(
            [str(Path(sys.executable).parent / "visionkit-serve"), f"ckpt_path={ckpt}", f"port={port}"],
            capture_output=True,
            text=True,
            timeout=120,
            env=os.environ | {"VISIONKIT_OFFLINE": "1"},
        )
    assert run.returncode == 1, run.stderr
    assert run.stdout == ""  # nothing announced
    expected = f"visionkit-serve: error: port {port} on 127.0.0.1 is in use (by another server?); choose another port="
    assert run.stderr.strip().splitlines() == [expected], run.stderr
