"""`visionkit-robustness ckpt_path=best.ckpt`: the checkpoint's test metric under L∞ attacks of growing ε (see
conf/robustness.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point."""
    run_hydra("visionkit-robustness", "robustness", "robustness")


if __name__ == "__main__":
    main()
