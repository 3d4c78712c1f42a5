"""`visionkit-verify a.jpg b.jpg ckpt_path=...`: same identity or not (see conf/verify.yaml)."""

import sys

from visionkit.cli.runner import run_hydra

# Hydra's flags that take the next argument as their value (`--cfg job`): that value is not an image
VALUED_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir", "-cd"}


def main() -> None:
    """Console entry point: the plain arguments (not key=value, not flags or their values) become `images=[a,b]`."""
    plain, rest = [], []
    arguments = iter(sys.argv[1:])
    for argument in arguments:
        if argument in VALUED_FLAGS:
            rest += [argument, next(arguments, "")]
        elif "=" in argument or argument.startswith("-"):
            rest.append(argument)
        else:
            plain.append(argument)
    if plain:
        quoted = ",".join(f"'{p}'" for p in plain)
        sys.argv = [sys.argv[0], f"images=[{quoted}]", *rest]
    run_hydra("visionkit-verify", "verify", "verify")


if __name__ == "__main__":
    main()
