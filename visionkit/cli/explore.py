"""`visionkit-explore ckpt_path=best.ckpt source=photo.jpg`: one self-contained page that steps through the
network on the image (see conf/explore.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point (`model=` is a plain value here, not the training config group)."""
    run_hydra("visionkit-explore", "explore", "explore", renamed={"model": "network"})


if __name__ == "__main__":
    main()
