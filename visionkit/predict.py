"""`visionkit-predict ckpt_path=... source=...`: classify image files with a checkpoint (see conf/predict.yaml)."""

from visionkit.cli import run_cli


def main() -> None:
    """Console entry point."""
    from visionkit.run import predict

    run_cli("visionkit-predict", "predict", predict)


if __name__ == "__main__":
    main()
