"""Training: real (tiny) models on the demo project, out-of-fold predictions, versions,
reopening in a new process, cancel and resume, and a 2-process DDP run under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import workbench as wb
from workbench.train.classification.finetune import FinetuneSettings, UnusableStateWarning

TINY = {"folds": 2, "epochs": 2, "image_size": 64, "progress": False}


@pytest.fixture
def images_factory(tmp_path):
    """Import ``per_class`` small, class-tinted images per class into a project."""
    def make(project, *, per_class: int, classes=("a", "b", "c")):
        rng = np.random.default_rng(0)
        for c, name in enumerate(classes):
            for i in range(per_class):
                pixels = rng.integers(0, 120, (48, 48, 3), dtype=np.uint8)
                pixels[..., c % 3] += 120
                (tmp_path / "in" / name).mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(tmp_path / "in" / name / f"{i}.png")
        project.import_folder(tmp_path / "in", progress=False)
    return make


@pytest.fixture(scope="module")
def trained(demo_project):
    """A probe version of the shared demo project (5 classes x 10 images)."""
    return wb.train(demo_project, mode="probe", **TINY)


class StopAfter:
    """A cancel flag that is set after ``n`` checks (one check per training batch)."""

    def __init__(self, n: float) -> None:
        self.n, self.checks = n, 0

    def is_set(self) -> bool:
        self.checks += 1
        return self.checks > self.n


def oof(version: wb.ModelVersion) -> np.ndarray:
    frame = version.oof_predictions().sort_values("sample_id")
    return frame[version.classes].to_numpy()


def test_probe_writes_out_of_fold_predictions_on_every_labelled_sample(demo_project, trained):
    ids, truth, preds = demo_project.dataset.values(
        ["id", "ground_truth.label", f"pred_{trained.name}"])
    snapshot = trained.snapshot().set_index("sample_id")
    assert sorted(snapshot.index) == sorted(i for i, t in zip(ids, truth, strict=True) if t)
    for sid, pred in zip(ids, preds, strict=True):
        probs = np.array(pred.probabilities)
        assert probs.shape == (len(trained.classes),)
        assert probs.sum() == pytest.approx(1, abs=1e-4)
        assert pred.label == trained.classes[int(probs.argmax())]
        assert pred.fold == snapshot.loc[sid, "fold"] in (0, 1)  # held out by that fold
    metrics = trained.metrics
    assert metrics["evaluated_on"] == "out-of-fold"
    assert metrics["n_evaluated"] == len(snapshot)
    assert metrics["accuracy"] > 1 / len(trained.classes)  # better than chance: real features
    assert set(metrics["per_class"]) >= set(trained.classes)


def test_predict_returns_a_frame_with_one_probability_column_per_class(demo_project, trained):
    view = demo_project.dataset.limit(6)
    frame = trained.predict(view, progress=False)
    assert list(frame.columns) == ["sample_id", "filepath", "label", "confidence",
                                   *trained.classes]
    assert frame["sample_id"].tolist() == view.values("id")
    assert np.allclose(frame[trained.classes].sum(axis=1), 1, atol=1e-5)
    by_path = trained.predict(view.values("filepath"), progress=False)
    assert "sample_id" not in by_path
    assert np.allclose(by_path[trained.classes], frame[trained.classes], atol=1e-6)


def test_a_version_reopens_in_a_new_process(demo_project, trained):
    paths = demo_project.dataset.limit(5).values("filepath")
    expected = trained.predict(paths, progress=False)[trained.classes].to_numpy()
    script = ("import json, sys, workbench as wb\n"
              f"p = wb.Project.open({demo_project.name!r})\n"
              f"mv = p.model({trained.name!r})\n"
              f"frame = mv.predict({paths!r}, progress=False)\n"
              "print(json.dumps({'probs': frame[mv.classes].values.tolist(),\n"
              "                  'versions': p.models()['name'].tolist()}))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         check=True, timeout=300)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert np.allclose(result["probs"], expected, atol=1e-5)
    assert trained.name in result["versions"]


def test_versions_are_numbered_and_record_their_parent(project, images_factory):
    images_factory(project, per_class=4)
    first = wb.train(project, mode="probe", **TINY)
    second = wb.train(project, mode="probe", **TINY)
    assert (first.name, second.name) == ("v1", "v2")
    assert (first.parent, second.parent) == (None, "v1")
    table = project.models()
    assert table["name"].tolist() == ["v1", "v2"]
    assert table.loc[1, "parent"] == "v1"
    assert table.loc[0, "mode"] == "probe"
    assert np.allclose(oof(first), oof(second))  # same seed: the same model
    assert project.model().name == "v2"
    with pytest.raises(wb.ProjectError, match=r"no model version 'v9'.*v1, v2"):
        project.model("v9")


@pytest.mark.slow
def test_auto_cross_validates_the_candidates_and_records_why(project, images_factory,
                                                             tmp_path):
    images_factory(project, per_class=4)
    odd = np.full((48, 48, 3), 60, dtype=np.uint8)
    odd[..., 1] += 120  # tinted as class "b", filed under "a": the probe cannot be perfect
    Image.fromarray(odd).save(tmp_path / "in" / "a" / "odd.png")
    project.import_folder(tmp_path / "in", progress=False)
    version = wb.train(project, mode="auto", **TINY)
    selection = version.selection
    assert set(selection["candidates"]) == {"probe", "finetune", "ensemble"}
    assert version.mode == selection["chosen"]
    best = max(c["accuracy"] for c in selection["candidates"].values())
    assert selection["candidates"][version.mode]["accuracy"] == best
    assert version.mode in selection["reason"]
    members = {"probe": ["probe"], "finetune": ["finetune"], "ensemble": ["probe", "finetune"]}
    assert version.record["members"] == members[version.mode]
    # the fold models train on the cache of 4 frozen stages, the final model on pixels
    assert version.record["feature_cache"] == {"folds": {"frozen_blocks": 4, "views": 8},
                                               "final_model": None}
    if version.mode != "probe":
        assert version.record["final_epochs"] == TINY["epochs"]
    assert version.record["device"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert selection["finetune_estimated"] is False and selection["finetune_seconds"] > 0
    assert len(version.classifier.members) == len(members[version.mode])
    paths = project.dataset.values("filepath")  # probe members read the embedding cache:
    fast = version.predict(paths, progress=False)[version.classes].to_numpy()
    assert np.allclose(fast, version.classifier.predict_files(paths), atol=1e-4)  # same model


def test_auto_keeps_a_flawless_probe_and_says_what_a_finetune_would_cost(project,
                                                                        images_factory):
    images_factory(project, per_class=4)  # tinted classes: the probe makes no mistake
    version = wb.train(project, mode="auto", **TINY)
    selection = version.selection
    assert version.mode == "probe" and set(selection["candidates"]) == {"probe"}
    assert selection["candidates"]["probe"]["accuracy"] == 1.0
    assert selection["finetune_estimated"] is True and selection["finetune_seconds"] > 0
    assert "no out-of-fold mistake" in selection["reason"]
    assert f"about {selection['finetune_seconds']:.0f} s" in selection["reason"]
    assert version.record["members"] == ["probe"]


CACHE = {"frozen_blocks": 4, "views": 8}


@pytest.mark.slow
@pytest.mark.parametrize(("frozen_blocks", "fold_frozen_blocks", "cache"), [
    (4, None, {"folds": CACHE, "final_model": CACHE}),
    (0, 0, {"folds": None, "final_model": None}),
    (0, 4, {"folds": CACHE, "final_model": None}),
], ids=["feature-cache", "pixels", "default"])
def test_cancelled_finetune_resumes_to_the_same_model(project, images_factory,
                                                      frozen_blocks, fold_frozen_blocks,
                                                      cache):
    images_factory(project, per_class=4)  # 3 classes x 4: 6 per fold, one batch per epoch
    options = {**TINY, "mode": "finetune",
               "settings": FinetuneSettings(batch_size=8, patience=10,
                                            frozen_blocks=frozen_blocks,
                                            fold_frozen_blocks=fold_frozen_blocks)}
    reference = wb.train(project, **options)
    # Fold 0 takes 2 batches (2 epochs); stop at fold 1's second epoch.
    with pytest.raises(wb.TrainingCancelled, match="resume"):
        wb.train(project, cancel=StopAfter(3), **options)
    assert project.models()["name"].tolist() == [reference.name]  # nothing half-written
    runs = list((project.folder / "models" / ".runs").iterdir())
    assert len(runs) == 1
    assert (runs[0] / "finetune_fold0.npz").is_file()
    assert (runs[0] / "finetune_fold1.state.pt").is_file()
    counter = StopAfter(float("inf"))
    with warnings.catch_warnings():  # the saved state is used, not ignored
        warnings.simplefilter("error", UnusableStateWarning)
        resumed = wb.train(project, resume=True, cancel=counter, **options)
    assert counter.checks < 2 + 2 + 1 + resumed.record["final_epochs"] * 2  # folds skipped
    assert np.allclose(oof(resumed), oof(reference), atol=1e-5)
    paths = project.dataset.values("filepath")
    assert np.allclose(resumed.predict(paths, progress=False)[resumed.classes],
                       reference.predict(paths, progress=False)[reference.classes], atol=1e-5)
    assert not (project.folder / "models" / ".runs" / runs[0].name).exists()
    assert resumed.record["feature_cache"] == cache


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"mode": "fast"}, "mode='fast' is not one of"),
    ({"folds": 0}, "folds must be an integer >= 1"),
    ({"image_size": 8}, "image_size must be an integer >= 16"),
    ({"folds": 5}, "folds=5 needs at least 5 labelled images per class: 'a' has 4"),
    ({"backbone": "resnet18", "weights": "default"}, "weights='path/to/file.pth'"),
    ({"device": "banana"}, "device='banana' is not a torch device"),
    *([({"device": "cuda"}, "torch sees no GPU on this machine")]
      if not torch.cuda.is_available() else []),
])
def test_bad_arguments_get_specific_errors(project, images_factory, kwargs, message):
    images_factory(project, per_class=4)
    with pytest.raises(ValueError, match=message):
        wb.train(project, **{**TINY, **kwargs})
    assert project.models().empty


def test_a_single_class_cannot_be_trained(project, images_factory):
    images_factory(project, per_class=4, classes=("a",))
    with pytest.raises(ValueError, match="needs at least 2"):
        wb.train(project, **TINY)


def test_the_default_folds_follow_the_smallest_class(project, images_factory, capsys):
    """Pick a few, label them, train with the defaults: a class with 3 images means 3
    folds, said in the version and the progress output; one image is refused clearly."""
    images_factory(project, per_class=6)
    ids, labels = project.dataset.values(["id", "ground_truth.label"])
    of_a = [i for i, label in zip(ids, labels, strict=True) if label == "a"]
    others = [i for i, label in zip(ids, labels, strict=True) if label != "a"]
    version = wb.train(project, mode="probe", image_size=64,
                       view=project.dataset.select(others + of_a[:3]))
    assert version.config["folds"] == 3
    assert "'a' has only 3 labelled images" in version.config["folds_reason"]
    assert "3 folds instead of 5" in capsys.readouterr().out
    snapshot = version.snapshot()
    assert sorted(snapshot["fold"].unique()) == [0, 1, 2]  # every image held out once
    assert len(version.oof_predictions()) == len(others) + 3
    with pytest.raises(ValueError, match=r"class 'a' has 1 real labelled image: .*Label at "
                                         r"least one more"):
        wb.train(project, mode="probe", image_size=64, progress=False,
                 view=project.dataset.select(others + of_a[:1]))
    assert project.models()["name"].tolist() == [version.name]


@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None,
                    reason="torchrun is installed with torch")
@pytest.mark.slow
def test_torchrun_two_processes_train_one_version(project, images_factory):
    images_factory(project, per_class=4)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    command = [torchrun, "--nproc-per-node", "2", "--no-python", "loupe", "train",
               project.name, "--mode", "finetune", "--folds", "2", "--epochs", "1",
               "--image-size", "64", "--quiet"]
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
           f"{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("ModelVersion(") == 1  # rank 0 reports, rank 1 does not
    version = project.model("v1")
    assert version.record["world_size"] == 2
    assert version.metrics["n_evaluated"] == 12


def test_finetune_can_train_only_the_last_part_of_the_body():
    from workbench.train.backbones import create_backbone
    from workbench.train.classification.finetune import fit

    body, spec = create_backbone()
    before = {k: v.clone() for k, v in body.state_dict().items()}
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 255, (8, 3, 32, 32), dtype=np.uint8))
    member = torch.nn.Sequential(body, torch.nn.Linear(spec.num_features, 2))
    result = fit(member, pixels, np.array([0, 1] * 4), epochs=1, seed=0, mean=spec.mean,
                 std=spec.std, settings=FinetuneSettings(trainable=0.2, batch_size=4),
                 progress=False)
    after = result.member[0].state_dict()
    names = [n for n, _ in body.named_parameters()]
    changed = [n for n in names if not torch.equal(before[n], after[n])]
    assert changed and set(changed) <= set(names[-round(0.2 * len(names)):])
    assert "conv_stem.weight" not in changed


def test_the_cached_trunk_is_the_bodys_lower_part_and_only_the_rest_trains():
    from workbench.train.backbones import create_backbone
    from workbench.train.classification.finetune import (
        dihedral,
        fit,
        split_body,
        trunk_features,
    )

    body, spec = create_backbone()
    body.eval()
    trunk, top = split_body(body, 4)
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 255, (6, 3, 32, 32), dtype=np.uint8))
    x = (pixels.float() / 255 - 0.5) / 0.5
    with torch.inference_mode():
        assert torch.allclose(top(trunk(x)), body(x), atol=1e-5)  # the same network
    settings = FinetuneSettings(batch_size=4, frozen_blocks=4)
    features = trunk_features(trunk, pixels, settings=settings, mean=spec.mean,
                              std=spec.std, seed=0, progress=False)
    assert features.shape[:2] == (8, 6)
    with torch.inference_mode():
        assert torch.allclose(features[0], trunk(x), atol=1e-5)  # view 0: the image itself
        turned = (dihedral(pixels, 5).float() / 255 - 0.5) / 0.5
        assert not torch.allclose(features[5], trunk(turned), atol=1e-3)  # and jittered
    again = trunk_features(trunk, pixels, settings=settings, mean=spec.mean, std=spec.std,
                           seed=0, progress=False)
    assert torch.equal(features, again)  # seeded: a run is reproducible

    before = {k: v.clone() for k, v in body.state_dict().items()}
    member = torch.nn.Sequential(body, torch.nn.Linear(spec.num_features, 2))
    result = fit(member, None, np.array([0, 1] * 3), features=features, epochs=1, seed=0,
                 mean=spec.mean, std=spec.std, settings=settings, progress=False)
    after = result.member[0].state_dict()
    changed = {n.split(".")[0] + ("." + n.split(".")[1] if n.startswith("blocks") else "")
               for n, _ in body.named_parameters() if not torch.equal(before[n], after[n])}
    assert changed and changed <= {"blocks.4", "blocks.5", "blocks.6", "conv_head", "bn2"}
    assert {"blocks.4", "conv_head"} <= changed


def test_the_range_of_light_the_augmentation_shows_is_a_setting():
    """A line whose light changes (a night shift) trains with a wider brightness range; the
    setting survives the version's JSON config, which a retrain reuses."""
    import dataclasses

    from workbench.train.classification.finetune import augmentation

    gray = torch.full((3, 32, 32), 128, dtype=torch.uint8)

    def centre_ratios(settings: FinetuneSettings) -> np.ndarray:
        torch.manual_seed(0)
        augment = augmentation(settings)
        return np.array([float(augment(gray)[:, 16, 16].float().mean()) / 128
                         for _ in range(200)])

    mild = centre_ratios(FinetuneSettings())
    wide = centre_ratios(FinetuneSettings(brightness=(0.35, 1.3)))
    assert mild.min() > 0.8 and mild.max() < 1.2
    assert wide.min() < 0.5 and wide.max() > 1.15
    settings = FinetuneSettings(brightness=[0.35, 1.3])  # as read back from JSON
    again = FinetuneSettings(**json.loads(json.dumps(dataclasses.asdict(settings))))
    assert again == settings and again.brightness == (0.35, 1.3)
    with pytest.raises(ValueError, match=r"FinetuneSettings.contrast must be a \(low, high\)"):
        FinetuneSettings(contrast=(1.2, 0.8))
    with pytest.raises(ValueError, match=r"FinetuneSettings\.fold_epochs must be None"):
        FinetuneSettings(fold_epochs=0)


def test_interrupting_the_kernel_raises_training_cancelled(project, images_factory):
    images_factory(project, per_class=4)

    class Interrupt:
        def is_set(self) -> bool:
            raise KeyboardInterrupt  # what Jupyter's "Interrupt the kernel" does mid-batch

    with pytest.raises(wb.TrainingCancelled, match="resume=True"):
        wb.train(project, mode="finetune", cancel=Interrupt(), **TINY)
    assert project.models().empty
