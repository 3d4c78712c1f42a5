"""`visionkit-train`: compose a run with Hydra overrides and train it (see conf/train.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point."""
    run_hydra("visionkit-train", "train", "train")


if __name__ == "__main__":
    main()
