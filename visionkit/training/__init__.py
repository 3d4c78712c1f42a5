"""Everything about a training run besides the task itself: `fit.train(cfg)` (data module, task, trainer, fit,
test, report), the experiment trackers, the learning-rate and batch-size tuners and the Optuna sweeper.
Nothing is imported here, so the Hydra sweeper plugin can load `training.sweep` without Lightning."""
