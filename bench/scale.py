"""Scale: a 100,000-image project, and many projects on one server (issue 28).

Usage: ``python bench/scale.py --n 100000`` (the images part, at 1,000, 10,000 and ``--n``),
``python bench/scale.py --projects 1000`` (the projects part); both with ``--n ... --projects``;
``--reuse`` times again everything after the embedding on the projects of an earlier run.

**Images.** ``bench/scale_data.py`` renders ``--n`` demo casings at 96 px on every core
(planted wrong labels, 20 % unlabelled, three slice fields), kept in ``--images`` between
runs. At each size a fresh project imports the first n rows of ``labels.csv``, then each
step is timed with its peak resident memory (sampled every 10 ms), beside a baseline in the
same run: the same job done directly with FiftyOne, pandas, NumPy, cleanlab or
scikit-learn where one exists. The steps: import (baseline: Pillow open + verify of every
file), open, the labelling grid's first page, a filter change and a relabel round trip,
embedding (once; ``--image-size``, 64 px by default, with the mirrored images for label
issues), a probe version, label issues, near-duplicates, outliers,
``suggest_labels(strategy="cover")``, the embedding map, the datasheet, a drift check of
500 images against the version's training images (up to 10,000 of them). Printed: a table
of seconds and peak MB per step and size, and each step's growth exponent from 10,000 to
``--n`` (1 is linear; n log n from 10k to 100k is 1.2).

Creates one demo project (50 images) and empty projects beside it, up to 10, 100 and
``--projects``; at each count it times, median of repeats:

- ``wb.Project.open`` of the demo project, beside the baseline ``fo.load_dataset`` of the
  same dataset in the same run;
- ``wb.list_projects()`` and ``wb.list_projects(search=...)``;
- the landing page's project list (``project_page``: first page, a search), which reads only
  the page's project folders.

Goal: opening a project does not get slower with the number of projects (growth exponent
between 100 and ``--projects`` near 0).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from neu import machine_line, throwaway_home


def median_ms(call: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def part_projects(most: int, repeats: int = 15) -> None:
    import fiftyone as fo

    import workbench as wb
    from workbench.demo import create_demo_project
    from workbench.deploy.landing import project_page

    demo = create_demo_project("scale-demo", n_per_class=10, size=64, overwrite=True)
    counts = [c for c in (10, 100, 1000, 10000) if c < most] + [most]
    made, rows = 1, []
    started = time.perf_counter()
    for count in counts:
        while made < count:
            wb.Project.create(f"scale-{made:05d}")
            made += 1
        rows.append({
            "projects": count,
            "open_ms": median_ms(lambda: wb.Project.open(demo.name), repeats),
            "fo_load_ms (baseline)": median_ms(lambda: fo.load_dataset(demo.name), repeats),
            "list_ms": median_ms(wb.list_projects, 5),
            "list_search_ms": median_ms(lambda: wb.list_projects(search="00042"), 5),
            "landing_page_ms": median_ms(lambda: project_page(demo.name), 5),
            "landing_search_ms": median_ms(lambda: project_page(search="0004"), 5),
        })
        print(rows[-1], flush=True)
    print(f"\ncreated {made} projects in {time.perf_counter() - started:.0f} s")
    import pandas as pd

    table = pd.DataFrame(rows)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.1f}"))
    if len(rows) >= 2 and rows[-2]["projects"] >= 100:
        low, high = rows[-2], rows[-1]
        for column in ("open_ms", "fo_load_ms (baseline)", "list_ms", "landing_page_ms"):
            exponent = math.log(high[column] / low[column]) / math.log(
                high["projects"] / low["projects"])
            print(f"growth exponent of {column} from {low['projects']} to "
                  f"{high['projects']} projects: {exponent:+.2f}")
        print(f"open / fo.load_dataset at {high['projects']} projects: "
              f"{high['open_ms'] / high['fo_load_ms (baseline)']:.2f}x")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=0, help="largest project, in images")
    parser.add_argument("--sizes", default="1000,10000",
                        help="smaller sizes measured before --n (comma separated)")
    parser.add_argument("--images", default="/tmp/loupe-scale-images",
                        help="where the generated images are kept between runs")
    parser.add_argument("--reuse", action="store_true",
                        help="keep a scale-N project of an earlier run (its import, "
                             "embeddings and probe version) and time the other steps again")
    parser.add_argument("--image-size", type=int, default=64,
                        help="embedding side in pixels (the analyses' and the probe's)")
    parser.add_argument("--projects", type=int, default=0, help="the projects part, up to")
    args = parser.parse_args(argv)
    if not args.n and not args.projects:
        parser.error("give --n (images) and/or --projects")
    if not os.environ.get("FIFTYONE_DATABASE_URI"):
        throwaway_home("loupe-bench-scale-")
    print(machine_line(sys.argv))
    if args.n:
        from scale_images import part_images

        sizes = sorted({int(v) for v in args.sizes.split(",") if v and int(v) < args.n}
                       | {args.n})
        part_images(sizes, Path(args.images), image_size=args.image_size,
                    reuse=args.reuse)
    if args.projects:
        part_projects(args.projects)


if __name__ == "__main__":
    main(sys.argv[1:])
