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
  if (stored && !model.get("name")) { model.set("name", stored); model.save_changes(); }
  const keep = () => {
    const name = (model.get("name") || "").trim();
    try { if (name) window.localStorage.setItem(KEY, name); } catch (error) { /* private mode */ }
  };
  model.on("change:name", keep);
  keep();
  return () => model.off("change:name", keep);
}
export default { render };
""".replace("__KEY__", STORAGE_KEY)


class RememberedName(anywidget.AnyWidget):
    """Link ``name`` to a name box (``ipywidgets.link((memory, "name"), (box, "value"))``)
    and display the memory once on the page."""

    _esm = _ESM
    name = t.Unicode("").tag(sync=True)
