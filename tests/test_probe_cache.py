"""The probe script's cache of static facts, run with the real sh and the real tesseract.

The script keeps os, arch, cores, python3 and tesseract (version and languages) in
`<workdir>/.edgectl-facts`; these tests pin down when it is used and when it must not be:
a language added to the tessdata directory, another tesseract on PATH, another
TESSDATA_PREFIX, a torn cache file, and `full` mode all read the static facts afresh.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from edgectl.facts.parse import parse_probe_output
from edgectl.facts.script import PROBE_SCRIPT
from tests.fleet import cannot_run_here

TESSERACT = shutil.which("tesseract")


@pytest.fixture(autouse=True)
def _tesseract() -> None:
    if TESSERACT is None:
        cannot_run_here("needs tesseract (tests/run.sh installs it)")


CACHE = ".edgectl-facts"


def system_tessdata() -> Path:
    """The directory this machine's tesseract reads its languages from."""
    assert TESSERACT is not None
    header = subprocess.run(
        [TESSERACT, "--list-langs"], capture_output=True, text=True, timeout=30, check=True
    ).stdout.splitlines()[0]
    return Path(header.split('"')[1])


@pytest.fixture
def tessdata(tmp_path: Path) -> Path:
    """A tessdata directory of our own holding English only (links to the real data)."""
    directory = tmp_path / "tessdata"
    directory.mkdir()
    (directory / "eng.traineddata").symlink_to(system_tessdata() / "eng.traineddata")
    return directory


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """The node's workdir, where the cache lives."""
    directory = tmp_path / "work"
    directory.mkdir()
    return directory


def probe(
    workdir: Path, tessdata: Path, mode: str = "cached", path: str | None = None
) -> tuple[dict[str, Any], str]:
    """Run the probe script as edgectl does; return its facts and where static facts came from."""
    env = {**os.environ, "TESSDATA_PREFIX": str(tessdata)}
    if path is not None:
        env["PATH"] = path
    done = subprocess.run(
        ["sh", "-c", PROBE_SCRIPT, "edgectl-probe", str(workdir), mode],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    source = [line for line in done.stdout.splitlines() if line.startswith("static_facts=")]
    assert len(source) == 1, done.stdout
    return parse_probe_output(done.stdout, 1.0, 1.0), source[0].split("=", 1)[1]


def test_static_facts_are_cached_in_the_workdir_and_reused(workdir: Path, tessdata: Path) -> None:
    first, source = probe(workdir, tessdata)
    assert source == "probed"
    assert (workdir / CACHE).is_file()
    second, source = probe(workdir, tessdata)
    assert source == "cached"
    for name in ("os", "arch", "cores", "python3", "tesseract", "tesseract_langs", "hostname"):
        assert second[name] == first[name], name
    assert second["tesseract_langs"] == ["eng"]
    assert second["load1"] is not None and second["disk_free"] is not None
    assert second["mem_available"] is not None and second["uptime_s"] is not None
    assert list(workdir.iterdir()) == [workdir / CACHE]  # no temp files left behind


def test_a_language_added_to_tessdata_shows_at_the_next_probe(
    workdir: Path, tessdata: Path
) -> None:
    probe(workdir, tessdata)
    (tessdata / "osd.traineddata").symlink_to(system_tessdata() / "osd.traineddata")
    facts, source = probe(workdir, tessdata)
    assert source == "probed"
    assert facts["tesseract_langs"] == ["eng", "osd"]
    assert probe(workdir, tessdata)[1] == "cached"


def test_full_mode_reads_static_facts_afresh_and_renews_the_cache(
    workdir: Path, tessdata: Path
) -> None:
    probe(workdir, tessdata)
    cache = workdir / CACHE
    # A stale cache that every validity check passes: only `full` can notice.
    stat = cache.stat()
    cache.write_text(cache.read_text().replace("tesseract_lang=eng\n", "tesseract_lang=xyz\n"))
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    stale, source = probe(workdir, tessdata)
    assert (source, stale["tesseract_langs"]) == ("cached", ["xyz"])
    fresh, source = probe(workdir, tessdata, "full")
    assert (source, fresh["tesseract_langs"]) == ("probed", ["eng"])
    assert probe(workdir, tessdata)[0]["tesseract_langs"] == ["eng"]


def test_another_tesseract_or_tessdata_prefix_ends_the_cache(
    tmp_path: Path, workdir: Path, tessdata: Path
) -> None:
    probe(workdir, tessdata)
    # Another tesseract earlier on PATH (here the same binary under another path).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    assert TESSERACT is not None
    (bin_dir / "tesseract").symlink_to(TESSERACT)
    path = f"{bin_dir}:{os.environ['PATH']}"
    assert probe(workdir, tessdata, path=path)[1] == "probed"
    assert probe(workdir, tessdata, path=path)[1] == "cached"
    # Another tessdata directory.
    other = tmp_path / "other-tessdata"
    shutil.copytree(tessdata, other, symlinks=True)
    facts, source = probe(workdir, other, path=path)
    assert source == "probed" and facts["tesseract_langs"] == ["eng"]


def test_a_torn_cache_file_is_not_used(workdir: Path, tessdata: Path) -> None:
    probe(workdir, tessdata)
    cache = workdir / CACHE
    lines = cache.read_text().splitlines(keepends=True)
    stat = cache.stat()
    cache.write_text("".join(line for line in lines if line != "cache_end=1\n"))
    os.utime(cache, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    facts, source = probe(workdir, tessdata)
    assert source == "probed" and facts["tesseract_langs"] == ["eng"]
    assert cache.read_text().endswith("cache_end=1\n")


def test_no_cache_without_an_existing_workdir(tmp_path: Path, tessdata: Path) -> None:
    missing = tmp_path / "not" / "yet"
    for _ in range(2):
        facts, source = probe(missing, tessdata)
        assert source == "probed"
        assert facts["disk_free"] is not None  # measured on the nearest existing parent
    assert list(tmp_path.iterdir()) == [tessdata]
