"""The documentation: every `visionkit-*` command in a fenced block of the site's pages and the READMEs composes as
written (`--cfg job`: its overrides checked and its config built, as the shell would run it; argparse commands
parse), the ones in a block marked `<!-- run -->` run for real on the built-in data, every config key has the
comment the generated configuration reference shows, and the README stays a page long. `.ci/run` builds the site
itself, strictly (`make docs`)."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [*sorted((ROOT / "docs").rglob("*.md")), ROOT / "README.md", ROOT / "datasets" / "README.md"]
RUN_MARK = "<!-- run -->"  # on the line before a fenced block: the test runs its commands for real
ARGPARSE = {"visionkit-stylize": "visionkit.cli.stylize", "visionkit-report": "visionkit.cli.report"}
sys.path.insert(0, str(ROOT / "docs" / "_hooks"))


def fenced_commands(text: str) -> list[str]:
    """The `visionkit-*` command lines of a page's fenced code blocks (continuation lines joined; shell output such
    as `visionkit-train: error: ...` left out)."""
    commands, fenced, pending = [], False, ""
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced, pending = not fenced, ""
            continue
        if not fenced:
            continue
        line = pending + line.strip()
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        pending = ""
        first = line.split(" ", 1)[0]
        if first.startswith("visionkit-") and not first.endswith(":"):
            commands.append(line)
    return commands


def runnable_commands(text: str) -> list[str]:
    """The commands of the fenced blocks marked `<!-- run -->` (the marker on the line before the fence)."""
    blocks = re.findall(rf"^{re.escape(RUN_MARK)}\n(```[^\n]*\n.*?^```)", text, flags=re.MULTILINE | re.DOTALL)
    return [command for block in blocks for command in fenced_commands(block)]


def _arguments(command: str) -> tuple[str, list[str]]:
    """(program, its arguments) of a command line: shell comments, pipes and the `...` that stands for "the
    options above" left out, and each `<placeholder>` filled with its own name (`<date>` becomes `date`)."""
    words = shlex.split(command, comments=True)
    for stop in ("|", "&&", ">", ";"):
        if stop in words:
            words = words[: words.index(stop)]
    words = [re.sub(r"<([^<>]+)>", lambda m: re.sub(r"\W+", "_", m.group(1)), w) for w in words]
    return words[0], [w for w in words[1:] if w != "..." and not w.startswith("...")]


def _first_job(arguments: list[str]) -> list[str]:
    """A sweep's arguments as its first job (`--cfg job` composes one): `-m` left out, each `a,b` or `range(...)`
    at its first value, and a search space only the sweeper reads (`tag(log,interval(...))`) left to it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not {"-m", "--multirun"} & set(arguments):
        return arguments
    parser = OverridesParser.create()
    job = []
    for argument in arguments:
        if argument in ("-m", "--multirun"):
            continue
        if argument.startswith("-") or "=" not in argument:
            job.append(argument)
            continue
        override = parser.parse_override(argument)
        if not override.is_sweep_override():
            job.append(argument)
        elif not override.is_interval_sweep():
            job.append(f"{override.get_key_element()}={next(override.sweep_string_iterator())}")
    return job


def _run_in_process(program: str, arguments: list[str]) -> tuple[int, str]:
    """Run a console script's `main()` here (the imports shared by every command): exit status, stderr."""
    module = next(e.value.split(":")[0] for e in _entry_points() if e.name == program)
    entry = importlib.import_module(module)
    saved = sys.argv
    sys.argv = [program, *arguments]
    errors = io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(errors):
            entry.main()
    except SystemExit as exc:
        code = int(exc.code or 0)
    finally:
        sys.argv = saved
    return code, errors.getvalue()


def _entry_points() -> list:
    from importlib.metadata import entry_points

    return [e for e in entry_points(group="console_scripts") if e.value.startswith("visionkit.")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_on_the_page_composes_as_written(page: Path) -> None:
    failures = []
    for command in fenced_commands(page.read_text()):
        program, arguments = _arguments(command)
        if program in ARGPARSE:
            parser = importlib.import_module(ARGPARSE[program]).build_parser()
            try:
                with contextlib.redirect_stderr(io.StringIO()) as errors:
                    parser.parse_args(arguments)
            except SystemExit:
                failures.append(f"{command}\n    {errors.getvalue().strip()}")
            continue
        code, errors = _run_in_process(program, [*_first_job(arguments), "--cfg", "job"])
        if code != 0:
            failures.append(f"{command}\n    {errors.strip()}")
    assert not failures, "\n".join(failures)


RUNNABLE = [(page, command) for page in PAGES for command in runnable_commands(page.read_text())]


@pytest.mark.parametrize(
    "page, command", RUNNABLE, ids=[f"{p.relative_to(ROOT)}: {c.split('#')[0].strip()}" for p, c in RUNNABLE]
)
def test_a_command_marked_run_runs_for_real(page: Path, command: str, tmp_path: Path) -> None:
    """A marked command runs as a reader would type it, in an empty folder, offline: it succeeds, and a training
    run writes the run folder it prints, with its report and checkpoint."""
    program, arguments = _arguments(command)
    env = os.environ | {"VISIONKIT_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [str(Path(sys.executable).parent / program), *arguments],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, f"{page.name}: {command}\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
    if program == "visionkit-train":
        run = tmp_path / re.search(r"^run folder: (.+)$", done.stdout, flags=re.MULTILINE).group(1).strip()
        assert (run / "report.html").is_file() and (run / "checkpoints" / "last.ckpt").is_file()


def test_the_pages_mark_commands_to_run_for_real() -> None:
    """The marker is used (a misspelt one would leave every command to `--cfg job` alone)."""
    assert len(RUNNABLE) >= 2
    assert all(_arguments(c)[0].startswith("visionkit-") for _, c in RUNNABLE)


def test_the_pages_hold_the_commands_the_readme_once_held() -> None:
    """The site kept the examples: a few hundred commands, every console script among them."""
    commands = [c for page in PAGES for c in fenced_commands(page.read_text())]
    programs = {_arguments(c)[0] for c in commands}
    assert len(commands) >= 150
    assert {e.name for e in _entry_points()} <= programs


def test_every_config_key_has_a_comment() -> None:
    """The configuration reference shows each key's comment: a key without one fails here, by file and line."""
    import config_reference

    assert config_reference.missing_comments() == []
    page = config_reference.markdown()
    assert "| `data.image_size` | `224` |" in page and "`optimizer=adamw`" in page


def test_the_readme_fits_on_a_screen_and_links_into_the_site() -> None:
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 150
    links = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert len(links) >= 8 and all((ROOT / link).is_file() for link in links), links
