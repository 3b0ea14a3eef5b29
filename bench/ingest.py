"""Ingest speed: Loupe's import of the NEU set against a plain Pillow open+verify loop.

Usage: ``python bench/ingest.py [--data ../shared/data/neu_surface_defect] [--repeats 3]``

Prints images/s for the baseline (a loop that only opens and verifies each file with Pillow)
and for ``Project.import_folder`` (read, hash, full decode, duplicate check, insert into
FiftyOne), both measured in this process, and their ratio (goal: >= 0.5). Runs against a
throwaway database unless ``FIFTYONE_DATABASE_DIR``/``FIFTYONE_DATABASE_URI`` is set. The
database is started before timing, so its start-up (3-4 s) is not counted.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "neu_surface_defect"
EXCLUDE = ["annotations", "*.csv", "*.md"]


def image_paths(data: Path) -> list[Path]:
    return sorted(p for p in data.glob("*/*.jpg") if p.parent.name != "annotations")


def baseline_loop(paths: list[Path]) -> float:
    """Seconds for the plain loop: open and verify every file with Pillow."""
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as image:
            image.verify()
    return time.perf_counter() - start


def loupe_import(data: Path, name: str) -> tuple[float, object]:
    """Seconds for a full import into a fresh project, and its report."""
    import workbench as wb

    project = wb.Project.create(name, overwrite=True)
    start = time.perf_counter()
    report = project.import_folder(data, exclude=EXCLUDE, progress=False)
    return time.perf_counter() - start, report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"data folder not found: {args.data} (see ../shared/data/SOURCE.md)")
    if not (os.environ.get("FIFTYONE_DATABASE_DIR") or os.environ.get("FIFTYONE_DATABASE_URI")):
        scratch = Path(tempfile.mkdtemp(prefix="loupe-bench-"))
        os.environ["FIFTYONE_DATABASE_DIR"] = str(scratch / "db")
        os.environ["LOUPE_HOME"] = str(scratch / "home")

    import workbench as wb

    wb.list_projects()  # start the database before any timing
    paths = image_paths(args.data)
    baseline_loop(paths)  # warm the page cache for both contestants
    base, ours, reimport = [], [], []
    report = None
    for _ in range(args.repeats):
        base.append(baseline_loop(paths))
        seconds, report = loupe_import(args.data, "bench-ingest")
        ours.append(seconds)
        project = wb.Project.open("bench-ingest")
        start = time.perf_counter()
        project.import_folder(args.data, exclude=EXCLUDE, progress=False)
        reimport.append(time.perf_counter() - start)
    wb.delete_project("bench-ingest")

    n = len(paths)
    base_rate = n / statistics.median(base)
    our_rate = n / statistics.median(ours)
    print(f"images: {n} ({args.data}); repeats: {args.repeats}; cores: {os.cpu_count()}")
    print(f"report: {report.summary()}")
    print(f"{'contestant':<44}{'median s':>10}{'images/s':>12}")
    print(f"{'baseline: Pillow open + verify loop':<44}{statistics.median(base):>10.2f}"
          f"{base_rate:>12.0f}")
    print(f"{'loupe import_folder (new project)':<44}{statistics.median(ours):>10.2f}"
          f"{our_rate:>12.0f}")
    print(f"{'loupe re-import (all duplicates)':<44}{statistics.median(reimport):>10.2f}"
          f"{n / statistics.median(reimport):>12.0f}")
    print(f"ratio import/baseline: {our_rate / base_rate:.2f} (goal >= 0.5)")


if __name__ == "__main__":
    main()
