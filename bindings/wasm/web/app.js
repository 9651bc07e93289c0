// podci pipeline preview: the page's view logic. All pipeline knowledge (loading,
// validation, rules, payloads, layout) comes from the wasm module; this file draws it and
// keeps the user's YAML in the browser (the share link carries it in the URL fragment,
// which browsers never send to a server).
import init, { Preview, version } from "./pkg/podci_wasm.js";

const $ = (id) => document.getElementById(id);
const SAMPLE = `stages: [build, test, deploy]

variables:
  IMAGE: registry.example.com/app

.maven:
  image: maven:3.9-eclipse-temurin-21
  cache:
    key: maven
    paths: [.m2/repository]

compile:
  extends: .maven
  stage: build
  script: mvn -B package

unit-tests:
  extends: .maven
  stage: test
  needs: [compile]
  parallel: 3
  script: mvn -B test

lint:
  stage: test
  needs: []
  script: echo lint

image:
  stage: deploy
  needs: [compile, unit-tests]
  script: podci image build -t $IMAGE:$CI_COMMIT_SHORT_SHA
  rules:
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
    - if: $CI_COMMIT_TAG

release:
  stage: deploy
  needs: [image]
  script: kubectl apply -f deployment.yaml
  rules:
    - if: $CI_COMMIT_TAG
`;

const state = {
  preview: null,
  files: {},          // include:local path -> text
  view: "stages",     // stages | needs | config
  selected: null,     // job name in the panel
  renders: 0,
  timings: {},
};
window.podci = { state };

function toast(msg) {
  const t = $("toast");
  t.textContent = msg;
  t.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => (t.hidden = true), 2500);
}

// ---- context bar --------------------------------------------------------------------
function readContext() {
  const variables = [];
  for (const line of $("ctx-vars").value.split("\n")) {
    const i = line.indexOf("=");
    if (i > 0) variables.push({ key: line.slice(0, i).trim(), value: line.slice(i + 1) });
  }
  return {
    ref: $("ctx-ref").value.trim(),
    tag: $("ctx-tag").checked,
    source: $("ctx-source").value,
    default_branch: $("ctx-default").value.trim(),
    protected: $("ctx-protected").checked,
    variables,
  };
}

function writeContext(c) {
  if (!c) return;
  $("ctx-ref").value = c.ref ?? "main";
  $("ctx-tag").checked = !!c.tag;
  $("ctx-source").value = c.source ?? "push";
  $("ctx-default").value = c.default_branch ?? "main";
  $("ctx-protected").checked = !!c.protected;
  $("ctx-vars").value = (c.variables ?? []).map((v) => `${v.key}=${v.value}`).join("\n");
}

// ---- editor -------------------------------------------------------------------------
function renderGutter(diags) {
  const lines = $("yaml").value.split("\n").length;
  const marks = new Map();
  for (const d of diags) {
    if (d.line > 0 && d.file === ".gitlab-ci.yml") {
      const prev = marks.get(d.line);
      if (!prev || prev.severity === "warning") marks.set(d.line, d);
    }
  }
  const frag = document.createDocumentFragment();
  for (let i = 1; i <= lines; i++) {
    const s = document.createElement("span");
    s.textContent = i;
    s.dataset.line = i;
    const d = marks.get(i);
    if (d) {
      s.className = d.severity;
      s.title = d.message;
    }
    frag.appendChild(s);
  }
  $("gutter").replaceChildren(frag);
  syncScroll();
}

function syncScroll() {
  $("gutter").scrollTop = $("yaml").scrollTop;
}

function goToLine(line, column) {
  const ta = $("yaml");
  const lines = ta.value.split("\n");
  let pos = 0;
  for (let i = 0; i < line - 1 && i < lines.length; i++) pos += lines[i].length + 1;
  pos += Math.max(0, (column || 1) - 1);
  ta.focus();
  ta.setSelectionRange(pos, pos);
  ta.scrollTop = Math.max(0, (line - 5) * 18);
  syncScroll();
}

function renderDiagnostics(diags, evalErrors) {
  const ul = $("diagnostics");
  const items = [];
  for (const d of [...diags, ...evalErrors]) {
    const li = document.createElement("li");
    li.className = d.severity || "error";
    const pos = document.createElement("span");
    pos.className = "pos";
    pos.textContent = d.line > 0 ? `${d.file}:${d.line}:${d.column}` : d.file;
    li.append(pos, (d.severity === "warning" ? "warning: " : "") + d.message);
    li.dataset.line = d.line;
    if (d.line > 0 && d.file === ".gitlab-ci.yml") {
      li.tabIndex = 0;
      li.onclick = () => goToLine(d.line, d.column);
      li.onkeydown = (e) => e.key === "Enter" && goToLine(d.line, d.column);
    }
    items.push(li);
  }
  if (items.length === 0) {
    const li = document.createElement("li");
    li.className = "ok";
    li.textContent = "Syntax is correct.";
    items.push(li);
  }
  ul.replaceChildren(...items);
}

// ---- pipeline graph -----------------------------------------------------------------
function decisionsByJob(evaluation) {
  const m = new Map();
  for (const d of evaluation.decisions) m.set(d.job, d);
  const when = new Map();
  for (const j of evaluation.jobs) if (!when.has(j.job)) when.set(j.job, j.when);
  return { decisions: m, when };
}

function cardElement(card, info, created) {
  const el = document.createElement("div");
  el.className = "card";
  el.dataset.job = card.name;
  el.tabIndex = 0;
  el.setAttribute("role", "listitem");
  const d = info.decisions.get(card.name);
  const runs = created && d ? d.runs : false;
  const when = info.when.get(card.name);
  el.classList.add(runs ? (when === "manual" ? "manual" : "runs") : "excluded");
  el.dataset.runs = runs ? "true" : "false";
  const name = document.createElement("div");
  name.className = "name";
  name.textContent = card.name;
  if (card.instances.length > 1) {
    const c = document.createElement("button");
    c.type = "button";
    c.className = "count";
    c.textContent = card.instances.length;
    c.title = "Show the parallel instances";
    c.setAttribute("aria-expanded", "false");
    c.onclick = (e) => {
      e.stopPropagation();
      const open = el.querySelector("ul");
      if (open) {
        open.remove();
        c.setAttribute("aria-expanded", "false");
      } else {
        const ul = document.createElement("ul");
        for (const i of card.instances) {
          const li = document.createElement("li");
          li.textContent = i;
          ul.appendChild(li);
        }
        el.appendChild(ul);
        c.setAttribute("aria-expanded", "true");
      }
      drawLinks();
    };
    name.prepend(c);
  }
  const meta = document.createElement("div");
  meta.className = "meta";
  let why = "";
  if (!created) why = "pipeline not created (workflow:rules)";
  else if (d) why = d.runs ? (when && when !== "on_success" ? `when: ${when}` : "") : d.reason;
  if (d && d.rule_text) why += (why ? " — " : "") + `rules[${d.rule}]: ${d.rule_text}`;
  meta.textContent = why;
  el.title = `${card.name} (${card.stage})${why ? "\n" + why : ""}`;
  el.append(name, meta);
  return el;
}

function renderGraph() {
  const p = state.preview;
  const graph = $("graph");
  if (!p) return;
  if (!p.valid()) {
    graph.classList.add("invalid");
    const msg = document.createElement("p");
    msg.className = "notice";
    msg.textContent = "GitLab would reject this configuration: fix the errors listed under the editor to see the pipeline.";
    graph.replaceChildren(msg);
    $("links").replaceChildren();
    state.layout = null;
    $("summary").textContent = "invalid configuration";
    return;
  }
  graph.classList.remove("invalid");
  const t0 = performance.now();
  const layout = p.layout(state.view === "needs" ? "needs" : "stages");
  const evaluation = p.evaluation();
  const t1 = performance.now();
  const info = decisionsByJob(evaluation);
  const frag = document.createDocumentFragment();
  for (const col of layout.columns) {
    const c = document.createElement("div");
    c.className = "column";
    const h = document.createElement("h3");
    h.textContent = col.title;
    c.appendChild(h);
    for (const card of col.cards) c.appendChild(cardElement(card, info, evaluation.created));
    frag.appendChild(c);
  }
  graph.replaceChildren(frag);
  state.layout = layout;
  state.evaluation = evaluation;
  state.cards = new Map([...graph.querySelectorAll(".card")].map((el) => [el.dataset.job, el]));
  drawLinks();
  const t2 = performance.now();
  state.timings.layout = t1 - t0;
  state.timings.render = t2 - t1;
  const total = layout.columns.reduce((n, c) => n + c.cards.reduce((m, k) => m + k.instances.length, 0), 0);
  const running = evaluation.created ? evaluation.jobs.length : 0;
  $("summary").textContent = `${running} of ${total} jobs run`;
  $("workflow").textContent = evaluation.created ? "" : "workflow:rules: no pipeline is created for this context";
}

function drawLinks() {
  const svg = $("links");
  const graph = $("graph");
  const layout = state.layout;
  if (!layout || !state.cards) return;
  svg.setAttribute("width", graph.scrollWidth);
  svg.setAttribute("height", graph.scrollHeight);
  const ns = "http://www.w3.org/2000/svg";
  const frag = document.createDocumentFragment();
  const box = (el) => ({ x: el.offsetLeft, y: el.offsetTop, w: el.offsetWidth, h: el.offsetHeight });
  const boxes = new Map();
  const get = (name) => {
    if (!boxes.has(name)) {
      const el = state.cards.get(name);
      boxes.set(name, el ? box(el) : null);
    }
    return boxes.get(name);
  };
  for (const l of layout.links) {
    const a = get(l.from);
    const b = get(l.to);
    if (!a || !b) continue;
    const path = document.createElementNS(ns, "path");
    let d;
    if (Math.abs(a.x - b.x) < 4) {
      // Same column (a need within the stage): an arc on the right side.
      const x = a.x + a.w, y1 = a.y + a.h / 2, y2 = b.y + b.h / 2;
      d = `M${x},${y1} C${x + 30},${y1} ${x + 30},${y2} ${x},${y2}`;
    } else {
      const x1 = a.x + a.w, y1 = a.y + a.h / 2, x2 = b.x, y2 = b.y + b.h / 2;
      const mx = (x1 + x2) / 2;
      d = `M${x1},${y1} C${mx},${y1} ${mx},${y2} ${x2},${y2}`;
    }
    path.setAttribute("d", d);
    path.dataset.from = l.from;
    path.dataset.to = l.to;
    frag.appendChild(path);
  }
  svg.replaceChildren(frag);
}

function highlight(name, on) {
  const layout = state.layout;
  if (!layout) return;
  const related = new Set();
  for (const l of layout.links) {
    if (l.from === name) related.add(l.to);
    if (l.to === name) related.add(l.from);
  }
  state.cards.get(name)?.classList.toggle("hl-self", on);
  for (const r of related) state.cards.get(r)?.classList.toggle("hl", on);
  for (const p of $("links").children) {
    if (p.dataset.from === name || p.dataset.to === name) p.classList.toggle("hl", on);
  }
}

// ---- job panel ----------------------------------------------------------------------
function openPanel(name) {
  const p = state.preview;
  if (!p) return;
  state.selected = name;
  const card = state.layout?.columns.flatMap((c) => c.cards).find((c) => c.name === name);
  $("panel").hidden = false;
  $("panel-title").textContent = name;
  const d = state.evaluation?.decisions.find((x) => x.job === name);
  $("panel-decision").textContent = d
    ? (d.runs ? "Runs" : "Does not run") + ` — ${d.reason}` + (d.rule_text ? ` (rules[${d.rule}]: ${d.rule_text})` : "")
    : "";
  const sel = $("panel-instance");
  const instances = card ? card.instances : [name];
  sel.replaceChildren(...instances.map((i) => new Option(i, i)));
  $("panel-instance-label").hidden = instances.length < 2;
  $("panel-yaml").textContent = p.job_yaml(name) ?? "";
  showPayload(instances[0]);
}

function showPayload(instance) {
  const payload = state.preview.payload(instance);
  $("panel-payload").textContent = payload
    ? JSON.stringify(payload, null, 2)
    : "This job does not run in the current context, so no runner would receive it.";
}

function closePanel() {
  $("panel").hidden = true;
  const name = state.selected;
  state.selected = null;
  if (name) state.cards?.get(name)?.focus();
}

// ---- update cycle -------------------------------------------------------------------
function update() {
  const t0 = performance.now();
  if (state.preview) state.preview.free();
  let preview;
  try {
    preview = new Preview($("yaml").value, state.files);
    const ctx = readContext();
    preview.set_context(ctx);
    state.contextKey = JSON.stringify(ctx);
  } catch (e) {
    toast(String(e.message || e));
    return;
  }
  state.preview = preview;
  const t1 = performance.now();
  state.timings.lint = t1 - t0;
  const diags = preview.diagnostics();
  const evaluation = preview.valid() ? preview.evaluation() : { errors: [] };
  renderGutter(diags);
  renderDiagnostics(diags, evaluation.errors.map((e) => ({ ...e, severity: "error" })));
  renderView();
  if (state.selected && !$("panel").hidden) openPanel(state.selected);
  finishRender();
}

function recontext() {
  if (!state.preview) return;
  // `change` follows `input` when a field loses focus; redrawing then would replace the
  // card the user is clicking, so only a context that really changed redraws.
  const ctx = readContext();
  const key = JSON.stringify(ctx);
  if (key === state.contextKey) return;
  try {
    state.preview.set_context(ctx);
    state.contextKey = key;
  } catch (e) {
    toast(String(e.message || e));
    return;
  }
  renderView();
  if (state.selected && !$("panel").hidden) openPanel(state.selected);
  finishRender();
}

function finishRender() {
  state.renders++;
  document.body.dataset.renders = state.renders;
  document.body.dataset.state = "ready";
}

function renderView() {
  const isConfig = state.view === "config";
  $("graph-wrap").hidden = isConfig;
  $("config").hidden = !isConfig;
  for (const t of document.querySelectorAll("[role=tab]")) {
    t.setAttribute("aria-selected", String(t.dataset.view === state.view));
  }
  if (isConfig) {
    const p = state.preview;
    $("config").textContent = p ? (p.valid() ? p.merged_yaml() : "The configuration has errors; fix them to see it merged.") : "";
  } else {
    renderGraph();
  }
}

function debounce(fn, ms) {
  let t;
  return (...a) => {
    clearTimeout(t);
    t = setTimeout(() => fn(...a), ms);
  };
}

// ---- files (drag and drop, picker) --------------------------------------------------
function renderFiles() {
  const box = $("files");
  const items = Object.keys(state.files).sort().map((path) => {
    const s = document.createElement("span");
    s.textContent = path;
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = "×";
    b.setAttribute("aria-label", `Remove ${path}`);
    b.onclick = () => {
      delete state.files[path];
      renderFiles();
      update();
    };
    s.appendChild(b);
    return s;
  });
  box.replaceChildren(...items);
}

async function addFiles(list) {
  for (const f of list) {
    const text = await f.text();
    const path = (f.webkitRelativePath || f.name).replace(/^\/+/, "");
    if (path === ".gitlab-ci.yml" || path.endsWith("/.gitlab-ci.yml")) {
      $("yaml").value = text;
    } else {
      state.files[path] = text;
    }
  }
  renderFiles();
  update();
}

// ---- share link ---------------------------------------------------------------------
function b64url(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64url(s) {
  const bin = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

async function pipe(bytes, stream) {
  const s = new Blob([bytes]).stream().pipeThrough(stream);
  return new Uint8Array(await new Response(s).arrayBuffer());
}

async function shareLink() {
  const doc = { y: $("yaml").value, f: state.files, c: readContext() };
  const data = await pipe(new TextEncoder().encode(JSON.stringify(doc)), new CompressionStream("deflate-raw"));
  const url = `${location.origin}${location.pathname}#z=${b64url(data)}`;
  history.replaceState(null, "", url);
  try {
    await navigator.clipboard.writeText(url);
    toast("Link copied: the YAML travels in the #fragment, never to a server.");
  } catch {
    toast("Link in the address bar: the YAML travels in the #fragment, never to a server.");
  }
  return url;
}

async function loadFromHash() {
  const m = location.hash.match(/^#z=([A-Za-z0-9_-]+)$/);
  if (!m) return false;
  try {
    const bytes = await pipe(unb64url(m[1]), new DecompressionStream("deflate-raw"));
    const doc = JSON.parse(new TextDecoder().decode(bytes));
    $("yaml").value = String(doc.y ?? "");
    state.files = doc.f && typeof doc.f === "object" ? doc.f : {};
    writeContext(doc.c);
    return true;
  } catch (e) {
    toast("The link's pipeline could not be read: " + e);
    return false;
  }
}

// `podci preview` serves the file and its includes next to the page.
async function loadFromServer() {
  const q = new URLSearchParams(location.search);
  const src = q.get("src");
  if (!src) return false;
  const r = await fetch(src);
  if (!r.ok) {
    toast(`Cannot read ${src}: HTTP ${r.status}`);
    return false;
  }
  $("yaml").value = await r.text();
  const files = q.get("files");
  if (files) {
    const f = await fetch(files);
    if (f.ok) state.files = await f.json();
  }
  return true;
}

// ---- theme and keyboard -------------------------------------------------------------
function toggleTheme() {
  const root = document.documentElement;
  const dark = root.dataset.theme
    ? root.dataset.theme === "dark"
    : matchMedia("(prefers-color-scheme: dark)").matches;
  root.dataset.theme = dark ? "light" : "dark";
  localStorage.setItem("podci-theme", root.dataset.theme);
}

function setView(v) {
  state.view = v;
  renderView();
  finishRender();
}

function wire() {
  const ta = $("yaml");
  ta.addEventListener("input", debounce(update, 120));
  ta.addEventListener("scroll", syncScroll);
  ta.addEventListener("keydown", (e) => {
    // Tab indents (two spaces) instead of leaving the editor; Esc then Tab leaves it.
    if (e.key === "Tab" && !e.shiftKey && !ta.dataset.escaped) {
      e.preventDefault();
      ta.setRangeText("  ", ta.selectionStart, ta.selectionEnd, "end");
      ta.dispatchEvent(new Event("input"));
    } else if (e.key === "Escape") {
      ta.dataset.escaped = "1";
    } else {
      delete ta.dataset.escaped;
    }
  });
  $("context").addEventListener("input", debounce(recontext, 80));
  $("context").addEventListener("change", recontext);
  for (const t of document.querySelectorAll("[role=tab]")) t.onclick = () => setView(t.dataset.view);
  const graph = $("graph");
  graph.addEventListener("click", (e) => {
    const c = e.target.closest(".card");
    if (c) openPanel(c.dataset.job);
  });
  graph.addEventListener("keydown", (e) => {
    const c = e.target.closest(".card");
    if (c && (e.key === "Enter" || e.key === " ")) {
      e.preventDefault();
      openPanel(c.dataset.job);
    } else if (c && e.key.startsWith("Arrow") && e.target === c) {
      // Arrows move between cards: up/down within a column, left/right to the same row
      // of the neighbouring column.
      const col = c.parentElement;
      const cards = [...col.querySelectorAll(":scope > .card")];
      const i = cards.indexOf(c);
      let next = null;
      if (e.key === "ArrowDown") next = cards[i + 1];
      else if (e.key === "ArrowUp") next = cards[i - 1];
      else {
        const other = e.key === "ArrowRight" ? col.nextElementSibling : col.previousElementSibling;
        const oc = other ? [...other.querySelectorAll(":scope > .card")] : [];
        next = oc[Math.min(i, oc.length - 1)];
      }
      if (next) {
        e.preventDefault();
        next.focus();
      }
    }
  });
  for (const [ev, on] of [["mouseover", true], ["mouseout", false], ["focusin", true], ["focusout", false]]) {
    graph.addEventListener(ev, (e) => {
      const c = e.target.closest(".card");
      if (c) highlight(c.dataset.job, on);
    });
  }
  $("panel-close").onclick = closePanel;
  $("panel-instance").onchange = (e) => showPayload(e.target.value);
  $("share").onclick = shareLink;
  $("theme").onclick = toggleTheme;
  $("file-picker").onchange = (e) => addFiles(e.target.files);
  let depth = 0;
  addEventListener("dragenter", (e) => {
    e.preventDefault();
    depth++;
    $("drop").hidden = false;
  });
  addEventListener("dragleave", () => {
    if (--depth <= 0) {
      depth = 0;
      $("drop").hidden = true;
    }
  });
  addEventListener("dragover", (e) => e.preventDefault());
  addEventListener("drop", (e) => {
    e.preventDefault();
    depth = 0;
    $("drop").hidden = true;
    if (e.dataTransfer?.files?.length) addFiles(e.dataTransfer.files);
  });
  addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("panel").hidden) closePanel();
    if (!e.altKey) return;
    const k = { 1: "stages", 2: "needs", 3: "config" }[e.key];
    if (k) {
      e.preventDefault();
      setView(k);
    } else if (e.key === "s") {
      e.preventDefault();
      shareLink();
    } else if (e.key === "t") {
      e.preventDefault();
      toggleTheme();
    } else if (e.key === "e") {
      e.preventDefault();
      ta.focus();
    }
  });
  addEventListener("resize", debounce(drawLinks, 100));
  addEventListener("hashchange", async () => {
    if (await loadFromHash()) {
      renderFiles();
      update();
    }
  });
}

// Benchmark hook (bench/wasm.sh): lint, evaluate and lay out `yaml`, then draw it.
window.podciBench = (yaml, view = "needs") => {
  $("yaml").value = yaml;
  state.view = view;
  const t0 = performance.now();
  const p = new Preview(yaml, {});
  const ok = p.valid();
  const t1 = performance.now();
  const layout = p.layout(view);
  const t2 = performance.now();
  p.free();
  update();
  const t3 = performance.now();
  return { valid: ok, lint_ms: t1 - t0, layout_ms: t2 - t1, page_ms: t3 - t2, cards: layout.columns.reduce((n, c) => n + c.cards.length, 0) };
};

async function main() {
  const saved = localStorage.getItem("podci-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  await init();
  document.title = `podci ${version()} pipeline preview`;
  wire();
  if (!(await loadFromHash()) && !(await loadFromServer())) $("yaml").value = SAMPLE;
  renderFiles();
  update();
}

main().catch((e) => {
  document.body.dataset.state = "failed";
  document.body.prepend(Object.assign(document.createElement("p"), {
    className: "diagnostics error",
    textContent: `podci preview could not start: ${e}. Build the wasm first: bindings/wasm/build.sh`,
  }));
});
