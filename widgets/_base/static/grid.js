// LabelingGrid front-end: renders the page Python sends, forwards selection and edits.
// Plain ES module for anywidget (no build step, no imports).

const KEYS_HELP = "1–9 label the selection · arrows move it · shift+arrows extend · ctrl+arrows focus, space adds · u undo · Esc clear"
  + " · x veto a synthetic image · h heatmap (anomaly version)";

function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function render({ model, el }) {
  // data-lm-suppress-shortcuts: JupyterLab leaves the keys to the grid while it has focus
  // (in command mode, digits would otherwise turn the notebook cell into a heading).
  const root = h("div", { class: "loupe-grid", tabindex: "0", "data-lm-suppress-shortcuts": "true" });
  const header = h("div", { class: "loupe-grid-header" });
  const title = h("span", { class: "loupe-grid-title" });
  const count = h("span", { class: "loupe-grid-count" });
  const filters = h("div", { class: "loupe-grid-filters" });
  const labels = h("div", { class: "loupe-grid-labels" });
  const pager = h("div", { class: "loupe-grid-pager" });
  const message = h("div", { class: "loupe-grid-message", role: "status" });
  const tiles = h("div", { class: "loupe-grid-tiles" });
  header.append(title, count);
  root.append(header, filters, labels, tiles, pager, message,
              h("div", { class: "loupe-grid-help", text: KEYS_HELP }));
  el.append(root);

  let focus = 0;       // index of the focused tile on the page
  let anchor = null;   // index where a shift-click / drag range starts
  let dragging = false;
  let selected = new Set(model.get("selected"));

  const items = () => model.get("items");
  const colors = () => model.get("colors");

  function send(content) { model.send(content); }

  function pushSelection() {
    model.set("selected", [...selected]);
    model.save_changes();
    paintSelection();
  }

  function paintSelection() {
    tiles.querySelectorAll(".loupe-tile").forEach((tile, index) => {
      tile.classList.toggle("selected", selected.has(tile.dataset.id));
      tile.classList.toggle("focused", index === focus);
    });
    const n = selected.size;
    count.textContent = `${model.get("total")} images · ${n} selected`;
  }

  function selectRange(from, to, additive) {
    const list = items();
    if (!additive) selected = new Set();
    const [lo, hi] = from <= to ? [from, to] : [to, from];
    for (let i = lo; i <= hi; i++) if (list[i]) selected.add(list[i].id);
    pushSelection();
  }

  function targets() {
    if (selected.size) return [...selected];
    const item = items()[focus];
    return item ? [item.id] : [];
  }

  function assign(label) {
    const ids = targets();
    if (!ids.length) return;
    send({ type: "assign", label, ids });
  }

  function columns() {
    const first = tiles.querySelector(".loupe-tile");
    if (!first) return 1;
    const width = first.getBoundingClientRect().width + 6;
    return Math.max(1, Math.floor(tiles.clientWidth / width));
  }

  // Plain arrows move the selection with the focus (what a digit labels is what the eye
  // follows); shift extends the selection from the anchor; ctrl/cmd moves the focus only
  // (then space adds the focused tile to the selection).
  function moveFocus(delta, how) {
    const n = items().length;
    if (!n) return;
    const next = Math.min(n - 1, Math.max(0, focus + delta));
    if (how === "extend") {
      if (anchor === null) anchor = focus;
      focus = next;
      selectRange(anchor, focus, false);
    } else if (how === "focus") {
      focus = next;
      paintSelection();
    } else {
      focus = next;
      anchor = focus;
      selectRange(focus, focus, false);
    }
    const tile = tiles.children[focus];
    if (tile && tile.scrollIntoView) tile.scrollIntoView({ block: "nearest" });
  }

  function renderFilters() {
    const options = model.get("filter_options") || {};
    const current = model.get("filters") || {};
    filters.replaceChildren();
    const select = (name, values, label) => {
      if (!values || !values.length) return;
      const node = h("select", { class: `loupe-filter loupe-filter-${name}`, title: label });
      node.append(h("option", { value: "", text: `${label}: all` }));
      for (const value of values) {
        const option = h("option", { value, text: `${label}: ${value}` });
        if (String(current[name] ?? "") === String(value)) option.selected = true;
        node.append(option);
      }
      node.addEventListener("change", () => {
        const next = { ...model.get("filters") };
        if (node.value) next[name] = node.value; else delete next[name];
        model.set("filters", next);
        model.save_changes();
      });
      filters.append(node);
    };
    select("label", options.label, "label");
    for (const [field, values] of Object.entries(options.slices || {})) select(field, values, field);
    select("tag", options.tag, "tag");
    select("quality", options.quality, "image quality");
    if (options.issue) {
      const box = h("input", { type: "checkbox", class: "loupe-filter-issue" });
      box.checked = Boolean(current.issue);
      box.addEventListener("change", () => {
        const next = { ...model.get("filters") };
        if (box.checked) next.issue = true; else delete next.issue;
        model.set("filters", next);
        model.save_changes();
      });
      filters.append(h("label", { class: "loupe-filter-issue-label" }, [box, " label issues only"]));
    }
  }

  function toggleHeat() {
    model.set("overlay", !model.get("overlay"));
    model.save_changes();
  }

  function renderLabels() {
    labels.replaceChildren();
    model.get("classes").forEach((label, index) => {
      const button = h("button", {
        class: "loupe-assign", "data-label": label, type: "button",
        title: index < 9 ? `key ${index + 1}` : "",
      });
      button.style.setProperty("--loupe-class", colors()[label] || "#9e9e9e");
      button.append(h("kbd", { text: index < 9 ? String(index + 1) : "" }), label);
      button.addEventListener("click", () => { assign(label); root.focus({ preventScroll: true }); });
      labels.append(button);
    });
    const undo = h("button", { class: "loupe-undo", type: "button", text: "undo (u)" });
    undo.disabled = !model.get("can_undo");
    undo.addEventListener("click", () => { send({ type: "undo" }); root.focus({ preventScroll: true }); });
    labels.append(undo);
    if (model.get("has_heatmaps")) {
      const heat = h("button", { class: "loupe-heatmap", type: "button", text: "heatmap (h)",
                                 title: "lay the anomaly version's heatmap over the images",
                                 "aria-pressed": String(model.get("overlay")) });
      heat.addEventListener("click", () => { toggleHeat(); root.focus({ preventScroll: true }); });
      labels.append(heat);
    }
    const refresh = h("button", { class: "loupe-refresh", type: "button", text: "↻ refresh",
                                  title: "re-read labels from the store (other people's edits)" });
    refresh.addEventListener("click", () => { send({ type: "refresh" }); root.focus({ preventScroll: true }); });
    labels.append(refresh);
    if ((model.get("filter_options").tag || []).includes("synthetic")) {
      const veto = h("button", { class: "loupe-veto", type: "button", text: "✗ veto synthetic",
                                 title: "delete the selected synthetic images (x)" });
      veto.addEventListener("click", () => { send({ type: "veto", ids: targets() });
                                             root.focus({ preventScroll: true }); });
      labels.append(veto);
    }
  }

  function renderPager() {
    const page = model.get("page");
    const pages = model.get("page_count");
    pager.replaceChildren();
    if (pages <= 1) return;
    const go = (to) => () => send({ type: "page", page: to });
    const prev = h("button", { type: "button", class: "loupe-prev", text: "‹ prev", onclick: go(page - 1) });
    const next = h("button", { type: "button", class: "loupe-next", text: "next ›", onclick: go(page + 1) });
    prev.disabled = page <= 0;
    next.disabled = page >= pages - 1;
    pager.append(prev, h("span", { text: ` page ${page + 1} of ${pages} ` }), next);
  }

  function renderTiles() {
    const size = model.get("thumb_size");
    const palette = colors();
    const list = items();
    const fragment = document.createDocumentFragment();
    list.forEach((item, index) => {
      const color = palette[item.label] || "#9e9e9e";
      const tile = h("div", { class: "loupe-tile", "data-id": item.id, "data-index": String(index),
                              title: `${item.name} — ${item.label ?? "unlabelled"}` });
      tile.style.setProperty("--loupe-class", color);
      tile.style.width = `${size}px`;
      if (item.src) {
        tile.append(h("img", { class: "loupe-tile-img", src: item.src, alt: item.name,
                               width: String(size), height: String(size), draggable: "false" }));
        if (item.heat) {  // an anomaly version's heatmap, red where it looks wrong
          tile.append(h("img", { class: "loupe-tile-heat", src: item.heat, alt: "",
                                 width: String(size), height: String(size), draggable: "false" }));
        }
      } else {
        tile.append(h("div", { class: "loupe-tile-missing", text: `missing: ${item.name}` }));
      }
      const badge = h("span", { class: "loupe-tile-label", text: item.label ?? "unlabelled" });
      tile.append(badge);
      if (item.issue) tile.append(h("span", { class: "loupe-tile-issue", title: "label issue", text: "!" }));
      if (item.caption) tile.append(h("span", { class: "loupe-tile-caption", text: item.caption }));
      fragment.append(tile);
    });
    tiles.replaceChildren(fragment);
    focus = Math.min(focus, Math.max(0, list.length - 1));
    paintSelection();
  }

  function renderAll() {
    title.textContent = model.get("title");
    renderFilters();
    renderLabels();
    renderTiles();
    renderPager();
  }

  // -- mouse: click, ctrl/cmd-click toggle, shift-click range, drag range ------------
  tiles.addEventListener("mousedown", (event) => {
    const tile = event.target.closest(".loupe-tile");
    if (!tile) return;
    event.preventDefault();
    root.focus({ preventScroll: true });
    const index = Number(tile.dataset.index);
    if (event.shiftKey && anchor !== null) {
      selectRange(anchor, index, event.ctrlKey || event.metaKey);
    } else if (event.ctrlKey || event.metaKey) {
      const id = tile.dataset.id;
      if (selected.has(id)) selected.delete(id); else selected.add(id);
      anchor = index;
      pushSelection();
    } else {
      anchor = index;
      dragging = true;
      selectRange(index, index, false);
    }
    focus = index;
    paintSelection();
  });
  tiles.addEventListener("mouseover", (event) => {
    // A drag needs the button still held: focusing may scroll tiles under a still pointer.
    if (!dragging || !(event.buttons & 1)) { dragging = false; return; }
    const tile = event.target.closest(".loupe-tile");
    if (!tile) return;
    focus = Number(tile.dataset.index);
    selectRange(anchor, focus, false);
  });
  const stopDrag = () => { dragging = false; };
  window.addEventListener("mouseup", stopDrag);

  // -- keyboard -----------------------------------------------------------------------
  root.addEventListener("keydown", (event) => {
    if (event.target.tagName === "SELECT" || event.target.tagName === "INPUT") return;
    const key = event.key;
    let handled = true;
    if (/^[1-9]$/.test(key) && !event.ctrlKey && !event.metaKey && !event.altKey) {
      const label = model.get("classes")[Number(key) - 1];
      if (label) assign(label);
    } else if (key.startsWith("Arrow")) {
      const how = event.shiftKey ? "extend" : (event.ctrlKey || event.metaKey) ? "focus" : "move";
      const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: columns(), ArrowUp: -columns() }[key];
      moveFocus(step, how);
    } else if (key === " ") {
      const item = items()[focus];
      if (item) {
        if (selected.has(item.id)) selected.delete(item.id); else selected.add(item.id);
        anchor = focus;
        pushSelection();
      }
    } else if ((key === "h" || key === "H") && model.get("has_heatmaps")) toggleHeat();
    else if (key === "u" || key === "U") send({ type: "undo" });
    else if (key === "x" || key === "X") send({ type: "veto", ids: targets() });
    else if (key === "Escape") { selected = new Set(); pushSelection(); }
    else if (key === "PageDown") send({ type: "page", page: model.get("page") + 1 });
    else if (key === "PageUp") send({ type: "page", page: model.get("page") - 1 });
    else if ((key === "a" || key === "A") && (event.ctrlKey || event.metaKey)) {
      selectRange(0, items().length - 1, false);
    } else handled = false;
    if (handled) { event.preventDefault(); event.stopPropagation(); }
  });

  // -- state from Python ----------------------------------------------------------------
  const onSelected = () => { selected = new Set(model.get("selected")); paintSelection(); };
  const onMessage = () => {
    message.textContent = model.get("message");
  };
  const onUndo = () => { const b = labels.querySelector(".loupe-undo"); if (b) b.disabled = !model.get("can_undo"); };
  model.on("change:items", renderTiles);
  model.on("change:overlay", renderLabels);
  model.on("change:items", renderPager);
  model.on("change:page", () => { focus = 0; renderPager(); });
  model.on("change:title", () => { title.textContent = model.get("title"); });
  model.on("change:filter_options", renderFilters);
  model.on("change:filter_options", renderLabels);
  model.on("change:filters", renderFilters);
  model.on("change:classes", renderLabels);
  model.on("change:can_undo", onUndo);
  model.on("change:selected", onSelected);
  model.on("change:message", onMessage);
  model.on("change:edits", () => { root.dataset.edits = String(model.get("edits")); });
  renderAll();
  onMessage();
  root.dataset.edits = String(model.get("edits"));

  return () => {
    window.removeEventListener("mouseup", stopDrag);
  };
}

export default { render };
