"""`visionkit-eval ckpt_path=...`: re-test a checkpoint and print its metrics (see conf/eval.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point."""
    run_hydra("visionkit-eval", "eval", "evaluate")


if __name__ == "__main__":
    main()
