"""`visionkit-pack data=<source> out=<folder | s3://...>`: a source as LitData shards (see conf/pack.yaml)."""

from visionkit.cli.runner import run_hydra


def main() -> None:
    """Console entry point."""
    run_hydra("visionkit-pack", "pack", "pack")


if __name__ == "__main__":
    main()
