"""Deployments on disk: self-contained folders, the atomic ``current`` pointer, rollbacks,
and the faults: two processes promoting at once, kill -9 before the switch, a full disk,
bad line names; and the ``loupe promote / rollback / deployments`` commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import workbench as wb
from workbench.demo import create_demo_project

PROBE = {"mode": "probe", "folds": 2, "image_size": 64, "progress": False}
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shop():
    """A demo project (10 images per class, a 30 % frozen set) with two probes, ``v1`` and
    ``v2``; ``v1`` is promoted on line ``A``."""
    p = create_demo_project(f"deploy-{os.getpid()}", n_per_class=10, seed=5, size=64,
                            overwrite=True)
    p.freeze_eval(fraction=0.3, annotator="erin")
    v1 = wb.train(p, **PROBE)
    v2 = wb.train(p, seed=1, **PROBE)
    first = wb.promote(p, v1, line="A", annotator="erin", n_boot=200)
    yield {"p": p, "v1": v1, "v2": v2, "first": first}
    wb.delete_project(p.name)


def _run(script: str, *args: str, limit: int | None = None) -> subprocess.CompletedProcess:
    """Run a Python script in a new process (the test database is inherited)."""
    preexec = None
    if limit is not None:
        def preexec() -> None:
            import resource

            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past it: EFBIG, no kill
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(script), *args],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          preexec_fn=preexec, check=False)


def test_a_deployment_is_a_self_contained_verified_folder(shop):
    first, p = shop["first"], shop["p"]
    assert first.folder == p.folder / "deployments" / "A" / first.deployment_id
    assert {f.name for f in first.folder.iterdir()} == {"model.onnx", "deployment.json",
                                                       "reference.npz"}
    assert first.verify() == []
    record = json.loads((first.folder / "deployment.json").read_text())
    assert record["version"] == shop["v1"].name and record["classes"] == p.classes
    assert record["preprocessing"]["image_size"] == 64
    assert record["data_snapshot"]["n_images"] == len(shop["v1"].snapshot())
    assert record["gate"]["passed"] and record["promoted_by"] == "erin"
    assert set(record["sha256"]) == {"model.onnx", "reference.npz"}
    with np.load(first.folder / "reference.npz", allow_pickle=False) as reference:
        assert reference["properties"].shape == (record["reference"]["n_images"], 5)
        assert reference["vectors"].shape[0] == record["reference"]["n_images"]


def test_the_folder_is_read_and_run_without_fiftyone_or_torch(shop):
    image = shop["p"].to_pandas()["filepath"].iloc[0]
    done = _run("""
        import sys
        for blocked in ("torch", "fiftyone", "pandas"):
            sys.modules[blocked] = None
        import numpy as np
        from workbench.deploy.line_state import Deployment
        from workbench.deploy.edge import EdgePredictor
        d = Deployment.load(sys.argv[1])
        assert d.verify() == [], d.verify()
        np.load(d.folder / "reference.npz", allow_pickle=False)["properties"]
        print(EdgePredictor(d.model_path).predict([sys.argv[2]])[0]["label"])
    """, str(shop["first"].folder), image)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() in shop["p"].classes


def test_promote_then_rollback_switches_current_and_appends_history(shop):
    p = shop["p"]
    second = wb.promote(p, shop["v2"], line="B", annotator="erin", n_boot=200)
    third = wb.promote(p, shop["v1"], line="B", annotator="sam", n_boot=200)
    assert wb.current_deployment(p, line="B").deployment_id == third.deployment_id
    back = wb.rollback(p, line="B", annotator="sam")
    assert back.deployment_id == second.deployment_id
    assert wb.current_deployment(p, line="B").deployment_id == second.deployment_id
    table = wb.deployments(p, line="B")
    assert list(table.columns) == ["deployment_id", "line", "version", "promoted_by",
                                   "promoted_at", "gate_passed", "forced", "reason", "current"]
    assert table["current"].tolist() == [True, False]
    assert third.folder.is_dir()  # rolled back, never deleted
    with pytest.raises(wb.DeploymentError, match="nothing to roll back to"):
        wb.rollback(p, line="B", annotator="sam")
    events = wb.deployment_history(p, line="B")
    assert events["event"].tolist() == ["promote", "promote", "rollback"]
    assert events["annotator"].tolist() == ["erin", "sam", "sam"]


def test_bad_and_unknown_lines(shop):
    p = shop["p"]
    for bad in ("", " A", "a/b", "..", "-x"):
        with pytest.raises(wb.DeploymentError, match="line="):
            wb.promote(p, shop["v1"], line=bad, annotator="erin")
    assert wb.current_deployment(p, line="Z") is None
    with pytest.raises(wb.DeploymentError, match="has no deployment"):
        wb.deployments(p, line="Z")
    with pytest.raises(wb.DeploymentError, match="nothing to roll back"):
        wb.rollback(p, line="Z", annotator="erin")
    with pytest.raises(wb.DeploymentError, match="annotator"):
        wb.rollback(p, line="A", annotator="")


def test_a_version_of_another_project_is_refused(shop):
    import dataclasses

    stranger = dataclasses.replace(shop["v1"], project_name="elsewhere")
    with pytest.raises(wb.ProjectError, match="belongs to project"):
        wb.promote(shop["p"], stranger, line="A", annotator="erin")
    with pytest.raises(wb.ProjectError, match="no model version 'v99'"):
        wb.promote(shop["p"], "v99", line="A", annotator="erin")


PROMOTE = """
    import json, sys
    import workbench as wb
    project, version, line, expected = sys.argv[1:5]
    try:
        d = wb.promote(project, version, line=line, annotator=version, n_boot=100,
                       expected=expected or None)
        print(json.dumps({"won": d.deployment_id}))
    except wb.LoupeError as error:
        print(json.dumps({"lost": type(error).__name__, "message": str(error)}))
"""


@pytest.mark.slow
def test_two_processes_promoting_at_once_exactly_one_wins(shop):
    p = shop["p"]
    seen = wb.current_deployment(p, line="A").deployment_id  # what both people looked at
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(PROMOTE), p.name,
                               version.name, "A", seen], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO)
             for version in (shop["v1"], shop["v2"])]
    outcomes = [json.loads(proc.communicate(timeout=300)[0].strip().splitlines()[-1])
                for proc in procs]
    won = [o["won"] for o in outcomes if "won" in o]
    lost = [o for o in outcomes if "lost" in o]
    assert len(won) == 1 and len(lost) == 1, outcomes
    assert lost[0]["lost"] == "DeploymentConflictError"
    assert "changed while you were deciding" in lost[0]["message"]
    assert wb.current_deployment(p, line="A").deployment_id == won[0]
    events = wb.deployment_history(p, line="A").tail(2)
    assert sorted(events["event"]) == ["promote", "refused_conflict"]
    wb.rollback(p, line="A", annotator="erin")  # back to the fixture's first deployment


def _assert_current_intact(p: wb.Project, deployment_id: str) -> None:
    current = wb.current_deployment(p, line="A")
    assert current.deployment_id == deployment_id
    assert current.verify() == []
    assert not [f for f in current.folder.parent.iterdir() if f.name.endswith(".partial")]


@pytest.mark.slow
def test_kill_9_between_writing_the_folder_and_switching_leaves_current_intact(shop):
    p = shop["p"]
    before = wb.current_deployment(p, line="A").deployment_id
    done = _run("""
        import os, signal, sys
        import workbench as wb
        from workbench.deploy import line_state
        line_state.switch_pointer = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)
        wb.promote(sys.argv[1], sys.argv[2], line="A", annotator="killed", n_boot=100)
    """, p.name, shop["v2"].name)
    assert done.returncode == -signal.SIGKILL
    current = wb.current_deployment(p, line="A")
    assert current.deployment_id == before and current.verify() == []
    later = wb.promote(p, shop["v2"], line="A", annotator="erin", n_boot=100)
    assert wb.current_deployment(p, line="A").deployment_id == later.deployment_id
    wb.rollback(p, line="A", annotator="erin")
    _assert_current_intact(p, before)


@pytest.mark.slow
def test_a_full_disk_while_writing_switches_nothing(shop):
    p = shop["p"]
    before = wb.current_deployment(p, line="A").deployment_id
    folders = set((p.folder / "deployments" / "A").iterdir())
    done = _run("""
        import sys
        import workbench as wb
        try:
            wb.promote(sys.argv[1], sys.argv[2], line="A", annotator="full", n_boot=100)
        except wb.DeploymentError as error:
            print("refused:", error)
    """, p.name, shop["v2"].name, limit=2_000_000)  # the ONNX file alone is ~13 MB
    assert done.returncode == 0, done.stderr
    assert "refused: writing the deployment failed" in done.stdout
    assert "File too large" in done.stdout
    _assert_current_intact(p, before)
    assert set((p.folder / "deployments" / "A").iterdir()) == folders
    assert wb.deployment_history(p, line="A")["event"].iloc[-1] == "failed"


def _loupe(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True,
                          text=True, timeout=300, cwd=REPO, check=False)


@pytest.mark.slow
def test_the_command_line_promotes_lists_and_rolls_back(shop):
    p = shop["p"]
    done = _loupe("promote", p.name, shop["v2"].name, "--line", "cli", "--annotator", "erin")
    assert done.returncode == 0, done.stderr
    assert f"line cli now runs {shop['v2'].name}" in done.stdout
    listed = _loupe("deployments", p.name)
    assert listed.returncode == 0 and "cli" in listed.stdout and "*" in listed.stdout
    nothing = _loupe("rollback", p.name, "--line", "cli", "--annotator", "erin")
    assert nothing.returncode == 2 and "nothing to roll back to" in nothing.stderr
    bad = _loupe("promote", p.name, shop["v1"].name, "--line", "a b", "--annotator", "erin")
    assert bad.returncode == 2 and "line=" in bad.stderr
    no_reason = _loupe("promote", p.name, "v1", "--line", "cli", "--annotator", "e", "--force")
    assert no_reason.returncode == 2 and "reason" in no_reason.stderr


@pytest.mark.slow
def test_the_command_line_exits_3_when_the_gate_refuses(shop):
    p = shop["p"]
    # a reviewer's wrong label on a frozen image, made golden: any version now misses it
    victim = p.eval_ids()[0]
    row = p.to_pandas().set_index("sample_id").loc[victim]
    before = row["label"]
    said = shop["v2"].predict([row["filepath"]], progress=False)["label"].iloc[0]
    wrong = next(c for c in p.classes if c not in (before, said))
    p.annotate([victim], wrong, annotator="tired", review=True)
    p.golden(add=[victim], annotator="tired")
    try:
        done = _loupe("promote", p.name, shop["v2"].name, "--line", "gate3",
                      "--annotator", "erin")
        assert done.returncode == 3, done.stderr
        assert "golden" in done.stderr and "force" in done.stderr
        assert wb.current_deployment(p, line="gate3") is None
    finally:
        p.golden(remove=[victim], annotator="tired")
        p.annotate([victim], before, annotator="erin", review=True)
