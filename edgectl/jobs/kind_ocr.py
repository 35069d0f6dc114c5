"""The `ocr` kind: tesseract on the nodes over images, one tesseract process per slot.

A task ships the node-side runner (runners/ocr_runner.py), a task file with the options and
its chunk of images, and a run.sh that picks the `ocr` playbook's venv (<workdir>/venv) when
there is one and limits tesseract to one thread (OMP_THREAD_LIMIT=1): the executor already
runs one task per free core, so threads inside tesseract would only fight each other.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgectl.errors import UsageError
from edgectl.jobs.kinds import Kind, KindReport, TaskPayload, input_path, python_runner_payload

FORMATS = ("txt", "tsv", "hocr", "pdf")
PREPROCESS = ("auto", "on", "off")
ROTATIONS = ("none", "auto", "0", "90", "180", "270")
OPTIONS = {
    "lang": "--lang",
    "psm": "--psm",
    "formats": "--format",
    "preprocess": "--preprocess",
    "rotate": "--rotate",
    "dpi": "--dpi",
}
FOREIGN = {"run": "--run", "files": "--file", "op": "--op", "by": "--by", "where": "--where"}
_LANG = re.compile(r"[A-Za-z0-9_]{1,40}(\+[A-Za-z0-9_]{1,40}){0,9}")
_PAGE = re.compile(r"(.+)-p\d+")


def output_bases(names: Sequence[str]) -> dict[str, str]:
    """The output base name of each input: its stem, unless that would clash.

    Outputs of all tasks land in one directory, so bases must be unique across the job:
    a stem shared by two inputs (a.png, a.jpg), or one that a multi-page input's `-pN`
    pages could take (scan.tif, scan-p2.png), becomes the whole name with `_` for `.`;
    anything still clashing gets its index in front.
    """
    stems = [name.rsplit(".", 1)[0] if "." in name.strip(".") else name for name in names]
    counts = Counter(stems)
    known = set(stems)

    def clashes(stem: str) -> bool:
        page = _PAGE.fullmatch(stem)
        return counts[stem] > 1 or (page is not None and page.group(1) in known)

    bases = [
        name.replace(".", "_") if clashes(stem) else stem
        for name, stem in zip(names, stems, strict=True)
    ]
    taken = Counter(bases)
    return {
        name: base if taken[base] == 1 else f"{i:06d}-{base}"
        for i, (name, base) in enumerate(zip(names, bases, strict=True))
    }


class OcrKind(Kind):
    """OCR with tesseract: text, TSV, hOCR or PDF per page, and a record per page."""

    name = "ocr"
    mem_per_task = 64 * 1024 * 1024  # tesseract on one page at a time

    def __init__(self) -> None:
        self._bases: tuple[int, dict[str, str]] | None = None

    def check(self, params: dict[str, Any]) -> None:
        """Refuse bad or foreign options; fill in the defaults (stored with the job)."""
        for key, option in FOREIGN.items():
            if params.get(key):
                raise UsageError(f"{option} is not an option of ocr jobs")
        lang = str(params.get("lang") or "eng")
        if not _LANG.fullmatch(lang):
            raise UsageError(f"--lang {lang!r}: expected tesseract language names like chi_sim+eng")
        raw_psm = params.get("psm")
        psm = 3 if raw_psm is None else int(raw_psm)
        if not 1 <= psm <= 13:
            raise UsageError(f"--psm {psm}: use 1-13 (3, the default, is automatic layout)")
        formats = params.get("formats") or ["txt"]
        if isinstance(formats, str):
            formats = formats.split(",")
        formats = [f.strip().lower() for f in formats if f.strip()]
        bad = [f for f in formats if f not in FORMATS]
        if bad or not formats:
            raise UsageError(f"--format {','.join(bad)!r}: use some of {','.join(FORMATS)}")
        preprocess = params.get("preprocess", "auto")
        if isinstance(preprocess, bool):
            preprocess = "on" if preprocess else "off"
        if preprocess not in PREPROCESS:
            raise UsageError(f"--preprocess {preprocess!r}: use auto, on or off")
        rotate = str(params.get("rotate") or "none").lower()
        if rotate not in ROTATIONS:
            raise UsageError(f"--rotate {rotate!r}: use none, auto, 90, 180 or 270 (clockwise)")
        dpi = params.get("dpi")
        if dpi is not None and not 50 <= int(dpi) <= 4800:
            raise UsageError(f"--dpi {dpi}: use 50-4800")
        params.update(
            lang=lang,
            psm=psm,
            formats=list(dict.fromkeys(formats)),
            preprocess=preprocess,
            rotate=rotate,
            dpi=None if dpi is None else int(dpi),
        )

    def eligible(self, params: dict[str, Any], facts: dict[str, Any]) -> str | None:
        """A node needs tesseract with every requested language (and osd for --rotate auto)."""
        if not facts.get("tesseract"):
            return "tesseract is not installed"
        have = set(facts.get("tesseract_langs") or [])
        wanted = str(params.get("lang") or "eng").split("+")
        if params.get("rotate") == "auto":
            wanted.append("osd")
        missing = [lang for lang in wanted if lang not in have]
        if missing:
            return f"tesseract lacks language data: {', '.join(missing)}"
        return None

    def _output_bases(self, params: dict[str, Any]) -> dict[str, str]:
        everything = params.get("inputs", [])
        if self._bases is None or self._bases[0] != id(everything):
            self._bases = (id(everything), output_bases([i["name"] for i in everything]))
        return self._bases[1]

    def payload(self, params: dict[str, Any], inputs: Sequence[dict[str, Any]]) -> TaskPayload:
        """The runner, its task file (options and this chunk's images) and run.sh."""
        bases = self._output_bases(params)
        files: dict[str, Path | bytes] = {}
        chunk = [
            {
                "name": item["name"],
                "path": input_path(item, files),
                "base": bases.get(item["name"], item["name"]),
            }
            for item in inputs
        ]
        task = {key: params.get(key) for key in OPTIONS}
        task["inputs"] = chunk
        return python_runner_payload(files, "ocr", task, env="export OMP_THREAD_LIMIT=1\n")

    def report(self, directory: Path, files: Sequence[dict[str, Any]]) -> KindReport:
        """One row per page: image, page, characters, mean confidence, rotation, node."""
        records = page_records(directory, files)
        rows = [
            [
                r.get("image"),
                r.get("page"),
                r.get("chars"),
                r.get("mean_conf"),
                r.get("rotation"),
                "yes" if (r.get("preprocess") or {}).get("applied") else "no",
                r.get("node"),
                r.get("seconds"),
                r.get("error") or "",
            ]
            for r in records
        ]
        headers = [
            "IMAGE",
            "PAGE",
            "CHARS",
            "MEAN CONF",
            "ROTATION",
            "PREPROCESSED",
            "NODE",
            "SECONDS",
            "ERROR",
        ]
        problems = sum(1 for r in records if r.get("error"))
        return KindReport("pages", records, headers, rows, problems)


def page_records(directory: Path, files: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The per-page JSON lines of a job's stored results, each with the node that made it."""
    records: list[dict[str, Any]] = []
    for entry in files:
        if not entry["name"].endswith(".ocr.jsonl"):
            continue
        path = directory / entry["name"]
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                records.append({**json.loads(line), "node": entry.get("node")})
    records.sort(key=lambda r: (str(r.get("image")), int(r.get("page") or 0)))
    return records
