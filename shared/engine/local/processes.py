"""Detached helper processes of the local engine (endpoint routers, deployment servers, training workers).

Every process is started in a session of its own (`start_new_session=True`), so it survives the caller and can be
stopped as a group. Callers remember only the PID (in a state file); everything here works from the PID alone, so a
restarted caller can still check and stop what an earlier one started:

    pid = start_process([sys.executable, "-m", "some.module", ...], log_path=folder / "x.log")
    wait_http_ok("http://127.0.0.1:8123/health", timeout_s=60, pid=pid)
    is_alive(pid, "some.module")          # False once it exited, or once the PID is reused by something else
    stop_process(pid, marker="some.module")  # SIGTERM to the group, then SIGKILL after timeout_s

PID reuse: a recorded PID may belong to an unrelated process after a reboot or a long time. `is_alive` takes
markers, strings that must each be one of the process's command-line arguments (on Linux, from /proc/<pid>/cmdline),
and `stop_process` signals nothing that does not carry them.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

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
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        if Path("/proc/self").exists():
            return None
        return _command_line_from_ps(pid)
    except OSError:
        return None
    if not raw:  # zombies and kernel threads have an empty command line
        return None
    return raw.rstrip(b"\0").decode("utf-8", "replace").split("\0")


def _command_line_from_ps(pid: int) -> list[str] | None:
    """Where there is no /proc (macOS): `ps`, split on spaces (good enough for markers without spaces)."""
    try:
        out = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False)
    except OSError:
        return None
    return out.stdout.split() or None


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


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # the state letter follows the command name in parentheses, which may itself contain spaces or parentheses
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def is_alive(pid: int | None, *markers: str) -> bool:
    """True when `pid` runs (not a zombie) and each marker is one of its command-line arguments.

    A marker is compared with each argument for equality, so pass distinctive values: a module name given to `-m`,
    an absolute folder, a port. Without markers, any live process with that PID counts.
    """
    if not pid or pid <= 0:
        return False
    if _reap(pid):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else: the markers decide
    if _is_zombie(pid):
        return False
    if not markers:
        return True
    args = command_line(pid)
    if args is None:
        return False
    return all(marker in args for marker in markers)


def stop_process(pid: int | None, *, marker: str | None = None, timeout_s: float = 10.0) -> bool:
    """Stop a process started by `start_process`: SIGTERM to its process group, SIGKILL after `timeout_s`.

    With `marker`, nothing is signalled unless the process carries it (see `is_alive`). Returns True when a
    running process was stopped, False when there was nothing to stop. The whole group is waited for, so
    children of the process (an accelerate launcher's workers, say) are gone too when this returns.
    """
    markers = (marker,) if marker else ()
    if not pid or not is_alive(pid, *markers):
        return False
    group = _own_group(pid)
    _signal(pid, group, signal.SIGTERM)
    if _wait_gone(pid, group, timeout_s):
        return True
    _signal(pid, group, signal.SIGKILL)
    _wait_gone(pid, group, 5.0)
    return True


def _own_group(pid: int) -> int | None:
    """The process group to signal: the process's own (it leads one when started by start_process), else None."""
    try:
        return pid if os.getpgid(pid) == pid else None
    except ProcessLookupError:
        return None


def _signal(pid: int, group: int | None, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if group is not None:
            os.killpg(group, sig)
        else:
            os.kill(pid, sig)


def _group_exists(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _wait_gone(pid: int, group: int | None, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while True:
        leader_gone = not is_alive(pid)
        if leader_gone and (group is None or not _group_exists(group)):
            return True
        if leader_gone and group is not None and _only_zombies(group):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _only_zombies(group: int) -> bool:
    """True when every process left in `group` is a zombie (waiting for a parent that is not us to reap it)."""
    proc = Path("/proc")
    if not proc.exists():
        return False
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z":
            return False
    return True


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
            with urllib.request.urlopen(url, timeout=min(5.0, max(0.5, timeout_s))) as response:
                body = response.read()
                if 200 <= response.status < 300:
                    return body
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except (urllib.error.URLError, OSError) as exc:
            last = str(getattr(exc, "reason", exc))
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
