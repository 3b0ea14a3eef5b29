"""``RememberedName``: the name a person typed, kept by their browser between visits.

A hidden widget that mirrors its ``name`` to the browser's local storage: typed once per
browser, it fills the name box of every Loupe page on the next visit (and of a second tab).
Nothing about the person reaches the server until the page sends the name with a decision.
"""

from __future__ import annotations

import anywidget
import traitlets as t

#: The local-storage key shared by every Loupe page served from one address.
STORAGE_KEY = "loupe.annotator"

_ESM = """
const KEY = "__KEY__";
function render({ model, el }) {
  el.style.display = "none";
  let stored = "";
  try { stored = window.localStorage.getItem(KEY) || ""; } catch (error) { stored = ""; }
  const keep = () => {
    const name = (model.get("name") || "").trim();
    try { if (name) window.localStorage.setItem(KEY, name); } catch (error) { /* private mode */ }
  };
  model.on("change:name", keep);
  // A page served from a preheated kernel may render before its comm is open, and what it
  // sends then is lost: send the name, then ask again every second until the kernel says
  // it has a name (``heard``), or one was typed.
  let timer = null;
  let tries = 0;
  const restore = () => {
    if (model.get("heard") || tries++ >= 120) { clearInterval(timer); timer = null; return; }
    model.send({ restore: stored });
  };
  if (stored && !model.get("name")) {
    model.set("name", stored);
    model.save_changes();
    timer = setInterval(restore, 1000);
  } else {
    keep();
  }
  return () => { model.off("change:name", keep); if (timer) clearInterval(timer); };
}
export default { render };
""".replace("__KEY__", STORAGE_KEY)

#: Longest name taken back from a browser's storage.
MAX_NAME = 100


class RememberedName(anywidget.AnyWidget):
    """Link ``name`` to a name box (``ipywidgets.link((memory, "name"), (box, "value"))``)
    and display the memory once on the page."""

    _esm = _ESM
    name = t.Unicode("").tag(sync=True)
    #: The name the kernel has (the browser stops re-sending the stored one when set).
    heard = t.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.on_msg(self._restore)

    @t.observe("name")
    def _heard(self, change: dict) -> None:
        self.heard = change["new"]

    def _restore(self, _widget: object, content: object, _buffers: object) -> None:
        """The browser's stored name, unless the page already has one."""
        stored = content.get("restore") if isinstance(content, dict) else None
        if isinstance(stored, str) and stored.strip() and not self.name:
            self.name = stored.strip()[:MAX_NAME]
