"""`visionkit-explain ckpt_path=best.ckpt source=photo.jpg`: first-layer filters, feature maps, Grad-CAM and the
receptive-field table of a checkpoint, or of the style-transfer VGG19 (`model=vgg19`); see conf/explain.yaml."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point (`model=` is a plain value here, not the training config group)."""
    run_hydra("visionkit-explain", "explain", "explain", renamed={"model": "network"})


if __name__ == "__main__":
    main()
