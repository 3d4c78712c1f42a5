"""`visionkit-export ckpt_path=... formats=[onnx,ultralytics]`: deployable files (see conf/export.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point."""
    run_hydra("visionkit-export", "export", "export")


if __name__ == "__main__":
    main()
