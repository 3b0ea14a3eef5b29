"""Small classes said out loud: class_report, label_issues, data_advice and the report
dashboard's table give the count and the interval instead of a bare figure (issue 27)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from PIL import Image

import workbench as wb
from workbench.demo.render import render_casing

COUNTS = {"ok": 24, "scratch": 24, "dent": 4}


def test_a_class_of_four_images_is_reported_as_too_few_to_judge(project, tmp_path):
    rng = np.random.default_rng(3)
    rows = []
    for label, n in COUNTS.items():
        for i in range(n):
            path = tmp_path / f"{label}_{i}.png"
            Image.fromarray(render_casing(rng, label, size=64)).save(path)
            rows.append((str(path), label))
    dark = tmp_path / "ok_dark.png"  # one good part photographed with the light off
    Image.fromarray((render_casing(rng, "ok", size=64) * 0.12).astype(np.uint8)).save(dark)
    rows.append((str(dark), "ok"))
    pd.DataFrame(rows, columns=["filepath", "label"]).to_csv(tmp_path / "l.csv", index=False)
    project.import_csv(tmp_path / "l.csv", progress=False)
    mv = wb.train(project, mode="probe", folds=4, image_size=64, progress=False)

    report = wb.class_report(project, mv).set_index("class")
    assert report.loc["dent", "note"].startswith("'dent' has only 4 held-out images: its "
                                                 "recall")
    assert "label 6 more" in report.loc["dent", "note"]
    assert report.loc["dent", "recall_high"] - report.loc["dent", "recall_low"] > 0.3

    issues = wb.label_issues(project, mv, write=False)
    dents = issues[issues["given"] == "dent"]
    assert len(dents) == 4 and dents["class_note"].str.contains("only 4 held-out").all()
    assert set(issues.attrs["class_notes"]) >= {"dent"}

    advice = wb.data_advice(project, mv).set_index("class")
    assert advice.loc["dent", "note"] == report.loc["dent", "note"]
    assert "poor_images" not in advice.columns  # no image-quality check yet
    quality = wb.image_issues(project)
    assert set(quality.loc[quality["is_issue"], "issue"]) == {"dark"}
    advice = wb.data_advice(project, mv).set_index("class")
    assert advice["poor_images"].to_dict() == {"ok": 1, "scratch": 0, "dent": 0}
    assert "its 1 image(s) with an image-quality issue" in advice.loc["ok", "recommendation"]

    from widgets import ConfusionDrilldown

    table = ConfusionDrilldown(project, mv).table.value
    assert "too few images to judge" in table and "&#x27;dent&#x27; has only 4" in table
