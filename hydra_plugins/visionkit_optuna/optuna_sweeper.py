"""The Hydra plugin class of visionkit's Optuna sweeper; the sweeper itself is `visionkit.training.sweep`."""

from visionkit.training.sweep import OptunaSweeperImpl


class VisionkitOptunaSweeper(OptunaSweeperImpl):
    """`hydra/sweeper=optuna` (conf/hydra/sweeper/optuna.yaml): see visionkit.training.sweep."""
