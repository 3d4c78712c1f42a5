"""The inference layer's base: a `Predictor` turns images of any kind (paths, arrays, PIL images, tensors) into one
`Result` per image, in batches, with the preprocessing its checkpoint stored. Each task's module adds its result
type, its batch step and its output writers; `load_predictor` (in `visionkit.inference`) picks one per checkpoint.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, nullcontext
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import albumentations as A
import numpy as np
from PIL import Image

from visionkit.data.augment import LETTERBOX_FILL, resize_ops
from visionkit.data.contract import InputContract
from visionkit.data.files import list_images
from visionkit.errors import VisionkitError
from visionkit.inference.outputs import write_records
from visionkit.inference.result import ImageInput, InputImage, Result
from visionkit.utils.arrays import is_tensor
from visionkit.utils.io import as_array, to_rgb
from visionkit.utils.logging import get_logger
from visionkit.utils.video import VideoFrame, is_video_source, video_frames

if TYPE_CHECKING:  # PyTorch runs checkpoints; an exported file's predictor runs on NumPy alone
    import torch
    from torch import nn

log = get_logger(__name__)


def expand_inputs(images: ImageInput | Iterable[ImageInput]) -> Iterable[ImageInput]:
    """One input, a video (its frames), a folder or glob (its image files), a 4-D batch (its images) or an
    iterable of inputs."""
    if isinstance(images, (str, os.PathLike)):
        if is_video_source(images):
            return video_frames(images)
        path = Path(images).expanduser()
        return [images] if path.is_file() else list_images(str(images))
    if isinstance(images, np.ndarray) or is_tensor(images):
        return list(images) if images.ndim == 4 else [images]
    if isinstance(images, (Image.Image, VideoFrame)):
        return [images]
    return images


# a batch as its thread hands it back: the inputs, the results of the readable ones, the seconds the network took
Predicted = tuple[list[InputImage], list[Result], float]


class Predictor:
    """Checkpoint in, results out, for one task. Owns the device and precision, the checkpoint's preprocessing
    (`contract`: size, resize mode, mean/std, class names), batching and the skipping of unreadable inputs.

    `predictor(images)` returns a list (one Result per input, in order); `predictor.stream(images)` yields them
    lazily, batch by batch, so memory stays bounded whatever the number of images. num_workers: threads that read
    (decode, resize) the next batch while the network runs; None (default) = none on the CPU (its cores run the
    network: a reading thread made batch-16 detection 15 % slower on 2 cores) and up to 4 with CUDA.

    `model`: a task (PyTorch tensors on `device`), or an exported file's `ExportedModel` (`exported` names its
    runtime): then the batches are NumPy arrays from end to end and PyTorch is never imported.
    """

    task_name: ClassVar[str] = ""
    default_size: ClassVar[int] = 224  # network input size for checkpoints that stored none
    finds_boxes: ClassVar[bool] = False  # results hold boxes a tracker can follow over video frames
    model: Any  # the task (each predictor calls its own task's methods), or an exported file's `ExportedModel`

    def __init__(
        self,
        model: nn.Module,
        contract: InputContract,
        *,
        device: str | torch.device = "auto",
        precision: str = "fp32",
        batch_size: int = 16,
        num_workers: int | None = None,
        skip_bad_images: bool = False,
    ) -> None:
        self.exported: str | None = getattr(model, "exported", None)  # the runtime of an exported file
        self.device: str | torch.device  # "cpu" for an exported file (NumPy arrays), else PyTorch's device
        if self.exported:  # its runtime holds the device; the predictor's own arrays are NumPy's
            self.device, self.precision = "cpu", "fp32"
        else:
            from visionkit.utils.device import pick_device, resolve_precision

            self.device = pick_device(device)
            self.precision = resolve_precision(precision, self.device)
        on_cpu = self.on_cpu
        if num_workers is None:  # the CPU's cores are busy with the network; a GPU leaves them free to read
            num_workers = 0 if on_cpu else min(4, os.cpu_count() or 1)
        if batch_size < 1 or num_workers < 0:
            raise VisionkitError(
                f"batch_size={batch_size}, num_workers={num_workers}: give batch_size ≥ 1, workers ≥ 0"
            )
        self.num_workers = int(num_workers)
        self.contract = contract
        self.batch_size = int(batch_size)
        self.skip_bad_images = skip_bad_images
        self.model = self.prepare(model if self.exported else model.to(self.device).eval())
        self.counts = {"images": 0, "skipped": 0}
        self.network_seconds = 0.0  # time in predict_batch (the rest of a run reads, resizes and writes)
        peak = contract.peak
        mean = np.asarray(contract.mean, dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(peak)
        inverse_std = 1.0 / (np.asarray(contract.std, dtype=np.float32).reshape(1, -1, 1, 1) * np.float32(peak))
        self._mean: np.ndarray | torch.Tensor  # NumPy for an exported file, else tensors on the device
        self._inverse_std: np.ndarray | torch.Tensor
        if self.exported:
            self._mean, self._inverse_std = mean, inverse_std
        else:
            import torch

            self._mean = torch.from_numpy(mean).to(self.device)
            self._inverse_std = torch.from_numpy(inverse_std).to(self.device)
        self._zero_mean = not any(contract.mean)  # YOLO and the stylizer take 0..1 pixels: one pass less
        self.fill = LETTERBOX_FILL / 255.0 * peak  # the letterbox's grey on the pixels' own scale
        self._resize = A.Compose(resize_ops(contract.image_size, contract.resize, fill=self.fill))

    def __repr__(self) -> str:
        """What the predictor runs and how it prepares images, e.g. `DetectionPredictor(640x640 letterbox, 3
        channels, 80 classes [person, bicycle, car, ...], PyTorch on cpu fp32, batch 16)`."""
        contract, shown = self.contract, ", ".join(self.contract.class_names[:3])
        more = ", ..." if len(contract.class_names) > 3 else ""
        height, width = contract.image_size
        runtime = self.exported or f"PyTorch on {self.device} {self.precision}"
        return (
            f"{type(self).__name__}({height}x{width} {contract.resize}, {contract.pixels.channels} channels, "
            f"{len(contract.class_names)} classes [{shown}{more}], {runtime}, batch {self.batch_size})"
        )

    @property
    def names(self) -> list[str]:
        """Class names in class-id order."""
        return list(self.contract.class_names)

    @property
    def on_cpu(self) -> bool:
        """Whether the network runs on the CPU (an exported file's predictor holds NumPy arrays: always)."""
        return isinstance(self.device, str) or self.device.type == "cpu"

    def prepare(self, model: nn.Module) -> nn.Module:
        """The network made ready for inference (on its device, in eval mode); tasks may fuse layers here."""
        return model

    def __call__(self, images: ImageInput | Iterable[ImageInput], batch_size: int | None = None) -> list[Result]:
        """One Result per input, in input order (inputs: paths, folders, globs, arrays, PIL images, tensors).
        Results of files drop their pixels as they come (`original` reads the file again): long lists stay small and
        the next image decodes into memory in use (fresh memory cost 4 % in page faults at 640 px, batch 1)."""
        results = []
        for result in self.stream(images, batch_size):
            if result.from_file and self.contract.pixels.rgb8:  # other formats keep the picture of their bands
                result.pixels = None
            results.append(result)
        return results

    def stream(
        self, images: ImageInput | Iterable[ImageInput], batch_size: int | None = None, tracker: Any = None
    ) -> Iterator[Result]:
        """Results one by one as their batch is done; inputs are read lazily (a video or a camera works). With
        `num_workers`, threads read and resize the next batch while the network runs on this one. An exported
        file whose runtime runs small batches faster in CPU streams (`ExportedModel.faster_in_streams`) gets them
        in streams. `tracker` (an `ObjectTracker`, video frames in order): each result's boxes as tracked (`finish`)."""
        size = int(batch_size or self.batch_size)
        inputs = enumerate(expand_inputs(images))
        lanes = self.model.streams(size) if self.exported and not self.num_workers else 1
        if lanes > 1:
            yield from self._stream_in_streams(iter(lambda: list(islice(inputs, size)), []), lanes, tracker)
            return
        if not self.num_workers:
            while batch := self._read(list(islice(inputs, size))):
                yield from (self.finish(result, tracker) for result in self._run(batch))
            return
        with ThreadPoolExecutor(self.num_workers, thread_name_prefix="visionkit-read") as pool:

            def submit() -> list[Future[InputImage]]:
                return [pool.submit(self._load, index, image) for index, image in islice(inputs, size)]

            pending = submit()
            while pending:
                batch = [future.result() for future in pending]
                pending = submit()  # read one batch ahead, never more: memory stays bounded
                yield from (self.finish(result, tracker) for result in self._run(batch))

    def _stream_in_streams(
        self, batches: Iterator[list[tuple[int, ImageInput]]], lanes: int, tracker: Any
    ) -> Iterator[Result]:
        """`stream` for an exported file whose runtime runs several small batches at once (OpenVINO's CPU streams):
        each batch read and predicted in a thread of its own, `lanes` of them at a time, results yielded in input
        order. A single batch runs alone, over every core (the latency a single picture wants), and so do all
        where timing found streams slower on this machine (`ExportedModel.faster_in_streams`)."""
        first, second = next(batches, []), next(batches, [])
        if not second or not self.model.faster_in_streams(len(first)):  # timed on the second batch's arrival
            for batch in chain(filter(None, (first, second)), batches):
                yield from (self.finish(result, tracker) for result in self._run(self._read(batch)))
            return
        with ThreadPoolExecutor(lanes, "visionkit-stream", initializer=self.model.run_in_streams) as pool:
            pending: deque[Future[Predicted]] = deque()
            for batch in chain([first, second], batches):
                done = pending.popleft().result() if len(pending) == lanes else None
                pending.append(pool.submit(lambda b: self._predicted(self._read(b)), batch))
                if done is not None:  # the next batch is on its way first: the cores stay busy meanwhile
                    yield from (self.finish(result, tracker) for result in self._run(*done))
            while pending:
                yield from (self.finish(result, tracker) for result in self._run(*pending.popleft().result()))

    def _read(self, batch: list[tuple[int, ImageInput]]) -> list[InputImage]:
        """A batch of (index, input) pairs read and prepared (`_load`)."""
        return [self._load(index, image) for index, image in batch]

    def _load(self, index: int, image: ImageInput) -> InputImage:
        """One input read as RGB and prepared (`prepare_input`); unreadable ones stop, or are marked skipped."""
        if isinstance(image, VideoFrame):
            pixels = image.image
            return InputImage(
                index, image.source, pixels, None, False, self.prepare_input(pixels), image.index, image.time
            )
        from_file = isinstance(image, (str, os.PathLike))
        source = os.fspath(image) if isinstance(image, (str, os.PathLike)) else f"image{index}"
        try:
            pixels, raw = self.read_input(image, source)
        except VisionkitError as exc:  # stops the run after the rest of its batch (`_run`), unless skipped
            return InputImage(index, source, None, str(exc), from_file)
        prepared = self.prepare_input(pixels if raw is None else raw)
        return InputImage(index, source, pixels, from_file=from_file, prepared=prepared, raw=raw)

    def read_input(self, image: ImageInput, source: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(HxWx3 uint8 RGB picture, None) of an input, or for scans and bands (the contract's pixel format) the
        picture of its chosen bands and every channel as 0..1 floats for the network. In-memory arrays are
        taken as stored (all bands; `data.bands` picks from them)."""
        fmt = self.contract.pixels
        if fmt.rgb8:
            return to_rgb(image, name=source), None
        if isinstance(image, (str, os.PathLike)):
            stored = fmt.read(os.fspath(image))
        else:
            stored = fmt.conform(as_array(image, source), source)
        return fmt.picture(stored), fmt.to_unit(stored)

    def prepare_input(self, pixels: np.ndarray) -> np.ndarray | None:
        """Per-image work done as the image is read (in the reading threads): the resize to the network size for
        the tasks that use it (`resized`); None for tasks that work at each image's own size."""
        return None

    def _predicted(self, batch: list[InputImage]) -> Predicted:
        """(the batch, the results of its readable inputs, the seconds `predict_batch` took)."""
        good = [item for item in batch if item.error is None]
        start = time.perf_counter()
        with self.network_mode():
            results = list(self.predict_batch(good)) if good else []
        return batch, results, time.perf_counter() - start

    def _run(
        self, batch: list[InputImage], results: list[Result] | None = None, seconds: float = 0.0
    ) -> Iterator[Result]:
        """The batch's results in input order (predicted here, or given with the seconds they took). An unreadable
        input is a skipped result with `skip_bad_images`; without, the batch's readable inputs are still predicted
        and yielded first (their files get written), then the first unreadable one stops the run."""
        if results is None:
            batch, results, seconds = self._predicted(batch)
        self.network_seconds += seconds
        done = iter(results)
        bad = None if self.skip_bad_images else next((item for item in batch if item.error is not None), None)
        for item in batch:
            if item.error is None:
                self.counts["images"] += 1
                yield next(done)
            elif bad is None:  # logged here, as it is skipped: `embed` reads with `_load` too, and stops instead
                log.warning(f"skipped {item.source}: {item.error}")
                self.counts["skipped"] += 1
                yield self.skipped(item)
        if bad is not None:  # the way on, when there were other inputs
            others = len(batch) > 1 or bad.index > 0
            raise VisionkitError(
                (bad.error or f"{bad.source}: unreadable")
                + ("; set skip_bad_images=true to skip unreadable images and go on" if others else "")
            )

    def network_mode(self) -> AbstractContextManager:
        """PyTorch's inference mode under the chosen precision; nothing for an exported file (NumPy)."""
        if self.exported:
            return nullcontext()
        import torch

        from visionkit.utils.device import autocast

        stack = ExitStack()
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast(self.device, self.precision))
        return stack

    def predict_batch(self, items: list[InputImage]) -> list[Result]:
        """Results for readable inputs (called in inference mode under the chosen precision)."""
        raise NotImplementedError

    def finish(self, result: Result, tracker: Any = None) -> Result:
        """The result as it leaves `stream`: its boxes as `tracker` keeps them, when one is given."""
        return tracker.update(result) if tracker is not None and result.ok else result

    def skipped(self, item: InputImage) -> Result:
        """The Result of an input that could not be read."""
        raise NotImplementedError

    def write_summary(self, records: Sequence[dict[str, Any]], folder: Path) -> list[Path]:
        """The per-run files of a set of results' `to_dict()` records (predictions.json; classification adds
        predictions.csv)."""
        return [write_records(records, folder)]

    def common(self, item: InputImage) -> dict[str, Any]:
        """The Result fields every task fills the same way."""
        return {
            "source": item.source,
            "size": tuple(item.rgb.shape[:2]),
            "names": self.names,
            "pixels": item.rgb,
            "from_file": item.from_file,
            "frame": item.frame,
            "time": item.time,
        }

    def resize(self, pixels: np.ndarray) -> np.ndarray:
        """An image brought to the network size the way training did (the checkpoint's resize mode); one that
        has that size already is left as it is (what every mode does to it)."""
        if pixels.shape[:2] == self.contract.image_size:
            return pixels
        return self._resize(image=pixels)["image"]

    def resized(self, items: Sequence[InputImage]) -> list[np.ndarray]:
        """The images at the network size (prepared as they were read, or resized now)."""
        return [item.prepared if item.prepared is not None else self.resize(item.network) for item in items]

    def to_network(self, pictures: Sequence[np.ndarray]) -> Any:
        """(B, C, H, W) float input, normalized with the checkpoint's mean/std on the device: pixels travel as
        uint8 (0..1 floats for scans and bands) and become normalized floats only there. Contiguous (NCHW):
        YOLOv8-n's channels-last CPU convolutions run 12 % faster on it at batch 16 than on channels-last (measured).
        For an exported file, a NumPy array (what its runtime takes): the uint8 (B, H, W, C) pictures as they are
        where its runtime normalizes them itself (`ExportedModel.takes_pixels`)."""
        if self.exported and self.model.takes_pixels:  # one picture is handed as it is, not copied
            return pictures[0][None] if len(pictures) == 1 else np.stack(pictures)
        if self.exported:
            images = np.stack(pictures).transpose(0, 3, 1, 2).astype(np.float32, order="C")
            if not self._zero_mean:
                images -= self._mean
            images *= self._inverse_std
            return images
        import torch

        stacked = torch.from_numpy(np.stack(pictures)).to(self.device, non_blocking=True)
        batch = stacked.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)  # one pass
        mean, inverse_std = cast(torch.Tensor, self._mean), cast(torch.Tensor, self._inverse_std)  # a checkpoint's
        if self._zero_mean:
            return batch.mul_(inverse_std)
        return batch.sub_(mean).mul_(inverse_std)
