"""Child processes: start, watch (pidfd), signal a whole process group, reap, sweep orphans.

Every child runs in a process group of its own (an OS command through
``subprocess.Popen(process_group=0)``, a callable or nested supervisor through
``os.fork``). Its death is seen at once through a pidfd (Linux >= 5.3) that a poller
watches, never on a polling tick. When the group leader dies, the rest of its group is
killed, so no grandchild outlives it; with :func:`become_subreaper` the orphans are
reparented to the supervisor, which reaps them (no zombie stays behind even when PID 1
does not reap, as in many containers).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any

from nonsense_hpc.errors import SupervisorError

__all__ = [
    "ChildProcess",
    "ExitStatus",
    "become_subreaper",
    "fork_callable",
    "kill_group",
    "list_processes",
    "release_subreaper",
    "set_death_signal",
    "spawn_command",
    "sweep",
]

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_FORK_BLOCKED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}


def _prctl(option: int, arg: int) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, arg, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def set_death_signal(sig: int) -> bool:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux)."""
    return sys.platform.startswith("linux") and _prctl(_PR_SET_PDEATHSIG, int(sig))


_subreaper_lock = threading.Lock()
_subreaper_users = 0
_subreaper_was_set = False


def _is_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        flag = ctypes.c_int(0)
        ok = int(libc.prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(flag), 0, 0, 0)) == 0
        return ok and flag.value != 0
    except (OSError, AttributeError):
        return False


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children (Linux ``prctl``).

    Counted: each call must be matched by :func:`release_subreaper`; the flag is cleared
    when the last user releases it, unless the process had it before the first call, so
    a program that ran a supervisor once does not adopt unrelated orphans for ever.

    Returns:
        Whether it worked (False on systems without ``PR_SET_CHILD_SUBREAPER``).
    """
    global _subreaper_users, _subreaper_was_set
    if not sys.platform.startswith("linux"):
        return False
    with _subreaper_lock:
        if _subreaper_users == 0:
            _subreaper_was_set = _is_subreaper()
        ok = _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        if ok:
            _subreaper_users += 1
        return ok


def release_subreaper() -> None:
    """Undo one :func:`become_subreaper` (clears the flag after the last one)."""
    global _subreaper_users
    with _subreaper_lock:
        if _subreaper_users == 0:
            return
        _subreaper_users -= 1
        if _subreaper_users == 0 and not _subreaper_was_set:
            _prctl(_PR_SET_CHILD_SUBREAPER, 0)


@dataclass(frozen=True)
class ExitStatus:
    """How a child ended: an exit ``code`` or the ``signal`` that killed it."""

    code: int | None
    signal: int | None

    @classmethod
    def from_wait(cls, status: int) -> ExitStatus:
        """Decode an ``os.waitpid`` status."""
        if os.WIFSIGNALED(status):
            return cls(None, os.WTERMSIG(status))
        return cls(os.waitstatus_to_exitcode(status), None)

    @classmethod
    def from_returncode(cls, rc: int) -> ExitStatus:
        """Decode a ``Popen.returncode`` (negative: killed by that signal)."""
        return cls(None, -rc) if rc < 0 else cls(rc, None)

    @property
    def normal(self) -> bool:
        """Exit status 0 (the only *normal* end for a ``transient`` child)."""
        return self.code == 0

    @property
    def signal_name(self) -> str | None:
        """``"SIGKILL"`` etc., or ``None`` for an exit code."""
        if self.signal is None:
            return None
        try:
            return signal.Signals(self.signal).name
        except ValueError:
            return f"SIG{self.signal}"

    def __str__(self) -> str:
        return f"killed by {self.signal_name}" if self.signal is not None \
            else f"exit status {self.code}"


class ChildProcess:
    """One running child: its pid (also its process group id) and a pidfd to poll."""

    def __init__(self, pid: int, popen: subprocess.Popen[bytes] | None = None,
                 new_session: bool = False) -> None:
        self.pid = pid
        self.pgid = pid
        self.new_session = new_session
        self._popen = popen
        self.status: ExitStatus | None = None
        try:
            self.fd: int = os.pidfd_open(pid)
        except OSError as exc:  # pragma: no cover - Linux < 5.3
            raise SupervisorError(f"os.pidfd_open({pid}) failed: {exc}; the supervisor "
                                  "needs Linux >= 5.3") from exc

    def reap(self) -> ExitStatus | None:
        """Collect the exit status if the child has ended (never blocks)."""
        if self.status is not None:
            return self.status
        if self._popen is not None:
            rc = self._popen.poll()
            if rc is None:
                return None
            self.status = ExitStatus.from_returncode(rc)
        else:
            try:
                pid, raw = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                self.status = ExitStatus(None, None)
                return self.status
            if pid == 0:
                return None
            self.status = ExitStatus.from_wait(raw)
        return self.status

    def signal_group(self, sig: int) -> bool:
        """Send ``sig`` to the child's whole process group; False if none is left."""
        return kill_group(self.pgid, sig)

    def close(self) -> None:
        """Close the pidfd (after the child was reaped)."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


def kill_group(pgid: int, sig: int) -> bool:
    """``killpg`` that returns False instead of raising when the group is empty."""
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False
    return True


def _open_output(path: str | None) -> IO[bytes] | None:
    if path is None:
        return None
    return open(path, "ab", buffering=0)


def spawn_command(argv: Sequence[str], env: Mapping[str, str], cwd: str | None,
                  stdout: str | None, stderr: str | None,
                  new_session: bool = False) -> ChildProcess:
    """Start an OS command as the leader of a new process group.

    Raises:
        SupervisorError: the program does not exist or cannot be executed.
    """
    out = _open_output(stdout)
    err: Any = subprocess.STDOUT if stderr == "stdout" else _open_output(stderr)
    try:
        kwargs: dict[str, Any] = ({"start_new_session": True} if new_session
                                  else {"process_group": 0})
        popen = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdin=subprocess.DEVNULL,
                                 stdout=out, stderr=err, close_fds=True, **kwargs)
    except OSError as exc:
        raise SupervisorError(f"cannot start {argv[0]!r}: {exc}") from exc
    finally:
        if out is not None:
            out.close()
        if err not in (None, subprocess.STDOUT):
            err.close()
    return ChildProcess(popen.pid, popen, new_session)


def fork_callable(target: Callable[[], int | None], env: Mapping[str, str],
                  cwd: str | None, stdout: str | None, stderr: str | None,
                  new_session: bool = False,
                  death_signal: int = signal.SIGKILL) -> ChildProcess:
    """Run ``target()`` in a forked child process that leads its own process group.

    The child's exit status is the target's int return value (None: 0), the code of a
    ``SystemExit``, or 1 after printing an exception's traceback. The child dies with
    ``death_signal`` when the supervisor process dies.
    """
    out = _open_output(stdout)
    err = None if stderr in (None, "stdout") else _open_output(stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Block the stop signals across fork: until the child has reset its handlers, a
    # SIGTERM would run the *supervisor's* handler in the child and be lost.
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORK_BLOCKED)
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, which never returns
        code = 1
        try:
            os.close(ready_r)
            if new_session:
                os.setsid()
            else:
                os.setpgid(0, 0)
            _prctl(_PR_SET_PDEATHSIG, int(death_signal))
            for sig in _FORK_BLOCKED:
                signal.signal(sig, signal.SIG_DFL)
            # Only now is the process group there for the supervisor to signal.
            os.close(ready_w)
            signal.pthread_sigmask(signal.SIG_SETMASK, set())
            os.environ.clear()
            os.environ.update(env)
            if cwd is not None:
                os.chdir(cwd)
            devnull = os.open(os.devnull, os.O_RDONLY)
            os.dup2(devnull, 0)
            if out is not None:
                os.dup2(out.fileno(), 1)
            if err is not None:
                os.dup2(err.fileno(), 2)
            elif stderr == "stdout" and out is not None:
                os.dup2(1, 2)
            result = target()
            code = int(result) if isinstance(result, int) else 0
        except SystemExit as exc:
            ec = exc.code
            code = ec if isinstance(ec, int) else (0 if ec is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            with contextlib.suppress(BaseException):
                sys.stdout.flush()
                sys.stderr.flush()
            os._exit(code & 0xFF)
    signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    os.close(ready_w)
    try:
        # EOF once the child has its own process group (or has died trying).
        select.select([ready_r], [], [], 10.0)
    finally:
        os.close(ready_r)
    if out is not None:
        out.close()
    if err is not None:
        err.close()
    return ChildProcess(pid, None, new_session)


@dataclass(frozen=True)
class ProcInfo:
    """One line of ``/proc/PID/stat``: the fields the sweep needs."""

    pid: int
    state: str
    ppid: int
    pgid: int
    sid: int


def list_processes() -> list[ProcInfo]:
    """Every process visible in ``/proc`` (vanishing ones are skipped)."""
    result = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                text = fh.read().decode("ascii", "replace")
        except OSError:
            continue
        rest = text[text.rfind(")") + 2:].split()
        if len(rest) < 4:
            continue
        result.append(ProcInfo(int(name), rest[0], int(rest[1]), int(rest[2]), int(rest[3])))
    return result


def sweep(groups: Iterable[int], sessions: Iterable[int], skip: Iterable[int] = ()) -> bool:
    """Kill every process left in ``groups`` or ``sessions``; reap our zombie ones.

    Args:
        groups: process group ids of dead children.
        sessions: session ids of dead children started with ``new_session``.
        skip: pids never to touch (tracked children).

    Returns:
        True when nothing of those groups and sessions is left that we could still kill
        or reap (a zombie whose parent is another process is not ours to reap).
    """
    groups, sessions, skip = set(groups), set(sessions), set(skip)
    me = os.getpid()
    done = True
    for proc in list_processes():
        if proc.pid in skip or proc.pid == me or not (proc.pgid in groups
                                                       or proc.sid in sessions):
            continue
        if proc.state == "Z":
            if proc.ppid == me:
                with contextlib.suppress(ChildProcessError):
                    os.waitpid(proc.pid, os.WNOHANG)
                done = False
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(proc.pid, signal.SIGKILL)
        done = False
    return done
