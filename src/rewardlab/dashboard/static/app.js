// rewardlab dashboard: a small single-page app over the JSON API (/api), with hash routes:
//   #/                       runs (filters, lineage, pick runs to overlay or evals to compare)
//   #/run/<id>[/<tab>]       one run: curves | rollouts | eval | compare | audit | config
//   #/overlay?runs=a,b       several runs' curves on the same charts
//   #/compare?a=<eval>&b=<eval>  two eval runs compared paired
"use strict";

const app = document.getElementById("app");
const PALETTE = ["#2f6fde", "#e8590c", "#2da44e", "#a333c8", "#cf222e", "#0e8a9c", "#bf8700", "#6e7781",
                 "#d6336c", "#5c940d"];
// How often a page polls while a run is running (localStorage "rewardlab.poll_ms" changes it).
const pollMs = () => Math.max(200, +localStorage.getItem("rewardlab.poll_ms") || 3000);
let teardowns = [];   // timers, listeners and charts of the page shown
let generation = 0;   // bumped on every route: an answer for an older page is dropped

// ------------------------------------------------------------------------------------------- helpers

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "style" && typeof value === "object") Object.assign(node.style, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

class ApiError extends Error {
  constructor(message, status) { super(message); this.status = status; }
}

async function api(path) {
  const response = await fetch("api/" + path, {cache: "no-store"});
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) throw new ApiError((body && (body.error || body.detail)) || response.statusText, response.status);
  return body;
}

const enc = encodeURIComponent;
const runLink = (id, text) => el("a", {href: `#/run/${enc(id)}`, class: "mono", title: id}, text || id);
// "train-20261202-193653-78d0" -> "train-193653-78d0": the date is in the created column
const shortId = (id) => String(id).replace(/^([A-Za-z]+)-\d{8}-(\d{6}-[0-9a-f]{4})$/, "$1-$2");
const shortModel = (text) => String(text).replace(/([A-Za-z]+)-\d{8}-(\d{6}-[0-9a-f]{4})/g, "$1-$2");

function num(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "n/a";
  if (typeof value !== "number") return String(value);
  const abs = Math.abs(value);
  if (abs !== 0 && (abs >= 1e5 || abs < 1e-3)) return value.toExponential(2);
  return value.toFixed(digits);
}
const signed = (value, digits = 3) => (typeof value === "number" && value > 0 ? "+" : "") + num(value, digits);
const pct = (value) => (typeof value === "number" ? `${(value * 100).toFixed(1)}%` : "n/a");

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "—";
  if (seconds < 1) return `${(seconds * 1000).toFixed(0)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `${minutes} min ${Math.round(seconds % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function when(timestamp) {
  if (!timestamp) return "—";
  const date = new Date(timestamp * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

// Replace a node's children; nulls, falses and nested arrays are fine (as in el()).
function put(target, ...children) {
  target.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false && c !== "")
    .map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
}

// "12-02 20:16": the year and seconds are in the tooltip
const shortWhen = (timestamp) => (timestamp ? when(timestamp).slice(5, 16) : "—");

const badge = (text, cls) => el("span", {class: `badge ${cls || text}`}, text);

function every(ms, action) {
  const timer = setInterval(action, ms);
  teardowns.push(() => clearInterval(timer));
}

function setLive(on) { document.getElementById("live").hidden = !on; }

function showError(target, error) {
  put(target, el("div", {class: "error-box"}, error.message || String(error)));
}

function setHashQuietly(hash) {
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

function kvTable(object) {
  const rows = [];
  const walk = (value, prefix) => {
    if (value && typeof value === "object" && !Array.isArray(value) && Object.keys(value).length) {
      for (const [key, inner] of Object.entries(value)) walk(inner, prefix ? `${prefix}.${key}` : key);
    } else {
      const shown = typeof value === "string" ? value : JSON.stringify(value);
      rows.push(el("tr", {}, el("td", {}, prefix), el("td", {}, shown)));
    }
  };
  walk(object, "");
  return rows.length ? el("table", {class: "kv"}, el("tbody", {}, rows)) : el("p", {class: "muted"}, "(empty)");
}

// ------------------------------------------------------------------------------------------- charts

function ema(values, weight) {
  if (!(weight > 0)) return values.slice();
  let last = 0, count = 0;
  return values.map((value) => {
    if (value === null || value === undefined) return null;
    last = last * weight + (1 - weight) * value;
    count += 1;
    return last / (1 - Math.pow(weight, count));  // debiased, so the line starts at the first value
  });
}

function ticks(u, splits) {
  // As many decimals as the spacing of the ticks needs, so that close values stay apart.
  const spacing = splits.length > 1 ? Math.abs(splits[1] - splits[0]) : Math.abs(splits[0]) || 1;
  const largest = Math.max(...splits.map(Math.abs));
  if (largest >= 1e6 || (largest > 0 && largest < 1e-4)) return splits.map((v) => (v === 0 ? "0" : v.toExponential(1)));
  let decimals = 0;
  while (decimals < 8 && splits.some((v) => Math.abs(+v.toFixed(decimals) - v) > spacing * 1e-6)) decimals += 1;
  return splits.map((v) => v.toFixed(decimals));
}

function yRange(u, min, max) {
  // A flat series gets a band around its value instead of uPlot's 0..100.
  if (min === null || max === null) return [0, 1];
  if (min === max) {
    const pad = min === 0 ? 1 : Math.abs(min) * 0.5;
    return min === 0 ? [0, 1] : [min - pad, max + pad];
  }
  return uPlot.rangeNum(min, max, 0.1, true);
}

function alertPlugin(alerts) {
  // Dashed vertical lines at the steps alerts fired, labelled with the alert's name.
  return {
    hooks: {
      draw: [(u) => {
        if (!alerts.length) return;
        const ctx = u.ctx;
        const {top, height} = u.bbox;
        ctx.save();
        ctx.font = `${Math.round(10 * devicePixelRatio)}px system-ui, sans-serif`;
        ctx.textAlign = "left";
        ctx.textBaseline = "top";
        alerts.forEach((alert, index) => {
          const x = Math.round(u.valToPos(alert.step, "x", true));
          if (x < u.bbox.left || x > u.bbox.left + u.bbox.width) return;
          ctx.strokeStyle = alert.color || "#cf222e";
          ctx.fillStyle = alert.color || "#cf222e";
          ctx.setLineDash([5 * devicePixelRatio, 4 * devicePixelRatio]);
          ctx.lineWidth = 1.5 * devicePixelRatio;
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          ctx.fillText("⚠ " + alert.name, x + 4 * devicePixelRatio, top + (2 + 12 * (index % 3)) * devicePixelRatio);
        });
        ctx.restore();
      }],
    },
  };
}

// steps are whole: the x axis ticks at 1, 2, 5, 10, 20, 25, 50, ... steps apart
const STEP_INCREMENTS = [1, 2, 5].flatMap((base) => [1, 10, 100, 1000, 10000, 100000].map((scale) => base * scale))
  .concat([25, 250, 2500, 25000]).sort((a, b) => a - b);
const legendValue = (u, v) => (v === null || v === undefined ? "—" : num(v, 4));

// lines: [{label, color, steps, values}]; each drawn faint (raw) and bold (smoothed) when smoothing > 0.
function makeChart(target, {ylabel, lines, smoothing, alerts, height}) {
  const tables = lines.map((line) => [line.steps, line.values]);
  if (!tables.length || !tables.some((t) => t[0].length)) {
    put(target, el("div", {class: "empty"}, "no data"));
    return null;
  }
  const joined = tables.length === 1 ? [tables[0][0], tables[0][1]] : uPlot.join(tables);
  const data = [joined[0]];
  const series = [{label: "step", value: (u, v) => (v === null ? "" : String(v))}];
  const legendHidden = [];
  lines.forEach((line, i) => {
    const values = joined[i + 1];
    if (smoothing > 0) {
      data.push(values);
      series.push({label: `${line.label} (raw)`, stroke: line.color + "40", width: 1, spanGaps: true,
                   points: {show: false}, value: legendValue});
      legendHidden.push(series.length - 1);
      data.push(ema(values, smoothing));
    } else {
      data.push(values);
    }
    series.push({label: line.label, stroke: line.color, width: 2, spanGaps: true, points: {show: false},
                 value: legendValue});
  });
  const width = Math.max(280, target.clientWidth || 500);
  const options = {
    width,
    height: height || 220,
    scales: {x: {time: false}, y: {range: yRange}},
    axes: [
      {label: "step", labelSize: 16, size: 34, grid: {stroke: "#eef0f2"}, ticks: {stroke: "#d8dee4"},
       incrs: STEP_INCREMENTS, values: (u, splits) => splits.map((v) => String(v))},
      {label: ylabel, labelSize: 16, size: 58, grid: {stroke: "#eef0f2"}, ticks: {stroke: "#d8dee4"},
       values: ticks},
    ],
    series,
    legend: {live: true},
    cursor: {drag: {x: true, y: false}, points: {size: 6}},
    plugins: [alertPlugin(alerts || [])],
  };
  put(target);
  const chart = new uPlot(options, data, target);
  const rows = target.querySelectorAll(".u-legend .u-series");
  for (const index of legendHidden) if (rows[index]) rows[index].style.display = "none";
  const resize = () => {
    if (target.clientWidth && Math.abs(target.clientWidth - chart.width) > 4) {
      chart.setSize({width: target.clientWidth, height: chart.height});
    }
  };
  window.addEventListener("resize", resize);
  const destroy = chart.destroy.bind(chart);
  let alive = true;
  chart.destroy = () => {  // by a redraw or when the page is left, whichever comes first
    if (!alive) return;
    alive = false;
    window.removeEventListener("resize", resize);
    destroy();
  };
  teardowns.push(() => chart.destroy());
  return chart;
}

function smoothingControl(onChange) {
  const stored = parseFloat(localStorage.getItem("rewardlab.smoothing"));
  const initial = Number.isFinite(stored) ? stored : 0.6;
  const shown = el("span", {class: "mono"}, initial.toFixed(2));
  const slider = el("input", {type: "range", min: "0", max: "0.99", step: "0.01", value: String(initial),
                              id: "smoothing"});
  let pending = null;
  slider.addEventListener("input", () => {
    shown.textContent = (+slider.value).toFixed(2);
    localStorage.setItem("rewardlab.smoothing", slider.value);
    clearTimeout(pending);
    pending = setTimeout(() => onChange(+slider.value), 60);
  });
  return {node: el("label", {title: "Exponential moving average; the raw curve stays faint behind it"},
                   "Smoothing (EMA)", slider, shown),
          value: () => +slider.value};
}

// ------------------------------------------------------------------------------------------- router

function route() {
  for (const teardown of teardowns.splice(0)) { try { teardown(); } catch (_) { /* already gone */ } }
  setLive(false);
  generation += 1;
  const hash = location.hash.replace(/^#/, "") || "/";
  const [path, query] = hash.split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (parts[0] === "overlay" ? "overlay" : "runs"));
  }
  window.scrollTo(0, 0);
  const mine = generation;
  const page = !parts.length || parts[0] === "runs" ? pageRuns(params, mine)
    : parts[0] === "run" && parts[1] ? pageRun(parts[1], parts[2] || "", params, mine)
    : parts[0] === "overlay" ? pageOverlay(params, mine)
    : parts[0] === "compare" ? pageComparePair(params, mine)
    : Promise.resolve(put(app, el("div", {class: "empty"}, "No such page. ", el("a", {href: "#/"}, "All runs"))));
  page.catch((error) => { if (mine === generation) showError(app, error); });
}

// ------------------------------------------------------------------------------------------- runs page

function lineageCell(row) {
  const parts = [];
  const links = (label, ids) => {
    if (!ids || !ids.length) return;
    const line = el("div", {}, el("span", {class: "rel"}, label));
    line.append(runLink(ids[0], shortId(ids[0])));
    if (ids.length > 1) line.append(el("span", {class: "muted small", title: ids.slice(1).join("\n")}, `+${ids.length - 1}`));
    parts.push(line);
  };
  links("parent", row.parent ? [row.parent] : []);
  links("from", row.model_from);
  links("children", row.children);
  links("used by", row.used_by);
  return el("td", {class: "lineage small"}, parts.length ? parts : el("span", {class: "muted"}, "—"));
}

async function pageRuns(params, mine) {
  const state = {kind: params.get("kind") || "", status: params.get("status") || "", q: params.get("q") || ""};
  const selected = new Set((params.get("selected") || "").split(",").filter(Boolean));
  const kindSelect = el("select", {id: "filter-kind"}, el("option", {value: ""}, "all kinds"));
  const statusSelect = el("select", {id: "filter-status"}, el("option", {value: ""}, "any status"));
  const search = el("input", {type: "search", id: "filter-q", placeholder: "Search id, name, model, environment",
                              value: state.q});
  const overlayButton = el("button", {class: "primary", id: "overlay-selected"}, "Overlay curves");
  const compareButton = el("button", {id: "compare-selected"}, "Compare 2 evals");
  const count = el("span", {class: "muted small"});
  const tableHolder = el("div", {class: "table-wrap"});
  put(app, 
    el("div", {class: "header"}, el("h1", {}, "Runs"), count),
    el("div", {class: "toolbar"},
       el("label", {}, "Kind", kindSelect), el("label", {}, "Status", statusSelect), search,
       el("span", {style: {flex: "1"}}), overlayButton, compareButton),
    tableHolder,
  );
  let rows = [];
  const byId = () => Object.fromEntries(rows.map((r) => [r.id, r]));
  const updateButtons = () => {
    const chosen = [...selected].map((id) => byId()[id]).filter(Boolean);
    const curves = chosen.filter((r) => r.kind === "train" || r.kind === "sft");
    const evals = chosen.filter((r) => r.kind === "eval");
    overlayButton.disabled = curves.length < 1;
    overlayButton.textContent = `Overlay curves (${curves.length})`;
    compareButton.disabled = evals.length !== 2;
    overlayButton.onclick = () => { location.hash = `#/overlay?runs=${curves.map((r) => enc(r.id)).join(",")}`; };
    compareButton.onclick = () => { location.hash = `#/compare?a=${enc(evals[0].id)}&b=${enc(evals[1].id)}`; };
  };
  const keepInUrl = () => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(state)) if (value) query.set(key, value);
    setHashQuietly("#/runs" + (query.toString() ? "?" + query : ""));
  };
  const load = async () => {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(state)) if (value) query.set(key, value);
    const listing = await api("runs?" + query);
    if (mine !== generation) return;
    document.getElementById("store-path").textContent = listing.root;
    const fill = (select, values, current) => {
      put(select, select.firstChild, ...values.map((v) => el("option", {value: v, selected: v === current}, v)));
    };
    fill(kindSelect, listing.kinds, state.kind);
    fill(statusSelect, listing.statuses, state.status);
    rows = listing.runs;
    count.textContent = `${rows.length} of ${listing.total} runs`;
    setLive(rows.some((r) => r.status === "running"));
    const body = rows.map((row) => {
      const box = el("input", {type: "checkbox", "data-run": row.id, checked: selected.has(row.id),
                               title: "Select to overlay (train, sft) or compare (two evals)"});
      box.addEventListener("change", () => { box.checked ? selected.add(row.id) : selected.delete(row.id); updateButtons(); });
      return el("tr", {"data-run": row.id},
        el("td", {}, box),
        el("td", {}, badge(row.status)),
        el("td", {style: {whiteSpace: "nowrap"}}, runLink(row.id), row.name ? el("div", {class: "muted small"}, row.name) : null),
        el("td", {}, badge(row.kind, "kind")),
        el("td", {class: "mono small model", title: row.model || ""},
           row.model ? shortModel(row.model).split(" vs ").map((m, i) => el("div", {}, i ? "vs " + m : m)) : "—"),
        el("td", {class: "small"}, row.env || "—"),
        el("td", {class: "small", style: {whiteSpace: "nowrap"}, title: when(row.created_at)}, shortWhen(row.created_at)),
        el("td", {class: "num small"}, duration(row.duration_s)),
        el("td", {class: "small result", title: row.headline || ""},
           (row.headline || "").length > 90 ? row.headline.slice(0, 89) + "…" : row.headline || ""),
        lineageCell(row));
    });
    put(tableHolder, rows.length ? el("table", {class: "data", id: "runs-table"},
      el("thead", {}, el("tr", {}, ["", "status", "run", "kind", "model", "environment", "created", "duration",
                                      "result", "lineage"].map((h, i) => el("th", {class: i === 7 ? "num" : null}, h)))),
      el("tbody", {}, body)) : el("div", {class: "empty"}, listing.total ? "No run matches these filters." :
        "No runs in this store yet: rewardlab train, eval or demo with --runs-dir pointing here."));
    updateButtons();
  };
  kindSelect.addEventListener("change", () => { state.kind = kindSelect.value; keepInUrl(); load(); });
  statusSelect.addEventListener("change", () => { state.status = statusSelect.value; keepInUrl(); load(); });
  let typing = null;
  search.addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.q = search.value.trim(); keepInUrl(); load(); }, 200);
  });
  await load();
  every(5000, () => { if (rows.some((r) => r.status === "running")) load().catch(() => {}); });
}

// ------------------------------------------------------------------------------------------- one run

const TAB_TITLES = {curves: "Curves", rollouts: "Rollouts", eval: "Evaluation", compare: "Comparison",
                    audit: "Reward audit", config: "Summary & config"};

function runHeader(run) {
  const meta = [
    ["model", run.model_from && run.model_from.length && run.model !== run.model_from[0]
      ? [el("span", {class: "mono"}, run.model || ""), " (", run.model_from.map((id, i) => [i ? ", " : "", runLink(id)]), ")"]
      : run.model_from && run.model_from.length ? runLink(run.model_from[0]) : el("span", {class: "mono"}, run.model || "—")],
    ["environment", run.env || "—"],
    ["created", when(run.created_at)],
    ["duration", duration(run.duration_s)],
  ];
  if (run.parent) meta.push(["parent", runLink(run.parent)]);
  if (run.ancestors && run.ancestors.length > 1) {
    meta.push(["descends from", run.ancestors.map((id, i) => [i ? " ← " : "", runLink(id)])]);
  }
  const few = (ids) => [ids.slice(0, 5).map((id) => [runLink(id, shortId(id)), " "]),
    ids.length > 5 ? el("span", {class: "muted", title: ids.slice(5).join("\n")}, `+${ids.length - 5} more`) : null];
  if (run.children.length) meta.push([`children (${run.children.length})`, few(run.children)]);
  if (run.used_by.length) meta.push([`used by (${run.used_by.length})`, few(run.used_by)]);
  return el("div", {id: "run-header"},
    el("div", {class: "header"}, el("h1", {class: "mono"}, run.id), badge(run.status), badge(run.kind, "kind"),
       run.name ? el("span", {class: "muted"}, run.name) : null,
       run.headline ? el("span", {}, run.headline) : null),
    el("div", {class: "meta"}, meta.map(([label, value]) => el("span", {}, `${label}: `, el("b", {}, value)))));
}

async function pageRun(id, tab, params, mine) {
  let run = await api(`runs/${enc(id)}`);
  if (mine !== generation) return;
  const tabs = [...run.pages, "config"];
  const chosen = tabs.includes(tab) ? tab : tabs[0];
  const headerHolder = el("div", {}, runHeader(run));
  const body = el("div", {id: "tab-body"});
  put(app, headerHolder,
    el("nav", {class: "tabs"}, tabs.map((name) => el("a", {href: `#/run/${enc(run.id)}/${name}`,
      class: name === chosen ? "active" : null, "data-tab": name}, TAB_TITLES[name] || name))),
    body);
  const views = {curves: curvesTab, rollouts: rolloutsTab, eval: evalTab, compare: compareTab, audit: auditTab,
                 config: configTab};
  const view = await views[chosen](body, run, params, mine);
  if (run.status === "running") {
    setLive(true);
    every(pollMs(), async () => {
      try {
        run = await api(`runs/${enc(id)}`);
        if (mine !== generation) return;
        put(headerHolder, runHeader(run));
        setLive(run.status === "running");
        if (view && view.refresh) await view.refresh(run);
      } catch (_) { /* the next poll tries again */ }
    });
  }
}

// ----- curves

function panelNode(panel) {
  return el("div", {class: "panel", "data-panel": panel.id},
    el("h3", {}, panel.title), el("div", {class: "chart"}));
}

async function curvesTab(body, run, params, mine) {
  // The standard panels first; the other metrics when "More metrics" is opened.
  const fetchCurves = (only) => api(`runs/${enc(run.id)}/curves?only=${only}`);
  let data = await fetchCurves("main");
  let moreLoaded = false;
  if (mine !== generation) return null;
  const smoothing = smoothingControl(() => draw());
  const info = el("span", {class: "muted small"});
  const alertsBox = el("div");
  const main = el("div", {class: "grid two", id: "charts"});
  const more = el("div", {class: "grid two"});
  const moreBox = el("details", {class: "more"}, el("summary", {}, "More metrics"), more);
  put(body, el("div", {class: "toolbar"}, smoothing.node, info), alertsBox, main, moreBox);
  let charts = [];
  const draw = () => {
    for (const chart of charts) chart && chart.destroy();
    charts = [];
    const panels = data.panels.filter((p) => !p.more);
    const extra = data.panels.filter((p) => p.more);
    const longest = Math.max(0, ...Object.values(data.series).map((s) => s.points));
    const drawn = Math.max(0, ...Object.values(data.series).map((s) => s.steps.length));
    info.textContent = data.last_step === null ? "no metrics logged yet"
      : `last step ${data.last_step}` + (drawn < longest ? ` · ${longest} points thinned to ${drawn} (min/max per bucket)` : "");
    put(alertsBox, data.alerts.length ? el("div", {class: "card alerts", id: "alerts"},
      el("h3", {}, `${data.alerts.length} alert${data.alerts.length > 1 ? "s" : ""}`),
      el("ul", {}, data.alerts.map((a) => el("li", {}, el("b", {}, a.name), ` at step ${a.step}`,
        a.action ? ` (${a.action})` : "", a.message ? ": " + a.message : "")))) : "");
    put(main, ...panels.map(panelNode));
    put(more, ...extra.map(panelNode));
    moreBox.hidden = !extra.length;
    moreBox.querySelector("summary").textContent = `More metrics (${extra.length})`;
    const render = (panel, holder) => {
      const lines = panel.series.map((name, i) => ({label: panel.labels[i], color: PALETTE[i % PALETTE.length],
        steps: data.series[name] ? data.series[name].steps : [], values: data.series[name] ? data.series[name].values : []}));
      const alerts = data.alerts.filter((a) => a.panel === panel.id || (panel.id === "reward" && a.panel !== "reward"));
      charts.push(makeChart(holder.querySelector(`[data-panel="${CSS.escape(panel.id)}"] .chart`),
        {ylabel: panel.ylabel, lines, smoothing: smoothing.value(), alerts}));
    };
    panels.forEach((panel) => render(panel, main));
    const drawMore = () => extra.forEach((panel) => render(panel, more));
    if (moreBox.open) drawMore();
    moreBox.ontoggle = async () => {
      if (!moreBox.open || more.querySelector(".uplot")) return;
      if (!moreLoaded) {
        Object.assign(data.series, (await fetchCurves("more")).series);
        moreLoaded = true;
      }
      if (mine === generation) drawMore();
    };
    if (!panels.length) put(main, el("div", {class: "empty"}, "This run logged no metrics."));
  };
  draw();
  return {refresh: async () => {
    const fresh = await fetchCurves("main");
    if (moreLoaded) Object.assign(fresh.series, (await fetchCurves("more")).series);
    data = fresh;
    if (mine === generation) draw();
  }};
}

// ----- rollouts

function tokenColour(token, mode) {
  if (mode === "logprob" && typeof token.logprob === "number") {
    const surprise = 1 - Math.exp(token.logprob);  // 0 for a certain token, near 1 for an unlikely one
    return `rgba(207, 34, 46, ${(0.6 * surprise).toFixed(3)})`;
  }
  if (mode === "entropy" && typeof token.entropy === "number") {
    return `rgba(130, 80, 223, ${(0.6 * Math.min(1, token.entropy / 3)).toFixed(3)})`;
  }
  return "transparent";
}

function tokensNode(tokens, mode) {
  return el("pre", {class: "tokens"}, tokens.map((token) => el("span", {
    class: "tok",
    style: {background: tokenColour(token, mode)},
    title: `log-prob ${num(token.logprob, 3)} (p ${typeof token.logprob === "number" ? Math.exp(token.logprob).toFixed(3) : "n/a"}) · entropy ${num(token.entropy, 3)}`,
  }, token.text)));
}

function transcriptNode(turns, mode) {
  const labels = {system: "system", prompt: "task", model: "model", environment: "environment"};
  return el("div", {class: "transcript"}, turns.map((turn) => {
    const content = turn.tokens && mode !== "none" ? tokensNode(turn.tokens, mode) : el("pre", {}, turn.content);
    const who = el("div", {class: "who"}, labels[turn.who] + (turn.role && turn.who === "environment" ? ` (${turn.role})` : ""));
    if (turn.who === "system" && turn.content.length > 240) {
      return el("details", {class: `msg ${turn.who}`}, el("summary", {class: "who"}, "system prompt"), content);
    }
    return el("div", {class: `msg ${turn.who}`, "data-who": turn.who}, who, content);
  }));
}

function componentChips(components, errors) {
  return el("div", {class: "chips"}, Object.entries(components || {}).map(([name, value]) => {
    const cls = (errors && errors[name]) || value === null ? "err" : "";
    return el("span", {class: `chip ${cls}`, title: errors && errors[name] ? errors[name] : name}, `${name} ${num(value, 2)}`);
  }));
}

function rewardBadge(reward) {
  const cls = reward === null ? "bad" : reward >= 1 ? "good" : reward > 0 ? "warn" : "kind";
  return el("span", {class: `badge ${cls}`}, `reward ${num(reward, 3)}`);
}

function rolloutCard(rollout, mode) {
  const errors = Object.entries(rollout.errors || {});
  return el("div", {class: "card rollout", "data-rollout": rollout.id},
    el("div", {class: "top"},
      rewardBadge(rollout.reward),
      el("span", {class: "muted small"}, `step ${rollout.step} · ${rollout.phase} · example `,
         el("span", {class: "mono"}, rollout.example_id), ` · sample ${rollout.sample_index}`),
      el("span", {class: "muted small"}, `${rollout.num_turns} turn${rollout.num_turns === 1 ? "" : "s"} · ` +
         `${rollout.num_completion_tokens} tokens`),
      rollout.truncated ? badge("truncated", "warn") : null,
      el("span", {class: "small"}, "answer: ", el("b", {class: "mono"}, rollout.answer || "—"))),
    componentChips(rollout.components, rollout.errors),
    rollout.error ? el("div", {class: "error-box"}, "rollout error: " + rollout.error) : null,
    errors.length ? el("div", {class: "error-box"}, errors.map(([name, message]) => `${name}: ${message}\n`)) : null,
    el("div", {style: {marginTop: "8px"}}, transcriptNode(rollout.transcript, mode)));
}

async function rolloutsTab(body, run, params, mine) {
  const state = {phase: params.get("phase") || "", step: params.get("step") || "",
                 page: parseInt(params.get("page") || "1", 10), per_page: parseInt(params.get("per_page") || "10", 10),
                 colour: params.get("colour") || "logprob"};
  const holder = el("div");
  put(body, holder);
  const load = async () => {
    const query = new URLSearchParams({page: state.page, per_page: state.per_page});
    if (state.phase) query.set("phase", state.phase);
    if (state.step !== "") query.set("step", state.step);
    const data = await api(`runs/${enc(run.id)}/rollouts?${query}`);
    if (mine !== generation) return;
    state.page = data.page;
    const keep = new URLSearchParams(query);
    if (state.colour !== "logprob") keep.set("colour", state.colour);
    setHashQuietly(`#/run/${enc(run.id)}/rollouts?${keep}`);
    const phase = el("select", {id: "filter-phase"}, el("option", {value: ""}, "all phases"),
      Object.entries(data.phases).map(([name, n]) => el("option", {value: name, selected: name === state.phase}, `${name} (${n})`)));
    const step = data.steps.length <= 2000
      ? el("select", {id: "filter-step"}, el("option", {value: ""}, "all steps"),
          data.steps.map((s) => el("option", {value: String(s), selected: String(s) === state.step}, String(s))))
      : el("input", {type: "number", id: "filter-step", placeholder: "all", value: state.step,
                     min: String(data.steps[0]), max: String(data.steps[data.steps.length - 1])});
    const perPage = el("select", {id: "per-page"}, [...new Set([5, 10, 20, 50, data.per_page])].sort((a, b) => a - b).map((n) => el("option", {value: String(n), selected: n === state.per_page}, String(n))));
    const withTokens = data.rollouts.some((r) => r.transcript.some((t) => t.tokens));
    const colour = el("select", {id: "colour-by"}, [["logprob", "log-prob"], ["entropy", "entropy"], ["none", "nothing"]]
      .map(([value, text]) => el("option", {value, selected: value === state.colour}, text)));
    const scale = el("span", {class: "scale"}, el("span", {class: "bar", style: {background: state.colour === "entropy"
      ? "linear-gradient(90deg, transparent, rgba(130,80,223,.6))" : "linear-gradient(90deg, transparent, rgba(207,34,46,.6))"}}),
      state.colour === "entropy" ? "0 → 3+ nats" : "likely → unlikely");
    const prev = el("button", {id: "prev-page", disabled: data.page <= 1}, "← Previous");
    const next = el("button", {id: "next-page", disabled: data.page >= data.pages}, "Next →");
    phase.onchange = () => { state.phase = phase.value; state.step = ""; state.page = 1; load(); };
    step.onchange = () => { state.step = step.value; state.page = 1; load(); };
    perPage.onchange = () => { state.per_page = parseInt(perPage.value, 10); state.page = 1; load(); };
    colour.onchange = () => { state.colour = colour.value; load(); };
    prev.onclick = () => { state.page -= 1; load(); window.scrollTo(0, 0); };
    next.onclick = () => { state.page += 1; load(); window.scrollTo(0, 0); };
    const pager = el("div", {class: "pager"}, prev,
      el("span", {class: "small", id: "page-info"}, `page ${data.page} of ${data.pages} · ${data.total} rollouts`), next);
    put(holder, 
      el("div", {class: "toolbar"}, el("label", {}, "Phase", phase), el("label", {}, "Step", step),
         el("label", {}, "Per page", perPage),
         withTokens ? el("label", {}, "Colour tokens by", colour) : null, withTokens && state.colour !== "none" ? scale : null,
         el("span", {style: {flex: "1"}}), pager),
      el("div", {class: "legend-inline"}, el("span", {class: "msg model", style: {margin: 0, padding: "0 8px"}}, "model"),
         "the policy's turns", el("span", {class: "msg environment", style: {margin: 0, padding: "0 8px"}}, "environment"),
         "the environment's replies", el("span", {class: "msg prompt", style: {margin: 0, padding: "0 8px"}}, "task"), "the prompt"),
      el("div", {style: {marginTop: "10px"}, id: "rollouts"}, data.rollouts.length
        ? data.rollouts.map((r) => rolloutCard(r, withTokens ? state.colour : "none"))
        : el("div", {class: "empty"}, "No stored rollouts here.")),
      data.pages > 1 ? el("div", {class: "toolbar"}, el("span", {style: {flex: "1"}}), pager.cloneNode(true)) : null);
    const bottom = holder.lastChild && holder.lastChild.querySelector && holder.lastChild.querySelector(".pager");
    if (bottom) {
      const [bPrev, , bNext] = bottom.children;
      bPrev.onclick = prev.onclick;
      bNext.onclick = next.onclick;
      bPrev.removeAttribute("id");
      bNext.removeAttribute("id");
      bottom.children[1].removeAttribute("id");
    }
  };
  await load();
  return null;
}

// ----- eval

function stat(label, value, sub, id) {
  return el("div", {class: "card stat", id}, el("div", {class: "label"}, label), el("div", {class: "value"}, value),
            sub ? el("div", {class: "sub"}, sub) : null);
}

async function evalTab(body, run, params, mine) {
  const data = await api(`runs/${enc(run.id)}/eval`);
  if (mine !== generation) return null;
  if (data.error && data.reward.mean === null) {
    put(body, el("div", {class: "error-box"}, "This evaluation failed: " + data.error));
    return null;
  }
  const r = data.reward;
  const passes = Object.entries(data.pass_at).sort((a, b) => +a[0] - +b[0]);
  const components = Object.entries(data.components);
  put(body, 
    el("div", {class: "grid cards", id: "eval-stats"},
      stat("mean reward", `${num(r.mean)} ± ${num(r.std)}`, "± standard deviation over rollouts", "eval-mean"),
      stat("95% interval", r.ci95 ? `[${num(r.ci95[0])}, ${num(r.ci95[1])}]` : "n/a", "bootstrap over examples"),
      ...passes.map(([k, v]) => stat(`pass@${k}`, pct(v), data.primary ? `on ${data.primary}` : "")),
      stat("examples × rollouts", `${r.examples} × ${r.rollouts_per_example || "?"}`, `${r.rollouts} rollouts`),
      stat("errors", String(data.errors), r.without_errors !== null && r.without_errors !== undefined
        ? `mean without them ${num(r.without_errors)}` : "errored rollouts score 0"),
      stat("truncated", pct(data.truncated_fraction), `mean ${num(data.mean_completion_tokens, 1)} tokens`),
      stat("latency", data.latency.latency_mean_s !== undefined ? duration(data.latency.latency_mean_s) : "n/a",
           data.latency.latency_per ? `per ${data.latency.latency_per}, p95 ${duration(data.latency.latency_p95_s)}` : ""),
    ),
    el("h2", {}, "Reward components"),
    el("div", {class: "table-wrap"}, el("table", {class: "data", id: "components"},
      el("thead", {}, el("tr", {}, el("th", {}, "component"), el("th", {class: "num"}, "mean"), el("th", {class: "num"}, "std"),
         el("th", {}, ""), el("th", {class: "num"}, "errors"))),
      el("tbody", {}, components.map(([name, c]) => el("tr", {},
        el("td", {}, name, name === data.primary ? [" ", badge("primary", "kind")] : null),
        el("td", {class: "num"}, num(c.mean)), el("td", {class: "num"}, num(c.std)),
        el("td", {style: {width: "40%"}}, el("div", {style: {background: "#e7edf7", borderRadius: "3px", height: "10px"}},
          el("div", {style: {width: `${Math.max(0, Math.min(1, c.mean || 0)) * 100}%`, background: "#2f6fde", height: "10px", borderRadius: "3px"}}))),
        el("td", {class: "num"}, String(c.errors || 0))))))),
    data.error_samples.length ? [el("h2", {}, "Errors"), el("div", {class: "error-box"}, data.error_samples.join("\n"))] : null,
    el("h2", {}, "Lowest-scoring examples"),
    el("div", {class: "table-wrap"}, el("table", {class: "data"},
      el("thead", {}, el("tr", {}, el("th", {}, "example"), el("th", {}, "question"), el("th", {}, "answer"), el("th", {class: "num"}, "mean reward"))),
      el("tbody", {}, data.lowest.map((row) => el("tr", {}, el("td", {class: "mono small"}, row.example_id),
        el("td", {}, el("div", {class: "out"}, row.question.length > 300 ? row.question.slice(0, 299) + "…" : row.question)),
        el("td", {class: "mono small"}, row.answer), el("td", {class: "num"}, num(row.mean_reward))))))),
    el("p", {}, el("a", {href: `#/run/${enc(run.id)}/rollouts`}, "Browse every rollout →")),
  );
  return null;
}

// ----- compare

function ciBar(mean, ci) {
  if (!ci) return el("span", {class: "muted"}, "n/a");
  const low = Math.min(ci[0], 0, mean), high = Math.max(ci[1], 0, mean);
  const pad = (high - low) * 0.15 || 0.05;
  const x = (v) => `${((v - (low - pad)) / (high - low + 2 * pad)) * 100}%`;
  const text = `${signed(mean)} [${signed(ci[0])}, ${signed(ci[1])}]`;
  return el("div", {class: "ci-row"}, el("div", {class: "ci", title: `mean ${text}; the line is 0`},
    el("div", {class: "zero", style: {left: x(0)}}),
    el("div", {class: "span", style: {left: x(ci[0]), width: `calc(${x(ci[1])} - ${x(ci[0])})`}}),
    el("div", {class: "dot", style: {left: x(mean)}})), el("span", {class: "mono small"}, text));
}

function wtlBar(p) {
  const total = p.wins + p.ties + p.losses || 1;
  const part = (n, cls, label) => (n ? el("div", {class: cls, style: {width: `${(n / total) * 100}%`}, title: `${n} ${label}`}, String(n)) : null);
  return el("div", {class: "wtl"}, part(p.wins, "w", "wins (B better)"), part(p.ties, "t", "ties"), part(p.losses, "l", "losses (A better)"));
}

function idChips(ids, cls, reference) {
  return el("div", {class: "ids"}, ids.map((id) => el("span", {class: `id ${cls || (reference && reference.includes(id) ? "hit" : "extra")}`}, String(id))));
}

function sampleOutput(side, text, reward) {
  if (side) {
    return el("td", {}, idChips(side.ids, null, side.ids.filter((id) => side.overlap.includes(id))),
      side.missed.length ? el("div", {class: "small muted"}, "missed: ", idChips(side.missed, "missed")) : null,
      el("div", {class: "small muted"}, `overlap ${side.overlap.length} · example mean reward ${num(reward)}`));
  }
  return el("td", {}, el("div", {class: "out"}, text), el("div", {class: "small muted"}, `example mean reward ${num(reward)}`));
}

function sideNote(summary, run) {
  const model = summary && summary.model ? shortModel(summary.model) : "";
  return [el("div", {class: "mono", title: summary && summary.model}, model.length > 40 ? "…" + model.slice(-39) : model),
          "eval ", runLink(run, shortId(run))];
}

function longText(text, limit) {
  if (text.length <= limit) return el("div", {class: "out"}, text);
  return el("details", {class: "out"}, el("summary", {}, text.slice(0, limit - 1) + "…"), text.slice(limit - 1));
}

function comparisonNode(c, labels) {
  const [la, lb] = labels || ["A", "B"];
  const p = c.reward;
  const components = Object.entries(c.components || {});
  const overlapLine = (o, label) => !o ? null : !o.checked ? `${label}: training data unchecked (no rewardlab history)`
    : `${label}: ${o.exact} of ${o.records} records seen in training, ${o.near} near-duplicates`;
  const overlaps = [overlapLine(c.overlap_a, la), overlapLine(c.overlap_b, lb)].filter(Boolean);
  return el("div", {class: "comparison"},
    el("div", {class: "grid cards"},
      stat(la, num(p.mean_a), sideNote(c.summary_a, c.run_a)),
      stat(lb, num(p.mean_b), sideNote(c.summary_b, c.run_b)),
      stat(`${lb} − ${la}`, signed(p.mean_diff), `95% CI [${signed(p.ci95[0])}, ${signed(p.ci95[1])}] · ${p.n} paired examples`, "diff"),
      stat("relative gain", c.relative && c.relative.value !== null ? pct(c.relative.value) : "n/a",
           c.relative ? (c.relative.note || (c.relative.ci95 ? `on ${c.relative.component}, CI [${pct(c.relative.ci95[0])}, ${pct(c.relative.ci95[1])}]` : `on ${c.relative.component}`)) : ""),
    ),
    el("div", {class: "card", style: {marginTop: "12px"}},
      el("table", {class: "kv"}, el("tbody", {},
        el("tr", {}, el("td", {}, "difference, 95% CI"), el("td", {}, ciBar(p.mean_diff, p.ci95))),
        el("tr", {}, el("td", {}, "win / tie / loss"), el("td", {}, wtlBar(p), el("div", {class: "small muted"},
          `${p.wins} wins · ${p.ties} ties · ${p.losses} losses for ${lb}; sign test p = ${num(p.p_value_sign, 3)}`))),
        c.reward_without_errors ? el("tr", {}, el("td", {}, "without errored rollouts"),
          el("td", {}, `${signed(c.reward_without_errors.mean_diff)} [${signed(c.reward_without_errors.ci95[0])}, ${signed(c.reward_without_errors.ci95[1])}]`)) : null,
        el("tr", {}, el("td", {}, "errored rollouts"), el("td", {}, `${la} ${c.errors_a} · ${lb} ${c.errors_b}`)),
        overlaps.length ? el("tr", {}, el("td", {}, "training-data overlap"), el("td", {style: {whiteSpace: "pre-line"}}, overlaps.join("\n"))) : null))),
    (c.warnings || []).map((w) => el("div", {class: "notice"}, w)),
    components.length ? [el("h3", {style: {marginTop: "16px"}}, "Per component"),
      el("div", {class: "table-wrap"}, el("table", {class: "data"},
        el("thead", {}, el("tr", {}, ["component", la, lb, `${lb} − ${la}`, "95% CI", "W / T / L"].map((h, i) => el("th", {class: i && i < 4 ? "num" : null}, h)))),
        el("tbody", {}, components.map(([name, q]) => el("tr", {}, el("td", {}, name), el("td", {class: "num"}, num(q.mean_a)),
          el("td", {class: "num"}, num(q.mean_b)), el("td", {class: "num"}, signed(q.mean_diff)),
          el("td", {style: {minWidth: "240px"}}, ciBar(q.mean_diff, q.ci95)), el("td", {}, `${q.wins} / ${q.ties} / ${q.losses}`)))))) ] : null,
    c.samples && c.samples.length ? [el("h3", {style: {marginTop: "16px"}}, "Debug samples (largest disagreements first)"),
      el("div", {class: "small muted"}, "Each side's first rollout of the example, and its mean reward over all of them."),
      c.samples.some((s) => s.id_sets) ? el("div", {class: "legend-inline"}, el("span", {class: "id hit"}, "in gold"),
        el("span", {class: "id extra"}, "not in gold"), el("span", {class: "id missed"}, "gold, missed")) : null,
      el("div", {class: "table-wrap", style: {marginTop: "6px"}}, el("table", {class: "data samples"},
        el("thead", {}, el("tr", {}, ["question", "gold", la, lb].map((h) => el("th", {}, h)))),
        el("tbody", {}, c.samples.map((s) => el("tr", {},
          el("td", {}, longText(s.question, 160)),
          el("td", {}, s.id_sets ? idChips(s.id_sets.gold, "gold") : el("div", {class: "out"}, s.answer)),
          sampleOutput(s.id_sets && s.id_sets.a, s.output_a, s.reward_a),
          sampleOutput(s.id_sets && s.id_sets.b, s.output_b, s.reward_b))))))] : null);
}

function verdictNode(verdict) {
  if (!verdict) return null;
  const tone = verdict.outcome === "pass" ? "good" : verdict.outcome === "fail" ? "bad" : "kind";
  const colour = {good: "#1a7f37", bad: "#cf222e", kind: "#8c959f"}[tone];
  return el("div", {class: "card", id: "verdict", style: {borderLeft: `4px solid ${colour}`}},
    el("div", {class: "header"}, el("h3", {}, "Verdict"), badge(verdict.outcome || "none", tone),
       el("span", {class: "muted small"}, `bar: ${pct(verdict.bar)} relative gain on ${verdict.component}, its 95% CI above 0`)),
    el("ul", {}, (verdict.reasons || []).map((r) => el("li", {}, r))),
    verdict.hint ? el("div", {class: "muted small"}, verdict.hint) : null);
}

async function compareTab(body, run, params, mine) {
  const data = await api(`runs/${enc(run.id)}/compare`);
  if (mine !== generation) return null;
  const labels = run.kind === "demo" ? ["base", "tuned"] : ["A", "B"];
  put(body, 
    verdictNode(data.verdict),
    Object.entries(data.skipped || {}).map(([mode, why]) => el("div", {class: "notice"}, `${mode}: skipped (${why})`)),
    data.modes.length ? data.modes.map((m) => el("section", {"data-mode": m.mode}, el("h2", {}, `${m.mode}`),
      m.error ? el("div", {class: "error-box"}, m.error) : comparisonNode(m.comparison, labels)))
      : el("div", {class: "empty"}, "This run recorded no pair of eval runs to compare."));
  return null;
}

async function pageComparePair(params, mine) {
  const a = params.get("a"), b = params.get("b");
  if (!a || !b) {
    put(app, el("div", {class: "empty"}, "Pick two eval runs on the ", el("a", {href: "#/runs?kind=eval"}, "runs page"), " to compare them."));
    return;
  }
  put(app, el("p", {class: "muted"}, "Comparing…"));
  const data = await api(`compare?a=${enc(a)}&b=${enc(b)}`);
  if (mine !== generation) return;
  put(app, el("div", {class: "header"}, el("h1", {}, "Paired comparison"),
    el("span", {class: "muted"}, "A = ", runLink(data.run_a), " · B = ", runLink(data.run_b))), comparisonNode(data));
}

// ----- audit

async function auditTab(body, run, params, mine) {
  let data;
  try {
    data = await api(`runs/${enc(run.id)}/audit`);
  } catch (error) {
    put(body, el("div", {class: "notice"}, error.message));
    return null;
  }
  if (mine !== generation) return null;
  const chart = el("div", {class: "chart"});
  put(body, 
    el("p", {class: "muted"}, `Each component's rise (mean of the last third of its ${data.steps} logged steps minus the first third), with a 90% interval from step-to-step noise; its share of the total reward at the end; the correlation of its step-to-step changes with the primary's.`),
    data.static_warnings.map((w) => el("div", {class: "notice"}, "rubric: " + w)),
    data.notes.map((n) => el("div", {class: "notice"}, n)),
    data.flags.length || data.notes.length ? null : el("div", {class: "card", style: {borderLeft: "4px solid #1a7f37", marginBottom: "10px"}}, "Nothing flagged."),
    el("div", {class: "table-wrap"}, el("table", {class: "data", id: "audit-table"},
      el("thead", {}, el("tr", {}, ["component", "weight", "first third", "last third", "rise", "90% interval", "share", "change corr.", "flags"]
        .map((h, i) => el("th", {class: i && i < 8 && i !== 5 ? "num" : null}, h)))),
      el("tbody", {}, data.components.map((c) => el("tr", {class: c.flags.length ? "flagged" : null},
        el("td", {}, c.name, c.primary ? [" ", badge("primary", "kind")] : null),
        el("td", {class: "num"}, num(c.weight, 2)), el("td", {class: "num"}, num(c.start)), el("td", {class: "num"}, num(c.end)),
        el("td", {class: "num"}, signed(c.rise)),
        el("td", {style: {minWidth: "220px"}}, c.interval ? ciBar(c.rise, c.interval) : el("span", {class: "muted small"}, "too few steps")),
        el("td", {class: "num"}, c.share === null ? "—" : pct(c.share)),
        el("td", {class: "num"}, c.correlation === null ? "—" : signed(c.correlation, 2)),
        el("td", {}, c.flags.length ? c.flags.map((f) => el("div", {class: "badge warn", style: {whiteSpace: "normal"}}, "⚠ " + f)) : el("span", {class: "muted"}, "—"))))))),
    el("h2", {}, "Components over training"),
    el("div", {class: "panel"}, chart));
  const curves = await api(`runs/${enc(run.id)}/curves?only=main`);
  if (mine !== generation) return null;
  const lines = data.components.filter((c) => curves.series[`reward/${c.name}`]).map((c, i) => ({
    label: `${c.name} (w ${num(c.weight, 2)})`, color: PALETTE[i % PALETTE.length],
    steps: curves.series[`reward/${c.name}`].steps, values: curves.series[`reward/${c.name}`].values}));
  makeChart(chart, {ylabel: "component mean", lines, smoothing: 0, alerts: curves.alerts.filter((a) => a.name === "reward_hacking"), height: 260});
  return null;
}

// ----- summary and config

async function configTab(body, run) {
  put(body, el("div", {class: "grid two"},
    el("div", {class: "card", id: "summary"}, el("h3", {}, "Summary"), kvTable(run.summary)),
    el("div", {class: "card", id: "config"}, el("h3", {}, "Config"), kvTable(run.config))),
    el("div", {class: "grid two", style: {marginTop: "14px"}},
      el("div", {class: "card"}, el("h3", {}, "Provenance (manifest)"), kvTable(run.manifest)),
      el("div", {class: "card"}, el("h3", {}, "Stored"),
        el("p", {class: "small"}, "directory: ", el("span", {class: "mono"}, run.dir)),
        el("p", {class: "small"}, "rollouts: ", Object.entries(run.rollouts).map(([p, n]) => `${p} ${n}`).join(", ") || "none"),
        el("p", {class: "small"}, `metrics: ${run.metrics.length ? run.metrics.join(", ") : "none"}`),
        el("p", {class: "small"}, "files: ", el("span", {class: "mono"}, run.files.join("  ") || "none")))));
  return {refresh: async (fresh) => configTab(body, fresh)};
}

// ------------------------------------------------------------------------------------------- overlay

// metric, title, y-axis label, the panel (of a run's page) whose alerts it marks
const OVERLAY_METRICS = [
  ["reward/mean", "Mean reward", "reward", "reward"], ["entropy", "Policy entropy", "nats per token", "entropy"],
  ["clip/low_fraction", "Clipped low", "fraction of tokens", "clip"],
  ["clip/high_fraction", "Clipped high", "fraction of tokens", "clip"],
  ["kl", "KL to the reference", "nats per token", "kl"], ["grad_norm", "Gradient norm", "norm", "grad_norm"],
  ["completion/mean_length", "Completion length", "tokens", "length"],
  ["completion/truncated_fraction", "Truncated completions", "fraction of rollouts", "truncation"],
  ["groups/zero_std_fraction", "Groups without signal", "fraction of groups", "zero_signal"],
  ["loss", "Loss", "loss", "loss"],
];

async function pageOverlay(params, mine) {
  const chosen = new Set((params.get("runs") || "").split(",").filter(Boolean).map(decodeURIComponent));
  const listing = await api("runs");
  if (mine !== generation) return;
  const candidates = listing.runs.filter((r) => r.kind === "train" || r.kind === "sft");
  const smoothing = smoothingControl(() => draw());
  const pickers = el("div", {class: "card", id: "overlay-picker", style: {maxHeight: "220px", overflow: "auto"}},
    candidates.length ? candidates.map((r) => {
      const box = el("input", {type: "checkbox", value: r.id, checked: chosen.has(r.id)});
      box.addEventListener("change", () => { box.checked ? chosen.add(r.id) : chosen.delete(r.id); update(); });
      return el("label", {style: {display: "block", margin: "2px 0"}}, box, " ", el("span", {class: "mono"}, r.id), " ",
                badge(r.status), " ", el("span", {class: "muted small"}, [r.name, r.env, r.headline].filter(Boolean).join(" · ")));
    }) : el("span", {class: "muted"}, "No train or sft runs in this store."));
  const charts = el("div", {class: "grid two", id: "charts"});
  put(app, el("div", {class: "header"}, el("h1", {}, "Overlay"),
      el("span", {class: "muted"}, "several runs' curves on the same charts")),
    pickers, el("div", {class: "toolbar"}, smoothing.node), charts);
  let curves = {};
  let drawn = [];
  const draw = () => {
    for (const chart of drawn) chart && chart.destroy();
    drawn = [];
    const ids = [...chosen].filter((id) => curves[id]);
    if (!ids.length) { put(charts, el("div", {class: "empty"}, "Tick runs above to overlay their curves.")); return; }
    const colour = Object.fromEntries(ids.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
    const names = [...OVERLAY_METRICS.map((m) => m[0])];
    for (const id of ids) {
      for (const name of Object.keys(curves[id].series).sort()) {
        if (name.startsWith("reward/") && name !== "reward/std" && !names.includes(name)) names.splice(1, 0, name);
      }
    }
    const meta = Object.fromEntries(OVERLAY_METRICS.map(([n, t, y, p]) => [n, [t, y, p]]));
    const shown = names.filter((name) => ids.some((id) => curves[id].series[name]));
    put(charts, ...shown.map((name) => el("div", {class: "panel", "data-panel": name},
      el("h3", {}, meta[name] ? meta[name][0] : `Reward: ${name.slice(7)}`), el("div", {class: "chart"}))));
    for (const name of shown) {
      const lines = ids.filter((id) => curves[id].series[name]).map((id) => ({
        label: id, color: colour[id], steps: curves[id].series[name].steps, values: curves[id].series[name].values}));
      const panel = meta[name] ? meta[name][2] : null;
      const alerts = ids.flatMap((id) => curves[id].alerts
        .filter((a) => name === "reward/mean" || a.panel === panel)
        .map((a) => ({...a, color: colour[id]})));
      drawn.push(makeChart(charts.querySelector(`[data-panel="${CSS.escape(name)}"] .chart`),
        {ylabel: meta[name] ? meta[name][1] : "reward", lines, smoothing: smoothing.value(), alerts}));
    }
  };
  const update = async () => {
    setHashQuietly(`#/overlay?runs=${[...chosen].map(enc).join(",")}`);
    await Promise.all([...chosen].filter((id) => !curves[id]).map(async (id) => {
      try { curves[id] = await api(`runs/${enc(id)}/curves?only=main`); } catch (_) { chosen.delete(id); }
    }));
    if (mine === generation) draw();
  };
  await update();
  every(pollMs(), async () => {
    const live = [...chosen].filter((id) => curves[id] && curves[id].status === "running");
    setLive(live.length > 0);
    if (!live.length) return;
    for (const id of live) curves[id] = await api(`runs/${enc(id)}/curves?only=main`);
    if (mine === generation) draw();
  });
}

window.addEventListener("hashchange", route);
route();
