"""Run by the torch-free venv's Python (`make runtime`): predict from exported files with `load_predictor` and write
each result's `to_dict()` (and a segmentation mask as a list) as JSON, keyed by file. Fails when PyTorch can be
imported there, or when predicting imported it.

    python tests/runtime_predict.py '[{"file": "model.onnx", "images": "folder", "options": {"conf": 0.1}}]' out.json
"""

import importlib.util
import json
import sys

assert importlib.util.find_spec("torch") is None, f"{sys.executable} has PyTorch: not the venv this test is about"

from visionkit.inference import load_predictor  # noqa: E402 (after the check above)

found = {}
for spec in json.loads(sys.argv[1]):
    predictor = load_predictor(spec["file"], **spec.get("options", {}))
    records = []
    for result in predictor(spec["images"]):
        record = result.to_dict()
        if getattr(result, "mask", None) is not None:
            record["mask"] = result.mask.tolist()
        records.append(record)
    found[spec["file"]] = {"runtime": predictor.exported, "records": records}
assert not any(name.split(".")[0] in ("torch", "lightning") for name in sys.modules), "PyTorch was imported"
with open(sys.argv[2], "w") as handle:
    json.dump(found, handle)
