// BoxLabeler front-end (anywidget, plain ES module, no build step, no imports).
//
// Python owns the state (which image, its boxes, what is stored); this module draws the
// image and its boxes in an SVG and edits them with the mouse and the keyboard. Every
// finished edit is written to the synced `boxes` trait (and `selected_box`,
// `selected_class`); Save, No defect and moves are custom messages:
//   {type: "save", sample_id, boxes}, {type: "no_defect", sample_id}, {type: "skip"},
//   {type: "move", to: "next" | "previous" | index}.
// Python answers by updating the traits (and bumps `revision` once a message is handled).
//
// Mouse: drag on empty space draws a box of the selected class, drag a box moves it, drag a
// corner handle resizes it, click selects, Alt+drag draws even inside a box; the wheel zooms around the pointer; a drag with
// the middle button, with Shift or with Space held pans.
// Keys (while the widget has focus): 1–9 class of the selected box (or of the next box),
// Delete / Backspace delete the selected box, Escape deselect, Enter save, n no defect,
// s skip, ← / → previous / next image, + / − zoom, 0 reset the zoom.

const GREY = "#9E9E9E";
const SVG_NS = "http://www.w3.org/2000/svg";
const WATCHED = ["boxes", "classes", "colors", "selected_class", "selected_box", "index",
  "total", "sample_id", "name", "image", "image_width", "image_height", "image_error",
  "labelled", "suggested", "model_name", "saved", "message", "error", "display_size",
  "review", "annotator"];
// The keys the widget owns while it has focus (kept from JupyterLab's command mode).
const OWN_KEYS = /^(?:[1-9ns0+=\-]|Enter|Escape|Delete|Backspace|ArrowLeft|ArrowRight)$/;
const MIN_DRAW_PX = 4; // a drag shorter than this (on screen) is a click
const HANDLE_PX = 9; // corner handle size on screen
const MAX_ZOOM = 8;
const CORNERS = ["nw", "ne", "sw", "se"];

function h(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "className") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of [].concat(children)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function s(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else node.setAttribute(key, String(value));
  }
  return node;
}

function colorOf(label, colors) {
  return label === null || label === undefined ? GREY : (colors[label] || GREY);
}

function clamp(value, low, high) {
  return Math.min(Math.max(value, low), high);
}

function round6(value) {
  return Math.round(value * 1e6) / 1e6;
}

// A box from two relative points, clamped to the image.
function spanBox(ax, ay, bx, by) {
  const x0 = clamp(Math.min(ax, bx), 0, 1);
  const y0 = clamp(Math.min(ay, by), 0, 1);
  const x1 = clamp(Math.max(ax, bx), 0, 1);
  const y1 = clamp(Math.max(ay, by), 0, 1);
  return { x: round6(x0), y: round6(y0), w: round6(x1 - x0), h: round6(y1 - y0) };
}

function render({ model, el }) {
  const root = h("div", {
    className: "loupe-boxes", tabindex: "0", "data-lm-suppress-shortcuts": "true",
    "aria-label": "Box labeler: drag to draw, 1-9 class, Delete delete, Enter save",
  });
  const title = h("span", { className: "loupe-boxes-title" });
  const state = h("span", { className: "loupe-boxes-state" });
  const progress = h("span", { className: "loupe-boxes-progress" });
  const svg = s("svg", { class: "loupe-boxes-svg" });
  const view = s("g", { class: "loupe-boxes-view" });
  const picture = s("image", { class: "loupe-boxes-image", preserveAspectRatio: "none" });
  const layer = s("g", { class: "loupe-boxes-layer" });
  view.append(picture, layer);
  svg.append(view);
  const missing = h("div", { className: "loupe-boxes-missing" });
  const stage = h("div", { className: "loupe-boxes-stage" }, [svg, missing]);
  const classList = h("div", { className: "loupe-boxes-classes" });
  const boxList = h("div", { className: "loupe-boxes-list" });
  const zoomLabel = h("span", { className: "loupe-boxes-zoom-level" });
  const button = (className, label, key, onclick, help) => h("button", {
    className, type: "button", title: help || "", onclick,
  }, [key ? h("kbd", { text: key }) : null, key ? ` ${label}` : label]);
  const saveButton = button("loupe-boxes-save", "Save", "Enter", () => save(), "store the boxes on screen, next image");
  const noDefectButton = button("loupe-boxes-nodefect", "No defect", "N", () => noDefect(), "store zero boxes, next image");
  const skipButton = button("loupe-boxes-skip", "Skip", "S", () => moveTo("skip"), "next image, nothing stored");
  const prevButton = button("loupe-boxes-prev", "← Previous", null, () => moveTo("previous"));
  const nextButton = button("loupe-boxes-next", "Next →", null, () => moveTo("next"));
  const deleteButton = button("loupe-boxes-delete", "Delete box", "Del", () => deleteSelected());
  const zoom = h("div", { className: "loupe-boxes-zoom" }, [
    button("loupe-boxes-zoom-out", "−", null, () => zoomBy(1 / 1.5), "zoom out (-)"),
    zoomLabel,
    button("loupe-boxes-zoom-in", "+", null, () => zoomBy(1.5), "zoom in (+)"),
    button("loupe-boxes-zoom-reset", "fit", null, () => resetZoom(), "fit the image (0)"),
  ]);
  const side = h("div", { className: "loupe-boxes-side" }, [
    h("div", { className: "loupe-boxes-heading", text: "class (1–9)" }), classList,
    h("div", { className: "loupe-boxes-heading", text: "boxes" }), boxList,
    h("div", { className: "loupe-boxes-buttons" }, [saveButton, noDefectButton, skipButton, deleteButton]),
    h("div", { className: "loupe-boxes-buttons" }, [prevButton, nextButton]),
    zoom,
  ]);
  const message = h("div", { className: "loupe-boxes-message", role: "status" });
  const error = h("div", { className: "loupe-boxes-error", role: "alert" });
  const help = h("div", {
    className: "loupe-boxes-help",
    text: "drag: draw · drag box: move · drag corner: resize · 1–9 class · Del delete · "
      + "Alt+drag draw inside a box · Enter save · n no defect · s skip · ← → images · wheel / + − zoom · Shift+drag pan · Esc deselect",
  });
  root.append(h("div", { className: "loupe-boxes-header" }, [title, state, progress]),
    h("div", { className: "loupe-boxes-body" }, [stage, side]), message, error, help);
  el.append(root);

  // -- local state ---------------------------------------------------------------------
  let work = null; // boxes being dragged (a copy of the trait), null when no drag
  let drag = null; // {mode, ...}
  let zoomLevel = 1;
  let tx = 0;
  let ty = 0;
  let spaceHeld = false;
  let busyUntil = 0; // a message is in flight: no edits until Python answered
  let shownSample = null;

  const boxes = () => work || model.get("boxes") || [];
  const classes = () => model.get("classes") || [];
  const colors = () => model.get("colors") || {};
  const busy = () => Date.now() < busyUntil;

  function size() {
    const display = model.get("display_size") || 512;
    const iw = model.get("image_width") || display;
    const ih = model.get("image_height") || display;
    const scale = display / Math.max(iw, ih);
    return { w: Math.round(iw * scale), h: Math.round(ih * scale) };
  }

  // -- writing back ----------------------------------------------------------------------
  function commit(list, selected) {
    model.set("boxes", list.map((b) => ({ ...b })));
    if (selected !== undefined) model.set("selected_box", selected);
    model.save_changes();
  }

  function select(index) {
    if (model.get("selected_box") === index) return;
    model.set("selected_box", index);
    model.save_changes();
  }

  function send(content) {
    busyUntil = Date.now() + 5000;
    model.send(content);
  }

  function save() {
    if (busy() || !model.get("sample_id")) return;
    send({ type: "save", sample_id: model.get("sample_id"), boxes: boxes() });
  }

  function noDefect() {
    if (busy() || !model.get("sample_id")) return;
    send({ type: "no_defect", sample_id: model.get("sample_id") });
  }

  function moveTo(to) {
    if (busy()) return;
    send(to === "skip" ? { type: "skip" } : { type: "move", to });
  }

  function setClass(label) {
    const index = model.get("selected_box");
    const list = boxes();
    if (index >= 0 && index < list.length) {
      const edited = list.map((b, i) => (i === index ? { ...b, label, suggested: false, confidence: null } : b));
      commit(edited);
    } else {
      model.set("selected_class", label);
      model.save_changes();
    }
  }

  function deleteSelected() {
    const index = model.get("selected_box");
    const list = boxes();
    if (busy() || index < 0 || index >= list.length) return;
    commit(list.filter((_, i) => i !== index), -1);
  }

  // -- zoom and pan ----------------------------------------------------------------------
  function clampView() {
    const { w, h: hh } = size();
    tx = clamp(tx, w - w * zoomLevel, 0);
    ty = clamp(ty, hh - hh * zoomLevel, 0);
  }

  function zoomAt(factor, px, py) {
    const next = clamp(zoomLevel * factor, 1, MAX_ZOOM);
    const ix = (px - tx) / zoomLevel;
    const iy = (py - ty) / zoomLevel;
    zoomLevel = next;
    tx = px - ix * zoomLevel;
    ty = py - iy * zoomLevel;
    clampView();
    drawBoxes();
  }

  function zoomBy(factor) {
    const { w, h: hh } = size();
    zoomAt(factor, w / 2, hh / 2);
  }

  function resetZoom() {
    zoomLevel = 1;
    tx = 0;
    ty = 0;
    drawBoxes();
  }

  // Pointer position: stage pixels and relative image coordinates.
  function pointer(event) {
    const rect = svg.getBoundingClientRect();
    const { w, h: hh } = size();
    const px = event.clientX - rect.left;
    const py = event.clientY - rect.top;
    return { px, py, rx: (px - tx) / zoomLevel / w, ry: (py - ty) / zoomLevel / hh };
  }

  // -- mouse -----------------------------------------------------------------------------
  function onPointerDown(event) {
    root.focus({ preventScroll: true });
    if (busy() || !model.get("image") || (event.button !== 0 && event.button !== 1)) return;
    event.preventDefault();
    const at = pointer(event);
    const target = event.target;
    const list = model.get("boxes") || [];
    svg.setPointerCapture(event.pointerId);
    if (event.button === 1 || event.shiftKey || spaceHeld) {
      drag = { mode: "pan", x: event.clientX, y: event.clientY, tx, ty };
      return;
    }
    const corner = target.getAttribute && target.getAttribute("data-corner");
    const boxIndex = target.getAttribute && target.getAttribute("data-index");
    if (corner && !event.altKey) {
      const index = Number(target.getAttribute("data-box"));
      const b = list[index];
      const anchor = {
        x: corner.includes("w") ? b.x + b.w : b.x,
        y: corner.includes("n") ? b.y + b.h : b.y,
      };
      drag = { mode: "resize", index, anchor, moved: false };
    } else if (boxIndex !== null && boxIndex !== undefined && !event.altKey) {
      const index = Number(boxIndex);
      select(index);
      drag = { mode: "move", index, start: at, orig: { ...list[index] }, moved: false };
    } else {
      select(-1);
      drag = { mode: "draw", start: at, moved: false };
    }
    work = list.map((b) => ({ ...b }));
  }

  function onPointerMove(event) {
    if (!drag) return;
    event.preventDefault();
    if (drag.mode === "pan") {
      tx = drag.tx + (event.clientX - drag.x);
      ty = drag.ty + (event.clientY - drag.y);
      clampView();
      drawBoxes();
      return;
    }
    const at = pointer(event);
    const { w, h: hh } = size();
    if (drag.mode === "draw") {
      const wide = Math.abs(at.px - drag.start.px) >= MIN_DRAW_PX;
      const high = Math.abs(at.py - drag.start.py) >= MIN_DRAW_PX;
      drag.moved = wide && high;
      drag.box = spanBox(drag.start.rx, drag.start.ry, at.rx, at.ry);
    } else if (drag.mode === "move") {
      const o = drag.orig;
      const dx = at.rx - drag.start.rx;
      const dy = at.ry - drag.start.ry;
      if (Math.abs(dx * w * zoomLevel) + Math.abs(dy * hh * zoomLevel) >= 2) drag.moved = true;
      if (drag.moved) {
        work[drag.index] = {
          ...o, x: round6(clamp(o.x + dx, 0, 1 - o.w)), y: round6(clamp(o.y + dy, 0, 1 - o.h)),
          suggested: false, confidence: null,
        };
      }
    } else if (drag.mode === "resize") {
      const b = spanBox(drag.anchor.x, drag.anchor.y, at.rx, at.ry);
      if (b.w * w * zoomLevel >= 2 && b.h * hh * zoomLevel >= 2) {
        drag.moved = true;
        work[drag.index] = { ...work[drag.index], ...b, suggested: false, confidence: null };
      }
    }
    drawBoxes();
  }

  function onPointerUp(event) {
    if (!drag) return;
    const done = drag;
    drag = null;
    if (svg.hasPointerCapture(event.pointerId)) svg.releasePointerCapture(event.pointerId);
    const list = work;
    work = null;
    if (done.mode === "draw" && done.moved && done.box && done.box.w > 0 && done.box.h > 0) {
      const label = model.get("selected_class") || classes()[0];
      if (!label) {
        message.textContent = "this project has no classes yet: add one with p.add_class(name)";
      } else {
        const added = [...list, { label, ...done.box, suggested: false, confidence: null }];
        commit(added, added.length - 1);
        return;
      }
    } else if ((done.mode === "move" || done.mode === "resize") && done.moved) {
      commit(list, done.index);
      return;
    }
    drawBoxes();
  }

  function onWheel(event) {
    if (!model.get("image")) return;
    event.preventDefault();
    const at = pointer(event);
    zoomAt(Math.exp(-event.deltaY * 0.0015), at.px, at.py);
  }

  // -- keyboard --------------------------------------------------------------------------
  function onKey(event) {
    if (event.key === " ") {
      if (event.target === root) {
        spaceHeld = true;
        event.preventDefault();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (!OWN_KEYS.test(key)) return;
    // Enter on a focused button presses that button, as it always does.
    if (key === "Enter" && event.target instanceof HTMLButtonElement) return;
    event.preventDefault();
    event.stopPropagation();
    if (key === "Escape") {
      if (drag) {
        drag = null;
        work = null;
        drawBoxes();
      }
      select(-1);
    } else if (key === "+" || key === "=") zoomBy(1.5);
    else if (key === "-") zoomBy(1 / 1.5);
    else if (key === "0") resetZoom();
    else if (event.repeat || busy()) return;
    else if (key === "Enter") save();
    else if (key === "n") noDefect();
    else if (key === "s") moveTo("skip");
    else if (key === "ArrowLeft") moveTo("previous");
    else if (key === "ArrowRight") moveTo("next");
    else if (key === "Delete" || key === "Backspace") deleteSelected();
    else {
      const label = classes()[Number(key) - 1];
      if (label !== undefined) setClass(label);
    }
  }

  // -- drawing ---------------------------------------------------------------------------
  function drawBoxes() {
    const { w, h: hh } = size();
    const list = boxes();
    const palette = colors();
    const selected = drag && drag.mode === "draw" ? -1 : model.get("selected_box");
    view.setAttribute("transform", `translate(${tx} ${ty}) scale(${zoomLevel})`);
    zoomLabel.textContent = `${Math.round(zoomLevel * 100)}%`;
    const unit = 1 / zoomLevel; // one screen pixel in image pixels
    const nodes = [];
    const tags = [];
    list.forEach((b, i) => {
      const color = colorOf(b.label, palette);
      const rect = s("rect", {
        class: "loupe-boxes-box" + (b.suggested ? " loupe-boxes-suggested" : "")
          + (i === selected ? " loupe-boxes-selected" : ""),
        x: b.x * w, y: b.y * hh, width: b.w * w, height: b.h * hh,
        stroke: color, fill: color, "data-index": i, "data-label": b.label,
        "stroke-width": i === selected ? 3 : 2, "vector-effect": "non-scaling-stroke",
        "stroke-dasharray": b.suggested ? "6 4" : null,
      });
      nodes.push(rect);
      const text = b.suggested && b.confidence !== null && b.confidence !== undefined
        ? `${b.label} ${Number(b.confidence).toFixed(2)}` : b.label;
      const tag = s("text", {
        class: "loupe-boxes-tag", x: b.x * w + 2 * unit, y: b.y * hh - 3 * unit,
        "font-size": 12 * unit, fill: color, text,
      });
      if (b.y * hh * zoomLevel < 14) tag.setAttribute("y", b.y * hh + 12 * unit);
      tags.push(tag);
    });
    if (selected >= 0 && selected < list.length) {
      const b = list[selected];
      const size_ = HANDLE_PX * unit;
      for (const corner of CORNERS) {
        const cx = (corner.includes("w") ? b.x : b.x + b.w) * w;
        const cy = (corner.includes("n") ? b.y : b.y + b.h) * hh;
        nodes.push(s("rect", {
          class: `loupe-boxes-handle loupe-boxes-handle-${corner}`, "data-corner": corner,
          "data-box": selected, x: cx - size_ / 2, y: cy - size_ / 2, width: size_, height: size_,
          stroke: colorOf(b.label, palette), "vector-effect": "non-scaling-stroke",
        }));
      }
    }
    if (drag && drag.mode === "draw" && drag.box) {
      const color = colorOf(model.get("selected_class"), palette);
      nodes.push(s("rect", {
        class: "loupe-boxes-drawing", x: drag.box.x * w, y: drag.box.y * hh,
        width: drag.box.w * w, height: drag.box.h * hh, stroke: color,
        "vector-effect": "non-scaling-stroke",
      }));
    }
    layer.replaceChildren(...nodes, ...tags);
    drawBoxList(list, selected, palette);
  }

  function drawBoxList(list, selected, palette) {
    if (!list.length) {
      boxList.replaceChildren(h("div", {
        className: "loupe-boxes-none",
        text: model.get("labelled") ? "no defect (stored with zero boxes)" : "no boxes: drag on the image to draw one",
      }));
      return;
    }
    boxList.replaceChildren(...list.map((b, i) => h("button", {
      className: "loupe-boxes-item" + (i === selected ? " loupe-boxes-chosen" : "")
        + (b.suggested ? " loupe-boxes-suggested" : ""),
      type: "button", "data-index": i, style: { borderLeftColor: colorOf(b.label, palette) },
      onclick: () => select(i === selected ? -1 : i),
    }, [`${i + 1}. ${b.label}`, b.suggested && b.confidence !== null && b.confidence !== undefined
      ? h("span", { className: "loupe-boxes-conf", text: ` ${Number(b.confidence).toFixed(2)}` }) : null])));
  }

  function drawClasses() {
    const palette = colors();
    const current = model.get("selected_class");
    const list = classes();
    if (!list.length) {
      classList.replaceChildren(h("div", { className: "loupe-boxes-none", text: "no classes yet: p.add_class(name)" }));
      return;
    }
    classList.replaceChildren(...list.map((label, i) => h("button", {
      className: "loupe-boxes-class" + (label === current ? " loupe-boxes-chosen" : ""),
      type: "button", "data-label": label, title: i < 9 ? `key ${i + 1}` : "",
      style: { borderLeftColor: colorOf(label, palette) },
      onclick: () => setClass(label),
    }, [i < 9 ? h("kbd", { text: String(i + 1) }) : null,
      h("span", { className: "loupe-boxes-swatch", style: { background: colorOf(label, palette) } }), label])));
  }

  function drawAll() {
    const { w, h: hh } = size();
    if (model.get("sample_id") !== shownSample) {
      shownSample = model.get("sample_id");
      zoomLevel = 1;
      tx = 0;
      ty = 0;
      drag = null;
      work = null;
    }
    svg.setAttribute("width", w);
    svg.setAttribute("height", hh);
    svg.setAttribute("viewBox", `0 0 ${w} ${hh}`);
    stage.style.width = `${w}px`;
    stage.style.height = `${hh}px`;
    const src = model.get("image") || "";
    if (picture.getAttribute("href") !== src) picture.setAttribute("href", src);
    picture.setAttribute("width", w);
    picture.setAttribute("height", hh);
    missing.textContent = src ? "" : (model.get("image_error") || (model.get("total") ? "image unavailable" : "no images"));
    missing.style.display = src ? "none" : "";
    stage.classList.toggle("loupe-boxes-stage-suggested", Boolean(model.get("suggested")));
    stage.setAttribute("data-sample-id", model.get("sample_id") || "");
    const total = model.get("total");
    title.textContent = total ? `${model.get("name")} · ${model.get("index") + 1} of ${total}` : "no images";
    state.className = "loupe-boxes-state";
    if (boxes().some((b) => b.suggested)) {
      state.textContent = `suggestions from ${model.get("model_name")} (dashed): correct, then Enter`;
      state.classList.add("loupe-boxes-state-suggested");
    } else if (model.get("labelled")) {
      state.textContent = "labelled";
      state.classList.add("loupe-boxes-state-labelled");
    } else {
      state.textContent = total ? "not labelled yet" : "";
    }
    progress.textContent = `${model.get("saved")} saved by ${model.get("annotator")}`
      + (model.get("review") ? " (review)" : "");
    message.textContent = model.get("message") || "";
    error.textContent = model.get("error") || "";
    error.style.display = model.get("error") ? "" : "none";
    prevButton.disabled = model.get("index") <= 0;
    nextButton.disabled = model.get("index") >= total - 1;
    for (const b of [saveButton, noDefectButton]) b.disabled = !model.get("sample_id");
    skipButton.disabled = model.get("index") >= total - 1;
    deleteButton.disabled = model.get("selected_box") < 0;
    drawClasses();
    drawBoxes();
  }

  let scheduled = false;
  function schedule() {
    if (scheduled) return;
    scheduled = true;
    Promise.resolve().then(() => {
      scheduled = false;
      const hadFocus = root.contains(document.activeElement);
      drawAll();
      if (hadFocus && document.activeElement !== root && !root.contains(document.activeElement)) {
        root.focus({ preventScroll: true });
      }
    });
  }

  const listeners = WATCHED.map((name) => {
    const callback = () => schedule();
    model.on(`change:${name}`, callback);
    return [name, callback];
  });
  const onRevision = () => {
    busyUntil = 0;
  };
  model.on("change:revision", onRevision);
  svg.addEventListener("pointerdown", onPointerDown);
  svg.addEventListener("pointermove", onPointerMove);
  svg.addEventListener("pointerup", onPointerUp);
  svg.addEventListener("pointercancel", onPointerUp);
  svg.addEventListener("wheel", onWheel, { passive: false });
  svg.addEventListener("contextmenu", (event) => event.preventDefault());
  root.addEventListener("keydown", onKey);
  root.addEventListener("keyup", (event) => {
    if (event.key === " ") spaceHeld = false;
  });
  root.addEventListener("mousedown", (event) => {
    if (!(event.target instanceof HTMLButtonElement)) root.focus({ preventScroll: true });
  });
  drawAll();
  requestAnimationFrame(() => root.focus({ preventScroll: true }));

  return () => {
    for (const [name, callback] of listeners) model.off(`change:${name}`, callback);
    model.off("change:revision", onRevision);
  };
}

export default { render };
