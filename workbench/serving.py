"""Serve the Voila dashboards of ``notebooks/dashboards`` (``loupe serve``, ``loupe demo``).

One Voila server on 127.0.0.1 serves the whole folder: a landing page linking the review
app, the model report and the main workbench. It uses Loupe's Voila template
(``notebooks/share/voila/templates/loupe``): Voila's ``lab`` template without the requests
its pages make to a CDN (Font Awesome comes from Voila's own bundle), so the dashboards
render on a machine with no network.

Preheated kernels: Voila runs a notebook before it sends the page; with
``preheat_kernel`` a pool of kernels per dashboard has already imported torch and
FiftyOne and run the notebook, so opening a dashboard is a matter of sending the page.
A preheated kernel ran the notebook under the *server's* environment (``LOUPE_PROJECT``);
per-person choices (your name, another project) are widgets in the page, never variables.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
#: The folder Voila serves.
DASHBOARDS = REPO_ROOT / "notebooks" / "dashboards"
#: A Jupyter data directory holding ``voila/templates/loupe`` (prepended to JUPYTER_PATH).
TEMPLATES = REPO_ROOT / "notebooks" / "share"
TEMPLATE = "loupe"
#: Folder of Loupe's ``voila.py`` (the per-page extension hook).
CONFIG = TEMPLATES / "voila" / "config"
#: Front-end extensions a dashboard does not need (file name -> extension names).
UNUSED_EXTENSIONS: Mapping[str, tuple[str, ...]] = {"review.ipynb": ("jupyterlab-plotly",)}
#: Front-end extensions no dashboard page needs: JupyterLab's "Voila preview" button and the
#: syntax-highlighting theme of code cells (the pages show no code).
NEVER_USED_EXTENSIONS: tuple[str, ...] = ("@voila-dashboards/jupyterlab-preview",
                                          "jupyterlab_pygments")
DEFAULT_PORT = 8866
#: Preheated kernels kept ready per dashboard: two inspectors may open the review app at
#: once; the main workbench builds every widget, so it is rendered on demand.
DEFAULT_POOLS: Mapping[str, int] = {"review.ipynb": 2, "report.ipynb": 1}
#: Seconds between a page taking a preheated kernel and the pool starting its replacement
#: (Voila waits 1 s): a new kernel imports torch and FiftyOne on the same cores the page is
#: loading on, so it waits until the page has opened. The second kernel of a pool covers a
#: visitor who comes in the meantime.
REFILL_DELAY_S = 10.0


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    return port


def _check_pools(pools: Mapping[str, int]) -> dict[str, int]:
    checked = {}
    for name, size in pools.items():
        if not (DASHBOARDS / name).is_file():
            raise ValueError(f"pools: {name!r} is not a notebook of {DASHBOARDS} "
                             f"(dashboards: {', '.join(dashboards())})")
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= 8:
            raise ValueError(f"pools: the pool size of {name!r} must be an integer from 0 to "
                             f"8, got {size!r}")
        checked[name] = size
    return checked


def dashboards() -> list[str]:
    """The notebooks served (file names in ``notebooks/dashboards``)."""
    return sorted(path.name for path in DASHBOARDS.glob("*.ipynb"))


def voila_executable() -> str:
    """The ``voila`` of this environment (raises FileNotFoundError when missing)."""
    voila = shutil.which("voila", path=str(Path(sys.executable).parent)) or shutil.which("voila")
    if voila is None:
        raise FileNotFoundError("voila is not installed; run 'make install', or use 'make lab'")
    return voila


def is_loopback(ip: str) -> bool:
    """Whether ``ip`` is an address only this machine can reach (127.x, ::1, localhost)."""
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        raise ValueError(f"ip must be an IP address such as 127.0.0.1 or 0.0.0.0, got "
                         f"{ip!r}") from None


def check_token(token: str | None) -> None:
    """Raise ValueError unless ``token`` is None or at least 16 printable characters
    without spaces."""
    if token is not None and (not isinstance(token, str) or len(token) < 16
                              or not token.isprintable() or " " in token):
        raise ValueError("token must be at least 16 printable characters without spaces; "
                         "use workbench.serving.new_token()")


def new_token() -> str:
    """A random access token for a server bound beyond this machine."""
    return secrets.token_urlsafe(24)


def voila_command(*, port: int = DEFAULT_PORT, preheat: bool = True,
                  pools: Mapping[str, int] | None = None, ip: str = "127.0.0.1",
                  token: str | None = None) -> list[str]:
    """The Voila command line serving the dashboards folder.

    Parameters
    ----------
    port : int, default 8866
    preheat : bool, default True
        Keep kernels that already ran each dashboard ready (``--preheat_kernel``); a used
        kernel is replaced :data:`REFILL_DELAY_S` seconds later, once its page has loaded.
    pools : mapping of str to int, optional
        Preheated kernels per dashboard file (default :data:`DEFAULT_POOLS`; dashboards not
        named get none and render on demand). Ignored without ``preheat``.
    ip : str, default "127.0.0.1"
        The address to bind. Anything but a loopback address needs ``token``.
    token : str, optional
        Every request must carry it (``?token=…`` once, then a cookie). Required when
        ``ip`` is not a loopback address: a dashboard stores decisions under whatever name
        is typed, so it must not be open to the whole network.

    Raises
    ------
    ValueError
        For a non-loopback ``ip`` without a token, or a token shorter than 16 characters.

    The notebooks' sources are never sent (``strip_sources``), tracebacks are shown only on
    a loopback server, and Voila serves no file outside ``notebooks/dashboards`` (and there
    only images: its default ``file_allowlist``).
    """
    check_token(token)
    loopback = is_loopback(ip)
    if not loopback and token is None:
        raise ValueError(f"binding {ip} makes the dashboards reachable from other machines: "
                         "pass a token (loupe serve --ip ... prints a new one)")
    if not DASHBOARDS.is_dir():
        raise FileNotFoundError(
            f"dashboards not found at {DASHBOARDS}; run from a source checkout "
            "(pip install -e .) or open the notebooks with 'make lab'")
    command = [voila_executable(), str(DASHBOARDS), f"--port={_check_port(port)}",
               "--no-browser", f"--Voila.ip={ip}", f"--template={TEMPLATE}",
               "--strip_sources=True", f"--show_tracebacks={loopback}",
               f"--Voila.config_file_paths={CONFIG}"]
    if token is not None:
        command.append(f"--Voila.token={token}")
    if preheat:
        sizes = _check_pools(DEFAULT_POOLS if pools is None else pools)
        config = {"default": {"pool_size": 0}, **{k: {"pool_size": v} for k, v in sizes.items()}}
        command += ["--preheat_kernel=True", "--pool_size=0",
                    f"--VoilaKernelManager.kernel_pools_config={_json(config)}",
                    f"--VoilaKernelManager.fill_delay={REFILL_DELAY_S}"]
    return command


def voila_env(project: str, *, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``LOUPE_PROJECT`` (what preheated kernels open) and the
    template folder on ``JUPYTER_PATH``."""
    if not isinstance(project, str) or not project.strip():
        raise ValueError(f"project must be a non-empty project name, got {project!r}")
    env = dict(os.environ if environ is None else environ)
    paths = [str(TEMPLATES), *filter(None, env.get("JUPYTER_PATH", "").split(os.pathsep))]
    env["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["LOUPE_PROJECT"] = project.strip()
    return env


def serve_dashboards(project: str, *, port: int = DEFAULT_PORT, preheat: bool = True,
                     pools: Mapping[str, int] | None = None, ip: str = "127.0.0.1",
                     token: str | None = None) -> int:
    """Serve the dashboards on ``http://<ip>:port/`` until stopped (Ctrl+C).

    On a non-loopback ``ip`` without ``token`` a new token is made and printed with the
    address to share. Returns Voila's exit status (0 after Ctrl+C).
    """
    if not is_loopback(ip) and token is None:
        token = new_token()
    command = voila_command(port=port, preheat=preheat, pools=pools, ip=ip, token=token)
    env = voila_env(project)
    host = "127.0.0.1" if is_loopback(ip) else ip
    query = f"?token={token}" if token else ""
    if not is_loopback(ip):
        print(f"WARNING: serving on {ip}: anyone on the network with the token can open the "
              "dashboards and store decisions. Share the address below only with inspectors.",
              flush=True)
    print(f"Loupe dashboards for {project!r}: http://{host}:{port}/{query}  (review: "
          f"/voila/render/review.ipynb, report: /voila/render/report.ipynb; Ctrl+C to stop; "
          "notebooks: make lab)", flush=True)
    if preheat:
        print("preheating kernels: the first page is ready once the server logs "
              "'Kernel pool of … is filled'", flush=True)
    try:
        return subprocess.call(command, env=env, cwd=REPO_ROOT)
    except KeyboardInterrupt:
        return 0


def page_config_hook(page_config: dict[str, Any], base_url: str, settings: dict[str, Any],
                     log: Any, voila_configuration: Any, notebook_path: str) -> dict[str, Any]:
    """Voila's per-page hook: leave out the front-end extensions a dashboard does not use
    (:data:`NEVER_USED_EXTENSIONS`, :data:`UNUSED_EXTENSIONS`), so the browser neither
    downloads nor runs them."""
    unused = {*NEVER_USED_EXTENSIONS, *UNUSED_EXTENSIONS.get(Path(str(notebook_path)).name, ())}
    extensions = page_config.get("federated_extensions")
    if isinstance(extensions, list):
        page_config["federated_extensions"] = [
            e for e in extensions if not (isinstance(e, dict) and e.get("name") in unused)]
    return page_config


def _json(value: object) -> str:
    import json

    return json.dumps(value, separators=(",", ":"))
