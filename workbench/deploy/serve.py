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

Bounds (:mod:`workbench.deploy.voila_server`, the Voila the command runs): at most
:attr:`KernelLimits.max_kernels` kernels serve pages at once, on top of the preheated pools;
a page's kernel is shut down when the page goes away or sits idle; a visit beyond the cap
gets a "server busy" page, never a new kernel. Requests must name the server by an allowed
``Host`` (loopback names, the ``--ip`` address, ``allow_hosts``); the token travels in the
server's environment, never on a command line.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import secrets
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
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
DEFAULT_POOLS: Mapping[str, int] = {"review.ipynb": 2, "report.ipynb": 1,
                                    "line.ipynb": 1}
#: Seconds between a page taking a preheated kernel and the pool starting its replacement
#: (Voila waits 1 s): a new kernel imports torch and FiftyOne on the same cores the page is
#: loading on, so it waits until the page has opened. The second kernel of a pool covers a
#: visitor who comes in the meantime.
REFILL_DELAY_S = 10.0
#: Names every server answers to; requests naming anything else get 403 (DNS rebinding).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
#: The environment variable that carries the token into the Voila process.
TOKEN_ENV = "JUPYTER_TOKEN"


@dataclass(frozen=True)
class KernelLimits:
    """How many kernels a server holds, and for how long.

    Parameters
    ----------
    max_kernels : int, default 6
        Kernels serving pages at once (each 0.65-1.1 GB: 6 plus the 3 preheated ones fit a
        16 GB machine). The preheated pools come on top; a visit beyond the cap waits
        ``busy_wait_s``, then gets a "server busy" page (HTTP 503).
    idle_timeout_s : float, default 120
        A kernel no page is connected to (a ``curl``, a page that never loaded) is shut down
        after this many seconds without activity.
    page_gone_s : float, default 30
        A page's kernel is shut down this long after the page's last websocket closed (the
        page also asks for it on ``beforeunload``); a reconnecting page keeps it.
    page_idle_s : float, default 3600
        The kernel of a page left open without a click for this long is shut down (0: never).
    busy_wait_s : float, default 5
        How long a visit beyond the cap waits for a kernel to be freed.
    """

    max_kernels: int = 6
    idle_timeout_s: float = 120.0
    page_gone_s: float = 30.0
    page_idle_s: float = 3600.0
    busy_wait_s: float = 5.0

    def __post_init__(self) -> None:
        if (isinstance(self.max_kernels, bool) or not isinstance(self.max_kernels, int)
                or not 1 <= self.max_kernels <= 64):
            raise ValueError(f"max_kernels must be an integer from 1 to 64, got "
                             f"{self.max_kernels!r}")
        for field in ("idle_timeout_s", "page_gone_s", "page_idle_s", "busy_wait_s"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{field} must be a number of seconds >= 0, got {value!r}")
        if self.idle_timeout_s < 1:
            raise ValueError(f"idle_timeout_s must be at least 1 s (kernels are always "
                             f"culled), got {self.idle_timeout_s!r}")

    def arguments(self) -> list[str]:
        """Voila command-line options (Jupyter's culler plus
        :mod:`workbench.deploy.voila_server`)."""
        interval = max(1, min(30, int(self.idle_timeout_s // 4)))
        return [f"--KernelBudget.max_kernels={self.max_kernels}",
                f"--KernelBudget.page_gone_s={float(self.page_gone_s)}",
                f"--KernelBudget.page_idle_s={float(self.page_idle_s)}",
                f"--LoupeVoila.busy_wait_s={float(self.busy_wait_s)}",
                f"--MappingKernelManager.cull_idle_timeout={max(1, round(self.idle_timeout_s))}",
                f"--MappingKernelManager.cull_interval={interval}",
                "--MappingKernelManager.cull_connected=False"]


def _check_port(port: object) -> int:
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"port must be an integer from 1 to 65535, got {port!r}")
    return port


def _check_pools(pools: Mapping[str, int], folder: Path = DASHBOARDS) -> dict[str, int]:
    checked = {}
    for name, size in pools.items():
        if not (folder / name).is_file():
            names = sorted(path.name for path in folder.glob("*.ipynb"))
            raise ValueError(f"pools: {name!r} is not a notebook of {folder} "
                             f"(dashboards: {', '.join(names)})")
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


def server_executable() -> list[str]:
    """The command that starts Loupe's Voila (:mod:`workbench.deploy.voila_server`) in this
    environment (raises FileNotFoundError when Voila is missing)."""
    if importlib.util.find_spec("voila") is None:
        raise FileNotFoundError("voila is not installed; run 'make install', or use 'make lab'")
    return [sys.executable, "-m", "workbench.deploy.voila_server"]


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
                         "use workbench.deploy.serve.new_token()")


def read_token_file(path: str | os.PathLike[str]) -> str:
    """The token in ``path`` (surrounding whitespace removed); the file must be a regular
    file that only its owner can read (``chmod 600``)."""
    file = Path(path)
    try:
        mode = file.stat().st_mode
    except OSError as err:
        raise FileNotFoundError(f"token file {file}: {err.strerror}") from None
    if not file.is_file():
        raise ValueError(f"token file {file} is not a regular file")
    if mode & 0o077:
        raise ValueError(f"token file {file} can be read by other users (mode "
                         f"{mode & 0o777:o}): run 'chmod 600 {file}'")
    token = file.read_text(encoding="utf-8").strip()
    try:
        check_token(token)
    except ValueError as err:
        raise ValueError(f"token file {file}: {err}") from None
    return token


def new_token() -> str:
    """A random access token for a server bound beyond this machine."""
    return secrets.token_urlsafe(24)


def allowed_hosts(ip: str = "127.0.0.1", extra: Sequence[str] = ()) -> list[str]:
    """The ``Host`` names a server bound to ``ip`` answers to: the loopback names, ``ip``
    itself, for ``0.0.0.0``/``::`` every address and name of this machine, and ``extra``
    (names inspectors use, e.g. ``inspection-pc.local``)."""
    is_loopback(ip)  # a ValueError for anything but an address
    names = [*LOOPBACK_NAMES]
    if ipaddress.ip_address("127.0.0.1" if ip == "localhost" else ip).is_unspecified:
        names += [socket.gethostname(), socket.getfqdn(), *_machine_addresses()]
    elif ip != "localhost":
        names.append(ip)
    for name in extra:
        if (not isinstance(name, str) or not name.strip() or any(ch in name for ch in ", /")
                or not name.isprintable()):
            raise ValueError(f"allow_hosts: {name!r} is not a host name or address (one "
                             "name per entry, no port, e.g. 'inspection-pc.local')")
        names.append(name.strip())
    return list(dict.fromkeys(name.lower() for name in names if name))


def _machine_addresses() -> list[str]:
    import psutil

    return [address.address.split("%")[0] for addresses in psutil.net_if_addrs().values()
            for address in addresses if address.family in (socket.AF_INET, socket.AF_INET6)]


def voila_command(*, port: int = DEFAULT_PORT, preheat: bool = True,
                  pools: Mapping[str, int] | None = None, ip: str = "127.0.0.1",
                  token: str | None = None, limits: KernelLimits | None = None,
                  allow_hosts: Sequence[str] = (), notebooks: Path | None = None) -> list[str]:
    """The command line of Loupe's Voila (:mod:`workbench.deploy.voila_server`) serving the
    dashboards folder. It never holds the token: pass that to :func:`voila_env`.

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
        Only checked here (a non-loopback ``ip`` needs one; the server refuses to start
        without it too): it reaches the server through :func:`voila_env`.
    limits : KernelLimits, optional
        Kernel cap and culling (default :class:`KernelLimits()`).
    allow_hosts : sequence of str, default ()
        Host names the server answers to besides :func:`allowed_hosts` ``(ip)``.
    notebooks : Path, optional
        The folder served (default :data:`DASHBOARDS`).

    Raises
    ------
    ValueError
        For a non-loopback ``ip`` without a token, or a token shorter than 16 characters.

    The notebooks' sources are never sent (``strip_sources``), tracebacks are shown only on
    a loopback server, the page template and theme cannot be switched from the URL, and
    Voila serves no file outside the folder (and there only images: its default
    ``file_allowlist``).
    """
    check_token(token)
    loopback = is_loopback(ip)
    if not loopback and token is None:
        raise ValueError(f"binding {ip} makes the dashboards reachable from other machines: "
                         "pass a token (loupe serve --ip ... prints a new one)")
    folder = DASHBOARDS if notebooks is None else Path(notebooks)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"dashboards not found at {folder}; run from a source checkout "
            "(pip install -e .) or open the notebooks with 'make lab'")
    limits = KernelLimits() if limits is None else limits
    hosts = allowed_hosts(ip, allow_hosts)
    command = [*server_executable(), str(folder), f"--port={_check_port(port)}",
               "--no-browser", f"--Voila.ip={ip}", f"--template={TEMPLATE}",
               "--strip_sources=True", f"--show_tracebacks={loopback}",
               f"--Voila.config_file_paths={CONFIG}",
               "--VoilaConfiguration.allow_template_override=NO",
               "--VoilaConfiguration.allow_theme_override=NO",
               f"--LoupeVoila.allowed_hosts={','.join(hosts)}", *limits.arguments()]
    if preheat:
        sizes = _check_pools(DEFAULT_POOLS if pools is None else pools, folder)
        config = {"default": {"pool_size": 0}, **{k: {"pool_size": v} for k, v in sizes.items()}}
        command += ["--preheat_kernel=True", "--pool_size=0",
                    f"--VoilaKernelManager.kernel_pools_config={_json(config)}",
                    f"--VoilaKernelManager.fill_delay={REFILL_DELAY_S}"]
    return command


def voila_env(project: str, *, token: str | None = None,
              environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The server's environment: ``LOUPE_PROJECT`` (what preheated kernels open), the
    template folder on ``JUPYTER_PATH`` and the token in ``JUPYTER_TOKEN`` (the server
    reads and removes it; a ``JUPYTER_TOKEN`` inherited from the caller is dropped)."""
    if not isinstance(project, str) or not project.strip():
        raise ValueError(f"project must be a non-empty project name, got {project!r}")
    check_token(token)
    env = dict(os.environ if environ is None else environ)
    paths = [str(TEMPLATES), *filter(None, env.get("JUPYTER_PATH", "").split(os.pathsep))]
    env["JUPYTER_PATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["LOUPE_PROJECT"] = project.strip()
    env.pop(TOKEN_ENV, None)
    if token is not None:
        env[TOKEN_ENV] = token
    return env


def serve_dashboards(project: str, *, port: int = DEFAULT_PORT, preheat: bool = True,
                     pools: Mapping[str, int] | None = None, ip: str = "127.0.0.1",
                     token: str | None = None, limits: KernelLimits | None = None,
                     allow_hosts: Sequence[str] = ()) -> int:
    """Serve the dashboards on ``http://<ip>:port/`` until stopped (Ctrl+C).

    On a non-loopback ``ip`` without ``token`` a new token is made and printed with the
    address to share. Returns Voila's exit status (0 after Ctrl+C).
    """
    if not is_loopback(ip) and token is None:
        token = new_token()
    limits = KernelLimits() if limits is None else limits
    command = voila_command(port=port, preheat=preheat, pools=pools, ip=ip, token=token,
                            limits=limits, allow_hosts=allow_hosts)
    env = voila_env(project, token=token)
    host = "127.0.0.1" if is_loopback(ip) else ip
    query = f"?token={token}" if token else ""
    if not is_loopback(ip):
        print(f"WARNING: serving on {ip}: anyone on the network with the token can open the "
              "dashboards and store decisions. Share the address below only with inspectors.",
              flush=True)
    print(f"Loupe dashboards for {project!r}: http://{host}:{port}/{query}  (review: "
          f"/voila/render/review.ipynb, report: /voila/render/report.ipynb; Ctrl+C to stop; "
          "notebooks: make lab)", flush=True)
    print(f"at most {limits.max_kernels} dashboard pages at once (--max-kernels); a page's "
          f"kernel is freed when it closes, or after {limits.idle_timeout_s:.0f} s if it "
          "never connects", flush=True)
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
