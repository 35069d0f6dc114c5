#!/usr/bin/env python3
"""edgectl OCR runner: tesseract over a task's images, on the node.

Standalone: Python 3.8 or newer with pytesseract and Pillow (the `ocr` playbook installs
them in <workdir>/venv) and the tesseract program with the wanted language data; it never
imports edgectl. Run in a task directory as `python3 ocr_runner.py ocr_task.json`.

For each page of each image (every page of a multi-page TIFF) it writes the requested
outputs to out/: <base>.txt, .tsv, .hocr, .pdf for the first page, <base>-p<N>.* for page N,
all from one tesseract run per page, and one JSON line per page to out/<task id>.ocr.jsonl:
image, page, characters, words, mean word confidence, the rotation applied, what the
preprocessing did, seconds taken, the time and the host. A page that fails (not an image,
tesseract error) gets a line with its `error`; the other pages go on. A missing library,
program or language is a failure of the whole task (another node may have them).

Options (the task file): lang, psm, formats, dpi, rotate (none | auto | 90 | 180 | 270,
degrees clockwise), preprocess:
  off   the image goes to tesseract as it is: the same result as the `tesseract` command;
  on    grayscale, background flattened, upscaled when small, binarised (Otsu), then OCR;
  auto  OCR as it is; when the text is small (median word height under SMALL_TEXT_PX) or
        the mean confidence low (under LOW_CONFIDENCE), OCR the preprocessed page as well
        and keep whichever result has more confidence-weighted characters (an upscaled one
        is kept unless it has less than KEEP_UPSCALED of the other's).
"""

from __future__ import annotations

import csv
import importlib
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

SMALL_TEXT_PX = 20  # tesseract reads best with text at least ~20-30 px high
TARGET_TEXT_PX = 32
LOW_CONFIDENCE = 70.0
# Upscaled small text read better in every case measured (tests/test_ocr.py): it is kept
# unless it lost a clear share of the confidence-weighted characters.
KEEP_UPSCALED = 0.95
MIN_OSD_CONFIDENCE = 2.0  # below this tesseract's orientation guess is not trusted
MAX_PIXELS = 60_000_000  # an upscaled page stays below this
PAGE_TIMEOUT = 600  # seconds for one tesseract run
DIRECT_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "PPM")  # given to tesseract unconverted
FORMATS = ("txt", "tsv", "hocr", "pdf")


class SetupError(Exception):
    """Something this node lacks (a library, the tesseract program, language data)."""


class Libraries:
    """pytesseract and Pillow, imported when the runner starts (they are the node's)."""

    def __init__(self) -> None:
        try:
            self.pytesseract: Any = importlib.import_module("pytesseract")
            self.image: Any = importlib.import_module("PIL.Image")
            self.chops: Any = importlib.import_module("PIL.ImageChops")
            self.filters: Any = importlib.import_module("PIL.ImageFilter")
            self.ops: Any = importlib.import_module("PIL.ImageOps")
        except ImportError as exc:
            raise SetupError(
                f"{exc.name or exc} is not installed for {sys.executable}: "
                "run the `ocr` playbook (pytesseract and pillow in <workdir>/venv)"
            ) from None
        self.error: Any = self.pytesseract.TesseractError
        try:
            self.pytesseract.get_tesseract_version()
        except self.pytesseract.TesseractNotFoundError:
            raise SetupError("the tesseract program is not installed") from None

    def check_languages(self, lang: str, need_osd: bool) -> None:
        """Fail early when tesseract lacks a requested language."""
        have = set(self.pytesseract.get_languages(config=""))
        wanted = [part for part in lang.split("+") if part]
        if need_osd:
            wanted.append("osd")
        missing = [part for part in wanted if part not in have]
        if missing:
            raise SetupError(f"tesseract on this node lacks language data: {', '.join(missing)}")


# -- image handling ---------------------------------------------------------------------------


def otsu_threshold(histogram: list[int]) -> int:
    """The grey level that best separates a 256-bin histogram in two classes (Otsu, 1979)."""
    total = sum(histogram)
    weighted = sum(i * h for i, h in enumerate(histogram))
    below = below_sum = 0.0
    best_level, best_spread = 127, -1.0
    for level in range(256):
        below += histogram[level]
        if below == 0:
            continue
        above = total - below
        if above == 0:
            break
        below_sum += level * histogram[level]
        mean_below = below_sum / below
        mean_above = (weighted - below_sum) / above
        spread = below * above * (mean_below - mean_above) ** 2
        if spread > best_spread:
            best_level, best_spread = level, spread
    return best_level


def grayscale(libs: Libraries, page: Any) -> Any:
    """The page in 8-bit grey, transparent parts on white."""
    if page.mode in ("RGBA", "LA") or (page.mode == "P" and "transparency" in page.info):
        rgba = page.convert("RGBA")
        white = libs.image.new("RGBA", rgba.size, (255, 255, 255, 255))
        page = libs.image.alpha_composite(white, rgba)
    return page.convert("L")


def flatten_background(libs: Libraries, grey: Any) -> Any:
    """Even out the lighting: the page plus (white - its background estimate).

    The background is estimated at a quarter of the size (fast): a max filter removes the
    dark text, a blur smooths what is left.
    """
    small = grey.resize((max(1, grey.width // 4), max(1, grey.height // 4)))
    background = small.filter(libs.filters.MaxFilter(5)).filter(libs.filters.BoxBlur(4))
    background = background.resize(grey.size)
    flat = libs.chops.add(grey, libs.chops.invert(background))
    return libs.ops.autocontrast(flat, cutoff=1)


def upscale_factor(size: tuple[int, int], text_height: float | None) -> int:
    """2-4 when the text (or, not knowing it, the page) is small; else 1."""
    if text_height is not None:
        factor = round(TARGET_TEXT_PX / text_height) if 0 < text_height < SMALL_TEXT_PX else 1
    else:
        factor = 2 if max(size) < 1200 else 1
    factor = max(1, min(4, factor))
    while factor > 1 and size[0] * size[1] * factor * factor > MAX_PIXELS:
        factor -= 1
    return factor


def preprocess(libs: Libraries, page: Any, text_height: float | None) -> tuple[Any, int]:
    """Grey, background flattened, upscaled if small, binarised; and the upscale factor."""
    grey = flatten_background(libs, grayscale(libs, page))
    factor = upscale_factor(grey.size, text_height)
    if factor > 1:
        grey = grey.resize((grey.width * factor, grey.height * factor), libs.image.LANCZOS)
    level = otsu_threshold(grey.histogram())
    binary = grey.point([0] * (level + 1) + [255] * (255 - level))
    return binary, factor


def rotate_page(libs: Libraries, page: Any, clockwise: int) -> Any:
    """The page turned by 0, 90, 180 or 270 degrees clockwise, without resampling."""
    transpose = getattr(libs.image, "Transpose", libs.image)
    turns = {90: transpose.ROTATE_270, 180: transpose.ROTATE_180, 270: transpose.ROTATE_90}
    return page.transpose(turns[clockwise]) if clockwise in turns else page


def save_png(page: Any, path: str, dpi: tuple[float, float] | None, factor: int = 1) -> str:
    """Write a page as PNG, keeping its resolution (scaled with the page) for tesseract."""
    options = {}
    if dpi:
        options["dpi"] = (round(dpi[0] * factor), round(dpi[1] * factor))
    page.save(path, format="PNG", **options)
    return path


# -- tesseract ----------------------------------------------------------------------------


class Pass:
    """One tesseract run over one page: its output files and what its TSV says."""

    def __init__(self, directory: str, base: str) -> None:
        self.base = os.path.join(directory, base)
        with open(self.base + ".tsv", encoding="utf-8", errors="replace") as handle:
            rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
        words = []
        for row in rows[1:]:
            if len(row) < 12 or row[0] != "5" or not row[11].strip():
                continue
            try:
                conf, height = float(row[10]), int(row[9])
            except ValueError:
                continue
            if conf >= 0:
                words.append((row[11], conf, height))
        with open(self.base + ".txt", encoding="utf-8", errors="replace") as handle:
            self.text = handle.read()
        self.words = len(words)
        self.mean_conf = round(statistics.fmean(w[1] for w in words), 2) if words else None
        self.text_height = statistics.median(w[2] for w in words) if words else None
        self.score = sum(len(w[0]) * w[1] / 100.0 for w in words)

    def doubtful(self) -> bool:
        """Small text or low confidence: worth a preprocessed second try."""
        if self.mean_conf is None or self.text_height is None:
            return True
        return self.text_height < SMALL_TEXT_PX or self.mean_conf < LOW_CONFIDENCE


def run_tesseract(
    libs: Libraries, source: str, directory: str, base: str, config: dict[str, Any], dpi: str
) -> Pass:
    """One tesseract run writing txt, tsv and the requested hocr/pdf into `directory`."""
    formats = config["formats"]
    extensions = " ".join(["txt", *(f for f in ("hocr", "pdf") if f in formats)])
    options = f"--psm {int(config['psm'])} {dpi}-c tessedit_create_tsv=1"
    libs.pytesseract.pytesseract.run_tesseract(
        source,
        os.path.join(directory, base),
        extension=extensions,
        lang=config["lang"],
        config=options,
        timeout=PAGE_TIMEOUT,
    )
    return Pass(directory, base)


def orientation(libs: Libraries, source: str, dpi: str) -> tuple[int, float | None, str | None]:
    """(degrees clockwise to turn the page upright, confidence, error) from tesseract's OSD."""
    try:
        found = libs.pytesseract.image_to_osd(
            source,
            config=dpi.strip(),
            output_type=libs.pytesseract.Output.DICT,
            timeout=PAGE_TIMEOUT,
        )
    except libs.error as exc:
        return 0, None, f"orientation not detected: {str(exc).strip()[:200]}"
    confidence = float(found.get("orientation_conf") or 0.0)
    rotate = int(found.get("rotate") or 0) % 360
    if confidence < MIN_OSD_CONFIDENCE:
        return 0, confidence, None
    return rotate, confidence, None


# -- pages ----------------------------------------------------------------------------------


def page_name(base: str, number: int) -> str:
    """The output base of one page: `base` for the first, `base-pN` for page N."""
    return base if number == 1 else f"{base}-p{number}"


def ocr_page(
    libs: Libraries,
    page: Any,
    original: str | None,
    name: str,
    config: dict[str, Any],
    work: str,
) -> dict[str, Any]:
    """OCR one page into out/ and return its record (without image/page fields)."""
    dpi_option = f"--dpi {int(config['dpi'])} " if config.get("dpi") else ""
    dpi = page.info.get("dpi")
    record: dict[str, Any] = {"rotation": 0, "orientation_conf": None}
    source = original
    if source is None:
        source = save_png(page, os.path.join(work, "page.png"), dpi)
    mode = config["preprocess"]
    rotate = config["rotate"]
    if rotate == "auto":
        degrees, confidence, error = orientation(libs, source, dpi_option)
        record["orientation_conf"] = confidence
        if error:
            record["orientation_error"] = error
    else:
        degrees = 0 if rotate in (None, "", "none") else int(rotate) % 360
    if degrees:
        page = rotate_page(libs, page, degrees)
        source = save_png(page, os.path.join(work, "page.png"), dpi)
        record["rotation"] = degrees
    if mode == "on":
        processed, factor = preprocess(libs, page, None)
        source = save_png(processed, os.path.join(work, "pre.png"), dpi, factor)
        chosen = run_tesseract(libs, source, work, "pre", config, dpi_option)
        record["preprocess"] = {"applied": True, "upscale": factor}
    else:
        chosen = run_tesseract(libs, source, work, "plain", config, dpi_option)
        record["preprocess"] = {"applied": False}
        if mode == "auto" and chosen.doubtful():
            processed, factor = preprocess(libs, page, chosen.text_height)
            pre_source = save_png(processed, os.path.join(work, "pre.png"), dpi, factor)
            second = run_tesseract(libs, pre_source, work, "pre", config, dpi_option)
            taken = second.score > chosen.score * (KEEP_UPSCALED if factor > 1 else 1.0)
            record["preprocess"] = {
                "applied": taken,
                "tried": True,
                "upscale": factor,
                "score_plain": round(chosen.score, 2),
                "score_preprocessed": round(second.score, 2),
            }
            if taken:
                chosen = second
    outputs = []
    for extension in config["formats"]:
        target = f"{name}.{extension}"
        shutil.copyfile(f"{chosen.base}.{extension}", os.path.join("out", target))
        outputs.append(target)
    record.update(
        {
            "outputs": outputs,
            "chars": sum(1 for c in chosen.text if not c.isspace()),
            "words": chosen.words,
            "mean_conf": chosen.mean_conf,
            "text_height": chosen.text_height,
        }
    )
    return record


def pages_of(libs: Libraries, path: str) -> Iterator[tuple[int, int, Any, str | None]]:
    """(number, count, page, path tesseract may read directly or None) for each page.

    Every page of a TIFF; the first frame of other formats. A copy keeps its frame's info
    (the resolution among it).
    """
    with libs.image.open(path) as image:
        count = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
        direct = count == 1 and image.format in DIRECT_FORMATS
        for index in range(count):
            image.seek(index)
            yield index + 1, count, image.copy(), (path if direct else None)


def ocr_image(
    libs: Libraries, item: dict[str, Any], config: dict[str, Any], host: str
) -> list[dict[str, Any]]:
    """Every page of one input: the records (with `error` set on a page that failed)."""
    records = []
    base = {"image": item["name"], "path": item["path"], "host": host, "lang": config["lang"]}
    try:
        for number, count, page, original in pages_of(libs, item["path"]):
            started = time.time()
            work = tempfile.mkdtemp(prefix="ocr-", dir=".")
            record: dict[str, Any] = {**base, "page": number, "pages": count}
            try:
                record.update(
                    ocr_page(libs, page, original, page_name(item["base"], number), config, work)
                )
                record["error"] = None
            except (libs.error, OSError, ValueError, RuntimeError) as exc:
                record["error"] = f"{type(exc).__name__}: {str(exc).strip()[:300]}"
            finally:
                shutil.rmtree(work, ignore_errors=True)
            record["seconds"] = round(time.time() - started, 3)
            record["finished"] = round(time.time(), 3)
            records.append(record)
    except (OSError, ValueError, SyntaxError, libs.image.DecompressionBombError) as exc:
        # Pillow cannot read it (or refuses: a decompression bomb); the other images go on.
        failed = {**base, "page": len(records) + 1, "pages": None, "seconds": 0.0}
        failed.update(
            {"error": f"not a readable image: {str(exc)[:300]}", "finished": round(time.time(), 3)}
        )
        records.append(failed)
    return records


def claim(index: int) -> bool:
    """Whether this runner may start input `index`: it claims it (mkdir claims/<index>)
    unless edgectl did first, taking the input back to place it elsewhere; a skipped input
    is listed in `skipped`, which edgectl reads with the task's status."""
    try:
        os.mkdir(os.path.join("claims", str(index)))
    except FileExistsError:
        with open("skipped", "a", encoding="ascii") as skipped:
            skipped.write(f"{index}\n")
        return False
    return True


def main(argv: list[str]) -> int:
    """OCR the task's inputs; exit 0 unless this node cannot do OCR at all."""
    if len(argv) != 2:
        print("usage: ocr_runner.py TASK.json", file=sys.stderr)
        return 2
    with open(argv[1], encoding="utf-8") as handle:
        config = json.load(handle)
    try:
        libs = Libraries()
        libs.check_languages(config["lang"], config.get("rotate") == "auto")
    except SetupError as exc:
        print(f"ocr runner: {exc}", file=sys.stderr)
        return 3
    os.makedirs("out", exist_ok=True)
    os.makedirs("claims", exist_ok=True)
    task_id = os.path.basename(os.getcwd())
    host = socket.gethostname()
    temp = "ocr.jsonl.tmp"  # outside out/: only whole files ever appear there
    with open(temp, "w", encoding="utf-8") as log:
        for index, item in enumerate(config["inputs"]):
            if not claim(index):
                continue
            for record in ocr_image(libs, item, config, host):
                log.write(json.dumps(record, ensure_ascii=False) + "\n")
                log.flush()
            with open("progress", "a") as progress:  # a byte per input done, for edgectl
                progress.write(".")
    os.replace(temp, os.path.join("out", f"{task_id}.ocr.jsonl"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
