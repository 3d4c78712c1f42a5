"""`visionkit-verify a.jpg b.jpg ckpt_path=...`: same identity or not (see conf/verify.yaml)."""

import sys

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point: the plain arguments (not key=value, not flags) become `images=[a,b]`."""
    plain = [a for a in sys.argv[1:] if "=" not in a and not a.startswith("-")]
    if plain:
        rest = [a for a in sys.argv[1:] if a not in plain]
        quoted = ",".join(f"'{p}'" for p in plain)
        sys.argv = [sys.argv[0], f"images=[{quoted}]", *rest]
    run_hydra("visionkit-verify", "verify", "verify")


if __name__ == "__main__":
    main()
