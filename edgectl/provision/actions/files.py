"""`file`, `template` and `dir`: content, mode and owner of paths on the node.

A file is replaced atomically: written to a temp file beside it (content on stdin), given
its mode and owner, then renamed over the old one. The check returns the current content
(up to a cap) so that `--diff` can show exactly what would change.
"""

from __future__ import annotations

import difflib
import hashlib
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from edgectl.provision.actions.base import Action, check_failed
from edgectl.provision.context import NodeContext
from edgectl.provision.fields import FieldError, FieldReader, check_string, path_problem
from edgectl.provision.plan import Command, Output, Plan, parse_key_values, sh
from edgectl.provision.template import TemplateError, check_template, render_text

if TYPE_CHECKING:
    from edgectl.provision.playbook import Step

MAX_CONTENT = 16 * 1024 * 1024  # bytes a file step may write (sent on stdin)
CHECK_CONTENT_CAP = 1024 * 1024  # current content read back for comparison and diffs
DEFAULT_FILE_MODE = 0o644
CONTENT_MARK = b"--edgectl-content--\n"

FILE_CHECK = r"""
d=$1; cap=$2
if [ -d "$d" ]; then echo "kind=dir"; exit 0; fi
if [ ! -e "$d" ]; then
  echo "kind=missing"
  [ -d "$(dirname -- "$d")" ] && echo "parent=1"
  exit 0
fi
[ -f "$d" ] || { echo "kind=other"; exit 0; }
echo "kind=file"
echo "stat=$(stat -c '%a %U %G %s' -- "$d")"
[ -r "$d" ] || { echo "unreadable=1"; exit 0; }
echo "sha256=$(sha256sum -- "$d" | cut -d ' ' -f 1)"
s=$(stat -c %s -- "$d")
if [ "$s" -le "$cap" ]; then echo "--edgectl-content--"; cat -- "$d"; fi
"""

FILE_WRITE = r"""
d=$1; m=$2; o=$3
p=$(dirname -- "$d")
[ -d "$p" ] || mkdir -p -- "$p" || exit 1
t=$(mktemp "$d.edgectl-XXXXXX") || exit 1
if ! cat > "$t"; then rm -f "$t"; exit 1; fi
if ! chmod "$m" "$t"; then rm -f "$t"; exit 1; fi
if [ -n "$o" ] && ! chown "$o" "$t"; then rm -f "$t"; exit 1; fi
mv -f "$t" "$d" || { rm -f "$t"; exit 1; }
"""

DIR_CHECK = r"""
d=$1
if [ -d "$d" ]; then echo "kind=dir"; echo "stat=$(stat -c '%a %U %G' -- "$d")"
elif [ -e "$d" ]; then echo "kind=other"
else echo "kind=missing"; fi
"""


@dataclass(frozen=True)
class FileArgs:
    """Where, what (literal bytes, or template text), and with which mode and owner."""

    dest: str
    content: bytes | str  # str for a template: rendered per node
    mode: int | None
    owner: str | None
    group: str | None


@dataclass(frozen=True)
class DirArgs:
    """A directory, its mode and owner."""

    path: str
    mode: int | None
    owner: str | None
    group: str | None


@dataclass(frozen=True)
class PathState:
    """What the check saw at a path."""

    kind: str  # file | dir | missing | other
    mode: int | None = None
    owner: str = ""
    group: str = ""
    parent: bool = False
    sha256: str = ""
    content: bytes | None = None  # None when not read back (too big or unreadable)


def parse_state(stdout: bytes) -> PathState:
    """Parse FILE_CHECK or DIR_CHECK output."""
    head, mark, content = stdout.partition(CONTENT_MARK)
    values = parse_key_values(head.decode("utf-8", errors="replace"))
    mode = owner = group = None
    stat = values.get("stat", "").split()
    if len(stat) >= 3:
        try:
            mode = int(stat[0], 8)
        except ValueError:
            mode = None
        owner, group = stat[1], stat[2]
    return PathState(
        kind=values.get("kind", "other"),
        mode=mode,
        owner=owner or "",
        group=group or "",
        parent=values.get("parent") == "1",
        sha256=values.get("sha256", ""),
        content=content if mark else None,
    )


def owner_spec(owner: str | None, group: str | None) -> str:
    """`user`, `user:group` or `:group` for chown; '' when neither is set."""
    if owner and group:
        return f"{owner}:{group}"
    if owner:
        return owner
    return f":{group}" if group else ""


def ownership_changes(
    state: PathState, owner: str | None, group: str | None
) -> tuple[list[str], str]:
    """Descriptions of owner/group changes, and the chown spec to apply ('' for none)."""
    changes = []
    if owner and owner != state.owner:
        changes.append(f"owner {state.owner or '?'} -> {owner}")
    if group and group != state.group:
        changes.append(f"group {state.group or '?'} -> {group}")
    return changes, owner_spec(owner, group) if changes else ""


def unified_diff(dest: str, old: bytes | None, new: bytes, old_sha: str = "") -> str:
    """A unified diff of a file's content, or a one-line note for binary or large files."""
    try:
        old_text = "" if old is None and not old_sha else (old or b"").decode("utf-8")
        new_text = new.decode("utf-8")
    except UnicodeDecodeError:
        return f"Binary file {dest}: content differs\n"
    if old is None and old_sha:
        new_sha = hashlib.sha256(new).hexdigest()
        return f"File {dest} is too large to diff: sha256 {old_sha[:12]} -> {new_sha[:12]}\n"
    lines = difflib.unified_diff(
        old_text.splitlines(keepends=True),
        new_text.splitlines(keepends=True),
        fromfile=f"{dest} (node)" if old is not None else "/dev/null",
        tofile=f"{dest} (playbook)",
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


def _read_src(fields: FieldReader, base: Path, template: bool) -> bytes | str | None:
    src = fields.string("src", template=False, check=path_problem)
    if src is None:
        return None
    path = Path(src) if Path(src).is_absolute() else base / src
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FieldError("src", f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_CONTENT:
        raise FieldError("src", f"{path} is {len(data)} bytes, over {MAX_CONTENT}")
    if not template:
        return data
    try:
        text = data.decode("utf-8")
        check_template(text)
    except UnicodeDecodeError:
        raise FieldError("src", f"{path} is not UTF-8 text (a template must be)") from None
    except TemplateError as exc:
        raise FieldError("src", f"{path}: {exc}") from None
    return text


class File(Action):
    """A file with this content, mode and owner (missing parent directories are made)."""

    name = "file"
    template: ClassVar[bool] = False
    options = ("content", "src", "mode", "owner", "group")
    summary = "a file's content (literal, or from src), mode and owner"

    def parse(self, value: Any, fields: FieldReader, base: Path) -> FileArgs:
        """dest (the action's value), content or src, mode, owner, group."""
        dest = check_string(self.name, value, check=path_problem)
        has_content = fields.has("content")
        content: bytes | str | None
        if has_content:
            text = fields.string("content", multiline=True, template=self.template)
            assert text is not None
            if len(text.encode()) > MAX_CONTENT:
                raise FieldError("content", f"is over {MAX_CONTENT} bytes: use src")
            content = text if self.template else text.encode()
            if fields.has("src"):
                raise FieldError("src", "give content or src, not both")
        else:
            content = _read_src(fields, base, self.template)
        if content is None:
            raise FieldError("content", "give the file's content, or src (a local file)")
        return FileArgs(dest, content, fields.mode(), fields.owner("owner"), fields.owner("group"))

    def dest(self, args: FileArgs, ctx: NodeContext) -> str:
        """The absolute destination on this node."""
        return ctx.path(render_text(args.dest, ctx.variables()))

    def content(self, args: FileArgs, ctx: NodeContext) -> bytes:
        """The bytes to write on this node."""
        if isinstance(args.content, bytes):
            return args.content
        return render_text(args.content, ctx.variables()).encode("utf-8")

    def check(self, args: FileArgs, step: Step, ctx: NodeContext) -> Command:
        """Kind, stat, sha256 and (up to a cap) the content of dest."""
        return Command(
            sh(FILE_CHECK, self.dest(args, ctx), str(CHECK_CONTENT_CAP)), become=step.become
        )

    def plan(self, args: FileArgs, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """Write the file when content differs; else fix mode and owner if they differ."""
        failed = check_failed(output, "reading the file")
        if failed is not None:
            return failed
        assert output is not None
        dest = self.dest(args, ctx)
        new = self.content(args, ctx)
        state = parse_state(output.stdout)
        if state.kind == "dir":
            return Plan.failed(f"{dest} is a directory")
        if state.kind == "other":
            return Plan.failed(f"{dest} exists and is not a regular file")
        if state.kind == "file" and not state.sha256:
            return Plan.failed(f"{dest} is not readable by {ctx.user} (set become = true?)")
        same = state.kind == "file" and (
            state.content == new
            if state.content is not None
            else state.sha256 == hashlib.sha256(new).hexdigest()
        )
        mode = args.mode if args.mode is not None else state.mode
        owners, chown = ownership_changes(state, args.owner, args.group)
        if not same:
            verb = "create" if state.kind == "missing" else "update"
            written = mode if mode is not None else DEFAULT_FILE_MODE
            changes = [f"{verb} {dest} ({len(new)} bytes, mode {written:04o})", *owners]
            if state.kind == "missing" and not state.parent:
                changes.insert(0, f"create directory {posixpath.dirname(dest)}")
            spec = owner_spec(args.owner, args.group) if state.kind == "missing" else chown
            write = Command(
                sh(FILE_WRITE, dest, f"{written:04o}", spec), stdin=new, become=step.become
            )
            old = state.content if state.kind == "file" else None
            diff = unified_diff(dest, old, new, state.sha256 if state.kind == "file" else "")
            return Plan(commands=[write], changes=changes, diff=diff)
        return _fix_attributes(dest, state, args.mode, owners, chown, step.become)


def _fix_attributes(
    path: str, state: PathState, mode: int | None, owners: list[str], chown: str, become: bool
) -> Plan:
    """chmod and chown where they differ; ok when nothing does."""
    commands = []
    changes = []
    if mode is not None and state.mode != mode:
        shown = f"{state.mode:04o}" if state.mode is not None else "?"
        changes.append(f"mode {shown} -> {mode:04o}")
        commands.append(Command(("chmod", f"{mode:04o}", "--", path), become=become))
    if chown:
        changes.extend(owners)
        commands.append(Command(("chown", chown, "--", path), become=become))
    if not commands:
        return Plan.ok(f"{path} up to date")
    return Plan(commands=commands, changes=changes)


class Template(File):
    """A file rendered from a template with ${var} from vars, labels, facts and the node."""

    name = "template"
    template = True
    summary = "a file rendered from ${var} placeholders (never evaluated)"


class Directory(Action):
    """A directory with this mode and owner."""

    name = "dir"
    options = ("mode", "owner", "group")
    summary = "a directory (with parents), its mode and owner"

    def parse(self, value: Any, fields: FieldReader, base: Path) -> DirArgs:
        """path (the action's value), mode, owner, group."""
        path = check_string(self.name, value, check=path_problem)
        return DirArgs(path, fields.mode(), fields.owner("owner"), fields.owner("group"))

    def path(self, args: DirArgs, ctx: NodeContext) -> str:
        """The absolute path on this node."""
        return ctx.path(render_text(args.path, ctx.variables()))

    def check(self, args: DirArgs, step: Step, ctx: NodeContext) -> Command:
        """Is it a directory, with which mode and owner."""
        return Command(sh(DIR_CHECK, self.path(args, ctx)), become=step.become)

    def plan(self, args: DirArgs, step: Step, ctx: NodeContext, output: Output | None) -> Plan:
        """mkdir -p when missing; chmod and chown where they differ."""
        failed = check_failed(output, "reading the directory")
        if failed is not None:
            return failed
        assert output is not None
        path = self.path(args, ctx)
        state = parse_state(output.stdout)
        if state.kind == "other":
            return Plan.failed(f"{path} exists and is not a directory")
        if state.kind == "missing":
            commands = [Command(("mkdir", "-p", "--", path), become=step.become)]
            changes = [f"create directory {path}"]
            if args.mode is not None:
                commands.append(
                    Command(("chmod", f"{args.mode:04o}", "--", path), become=step.become)
                )
                changes[0] += f" (mode {args.mode:04o})"
            spec = owner_spec(args.owner, args.group)
            if spec:
                commands.append(Command(("chown", spec, "--", path), become=step.become))
                changes.append(f"owner {spec}")
            return Plan(commands=commands, changes=changes)
        owners, chown = ownership_changes(state, args.owner, args.group)
        return _fix_attributes(path, state, args.mode, owners, chown, step.become)
