"""``RememberedName``: the name a person typed, kept by their browser between visits.

A hidden widget that mirrors its ``name`` to the browser's local storage: typed once per
browser, it fills the name box of every Loupe page on the next visit (and of a second tab).
Nothing about the person reaches the server until the page sends the name with a decision.
"""

from __future__ import annotations

import anywidget
import ipywidgets as widgets
import traitlets as t

#: The local-storage key shared by every Loupe page served from one address.
STORAGE_KEY = "loupe.annotator"

#: The class :meth:`RememberedName.bind` gives a name box (the browser looks for it).
BOX_CLASS = "loupe-name"

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
  // A page served from a preheated kernel builds its widgets one by one, and a widget not
  // built yet misses what the kernel sends meanwhile (the name box, the "acting as" line).
  // So ask the kernel every second until the page's name box shows a name (on a page that
  // shows no name box within 30 s: until the kernel has it), at most 300 times; the kernel
  // says the name again each time it is asked (RememberedName._restore).
  const shown = () => {
    const boxes = Array.from(document.querySelectorAll("__BOX__"));
    if (boxes.length === 0) return tries > 30 && (model.get("heard") || "") !== "";
    return boxes.some((box) => box.value.trim() !== "");
  };
  let timer = null;
  let tries = 0;
  const restore = () => {
    if (shown() || tries++ >= 300) { clearInterval(timer); timer = null; return; }
    model.send({ restore: stored });
  };
  if (stored && !model.get("name")) {
    timer = setInterval(restore, 1000);
    restore();
  } else {
    keep();
  }
  return () => { model.off("change:name", keep); if (timer) clearInterval(timer); };
}
export default { render };
""".replace("__KEY__", STORAGE_KEY).replace("__BOX__", f".{BOX_CLASS} input")

#: Longest name taken back from a browser's storage.
MAX_NAME = 100


class RememberedName(anywidget.AnyWidget):
    """Bind it to the page's name box (``RememberedName().bind(box)``) and display it once
    on the page."""

    _esm = _ESM
    name = t.Unicode("").tag(sync=True)
    #: The name the kernel has (the browser stops re-sending the stored one when set).
    heard = t.Unicode("").tag(sync=True)

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.on_msg(self._restore)

    def bind(self, box: widgets.Text) -> RememberedName:
        """Link ``box`` to ``name`` (a name typed in the box wins) and mark the box for the
        browser, which asks again until the box shows the remembered name."""
        box.add_class(BOX_CLASS)
        widgets.link((box, "value"), (self, "name"))
        return self

    @t.observe("name")
    def _heard(self, change: dict) -> None:
        self.heard = change["new"]

    def _restore(self, _widget: object, content: object, _buffers: object) -> None:
        """The browser's stored name, unless the page already has another one. Asked again
        for the name it has, the kernel says it again (through every observer of the name):
        the page missed it while its widgets were being built."""
        stored = content.get("restore") if isinstance(content, dict) else None
        if not isinstance(stored, str) or not stored.strip():
            return
        stored = stored.strip()[:MAX_NAME]
        if not self.name:
            self.name = stored
        elif self.name == stored:
            self.name = ""
            self.name = stored
