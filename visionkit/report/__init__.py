"""HTML pages of runs: `write_report(run)` (one run's `report.html`) and `compare_runs(runs, output)` (several
runs side by side, as `visionkit-report` and sweeps write them)."""

from visionkit.report.compare import compare_runs
from visionkit.report.run_page import write_report

__all__ = ["compare_runs", "write_report"]
