"""Detached helper processes of the local engine (endpoint routers, deployment servers, training workers).

Every process is started in a session of its own (`start_new_session=True`), so it survives the caller and can be
stopped as a group. Callers remember only the PID (in a state file); everything here works from the PID alone, so a
restarted caller can still check and stop what an earlier one started:

    pid = start_process([sys.executable, "-m", "some.module", ...], log_path=folder / "x.log")
    wait_http_ok("http://127.0.0.1:8123/health", timeout_s=60, pid=pid)
    is_alive(pid, "some.module")          # False once it exited, or once the PID is reused by something else
    stop_process(pid, marker="some.module")  # SIGTERM to the group, then SIGKILL after timeout_s

PID reuse: a recorded PID may belong to an unrelated process after a reboot or a long time. `is_alive` takes
markers, strings that must each be one of the process's command-line arguments, and `stop_process` signals nothing
that does not carry them. Liveness, command lines and waiting go through psutil (a zombie counts as exited).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

from shared.adapters.http import HttpFailure, get_bytes

# Popen objects of the processes this process started: kept so that they are reaped (no zombies) and so that
# subprocess does not warn about children still running when the objects would otherwise be collected.
_children: dict[int, subprocess.Popen[bytes]] = {}


class ProcessStartError(RuntimeError):
    """A started process exited, or did not become ready in time. The message ends with the tail of its log."""


def start_process(
    command: Sequence[str],
    *,
    log_path: Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start `command` detached (a new session and process group), stdout and stderr appended to `log_path`.

    `env` replaces the environment when given (pass `{**os.environ, ...}` to extend it). Returns the PID.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            list(command),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            close_fds=True,
        )
    _children[process.pid] = process
    return process.pid


def command_line(pid: int) -> list[str] | None:
    """The process's arguments, or None when it does not exist (or is a zombie) or they cannot be read."""
    process = _live(pid)
    return _arguments(process) if process is not None else None


def _arguments(process: psutil.Process) -> list[str] | None:
    try:
        return process.cmdline() or None  # kernel threads have an empty command line
    except psutil.Error:  # gone, a zombie, or not ours to read
        return None


def _live(pid: int) -> psutil.Process | None:
    """The process `pid` while it runs: None when there is none, or only a zombie (exited, not yet reaped)."""
    try:
        process = psutil.Process(pid)
    except psutil.Error:  # NoSuchProcess; AccessDenied where the OS hides another user's process
        return None
    return process if _running(process) else None


def _running(process: psutil.Process) -> bool:
    """True while `process` runs and is not a zombie (and its PID has not gone to a later process since). A child of
    this process runs until it is reaped: its leader thread shows as a zombie while its other threads still exit."""
    if process.pid in _children:
        return not _reap(process.pid)
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:  # ZombieProcess included
        return False
    except psutil.AccessDenied:  # exists, owned by someone else: the markers decide
        return True


def _reap(pid: int) -> bool:
    """Collect the exit status if `pid` is a child of this process that has exited. True when it was reaped."""
    child = _children.get(pid)
    if child is not None:
        if child.poll() is None:
            return False
        _children.pop(pid, None)
        return True
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:  # not our child (started by an earlier caller), or already reaped
        return False
    return done == pid


def _carries(process: psutil.Process, markers: Sequence[str]) -> bool:
    if not markers:
        return True
    args = _arguments(process)
    return args is not None and all(marker in args for marker in markers)


def is_alive(pid: int | None, *markers: str) -> bool:
    """True when `pid` runs (not a zombie) and each marker is one of its command-line arguments.

    A marker is compared with each argument for equality, so pass distinctive values: a module name given to `-m`,
    an absolute folder, a port. Without markers, any live process with that PID counts.
    """
    if not pid or pid <= 0:
        return False
    process = _live(pid)
    return process is not None and _carries(process, markers)


def stop_process(pid: int | None, *, marker: str | None = None, timeout_s: float = 10.0) -> bool:
    """Stop a process started by `start_process`: SIGTERM to its process group, SIGKILL after `timeout_s`.

    With `marker`, nothing is signalled unless the process carries it (see `is_alive`). Returns True when a
    running process was stopped, False when there was nothing to stop. The whole group is waited for, so
    children of the process (an accelerate launcher's workers, say) are gone too when this returns.
    """
    leader = _live(pid) if pid and pid > 0 else None
    if leader is None or not _carries(leader, (marker,) if marker else ()):
        return False
    group = _own_group(leader.pid)
    _signal(leader, group, signal.SIGTERM)
    if _wait_gone(leader, group, timeout_s):
        return True
    _signal(leader, group, signal.SIGKILL)
    _wait_gone(leader, group, 5.0)
    return True


def _own_group(pid: int) -> int | None:
    """The process group to signal: the process's own (it leads one when started by start_process), else None."""
    try:
        return pid if os.getpgid(pid) == pid else None
    except ProcessLookupError:
        return None


def _signal(leader: psutil.Process, group: int | None, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError, psutil.Error):
        if group is not None:
            os.killpg(group, sig)
        else:
            leader.send_signal(sig)


def _group_members(group: int) -> list[psutil.Process]:
    """The processes in process group `group` (psutil knows no groups: each one's group id is asked of the OS)."""
    members = []
    for process in psutil.process_iter():
        with contextlib.suppress(OSError):
            if os.getpgid(process.pid) == group:
                members.append(process)
    return members


def _wait_gone(leader: psutil.Process, group: int | None, timeout_s: float) -> bool:
    """Wait until neither the leader nor anything in its group runs. Zombies count as gone: whichever parent
    they have (not necessarily this process) reaps them."""
    deadline = time.monotonic() + timeout_s
    while True:
        if not _running(leader) and (group is None or not any(_running(p) for p in _group_members(group))):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it; another process may take it before you bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def port_accepts(port: int, host: str = "127.0.0.1", timeout_s: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout_s)
        return probe.connect_ex((host, port)) == 0


def wait_http_ok(
    url: str,
    *,
    timeout_s: float,
    pid: int | None = None,
    log_path: Path | None = None,
    interval_s: float = 0.1,
) -> bytes:
    """Poll `url` with GET until it answers 2xx, and return that answer's body (check it is the process you
    started, not another one on the same port). Raises ProcessStartError when `pid` exits first or time runs out;
    the error message then ends with the last lines of `log_path`, when given.
    """
    deadline = time.monotonic() + timeout_s
    last = "no answer yet"
    while True:
        if pid is not None and not is_alive(pid):
            raise ProcessStartError(f"process {pid} exited before {url} answered{_tail_note(log_path)}")
        try:
            status, body = get_bytes(url, timeout_s=min(5.0, max(0.5, timeout_s)))
            if 200 <= status < 300:
                return body
            last = f"HTTP {status}"
        except HttpFailure as exc:
            last = exc.message
        if time.monotonic() >= deadline:
            raise ProcessStartError(f"{url} did not answer within {timeout_s:.0f} s ({last}){_tail_note(log_path)}")
        time.sleep(interval_s)


def log_tail(path: Path, max_lines: int = 15, max_bytes: int = 8192) -> str:
    """The last lines of a log file ('' when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - max_bytes))
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-max_lines:])


def _tail_note(log_path: Path | None) -> str:
    if log_path is None:
        return ""
    tail = log_tail(log_path)
    return f"; last lines of {log_path}:\n{tail}" if tail else ""
