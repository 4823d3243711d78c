"""Launching ``python -m MODULE ARGS`` without paying for ``import torch`` each time.

A launched training run spends ~8 s of its first seconds importing torch, torchvision and the
project (measured on 2 cores), and the run itself takes one or two more. This helper keeps one
server process (``python -m tests.helpers.prelaunch``) that has imported them once and, for each
launch, forks a child that becomes the command: its own session, working folder, environment,
stdin/stdout/stderr, SIGINT as an interactive shell leaves it, ``sys.argv``, and the module run as
``python -m`` runs it (:func:`runpy.run_module` as ``__main__``). Its exit status is the
interpreter's: ``sys.exit``'s code, 1 with the traceback for an uncaught exception, and death
by SIGINT for an uncaught ``KeyboardInterrupt``. Nothing in the server runs a tensor operation
before it forks, so the child starts with torch as a fresh process would have it.

What a fork cannot give: environment variables that a library reads when it is *imported* (the
server's environment is :func:`tests.helpers.cli.cli_env`). Tests that set such variables
(``TORCHINDUCTOR_*``, ``CUDA_HOME`` for ``torch.utils.cpp_extension``, CUDA) launch for real.

:func:`launch` returns a :class:`PrelaunchedProcess` with the part of ``subprocess.Popen`` the
tests use (``pid``, ``poll``, ``wait``, ``send_signal``, ``kill``); :func:`run` is
``subprocess.run(capture_output=True, text=True)`` with the hang guard of ``jobs.run_job``.
"""

from __future__ import annotations

import importlib
import io
import itertools
import json
import os
import runpy
import select
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

# What a training run imports, heaviest first (python -X importtime of a stand-in run).
PRELOAD = (
    "torch", "torchvision", "torchvision.transforms.v2", "torchdata.nodes", "numpy",
    "matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg", "pydantic",
    "faster_coco_eval", "ssd_core", "ssd_data", "ssd_data.device.path", "ssd_data.synthetic",
    "ssd_eval", "ssd_train.__main__", "ssd_train.components", "ssd_train.trainer",
    "ssd_train.validation", "ssd_train.settings", "ssd_train.checkpoint.manager",
    "ssd_train.report.reporter", "ssd_train.distributed", "tests.helpers.standin",
)  # fmt: skip


# ----------------------------------------------------------------------------- the server


def _text_stream(fd: int, unbuffered: bool) -> io.TextIOWrapper:
    raw = io.FileIO(fd, "w", closefd=False)
    return io.TextIOWrapper(
        raw, encoding="utf-8", errors="backslashreplace", line_buffering=True,
        write_through=unbuffered,
    )  # fmt: skip


def _become(request: dict) -> None:
    """In the forked child: take the request's session, folder, environment, files and argv."""
    if request["new_session"]:
        os.setsid()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    out = os.open(request["stdout"], flags, 0o644)
    err = out if request["stderr"] is None else os.open(request["stderr"], flags, 0o644)
    null = os.open(os.devnull, os.O_RDONLY)
    for source, target in ((null, 0), (out, 1), (err, 2)):
        os.dup2(source, target)
    for fd in {null, out, err}:
        os.close(fd)
    unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
    sys.stdin = sys.__stdin__ = open(0, closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = _text_stream(1, unbuffered)
    sys.stderr = sys.__stderr__ = _text_stream(2, True)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.argv = ["-m", *request["args"]]  # runpy puts the module's path in argv[0]


def _reap() -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        _say(f"exited {pid} {os.waitstatus_to_exitcode(status)}")


def _say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def serve() -> None:
    """Import :data:`PRELOAD`, say ``ready``, then fork one child per request line on stdin."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C to pytest is for pytest
    client = os.getppid()
    for name in PRELOAD:
        importlib.import_module(name)
    _say("ready")
    pending = b""
    while True:
        readable, _, _ = select.select([0], [], [], 0.02)
        _reap()
        if os.getppid() != client:
            return  # pytest is gone (killed before it could say quit)
        if not readable:
            continue
        chunk = os.read(0, 1 << 16)
        if not chunk:
            return  # the client is gone
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line == b"quit":  # (EOF may never come: a forked process may hold the pipe)
                return
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:  # the child never returns to this loop
                _become(request)
                runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
                sys.exit(0)
            _say(f"started {request['id']} {pid}")


# ----------------------------------------------------------------------------- the client


class _Server:
    def __init__(self) -> None:
        from tests.helpers.cli import REPO, cli_env

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.helpers.prelaunch"], cwd=REPO, env=cli_env(),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        self.lock = threading.Condition()
        self.ready = False
        self.pids: dict[int, int] = {}
        self.exits: dict[int, int] = {}
        self.ids = itertools.count()
        threading.Thread(target=self._read, daemon=True, name="prelaunch-reader").start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word, *rest = line.split()
            with self.lock:
                if word == "ready":
                    self.ready = True
                elif word == "started":
                    self.pids[int(rest[0])] = int(rest[1])
                elif word == "exited":
                    self.exits[int(rest[0])] = int(rest[1])
                self.lock.notify_all()
        with self.lock:
            self.ready = None  # the server died
            self.lock.notify_all()

    def wait_for(self, what: Callable[[], object], timeout: float | None) -> bool:
        with self.lock:
            return self.lock.wait_for(lambda: self.ready is None or what(), timeout)

    def fork(self, request: dict) -> int:
        self.wait_for(lambda: self.ready, 300)
        if not self.ready:
            raise RuntimeError(f"the prelaunch server did not start (exit {self.proc.poll()})")
        request_id = next(self.ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({**request, "id": request_id}) + "\n")
        self.proc.stdin.flush()
        self.wait_for(lambda: request_id in self.pids, 60)
        with self.lock:
            if request_id not in self.pids:
                raise RuntimeError(f"the prelaunch server did not fork (exit {self.proc.poll()})")
            return self.pids.pop(request_id)

    def close(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


_SERVER: _Server | None = None


def start_server() -> None:
    """Start the server (its imports run in the background while other tests go on)."""
    global _SERVER
    if _SERVER is None or _SERVER.proc.poll() is not None:
        _SERVER = _Server()


def stop_server() -> None:
    global _SERVER
    if _SERVER is not None:
        _SERVER.close()
        _SERVER = None


class PrelaunchedProcess:
    """A launched command: the part of :class:`subprocess.Popen` the tests use."""

    def __init__(self, server: _Server, pid: int, args: list[str]) -> None:
        self._server, self.pid, self.args = server, pid, args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        with self._server.lock:
            self.returncode = self._server.exits.get(self.pid)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if not self._server.wait_for(lambda: self.pid in self._server.exits, timeout):
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        code = self.poll()
        if code is None:
            raise RuntimeError("the prelaunch server died while its child ran")
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def launch(
    module: str,
    args: list[str],
    *,
    env: dict[str, str],
    cwd: Path,
    stdout: Path,
    stderr: Path | None = None,
    new_session: bool = True,
) -> PrelaunchedProcess:
    """``python -m module args`` (forked from the server): output to ``stdout`` (and
    ``stderr``; None: both to ``stdout``)."""
    start_server()
    assert _SERVER is not None
    request = {
        "module": module, "args": list(args), "env": dict(env), "cwd": str(cwd),
        "stdout": str(stdout), "stderr": None if stderr is None else str(stderr),
        "new_session": new_session,
    }  # fmt: skip
    pid = _SERVER.fork(request)
    return PrelaunchedProcess(_SERVER, pid, [sys.executable, "-m", module, *args])


def run(
    module: str, args: list[str], *, env: dict[str, str], cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess:
    """Launch and wait; stdout and stderr as text (kills the whole job after ``timeout`` s)."""
    from tests.helpers import jobs

    with tempfile.TemporaryDirectory(prefix="prelaunch-") as folder:
        out, err = Path(folder) / "stdout", Path(folder) / "stderr"
        proc = jobs.track(launch(module, args, env=env, cwd=cwd, stdout=out, stderr=err))
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            jobs.kill_job(proc.pid)
            proc.wait(30)
            raise AssertionError(
                f"timed out after {timeout} s:\n{out.read_text()[-3000:]}\n"
                f"{err.read_text()[-3000:]}"
            ) from None
        return subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(),
                                           err.read_text())  # fmt: skip


if __name__ == "__main__":
    serve()
