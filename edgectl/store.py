"""TinyDB files under EDGECTL_HOME, written atomically under an exclusive lock.

TinyDB's own JSONStorage rewrites its file in place: a killed writer leaves a torn file
and two processes lose each other's writes. Here every change is a transaction:
take an fcntl lock, re-read the file, let TinyDB change a copy in memory, then write a
temp file, fsync it, keep the old file as `.bak` (a hard link, so no copy), rename the temp
file over the old one and fsync the directory. A crash at any instant leaves the old or the
new file, and a transaction writes once however many records it changes.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

from edgectl.errors import StoreError

LOCK_TIMEOUT_S = 60.0
Data = dict[str, Any]


def default_home() -> Path:
    """The platform's user data directory for edgectl (XDG on Linux)."""
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "edgectl"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "edgectl"


def resolve_home(home: str | os.PathLike[str] | None = None) -> Path:
    """The home directory: the argument, else $EDGECTL_HOME, else the platform default."""
    if home:
        return Path(home).expanduser()
    env = os.environ.get("EDGECTL_HOME")
    return Path(env).expanduser() if env else default_home()


def _describe_json_error(exc: json.JSONDecodeError, raw: bytes) -> str:
    if exc.msg == "Extra data":
        return f"trailing data after the JSON document at byte {exc.pos}"
    if exc.pos >= len(raw.rstrip()):
        return "truncated JSON (the file ends in the middle of the document)"
    return f"invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg})"


class _MemoryStorage:
    """A TinyDB storage over a dict: reads and writes stay in memory until commit."""

    def __init__(self, data: Data) -> None:
        self.data = data
        self.dirty = False

    def read(self) -> Data:
        return self.data

    def write(self, data: Data) -> None:
        self.data = data
        self.dirty = True

    def close(self) -> None:
        pass


class Store:
    """The data files of one EDGECTL_HOME."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.home = resolve_home(home)

    def path(self, name: str) -> Path:
        """The JSON file of a store name (`inventory` -> inventory.json)."""
        return self.home / f"{name}.json"

    def backup_path(self, name: str) -> Path:
        """Where the last good state of a file is kept."""
        return self.home / f"{name}.json.bak"

    def ensure_home(self) -> None:
        """Create the home directory (private to the user) if it does not exist."""
        try:
            self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.home}: {exc.strerror}") from exc

    def load(self, name: str, seed: Callable[[], Data] | None = None) -> Data:
        """Read and check one file; a missing file gives `seed()` (or an empty dict)."""
        path = self.path(name)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return seed() if seed else {}
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from exc
        return self._check(name, raw)

    def _check(self, name: str, raw: bytes) -> Data:
        path = self.path(name)
        if not raw.strip():
            problem = "the file is empty"
        else:
            try:
                data = json.loads(raw.decode("utf-8"))
            except json.JSONDecodeError as exc:
                problem = _describe_json_error(exc, raw)
            except UnicodeDecodeError:
                problem = "the file is not UTF-8 text"
            else:
                if isinstance(data, dict) and all(isinstance(t, dict) for t in data.values()):
                    return data
                problem = "not a JSON object of tables"
        raise StoreError(f"{path} is unreadable: {problem}; {self._way_out(name)}")

    def _way_out(self, name: str) -> str:
        backup = self.backup_path(name)
        if backup.exists():
            return f"restore the last good state ({backup.name}) with: edgectl store restore {name}"
        return f"no backup exists; move the file aside to start afresh: mv {self.path(name)} {self.path(name)}.broken"

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """Hold the exclusive lock of one store file (bounded wait)."""
        self.ensure_home()
        lock_path = self.home / f".{name}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open lock file {lock_path}: {exc.strerror}") from exc
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            delay = 0.001
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise StoreError(
                            f"{self.path(name)} is locked by another edgectl process for over "
                            f"{LOCK_TIMEOUT_S:.0f} s; try again"
                        ) from None
                    time.sleep(delay)
                    delay = min(delay * 2, 0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    @contextmanager
    def transaction(self, name: str, seed: Callable[[], Data] | None = None) -> Iterator[Any]:
        """A TinyDB over a locked, fresh read of the file; written once on success."""
        from tinydb import TinyDB

        with self.lock(name):
            data = self.load(name, seed)
            seeded = not self.path(name).exists()
            db = TinyDB(storage=_MemoryStorage, data=data)
            yield db
            storage = cast(_MemoryStorage, db.storage)
            if storage.dirty or seeded:
                self.write(name, storage.data)

    @contextmanager
    def snapshot(self, name: str, seed: Callable[[], Data] | None = None) -> Iterator[Any]:
        """A TinyDB over the file as it is now, for reading; changes are not saved.

        No lock is needed: files are only ever replaced by rename, so a reader sees
        the old or the new file whole.
        """
        from tinydb import TinyDB

        yield TinyDB(storage=_MemoryStorage, data=self.load(name, seed))

    def write(self, name: str, data: Data) -> None:
        """Replace a file atomically; call with the lock held."""
        path = self.path(name)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        payload = json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                view = memoryview(payload)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)
            if path.exists():
                self._keep_backup(name)
            os.replace(tmp, path)
            _fsync_dir(self.home)
        except OSError as exc:
            try:
                tmp.unlink()
            except OSError:
                pass
            reason = "the disk is full" if exc.errno == errno.ENOSPC else exc.strerror
            raise StoreError(
                f"cannot write {path}: {reason}; the previous state is unchanged"
            ) from exc

    def _keep_backup(self, name: str) -> None:
        """Make `.bak` a hard link to the current (good) file, replacing the older backup."""
        path, backup = self.path(name), self.backup_path(name)
        link = backup.with_name(f".{backup.name}.{os.getpid()}.tmp")
        try:
            link.unlink()
        except FileNotFoundError:
            pass
        os.link(path, link)
        os.replace(link, backup)

    def restore(self, name: str) -> Path | None:
        """Put the `.bak` of a file back in place; the broken file is kept aside (returned)."""
        with self.lock(name):
            path, backup = self.path(name), self.backup_path(name)
            try:
                raw = backup.read_bytes()
            except FileNotFoundError:
                raise StoreError(f"no backup to restore: {backup} does not exist") from None
            try:
                self._check(name, raw)
            except StoreError:
                raise StoreError(
                    f"the backup {backup} is unreadable too; nothing was changed"
                ) from None
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as handle:
                handle.write(raw)
                handle.flush()
                os.fsync(handle.fileno())
            aside = None
            if path.exists():
                # A link, not a move: the file is never missing, even for an instant.
                aside = path.with_name(f"{path.name}.broken-{time.strftime('%Y%m%dT%H%M%S')}")
                os.link(path, aside)
            os.replace(tmp, path)
            _fsync_dir(self.home)
            return aside

    def check(self, name: str) -> str | None:
        """None if the file is readable (or absent), else the one-line problem."""
        try:
            self.load(name)
        except StoreError as exc:
            return str(exc)
        return None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
