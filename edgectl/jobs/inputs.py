"""A job's inputs: local files from paths, directories and globs; files already on nodes."""

from __future__ import annotations

import glob
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.errors import UsageError
from edgectl.inventory.model import Node
from edgectl.jobs.kinds import input_names

if TYPE_CHECKING:
    from edgectl.api import Fleet

MAX_INPUTS = 1_000_000


def expand_inputs(items: Sequence[str]) -> list[Path]:
    """Files from paths, directories (recursively, sorted) and glob patterns; each once."""
    found: dict[Path, None] = {}
    for item in items:
        matches = sorted(glob.glob(item, recursive=True)) if glob.has_magic(item) else [item]
        if not matches:
            raise UsageError(f"no input matches {item!r}")
        for match in matches:
            path = Path(match)
            if path.is_dir():
                for child in sorted(
                    p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
                ):
                    found[child.resolve()] = None
            elif path.is_file():
                found[path.resolve()] = None
            else:
                raise UsageError(f"input {match}: no such file or directory")
    if len(found) > MAX_INPUTS:
        raise UsageError(f"{len(found)} inputs: at most {MAX_INPUTS} per job")
    return list(found)


def list_remote(fleet: Fleet, nodes: list[Node], patterns: Sequence[str]) -> list[dict[str, Any]]:
    """Files matching the globs on each node: {name, remote, node, size}."""
    import asyncio

    from edgectl.jobs import remote

    async def list_all() -> dict[str, Any]:
        async with fleet.pool(30.0) as pool:

            async def one(node: Node, conn: Any) -> Any:
                return await conn.run(
                    remote.sh(remote.LIST, node.workdir, *patterns),
                    timeout=60.0,
                    max_output=64 << 20,
                )

            return await pool.run_all(nodes, one)

    found: list[dict[str, Any]] = []
    outcomes = asyncio.run(list_all())
    for node in nodes:
        outcome = outcomes[node.name]
        if not hasattr(outcome, "stdout_text"):
            raise UsageError(f"cannot list --remote-path on {node.name}: {outcome}")
        for line in outcome.stdout_text.splitlines():
            size, _, path = line.partition("\t")
            if size.isdigit() and path.startswith("/"):
                base = Path(path).name
                found.append(
                    {
                        "name": f"{node.name}__{base}",
                        "remote": path,
                        "node": node.name,
                        "size": int(size),
                    }
                )
    names = input_names([i["name"] for i in found])
    for item, name in zip(found, names, strict=True):
        item["name"] = name
    return found
