"""The inventory file: nodes stored in TinyDB, changed only inside store transactions."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from edgectl.errors import ConflictError, NotFoundError, ValidationError
from edgectl.inventory.model import NODE_FIELDS, Node, local_node
from edgectl.store import Data, Store

FILE = "inventory"
TABLE = "nodes"


def _seed() -> Data:
    """A fresh inventory holds the control machine itself, so every command works at once."""
    return {TABLE: {"1": local_node().to_dict()}}


def _node_from_record(record: dict[str, Any]) -> Node:
    return Node.from_dict({k: record.get(k) for k in NODE_FIELDS if k in record})


class Inventory:
    """Read and change the nodes of one EDGECTL_HOME."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def nodes(self) -> list[Node]:
        """Every node, in the order they were added."""
        with self.store.snapshot(FILE, _seed) as db:
            return [_node_from_record(doc) for doc in db.table(TABLE).all()]

    def get(self, name: str) -> Node:
        """One node by name, or NotFoundError."""
        for node in self.nodes():
            if node.name == name:
                return node
        raise NotFoundError(f"no node named {name!r} (see: edgectl inventory list)")

    def names(self) -> list[str]:
        """The names of all nodes (for completion)."""
        return [node.name for node in self.nodes()]

    def add(self, nodes: Sequence[Node], replace: bool = False) -> tuple[int, int]:
        """Add nodes in one write; existing names conflict unless `replace`. Returns (added, replaced)."""
        seen: set[str] = set()
        for node in nodes:
            if node.name in seen:
                raise ValidationError(f"node {node.name!r} is given twice")
            seen.add(node.name)
        with self.store.transaction(FILE, _seed) as db:
            table = db.table(TABLE)
            existing = {doc["name"]: doc.doc_id for doc in table.all()}
            taken = [n.name for n in nodes if n.name in existing]
            if taken and not replace:
                shown = ", ".join(taken[:5]) + (
                    f" and {len(taken) - 5} more" if len(taken) > 5 else ""
                )
                raise ConflictError(
                    f"node(s) already in the inventory: {shown}; nothing was added "
                    "(use --replace to overwrite)"
                )
            fresh = [n.to_dict() for n in nodes if n.name not in existing]
            if fresh:
                table.insert_multiple(fresh)
            if taken:
                _rewrite(table, {n.name: n for n in nodes if n.name in existing}, existing)
        return len(fresh), len(taken)

    def remove(self, names: Iterable[str]) -> list[str]:
        """Remove nodes by name in one write; all must exist. Returns the names removed."""
        wanted = list(dict.fromkeys(names))
        with self.store.transaction(FILE, _seed) as db:
            table = db.table(TABLE)
            existing = {doc["name"]: doc.doc_id for doc in table.all()}
            missing = [n for n in wanted if n not in existing]
            if missing:
                raise NotFoundError(
                    f"no node named {', '.join(map(repr, missing))}; nothing was removed"
                )
            table.remove(doc_ids=[existing[n] for n in wanted])
        return wanted

    def update(self, name: str, change: Callable[[Node], None]) -> Node:
        """Apply `change` to one node under the lock; the result is validated before it is written."""
        with self.store.transaction(FILE, _seed) as db:
            table = db.table(TABLE)
            for doc in table.all():
                if doc["name"] == name:
                    node = _node_from_record(doc)
                    change(node)
                    node.validate()
                    table.update(node.to_dict(), doc_ids=[doc.doc_id])
                    return node
        raise NotFoundError(f"no node named {name!r} (see: edgectl inventory list)")

    def update_many(self, names: Sequence[str], change: Callable[[Node], None]) -> list[Node]:
        """Apply `change` to several nodes in one write; all must exist."""
        with self.store.transaction(FILE, _seed) as db:
            table = db.table(TABLE)
            docs = {doc["name"]: doc for doc in table.all()}
            missing = [n for n in names if n not in docs]
            if missing:
                raise NotFoundError(
                    f"no node named {', '.join(map(repr, missing))}; nothing was changed"
                )
            changed = {}
            for name in names:
                node = _node_from_record(docs[name])
                change(node)
                node.validate()
                changed[name] = node
            _rewrite(table, changed, {name: docs[name].doc_id for name in changed})
            return list(changed.values())


def _rewrite(table: Any, nodes: dict[str, Node], doc_ids: dict[str, int]) -> None:
    """Replace several records in one pass over the table (TinyDB rewrites it per call)."""

    def replace_record(doc: dict[str, Any]) -> None:
        new = nodes[doc["name"]].to_dict()
        doc.clear()
        doc.update(new)

    table.update(replace_record, doc_ids=[doc_ids[name] for name in nodes])
