"""The control machine as a node: the Connection interface over local subprocesses."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import stat
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from edgectl.inventory.model import Node
from edgectl.transport.base import (
    CLOSE_GRACE,
    Connection,
    ConnectOptions,
    RunResult,
    TransportError,
    collect_output,
    feed_stdin,
    script_command,
    with_timeout,
)
from edgectl.transport.quoting import quote_argv

COPY_CHUNK = 1024 * 1024


def local_path(path: str) -> Path:
    """A node-side path on this machine: '~' expanded, relative paths from the home."""
    expanded = Path(os.path.expanduser(path))
    return expanded if expanded.is_absolute() else Path.home() / expanded


def _kill_group(process: asyncio.subprocess.Process) -> None:
    """Kill the command and whatever it started (it leads its own process group)."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


class LocalConnection(Connection):
    """Runs commands and copies files on the control machine itself."""

    def __init__(self, node: Node, options: ConnectOptions) -> None:
        self.node_name = node.name
        self.node = node
        self.options = options
        self._closed = False

    @property
    def is_closed(self) -> bool:
        """True once closed."""
        return self._closed

    async def run(
        self,
        argv: Sequence[str] | None = None,
        *,
        script: str | None = None,
        stdin: bytes | None = None,
        timeout: float | None = None,
        max_output: int | None = None,
    ) -> RunResult:
        """Run argv (no shell) or a POSIX sh script (sent on stdin to `sh -s`) locally."""
        command_argv, data = script_command(argv, script, stdin)
        quote_argv(command_argv)  # the same argument checks as over SSH
        limit = self.options.command_timeout if timeout is None else timeout
        cap = self.options.max_output if max_output is None else max_output
        return await with_timeout(
            self._run(command_argv, data, cap), limit, f"{self.node_name}: {command_argv[0]}"
        )

    async def _run(self, argv: list[str], data: bytes | None, cap: int) -> RunResult:
        """Start the process in its own group, feed stdin, read under the cap, reap it."""
        start = time.monotonic()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=Path.home(),  # where a command over SSH starts, too
                start_new_session=True,
            )
        except FileNotFoundError:
            # What a remote shell answers for a missing command.
            message = f"sh: {argv[0]}: not found\n".encode()
            return RunResult(127, b"", message, time.monotonic() - start)
        except PermissionError:
            message = f"sh: {argv[0]}: Permission denied\n".encode()
            return RunResult(126, b"", message, time.monotonic() - start)
        assert process.stdout is not None and process.stderr is not None
        finished = False
        try:
            out, err, truncated = await collect_output(
                process.stdout.read,
                process.stderr.read,
                self._feed(process, data),
                cap,
                lambda: _kill_group(process),
            )
            status = await process.wait()
            finished = True
        finally:
            if not finished:
                _kill_group(process)  # timeout or cancellation
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(process.wait(), CLOSE_GRACE)
        exit_status = None if truncated or status < 0 else status
        return RunResult(exit_status, out, err, time.monotonic() - start, truncated)

    @staticmethod
    async def _feed(process: asyncio.subprocess.Process, data: bytes | None) -> None:
        """Send data to the process's stdin and close it."""
        pipe = process.stdin
        if pipe is None:
            return
        await feed_stdin(pipe.write, pipe.drain, pipe.close, data)

    async def put(self, local: Path, remote: str, *, timeout: float | None = None) -> None:
        """Copy one file to a path on this machine."""
        limit = self.options.command_timeout if timeout is None else timeout
        target = local_path(remote)
        try:
            await with_timeout(
                asyncio.to_thread(shutil.copyfile, local, target),
                limit,
                f"{self.node_name}: copy to {remote}",
            )
        except OSError as exc:
            raise TransportError("error", f"{self.node_name}: copy to {remote}: {exc}") from None

    async def get(
        self, remote: str, local: Path, max_size: int, *, timeout: float | None = None
    ) -> int:
        """Copy one regular file, refusing one over max_size; return its size."""
        limit = self.options.command_timeout if timeout is None else timeout
        source = local_path(remote)
        try:
            return await with_timeout(
                asyncio.to_thread(self._copy_capped, source, remote, local, max_size),
                limit,
                f"{self.node_name}: copy of {remote}",
            )
        except OSError as exc:
            raise TransportError("error", f"{self.node_name}: copy of {remote}: {exc}") from None

    def _copy_capped(self, source: Path, shown: str, local: Path, max_size: int) -> int:
        """Copy source to a temp file beside local, stopping past max_size; then rename."""
        # stat before open: opening a FIFO or a device could block or never end.
        if not stat.S_ISREG(source.lstat().st_mode):  # a symlink is refused, not followed
            raise TransportError("error", f"{self.node_name}: {shown} is not a regular file")
        with source.open("rb") as src:
            info = os.fstat(src.fileno())
            if info.st_size > max_size:
                raise TransportError(
                    "error", f"{self.node_name}: {shown} is {info.st_size} bytes, over {max_size}"
                )
            fd, temp = tempfile.mkstemp(dir=local.parent, prefix=f".{local.name}.", suffix=".part")
            size = 0
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := src.read(COPY_CHUNK):
                        size += len(chunk)
                        if size > max_size:
                            raise TransportError(
                                "error", f"{self.node_name}: {shown} grew over {max_size} bytes"
                            )
                        out.write(chunk)
                os.replace(temp, local)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
        return size

    async def close(self) -> None:
        """Nothing to release; marks the connection closed."""
        self._closed = True


async def connect(node: Node, options: ConnectOptions) -> LocalConnection:
    """Open the local 'connection' (nothing to open; same shape as ssh.connect)."""
    return LocalConnection(node, options)
