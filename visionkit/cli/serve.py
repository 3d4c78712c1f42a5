"""`visionkit-serve ckpt_path=...`: an HTTP server (LitServe) with a page to try the model (conf/serve.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point."""
    run_hydra("visionkit-serve", "serve", "serve")


if __name__ == "__main__":
    main()
