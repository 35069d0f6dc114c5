"""`edgectl inventory ...`: nodes, groups, labels, import and export."""

from __future__ import annotations

from pathlib import Path

import typer

from edgectl.cli import onboard, render
from edgectl.cli.completion import complete_group, complete_node, complete_selector
from edgectl.cli.state import get_state
from edgectl.errors import UsageError
from edgectl.inventory.model import DEFAULT_PORT, DEFAULT_WORKDIR, Node

app = typer.Typer(help="Nodes, groups and labels: add, list, import, export.", no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON for scripts.")
ALLOW_EMPTY = typer.Option(
    False, "--allow-empty", help="A selector matching nothing is not an error."
)


def _row(node: Node) -> list[str]:
    host = "(this machine)" if node.connection == "local" else node.host
    return [
        node.name,
        host,
        "" if node.connection == "local" else str(node.port),
        node.user or "",
        ",".join(node.groups),
        ",".join(f"{k}={v}" for k, v in node.labels.items()),
    ]


def _print_nodes(ctx: typer.Context, nodes: list[Node], as_json: bool) -> None:
    env = get_state(ctx).env
    if as_json:
        render.emit_json(env, [n.to_dict() for n in nodes])
    else:
        render.table(
            env, ["NAME", "HOST", "PORT", "USER", "GROUPS", "LABELS"], [_row(n) for n in nodes]
        )


@app.command("list")
def list_nodes(
    ctx: typer.Context,
    selector: list[str] | None = typer.Argument(
        None, help="Which nodes (default: all).", autocompletion=complete_selector
    ),
    as_json: bool = JSON,
    allow_empty: bool = ALLOW_EMPTY,
) -> None:
    """List nodes, all or those a selector picks."""
    nodes = get_state(ctx).fleet.nodes(selector or "all", allow_empty=allow_empty)
    _print_nodes(ctx, nodes, as_json)


@app.command()
def show(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Node name.", autocompletion=complete_node),
    as_json: bool = JSON,
) -> None:
    """Show one node."""
    state = get_state(ctx)
    node = state.fleet.node(name)
    if as_json:
        render.emit_json(state.env, node.to_dict())
        return
    record = node.to_dict()
    record["groups"] = ", ".join(node.groups)
    record["labels"] = ", ".join(f"{k}={v}" for k, v in node.labels.items())
    render.key_values(state.env, list(record.items()))


@app.command()
def add(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Node name: letters, digits, '.', '_', '-'."),
    host: str = typer.Option(..., "--host", help="Hostname or IP address."),
    port: int = typer.Option(DEFAULT_PORT, "--port", help="SSH port."),
    user: str | None = typer.Option(None, "--user", help="Login user (default: ssh config)."),
    key: str | None = typer.Option(None, "--key", help="Private key file."),
    group: list[str] = typer.Option(
        [], "--group", "-g", help="Group (repeatable).", autocompletion=complete_group
    ),
    label: list[str] = typer.Option([], "--label", "-l", help="Label key=value (repeatable)."),
    workdir: str = typer.Option(
        DEFAULT_WORKDIR, "--workdir", help="Working directory on the node."
    ),
    as_json: bool = JSON,
) -> None:
    """Add a node."""
    state = get_state(ctx)
    node = state.fleet.add_node(
        name, host, port=port, user=user, key=key, groups=group, labels=label, workdir=workdir
    )
    if as_json:
        render.emit_json(state.env, node.to_dict())
    else:
        render.note(state.env, f"added {node.name} ({node.host}:{node.port})")


@app.command("rm")
def remove(
    ctx: typer.Context,
    names: list[str] = typer.Argument(..., help="Node names.", autocompletion=complete_node),
) -> None:
    """Remove nodes by name (all or nothing)."""
    state = get_state(ctx)
    removed = state.fleet.remove_nodes(names)
    render.note(state.env, f"removed {len(removed)} node(s): {', '.join(removed)}")


def _assignments(pairs: list[str], what: str) -> dict[str, str]:
    result = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"expected {what} as key=value, got {pair!r}")
        result[key.strip()] = value.strip()
    return result


@app.command("set")
def set_fields(
    ctx: typer.Context,
    name: str = typer.Argument(..., help="Node name.", autocompletion=complete_node),
    assignments: list[str] = typer.Argument(
        ..., help="field=value: host, port, user, key, workdir."
    ),
    as_json: bool = JSON,
) -> None:
    """Change connection fields of a node."""
    state = get_state(ctx)
    node = state.fleet.set_fields(name, _assignments(assignments, "field=value"))
    if as_json:
        render.emit_json(state.env, node.to_dict())
    else:
        render.note(state.env, f"updated {node.name}")


@app.command()
def label(
    ctx: typer.Context,
    selector: str = typer.Argument(
        ..., help="Node name or selector.", autocompletion=complete_selector
    ),
    labels: list[str] | None = typer.Argument(None, help="key=value to set."),
    remove: list[str] = typer.Option(
        [], "--remove", "-r", help="Label key to remove (repeatable)."
    ),
    as_json: bool = JSON,
) -> None:
    """Set or remove labels on a node (or every node a selector picks)."""
    state = get_state(ctx)
    if not labels and not remove:
        raise UsageError("nothing to do: give key=value labels to set or --remove KEY")
    nodes = state.fleet.label(selector, labels or [], remove)
    if as_json:
        render.emit_json(state.env, [n.to_dict() for n in nodes])
    else:
        render.note(state.env, f"labelled {len(nodes)} node(s)")


@app.command()
def group(
    ctx: typer.Context,
    selector: str = typer.Argument(
        ..., help="Node name or selector.", autocompletion=complete_selector
    ),
    groups: list[str] = typer.Argument(..., help="Group names.", autocompletion=complete_group),
    remove: bool = typer.Option(False, "--remove", "-r", help="Take the nodes out of the groups."),
    as_json: bool = JSON,
) -> None:
    """Put a node (or every node a selector picks) into groups, or take it out."""
    state = get_state(ctx)
    nodes = state.fleet.group(selector, groups, remove=remove)
    if as_json:
        render.emit_json(state.env, [n.to_dict() for n in nodes])
    else:
        verb = "removed from" if remove else "added to"
        render.note(state.env, f"{len(nodes)} node(s) {verb} {', '.join(groups)}")


@app.command("groups")
def list_groups(ctx: typer.Context, as_json: bool = JSON) -> None:
    """List groups and their members."""
    state = get_state(ctx)
    groups = state.fleet.groups()
    if as_json:
        render.emit_json(state.env, groups)
    else:
        rows = [[g, str(len(m)), ",".join(m)] for g, m in groups.items()]
        render.table(state.env, ["GROUP", "NODES", "MEMBERS"], rows)


@app.command("import")
def import_file(
    ctx: typer.Context,
    path: Path = typer.Argument(..., help="Inventory file.", dir_okay=False),
    format: str = typer.Option(
        "auto", "--format", "-f", help="auto, toml, csv, ansible, ssh-config or json."
    ),
    group: str | None = typer.Option(
        None, "--group", "-g", help="Also put every imported node in this group."
    ),
    replace: bool = typer.Option(
        False, "--replace", help="Overwrite nodes whose names exist already."
    ),
    as_json: bool = JSON,
) -> None:
    """Import nodes from a file, all in one write: a bad line imports nothing."""
    state = get_state(ctx)
    report = state.fleet.import_file(str(path), format=format, group=group, replace=replace)
    if as_json:
        render.emit_json(state.env, report.__dict__)
    else:
        render.note(
            state.env,
            f"imported {report.read} node(s) from {report.path} ({report.format}): "
            f"{report.added} added, {report.replaced} replaced",
        )


@app.command("export")
def export(
    ctx: typer.Context,
    selector: list[str] | None = typer.Argument(
        None, help="Which nodes (default: all).", autocompletion=complete_selector
    ),
    format: str = typer.Option("toml", "--format", "-f", help="toml, csv or json."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to a file instead of stdout."
    ),
) -> None:
    """Print the inventory in a format that `inventory import` reads back."""
    state = get_state(ctx)
    text = state.fleet.export(format, ",".join(selector) if selector else "all")
    if output is None:
        state.env.stdout.write(text)
        return
    tmp = output.with_name(f".{output.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(output)
    render.note(state.env, f"wrote {output}")


onboard.register(app)
