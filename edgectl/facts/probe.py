"""Probe nodes: one exec of the probe script per SSH node, psutil for `local`."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Callable, Sequence

from edgectl.facts.local import local_facts
from edgectl.facts.parse import ProbeOutputError, parse_probe_output
from edgectl.facts.script import PROBE_SCRIPT
from edgectl.facts.store import ProbeResult
from edgectl.inventory.model import Node
from edgectl.transport import Connection, ConnectionPool, Session, TransportError

PROBE_OUTPUT_CAP = 256 * 1024  # a probe report is ~1 KiB; anything near this is hostile
REPORT_END = b"edgectl_probe_end=1\n"

# The probe as a session: a shell that runs the probe script once per request line
# (`cached` or `full`), each time in a subshell reading nothing from the request stream.
# Later rounds over a kept connection (`top`) then cost one write and one read, not a
# new channel and a new shell on the node.
SESSION_SCRIPT = (
    "exec 2>/dev/null\n"
    "wd=$1\n"
    "while IFS= read -r mode; do\n"
    '( set -- "$wd" "$mode"\n' + PROBE_SCRIPT + "\n) < /dev/null\n"
    "done\n"
)

# The open probe session of each connection (dropped with the connection).
_sessions: weakref.WeakKeyDictionary[Connection, Session] = weakref.WeakKeyDictionary()


def probe_argv(workdir: str, full: bool = False) -> list[str]:
    """The command line of one probe, for a node's login shell to run."""
    # `exec`: the login shell sshd starts becomes the sh that runs the script, one
    # process fewer on the node per probe (this argv is only ever run by a remote shell).
    return [
        "exec",
        "sh",
        "-c",
        PROBE_SCRIPT,
        "edgectl-probe",
        workdir,
        "full" if full else "cached",
    ]


async def probe_one(
    node: Node,
    conn: Connection,
    timeout: float | None = None,
    full: bool = False,
    keep_session: bool = True,
) -> ProbeResult:
    """Probe one node over an open connection; `full` re-reads its static facts too.

    The node's probe shell stays open on the connection for the next round unless
    `keep_session` is False (the connection's channels are wanted for other work).
    """
    if node.connection == "local":
        facts = await asyncio.to_thread(local_facts, node.workdir)
        return ProbeResult(node.name, True, facts=facts, probed_at=facts["probed_at"])
    request = b"full\n" if full else b"cached\n"
    reply: bytes | None = None
    session = _sessions.get(conn)
    started = time.perf_counter()
    if session is not None and not session.is_closed:
        try:
            reply = await session.exchange(
                request, REPORT_END, timeout=timeout, max_output=PROBE_OUTPUT_CAP
            )
        except TransportError as exc:
            # A kept session that ended (its shell killed on the node) gets one fresh
            # start on the same connection; a timeout or a lost connection does not.
            if exc.reason != "error" or conn.is_closed:
                raise
    if reply is None:
        session = await conn.open_session(
            ["exec", "sh", "-c", SESSION_SCRIPT, "edgectl-probe", node.workdir]
        )
        if session is None:
            return await _probe_by_exec(node, conn, timeout, full)
        _sessions[conn] = session
        started = time.perf_counter()
        reply = await session.exchange(
            request, REPORT_END, timeout=timeout, max_output=PROBE_OUTPUT_CAP
        )
    rtt_ms = (time.perf_counter() - started) * 1000
    now = time.time()
    if not keep_session and session is not None:
        await session.close()
    try:
        facts = parse_probe_output(reply.decode("utf-8", errors="replace"), rtt_ms, now)
    except ProbeOutputError:
        if session is not None:
            await session.close()  # out of step with the node: start afresh next round
        return ProbeResult(
            node.name, False, "error", "probe failed: incomplete report", probed_at=now
        )
    return ProbeResult(node.name, True, facts=facts, probed_at=now)


async def _probe_by_exec(
    node: Node, conn: Connection, timeout: float | None, full: bool
) -> ProbeResult:
    """Probe with one exec of the script, where the connection keeps no sessions."""
    started = time.perf_counter()
    result = await conn.run(
        probe_argv(node.workdir, full),
        timeout=timeout,
        max_output=PROBE_OUTPUT_CAP,
    )
    rtt_ms = (time.perf_counter() - started) * 1000
    now = time.time()
    try:
        facts = parse_probe_output(result.stdout_text, rtt_ms, now)
    except ProbeOutputError:
        detail = result.stderr_text.strip().splitlines()[-1:] or [
            f"exit status {result.exit_status}"
        ]
        return ProbeResult(
            node.name, False, "error", f"probe failed: {detail[0][:200]}", probed_at=now
        )
    return ProbeResult(node.name, True, facts=facts, probed_at=now)


async def probe_nodes(
    nodes: Sequence[Node],
    pool: ConnectionPool,
    timeout: float | None = None,
    on_done: Callable[[str], None] | None = None,
    full: bool = False,
    keep_session: bool = True,
) -> list[ProbeResult]:
    """Probe every node through the pool; an unreachable node gets its reason.

    `full` makes every node re-read its static facts (tesseract languages and the like)
    instead of reusing its cache of them: after provisioning, or when asked.
    `keep_session=False` closes each node's probe shell after its answer.
    """

    async def probe(node: Node, conn: Connection) -> ProbeResult:
        return await probe_one(node, conn, timeout, full, keep_session)

    outcomes = await pool.run_all(nodes, probe, on_done)
    results = []
    for node in nodes:
        outcome = outcomes[node.name]
        if isinstance(outcome, TransportError):
            results.append(
                ProbeResult(node.name, False, outcome.reason, str(outcome), probed_at=time.time())
            )
        else:
            results.append(outcome)
    return results
