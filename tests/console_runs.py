"""Console scripts run for the tests without paying the interpreter's import time on each run.

A helper process (the "zygote") imports torch, Lightning and visionkit once; each run is a fork of it that
takes the command's argv, working folder and environment, writes its stdout and stderr to files and calls
the console script's own entry point (looked up in the installed package metadata). A fork is a fresh
process like the real launch (own cwd, environment, Hydra state, logging, atexit handlers, exit code; DDP
re-launches `argv[0]`, the installed script), only the 8-10 s of imports are shared. The zygote holds no
threads when it forks (checked), so a fork is as safe as the launch. `fresh=True`, or VISIONKIT_TEST_FRESH=1
for the whole suite, runs the installed script in a new interpreter instead.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
PRELOAD = (  # what the commands import; ultralytics through visionkit, which sets its environment first
    "torch",
    "torchvision",
    "lightning",
    "hydra",
    "omegaconf",
    "matplotlib.pyplot",
    "segmentation_models_pytorch",
    "visionkit.cli.runner",
    "visionkit.run",
    "visionkit.training.fit",
    "visionkit.tasks",
    "visionkit.inference",
    "visionkit.explain",
    "visionkit.style",
)


@dataclass
class _Zygote:
    """The helper process and its request/reply pipes."""

    process: subprocess.Popen

    def ask(self, request: dict[str, object]) -> dict[str, object]:
        """Send one JSON request and read one JSON reply line (EOF means the helper died)."""
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the console-run helper exited with {self.process.wait()}")
        return json.loads(line)


_zygote: _Zygote | None = None


def _helper() -> _Zygote:
    """The running helper, started on first use (about as long as one command's imports)."""
    global _zygote
    if _zygote is None or _zygote.process.poll() is not None:
        process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=os.environ | {"PYTHONWARNINGS": "ignore"},
        )
        _zygote = _Zygote(process)
        atexit.register(stop_helper)
        ready = _zygote.ask({"ping": True})
        assert ready.get("threads") == 1, f"the console-run helper holds threads after its imports: {ready}"
    return _zygote


def stop_helper() -> None:
    """Stop the helper (at the end of the session)."""
    global _zygote
    if _zygote is not None and _zygote.process.poll() is None:
        _zygote.process.kill()
        _zygote.process.wait()
    _zygote = None


def run_console(
    tool: str, args: list[str], cwd: Path, env: dict[str, str], timeout: float, fresh: bool = False
) -> tuple[subprocess.CompletedProcess, bool]:
    """Run console script `tool` with `args` in `cwd` under exactly `env`; (the finished process, whether it
    ran past `timeout` and was killed with its process group)."""
    command = [str(BIN / tool), *args]
    if fresh or os.environ.get("VISIONKIT_TEST_FRESH") == "1":
        return _run_fresh(command, cwd, env, timeout)
    with tempfile.TemporaryDirectory(prefix="console-run-") as folder:
        out, err = Path(folder, "stdout"), Path(folder, "stderr")
        helper = _helper()
        started = helper.ask({"argv": command, "cwd": str(cwd), "env": env, "stdout": str(out), "stderr": str(err)})
        pid, deadline, killed = int(started["pid"]), time.monotonic() + timeout, False
        assert helper.process.stdout
        while True:
            os.set_blocking(helper.process.stdout.fileno(), False)
            line = helper.process.stdout.readline()
            os.set_blocking(helper.process.stdout.fileno(), True)
            if line:
                break
            if time.monotonic() > deadline and not killed:
                os.killpg(pid, signal.SIGKILL)
                killed = True
            time.sleep(0.05)
        status = int(json.loads(line)["status"])
        finished = subprocess.CompletedProcess(
            command, status, out.read_text(errors="replace"), err.read_text(errors="replace")
        )
    return finished, killed


def _run_fresh(
    command: list[str], cwd: Path, env: dict[str, str], timeout: float
) -> tuple[subprocess.CompletedProcess, bool]:
    """The installed script in a new interpreter, killed with its children past `timeout`."""
    with subprocess.Popen(
        command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    ) as child:
        try:
            stdout, stderr = child.communicate(timeout=timeout)
            killed = False
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            stdout, stderr = child.communicate()
            killed = True
    return subprocess.CompletedProcess(command, child.returncode, stdout, stderr), killed


# ---- the helper process ----------------------------------------------------------------------------------


def _entry_point(script: str):
    """The function the installed console script `script` calls."""
    from importlib.metadata import entry_points

    (found,) = [e for e in entry_points(group="console_scripts") if e.name == script]
    return found.load()


def _exit_code(code: object) -> int:
    """The exit status the interpreter gives `sys.exit(code)`."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _child(request: dict, imported_env: dict[str, str]) -> None:
    """In the fork: become the command and exit with its status (never returns)."""
    import traceback
    import warnings

    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        env = request["env"]
        os.environ.clear()
        os.environ.update({k: v for k, v in imported_env.items() if k not in env} | env)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(os.open(request["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 1)
        os.dup2(os.open(request["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), 2)
        warnings.resetwarnings()
        if env.get("PYTHONWARNINGS"):
            warnings._processoptions(env["PYTHONWARNINGS"].split(","))
        sys.argv = list(request["argv"])
        main = _entry_point(Path(sys.argv[0]).name)
        try:
            code = _exit_code(main())
        except SystemExit as done:
            code = _exit_code(done.code)
        except BaseException:
            traceback.print_exc()
            code = 1
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(code)


def _serve() -> None:
    """Answer requests on stdin: a ping with the thread count, or a command to fork (its pid, then its status)."""
    import importlib
    import threading

    protocol_in = os.fdopen(os.dup(0), "r")
    protocol_out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.dup2(2, 1)
    for name in PRELOAD:
        importlib.import_module(name)
    from visionkit.models.yolo import prepare_ultralytics

    before = dict(os.environ)
    prepare_ultralytics()  # as the detection code does before its first ultralytics import ...
    runtime_keys = {k for k, v in os.environ.items() if before.get(k) != v}  # ... at run time: not inherited
    importlib.import_module("ultralytics")
    imported_env = {k: v for k, v in os.environ.items() if _start_env.get(k) != v and k not in runtime_keys}

    def reply(message: dict[str, object]) -> None:
        protocol_out.write(json.dumps(message) + "\n")
        protocol_out.flush()

    for line in protocol_in:
        request = json.loads(line)
        if request.get("ping"):
            reply({"threads": threading.active_count()})
            continue
        pid = os.fork()
        if pid == 0:
            protocol_in.close()
            protocol_out.close()
            _child(request, imported_env)
        reply({"pid": pid})
        _, status = os.waitpid(pid, 0)
        reply({"status": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    sys.path.pop(0)  # this file's folder: the commands see the sys.path an installed script sees
    _start_env = dict(os.environ)
    _serve()
