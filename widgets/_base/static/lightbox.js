// Lightbox front-end: opens the thumbnails of the box it sits in at full size.
// Plain ES module for anywidget (no build step, no imports). The widget itself is hidden;
// the overlay is added to document.body while open (a fixed layer inside a notebook's
// output area could be clipped by it).

const SCOPE = ".loupe-lightbox-scope";
const HELP = "wheel or +/− zoom · drag or arrows pan · 0 fits · Esc closes";
const MIN_ZOOM = 0.05;
const MAX_ZOOM = 32;
const STEP = 1.25;

function h(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function render({ model, el }) {
  el.classList.add("loupe-lightbox-anchor");
  let box = null;          // the open overlay's parts, or null
  let observer = null;
  let scopeNode = null;

  const scope = () => el.closest(SCOPE);
  // Only thumbnails whose nearest scope is this lightbox's (nested boxes have their own).
  const mine = (node) => node && scope() !== null && node.closest(SCOPE) === scope();

  // -- the overlay --------------------------------------------------------------------
  function open({ key, name, caption, src, returnTo }) {
    close(false);
    const img = h("img", { class: "loupe-lightbox-img", alt: name || "", draggable: "false" });
    const stage = h("div", { class: "loupe-lightbox-stage" }, [img]);
    const title = h("span", { class: "loupe-lightbox-name", text: name || "" });
    const size = h("span", { class: "loupe-lightbox-size", text: "loading full size…" });
    const button = (cls, text, label, onclick) => {
      const node = h("button", { type: "button", class: `loupe-lightbox-button ${cls}`,
                                 title: label, "aria-label": label, text });
      node.addEventListener("click", onclick);
      return node;
    };
    const closer = button("loupe-lightbox-close", "×", "close (Esc)", () => close(true));
    const bar = h("div", { class: "loupe-lightbox-bar" }, [
      title, size,
      button("loupe-lightbox-out", "−", "zoom out (−)", () => zoomBy(1 / STEP)),
      button("loupe-lightbox-in", "+", "zoom in (+)", () => zoomBy(STEP)),
      button("loupe-lightbox-fit", "fit", "fit the window (0)", () => fit()),
      button("loupe-lightbox-one", "1:1", "one image pixel per screen pixel (1)", () => zoomTo(1)),
      closer,
    ]);
    const text = h("div", { class: "loupe-lightbox-caption", text: caption || "" });
    const help = h("div", { class: "loupe-lightbox-help", text: HELP });
    const panel = h("div", { class: "loupe-lightbox-panel" }, [bar, stage, text, help]);
    const overlay = h("div", {
      class: "loupe-lightbox", role: "dialog", "aria-modal": "true", tabindex: "-1",
      "aria-label": `${name || "image"} at full size`, "data-lm-suppress-shortcuts": "true",
      "data-key": key, "data-scale": "1", "data-state": "loading",
    }, [panel]);
    box = { overlay, stage, img, size, text, closer, key, returnTo, scale: 1, x: 0, y: 0,
            fitted: true, drag: null };
    if (src) img.src = src;  // the thumbnail, scaled up, until the full image arrives
    overlay.addEventListener("keydown", onKey);
    overlay.addEventListener("mousedown", (event) => { if (event.target === overlay) close(true); });
    stage.addEventListener("wheel", onWheel, { passive: false });
    stage.addEventListener("pointerdown", onDown);
    stage.addEventListener("pointermove", onMove);
    stage.addEventListener("pointerup", onUp);
    stage.addEventListener("pointercancel", onUp);
    stage.addEventListener("dblclick", (event) => zoomBy(event.shiftKey ? 1 / 2 : 2, point(event)));
    img.addEventListener("load", () => { if (box && box.fitted) fit(); });
    document.body.append(overlay);
    overlay.focus({ preventScroll: true });
    model.send({ type: "open", key });
  }

  function close(restore) {
    if (!box) return;
    const { overlay, returnTo } = box;
    box = null;
    overlay.remove();
    if (restore && returnTo && returnTo.isConnected) returnTo.focus({ preventScroll: true });
  }

  function onImage(content) {
    if (!box || content.type !== "image" || content.key !== box.key) return;
    const { overlay, img, size, text } = box;
    if (content.name) overlay.querySelector(".loupe-lightbox-name").textContent = content.name;
    if (content.caption) text.textContent = content.caption;
    if (content.error) {
      overlay.dataset.state = "error";
      size.textContent = content.error;
      return;
    }
    const scaled = content.width !== content.original_width;
    size.dataset.full = `${content.original_width} × ${content.original_height} px`
      + (scaled ? ` (shown at ${content.width} × ${content.height})` : "");
    img.addEventListener("load", () => { if (box && box.img === img) overlay.dataset.state = "full"; },
                         { once: true });
    box.fitted = true;
    img.src = content.src;
  }

  // -- zoom and pan ---------------------------------------------------------------------
  function natural() {
    const { img } = box;
    return [img.naturalWidth || 1, img.naturalHeight || 1];
  }

  function paint() {
    const { img, overlay, size, scale, x, y } = box;
    img.style.transform = `translate(${x}px, ${y}px) scale(${scale})`;
    img.classList.toggle("loupe-lightbox-pixels", scale >= 3);
    overlay.dataset.scale = scale.toFixed(4);
    const full = size.dataset.full;
    if (full) size.textContent = `${full} · ${Math.round(scale * 100)} %`;
  }

  function fit() {
    if (!box) return;
    const [w, h] = natural();
    const { stage } = box;
    const scale = Math.min(stage.clientWidth / w, stage.clientHeight / h) || 1;
    box.scale = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, scale));
    box.x = (stage.clientWidth - w * box.scale) / 2;
    box.y = (stage.clientHeight - h * box.scale) / 2;
    box.fitted = true;
    paint();
  }

  function point(event) {
    const rect = box.stage.getBoundingClientRect();
    return [event.clientX - rect.left, event.clientY - rect.top];
  }

  // Zoom keeping the image point under (px, py) (the stage's centre by default) in place.
  function zoomTo(scale, at) {
    if (!box) return;
    const [px, py] = at || [box.stage.clientWidth / 2, box.stage.clientHeight / 2];
    const next = Math.min(MAX_ZOOM, Math.max(MIN_ZOOM, scale));
    box.x = px - (px - box.x) * (next / box.scale);
    box.y = py - (py - box.y) * (next / box.scale);
    box.scale = next;
    box.fitted = false;
    paint();
  }

  const zoomBy = (factor, at) => { if (box) zoomTo(box.scale * factor, at); };

  function pan(dx, dy) {
    box.x += dx;
    box.y += dy;
    box.fitted = false;
    paint();
  }

  function onWheel(event) {
    event.preventDefault();
    zoomBy(event.deltaY < 0 ? STEP : 1 / STEP, point(event));
  }

  function onDown(event) {
    if (event.button !== 0) return;
    box.drag = { id: event.pointerId, x: event.clientX, y: event.clientY };
    box.stage.setPointerCapture(event.pointerId);
    box.stage.classList.add("dragging");
  }

  function onMove(event) {
    const drag = box && box.drag;
    if (!drag || drag.id !== event.pointerId) return;
    pan(event.clientX - drag.x, event.clientY - drag.y);
    drag.x = event.clientX;
    drag.y = event.clientY;
  }

  function onUp(event) {
    if (!box || !box.drag) return;
    box.drag = null;
    box.stage.classList.remove("dragging");
    if (box.stage.hasPointerCapture(event.pointerId)) box.stage.releasePointerCapture(event.pointerId);
  }

  function onKey(event) {
    const key = event.key;
    let handled = true;
    if (key === "Escape") close(true);
    else if (key === "+" || key === "=") zoomBy(STEP);
    else if (key === "-" || key === "_") zoomBy(1 / STEP);
    else if (key === "0") fit();
    else if (key === "1") zoomTo(1);
    else if (key === "ArrowLeft") pan(60, 0);
    else if (key === "ArrowRight") pan(-60, 0);
    else if (key === "ArrowUp") pan(0, 60);
    else if (key === "ArrowDown") pan(0, -60);
    else if (key === "Tab") {  // keep the focus inside the dialog
      const buttons = [...box.overlay.querySelectorAll("button")];
      const at = buttons.indexOf(document.activeElement);
      const next = event.shiftKey ? (at <= 0 ? buttons.length - 1 : at - 1)
                                  : (at + 1) % buttons.length;
      buttons[next].focus();
    } else if (key === "Enter" || key === " ") {
      handled = event.target.tagName !== "BUTTON";  // a focused button clicks itself
    } else handled = false;
    // Every key stays in the dialog: the grid below must not relabel, nor JupyterLab act.
    event.stopPropagation();
    if (handled) event.preventDefault();
  }

  // -- thumbnails: open on click and Enter ----------------------------------------------
  function thumbOf(target) {
    const zoom = target.closest(".loupe-lightbox-zoom");
    if (zoom) return zoom;
    return target.closest("[data-loupe-open]");
  }

  function request(node, returnTo) {
    const tile = node.closest(".loupe-tile") || node;
    const img = tile.querySelector("img");
    const key = node.dataset.loupeOpen || tile.dataset.loupeOpen || tile.dataset.id;
    if (!key) return;
    const caption = tile.getAttribute("title") || "";
    open({ key, name: img ? img.getAttribute("alt") : "", caption,
           src: img ? img.src : "", returnTo });
  }

  function onClick(event) {
    const node = thumbOf(event.target);
    if (!node || !mine(node)) return;
    event.preventDefault();
    event.stopPropagation();
    const returnTo = node.classList.contains("loupe-lightbox-zoom")
      ? node.closest(".loupe-grid") || node : node;
    request(node, returnTo);
  }

  function onDoubleClick(event) {
    const tile = event.target.closest(".loupe-grid .loupe-tile");
    if (!tile || !mine(tile)) return;
    request(tile, tile.closest(".loupe-grid"));
  }

  function onKeyDown(event) {
    if (event.key !== "Enter" && event.key !== " ") return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const thumb = event.target.closest("[data-loupe-open]");
    if (thumb && mine(thumb) && event.target === thumb) {
      event.preventDefault();
      request(thumb, thumb);
      return;
    }
    const grid = event.target.closest(".loupe-grid");
    if (event.key === "Enter" && grid && event.target === grid && mine(grid)) {
      const tile = grid.querySelector(".loupe-tile.focused") || grid.querySelector(".loupe-tile");
      if (!tile) return;
      event.preventDefault();
      request(tile, grid);
    }
  }

  // A grid's mousedown selects: the zoom button opens without selecting.
  function onMouseDown(event) {
    if (event.target.closest(".loupe-lightbox-zoom") && mine(event.target)) event.stopPropagation();
  }

  // -- grid tiles get a zoom button and their captions a tooltip --------------------------
  function decorate() {
    if (!scopeNode) return;
    for (const tile of scopeNode.querySelectorAll(".loupe-grid .loupe-tile")) {
      if (!mine(tile) || tile.querySelector(".loupe-lightbox-zoom")) continue;
      const name = tile.querySelector("img") ? tile.querySelector("img").getAttribute("alt") : "";
      tile.append(h("button", {
        type: "button", class: "loupe-lightbox-zoom", tabindex: "-1", text: "⤢",
        title: "open full size (Enter; double click)", "aria-label": `open ${name} full size`,
        "data-loupe-open": tile.dataset.id,
      }));
      for (const part of tile.querySelectorAll(".loupe-tile-caption, .loupe-tile-label")) {
        part.title = part.textContent;
      }
    }
  }

  function watch() {
    scopeNode = scope();
    if (!scopeNode) return false;
    decorate();
    observer = new MutationObserver(decorate);
    observer.observe(scopeNode, { childList: true, subtree: true });
    return true;
  }

  // The element may be put into the page after render: look for the box until it is.
  let tries = 0;
  const poll = () => {
    if (watch() || ++tries > 600) return;
    timer = setTimeout(poll, 100);
  };
  let timer = setTimeout(poll, 0);

  const onMessage = (content) => onImage(content);
  model.on("msg:custom", onMessage);
  document.addEventListener("click", onClick, true);
  document.addEventListener("dblclick", onDoubleClick);
  document.addEventListener("keydown", onKeyDown);
  document.addEventListener("mousedown", onMouseDown, true);

  return () => {
    clearTimeout(timer);
    if (observer) observer.disconnect();
    close(false);
    model.off("msg:custom", onMessage);
    document.removeEventListener("click", onClick, true);
    document.removeEventListener("dblclick", onDoubleClick);
    document.removeEventListener("keydown", onKeyDown);
    document.removeEventListener("mousedown", onMouseDown, true);
  };
}

export default { render };
