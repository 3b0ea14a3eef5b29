"""Loupe's Voila server: Voila with bounded kernels, a Host/Origin allow-list and a token
that never appears on a command line (``python -m workbench.deploy.voila_server``; started by
:func:`workbench.deploy.serve.voila_command`, not by hand).

What it adds to ``voila``:

* **Bounded kernels.** Every page visit takes a kernel (a preheated one, or a new one).
  At most ``KernelBudget.max_kernels`` kernels serve pages at once; the preheated pools
  (:data:`workbench.deploy.serve.DEFAULT_POOLS`) come on top, so the server never holds more
  than pool sizes + ``max_kernels`` kernels. A visit beyond the cap waits up to
  ``LoupeVoila.busy_wait_s`` for a kernel to be freed, then gets a short "server busy"
  page (HTTP 503), never a new kernel.
* **Culling.** A page's kernel is shut down when the page goes away: the page's own
  ``beforeunload`` beacon, or ``KernelBudget.page_gone_s`` after its last websocket closed.
  A kernel no page ever connected to (``curl``) is culled after Jupyter's
  ``MappingKernelManager.cull_idle_timeout``; a page left open without a click for
  ``KernelBudget.page_idle_s`` loses its kernel too (0: never).
* **Host/Origin allow-list** (``LoupeVoila.allowed_hosts``): a request whose ``Host`` (or
  ``Origin``) names anything else gets 403, on pages, files, API and websockets alike, so a
  web page that rebinds its own DNS name to 127.0.0.1 cannot drive the dashboards.
* **Token from the environment**: ``JUPYTER_TOKEN`` is read and removed from the
  environment at start (kernels do not inherit it); a server bound to a non-loopback
  address refuses to start without one.
* **No "Unsatisfied version" console warnings** (:class:`CoreRangeExtensionHandler`): the
  front-end extensions are built against newer JupyterLab packages than Voila's page
  provides, see the class.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import re
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import voila.app as voila_app
from jupyter_core.utils import ensure_async
from jupyter_server._tz import utcnow
from jupyter_server.base.handlers import FileFindHandler
from tornado import web
from traitlets import Float, Integer, Unicode
from traitlets.config import LoggingConfigurable
from voila.tornado.handler import TornadoVoilaHandler
from voila.tornado.treehandler import TornadoVoilaTreeHandler

from workbench.deploy.landing import ProjectPage, project_page
from workbench.errors import LoupeError

#: Environment variable carrying the access token into the server process.
TOKEN_ENV = "JUPYTER_TOKEN"
#: Names every server answers to (loopback addresses are always allowed as IP literals).
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")

BUSY_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Loupe: the server is busy</title>
<style>body{{font-family:sans-serif;max-width:40em;margin:4em auto;color:#333}}</style>
</head><body><h1>The server is busy</h1>
<p>{in_use} people are using it, the most this server serves at once. Try again in a
minute; a place is freed as soon as someone closes a dashboard.</p>
<p><a href="">Try again</a></p></body></html>
"""


class ServerBusyError(LoupeError):
    """Every kernel a page may take is in use (``KernelBudget.max_kernels``)."""

    def __init__(self, in_use: int):
        super().__init__(f"{in_use} kernels serve pages, the most allowed")
        self.in_use = in_use


class KernelBudget(LoggingConfigurable):
    """Mixed in above Voila's kernel manager: counts, caps and culls the kernels of pages.

    A page kernel is one handed to a visit: taken from a preheated pool
    (``get_rendered_notebook``) or started for it (``start_kernel`` as Voila's page handler
    calls it; pool kernels start below this class and are not counted).
    """

    max_kernels = Integer(6, config=True, help="Most kernels serving pages at once (pool "
                          "kernels not yet taken by a page are not counted).")
    page_gone_s = Float(30.0, config=True, help="Seconds after the last websocket of a "
                        "page's kernel closed before the kernel is shut down (0: not culled "
                        "on disconnect).")
    page_idle_s = Float(3600.0, config=True, help="Seconds without any activity after "
                        "which the kernel of an open page is shut down (0: never).")

    def __init__(self, **kwargs: Any):
        self._page_kernels: set[str] = set()
        self._reserved = 0
        super().__init__(**kwargs)
        if self.max_kernels < 1:
            raise ValueError(f"KernelBudget.max_kernels must be at least 1, got "
                             f"{self.max_kernels}")

    # -- counting ---------------------------------------------------------------------
    def pages_in_use(self) -> int:
        """Kernels serving pages now, plus those being handed to a page."""
        self._page_kernels &= set(self._kernels)  # kernels that died or were shut down
        return len(self._page_kernels) + self._reserved

    def has_room(self) -> bool:
        return self.pages_in_use() < self.max_kernels

    def _reserve(self) -> None:
        in_use = self.pages_in_use()
        if in_use >= self.max_kernels:
            self.log.warning("Server busy: %d page kernels in use (KernelBudget.max_kernels)",
                             in_use)
            raise ServerBusyError(in_use)
        self._reserved += 1

    def _hand_out(self, kernel_id: str) -> None:
        self._page_kernels.add(kernel_id)
        kernel = self._kernels.get(kernel_id)
        if kernel is not None:  # a pool kernel may have idled for hours: the page is new
            kernel.last_activity = utcnow()

    # -- the two ways a page gets a kernel ---------------------------------------------
    async def start_kernel(self, **kwargs: Any) -> str:
        self._reserve()
        try:
            kernel_id = await ensure_async(super().start_kernel(**kwargs))
        finally:
            self._reserved -= 1
        self._hand_out(kernel_id)
        return kernel_id

    async def get_rendered_notebook(self, *args: Any, **kwargs: Any) -> Any:
        self._reserve()
        try:
            render_task, rendered_cache, kernel_id = await super().get_rendered_notebook(
                *args, **kwargs)
        finally:
            self._reserved -= 1
        self._hand_out(kernel_id)
        return render_task, rendered_cache, kernel_id

    # -- culling -----------------------------------------------------------------------
    async def shutdown_kernel(self, kernel_id: str, *args: Any, **kwargs: Any) -> Any:
        self._page_kernels.discard(kernel_id)
        return await ensure_async(super().shutdown_kernel(kernel_id, *args, **kwargs))

    def notify_disconnect(self, kernel_id: str) -> None:
        super().notify_disconnect(kernel_id)
        if (self.page_gone_s > 0 and kernel_id in self._page_kernels
                and self._kernel_connections.get(kernel_id, 0) <= 0):
            asyncio.get_event_loop().call_later(
                self.page_gone_s, lambda: asyncio.ensure_future(self._cull_if_gone(kernel_id)))

    async def _cull_if_gone(self, kernel_id: str) -> None:
        if kernel_id in self._kernels and self._kernel_connections.get(kernel_id, 0) <= 0:
            self.log.info("Culling kernel %s: its page went away %.0f s ago", kernel_id,
                          self.page_gone_s)
            await ensure_async(self.shutdown_kernel(kernel_id))

    async def cull_kernel_if_idle(self, kernel_id: str) -> Any:
        if self._kernel_connections.get(kernel_id, 0) <= 0:
            return await super().cull_kernel_if_idle(kernel_id)
        kernel = self._kernels.get(kernel_id)
        idle = utcnow() - getattr(kernel, "last_activity", utcnow())
        if self.page_idle_s > 0 and idle > timedelta(seconds=self.page_idle_s):
            self.log.warning("Culling kernel %s of an open page idle for %d s "
                             "(KernelBudget.page_idle_s)", kernel_id, idle.total_seconds())
            await ensure_async(self.shutdown_kernel(kernel_id))
        return None


class HostPolicy:
    """Which ``Host``/``Origin`` names a server answers to (Jupyter's
    ``allow_remote_access=False`` semantics with an explicit list).

    Parameters
    ----------
    names : iterable of str
        Host names and IP addresses allowed besides loopback addresses, which always are.
    """

    def __init__(self, names: Iterable[str]):
        self.names: set[str] = set()
        self.addresses: set[ipaddress.IPv4Address | ipaddress.IPv6Address] = set()
        for name in (*LOOPBACK_NAMES, *names):
            address = _ip(name)
            if address is None:
                self.names.add(_clean(name))
            else:
                self.addresses.add(address)

    def allows(self, host: str) -> bool:
        """Whether ``host`` (a Host header's value or an Origin's host, port allowed)."""
        name = _clean(_strip_port(host))
        address = _ip(name)
        if address is None:
            return name in self.names
        return address.is_loopback or address in self.addresses

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """None when the request may go on, else the reason it may not."""
        if host is not None and not self.allows(host):
            return f"Host {host!r} is not a name this server answers to"
        if origin is not None:
            netloc = urlsplit(origin).netloc if "://" in origin else ""
            if not netloc or not self.allows(netloc):
                return f"Origin {origin!r} is not a name this server answers to"
        return None


def _clean(name: str) -> str:
    return name.strip().strip("[]").rstrip(".").lower()


def _strip_port(host: str) -> str:
    host = host.strip()
    if host.startswith("["):  # [::1]:8866
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:  # name:8866 (a bare IPv6 address has several colons)
        return host.split(":", 1)[0]
    return host


def _ip(name: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(_clean(name))
    except ValueError:
        return None


class HostGuard:
    """Mixed in front of every handler: 403 for a Host or Origin not in the allow-list."""

    def prepare(self, *args: Any, **kwargs: Any) -> Any:
        policy: HostPolicy = self.settings["loupe_host_policy"]
        reason = policy.refusal(self.request.headers.get("Host"),
                                self.request.headers.get("Origin"))
        if reason is not None:
            self.settings["loupe_log"].warning("Refused %s %s: %s", self.request.method,
                                               self.request.path, reason)
            self.set_status(403)
            self.set_header("Content-Type", "text/plain; charset=utf-8")
            self.set_header("X-Content-Type-Options", "nosniff")
            self.finish(f"403 Forbidden: {reason}. If inspectors reach this server under "
                        "that name, start it with: loupe serve --allow-host NAME\n")
            return None
        return super().prepare(*args, **kwargs)


class BoundedPageHandler(TornadoVoilaHandler):
    """Voila's page handler, answering "server busy" instead of starting a kernel beyond
    the cap."""

    @web.authenticated
    async def get(self, path: str | None = None) -> None:
        _ = self.xsrf_token  # sets the _xsrf cookie the page's "beforeunload" beacon sends back
        _drop_token(self.request)  # Voila copies the URL into the kernel's environment
        manager = self.kernel_manager
        if isinstance(manager, KernelBudget):
            deadline = time.monotonic() + self.settings["loupe_busy_wait_s"]
            while not manager.has_room() and time.monotonic() < deadline:
                await asyncio.sleep(0.25)
        try:
            await super().get(path=path)
        except ServerBusyError as busy:
            self.clear()
            self.set_status(503)
            self.set_header("Content-Type", "text/html; charset=utf-8")
            self.set_header("Cache-Control", "no-store")
            self.set_header("Retry-After", "60")
            self.finish(BUSY_PAGE.format(in_use=busy.in_use))


class LandingHandler(TornadoVoilaTreeHandler):
    """Voila's landing page with ``loupe_projects``: one page (``?page=``, from 1) of the
    projects whose name contains ``?q=``, each with its last drift check and the deployment
    each line runs, read from the project folders at every visit."""

    @property
    def template_namespace(self) -> dict[str, Any]:
        namespace = super().template_namespace
        search = self.get_argument("q", "")[:200]
        try:
            page = int(self.get_argument("page", "1")) - 1
        except ValueError:
            page = 0
        try:
            listing = project_page(os.environ.get("LOUPE_PROJECT"), search=search, page=page)
        except OSError as error:  # an unreadable home must not take the links down
            self.log.warning("landing page: cannot read the project folders (%s)", error)
            listing = ProjectPage(states=[], matching=0, total=0, page=0, pages=1,
                                  search=search)
        namespace["loupe_projects"] = listing.states
        namespace["loupe_listing"] = listing
        return namespace


def _drop_token(request: Any) -> None:
    """Remove ``token=`` from an authenticated request's URL, so that neither the kernel's
    environment (``QUERY_STRING``, ``VOILA_REQUEST_URL``) nor the page's request info
    carries it (the login cookie already holds the session)."""
    if "token" not in request.query_arguments:
        return
    kept = [(name, value.decode(errors="replace")) for name, values in
            request.query_arguments.items() if name != "token" for value in values]
    request.query = urlencode(kept)
    request.uri = request.path + (f"?{request.query}" if request.query else "")
    request.query_arguments.pop("token", None)
    request.arguments.pop("token", None)


class LoupeVoila(voila_app.Voila):
    """Voila with :class:`KernelBudget`, :class:`HostGuard` on every handler and the token
    taken from ``$JUPYTER_TOKEN``."""

    allowed_hosts = Unicode("", config=True, help="Comma-separated host names and addresses "
                            "the server answers to besides loopback ones.")
    busy_wait_s = Float(5.0, config=True, help="Seconds a visit beyond the kernel cap waits "
                        "for a free kernel before it gets the 'server busy' page.")

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)
        token = os.environ.pop(TOKEN_ENV, "")
        if token:
            self.token = token
        if not _is_loopback(self.ip) and not self.token:
            self.log.critical("binding %s makes the dashboards reachable from other "
                              "machines: set a token in $%s", self.ip, TOKEN_ENV)
            self.exit(2)

    def init_settings(self) -> dict[str, Any]:
        make_manager_class = voila_app.voila_kernel_manager_factory

        def bounded_factory(*args: Any, **kwargs: Any) -> type:
            return type("LoupeKernelManager", (KernelBudget, make_manager_class(*args, **kwargs)),
                        {})

        voila_app.voila_kernel_manager_factory = bounded_factory  # read by Voila.init_settings
        try:
            settings = super().init_settings()
        finally:
            voila_app.voila_kernel_manager_factory = make_manager_class
        names = [name for name in self.allowed_hosts.split(",") if name.strip()]
        settings["loupe_host_policy"] = HostPolicy(names)
        settings["loupe_busy_wait_s"] = self.busy_wait_s
        settings["loupe_log"] = self.log  # plain tornado handlers (static files) have no log
        return settings

    def init_handlers(self) -> list:
        guarded: dict[type, type] = {}
        handlers = []
        for pattern, handler, *rest in super().init_handlers():
            if handler is TornadoVoilaHandler:
                handler = BoundedPageHandler
            elif handler is TornadoVoilaTreeHandler:
                handler = LandingHandler
            elif handler is FileFindHandler and pattern.endswith("/voila/labextensions/(.*)"):
                handler = CoreRangeExtensionHandler
            if handler not in guarded:
                guarded[handler] = type(f"Guarded{handler.__name__}", (HostGuard, handler), {})
            handlers.append((pattern, guarded[handler], *rest))
        return handlers


#: A shared-module requirement on a JupyterLab or Lumino core package in a webpack
#: ``remoteEntry``: ``shareKey:"@jupyterlab/services",…,requiredVersion:"^7.6.2"`` or
#: ``"@jupyterlab/statedb",!1,[1,4,5,10]`` (the compiled form of ``^4.5.10``).
_CORE_STRING_RANGE = re.compile(
    rb'(shareKey:"@(?:jupyterlab|lumino)/[^"]+",[^{}]*?requiredVersion:"\^)([1-9]\d*)'
    rb'\.\d+\.\d+(")')
_CORE_ARRAY_RANGE = re.compile(rb'("@(?:jupyterlab|lumino)/[^"]+",!?[01],\[1,)([1-9]\d*),'
                               rb'\d+,\d+\]')


def widen_core_ranges(script: bytes) -> bytes:
    """``script`` (a webpack ``remoteEntry``) with each caret range required of a JupyterLab
    or Lumino package widened to its major version: ``^4.6.2`` becomes ``^4.0.0``."""
    script = _CORE_STRING_RANGE.sub(rb"\g<1>\g<2>.0.0\g<3>", script)
    return _CORE_ARRAY_RANGE.sub(rb"\g<1>\g<2>,0,0]", script)


@functools.lru_cache(maxsize=32)
def _widened(path: str, mtime_ns: int) -> bytes:
    return widen_core_ranges(Path(path).read_bytes())


def _is_remote_entry(path: str) -> bool:
    name = Path(path).name
    return name.startswith("remoteEntry.") and name.endswith(".js")


class CoreRangeExtensionHandler(FileFindHandler):
    """Voila's labextension file handler, serving each ``remoteEntry`` with its JupyterLab
    and Lumino requirements widened to the major version.

    Why: JupyterLab's extension builder writes the builder's own version into every
    extension as the range it requires of the core packages (jupyterlab_widgets 3.0.17
    asks ``^4.6.2`` of ``@jupyterlab/services`` etc. although its package.json says
    ``^4.0.0``; Voila 0.5.13's own widgets manager asks ``^4.5.10``), while Voila 0.5.13's
    page provides JupyterLab 4.2.5's. Webpack then uses the page's copy anyway (they are
    singletons) and logs one "Unsatisfied version" warning per package: 13-14 per page. The
    ranges widened to the major version (what the extensions' package.json files declare)
    give the same modules and no warning. Other files are served as they are.
    """

    @classmethod
    def get_content(cls, abspath: str, start: int | None = None,
                    end: int | None = None) -> Any:
        if not _is_remote_entry(abspath):
            return super().get_content(abspath, start, end)
        return _widened(abspath, Path(abspath).stat().st_mtime_ns)[start:end]

    def get_content_size(self) -> int:
        if not _is_remote_entry(self.absolute_path):
            return super().get_content_size()
        return len(_widened(self.absolute_path,
                            Path(self.absolute_path).stat().st_mtime_ns))


def _is_loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    address = _ip(ip)
    return address is not None and address.is_loopback


main = LoupeVoila.launch_instance

if __name__ == "__main__":
    main()
