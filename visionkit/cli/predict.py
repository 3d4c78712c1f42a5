"""`visionkit-predict ckpt_path=... source=...`: run a checkpoint of any task on image files (conf/predict.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point."""
    run_hydra("visionkit-predict", "predict", "predict", renamed={"task": "expected_task"})


if __name__ == "__main__":
    main()
