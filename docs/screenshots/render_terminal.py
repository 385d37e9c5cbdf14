"""Render tmux captures (plain text, 80 columns) as terminal-like PNGs beside them: FILE.txt → FILE.png.

Usage: python render_terminal.py FILE.txt [...]   (needs Pillow and a monospace TTF, e.g. DejaVu Sans Mono)
"""

import sys
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

FONTS = ("/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf", "DejaVuSansMono.ttf")
COLUMNS, SIZE, PAD = 80, 15, 12
BACK, INK, FRAME = (30, 30, 36), (225, 225, 215), (90, 90, 100)


def font() -> ImageFont.FreeTypeFont:
    for name in FONTS:
        try:
            return ImageFont.truetype(name, SIZE)
        except OSError:
            continue
    raise SystemExit("no monospace font found: install fonts-dejavu-core")


def render(txt: Path) -> Path:
    f = font()
    lines = txt.read_text().rstrip("\n").split("\n")
    cell_w, line_h = f.getlength("M"), int(SIZE * 1.35)
    width, height = int(cell_w * COLUMNS) + 2 * PAD, line_h * max(len(lines), 1) + 2 * PAD
    img = Image.new("RGB", (width, height), BACK)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, width - 1, height - 1], outline=FRAME)
    for n, line in enumerate(lines):
        draw.text((PAD, PAD + n * line_h), line, font=f, fill=INK)
    out = txt.with_suffix(".png")
    img.save(out)
    return out


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        print(render(Path(arg)))
