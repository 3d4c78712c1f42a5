"""`visionkit-report RUN [RUN ...] [-o compare.html]`: one run's report.html written again from its folder, or
several runs compared on one page."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from visionkit.cli.runner import run_argparse

PROG = "visionkit-report"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="One run: (re)write <run>/report.html. Several runs: compare their final metrics (best marked), "
        "training curves (overlaid) and config differences on one self-contained page.",
    )
    p.add_argument("runs", nargs="+", help="run folders (outputs/<task>/<date>/<time>, or a sweep's job folders)")
    p.add_argument("-o", "--output", default=None, help="the comparison page (default: compare.html)")
    return p


def run(argv: Sequence[str] | None = None) -> int:
    """Write the page(s); print where."""
    from visionkit.report import compare_runs, write_report
    from visionkit.report.compare import check_run, final_metrics

    args = build_parser().parse_args(argv)
    runs = [Path(r) for r in args.runs]
    if len(runs) == 1 and args.output is None:
        check_run(runs[0])
        print(write_report(runs[0], final_metrics(runs[0])))
    else:
        print(compare_runs(runs, args.output or "compare.html"))
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """Console entry point: one clean error line for bad input (--verbose for the traceback)."""
    run_argparse(PROG, run, argv)


if __name__ == "__main__":
    main()
