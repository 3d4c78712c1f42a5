"""`visionkit-gallery build|add|search ...`: a FAISS gallery of known identities (see conf/gallery.yaml)."""

import sys

from visionkit.cli.runner import run_hydra
from visionkit.inference.gallery import ACTIONS


def main() -> None:
    """Console entry point: the first word, when it is an action, becomes `action=<word>`."""
    if len(sys.argv) > 1 and sys.argv[1] in ACTIONS:
        sys.argv = [sys.argv[0], f"action={sys.argv[1]}", *sys.argv[2:]]
    run_hydra("visionkit-gallery", "gallery", "gallery")


if __name__ == "__main__":
    main()
