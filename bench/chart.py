"""A horizontal bar chart as SVG, for the README: drawn by a bench from its own run."""

from html import escape
from pathlib import Path

WIDTH, LABELS, BAR, GAP = 720, 260, 22, 10


def bar_chart(title: str, rows: list[tuple[str, float]], path: Path, unit: str = "s") -> None:
    """One bar a row, labelled, scaled to the largest value; the value written after it."""
    largest = max(value for _, value in rows) or 1.0
    room = WIDTH - LABELS - 90
    height = 40 + len(rows) * (BAR + GAP)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'font-family="sans-serif" font-size="13">',
             f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
             f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(title)}</text>']
    for number, (label, value) in enumerate(rows):
        top = 36 + number * (BAR + GAP)
        length = max(1.0, room * value / largest)
        colour = "#2f6fb0" if label.startswith("pkgfs") else "#9a9a9a"
        parts += [f'<text x="{LABELS - 8}" y="{top + 16}" text-anchor="end">{escape(label)}</text>',
                  f'<rect x="{LABELS}" y="{top}" width="{length:.1f}" height="{BAR}" '
                  f'fill="{colour}"/>',
                  f'<text x="{LABELS + length + 6:.1f}" y="{top + 16}">{value:.2f} {unit}</text>']
    parts.append("</svg>\n")
    path.write_text("\n".join(parts))
