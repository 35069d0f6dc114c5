"""The `ocr` kind: options, placement by language, and accuracy through the real sshd fleet.

Accuracy is measured as the character error rate (edit distance / length of the truth) on
the scanned pages of tests/data/ocr (whitespace runs folded to one space) and on a
Chinese page rendered here (all whitespace removed), and compared with the `tesseract`
command on the same image and language: edgectl must never be less accurate.

The nodes get their OCR runtime the way the `ocr` playbook gives it: a venv at
<workdir>/venv with pytesseract and pillow from PyPI (Debian has no python3-pytesseract).
It is built once per session and linked into each node's workdir. Pillow is not a
controller dependency, so the images these tests make are drawn by that venv's python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgectl import Fleet as EdgeFleet
from edgectl.errors import UsageError
from edgectl.jobs.kind_ocr import OcrKind, output_bases
from edgectl.jobs.kinds import get_kind
from edgectl.jobs.service import Jobs
from edgectl.status import ExitStatus
from tests.cli import run_cli
from tests.fleet import Fleet, FleetSession
from tests.test_fleet_view import make_home

TESTDATA = Path(__file__).resolve().parent / "data" / "ocr"  # see SOURCE.md there
NODE_PYTHON = "/usr/bin/python3"  # what PATH finds for the fleet's user
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CHINESE_LINES = [
    "边缘计算让数据在产生的地方得到处理。",
    "每个节点运行文字识别任务，然后把结果送回控制机。",
    "这个测试页面用文泉驿正黑字体生成，检查中文识别的准确率。",
    "调度器根据负载、内存和语言数据选择合适的节点。",
    "Mixed line: tesseract 5 reads chi_sim+eng 2024.",
]


# -- measuring ---------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1)."""
    if len(a) < len(b):
        a, b = b, a
    previous = list(range(len(b) + 1))
    for i, char_a in enumerate(a, 1):
        current = [i]
        for j, char_b in enumerate(b, 1):
            current.append(
                min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (char_a != char_b))
            )
        previous = current
    return previous[-1]


def folded(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def no_space(text: str) -> str:
    return re.sub(r"\s+", "", text)


def cer(hypothesis: str, truth: str, normalise=folded) -> float:
    """Character error rate of `hypothesis` against `truth`, both normalised."""
    return edit_distance(normalise(hypothesis), normalise(truth)) / max(1, len(normalise(truth)))


def tesseract_cli(image: Path, lang: str) -> str:
    """What the `tesseract` command reads on the image, as a user would run it."""
    done = subprocess.run(
        ["tesseract", str(image), "stdout", "-l", lang],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
        check=True,
    )
    return done.stdout


def scanned_pages() -> Path:
    """The scanned OCR pages; a clear failure (never a skip) when they are not there."""
    if not (TESTDATA / "phototest.tif").is_file():
        pytest.fail(f"the OCR test pages are missing: expected {TESTDATA}/phototest.tif")
    return TESTDATA


# -- the node-side runtime ---------------------------------------------------------------------


@dataclass(frozen=True)
class OcrRuntime:
    """The venv the `ocr` playbook would make: python3 + pytesseract + pillow."""

    venv: Path

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python3"

    def draw(self, script: str, *args: str) -> None:
        """Run a Pillow drawing script with this venv's python."""
        done = subprocess.run(
            [str(self.python), "-c", script, *args], capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr


def build_runtime(base: Path) -> OcrRuntime:
    """Create (once) the OCR venv under `base`, readable by the fleet's user."""
    venv = base / "ocr-venv"
    runtime = OcrRuntime(venv)
    if (venv / ".complete").exists():
        return runtime
    if not Path(NODE_PYTHON).exists():
        raise RuntimeError(f"{NODE_PYTHON} is missing: the fleet's nodes need python3")
    steps = [
        [NODE_PYTHON, "-m", "venv", str(venv)],
        [str(runtime.python), "-m", "pip", "install", "-q", "pytesseract", "pillow"],
    ]
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(
                "cannot build the OCR runtime (python3-venv, pip and PyPI are needed, as for "
                f"the `ocr` playbook): {' '.join(step[:4])}: {done.stderr.strip()[-800:]}"
            )
    (venv / ".complete").write_text("")
    return runtime


@pytest.fixture(scope="session")
def ocr_runtime(fleet_session: FleetSession) -> OcrRuntime:
    """The OCR venv of this test session (a failure, never a skip, when it cannot be made)."""
    try:
        return build_runtime(fleet_session.base)
    except RuntimeError as exc:
        pytest.fail(str(exc))


def provide_runtime(fleet: Fleet, runtime: OcrRuntime) -> None:
    """Give every node <workdir>/venv, where the `ocr` playbook puts the runtime."""
    for node in fleet.nodes:
        link = Path(node.workdir) / "venv"
        if not link.exists():
            link.symlink_to(runtime.venv)


@pytest.fixture
def ocr_fleet(fleet: Fleet, ocr_runtime: OcrRuntime) -> Fleet:
    """The shared fleet with the OCR runtime on every node."""
    provide_runtime(fleet, ocr_runtime)
    return fleet


# -- images made here -----------------------------------------------------------------------

DRAW_LINES = """
import sys
from PIL import Image, ImageDraw, ImageFont
out, font_path, size, scale = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
lines = sys.argv[5:]
font = ImageFont.truetype(font_path, size)
step = int(size * 1.7)
width = max(int(font.getlength(line)) for line in lines) + 120
page = Image.new("L", (width, 100 + step * len(lines)), 255)
draw = ImageDraw.Draw(page)
for number, line in enumerate(lines):
    draw.text((60, 50 + step * number), line, font=font, fill=0)
if scale != 1:
    page = page.resize((int(page.width * scale), int(page.height * scale)), Image.BILINEAR)
page.save(out, dpi=(int(300 * scale),) * 2)
"""

SHRINK = """
import sys
from PIL import Image
source, out, scale = sys.argv[1], sys.argv[2], float(sys.argv[3])
page = Image.open(source).convert("L")
page = page.resize((int(page.width * scale), int(page.height * scale)), Image.BILINEAR)
page.save(out, dpi=(int(200 * scale),) * 2)
"""

MULTIPAGE = """
import sys
from PIL import Image
out, first, second = sys.argv[1:4]
pages = [Image.open(first), Image.open(second).convert("1")]
pages[0].save(out, save_all=True, append_images=pages[1:], dpi=(200, 200))
"""


def chinese_page(runtime: OcrRuntime, directory: Path) -> tuple[Path, str]:
    """A rendered page of Chinese (and one mixed line) and its truth."""
    path = directory / "chinese.png"
    runtime.draw(DRAW_LINES, str(path), CJK_FONT, "40", "1", *CHINESE_LINES)
    return path, "\n".join(CHINESE_LINES)


def results_of(home: Path, job_id: str) -> Path:
    return home / "results" / job_id


def submit_ocr(home: Path, *args: str) -> dict:
    result = run_cli(home, "job", "submit", "ocr", *args, "--on", "n*", "--wait", "--json")
    assert result.exit_status == 0, result.stderr + result.stdout
    document = result.json
    assert document["state"] == "done", document
    return document


# -- options and placement (no fleet) ---------------------------------------------------------


def test_ocr_options_get_defaults_and_bad_ones_are_refused() -> None:
    kind = get_kind("ocr")
    params: dict = {}
    kind.check(params)
    assert params == {
        "lang": "eng",
        "psm": 3,
        "formats": ["txt"],
        "preprocess": "auto",
        "rotate": "none",
        "dpi": None,
    }
    params = {"lang": "chi_sim+eng", "formats": "pdf,txt,pdf", "rotate": "AUTO", "psm": 6}
    kind.check(params)
    assert params["formats"] == ["pdf", "txt"] and params["rotate"] == "auto"
    for bad in (
        {"lang": "eng; rm -rf /"},
        {"psm": 0},
        {"formats": "docx"},
        {"preprocess": "maybe"},
        {"rotate": "45"},
        {"dpi": 10},
        {"op": "describe"},
        {"run": "cat {input}"},
    ):
        with pytest.raises(UsageError):
            kind.check(dict(bad))


def test_only_nodes_with_tesseract_and_every_language_are_eligible() -> None:
    kind = OcrKind()
    facts = {"tesseract": "5.3.0", "tesseract_langs": ["eng", "osd"]}
    assert kind.eligible({"lang": "eng"}, facts) is None
    assert kind.eligible({"lang": "eng", "rotate": "auto"}, facts) is None
    assert "chi_sim" in (kind.eligible({"lang": "chi_sim+eng"}, facts) or "")
    no_osd = {"tesseract": "5.3.0", "tesseract_langs": ["eng"]}
    assert "osd" in (kind.eligible({"lang": "eng", "rotate": "auto"}, no_osd) or "")
    assert kind.eligible({"lang": "eng"}, {"cores": 4}) == "tesseract is not installed"


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["a.png", "b.tif"], ["a", "b"]),
        (["a.png", "a.jpg"], ["a_png", "a_jpg"]),
        (["scan.tif", "scan-p2.png"], ["scan", "scan-p2_png"]),
        (["noext", ".hidden"], ["noext", ".hidden"]),
        (["a.png", "a.jpg", "a_png"], ["000000-a_png", "a_jpg", "000002-a_png"]),
    ],
)
def test_output_names_are_unique_across_the_job(names: list[str], expected: list[str]) -> None:
    bases = output_bases(names)
    assert [bases[n] for n in names] == expected
    assert len(set(bases.values())) == len(names)


def test_task_runs_one_thread_per_tesseract_in_the_playbook_venv_and_ships_no_remote_input(
    tmp_path: Path,
) -> None:
    image = tmp_path / "page.png"
    image.write_bytes(b"not really a png")
    params: dict = {"rotate": "auto"}
    kind = get_kind("ocr")
    kind.check(params)
    params["inputs"] = [
        {"name": "page.png", "path": str(image), "size": 16},
        {"name": "n01__far.png", "remote": "/data/far.png", "node": "n01", "size": 9},
    ]
    payload = kind.payload(params, params["inputs"])
    assert "export OMP_THREAD_LIMIT=1" in payload.run_sh
    assert "../../venv/bin/python3" in payload.run_sh
    assert list(payload.files) == ["page.png"]  # the remote one is not uploaded
    task = json.loads(payload.runners["ocr_task.json"])
    assert [i["path"] for i in task["inputs"]] == ["in/page.png", "/data/far.png"]
    assert task["rotate"] == "auto" and task["lang"] == "eng"
    assert b"import edgectl" not in payload.runners["ocr_runner.py"]


# -- the runner, run here (preprocessing measured; a node without the libraries) -------------


def run_runner(runtime: OcrRuntime, directory: Path, inputs: list[Path], **options) -> list[dict]:
    """Run the node-side runner in a task directory here; its records."""
    task = directory / "t-local"
    task.mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "edgectl/jobs/runners/ocr_runner.py", task)
    config = {"lang": "eng", "psm": 3, "formats": ["txt"], "preprocess": "auto"}
    config.update(rotate="none", dpi=None, **options)
    config["inputs"] = [{"name": p.name, "path": str(p), "base": p.stem} for p in inputs]
    (task / "ocr_task.json").write_text(json.dumps(config))
    done = subprocess.run(
        [str(runtime.python), "ocr_runner.py", "ocr_task.json"],
        cwd=task,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_THREAD_LIMIT": "1"},
    )
    assert done.returncode == 0, done.stderr
    lines = (task / "out" / "t-local.ocr.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for record in records:
        assert record["error"] is None, record
        record["text"] = (task / "out" / f"{Path(record['path']).stem}.txt").read_text()
    return records


@pytest.mark.fleet  # the OCR runtime lives in the fleet session's directory
def test_preprocessing_measured_auto_helps_small_text_and_never_hurts(
    ocr_runtime: OcrRuntime, tmp_path: Path
) -> None:
    """CER with preprocessing off, auto and on, on the test pages and on small-text copies."""
    data = scanned_pages()
    truth = (data / "phototest.gold.txt").read_text()
    pages = [data / "phototest.tif", data / "phototest-rotated-R.png"]
    for scale in ("0.35", "0.45"):
        small = tmp_path / f"phototest-x{scale}.png"
        ocr_runtime.draw(SHRINK, str(data / "phototest.tif"), str(small), scale)
        pages.append(small)
    chinese, chinese_truth = chinese_page(ocr_runtime, tmp_path)
    small_chinese = tmp_path / "chinese-x0.35.png"
    ocr_runtime.draw(SHRINK, str(chinese), str(small_chinese), "0.35")
    measured: dict[str, dict[str, float]] = {}
    for mode in ("off", "auto", "on"):
        latin = run_runner(ocr_runtime, tmp_path / f"latin-{mode}", pages, preprocess=mode)
        cjk = run_runner(
            ocr_runtime,
            tmp_path / f"cjk-{mode}",
            [chinese, small_chinese],
            preprocess=mode,
            lang="chi_sim+eng",
        )
        for record in latin:
            measured.setdefault(record["image"], {})[mode] = cer(record["text"], truth)
        for record in cjk:
            measured.setdefault(record["image"], {})[mode] = cer(
                record["text"], chinese_truth, no_space
            )
    print("\nCER by --preprocess mode")
    for image, by_mode in measured.items():
        print(f"  {image:28s} " + "  ".join(f"{m}={v:.4f}" for m, v in by_mode.items()))
    for image, by_mode in measured.items():
        assert by_mode["auto"] <= by_mode["off"], image  # the default never hurts
    # On the clean test pages auto keeps tesseract's own result: nothing to improve.
    assert measured["phototest.tif"]["auto"] == measured["phototest.tif"]["off"] == 0
    # Small text is where it pays: upscaled, it reads (better than) as well as at full size.
    assert measured["phototest-x0.35.png"]["off"] > 0.01
    assert measured["phototest-x0.35.png"]["auto"] < measured["phototest-x0.35.png"]["off"]
    assert measured["chinese-x0.35.png"]["auto"] < measured["chinese-x0.35.png"]["off"]


CONVERT = """
import sys
from PIL import Image
source, out = sys.argv[1], sys.argv[2]
page = Image.open(source).convert("L")
options = {"quality": 95} if out.endswith(".jpg") else {"lossless": True} if out.endswith(".webp") else {}
page.save(out, dpi=(200, 200), **options)
"""


@pytest.mark.fleet  # the OCR runtime lives in the fleet session's directory
def test_png_jpeg_bmp_and_webp_pages_all_read(ocr_runtime: OcrRuntime, tmp_path: Path) -> None:
    data = scanned_pages()
    truth = (data / "phototest.gold.txt").read_text()
    pages = []
    for suffix in ("png", "jpg", "bmp", "webp"):
        pages.append(tmp_path / f"phototest-{suffix}.{suffix}")
        ocr_runtime.draw(CONVERT, str(data / "phototest.tif"), str(pages[-1]))
    records = run_runner(ocr_runtime, tmp_path / "formats", pages, preprocess="off")
    assert [r["image"] for r in records] == [p.name for p in pages]
    for record in records:
        assert cer(record["text"], truth) <= 0.01, record["image"]


def test_runner_without_pytesseract_fails_the_task_with_a_clear_reason(tmp_path: Path) -> None:
    task = tmp_path / "t-bare"
    task.mkdir()
    shutil.copy(Path(__file__).parents[1] / "edgectl/jobs/runners/ocr_runner.py", task)
    config = {"lang": "eng", "psm": 3, "formats": ["txt"], "preprocess": "off", "rotate": "none"}
    (task / "ocr_task.json").write_text(json.dumps({**config, "inputs": []}))
    # -S: no site-packages, as on a node where the `ocr` playbook has not run.
    done = subprocess.run(
        [sys.executable, "-S", "ocr_runner.py", "ocr_task.json"],
        cwd=task,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 3
    assert "pytesseract is not installed" in done.stderr and "ocr` playbook" in done.stderr


# -- through the fleet ------------------------------------------------------------------------


@pytest.mark.fleet
def test_phototest_through_the_fleet_reads_exactly_in_every_format(
    ocr_fleet: Fleet, ocr_runtime: OcrRuntime, tmp_path: Path
) -> None:
    data = scanned_pages()
    home = make_home(tmp_path, ocr_fleet)
    truth = (data / "phototest.gold.txt").read_text()
    chinese, _ = chinese_page(ocr_runtime, tmp_path)
    multipage = tmp_path / "two-pages.tif"
    ocr_runtime.draw(MULTIPAGE, str(multipage), str(data / "phototest.tif"), str(chinese))
    document = submit_ocr(
        home, str(data / "phototest.tif"), str(multipage), "--format", "txt,tsv,hocr,pdf"
    )
    results = results_of(home, document["id"])
    text = (results / "phototest.txt").read_text()
    measured = cer(text, truth)
    command = cer(tesseract_cli(data / "phototest.tif", "eng"), truth)
    print(f"\nphototest.tif  edgectl CER {measured:.4f}  tesseract CLI CER {command:.4f}")
    assert measured == 0.0
    assert measured <= command
    assert (results / "phototest.tsv").read_text().startswith("level\tpage_num")
    assert "ocr_page" in (results / "phototest.hocr").read_text()
    assert (results / "phototest.pdf").read_bytes().startswith(b"%PDF")
    # A multi-page TIFF: one set of outputs per page, -p2 for the second.
    assert cer((results / "two-pages.txt").read_text(), truth) == 0.0
    for extension in ("txt", "tsv", "hocr", "pdf"):
        assert (results / f"two-pages-p2.{extension}").is_file()
    # The per-page records: through `job results --json` and as a table.
    listed = run_cli(home, "job", "results", document["id"], "--json")
    assert listed.exit_status == 0, listed.stderr
    pages = {(p["image"], p["page"]): p for p in listed.json["pages"]}
    assert set(pages) == {("phototest.tif", 1), ("two-pages.tif", 1), ("two-pages.tif", 2)}
    first = pages[("phototest.tif", 1)]
    assert first["chars"] == len(no_space(truth)) and first["mean_conf"] > 90
    assert first["rotation"] == 0 and first["error"] is None
    assert first["node"] in {n.name for n in ocr_fleet.nodes} and first["finished"] > 0
    assert pages[("two-pages.tif", 2)]["pages"] == 2
    table = run_cli(home, "job", "results", document["id"])
    assert table.exit_status == 0
    assert "MEAN CONF" in table.stdout and "phototest.tif" in table.stdout


@pytest.mark.fleet
def test_rotated_copies_with_rotate_auto_are_turned_upright(
    ocr_fleet: Fleet, tmp_path: Path
) -> None:
    data = scanned_pages()
    home = make_home(tmp_path, ocr_fleet)
    truth = (data / "phototest.gold.txt").read_text()
    rotated = {"phototest-rotated-180.png": 180, "phototest-rotated-R.png": 270}
    document = submit_ocr(home, *(str(data / name) for name in rotated), "--rotate", "auto")
    results = results_of(home, document["id"])
    pages = {
        p["image"]: p
        for p in run_cli(home, "job", "results", document["id"], "--json").json["pages"]
    }
    print()
    for name, turn in rotated.items():
        measured = cer((results / f"{Path(name).stem}.txt").read_text(), truth)
        command = cer(tesseract_cli(data / name, "eng"), truth)
        print(f"{name}  edgectl CER {measured:.4f}  tesseract CLI CER {command:.4f}")
        assert measured <= 0.02
        assert measured <= command
        assert pages[name]["rotation"] == turn  # degrees clockwise, from the osd data


@pytest.mark.fleet
def test_chinese_page_with_chi_sim_and_eng(
    ocr_fleet: Fleet, ocr_runtime: OcrRuntime, tmp_path: Path
) -> None:
    home = make_home(tmp_path, ocr_fleet)
    image, truth = chinese_page(ocr_runtime, tmp_path)
    document = submit_ocr(home, str(image), "--lang", "chi_sim+eng")
    text = (results_of(home, document["id"]) / "chinese.txt").read_text()
    measured = cer(text, truth, no_space)
    command = cer(tesseract_cli(image, "chi_sim+eng"), truth, no_space)
    print(f"\nchinese.png  edgectl CER {measured:.4f}  tesseract CLI CER {command:.4f}")
    assert measured <= 0.05
    assert measured <= command


@pytest.mark.fleet
def test_nodes_lacking_a_language_get_no_task_and_say_why(ocr_fleet: Fleet, tmp_path: Path) -> None:
    data = scanned_pages()
    home = make_home(tmp_path, ocr_fleet)
    jobs = Jobs(EdgeFleet(home))
    job = jobs.submit("ocr", [str(data / "phototest.tif")], selector="n*", params={"lang": "deu"})
    jobs.run(job.id)
    document = jobs.show(job.id)
    assert document["state"] == "failed"
    assert all(t["node"] is None for t in document["tasks"])  # never placed
    events = [e["text"] for e in jobs.logs(job.id)]
    for node in ocr_fleet.nodes:
        assert (
            f"node {node.name} cannot run ocr tasks: tesseract lacks language data: deu" in events
        )


@pytest.mark.fleet
def test_shipped_sample_pages_read_back_as_text_through_last(
    ocr_fleet: Fleet, tmp_path: Path
) -> None:
    home = make_home(tmp_path, ocr_fleet)
    assert run_cli(home, "job", "results", "last").exit_status == ExitStatus.NOT_FOUND
    document = submit_ocr(home, "--samples", "--lang", "chi_sim+eng")
    assert document["inputs"] == 3
    shown = run_cli(home, "job", "results", "last", "--text")
    assert shown.exit_status == 0, shown.stderr
    headings = [line for line in shown.stdout.splitlines() if line.startswith("== ")]
    assert [h.split()[1] for h in headings] == [
        "sample-en-1.txt",
        "sample-en-2.txt",
        "sample-zh-1.txt",
    ]
    assert "delivery notes" in shown.stdout
    assert "边缘设备" in shown.stdout
    assert str(results_of(home, document["id"])) in shown.stderr
