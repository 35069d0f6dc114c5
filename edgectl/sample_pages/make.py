"""Render the sample pages again (needs Pillow and the two fonts): `python -m edgectl.sample_pages.make`."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

LATIN_FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
CJK_FONT = "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"
DPI = 200

PAGES: dict[str, tuple[str, list[str]]] = {
    "sample-en-1.png": (
        LATIN_FONT,
        [
            "Field report from the north warehouse",
            "",
            "Every evening the cameras at the loading dock",
            "photograph the delivery notes that arrive with",
            "each pallet. The pictures stay on the small",
            "computers beside the doors, and the text is read",
            "there, so that only a few kilobytes of words",
            "travel over the slow line to the main office.",
        ],
    ),
    "sample-en-2.png": (
        LATIN_FONT,
        [
            "Checklist for a new edge device",
            "",
            "1. Write the serial number on the case.",
            "2. Add the device to the inventory with its address.",
            "3. Trust its host key once, and only once.",
            "4. Install the OCR runtime with the playbook.",
            "5. Send a test page and compare the text.",
        ],
    ),
    "sample-zh-1.png": (
        CJK_FONT,
        [
            "边缘设备上的文字识别",
            "",
            "仓库门口的小电脑每天晚上拍下送货单。",
            "图片留在本地，文字在设备上识别出来，",
            "只有很少的数据通过网络送回总部。",
        ],
    ),
}


def render(font_path: str, lines: list[str], size: int = 30) -> Any:
    """A white page with the lines in black, one bit per pixel."""
    image_module: Any = importlib.import_module("PIL.Image")
    draw_module: Any = importlib.import_module("PIL.ImageDraw")
    font_module: Any = importlib.import_module("PIL.ImageFont")
    font = font_module.truetype(font_path, size)
    step = int(size * 1.6)
    page = image_module.new("L", (1000, 80 + step * len(lines) + 40), 255)
    draw = draw_module.Draw(page)
    for number, line in enumerate(lines):
        draw.text((70, 70 + step * number), line, font=font, fill=0)
    return page.point(lambda v: 255 if v > 140 else 0).convert("1")


def main() -> int:
    """Write every page beside this file."""
    here = Path(__file__).parent
    for name, (font, lines) in PAGES.items():
        render(font, lines).save(here / name, dpi=(DPI, DPI), optimize=True)
        print(here / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
