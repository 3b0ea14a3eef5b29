"""Safe serving: the dashboards bind 127.0.0.1 unless told otherwise, any other address
needs a token, and Voila hands out no file outside the dashboards (and no notebook source).
"""

from __future__ import annotations

import http.client
import socket

import psutil
import pytest
from browser_support import free_port, serve

from workbench import cli
from workbench.deploy import serve as serving

pytestmark = pytest.mark.slow  # subprocesses, servers or notebooks

TRAVERSALS = [
    "/voila/files/../../etc/passwd",
    "/voila/files/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
    "/voila/files/..%2f..%2f..%2fetc%2fpasswd",
    "/voila/files//etc/passwd",
    "/voila/files/../../workbench/cli.py",
    "/voila/files/%2e%2e/%2e%2e/workbench/cli.py",
    "/voila/render/../../../etc/passwd",
    "/voila/render/%2e%2e%2f%2e%2e%2fworkbench%2fcli.py",
    "/voila/files/main.ipynb",          # a dashboard's source: not an allowed file type
    "/voila/files/review.ipynb",
    "/files/etc/passwd",
    "/api/contents/",
    "/api/contents/main.ipynb",
]


def _get(port: int, path: str, host: str = "127.0.0.1",
         redirects: int = 0) -> tuple[int, bytes]:
    """A GET with the path sent exactly as written (no client-side normalisation),
    following up to ``redirects`` same-server redirects."""
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        status, body = response.status, response.read()
        location = response.getheader("Location")
    finally:
        connection.close()
    if 300 <= status < 400 and redirects and location and location.startswith("/"):
        return _get(port, location, host, redirects - 1)
    return status, body


def _other_address() -> str | None:
    """An IPv4 address of this machine that is not a loopback one (None if it has none)."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family == socket.AF_INET and not address.address.startswith("127."):
                return address.address
    return None


def test_default_command_binds_loopback_hides_sources_and_has_no_token():
    command = serving.voila_command(preheat=False)
    assert "--Voila.ip=127.0.0.1" in command
    assert "--strip_sources=True" in command
    assert not any(arg.startswith("--Voila.token") for arg in command)
    args = cli.build_parser().parse_args(["serve", "--project", "demo"])
    assert args.ip == "127.0.0.1"
    demo = cli.build_parser().parse_args(["demo"])
    assert not hasattr(demo, "ip")  # make demo cannot be talked into another address


def test_other_addresses_need_a_token():
    with pytest.raises(ValueError, match="token"):
        serving.voila_command(ip="0.0.0.0", preheat=False)
    with pytest.raises(ValueError, match="at least 16"):
        serving.voila_command(ip="0.0.0.0", token="short", preheat=False)
    with pytest.raises(ValueError, match="IP address"):
        serving.voila_command(ip="every-interface", preheat=False)
    token = serving.new_token()
    command = serving.voila_command(ip="0.0.0.0", token=token, preheat=False)
    assert not [arg for arg in command if token in arg]  # it travels in the environment
    assert serving.voila_env("demo", token=token)[serving.TOKEN_ENV] == token
    assert "--show_tracebacks=False" in command  # no code or paths leak to the network
    assert serving.is_loopback("::1") and serving.is_loopback("localhost")


def test_cli_refuses_another_address_with_a_weak_token(capsys):
    code = cli.main(["serve", "--project", "anything", "--ip", "0.0.0.0", "--token", "abc"])
    assert code == 2
    assert "at least 16" in capsys.readouterr().err


@pytest.fixture(scope="module")
def loopback_server(tmp_path_factory):
    port = free_port()
    log = tmp_path_factory.mktemp("voila") / "voila.log"
    command = serving.voila_command(port=port, preheat=False)
    with serve(command, f"http://127.0.0.1:{port}/", log, env=serving.voila_env("demo")):
        yield port


@pytest.mark.parametrize("path", TRAVERSALS)
def test_no_file_outside_the_dashboards_is_served(loopback_server, path):
    status, body = _get(loopback_server, path, redirects=3)  # tornado redirects '..' away
    assert status in (400, 403, 404, 405), (path, status, body[:200])
    assert b"root:" not in body and b"def build_parser" not in body
    assert b"import workbench" not in body


def test_the_landing_page_is_served_and_only_on_loopback(loopback_server):
    status, body = _get(loopback_server, "/")
    assert status == 200 and b"review" in body
    other = _other_address()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address to try")
    with pytest.raises(OSError):
        _get(loopback_server, "/", host=other)


def test_a_token_server_refuses_requests_without_it(tmp_path):
    port = free_port()
    token = serving.new_token()
    command = serving.voila_command(port=port, preheat=False, ip="0.0.0.0", token=token)
    with serve(command, f"http://127.0.0.1:{port}/", tmp_path / "voila.log",
               env=serving.voila_env("demo", token=token)):
        status, body = _get(port, "/")
        assert status in (302, 401, 403), (status, body[:200])
        assert b"review.ipynb" not in body
        status, body = _get(port, f"/?token={token}")
        assert status == 200 and b"review" in body
        status, _ = _get(port, f"/?token={token[:-1]}x")
        assert status in (302, 401, 403)


def test_the_review_page_leaves_out_the_plotly_extension(loopback_server):
    """It draws no chart: the 4.7 MB plotly front-end is not sent (faster first widget)."""
    status, review = _get(loopback_server, "/voila/render/review.ipynb")
    assert status == 200 and b"anywidget" in review
    assert b"jupyterlab-plotly" not in review
    status, main = _get(loopback_server, "/voila/render/main.ipynb")
    assert status == 200 and b"jupyterlab-plotly" in main
    for page in (review, main):  # no dashboard runs JupyterLab's preview button or pygments
        assert b"jupyterlab-preview" not in page and b"jupyterlab_pygments" not in page
        assert b"@jupyter-widgets/jupyterlab-manager" in page
