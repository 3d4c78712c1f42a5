"""Hydra finds visionkit's Optuna sweeper here (Hydra loads sweepers only from the `hydra_plugins` package)."""
