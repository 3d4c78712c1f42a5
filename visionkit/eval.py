"""`visionkit-eval ckpt_path=...`: re-test a checkpoint and print its metrics (see conf/eval.yaml)."""

from visionkit.cli import run_cli


def main() -> None:
    """Console entry point."""
    from visionkit.run import evaluate

    run_cli("visionkit-eval", "eval", evaluate)


if __name__ == "__main__":
    main()
