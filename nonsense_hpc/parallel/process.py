"""Child processes of :mod:`nonsense_hpc.parallel`: start, talk to, join, stop.

The parent holds a :class:`Child` per process it started; a child sees its parent as
:class:`Parent`. Both talk through a :class:`~nonsense_hpc.parallel.channel.Endpoint`
(two shared-memory segments). A control socket carries the start-up message and, at the
end, the child's report: ``["done"]`` or ``["error", ...]`` with its traceback.
"""

from __future__ import annotations

import atexit
import linecache
import os
import selectors
import socket
import subprocess
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from nonsense_hpc.errors import RemoteError, WireError
from nonsense_hpc.ipc import codec, remote, spawn
from nonsense_hpc.ipc.connection import Connection
from nonsense_hpc.parallel.channel import Endpoint, new_segment

__all__ = ["Child", "Children", "Parent", "run_child", "start_child"]

_LIVE: weakref.WeakSet[Child] = weakref.WeakSet()


class Parent:
    """The parent process, as a child sees it (``parallel.parent``).

    Attributes:
        id: the parent's parallel id (0 for the top process).
    """

    def __init__(self, id: int, endpoint: Endpoint) -> None:
        self.id = id
        self.endpoint = endpoint

    def __repr__(self) -> str:
        return f"<parallel.Parent id={self.id}>"

    def send(self, value: Any, timeout: float | None = None) -> None:
        """Send a value to the parent (see :meth:`Child.send`)."""
        self.endpoint.send(value, timeout)

    def receive(self, timeout: float | None = None) -> Any:
        """Receive the next value the parent sent (see :meth:`Child.receive`).

        Raises:
            ConnectionError: the parent exited (nothing more will come).
        """
        return self.endpoint.receive(timeout)


class Child:
    """A process started by :func:`nonsense_hpc.parallel.run`.

    Attributes:
        id: the child's parallel id (1, 2, ... in the order this process started them).
        pid: its operating-system process id.
    """

    def __init__(self, id: int, proc: subprocess.Popen[bytes], control: Connection,
                 endpoint: Endpoint) -> None:
        self.id = id
        self.proc = proc
        self.pid = proc.pid
        self._control = control
        self.endpoint = endpoint
        self._report: list[Any] | None = None
        self._error: BaseException | None = None
        self.joined = False
        _LIVE.add(self)

    def __repr__(self) -> str:
        state = "joined" if self.joined else ("running" if self.alive else "exited")
        return f"<parallel.Child id={self.id} pid={self.pid} {state}>"

    @property
    def alive(self) -> bool:
        """Whether the process is still running."""
        return self.proc.poll() is None

    def send(self, value: Any, timeout: float | None = None) -> None:
        """Send a value to the child through the shared-memory channel.

        A value larger than the shared segment streams through it in pieces.

        Args:
            value: None, bool, int, float, str, bytes, list, tuple, dict, numpy array,
                torch tensor, nested freely.
            timeout: seconds the child may take to take the data (None: for ever).

        Raises:
            TypeError: the value cannot be sent (nothing was written).
            RemoteError: the child crashed (its traceback is attached).
            ConnectionError: the child exited.
            TimeoutError: the child did not read in time.
        """
        try:
            self.endpoint.send(value, timeout)
        except ConnectionResetError:
            self._raise_exit("while the parent was sending to it")

    def receive(self, timeout: float | None = None) -> Any:
        """Receive the next value the child sent.

        Args:
            timeout: seconds to wait (None: for ever). A child that dies ends the wait.

        Raises:
            TimeoutError: nothing came within ``timeout`` (the channel stays usable).
            RemoteError: the child crashed before sending (its traceback is attached).
            ConnectionError: the child exited without sending anything more.
        """
        try:
            return self.endpoint.receive(timeout)
        except ConnectionResetError:
            self._raise_exit("before sending the value the parent waited for")

    def _raise_exit(self, when: str) -> None:
        self._finish(timeout=10.0)
        if self._error is not None:
            raise self._error
        raise ConnectionError(f"parallel child {self.id} (pid {self.pid}) exited "
                              f"{when} (exit code {self.proc.returncode})")

    def _finish(self, timeout: float | None) -> None:
        """Read the child's report and reap it (the child has ended its work)."""
        if self._report is None:
            try:
                report = self._control.recv(timeout=timeout)
            except (ConnectionError, WireError, OSError):
                report = ["died"]
            self._report = report if isinstance(report, list) and report else ["died"]
            self._control.close()
        try:
            self.proc.wait(timeout=10.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5.0)
        where = f"parallel child {self.id} (pid {self.pid})"
        if self._report[0] == "error" and len(self._report) == 2:
            self._error = remote.rebuild(self._report[1], where)
        elif self._report[0] != "done" or self.proc.returncode != 0:
            code = self.proc.returncode
            how = (f"was killed by signal {-code}" if code is not None and code < 0
                   else f"exited with code {code}")
            self._error = RemoteError(f"{where} {how} without finishing its code")

    def join(self, timeout: float | None = None) -> None:
        """Wait for the child to finish.

        Args:
            timeout: seconds to wait (None: for ever).

        Raises:
            RemoteError: the child raised (also an instance of the builtin type it
                raised, e.g. ValueError; traceback attached) or died (exit code or
                signal in the message). Raised again by every later join.
            TimeoutError: the child is still running after ``timeout`` seconds.
        """
        if not self.joined:
            if self._report is None and not _wait_readable([self._control], timeout):
                raise TimeoutError(f"parallel child {self.id} (pid {self.pid}) still "
                                   f"running after {timeout} s")
            self._finish(timeout=10.0)
            self.joined = True
            self.endpoint.close()
            _LIVE.discard(self)
        if self._error is not None:
            raise self._error

    def terminate(self) -> None:
        """Stop the child (SIGTERM, then SIGKILL after 2 s) and release its channel."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5.0)
        if self._report is None:
            self._report = ["died"]
            self._control.close()
        self.joined = True
        self.endpoint.close()
        _LIVE.discard(self)


def _wait_readable(conns: list[Connection], timeout: float | None) -> list[Connection]:
    sel = selectors.DefaultSelector()
    for conn in conns:
        sel.register(conn.sock, selectors.EVENT_READ, conn)
    try:
        return [key.data for key, _ in sel.select(timeout)]
    finally:
        sel.close()


class Children:
    """The children of this process (``parallel.children``), in start order.

    A Python sequence: ``children[0]`` is the first child started (its ``id`` is 1).
    """

    def __init__(self) -> None:
        self._items: list[Child] = []

    def __repr__(self) -> str:
        return f"<parallel.Children {self._items!r}>"

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Child]:
        return iter(self._items)

    def __getitem__(self, index: int) -> Child:
        return self._items[index]

    def append(self, child: Child) -> None:
        """Add a child (done by ``parallel.run``)."""
        self._items.append(child)

    def by_id(self, id: int) -> Child:
        """The child with parallel id ``id``.

        Raises:
            KeyError: no such child.
        """
        for child in self._items:
            if child.id == id:
                return child
        raise KeyError(f"no parallel child with id {id}")

    def send(self, value: Any, timeout: float | None = None) -> None:
        """Send the same value to every child not yet joined (encoded once per child)."""
        codec.encode(value)  # TypeError before anything is sent to anybody
        for child in self._items:
            if not child.joined:
                child.send(value, timeout)

    def receive(self, timeout: float | None = None) -> list[Any]:
        """Receive one value from every child not yet joined, in start order."""
        return [c.receive(timeout) for c in self._items if not c.joined]

    def join(self, timeout: float | None = None) -> None:
        """Wait for every child (``parallel.children:join()``).

        As soon as one child fails, the others are terminated and its error is raised, so
        a crash never leaves siblings running (or the parent waiting on them).

        Raises:
            RemoteError: a child raised or died.
            TimeoutError: children still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            pending = [c for c in self._items if not c.joined]
            if not pending:
                break
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = _wait_readable([c._control for c in pending], left)
            if not ready:
                raise TimeoutError(f"{len(pending)} parallel children still running after "
                                   f"{timeout} s")
            for child in pending:
                if child._control in ready:
                    try:
                        child.join()
                    except BaseException:
                        for other in self._items:
                            if not other.joined:
                                other.terminate()
                        raise
        for child in self._items:
            child.join()  # re-raise an earlier failure, as each child's join does

    def terminate(self) -> None:
        """Stop every child still running."""
        for child in self._items:
            child.terminate()


def start_child(id: int, parent_id: int, target: Callable[..., Any] | str, args: tuple[Any, ...],
                shared_size: int, is_code: bool) -> Child:
    """Start a child process with its channel (used by ``parallel.run``)."""
    init: dict[str, Any] = {"runner": "nonsense_hpc.parallel.process:run_child", "id": id,
                            "parent_id": parent_id, "args": list(args),
                            "shared_size": shared_size}
    if is_code:
        init["code"] = target
    else:
        init["target"] = spawn.describe_target(target)
    codec.encode(init)  # TypeError for bad arguments before a process starts
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    to_child, to_parent = new_segment(shared_size), new_segment(shared_size)
    fds = (theirs.fileno(), to_child, to_parent)
    init["fds"] = {"sock": fds[0], "in": to_child, "out": to_parent}
    try:
        proc, control = spawn.start(init, extra_fds=fds)
        endpoint = Endpoint(mine, to_child, to_parent, shared_size, f"parallel child {id}")
    except BaseException:
        mine.close()
        raise
    finally:
        theirs.close()
        os.close(to_child)
        os.close(to_parent)
    return Child(id, proc, control, endpoint)


def run_child(conn: Connection, init: dict[str, Any]) -> int:
    """Child side: set up ``parallel.id/parent``, run the code, report how it ended."""
    import nonsense_hpc.parallel as parallel

    fds = init["fds"]
    endpoint = Endpoint(socket.socket(fileno=fds["sock"]), fds["out"], fds["in"],
                        int(init["shared_size"]), "parent")
    os.close(fds["out"])
    os.close(fds["in"])
    parallel._become_child(int(init["id"]), Parent(int(init["parent_id"]), endpoint))
    args = tuple(init["args"])
    try:
        if "code" in init:
            name = f"<parallel#{init['id']:03d} code>"
            source = init["code"]
            linecache.cache[name] = (len(source), None, source.splitlines(True), name)
            code = compile(source, name, "exec")
            exec(code, {"__name__": "__parallel__", "parallel": parallel, "args": args})
        else:
            spawn.resolve_target(init["target"])(*args)
        report: list[Any] = ["done"]
    except SystemExit as exc:
        ok = exc.code in (None, 0)
        report = ["done"] if ok else ["error", remote.describe(exc)]
    except BaseException as exc:
        report = ["error", remote.describe(exc)]
    parallel.children.terminate()  # grandchildren never outlive their parent
    try:
        conn.send(report)
    except OSError:
        pass
    endpoint.close()
    return 0 if report[0] == "done" else 1


@atexit.register
def _terminate_all() -> None:
    for child in list(_LIVE):
        child.terminate()
