// ReviewQueue front-end (anywidget, plain ES module, no build step, no imports).
//
// Python owns the state (cards, index, decisions); this module draws it and sends custom
// messages: {type: "decide", sample_id, action: "accept" | "keep" | "label", label},
// {type: "undo"}, {type: "move", index}. Python answers by updating the synced traits.
//
// Keys (while the widget has focus): a / Enter accept the suggestion, k keep the given
// label, 1–9 choose class n, ← / → previous / next card, u undo the last decision, h show
// or hide an anomaly version's heatmap.

const GREY = "#9E9E9E";
// How often an open page asks whether others decided cards of its queue.
const POLL_MS = 5000;
const WATCHED = ["cards", "index", "decisions", "taken", "decided", "classes", "colors", "image",
  "image_error", "strip", "message", "error", "title", "can_undo", "heat", "has_heatmaps"];
// The keys the widget owns while it has focus (kept from JupyterLab's command mode).
const OWN_KEYS = /^(?:[ahku1-9]|Enter|ArrowLeft|ArrowRight)$/;

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

function colorOf(label, colors) {
  return label === null || label === undefined ? GREY : (colors[label] || GREY);
}

function textColor(hex) {
  const m = /^#?([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(hex || "");
  if (!m) return "#fff";
  const [r, g, b] = m.slice(1).map((x) => parseInt(x, 16));
  return 0.299 * r + 0.587 * g + 0.114 * b > 150 ? "#1f2933" : "#fff";
}

function badge(label, colors) {
  const bg = colorOf(label, colors);
  return h("span", {
    className: "loupe-review-badge" + (label === null || label === undefined ? " loupe-review-none" : ""),
    "data-label": label ?? "",
    style: { background: bg, color: textColor(bg) },
    text: label ?? "none",
  });
}

function fmt(x) {
  return x === null || x === undefined ? "" : Number(x).toFixed(2);
}

function render({ model, el }) {
  const root = h("div", {
    className: "loupe-review", tabindex: "0", "data-lm-suppress-shortcuts": "true",
    "aria-label": "Review queue: a accept, k keep, 1-9 class, arrows move, u undo",
  });
  const title = h("span", { className: "loupe-review-title" });
  const progress = h("span", { className: "loupe-review-progress" });
  const cardBox = h("div", { className: "loupe-review-main" });
  const strip = h("div", { className: "loupe-review-strip" });
  const message = h("div", { className: "loupe-review-message", role: "status" });
  const error = h("div", { className: "loupe-review-error", role: "alert" });
  const help = h("div", {
    className: "loupe-review-help",
    text: "a / Enter accept · k keep · 1–9 class · ← → move · u undo",
  });
  root.append(h("div", { className: "loupe-review-header" }, [title, progress]),
    h("div", { className: "loupe-review-body" }, [cardBox, strip]), message, error, help);
  el.append(root);

  let busyUntil = 0; // a decision is in flight: ignore further decisions briefly
  let pendingIndex = null; // a move is in flight: arrows count from its target

  const cards = () => model.get("cards") || [];
  const current = () => cards()[model.get("index")] || null;

  function send(content) {
    model.send(content);
  }

  function decide(action, label) {
    const card = current();
    if (!card || Date.now() < busyUntil) return;
    busyUntil = Date.now() + 1500;
    const content = { type: "decide", sample_id: card.sample_id, action };
    if (label !== undefined) content.label = label;
    send(content);
  }

  function move(index) {
    const n = cards().length;
    if (n === 0) return;
    const target = Math.min(Math.max(index, 0), n - 1);
    if (target === (pendingIndex ?? model.get("index"))) return;
    pendingIndex = target;
    send({ type: "move", index: target });
  }

  function undo() {
    if (Date.now() < busyUntil) return;
    busyUntil = Date.now() + 1500;
    send({ type: "undo" });
  }

  function onKey(event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
    if (!OWN_KEYS.test(key)) return;
    // Enter on a focused button presses that button, as it always does.
    if (key === "Enter" && event.target instanceof HTMLButtonElement) return;
    event.preventDefault();
    event.stopPropagation();
    const index = pendingIndex ?? model.get("index");
    if (key === "ArrowRight") move(index + 1);
    else if (key === "ArrowLeft") move(index - 1);
    else if (event.repeat) return;
    else if (key === "a" || key === "Enter") decide("accept");
    else if (key === "k") decide("keep");
    else if (key === "u") undo();
    else if (key === "h") {
      if (model.get("has_heatmaps")) { model.set("overlay", !model.get("overlay")); model.save_changes(); }
    }
    else {
      const label = (model.get("classes") || [])[Number(key) - 1];
      if (label !== undefined) decide("label", label);
    }
  }

  function heatOverlay() {  // an anomaly version's heatmap, red where it looks wrong
    if (!model.get("heat") || !model.get("image")) return null;
    return h("img", { className: "loupe-review-heat", src: model.get("heat"), alt: "",
                      title: "heatmap (h hides it)" });
  }

  function drawCard() {
    const list = cards();
    const card = current();
    const colors = model.get("colors") || {};
    const classes = model.get("classes") || [];
    const decisions = model.get("decisions") || {};
    if (!card) {
      cardBox.replaceChildren(h("div", { className: "loupe-review-empty", text: "Nothing to review." }));
      return;
    }
    const decision = decisions[card.sample_id] || null;
    const taken = model.get("taken") || {};
    const image = model.get("image")
      ? h("img", {
        className: "loupe-review-image", src: model.get("image"), alt: card.name,
        title: card.name, style: { maxWidth: `${model.get("image_size")}px`, maxHeight: `${model.get("image_size")}px` },
      })
      : h("div", {
        className: "loupe-review-image loupe-review-missing",
        style: { width: `${model.get("image_size")}px`, height: `${model.get("image_size")}px` },
        text: model.get("image_error") || "image unavailable",
      });
    const suggested = h("div", { className: "loupe-review-suggested" }, [
      h("span", { className: "loupe-review-key", text: "suggested" }), badge(card.suggested, colors),
      card.probability !== null
        ? h("span", { className: "loupe-review-prob", text: `${card.probability_name} ${fmt(card.probability)}` })
        : null,
    ]);
    const annotators = (card.annotators || []).map((a) => h("span", {
      className: "loupe-review-annotator", "data-annotator": a.annotator,
    }, [h("span", { className: "loupe-review-who", text: a.annotator }), badge(a.label, colors)]));
    const labelButtons = classes.map((label, i) => h("button", {
      className: "loupe-review-label" + (decision && decision.label === label ? " loupe-review-chosen" : ""),
      type: "button", "data-label": label, title: i < 9 ? `key ${i + 1}` : "",
      style: { borderColor: colorOf(label, colors) },
      onclick: () => decide("label", label),
    }, [i < 9 ? h("kbd", { text: String(i + 1) }) : null, h("span", { className: "loupe-review-swatch", style: { background: colorOf(label, colors) } }), label]));
    const facts = h("div", { className: "loupe-review-facts" }, [
      h("div", { className: "loupe-review-name", text: `${card.name} · card ${model.get("index") + 1} of ${list.length}` }),
      h("div", { className: "loupe-review-given" }, [
        h("span", { className: "loupe-review-key", text: "given" }), badge(card.given, colors)]),
      suggested,
      card.score !== null
        ? h("div", { className: "loupe-review-score", text: `${card.score_name} ${fmt(card.score)}` }) : null,
      card.reason ? h("div", { className: "loupe-review-reason", text: card.reason }) : null,
      taken[card.sample_id]
        ? h("div", { className: "loupe-review-taken", role: "status", text: taken[card.sample_id] })
        : null,
      annotators.length ? h("div", { className: "loupe-review-annotators" }, annotators) : null,
      decision
        ? h("div", { className: "loupe-review-decision" }, [
          h("span", { className: "loupe-review-key", text: `decided (${decision.action})` }),
          badge(decision.label, colors)])
        : null,
      h("div", { className: "loupe-review-buttons" }, [
        h("button", {
          className: "loupe-review-accept", type: "button", disabled: card.suggested === null,
          onclick: () => decide("accept"),
        }, [h("kbd", { text: "A" }), ` Accept ${card.suggested ?? ""}`]),
        h("button", {
          className: "loupe-review-keep", type: "button", disabled: card.given === null,
          onclick: () => decide("keep"),
        }, [h("kbd", { text: "K" }), ` Keep ${card.given ?? ""}`]),
        h("button", {
          className: "loupe-review-undo", type: "button", disabled: !model.get("can_undo"),
          onclick: () => undo(),
        }, [h("kbd", { text: "U" }), " Undo"]),
        h("button", {
          className: "loupe-review-prev", type: "button", disabled: model.get("index") <= 0,
          onclick: () => move(model.get("index") - 1), text: "←",
        }),
        h("button", {
          className: "loupe-review-next", type: "button", disabled: model.get("index") >= list.length - 1,
          onclick: () => move(model.get("index") + 1), text: "→",
        }),
      ]),
      h("div", { className: "loupe-review-labels" }, labelButtons),
    ]);
    const box = h("div", {
      className: "loupe-review-card" + (decision ? " loupe-review-decided" : "")
        + ((model.get("taken") || {})[card.sample_id] ? " loupe-review-taken-card" : ""),
      "data-sample-id": card.sample_id, "data-index": String(model.get("index")),
    }, [h("div", { className: "loupe-review-imagebox" }, [image, heatOverlay()]), facts]);
    cardBox.replaceChildren(box);
  }

  function drawStrip() {
    const colors = model.get("colors") || {};
    const decisions = model.get("decisions") || {};
    const size = model.get("thumb_size");
    const items = (model.get("strip") || []).map((item) => {
      const decision = decisions[item.sample_id];
      const shown = decision ? decision.label : item.given;
      return h("button", {
        className: "loupe-review-thumb" + (decision ? " loupe-review-decided" : ""),
        type: "button", "data-index": String(item.index), "data-sample-id": item.sample_id,
        title: `${item.name} (${shown ?? "unlabelled"})`,
        style: { borderColor: colorOf(shown, colors) },
        onclick: () => move(item.index),
      }, [item.thumb
        ? h("img", { src: item.thumb, alt: item.name, style: { maxWidth: `${size}px`, maxHeight: `${size}px` } })
        : h("span", { className: "loupe-review-missing", style: { width: `${size}px`, height: `${size}px` }, text: "?" })]);
    });
    strip.replaceChildren(...(items.length ? [h("div", { className: "loupe-review-strip-label", text: "next" }), ...items] : []));
  }

  function draw() {
    const n = cards().length;
    title.textContent = model.get("title") || "";
    progress.textContent = `${model.get("decided")} of ${n} reviewed`;
    message.textContent = model.get("message") || "";
    error.textContent = model.get("error") || "";
    error.style.display = model.get("error") ? "" : "none";
    drawCard();
    drawStrip();
  }

  let scheduled = false;
  function schedule(name) {
    if (name === "index") pendingIndex = null;
    if (["decisions", "error", "message", "index", "cards"].includes(name)) busyUntil = 0;
    if (scheduled) return;
    scheduled = true;
    Promise.resolve().then(() => {
      scheduled = false;
      const hadFocus = root.contains(document.activeElement);
      draw();
      if (hadFocus && document.activeElement !== root && !root.contains(document.activeElement)) {
        root.focus({ preventScroll: true });
      }
    });
  }

  const listeners = WATCHED.map((name) => {
    const callback = () => schedule(name);
    model.on(`change:${name}`, callback);
    return [name, callback];
  });
  root.addEventListener("keydown", onKey);
  root.addEventListener("mousedown", (event) => {
    if (!(event.target instanceof HTMLButtonElement)) root.focus({ preventScroll: true });
  });
  root.addEventListener("click", () => root.focus({ preventScroll: true }));
  draw();
  requestAnimationFrame(() => root.focus({ preventScroll: true }));
  // A page left open learns what others decided: every POLL_MS (while visible) the kernel
  // re-reads the queue's histories and marks the cards someone else decided meanwhile.
  const poller = setInterval(() => {
    if (document.visibilityState === "visible" && root.isConnected) send({ type: "poll" });
  }, POLL_MS);

  return () => {
    clearInterval(poller);
    for (const [name, callback] of listeners) model.off(`change:${name}`, callback);
  };
}

export default { render };
