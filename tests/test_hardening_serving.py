"""Bounded, rebinding-proof servers (issue 20, rows 5, 6 and 16): real Voila servers on
127.0.0.1 serving a tiny notebook (a kernel of ~60 MB that renders in a second), real
kernel processes counted with psutil, real websockets and Debian chromium.

* Row 5: page visits beyond the cap get a "server busy" page and never a kernel; a kernel
  whose page went away, or that no page ever connected to, is shut down.
* Row 6: a request naming another host (DNS rebinding) gets 403 on pages, API, files and
  websockets.
* Row 16: the token is on no process's command line (nor in the kernels' environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from browser_support import (
    REPO_ROOT,
    chromium,
    free_port,
    log_tail,
    stop,
    wait_for_server,
    write_notebook,
)

from workbench import cli
from workbench.deploy import serve as serving
from workbench.deploy.voila_server import HostPolicy

pytestmark = pytest.mark.slow

TINY = "tiny.ipynb"
EVIL = "evil.example"


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory) -> Path:
    """A folder with one small dashboard: a widget, so a browser page connects to it."""
    folder = tmp_path_factory.mktemp("dashboards")
    write_notebook(folder / TINY, ["import ipywidgets\nipywidgets.IntSlider(value=3)"])
    return folder


@contextlib.contextmanager
def voila(notebooks: Path, log: Path, *, limits: serving.KernelLimits,
          preheat: bool = False, token: str | None = None, ip: str = "127.0.0.1",
          allow_hosts: tuple[str, ...] = ()) -> Iterator[tuple[int, subprocess.Popen]]:
    """Loupe's Voila on a free port serving ``notebooks``; yields (port, process)."""
    port = free_port()
    command = serving.voila_command(port=port, preheat=preheat, pools={TINY: 1},
                                    notebooks=notebooks, limits=limits, token=token, ip=ip,
                                    allow_hosts=allow_hosts)
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True,
                                env=serving.voila_env("unused", token=token))
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", proc, log)
        yield port, proc
    finally:
        stop(proc)


def kernels(pid: int) -> list[psutil.Process]:
    """The kernel processes under ``pid``."""
    found = []
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if "ipykernel_launcher" in " ".join(child.cmdline()):
                    found.append(child)
    return found


def wait_kernels(pid: int, count: int, timeout_s: float, log: Path) -> None:
    deadline = time.monotonic() + timeout_s
    while len(kernels(pid)) != count:
        if time.monotonic() > deadline:
            pytest.fail(f"{len(kernels(pid))} kernels after {timeout_s} s, expected {count}; "
                        f"server output:\n{log_tail(log)}")
        time.sleep(0.2)


def get(port: int, path: str, host: str | None = None,
        headers: dict[str, str] | None = None) -> tuple[int, str, dict[str, str]]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        connection.putrequest("GET", path, skip_host=host is not None)
        if host is not None:
            connection.putheader("Host", host)
        for name, value in (headers or {}).items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return (response.status, response.read().decode(errors="replace"),
                dict(response.getheaders()))
    finally:
        connection.close()


def kernel_id(page: str) -> str:
    match = re.search(r'"kernelId": "([0-9a-f-]{36})"', page)
    assert match, page[:2000]
    return match.group(1)


async def _websocket(port: int, kid: str, host: str, hold_s: float) -> int:
    """Open the page's kernel channel as the browser does; 101 when it opened (closed after
    ``hold_s``), else the refusal's status."""
    from tornado.httpclient import HTTPClientError, HTTPRequest
    from tornado.websocket import websocket_connect

    request = HTTPRequest(f"ws://127.0.0.1:{port}/api/kernels/{kid}/channels",
                          headers={"Host": host, "Origin": f"http://{host}"})
    try:
        connection = await websocket_connect(request)
    except HTTPClientError as err:
        return err.code
    await asyncio.sleep(hold_s)
    connection.close()
    await asyncio.sleep(0.2)
    return 101


def websocket(port: int, kid: str, host: str, hold_s: float = 0.0) -> int:
    return asyncio.run(_websocket(port, kid, host, hold_s))


# -- row 5: a cap on kernels, culling --------------------------------------------------
def test_visits_beyond_the_cap_get_a_busy_page_never_a_kernel(notebooks, tmp_path):
    """Pool 1 + cap 2: eight visits at once, then four more, never hold more than 3
    kernels; the visits beyond the cap get the 'server busy' page (HTTP 503)."""
    log = tmp_path / "voila.log"
    limits = serving.KernelLimits(max_kernels=2, idle_timeout_s=600, busy_wait_s=1)
    with voila(notebooks, log, limits=limits, preheat=True) as (port, proc):
        wait_kernels(proc.pid, 1, 120, log)  # the preheated kernel
        most, done = [0], threading.Event()

        def watch() -> None:
            while not done.is_set():
                most[0] = max(most[0], len(kernels(proc.pid)))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        results: list[tuple[int, str, dict]] = []
        visitors = [threading.Thread(target=lambda: results.append(
            get(port, f"/voila/render/{TINY}"))) for _ in range(8)]
        for visitor in visitors:
            visitor.start()
        for visitor in visitors:
            visitor.join()
        later = [get(port, f"/voila/render/{TINY}") for _ in range(4)]
        time.sleep(serving.REFILL_DELAY_S + 5)  # the pool refills after a page took its kernel
        done.set()
        watcher.join()
        statuses = sorted(status for status, _, _ in results)
        assert statuses == [200, 200, *[503] * 6], statuses
        assert [status for status, _, _ in later] == [503] * 4
        busy = next(body for status, body, _ in results if status == 503)
        assert "The server is busy" in busy and "2 people are using it" in busy
        assert most[0] <= 1 + 2, f"{most[0]} kernels (pool 1 + cap 2)"
        assert len(kernels(proc.pid)) == 3  # both pages' kernels and the refilled pool
    assert "Using pre-heated kernel" in log.read_text()


def test_kernels_are_culled_when_their_page_goes_away_or_never_comes(notebooks, tmp_path):
    """A visit no page connects to (curl) loses its kernel after the idle timeout; a page
    keeps its kernel while connected however long it idles, and loses it once its
    websocket closed; a preheated kernel waiting in the pool is never culled."""
    log = tmp_path / "voila.log"
    limits = serving.KernelLimits(max_kernels=4, idle_timeout_s=3, page_gone_s=2,
                                  page_idle_s=0)
    with voila(notebooks, log, limits=limits, preheat=True) as (port, proc):
        wait_kernels(proc.pid, 1, 120, log)
        (pooled,) = {k.pid for k in kernels(proc.pid)}
        status, page, _ = get(port, f"/voila/render/{TINY}")  # takes the preheated kernel
        assert status == 200
        taken, opened = kernel_id(page), []
        # The page connects at once (as its scripts do) and idles for 8x the idle timeout.
        held = threading.Thread(target=lambda: opened.append(
            websocket(port, taken, f"127.0.0.1:{port}", hold_s=25)))
        held.start()
        time.sleep(1)
        # A curl visit: it waits for the pool's refill (REFILL_DELAY_S) and never connects.
        status, curl_page, _ = get(port, f"/voila/render/{TINY}")
        assert status == 200 and kernel_id(curl_page) != taken
        (curled,) = {k.pid for k in kernels(proc.pid)} - {pooled}
        deadline = time.monotonic() + 8  # idle timeout 3 s, checked every second
        while curled in {k.pid for k in kernels(proc.pid)} and time.monotonic() < deadline:
            time.sleep(0.2)
        alive = {k.pid for k in kernels(proc.pid)}
        assert curled not in alive, "the curl's kernel outlived the idle timeout"
        assert pooled in alive, "the connected page lost its kernel"
        held.join()
        assert opened == [101]
        # The page went away: its kernel is shut down within page_gone_s (+ slack).
        deadline = time.monotonic() + 10
        while pooled in {k.pid for k in kernels(proc.pid)} and time.monotonic() < deadline:
            time.sleep(0.2)
        assert pooled not in {k.pid for k in kernels(proc.pid)}, log_tail(log)
        # The pool refilled (REFILL_DELAY_S after the page took its kernel); the new
        # preheated kernel idles past the timeout and stays.
        wait_kernels(proc.pid, 1, 60, log)
        (refilled,) = {k.pid for k in kernels(proc.pid)}
        time.sleep(6)
        assert {k.pid for k in kernels(proc.pid)} == {refilled}
    assert "Culling" in log.read_text()


def test_a_closed_browser_page_frees_its_kernel(notebooks, tmp_path):
    """Chromium opens the dashboard, then leaves it: the page's 'beforeunload' beacon shuts
    its kernel down at once (the page-gone and idle timers are far longer)."""
    log = tmp_path / "voila.log"
    limits = serving.KernelLimits(max_kernels=2, idle_timeout_s=600, page_gone_s=600)
    with chromium() as browser, voila(notebooks, log, limits=limits) as (port, proc):
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{port}/voila/render/{TINY}")
        page.wait_for_selector(".widget-slider", timeout=120_000)
        assert len(kernels(proc.pid)) == 1
        page.goto("about:blank")
        wait_kernels(proc.pid, 0, 15, log)


# -- row 6: Host / Origin allow-list ---------------------------------------------------
def test_a_foreign_host_is_refused_on_pages_api_files_and_websockets(notebooks, tmp_path):
    log = tmp_path / "voila.log"
    limits = serving.KernelLimits(max_kernels=2, idle_timeout_s=600)
    with voila(notebooks, log, limits=limits, allow_hosts=("inspect.example",)) as (port,
                                                                                   proc):
        status, page, _ = get(port, f"/voila/render/{TINY}")
        assert status == 200
        kid = kernel_id(page)
        evil = f"{EVIL}:{port}"
        for path in ("/", f"/voila/render/{TINY}", f"/api/kernels/{kid}",
                     "/voila/static/voila.js", f"/voila/tree/{TINY}"):
            status, body, _ = get(port, path, host=evil)
            assert status == 403, (path, status, body[:300])
            assert "allow-host" in body
        status, body, _ = get(port, "/", headers={"Origin": f"http://{evil}"})
        assert status == 403, "a foreign Origin is refused even with a loopback Host"
        assert websocket(port, kid, evil) == 403
        assert len(kernels(proc.pid)) == 1  # the refused page started no kernel
        # Allowed names still work, and so does the page's own websocket.
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}",
                     f"inspect.example:{port}"):
            assert get(port, "/", host=host)[0] == 200, host
        assert websocket(port, kid, f"127.0.0.1:{port}") == 101


def test_host_policy_follows_jupyter_semantics():
    policy = HostPolicy(serving.allowed_hosts("127.0.0.1", ["Inspect.Example"]))
    for host in ("localhost:8866", "127.0.0.1", "127.0.0.2:80", "[::1]:8866", "::1",
                 "inspect.example:8866", "INSPECT.EXAMPLE."):
        assert policy.allows(host), host
    for host in ("evil.example:8866", "localhost.evil.example", "10.0.0.5:8866", "",
                 "192.168.1.20"):
        assert not policy.allows(host), host
    assert policy.refusal("127.0.0.1:8866", "null") is not None
    assert policy.refusal("127.0.0.1:8866", "http://localhost:8866") is None
    bound = HostPolicy(serving.allowed_hosts("192.168.1.20"))
    assert bound.allows("192.168.1.20:8866") and not bound.allows("192.168.1.21")
    everywhere = serving.allowed_hosts("0.0.0.0")
    assert "127.0.0.1" in everywhere and len(everywhere) > len(serving.LOOPBACK_NAMES)
    with pytest.raises(ValueError, match="allow_hosts"):
        serving.allowed_hosts("127.0.0.1", ["a.example:8866, b"])


# -- row 16: no token on a command line ------------------------------------------------
def _tree_cmdlines(pid: int) -> list[str]:
    root = psutil.Process(pid)
    lines = []
    for proc in (root, *root.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            lines.append(Path(f"/proc/{proc.pid}/cmdline").read_bytes()
                         .replace(b"\0", b" ").decode(errors="replace"))
    return lines


@pytest.fixture(scope="module")
def empty_project():
    import workbench as wb

    p = wb.Project.create(f"hardening-serving-{os.getpid()}", overwrite=True)
    yield p.name
    wb.delete_project(p.name)


@pytest.mark.parametrize("how", ["token-file", "environment"])
def test_loupe_serve_puts_the_token_on_no_command_line(empty_project, tmp_path, how):
    token = serving.new_token()
    port = free_port()
    command = [sys.executable, "-m", "workbench.cli", "serve", "--project", empty_project,
               "--port", str(port), "--no-preheat"]
    env = {**os.environ, "LOUPE_TOKEN": ""}
    if how == "token-file":
        secret = tmp_path / "token"
        secret.write_text(token + "\n")
        secret.chmod(0o600)
        command += ["--token-file", str(secret)]
    else:
        env["LOUPE_TOKEN"] = token
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(command, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env)
    try:
        wait_for_server(f"http://127.0.0.1:{port}/", proc, log)
        lines = _tree_cmdlines(proc.pid)
        assert any("workbench.deploy.voila_server" in line for line in lines), lines
        assert not [line for line in lines if token in line]
        assert get(port, "/")[0] in (302, 401, 403)  # the token is in force
        assert get(port, f"/?token={token}")[0] == 200
    finally:
        stop(proc)


def test_kernels_inherit_no_token(notebooks, tmp_path):
    token = serving.new_token()
    log = tmp_path / "voila.log"
    limits = serving.KernelLimits(max_kernels=2, idle_timeout_s=600)
    with voila(notebooks, log, limits=limits, token=token) as (port, proc):
        assert get(port, f"/voila/render/{TINY}")[0] in (302, 401, 403)
        assert get(port, f"/voila/render/{TINY}?token={token}")[0] == 200
        (kernel,) = kernels(proc.pid)
        assert token not in " ".join(kernel.cmdline())
        assert token.encode() not in Path(f"/proc/{kernel.pid}/environ").read_bytes()
        assert not [line for line in _tree_cmdlines(proc.pid) if token in line]


def test_a_server_beyond_loopback_refuses_to_start_without_a_token(notebooks, tmp_path):
    """Even a command built with a token, started without it in its environment."""
    command = serving.voila_command(port=free_port(), preheat=False, ip="0.0.0.0",
                                    token=serving.new_token(), notebooks=notebooks)
    assert not [arg for arg in command if "token" in arg.lower()]
    done = subprocess.run(command, cwd=REPO_ROOT, env=serving.voila_env("unused"),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "JUPYTER_TOKEN" in done.stderr + done.stdout


def test_cli_token_sources(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("LOUPE_TOKEN", raising=False)
    secret = tmp_path / "token"
    secret.write_text(serving.new_token())
    secret.chmod(0o644)
    code = cli.main(["serve", "--project", "no-such-project-here", "--token-file", str(secret)])
    assert code == 2 and "chmod 600" in capsys.readouterr().err
    # --token on the command line still works, with a warning naming the safe ways.
    code = cli.main(["serve", "--project", "no-such-project-here", "--token",
                     serving.new_token()])
    err = capsys.readouterr().err
    assert code == 2 and "--token-file" in err and "no-such-project-here" in err
    assert "ps" in err
    monkeypatch.setenv("LOUPE_TOKEN", "short")
    assert cli.main(["serve", "--project", "no-such-project-here"]) == 2
    assert "at least 16" in capsys.readouterr().err


def test_serve_command_carries_the_bounds():
    command = serving.voila_command(limits=serving.KernelLimits(max_kernels=3,
                                                                idle_timeout_s=60))
    assert "--KernelBudget.max_kernels=3" in command
    assert "--MappingKernelManager.cull_idle_timeout=60" in command
    assert "--VoilaConfiguration.allow_template_override=NO" in command
    pools = json.loads(next(arg for arg in command if "kernel_pools_config" in arg)
                       .split("=", 1)[1])
    assert pools["review.ipynb"]["pool_size"] == 2
    args = cli.build_parser().parse_args(["serve", "--project", "p", "--max-kernels", "4",
                                          "--allow-host", "a.example"])
    assert args.max_kernels == 4 and args.allow_host == ["a.example"]
    assert cli.build_parser().parse_args(["demo"]).max_kernels == 6
    with pytest.raises(ValueError, match="max_kernels"):
        serving.KernelLimits(max_kernels=0)
