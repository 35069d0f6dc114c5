"""Knock on TCP ports and read an SSH server's version line: finding servers, not logging in."""

from __future__ import annotations

import asyncio
import contextlib

BANNER_LINES = 20  # RFC 4253 lets a server send other lines before its version line
BANNER_LINE_MAX = 255


def _clean_banner(line: bytes) -> str:
    text = line.decode("ascii", errors="replace").rstrip("\r\n")
    return "".join(ch for ch in text if ch.isprintable())[:BANNER_LINE_MAX]


async def read_banner(host: str, port: int, timeout: float) -> str | None:
    """The server's `SSH-...` version line, or None (refused, silent, or not SSH)."""

    async def knock() -> str | None:
        reader, writer = await asyncio.open_connection(host, port, limit=4096)
        try:
            for _ in range(BANNER_LINES):
                line = await reader.readline()
                if not line:
                    return None
                if line.startswith(b"SSH-"):
                    return _clean_banner(line)
            return None
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    try:
        return await asyncio.wait_for(knock(), timeout)
    except (OSError, asyncio.TimeoutError, ValueError, asyncio.IncompleteReadError):
        return None
