"""The LitServe API of a checkpoint: each inference worker loads the checkpoint's predictor once (`setup`), and
LitServe's dynamic batching hands it the requests that arrived together, answered with one pass of the
predictor over all their images. Requests reach it already read and checked (`visionkit.serve.uploads`)."""

from __future__ import annotations

import importlib.util
import os
import secrets
from dataclasses import dataclass, field
from typing import Any, cast

import litserve as ls
from fastapi import Header, HTTPException

from visionkit.inference import Result, load_predictor
from visionkit.inference.embedding import EmbeddingResult
from visionkit.serve.encode import encode_result


@dataclass(frozen=True)
class ServeOptions:
    """What every worker needs to answer: the checkpoint, the predictor's options and how pictures travel.

    threads: torch CPU threads per worker (None: torch's default; an exported file served without PyTorch keeps
    its runtime's own). api_key: required as the X-API-Key header
    when set.
    """

    ckpt_path: str
    predictor: dict[str, Any] = field(default_factory=dict)
    image_size: int | list[int] | None = None
    mask_format: str = "png"
    image_format: str = "png"
    api_key: str | None = None
    threads: int | None = None
    gallery: str | None = None  # embedding checkpoints: a visionkit-gallery folder that `/search` searches


class PredictorAPI(ls.LitAPI):
    """`POST /predict` of one checkpoint: a request is `{"names": [...], "images": [HxWx3 uint8, ...]}`, its answer
    a list of `Result.to_dict()` records, one per image in the order sent."""

    def __init__(self, options: ServeOptions, max_batch_size: int = 16, batch_timeout: float = 0.01) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/predict")
        self.options = options
        self.predictor: Any = None
        self.gallery: Any = None

    def setup(self, device: str) -> None:
        """Load the predictor on this worker's device (LitServe gives `cpu` or `cuda:N`)."""
        if self.options.threads and device.startswith("cpu") and importlib.util.find_spec("torch") is not None:
            import torch

            torch.set_num_threads(self.options.threads)
        batch_size = max(16, self.max_batch_size)
        options = {"batch_size": batch_size, **self.options.predictor}
        self.predictor = load_predictor(
            self.options.ckpt_path, device=device, image_size=self.options.image_size, **options
        )
        if self.options.gallery:
            from visionkit.inference.gallery import Gallery

            self.gallery = Gallery.load(self.options.gallery)

    def decode_request(self, request: Any) -> Any:
        """The request as the route prepared it (read, checked and decoded in the HTTP process)."""
        return request

    def predict(self, x: Any) -> Any:
        """Results for one request, or (batching) for each request of the batch, from one predictor pass."""
        requests = x if self.max_batch_size > 1 else [x]
        images = [image for request in requests for image in request["images"]]
        results = iter(self.predictor(images))
        answers = [[(next(results), name, request.get("k")) for name in request["names"]] for request in requests]
        return answers if self.max_batch_size > 1 else answers[0]

    def encode_response(self, output: list[tuple[Result, str, int | None]]) -> list[dict[str, Any]]:
        """Each image's record, its pictures inline (`encode_result`); a `/search` request's records (k set) give
        the gallery's nearest identities instead of the embedding."""
        opts = self.options
        records = []
        for result, name, k in output:
            record = encode_result(result, name, opts.mask_format, opts.image_format)
            if k is not None and result.ok:
                matches = self.gallery.search(cast(EmbeddingResult, result).embedding, int(k))[0]
                identity, distance = self.gallery.decide(matches)
                record.pop("embedding", None)
                record |= {"identity": identity, "distance": distance, "threshold": self.gallery.threshold}
                record["matches"] = [m.to_dict() for m in matches]
            records.append(record)
        return records

    def authorize(self, x_api_key: str | None = Header(default=None, description="the server's api_key")) -> None:
        """With an api_key set, every endpoint but the page needs it as the X-API-Key header (401 otherwise)."""
        expected = self.options.api_key
        if expected and not secrets.compare_digest((x_api_key or "").encode(), expected.encode()):
            shown = "no X-API-Key header" if x_api_key is None else "a wrong X-API-Key"
            raise HTTPException(401, f"{shown}: this server needs its api_key in the X-API-Key header")


def cpu_threads(workers: int) -> int:
    """torch threads per CPU worker: the machine's cores shared between the workers."""
    return max(1, (os.cpu_count() or 1) // max(1, workers))
