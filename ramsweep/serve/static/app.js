// ramsweep serve: the page. Reads /api/ only (GET); never writes. Server-sent events say when
// something changed; a lost stream is retried by the browser and the page catches up on reconnect;
// without EventSource (or when the stream keeps failing) it polls /api/status instead.

const POLL_MS = 5000;
const NARROW = ["tiers", "ctx", "cal.", "bpb", "s", "device"]; // columns hidden on a phone (class "wide")

const $ = (id) => document.getElementById(id);
let shownVersion = null;   // the results version the lists were last loaded at
let seenKeys = null;       // keys of the latest results already shown (null before the first load)
let polling = null;
let failures = 0;
let streaming = false;    // the event stream is open

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "text") node.textContent = value;
    else if (name === "class") node.className = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

async function getJSON(path) {
  const response = await fetch(path, { credentials: "same-origin", cache: "no-store" });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function setConnection(state, text) {
  const badge = $("connection");
  badge.className = `connection ${state}`;
  badge.textContent = text;
}

function ago(seconds) {
  if (seconds === null || seconds === undefined) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

// ------------------------------------------------------------------ status: runners and flights

function renderStatus(status) {
  const files = $("files");
  files.replaceChildren(...status.files.map(renderFile));
  if (status.version !== shownVersion) loadLists(status.version);
}

function renderFile(file) {
  const panel = el("div", { class: "panel" }, el("h2", { text: file.results }));
  if (file.error) panel.append(el("p", { class: "warning", text: file.error }));
  if (!file.counts) {
    panel.append(el("p", { class: "meta", text: "no results yet: the page shows them once `ramsweep run` writes them" }));
    return panel;
  }
  const counts = el("ul", { class: "counts" });
  for (const [state, n] of Object.entries(file.counts)) counts.append(el("li", { class: state, text: `${n.toLocaleString()} ${state}` }));
  panel.append(counts, el("p", { class: "meta", text: file.summary }));
  if (file.lock) panel.append(el("p", { class: "warning", text: file.lock }));
  for (const runner of file.runners) {
    panel.append(el("p", { class: "meta", text:
      `runner ${runner.label}: set ${runner.set}, ${runner.left} of ${runner.planned} left` +
      `${runner.jobs > 1 ? `, ${runner.jobs} jobs` : ""}; since ${runner.since}, heartbeat ${ago(runner.heartbeat_age_s)} ago` }));
  }
  for (const flight of file.running) panel.append(renderFlight(flight));
  return panel;
}

const STEPS = [["loading", "load"], ["training", "train"], ["validation", "validate"], ["test", "test"]];
const STEP_OF = { loading: 0, training: 1, search: 1, validation: 2, calibration: 2, test: 3 };

function phaseStrip(phase) {
  // the experiment's phases in order: done, the current one, to come
  const at = STEP_OF[phase] ?? -1;
  return el("ol", { class: "phases", "aria-label": `phase: ${phase || "starting"}` }, ...STEPS.map(([name, label], i) =>
    el("li", { class: i < at ? "done" : i === at ? "current" : "", text: i === 1 && phase === "search" ? "search" : label })));
}

function svgNode(markup) {
  // the server's inline SVG (no script, no style attribute, every text escaped), parsed as SVG, never as HTML
  const parsed = new DOMParser().parseFromString(markup, "image/svg+xml").documentElement;
  if (parsed.nodeName !== "svg") return el("p", { class: "warning", text: "a chart could not be read" });
  return document.importNode(parsed, true);
}

function renderFlight(f) {
  const what = f.phase ? `${f.phase}${f.detail ? ` (${f.detail})` : ""}` : "starting";
  const left = f.eta ? `about ${f.eta} left` : "";
  const bar = el("progress", { max: "1", "aria-label": `${f.name} progress` });
  if (f.fraction !== null && f.fraction !== undefined) bar.value = f.fraction;
  const pct = f.fraction !== null && f.fraction !== undefined ? ` ${Math.round(100 * f.fraction)}%` : "";
  return el("div", { class: "flight" },
    el("div", { class: "line" }, el("span", { class: "name", text: f.name }), el("span", { text: `${what}${pct}` })),
    phaseStrip(f.phase),
    bar,
    el("div", { class: "line meta" }, el("span", { text: `${f.runner}, running ${ago(f.elapsed_s)}` }), el("span", { text: left })));
}

// ------------------------------------------------------------------ lists: latest, leaderboard, grids

async function loadLists(version) {
  shownVersion = version;
  const sortBy = $("sort-by").value;
  try {
    const [records, board, grids, night, searches] = await Promise.all([
      getJSON("/api/records?limit=20"),
      getJSON(`/api/leaderboard?sort_by=${encodeURIComponent(sortBy)}&top=20`),
      getJSON(`/api/grids?sort_by=${encodeURIComponent(sortBy)}`),
      getJSON(`/api/night?sort_by=${encodeURIComponent(sortBy)}`),
      getJSON("/api/searches"),
    ]);
    renderNight(night);
    renderLatest(records);
    renderLeaderboards(board);
    renderGrids(grids);
    renderSearches(searches);
  } catch (error) {
    shownVersion = null; // try again at the next update
  }
}

function renderLatest(records) {
  const list = $("latest");
  const fresh = records.latest.filter((r) => seenKeys && !seenKeys.has(r.key)).map((r) => r.key);
  seenKeys = new Set(records.latest.map((r) => r.key));
  if (!records.latest.length) {
    list.replaceChildren(el("li", { class: "empty", text: "no result yet" }));
  } else {
    list.replaceChildren(...records.latest.map((r) => {
      const figures = r.status === "ok"
        ? `val PPL ${r.text.val_ppl} · test PPL ${r.text.test_ppl} · acc ${r.text.test_acc} · ${ago(r.seconds)}`
        : `${r.status}: ${r.error || ""}`;
      const item = el("li", { "data-key": r.key, class: fresh.includes(r.key) ? "new" : "" },
        el("div", { class: "name", text: r.name }),
        el("div", { class: `figures status-${r.status}`, text: figures }),
        el("div", { class: "meta", text: `${r.tiers || ""} · finished ${r.finished || "?"}` }));
      item.addEventListener("click", () => openCard(r.key));
      return item;
    }));
  }
  const failed = $("failed");
  $("failed-section").hidden = !records.failed.length;
  failed.replaceChildren(...records.failed.map((r) =>
    el("li", { class: `status-${r.status}`, text: `${r.name}: ${r.status} — ${r.error || ""}` })));
}

function renderLeaderboards(board) {
  const holder = $("leaderboards");
  if (!board.groups.length) {
    holder.replaceChildren(el("p", { class: "meta", text: "no finished experiment yet" }));
    return;
  }
  holder.replaceChildren(...board.groups.map((group) => {
    const head = el("tr", {}, ...board.columns.map((c) =>
      el("th", { class: `${c === "name" || c === "tiers" ? "left" : ""} ${NARROW.includes(c) ? "wide" : ""}`, text: c })));
    const rows = group.rows.map((row) => {
      const tr = el("tr", { class: row.baseline ? "baseline" : "", "data-key": row.baseline ? null : row.key },
        ...board.columns.map((c) => el("td", {
          class: `${c === "name" || c === "tiers" ? "left" : ""} ${NARROW.includes(c) ? "wide" : ""}`,
          text: row.cells[c] ?? "" })));
      if (!row.baseline) tr.addEventListener("click", () => openCard(row.key));
      return tr;
    });
    const floor = group.ppl_floor.length ? `; PPL floor ${group.ppl_floor.join(", ")}` : "";
    return el("div", {},
      el("h3", { text: `${group.group}: ${group.experiments.toLocaleString()} experiments, by ${board.sort_by}${floor}` }),
      el("div", { class: "table-wrap" }, el("table", {}, el("thead", {}, head), el("tbody", {}, ...rows))));
  }));
}

function renderNight(night) {
  $("night-section").hidden = !night.groups.length;
  $("night").replaceChildren(...night.groups.map((g) => el("figure", { class: "chart-box" }, svgNode(g.svg))));
}

function renderSearches(data) {
  $("searches-section").hidden = !data.rows.length;
  const head = el("tr", {}, ...data.columns.map((c) => el("th", { class: c === "name" || c === "search" ? "left" : "", text: c })));
  const rows = data.rows.map((row) => {
    const tr = el("tr", { "data-key": row.key }, ...row.cells.map((cell, i) =>
      el("td", { class: i < 2 ? "left" : "", text: cell })));
    tr.addEventListener("click", () => openCard(row.key));
    return tr;
  });
  $("searches").replaceChildren(el("thead", {}, head), el("tbody", {}, ...rows));
}

function renderGrids(data) {
  $("grids-section").hidden = !data.grids.length;
  $("grids").replaceChildren(...data.grids.map((grid) => {
    const values = grid.panels.flatMap((p) => p.rows.flatMap((r) => r.values)).filter((v) => v !== null);
    const lo = Math.min(...values), hi = Math.max(...values);
    const box = el("div", { class: "panel" },
      el("h3", { text: `${grid.shape}: ${grid.done} of ${grid.total} cells done (${data.sort_by})` }),
      el("p", { class: "meta", text: "main effect of each tier's bits (mean over the finished cells): " +
        grid.main_effects.map((e) => `tier ${e.tier}: ` + Object.entries(e.text).map(([b, t]) => `${b}→${t}`).join(" ")).join("; ") }));
    for (const panel of grid.panels) {
      const head = el("tr", {}, el("th", { text: "t0 \\ t1" }), ...grid.columns.map((c) => el("th", { text: String(c) })));
      const rows = panel.rows.map((row) => el("tr", {}, el("th", { text: String(row.bits) }),
        ...row.values.map((v, i) => {
          const td = el("td", { class: v === null ? "missing" : "", text: row.text[i] });
          if (v !== null) td.style.backgroundColor = heat(v, lo, hi, data.lower_is_better);
          return td;
        })));
      box.append(el("p", { class: "meta", text: panel.title || "tier 0 bits (rows) × tier 1 bits (columns)" }),
        el("div", { class: "table-wrap" }, el("table", { class: "heatmap" }, el("thead", {}, head), el("tbody", {}, ...rows))));
    }
    return box;
  }));
}

function heat(v, lo, hi, lowerIsBetter) {
  const t = hi > lo ? (v - lo) / (hi - lo) : 0.5;
  const good = lowerIsBetter ? 1 - t : t;
  return `hsl(${Math.round(good * 120)}, 65%, 72%)`; // red (worst) to green (best)
}

async function openCard(key) {
  const dialog = $("card");
  const body = $("card-body");
  body.replaceChildren(el("p", { class: "meta", text: "loading…" }));
  if (!dialog.open) dialog.showModal();
  try {
    const found = await getJSON(`/api/experiments/${encodeURIComponent(key)}`);
    // the server renders the report's card from markdown with raw HTML disabled: text stays text
    if (found.card_html) body.innerHTML = found.card_html;
    else body.replaceChildren(el("pre", { text: JSON.stringify(found.record, null, 2) }));
    if (found.charts && found.charts.length) {
      const pictures = el("div", { class: "charts" }, ...found.charts.map((svg) => el("figure", { class: "chart-box" }, svgNode(svg))));
      const heading = body.querySelector("h3");
      if (heading) heading.after(pictures); else body.prepend(pictures);
    }
  } catch (error) {
    body.replaceChildren(el("p", { class: "warning", text: `could not load it (${error.message})` }));
  }
}

// ------------------------------------------------------------------ staying up to date

function listen() {
  if (!("EventSource" in window)) return startPolling();
  const source = new EventSource("/api/events");
  source.addEventListener("open", () => {
    failures = 0;
    streaming = true;
    stopPolling();
    setConnection("live", "live");
    shownVersion = null; // catch up on whatever landed while the stream was down
  });
  source.addEventListener("update", (event) => {
    setConnection("live", "live");
    renderStatus(JSON.parse(event.data));
  });
  source.addEventListener("error", () => {
    failures += 1;
    streaming = false;
    setConnection("lost", "reconnecting…");
    // the browser keeps retrying the stream meanwhile (unless it gave up: CLOSED); polling stops once it opens
    if (failures >= 3 || source.readyState === EventSource.CLOSED) startPolling();
  });
}

async function poll() {
  try {
    renderStatus(await getJSON("/api/status"));
    if (!streaming) setConnection("polling", `polling every ${POLL_MS / 1000} s`);
  } catch (error) {
    setConnection("lost", "server unreachable");
  }
}

function startPolling() {
  if (polling) return;
  poll();
  polling = setInterval(poll, POLL_MS);
}

function stopPolling() {
  if (polling) clearInterval(polling);
  polling = null;
}

$("sort-by").addEventListener("change", () => loadLists(shownVersion));
$("card-close").addEventListener("click", () => $("card").close());
$("card").addEventListener("click", (event) => { if (event.target === $("card")) $("card").close(); });
listen();
