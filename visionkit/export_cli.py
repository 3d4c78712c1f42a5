"""`visionkit-export ckpt_path=... formats=[onnx,ultralytics]`: deployable files (see conf/export.yaml)."""

from visionkit.cli import run_cli


def main() -> None:
    """Console entry point."""
    from visionkit.run import export

    run_cli("visionkit-export", "export", export)


if __name__ == "__main__":
    main()
