"""Draw docs/img/architecture.svg from the import graph: one band per layer of the
import-linter contract in pyproject.toml, the modules of each package in its box, and the
number of imports from each box to the boxes below. Run: ``make architecture``."""

from __future__ import annotations

import html
import tomllib
from collections import Counter
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img" / "architecture.svg"
BOX_W, BOX_GAP, BAND_H, BAND_GAP, LINE = 250, 24, 112, 40, 13


def layers() -> list[list[str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    contract = next(c for c in config["contracts"] if c["type"] == "layers")
    return [[part.strip() for part in layer.split("|")] for layer in contract["layers"]]


def owner(module: str, boxes: list[str]) -> str | None:
    return next((b for b in sorted(boxes, key=len, reverse=True)
                 if module == b or module.startswith(b + ".")), None)


def draw() -> str:
    graph = grimp.build_graph("workbench", cache_dir=None, exclude_type_checking_imports=True)
    bands = layers()
    boxes = [b for band in bands for b in band]
    edges: Counter[tuple[str, str]] = Counter()
    for module in graph.modules:
        here = owner(module, boxes)
        for imported in graph.find_modules_directly_imported_by(module):
            there = owner(imported, boxes)
            if here and there and here != there:
                edges[(here, there)] += 1
    width = max(len(band) for band in bands) * (BOX_W + BOX_GAP) + BOX_GAP
    height = len(bands) * (BAND_H + BAND_GAP) + BAND_GAP
    where: dict[str, tuple[float, float]] = {}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
             '<defs><marker id="a" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
             'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#667"/>'
             '</marker></defs>', f'<rect width="{width}" height="{height}" fill="#fff"/>']
    for row, band in enumerate(bands):
        y = BAND_GAP + row * (BAND_H + BAND_GAP)
        x0 = (width - len(band) * (BOX_W + BOX_GAP) + BOX_GAP) / 2
        for col, box in enumerate(band):
            x = x0 + col * (BOX_W + BOX_GAP)
            where[box] = (x + BOX_W / 2, y)
            children = sorted({m[len(box) + 1:].split(".")[0] for m in graph.modules
                               if m.startswith(box + ".")} - {"__init__"})
            parts.append(f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BAND_H}" rx="8" '
                         'fill="#eef3fb" stroke="#5577aa"/>')
            parts.append(f'<text x="{x + 10}" y="{y + 18}" font-size="13" font-weight="bold">'
                         f'{html.escape(box)}</text>')
            text = ", ".join(children) or "(one module)"
            lines, line = [], ""
            for word in text.split(" "):
                if len(line) + len(word) > 44:
                    lines.append(line)
                    line = ""
                line += word + " "
            lines.append(line)
            for i, chunk in enumerate(lines[:6]):
                parts.append(f'<text x="{x + 10}" y="{y + 36 + i * LINE}" fill="#334">'
                             f'{html.escape(chunk.strip())}</text>')
    for box, (x, y) in where.items():
        uses = sorted(((t.removeprefix("workbench."), n) for (src, t), n in edges.items()
                       if src == box and where[t][1] > y), key=lambda item: -item[1])
        label = "imports " + ", ".join(f"{t} {n}" for t, n in uses) if uses else "imports none"
        cut = label.rfind(", ", 0, 46) if len(label) > 46 else -1
        rows = [label] if cut < 0 else [label[:cut + 1], label[cut + 2:]]
        for i, text in enumerate(reversed(rows)):
            parts.append(f'<text x="{x - BOX_W / 2 + 10}" y="{y + BAND_H - 10 - i * LINE}" '
                         f'fill="#557" font-style="italic">{html.escape(text)}</text>')
    for (source, target), count in sorted(edges.items()):
        (x1, y1), (x2, y2) = where[source], where[target]
        if y2 < y1:  # upward: only the imports the contract lists as ignored
            parts.append(f'<line x1="{x1 + 30}" y1="{y1}" x2="{x2 + 30}" y2="{y2 + BAND_H}" '
                         'stroke="#c33" stroke-dasharray="5,4" marker-end="url(#a)"/>')
            parts.append(f'<text x="{(x1 + x2) / 2 + 36}" y="{(y1 + y2 + BAND_H) / 2}" '
                         f'fill="#c33">{count} ignored upward</text>')
    arrow_x = 12
    parts.append(f'<line x1="{arrow_x}" y1="{BAND_GAP}" x2="{arrow_x}" y2="{height - BAND_GAP}" '
                 'stroke="#667" stroke-width="2" marker-end="url(#a)"/>')
    parts.append(f'<text x="{arrow_x + 6}" y="{BAND_GAP - 12}" fill="#334">imports point '
                 'down only (lint-imports, make test)</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


if __name__ == "__main__":
    OUT.write_text(draw())
    print(f"wrote {OUT}")
