"""`python -m visionkit.train ...` (what torchrun and srun launch): the same as `visionkit-train`."""

from visionkit.cli.train import main

if __name__ == "__main__":
    main()
