"""One exception type for user-facing problems, so entry points can print a clean one-line message."""

from __future__ import annotations

from collections.abc import Iterator


class VisionkitError(Exception):
    """A problem with the user's input (data, config, weights) that they can fix; never a bug."""

    reported = False  # already told to the user (e.g. a damaged chunk, named once for all its samples)


# What `pip install 'visionkit[train]'` adds; a base install (with `runtime`) predicts from and serves exported
# files only.
TRAIN_PACKAGES = frozenset({"torch", "torchvision", "lightning", "torchmetrics", "timm", "sklearn", "matplotlib"})
NEEDS_TRAIN = (
    "{name} is not installed: training, checkpoints and every command but predicting from (and serving) an "
    "exported file need PyTorch and Lightning; pip install 'visionkit[train]' (an exported model.onnx or "
    "model_openvino/ predicts without them: pip install 'visionkit[runtime]', then ckpt_path=model.onnx)"
)
# Packages of an extra apart from `train`, by the extra that installs them
EXTRA_PACKAGES = {"litserve": "serve", "fastapi": "serve", "multipart": "serve", "python_multipart": "serve"}


def exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc`, then what it was raised from or during (`__cause__`, else `__context__`), and so on, each once."""
    seen: set[int] = set()
    link: BaseException | None = exc
    while link is not None and id(link) not in seen:
        seen.add(id(link))
        yield link
        link = link.__cause__ or link.__context__


def user_message(exc: BaseException) -> str | None:
    """The one-line message of the first VisionkitError in the cause chain, or None for a bug. A missing package of
    the `train` extra (a base install running a checkpoint) or of another extra says what to install.

    DataLoader workers re-raise with the worker's traceback glued into the message, and Hydra's
    instantiate wraps errors from constructors; both are unwrapped so the user sees only the fix.
    """
    for link in exception_chain(exc):
        if isinstance(link, VisionkitError):
            text = str(link)
            if "Original Traceback" in text:  # raised inside a DataLoader worker
                last = text.strip().splitlines()[-1]
                text = last.split("VisionkitError: ", 1)[-1]
            return text
        module = (link.name or "") if isinstance(link, ModuleNotFoundError) else ""
        missing = module.split(".")[0]
        if missing in TRAIN_PACKAGES:
            return NEEDS_TRAIN.format(name=module)
        if missing in EXTRA_PACKAGES:
            return f"{missing} is not installed: pip install 'visionkit[{EXTRA_PACKAGES[missing]}]'"
    return None
