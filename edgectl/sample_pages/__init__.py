"""Sample pages for trying the `ocr` kind: two English pages and one in Simplified Chinese.

They were rendered with Pillow (`python -m edgectl.sample_pages.make`; DejaVu Sans and
WenQuanYi Zen Hei) at 200 dpi, black on white, one bit per pixel. Try them with:

    edgectl job submit ocr --samples --lang chi_sim+eng --wait
    edgectl job results last --text
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

NAMES = ("sample-en-1.png", "sample-en-2.png", "sample-zh-1.png")


def directory() -> Path:
    """The folder holding the sample pages (inside the installed package)."""
    return Path(str(resources.files("edgectl.sample_pages")))


def paths() -> list[Path]:
    """The sample pages, English first."""
    return [directory() / name for name in NAMES]
