"""The Python API: everything the CLI can do, for scripts that import edgectl.

from edgectl import Fleet
fleet = Fleet()                       # EDGECTL_HOME or the platform default
for node in fleet.nodes("@cameras,&arch=arm64"):
    print(node.name, node.host)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgectl.errors import NotFoundError, UsageError, ValidationError
from edgectl.facts.store import FactsStore
from edgectl.inventory.model import (
    DEFAULT_PORT,
    DEFAULT_WORKDIR,
    SETTABLE_FIELDS,
    Node,
    check_host,
    check_name,
    check_path,
    check_port,
    check_user,
    parse_label,
)
from edgectl.inventory.repository import Inventory
from edgectl.inventory.selectors import Facts, parse_selector
from edgectl.store import Store

if TYPE_CHECKING:
    from edgectl.adhoc import CommandOutcome
    from edgectl.facts.store import ProbeResult
    from edgectl.jobs.service import Jobs
    from edgectl.onboard import BootstrapResult, Discovered
    from edgectl.provision.report import ProvisionReport
    from edgectl.transport import ConnectionPool, ConnectOptions


@dataclass(frozen=True)
class ImportReport:
    """What an import did: how many nodes were read, added and replaced."""

    path: str
    format: str
    read: int
    added: int
    replaced: int


class Fleet:
    """One EDGECTL_HOME: its inventory, and later its facts and jobs."""

    def __init__(self, home: str | os.PathLike[str] | None = None) -> None:
        self.store = Store(home)
        self.inventory = Inventory(self.store)
        self.facts_store = FactsStore(self.store)

    @property
    def home(self) -> Path:
        """The directory holding this fleet's data files."""
        return self.store.home

    def facts(self) -> Facts:
        """Latest good facts per node name (empty until nodes are probed)."""
        return self.facts_store.facts_by_node()

    def nodes(self, selector: str | Sequence[str] = "all", allow_empty: bool = False) -> list[Node]:
        """The nodes a selector picks; matching nothing is an error unless `allow_empty`."""
        text = selector if isinstance(selector, str) else ",".join(selector)
        parsed = parse_selector(text)
        needs_facts = any(t.atom.kind == "key" for t in parsed.terms)
        chosen = parsed.select(self.inventory.nodes(), self.facts() if needs_facts else None)
        if not chosen and not allow_empty:
            raise NotFoundError(
                f"selector {text!r} matches no node (use --allow-empty to accept that)"
            )
        return chosen

    def node(self, name: str) -> Node:
        """One node by exact name."""
        return self.inventory.get(name)

    def add_node(
        self,
        name: str,
        host: str,
        port: int = DEFAULT_PORT,
        user: str | None = None,
        key: str | None = None,
        groups: Iterable[str] = (),
        labels: Mapping[str, str] | Iterable[str] = (),
        workdir: str = DEFAULT_WORKDIR,
        connection: str = "ssh",
    ) -> Node:
        """Add one node; its name must be free."""
        node = Node(
            name=name,
            host=host,
            port=port,
            user=user,
            key=key,
            groups=list(groups),
            labels=_labels(labels),
            workdir=workdir,
            connection=connection,
        )
        self.inventory.add([node])
        return node

    def add_nodes(self, nodes: Sequence[Node], replace: bool = False) -> tuple[int, int]:
        """Add many nodes in one write. Returns (added, replaced)."""
        return self.inventory.add(nodes, replace=replace)

    def remove_nodes(self, names: Iterable[str]) -> list[str]:
        """Remove nodes by exact name; all must exist, else nothing is removed."""
        names = list(names)
        for name in names:
            check_name(name)
        removed = self.inventory.remove(names)
        if self.store.path("facts").exists():
            self.facts_store.forget(removed)  # a new node of the same name starts without them
        return removed

    def set_fields(self, name: str, assignments: Mapping[str, str]) -> Node:
        """Change connection fields of one node (host, port, user, key, workdir)."""
        unknown = [k for k in assignments if k not in SETTABLE_FIELDS]
        if unknown:
            raise ValidationError(
                f"cannot set {', '.join(unknown)}: settable fields are {', '.join(SETTABLE_FIELDS)}"
            )
        values: dict[str, Any] = {}
        for field, value in assignments.items():
            if field in ("user", "key") and value == "":
                values[field] = None  # `user=` clears it: back to ssh config / defaults
            else:
                values[field] = _check_field(field, value)

        def change(node: Node) -> None:
            for field, value in values.items():
                setattr(node, field, value)

        return self.inventory.update(name, change)

    def label(
        self,
        selector: str,
        assignments: Mapping[str, str] | Iterable[str] = (),
        remove: Iterable[str] = (),
    ) -> list[Node]:
        """Set and remove labels on the nodes a selector picks, in one write."""
        new = _labels(assignments)
        gone = list(remove)
        names = [n.name for n in self.nodes(selector)]

        def change(node: Node) -> None:
            node.labels.update(new)
            for key in gone:
                node.labels.pop(key, None)

        return self.inventory.update_many(names, change)

    def group(self, selector: str, groups: Iterable[str], remove: bool = False) -> list[Node]:
        """Add the nodes a selector picks to groups (or take them out), in one write."""
        wanted = [check_name(g, "group name") for g in groups]
        names = [n.name for n in self.nodes(selector)]

        def change(node: Node) -> None:
            if remove:
                node.groups = [g for g in node.groups if g not in wanted]
            else:
                node.groups = [*node.groups, *wanted]

        return self.inventory.update_many(names, change)

    def groups(self) -> dict[str, list[str]]:
        """Every group name with its member nodes."""
        members: dict[str, list[str]] = {}
        for node in self.inventory.nodes():
            for group in node.groups:
                members.setdefault(group, []).append(node.name)
        return dict(sorted(members.items()))

    def import_file(
        self, path: str, format: str = "auto", group: str | None = None, replace: bool = False
    ) -> ImportReport:
        """Import an inventory file in one write; a bad line imports nothing."""
        from edgectl.inventory.formats import detect_format, load_nodes

        nodes = load_nodes(path, format, group)
        used = format if format != "auto" else detect_format(path, Path(path).read_text("utf-8"))
        added, replaced = self.inventory.add(nodes, replace=replace)
        return ImportReport(path=path, format=used, read=len(nodes), added=added, replaced=replaced)

    def connect_options(
        self, timeout: float | None = None, accept_new: bool = False, *, keepalive: bool = True
    ) -> ConnectOptions:
        """Connection options for this home: its known_hosts, the user's, and timeouts.

        `keepalive=False` suits one-shot work, whose command timeout already bounds a
        silent node: no keepalive timer is re-armed at every packet of every connection.
        """
        from edgectl.transport import ConnectOptions

        options = ConnectOptions(known_hosts_path=self.home / "known_hosts", accept_new=accept_new)
        if timeout is not None:
            options.connect_timeout = options.login_timeout = options.command_timeout = timeout
        if not keepalive:
            options.keepalive_interval = 0.0
        return options

    def pool(
        self,
        timeout: float | None = None,
        forks: int = 100,
        accept_new: bool = False,
        *,
        keepalive: bool = True,
    ) -> ConnectionPool:
        """A connection pool for async fleet work (reuse it across rounds, as `top` does)."""
        from edgectl.transport import ConnectionPool

        options = self.connect_options(timeout, accept_new, keepalive=keepalive)
        return ConnectionPool(options, forks=forks)

    async def probe_async(
        self,
        nodes: Sequence[Node],
        pool: ConnectionPool,
        timeout: float | None = None,
        on_done: Callable[[str], None] | None = None,
        full: bool = False,
        keep_session: bool = True,
    ) -> list[ProbeResult]:
        """Probe nodes through a pool and record the round (one write).

        `full` re-reads static facts (os, python3, tesseract and its languages) instead
        of the copy each node caches in its workdir. Each node's probe shell stays open
        in the pool for the next round unless `keep_session` is False.
        """
        from edgectl.facts.probe import probe_nodes

        results = await probe_nodes(nodes, pool, timeout, on_done, full, keep_session)
        self.store.ensure_home()
        self.facts_store.record(results)
        return results

    def probe(
        self,
        selector: str | Sequence[str] = "all",
        timeout: float = 10.0,
        forks: int = 100,
        accept_new: bool = False,
        progress: Progress | None = None,
        full: bool = False,
    ) -> list[ProbeResult]:
        """Probe the selected nodes over SSH (psutil for `local`) and store their facts.

        `full` re-reads static facts on every node instead of its cached copy.
        """
        nodes = self.nodes(selector)

        async def go() -> list[ProbeResult]:
            # One round, then the pool closes: the probe's timeout bounds every node.
            async with self.pool(timeout, forks, accept_new, keepalive=False) as pool:
                with _progress(progress, len(nodes)) as on_done:
                    return await self.probe_async(nodes, pool, timeout, on_done, full)

        import asyncio  # kept out of start-up: it costs tens of milliseconds to import

        return asyncio.run(go())

    def status(self, selector: str | Sequence[str] = "all") -> list[dict[str, Any]]:
        """The stored facts of the selected nodes, with no SSH: one record per node."""
        latest = self.facts_store.latest()
        records = []
        for node in self.nodes(selector):
            record = latest.get(node.name) or {"reachable": None, "reason": "never probed"}
            records.append({"name": node.name, **{k: v for k, v in record.items() if k != "name"}})
        return records

    def run(
        self,
        selector: str | Sequence[str],
        argv: Sequence[str],
        timeout: float = 60.0,
        forks: int = 100,
        accept_new: bool = False,
        progress: Progress | None = None,
    ) -> list[CommandOutcome]:
        """Run one command on every selected node; per-node outcomes, in inventory order."""
        from edgectl.adhoc import run_command

        if not argv:
            raise UsageError("no command given (write it after --)")
        nodes = self.nodes(selector)

        async def go() -> list[CommandOutcome]:
            async with self.pool(timeout, forks, accept_new) as pool:
                with _progress(progress, len(nodes)) as on_done:
                    return await run_command(nodes, argv, pool, timeout, on_done=on_done)

        import asyncio  # kept out of start-up: it costs tens of milliseconds to import

        return asyncio.run(go())

    def export(self, format: str = "toml", selector: str = "all") -> str:
        """The selected nodes as text in an import format (toml, csv or json)."""
        from edgectl.inventory.formats import dump_nodes

        return dump_nodes(self.nodes(selector, allow_empty=True), format)

    def provision(
        self, playbook: str, selector: str | Sequence[str] = "all", **options: Any
    ) -> ProvisionReport:
        """Apply a playbook (a path or a shipped name); options as `edgectl provision` takes
        them: check, serial, max_fail, timeout, forks, accept_new."""
        from edgectl.provision import provision

        return provision(self, playbook, selector, **options)

    def discover(self, range_or_file: str, **options: Any) -> list[Discovered]:
        """SSH servers among the given addresses; options: ports, timeout, concurrency, add,
        group, user (as `edgectl inventory discover`)."""
        from edgectl.onboard import discover

        return discover(self, range_or_file, **options)

    def bootstrap(
        self, selector: str, password: Callable[[], str], **options: Any
    ) -> list[BootstrapResult]:
        """Install edgectl's key by one password login; options: user, accept_new, timeout,
        forks. `password` is called at most once, only when some node needs it."""
        from edgectl.onboard import bootstrap

        return bootstrap(self, selector, password, **options)

    @property
    def jobs(self) -> Jobs:
        """Jobs on this fleet: submit, run, show, results, cancel, resume (as `edgectl job`)."""
        from edgectl.jobs.service import Jobs

        return Jobs(self)


# A progress display: called with the number of nodes, it returns a context manager that
# yields the per-node callback (the CLI passes a rich bar on a terminal, scripts pass None).
Progress = Callable[[int], AbstractContextManager[Callable[[str], None]]]


@contextmanager
def _progress(factory: Progress | None, total: int) -> Iterator[Callable[[str], None] | None]:
    if factory is None:
        yield None
        return
    with factory(total) as advance:
        yield advance


def _labels(labels: Mapping[str, str] | Iterable[str]) -> dict[str, str]:
    if isinstance(labels, Mapping):
        return dict(labels)
    return dict(parse_label(text) for text in labels)


def _check_field(field: str, value: str) -> Any:
    if field == "host":
        return check_host(value)
    if field == "port":
        return check_port(value)
    if field == "user":
        return check_user(value)
    return check_path(value, "key path" if field == "key" else field)
