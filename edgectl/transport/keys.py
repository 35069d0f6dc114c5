"""edgectl's own client key: an ed25519 pair in EDGECTL_HOME, made on first use."""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from pathlib import Path

import asyncssh

KEY_FILE = "id_ed25519"


def ensure_key(home: Path) -> tuple[Path, str]:
    """edgectl's ed25519 key pair in home (made on first use, mode 0600); (path, public line)."""
    private = home / KEY_FILE
    public = home / f"{KEY_FILE}.pub"
    home.mkdir(parents=True, exist_ok=True)
    if not private.exists():
        key = asyncssh.generate_private_key(
            "ssh-ed25519", comment=f"edgectl@{socket.gethostname()}"
        )
        _write_new(private, key.export_private_key("openssh"), 0o600)
    os.chmod(private, 0o600)
    key = asyncssh.read_private_key(str(private))
    line = key.export_public_key("openssh").decode().strip()
    if not public.exists() or public.read_text().strip() != line:
        _write_new(public, (line + "\n").encode(), 0o644, replace_existing=True)
    return private, line


def _write_new(path: Path, data: bytes, mode: int, replace_existing: bool = False) -> None:
    """Write a file via a temp file: linked in place (first writer wins) or renamed over."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        if replace_existing:
            os.replace(temp, path)
            return
        with contextlib.suppress(FileExistsError):  # another edgectl made it meanwhile
            os.link(temp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
