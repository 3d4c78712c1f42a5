"""visionkit: classification, detection, segmentation and style transfer, run the same way.

`from visionkit import load_predictor` gives the inference layer (imported on first use, so `import visionkit`
stays light).
"""

from __future__ import annotations

from typing import Any

__version__ = "0.2.0"
__all__ = ["__version__", "load_predictor"]


def __getattr__(name: str) -> Any:
    if name == "load_predictor":
        from visionkit.inference import load_predictor

        return load_predictor
    raise AttributeError(f"module 'visionkit' has no attribute {name!r}")
