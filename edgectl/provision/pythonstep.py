"""Running `python` steps: user functions called with a Fabric Connection.

Fabric (paramiko) trusts any host key by default (AutoAddPolicy) and reads no known_hosts
file. Here the Connection is made to verify as the transport does: edgectl's known_hosts
and the user's are loaded read-only and an unknown or changed key is refused
(RejectPolicy; paramiko raises BadHostKeyException for a changed one). Keys the transport
accepted under --accept-new were recorded in edgectl's known_hosts before any python step
runs, so trust on first use happens once, in one place.

fabric and paramiko are imported when the first python step runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgectl.inventory.model import Node
from edgectl.transport.base import ConnectOptions
from edgectl.transport.hostkeys import host_pattern

PythonFunction = Callable[..., Any]


class PythonStepError(Exception):
    """A python step could not be loaded or could not connect; the message says why."""


def load_function(path: Path, name: str) -> PythonFunction:
    """Import path as a module of its own and return its function `name`."""
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"edgectl_playbook_{path.stem}_{digest}"
    module = sys.modules.get(module_name)
    if module is None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise PythonStepError(f"{path}: cannot be imported")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            raise PythonStepError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
        sys.modules[module_name] = module
    function = getattr(module, name, None)
    if not callable(function):
        raise PythonStepError(f"{path}: no function {name!r}")
    return function  # type: ignore[no-any-return]


def known_hosts_files(options: ConnectOptions) -> list[Path]:
    """The known_hosts files the transport trusts: edgectl's, then the user's."""
    paths = [options.known_hosts_path]
    if options.user_known_hosts is not None:
        paths.append(options.user_known_hosts.expanduser())
    return paths


def fabric_connection(node: Node, options: ConnectOptions, command_timeout: float) -> Any:
    """A fabric.Connection to node that refuses unknown and changed host keys."""
    # Neither ships type information; both load only when a python step runs.
    import fabric  # type: ignore[import-untyped]  # noqa: TID251
    import paramiko  # type: ignore[import-untyped]

    connect_kwargs: dict[str, Any] = {
        "banner_timeout": options.login_timeout,
        "auth_timeout": options.login_timeout,
    }
    if node.key:
        connect_kwargs["key_filename"] = [os.path.expanduser(node.key)]
        connect_kwargs["look_for_keys"] = False  # as the transport: only the node's key
    config = fabric.Config(
        overrides={
            # Remote output goes to the function (result.stdout), not to edgectl's stdout,
            # and no command reads the controller's stdin.
            "run": {"hide": True, "in_stream": False},
            "sudo": {"hide": True},
            "timeouts": {"command": command_timeout},
        }
    )
    conn = fabric.Connection(
        host=node.host,
        port=node.port,
        user=node.user,
        config=config,
        connect_timeout=max(1, round(options.connect_timeout)),
        connect_kwargs=connect_kwargs,
    )
    client = conn.client
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    for path in known_hosts_files(options):
        if path.is_file():
            try:
                client.load_system_host_keys(str(path))  # read-only: never written back
            except (OSError, paramiko.SSHException) as exc:
                raise PythonStepError(f"cannot read known_hosts {path}: {exc}") from exc
    return conn


def open_verified(conn: Any, node: Node) -> None:
    """Open the Fabric connection, turning host-key refusals into one clear message."""
    import paramiko

    name = host_pattern(node.host, node.port)
    try:
        conn.open()
    except paramiko.BadHostKeyException as exc:
        raise PythonStepError(
            f"HOST KEY CHANGED for {name}: it offered {exc.key.get_name()} "
            f"{exc.key.fingerprint}, known_hosts has {exc.expected_key.fingerprint}; "
            "refusing to connect (possible man-in-the-middle)"
        ) from None
    except paramiko.AuthenticationException:
        raise PythonStepError(f"{name}: permission denied for user {node.user}") from None
    except paramiko.SSHException as exc:
        if "known_hosts" in str(exc):
            raise PythonStepError(
                f"unknown host key for {name}: not in known_hosts; refusing to connect"
            ) from None
        raise PythonStepError(f"{name}: {exc}") from None
    except OSError as exc:
        raise PythonStepError(f"{name}: {exc.strerror or exc}") from None


async def call_python_step(
    function: PythonFunction,
    node: Node,
    options: ConnectOptions,
    context: Any,
    timeout: float,
) -> Any:
    """Connect with Fabric and call function(c, context) in a worker thread, under timeout."""
    conn = fabric_connection(node, options, timeout)

    def call() -> Any:
        open_verified(conn, node)
        return function(conn, context)

    try:
        return await asyncio.wait_for(asyncio.to_thread(call), timeout)
    except asyncio.TimeoutError:
        raise PythonStepError(f"no result within {timeout:g} s") from None
    finally:
        # Closing also unblocks a thread still waiting on the network after a timeout.
        with contextlib.suppress(Exception):
            conn.close()
