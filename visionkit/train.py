"""`visionkit-train`: compose a run with Hydra overrides and train it (see conf/train.yaml)."""

from visionkit.cli import run_cli


def main() -> None:
    """Console entry point."""
    from visionkit.run import train

    run_cli("visionkit-train", "train", train)


if __name__ == "__main__":
    main()
