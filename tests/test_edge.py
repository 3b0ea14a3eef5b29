"""``loupe-edge`` on a real deployment folder: ``serve`` (verdicts, health, metrics, the token
rule, bad bodies, refusing a broken deployment, swapping to a newly promoted one under a loop
of requests without a failed request), ``watch`` with the feedback round trip into the
project, and the distribution installed alone into a fresh virtual environment."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
from browser_support import REPO_ROOT, free_port, serve
from PIL import Image

import workbench as wb

LINE = "A"
TRAINING = {"mode": "probe", "folds": 3, "image_size": 128, "progress": False}


@pytest.fixture(scope="module")
def line_project():
    """A small demo project: frozen and golden sets, v1 promoted on line A."""
    from workbench.demo import create_demo_project
    from workbench.demo.line_story import prepare_line

    p = create_demo_project(f"edge-{os.getpid()}", n_per_class=10, seed=1,
                            overwrite=True)
    prepare_line(p, training={k: v for k, v in TRAINING.items() if k != "progress"})
    yield p
    wb.delete_project(p.name)


def _command(deployments: Path, port: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "loupe_edge.cli", "serve", str(deployments), "--line", LINE,
            "--port", str(port), "--poll", "0.2", *extra]


def _request(url: str, data: bytes | None = None, headers: dict | None = None,
             timeout: float = 60) -> tuple[int, bytes]:
    request = urllib.request.Request(url, data=data, headers=headers or {},
                                     method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def _png(path: str) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def edge_server(line_project, tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("edge") / "edge.log"
    url = f"http://127.0.0.1:{port}/"
    command = _command(line_project.folder / "deployments", port, "--max-body-mb", "1")
    with serve(command, url + "v1/health", log, cwd=REPO_ROOT):
        yield url, log


def test_an_image_gets_a_verdict_from_the_current_deployment(line_project, edge_server):
    url, _ = edge_server
    current = wb.current_deployment(line_project, line=LINE)
    path = line_project.dataset.first().filepath
    status, body = _request(url + "v1/inspect", _png(path),
                            {"Content-Type": "application/octet-stream"})
    assert status == 200, body
    verdict = json.loads(body)
    expected = wb.EdgePredictor(current.model_path).predict([path])[0]
    assert verdict["label"] == expected["label"] and verdict["deployment_id"] == \
        current.deployment_id
    assert set(verdict["probabilities"]) == set(line_project.classes)
    assert abs(sum(verdict["probabilities"].values()) - 1) < 1e-4
    assert verdict["decision"] == verdict["label"]  # no operating point: the label decides
    assert 0 <= verdict["ood_score"] <= 1 and verdict["latency_ms"] > 0

    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; "
            f"filename=\"part.png\"\r\nContent-Type: image/png\r\n\r\n").encode() \
        + _png(path) + f"\r\n--{boundary}--\r\n".encode()
    status, body = _request(url + "v1/inspect", form,
                            {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and json.loads(body)["label"] == verdict["label"]


def test_health_and_metrics_say_what_runs_and_what_it_answered(line_project, edge_server):
    url, _ = edge_server
    current = wb.current_deployment(line_project, line=LINE)
    status, body = _request(url + "v1/health")
    health = json.loads(body)
    assert status == 200 and health["deployment_id"] == current.deployment_id
    assert health["version"] == current.version and health["classes"] == line_project.classes
    status, body = _request(url + "metrics")
    text = body.decode()
    assert status == 200
    assert f'deployment_id="{current.deployment_id}"' in text
    served = [line for line in text.splitlines()
              if line.startswith('loupe_edge_requests_total{status="200"}')]
    assert served and float(served[0].split()[-1]) >= 1
    assert "loupe_edge_drift_statistic" in text and "loupe_edge_decisions_total{" in text


@pytest.mark.parametrize(("body", "status", "words"), [
    (b"", 400, "the body is empty"),
    (b"GIF89a not really an image", 400, "not an image"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, 400, "not an image"),
    (b"x" * (2 * 1024 * 1024), 413, "at most 1,048,576"),
])
def test_a_bad_body_gets_a_reason_and_the_server_goes_on(edge_server, body, status, words):
    url, _ = edge_server
    answer, text = _request(url + "v1/inspect", body)
    assert answer == status and words in json.loads(text)["error"]
    assert _request(url + "v1/health")[0] == 200


def test_a_truncated_image_is_refused(line_project, edge_server):
    url, _ = edge_server
    buffer = io.BytesIO()
    Image.fromarray(np.zeros((64, 64, 3), dtype=np.uint8)).save(buffer, format="JPEG")
    status, text = _request(url + "v1/inspect", buffer.getvalue()[:200])
    assert status == 400 and "error" in json.loads(text)


def test_sixteen_clients_at_once_are_all_answered(line_project, edge_server):
    from concurrent.futures import ThreadPoolExecutor

    url, _ = edge_server
    paths = line_project.dataset.values("filepath")[:16]
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda i: _request(url + "v1/inspect", _png(paths[i % 16])),
                                range(48)))
    assert [status for status, _ in answers] == [200] * 48
    labels = [json.loads(body)["label"] for _, body in answers]
    assert labels[:16] == labels[16:32] == labels[32:]  # the same image, the same answer


def test_another_address_needs_a_token_and_the_token_is_checked(line_project, tmp_path):
    deployments = line_project.folder / "deployments"
    refused = subprocess.run(_command(deployments, free_port(), "--ip", "0.0.0.0"),
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "LOUPE_EDGE_TOKEN": ""})
    assert refused.returncode == 2 and "--token" in refused.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    with serve(_command(deployments, port, "--token", "s3cret"), url + "metrics",
               tmp_path / "edge.log", cwd=REPO_ROOT):
        assert _request(url + "v1/health")[0] == 401
        assert _request(url + "v1/inspect", b"x", {"Authorization": "Bearer wrong"})[0] == 401
        assert _request(url + "v1/health", headers={"Authorization": "Bearer s3cret"})[0] == 200


def _copy_line(line_project, tmp_path: Path) -> Path:
    """A copy of the project's deployments folder, as a line PC holds it."""
    copy = tmp_path / "deployments"
    shutil.copytree(line_project.folder / "deployments", copy)
    return copy


def test_a_broken_deployment_refuses_to_start_with_a_reason(line_project, tmp_path):
    copy = _copy_line(line_project, tmp_path)
    pointer = json.loads((copy / LINE / "current.json").read_text())
    folder = copy / LINE / pointer["deployment_id"]

    def start() -> subprocess.CompletedProcess:
        return subprocess.run(_command(copy, free_port()), capture_output=True, text=True,
                              timeout=120)

    model = folder / "model.onnx"
    model.write_bytes(model.read_bytes()[:-10] + b"0123456789")  # tampered
    done = start()
    assert done.returncode == 2 and "model.onnx does not match its sha256" in done.stderr
    model.unlink()
    assert "model.onnx is missing" in start().stderr
    done = subprocess.run(_command(tmp_path / "nowhere", free_port()), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and f"line '{LINE}' has no current deployment" in done.stderr


def test_classes_that_disagree_with_the_record_are_refused(line_project, tmp_path):
    copy = _copy_line(line_project, tmp_path)
    pointer = json.loads((copy / LINE / "current.json").read_text())
    record_path = copy / LINE / pointer["deployment_id"] / "deployment.json"
    record = json.loads(record_path.read_text())
    record["classes"] = list(reversed(record["classes"]))
    record_path.write_text(json.dumps(record))
    done = subprocess.run(_command(copy, free_port()), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and "disagree with" in done.stderr


@pytest.mark.slow
def test_a_new_promotion_is_swapped_in_without_a_failed_request(line_project, tmp_path):
    """Requests run in a loop while v2 is promoted and a tampered deployment is pointed at:
    every request is answered, v2 takes over, the tampered one is refused."""
    deployments = line_project.folder / "deployments"
    v1 = wb.current_deployment(line_project, line=LINE)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    image = _png(line_project.dataset.first().filepath)
    answers: list[tuple[int, str]] = []
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            status, body = _request(url + "v1/inspect", image)
            answers.append((status, json.loads(body).get("deployment_id", "")
                            if status == 200 else body.decode()))

    with serve(_command(deployments, port), url + "v1/health", tmp_path / "edge.log",
               cwd=REPO_ROOT):
        worker = threading.Thread(target=loop)
        worker.start()
        try:
            v2 = wb.promote(line_project, wb.train(line_project, **TRAINING), line=LINE,
                            annotator="erin", force=True, reason="edge swap test")
            deadline = time.monotonic() + 60
            while json.loads(_request(url + "v1/health")[1])["deployment_id"] != \
                    v2.deployment_id:
                assert time.monotonic() < deadline, "the new deployment was not swapped in"
                time.sleep(0.2)
            # a tampered deployment behind the pointer: refused, v2 keeps serving
            bad = deployments / LINE / "tampered"
            shutil.copytree(v2.folder, bad)
            record = json.loads((bad / "deployment.json").read_text())
            record["deployment_id"] = "tampered"
            (bad / "deployment.json").write_text(json.dumps(record))
            (bad / "model.onnx").write_bytes(b"not a model")
            pointer_path = deployments / LINE / "current.json"
            saved = pointer_path.read_text()
            pointer_path.write_text(json.dumps({**json.loads(saved),
                                                "deployment_id": "tampered"}))
            time.sleep(2)
            health = json.loads(_request(url + "v1/health")[1])
            pointer_path.write_text(saved)
            shutil.rmtree(bad)
            time.sleep(1)
        finally:
            stop.set()
            worker.join(timeout=60)
    assert health["deployment_id"] == v2.deployment_id and health["swaps"] == 1
    assert any(e["event"] == "refused" and e["deployment_id"] == "tampered"
               for e in health["events"])
    failed = [a for a in answers if a[0] != 200]
    assert failed == [] and len(answers) > 20
    served = [deployment for _, deployment in answers]
    assert served[0] == v1.deployment_id and served[-1] == v2.deployment_id
    switch = served.index(v2.deployment_id)
    assert set(served[switch:]) == {v2.deployment_id}  # never back to v1 once swapped


#: The environment of a line PC: nothing borrowed from this checkout through PYTHONPATH.
ALONE = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


@pytest.fixture(scope="module")
def edge_venv(tmp_path_factory):
    """loupe-edge installed alone into a fresh virtual environment, from wheels built here
    (``pip wheel edge/``: loupe-edge and its dependencies), with no index."""
    root = tmp_path_factory.mktemp("edge-venv")
    wheels, venv = root / "wheels", root / "venv"

    def run(*command: object) -> None:
        done = subprocess.run([str(c) for c in command], capture_output=True, text=True,
                              timeout=900, env=ALONE)
        assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"

    run(sys.executable, "-m", "pip", "wheel", "--quiet", REPO_ROOT / "edge", "-w", wheels)
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-index",
        "--find-links", wheels, "loupe-edge")
    return venv


@pytest.mark.slow
def test_loupe_edge_stands_alone_in_its_own_environment(line_project, edge_venv, tmp_path):
    python = edge_venv / "bin" / "python"
    found = subprocess.run(
        [str(python), "-c", "import importlib.util as u, json, loupe_edge; print(json.dumps("
         "{m: u.find_spec(m) is not None for m in ('torch', 'fiftyone', 'pandas', "
         "'workbench', 'widgets')}))"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=ALONE)
    assert found.returncode == 0, found.stderr
    assert json.loads(found.stdout) == dict.fromkeys(
        ("torch", "fiftyone", "pandas", "workbench", "widgets"), False)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    current = wb.current_deployment(line_project, line=LINE)
    path = line_project.dataset.first().filepath
    command = [str(edge_venv / "bin" / "loupe-edge"), "serve",
               str(line_project.folder / "deployments"), "--line", LINE, "--port", str(port)]
    with serve(command, url + "v1/health", tmp_path / "edge.log", cwd=tmp_path, env=ALONE):
        status, body = _request(url + "v1/inspect", _png(path))
    assert status == 200, body
    verdict = json.loads(body)
    assert verdict["deployment_id"] == current.deployment_id
    assert verdict["label"] == wb.EdgePredictor(current.model_path).predict([path])[0]["label"]


def _render(folder: Path, n: int, seed: int) -> list[Path]:
    """New demo-like images (not in the project), darker, as a night shift gives them."""
    from workbench.demo.render import CLASSES, render_casing

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for index in range(n):
        pixels = render_casing(rng, CLASSES[index % len(CLASSES)], lighting="dim")
        path = folder / f"part_{seed}_{index:03d}.png"
        Image.fromarray((pixels * 0.6).astype(np.uint8)).save(path)
        paths.append(path)
    return paths


def _verdict_lines(out: Path) -> list[dict]:
    path = out / "verdicts" / "verdicts.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() \
        else []


def _wait_lines(out: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> list:
    deadline = time.monotonic() + timeout
    while len(_verdict_lines(out)) < n:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else "watch exited"
        assert time.monotonic() < deadline, f"{len(_verdict_lines(out))} of {n} verdicts"
        time.sleep(0.2)
    return _verdict_lines(out)


def test_watch_logs_every_image_and_sends_the_doubtful_ones_back(line_project, tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    early = _render(incoming, 2, seed=41)  # there before the watch starts
    command = [sys.executable, "-m", "loupe_edge.cli", "watch",
               str(line_project.folder / "deployments"), str(incoming), "--line", LINE,
               "--out", str(out), "--min-confidence", "0.9"]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    try:
        _wait_lines(out, 2, proc)
        later = _render(tmp_path / "camera", 3, seed=42)
        for path in later[:2]:
            shutil.copy(path, incoming / path.name)
        slow = incoming / later[2].name  # written in pieces, as a camera over a share does
        data = later[2].read_bytes()
        with slow.open("wb") as handle:
            for start in range(0, len(data), max(1, len(data) // 4)):
                handle.write(data[start:start + max(1, len(data) // 4)])
                handle.flush()
                time.sleep(0.1)
        (incoming / "not_an_image.png").write_bytes(b"hello")
        lines = _wait_lines(out, 6, proc)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    by_file = {Path(line["file"]).name: line for line in lines}
    assert set(by_file) == {p.name for p in early + later} | {"not_an_image.png"}
    assert "not an image" in by_file["not_an_image.png"]["error"]
    judged = [line for name, line in by_file.items() if name != "not_an_image.png"]
    assert all(line["label"] in line_project.classes for line in judged)
    assert by_file[slow.name]["confidence"] is not None  # read whole, once written
    doubtful = [line for line in judged if line["doubtful"]]
    assert doubtful == [line for line in judged if line["confidence"] < 0.9
                        or line["ood_score"] >= 0.99]
    assert doubtful, "the night images should leave the model unsure"
    for line in doubtful:
        copy = Path(line["feedback"])
        assert copy.read_bytes() == (incoming / Path(line["file"]).name).read_bytes()
        assert json.loads(copy.with_name(copy.name + ".json").read_text())["label"] == \
            line["label"]

    before = len(line_project.dataset)
    report = line_project.import_feedback(out, progress=False)
    assert len(report.added) == len(doubtful) and report.rejected == []
    line_project.dataset.reload()
    assert len(line_project.dataset) == before + len(doubtful)
    sent_back = line_project.dataset.select(report.added)
    assert set(sent_back.distinct("batch")) == {
        f"feedback-{Path(line['feedback']).parent.name}" for line in doubtful}
    verdicts = {Path(line["feedback"]).name: line for line in doubtful}
    for path, prediction, label in zip(*sent_back.values(["filepath", "pred_edge",
                                                           "ground_truth"]), strict=True):
        line = verdicts[Path(path).name]
        assert prediction.label == line["label"] and label is None  # unlabelled
        assert prediction.deployment_id == line["deployment_id"]
    again = line_project.import_feedback(out, progress=False)
    assert again.added == [] and len(again.duplicates) == len(doubtful)


def test_the_verdict_log_stays_whole_when_the_watch_is_killed(line_project, tmp_path):
    incoming, out = tmp_path / "incoming", tmp_path / "out"
    _render(incoming, 30, seed=43)
    proc = subprocess.Popen([sys.executable, "-m", "loupe_edge.cli", "watch",
                             str(line_project.folder / "deployments"), str(incoming),
                             "--line", LINE, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_lines(out, 5, proc)
    finally:
        proc.kill()  # SIGKILL, mid-stream
        proc.wait(timeout=30)
    raw = (out / "verdicts" / "verdicts.jsonl").read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    assert len(lines) >= 5 and all(json.loads(line)["file"] for line in lines)


def test_a_shadow_deployment_answers_beside_the_current_one(line_project, tmp_path):
    deployments = line_project.folder / "deployments"
    current = wb.current_deployment(line_project, line=LINE)
    done = subprocess.run(_command(deployments, free_port(), "--shadow", "no-such-id"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "no-such-id" in done.stderr
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    paths = line_project.dataset.values("filepath")[:4]
    with serve(_command(deployments, port, "--shadow", current.deployment_id),
               url + "v1/health", tmp_path / "edge.log", cwd=REPO_ROOT):
        verdicts = [json.loads(_request(url + "v1/inspect", _png(path))[1]) for path in paths]
        health = json.loads(_request(url + "v1/health")[1])
        metrics = _request(url + "metrics")[1].decode()
    for verdict in verdicts:  # the same model twice: the same answer
        assert verdict["shadow"]["label"] == verdict["label"] and verdict["shadow"]["agrees"]
        assert verdict["shadow"]["deployment_id"] == current.deployment_id
    assert health["shadow"] == {"deployment_id": current.deployment_id,
                                "version": current.version, "images": 4, "agreement": 1.0}
    assert (f'loupe_edge_shadow_agreement{{deployment_id="{current.deployment_id}"}} 1.0'
            in metrics)


def test_loupe_drift_checks_the_newest_window_of_a_verdict_log(line_project, tmp_path):
    """What the line saw, checked like any batch: the images its verdict log names."""
    from workbench.cli import main as loupe

    images = _render(tmp_path / "night", 12, seed=44)
    log_folder = tmp_path / "out" / "verdicts"
    log_folder.mkdir(parents=True)
    lines = [{"file": str(path), "label": "ok"} for path in images]
    lines.insert(3, {"file": str(tmp_path / "gone.png"), "label": "ok"})
    lines.insert(5, {"file": str(tmp_path / "bad.png"), "error": "not an image"})
    (log_folder / "verdicts.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines) + '{"file": "cut sh')
    report = wb.drift(line_project, None, log_folder, write=False)
    assert report.n_images == len(images)
    assert "verdict" in report.batch and report.drifted  # darker nights than the training
    assert [path for path, _ in report.rejected] == [str(tmp_path / "gone.png")]
    assert loupe(["drift", "--project", line_project.name, "--no-store",
                  str(log_folder / "verdicts.jsonl")]) == 3
