"""visionkit's configuration: where the config tree and run folders are (`folders`), the checks of a composed
config and of overrides (`checks`, `ranges`), and the values jobs share once it is composed (`composed`)."""
