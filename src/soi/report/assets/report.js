/* soi report: renders the embedded JSON (script#soi-data) into figures and tables.
 * Vanilla JS, no external resources. Every text from the data goes through textContent (never innerHTML).
 * Figures mark their data area with [data-plot] inside a [data-figure] element (the browser tests read those pixels).
 */
(function () {
  "use strict";
  const T0 = performance.now();
  const SVGNS = "http://www.w3.org/2000/svg";
  const CAT_COLOURS = ["#1a9850", "#91cf60", "#d9b310", "#fc8d59", "#d73027", "#6a3d9a"];
  const CORRECT_COLOURS = ["#d6604d", "#2166ac"]; // wrong, correct
  const SERIES = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#bf8700", "#0a3069", "#e16f24", "#57606a",
    "#a40e26", "#1b7c83", "#6e40c9", "#953800"];
  const BLUES = ["#f7fbff", "#deebf7", "#c6dbef", "#9ecae1", "#6baed6", "#4292c6", "#2171b5", "#08519c", "#08306b"];
  const METRIC_LABELS = {confidence: "confidence", variability: "variability", correctness_frac: "correctness",
    forgetting_events: "forgetting events", aum: "AUM", mean_loss: "mean loss"};
  const GROUP_KEYS = ["task", "source", "language"];
  const PAGE = 100;
  const POINTS_MAX = 4000;

  // ------------------------------------------------------------------------------------------- helpers
  function el(tag, attrs, children) {
    const e = document.createElement(tag);
    if (attrs) for (const k in attrs) {
      const v = attrs[k];
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else if (k === "cls") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? "" : v);
    }
    if (children) for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  function sv(tag, attrs, children) {
    const e = document.createElementNS(SVGNS, tag);
    if (attrs) for (const k in attrs) {
      const v = attrs[k];
      if (v === null || v === undefined || (typeof v === "number" && !Number.isFinite(v))) continue;
      if (k === "text") e.textContent = v; else e.setAttribute(k, v);
    }
    if (children) for (const c of children) if (c) e.append(c);
    return e;
  }
  function svgText(x, y, s, attrs) { return sv("text", Object.assign({x: x, y: y, text: s, "font-size": 11}, attrs || {})); }
  function titled(node, s) { node.append(sv("title", {text: s})); return node; }
  function fmt(x, d) {
    if (x === null || x === undefined || Number.isNaN(x)) return "–";
    return Number(x).toFixed(d === undefined ? 3 : d);
  }
  function pct(x, d) { return (x === null || x === undefined) ? "–" : (100 * x).toFixed(d === undefined ? 1 : d) + "%"; }
  function pp(x) { return x === null || x === undefined ? "–" : (x >= 0 ? "+" : "") + (100 * x).toFixed(1) + " pp"; }
  function pfmt(p) { return p === null || p === undefined ? "–" : (p < 1e-4 ? p.toExponential(1) : p.toPrecision(2)); }
  function mstd(o, d) {
    if (!o) return "–";
    if (typeof o === "number") return fmt(o, d);
    return fmt(o.mean, d) + (o.std ? " ± " + fmt(o.std, d) : "");
  }
  function hexRgb(h) { return [parseInt(h.slice(1, 3), 16), parseInt(h.slice(3, 5), 16), parseInt(h.slice(5, 7), 16)]; }
  function ramp(stops, t) {
    t = Math.max(0, Math.min(1, Number.isFinite(t) ? t : 0));
    const x = t * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(x)), f = x - i;
    const a = hexRgb(stops[i]), b = hexRgb(stops[i + 1]);
    return "rgb(" + a.map((v, j) => Math.round(v + (b[j] - v) * f)).join(",") + ")";
  }
  function inkOn(t) { return t > 0.55 ? "#ffffff" : "#1f2328"; }
  function select(options, value, onchange, attrs) {
    const s = el("select", attrs || {});
    for (const [v, label] of options) s.append(el("option", {value: v, text: label}));
    if (value !== undefined && value !== null) s.value = String(value);
    s.addEventListener("change", () => onchange(s.value));
    return s;
  }
  function labelled(text, control) { return el("label", null, [text + " ", control]); }
  function table(headers, rows, opts) {
    const t = el("table", {cls: "data", id: opts && opts.id});
    const tr = el("tr");
    headers.forEach((h, i) => tr.append(el("th", {text: h, cls: opts && opts.num && opts.num.includes(i) ? "num" : null})));
    t.append(el("thead", null, [tr]));
    const tb = el("tbody");
    for (const r of rows) {
      const row = el("tr", {cls: r.cls || null});
      (r.cells || r).forEach((c, i) => {
        const td = el("td", {cls: opts && opts.num && opts.num.includes(i) ? "num" : null});
        if (c instanceof Node) td.append(c); else td.textContent = c === null || c === undefined ? "–" : String(c);
        row.append(td);
      });
      tb.append(row);
    }
    t.append(tb);
    return t;
  }
  function legend(items) {
    const d = el("div", {cls: "legend"});
    for (const it of items) {
      const span = el("span");
      if (it.line) {
        const s = sv("svg", {width: 26, height: 10});
        s.append(sv("line", {x1: 1, y1: 5, x2: 25, y2: 5, stroke: it.colour, "stroke-width": 2,
          "stroke-dasharray": it.dash || null}));
        span.append(s);
      } else if (it.marker !== undefined) {
        const s = sv("svg", {width: 12, height: 12});
        s.append(markerPath(it.marker, 6, 6, 4.5, it.colour || "#57606a"));
        span.append(s);
      } else span.append(el("span", {cls: "sw", style: "background:" + it.colour}));
      span.append(document.createTextNode(it.label));
      d.append(span);
    }
    return d;
  }
  function section(id, title, help) {
    const s = el("section", {id: id}, [el("h2", {text: title})]);
    if (help) s.append(el("p", {cls: "help", text: help}));
    return s;
  }
  function figure(name, caption) {
    const f = el("figure", {cls: "fig", "data-figure": name});
    if (caption) f.append(el("figcaption", {text: caption}));
    return f;
  }
  function niceTicks(lo, hi, n) {
    const span = hi - lo || 1, step0 = span / (n || 5), mag = Math.pow(10, Math.floor(Math.log10(step0)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }
  function b64bytes(s) {
    const bin = atob(s), n = bin.length, u = new Uint8Array(n);
    for (let i = 0; i < n; i++) u[i] = bin.charCodeAt(i);
    return u;
  }
  function decode(c) {
    const u = b64bytes(c.b64);
    if (c.dtype === "q16") {
      const q = new Uint16Array(u.buffer, 0, c.n), out = new Float32Array(c.n), s = (c.hi - c.lo) / 65535;
      for (let i = 0; i < c.n; i++) out[i] = c.lo + q[i] * s;
      return out;
    }
    if (c.dtype === "u8") return u;
    if (c.dtype === "u16") return new Uint16Array(u.buffer, 0, c.n);
    return new Uint32Array(u.buffer, 0, c.n);
  }

  // ------------------------------------------------------------------------------------------- data
  const D = JSON.parse(document.getElementById("soi-data").textContent);
  const CATS = D.categories;
  const X = D.examples;
  const EX = {n: X.n, ids: X.ids, text: X.text, dicts: X.dicts, col: {}, trace: decode(X.trace)};
  for (const k in X.columns) EX.col[k] = decode(X.columns[k]);
  const RUNS = D.runs;
  function runLabel(r) { return r.name + (r.seed !== null && r.seed !== undefined ? " · seed " + r.seed : ""); }
  const app = document.getElementById("app");
  app.textContent = "";

  // ------------------------------------------------------------------------------------------- header
  function header() {
    const h = el("header", {cls: "top"}, [el("h1", {text: D.title + " — soi report"})]);
    const m = el("div", {cls: "meta"});
    const st = D.study || {};
    const items = [["source", D.source], ["model", st.model], ["seeds", st.seeds ? st.seeds.join(", ") : null],
      ["runs", RUNS.length + " run director" + (RUNS.length === 1 ? "y" : "ies")],
      ["examples", X.n_total.toLocaleString() + (X.n < X.n_total ? " (" + X.n.toLocaleString() + " sampled into the page)" : "")],
      ["generated", D.generated], ["soi", D.soi_version]];
    for (const [k, v] of items) if (v !== null && v !== undefined) m.append(el("span", {text: k + ": " + v}));
    h.append(m);
    return h;
  }
  const sections = [];
  function nav() {
    const n = el("nav", {cls: "toc"});
    for (const [id, t] of sections) n.append(el("a", {href: "#" + id, text: t}));
    return n;
  }

  // ------------------------------------------------------------------------------------------- overview
  function overview() {
    const s = section("overview", "Overview", "Runs and settings; evaluation results are mean ± sample std over seeds.");
    if (D.notes && D.notes.length) s.append(el("div", {cls: "notes"}, D.notes.map((t) => el("div", {text: t}))));
    const fly = RUNS.filter((r) => r.analysed_on_the_fly);
    if (fly.length) s.append(el("div", {cls: "notes", text: "Analysed in memory (no analysis/ folder): " + fly.map(runLabel).join(", ")}));
    const rows = D.settings.map((st) => [st.name, st.setting || "–", (st.train || []).join(", ") || "–",
      (st.seeds || []).join(", ") || "–",
      st.runs.length ? RUNS[st.runs[0]].n_examples.toLocaleString() : "–",
      st.runs.length ? RUNS[st.runs[0]].n_checkpoints : "–", mstd(st.train_accuracy_final),
      st.shares.all && st.shares.all.all ? pct(st.shares.all.all[0]) : "–",
      st.shares.all && st.shares.all.all ? pct(st.shares.all.all[4]) : "–"]);
    s.append(table(["run", "setting", "trained on", "seeds", "examples", "checkpoints", "final train accuracy",
      "always correct", "forgettable lost"], rows, {num: [4, 5, 6, 7, 8], id: "runs-table"}));
    const withEval = D.settings.filter((st) => st.eval && Object.keys(st.eval).length);
    if (withEval.length) s.append(evalBlock(withEval));
    return s;
  }
  function evalBlock(settings) {
    const wrap = el("div");
    wrap.append(el("h3", {text: "Evaluation (in-distribution and OOD)"}));
    const rows = [], langRows = [], other = [];
    for (const st of settings) for (const key in st.eval) {
      const e = st.eval[key];
      if (!hasMean(e.accuracy) && !hasMean(e.macro_f1)) {
        for (const [path, v] of leaves(e, "")) other.push([st.name, key, path, v]);
        continue;
      }
      rows.push([st.name, key, e.kind || "–", e.n, mstd(e.accuracy), mstd(e.macro_f1)]);
      for (const lang in (e.languages || {})) {
        const l = e.languages[lang];
        langRows.push([st.name, key, lang, l.n, mstd(l.accuracy), mstd(l.macro_f1)]);
      }
    }
    if (rows.length) {
      let metric = "accuracy";
      const fig = figure("eval", "Evaluation by run and eval set (dot = mean, bar = ± std over seeds)");
      const holder = el("div");
      const draw = () => { holder.textContent = ""; holder.append(evalChart(settings, metric)); };
      wrap.append(el("div", {cls: "controls"}, [labelled("metric", select([["accuracy", "accuracy"], ["macro_f1", "macro-F1"]],
        metric, (v) => { metric = v; draw(); }))]));
      fig.append(holder);
      draw();
      wrap.append(fig);
      wrap.append(table(["run", "eval set", "kind", "n", "accuracy", "macro-F1"], rows, {num: [3, 4, 5], id: "eval-table"}));
    }
    if (other.length) wrap.append(table(["run", "eval set", "value", "mean ± std"], other, {num: [3], id: "eval-other-table"}));
    if (langRows.length) {
      const det = el("details", null, [el("summary", {text: "per language (" + langRows.length + " rows)"})]);
      det.append(table(["run", "eval set", "language", "n", "accuracy", "macro-F1"], langRows, {num: [3, 4, 5]}));
      wrap.append(det);
    }
    return wrap;
  }
  function hasMean(m) { return m !== null && typeof m === "object" && Number.isFinite(m.mean); }
  function leaves(obj, prefix) {
    // numeric leaves of a result object: numbers and {mean, std} pairs, as [path, text]
    const out = [];
    if (typeof obj === "number") out.push([prefix, fmt(obj)]);
    else if (hasMean(obj)) out.push([prefix, mstd(obj)]);
    else if (obj && typeof obj === "object" && !Array.isArray(obj)) {
      for (const k in obj) if (k !== "values") out.push(...leaves(obj[k], prefix ? prefix + "." + k : k));
    }
    return out;
  }
  function evalChart(settings, metric) {
    const items = [];
    const evalKeys = [];
    for (const st of settings) for (const k in st.eval) if (!evalKeys.includes(k)) evalKeys.push(k);
    for (const k of evalKeys) for (const st of settings) if (st.eval[k] && hasMean(st.eval[k][metric])) items.push({k: k, st: st, e: st.eval[k]});
    const rowH = 18, left = 250, W = 420, top = 10, H = items.length * rowH + evalKeys.length * 6;
    const svg = sv("svg", {width: left + W + 30, height: top + H + 36});
    let lo = 1, hi = 0;
    for (const it of items) { const m = it.e[metric] || {}; lo = Math.min(lo, m.mean - (m.std || 0)); hi = Math.max(hi, m.mean + (m.std || 0)); }
    lo = Math.max(0, Math.floor((lo - 0.02) * 20) / 20); hi = Math.min(1, Math.ceil((hi + 0.02) * 20) / 20);
    if (!(hi > lo)) { lo = 0; hi = 1; }
    const x = (v) => left + (v - lo) / (hi - lo) * W;
    svg.append(sv("rect", {x: left, y: top, width: W, height: H, fill: "none", stroke: "#d0d7de", "data-plot": "1"}));
    for (const t of niceTicks(lo, hi, 6)) {
      svg.append(sv("line", {x1: x(t), x2: x(t), y1: top, y2: top + H, stroke: "#eef1f4"}));
      svg.append(svgText(x(t), top + H + 14, fmt(t, 2), {"text-anchor": "middle"}));
    }
    svg.append(svgText(left + W / 2, top + H + 30, metric === "accuracy" ? "accuracy" : "macro-F1", {"text-anchor": "middle", "font-size": 12}));
    let y = top + 4, prev = null;
    for (const it of items) {
      if (prev !== null && prev !== it.k) y += 6;
      prev = it.k;
      const m = it.e[metric] || {}, cy = y + rowH / 2, ood = it.e.kind === "ood", col = ood ? "#e16f24" : "#0969da";
      svg.append(svgText(left - 6, cy + 4, it.k + " · " + it.st.name, {"text-anchor": "end"}));
      if (m.std) svg.append(sv("line", {x1: x(m.mean - m.std), x2: x(m.mean + m.std), y1: cy, y2: cy, stroke: col, "stroke-width": 2}));
      svg.append(titled(sv("circle", {cx: x(m.mean), cy: cy, r: 4.5, fill: col}),
        it.st.name + " on " + it.k + ": " + mstd(m)));
      y += rowH;
    }
    const wrap = el("div");
    wrap.append(legend([{colour: "#0969da", label: "in-distribution"}, {colour: "#e16f24", label: "OOD"}]));
    wrap.append(svg);
    return wrap;
  }

  // ------------------------------------------------------------------------------------------- data maps
  const MARKERS = ["circle", "square", "triangle", "diamond", "cross", "x"];
  function markerPath(kind, x, y, r, colour) {
    const k = MARKERS[kind % MARKERS.length];
    if (k === "circle") return sv("circle", {cx: x, cy: y, r: r, fill: colour});
    if (k === "square") return sv("rect", {x: x - r * 0.85, y: y - r * 0.85, width: 1.7 * r, height: 1.7 * r, fill: colour});
    if (k === "triangle") return sv("path", {d: `M${x},${y - r}L${x + r},${y + r * 0.8}L${x - r},${y + r * 0.8}Z`, fill: colour});
    if (k === "diamond") return sv("path", {d: `M${x},${y - r}L${x + r},${y}L${x},${y + r}L${x - r},${y}Z`, fill: colour});
    if (k === "cross") return sv("path", {d: `M${x - r},${y}H${x + r}M${x},${y - r}V${y + r}`, stroke: colour, "stroke-width": 2});
    return sv("path", {d: `M${x - r},${y - r}L${x + r},${y + r}M${x - r},${y + r}L${x + r},${y - r}`, stroke: colour, "stroke-width": 2});
  }
  function drawMarker(ctx, kind, x, y, r) {
    const k = MARKERS[kind % MARKERS.length];
    ctx.beginPath();
    if (k === "circle") { ctx.arc(x, y, r, 0, 2 * Math.PI); ctx.fill(); return; }
    if (k === "square") { ctx.fillRect(x - r * 0.85, y - r * 0.85, 1.7 * r, 1.7 * r); return; }
    if (k === "triangle") { ctx.moveTo(x, y - r); ctx.lineTo(x + r, y + r * 0.8); ctx.lineTo(x - r, y + r * 0.8); ctx.closePath(); ctx.fill(); return; }
    if (k === "diamond") { ctx.moveTo(x, y - r); ctx.lineTo(x + r, y); ctx.lineTo(x, y + r); ctx.lineTo(x - r, y); ctx.closePath(); ctx.fill(); return; }
    if (k === "cross") { ctx.moveTo(x - r, y); ctx.lineTo(x + r, y); ctx.moveTo(x, y - r); ctx.lineTo(x, y + r); ctx.stroke(); return; }
    ctx.moveTo(x - r, y - r); ctx.lineTo(x + r, y + r); ctx.moveTo(x - r, y + r); ctx.lineTo(x + r, y - r); ctx.stroke();
  }
  function groupKeyOptions() {
    return [["all", "all examples"]].concat((D.group_keys || []).map((k) => [k, "per " + k]));
  }
  function dataMaps() {
    const s = section("datamaps", "Data maps",
      "Variability (x: std of the gold-label probability over checkpoints) against confidence (y: its mean), " +
      "Swayamdipta et al. (2020). Colour: final correctness or SOI category; in point mode the marker shape is the SOI category. " +
      "With many examples a panel is drawn as a density (colour = mix of the classes in each cell, opacity = log count).");
    const shown = RUNS.filter((r) => r.n_shown > 0);
    if (!shown.length) { s.append(el("p", {cls: "empty-note", text: "No per-example data."})); return s; }
    const st = {run: shown.length <= 4 ? "all" : String(shown[0].id), key: "all", colour: "correctness", mode: "auto"};
    const ctl = el("div", {cls: "controls"});
    const holder = el("div", {cls: "figrow"});
    const leg = el("div");
    const draw = () => { holder.textContent = ""; leg.textContent = ""; drawDataMaps(holder, leg, st); };
    const runOpts = [["all", "all runs, side by side"]].concat(shown.map((r) => [String(r.id), runLabel(r) + " (" + r.n_shown.toLocaleString() + ")"]));
    ctl.append(labelled("run", select(runOpts, st.run, (v) => { st.run = v; draw(); }, {id: "datamap-run"})));
    ctl.append(labelled("groups", select(groupKeyOptions(), st.key, (v) => { st.key = v; draw(); }, {id: "datamap-key"})));
    ctl.append(labelled("colour", select([["correctness", "final correctness"], ["soi", "SOI category"]], st.colour,
      (v) => { st.colour = v; draw(); }, {id: "datamap-colour"})));
    ctl.append(labelled("render", select([["auto", "auto"], ["points", "points"], ["density", "density"]], st.mode,
      (v) => { st.mode = v; draw(); }, {id: "datamap-mode"})));
    s.append(ctl, leg, holder);
    draw();
    return s;
  }
  const MAX_PANELS = 24;
  function drawDataMaps(holder, leg, st) {
    const runs = st.run === "all" ? RUNS.filter((r) => r.n_shown > 0) : [RUNS[+st.run]];
    const conf = EX.col.confidence, vari = EX.col.variability, soi = EX.col.soi, cor = EX.col.correct;
    let vmax = 0;
    for (const r of runs) for (let i = r.row_start; i < r.row_start + r.n_shown; i++) if (vari[i] > vmax) vmax = vari[i];
    const xmax = Math.max(0.1, Math.ceil(vmax * 10 + 1e-9) / 10);
    const panels = [];
    for (const r of runs) {
      const lo = r.row_start, hi = r.row_start + r.n_shown;
      if (st.key === "all") { panels.push({r: r, name: null, code: null}); continue; }
      const codes = EX.col[st.key], dict = EX.dicts[st.key], present = new Set();
      for (let i = lo; i < hi; i++) present.add(codes[i]);
      for (const c of [...present].sort((a, b) => dict[a] < dict[b] ? -1 : 1)) panels.push({r: r, name: dict[c], code: c});
    }
    if (panels.length > MAX_PANELS) holder.append(el("p", {cls: "small", text: "Showing the first " + MAX_PANELS + " of " + panels.length + " panels; pick one run."}));
    const anyDensity = panels.some((p) => st.mode === "density" || (st.mode === "auto" && p.r.n_shown > POINTS_MAX));
    const colours = st.colour === "soi" ? CAT_COLOURS : CORRECT_COLOURS;
    const items = st.colour === "soi" ? CATS.map((c, i) => ({colour: CAT_COLOURS[i], label: c}))
      : [{colour: CORRECT_COLOURS[1], label: "correct at the end"}, {colour: CORRECT_COLOURS[0], label: "wrong at the end"}];
    if (!anyDensity && st.colour !== "soi") for (let i = 0; i < CATS.length; i++) items.push({marker: i, label: CATS[i]});
    leg.append(legend(items));
    const small = panels.length > 1;
    for (const pnl of panels.slice(0, MAX_PANELS)) {
      const r = pnl.r, idx = [];
      const codes = pnl.code === null ? null : EX.col[st.key];
      for (let i = r.row_start; i < r.row_start + r.n_shown; i++) if (codes === null || codes[i] === pnl.code) idx.push(i);
      const density = st.mode === "density" || (st.mode === "auto" && r.n_shown > POINTS_MAX);
      const cap = (runs.length > 1 || pnl.code === null ? runLabel(r) : "") + (pnl.code === null ? "" : (runs.length > 1 ? ", " : "") + st.key + " = " + pnl.name) +
        " (n = " + idx.length.toLocaleString() + (density ? ", density" : "") + ")";
      const fig = figure("datamap", cap);
      const ml = 42, mb = 34, mt = 6, mr = 16, W = small ? 300 : 440, H = small ? 240 : 340;
      const panel = el("div", {cls: "panel", style: `width:${ml + W + mr}px;height:${mt + H + mb}px`});
      const axes = sv("svg", {width: ml + W + mr, height: mt + H + mb});
      axes.setAttribute("class", "axes");
      axes.append(sv("rect", {x: ml, y: mt, width: W, height: H, fill: "none", stroke: "#8c959f"}));
      for (const t of niceTicks(0, xmax, 5)) {
        axes.append(sv("line", {x1: ml + t / xmax * W, x2: ml + t / xmax * W, y1: mt + H, y2: mt + H + 4, stroke: "#57606a"}));
        axes.append(svgText(ml + t / xmax * W, mt + H + 15, fmt(t, 2), {"text-anchor": "middle", "font-size": 10}));
      }
      for (const t of [0, 0.25, 0.5, 0.75, 1]) {
        axes.append(sv("line", {x1: ml - 4, x2: ml, y1: mt + H - t * H, y2: mt + H - t * H, stroke: "#57606a"}));
        axes.append(svgText(ml - 6, mt + H - t * H + 3, fmt(t, 2), {"text-anchor": "end", "font-size": 10}));
      }
      axes.append(svgText(ml + W / 2, mt + H + 30, "variability", {"text-anchor": "middle", "font-size": 11}));
      axes.append(svgText(11, mt + H / 2, "confidence", {"text-anchor": "middle", "font-size": 11,
        transform: `rotate(-90 11 ${mt + H / 2})`}));
      const dpr = window.devicePixelRatio || 1;
      const canvas = el("canvas", {width: Math.round(W * dpr), height: Math.round(H * dpr), "data-plot": "1",
        style: `left:${ml}px;top:${mt}px;width:${W}px;height:${H}px`});
      const ctx = canvas.getContext("2d");
      ctx.scale(dpr, dpr);
      const px = (i) => vari[i] / xmax * W, py = (i) => H - conf[i] * H;
      const klass = st.colour === "soi" ? soi : cor;
      if (density) {
        const cell = 3, nx = Math.ceil(W / cell), ny = Math.ceil(H / cell), nc = colours.length;
        const cnt = new Float32Array(nx * ny * nc);
        for (const i of idx) {
          const bx = Math.min(nx - 1, Math.max(0, Math.floor(px(i) / cell)));
          const by = Math.min(ny - 1, Math.max(0, Math.floor(py(i) / cell)));
          cnt[(by * nx + bx) * nc + klass[i]] += 1;
        }
        let maxTot = 0;
        const tot = new Float32Array(nx * ny);
        for (let b = 0; b < nx * ny; b++) { let t = 0; for (let c = 0; c < nc; c++) t += cnt[b * nc + c]; tot[b] = t; if (t > maxTot) maxTot = t; }
        const rgb = colours.map(hexRgb), img = new ImageData(nx, ny), lm = Math.log1p(maxTot);
        for (let b = 0; b < nx * ny; b++) {
          if (!tot[b]) continue;
          let R = 0, G = 0, B = 0;
          for (let c = 0; c < nc; c++) { const w = cnt[b * nc + c] / tot[b]; R += w * rgb[c][0]; G += w * rgb[c][1]; B += w * rgb[c][2]; }
          img.data[4 * b] = R; img.data[4 * b + 1] = G; img.data[4 * b + 2] = B;
          img.data[4 * b + 3] = Math.round(255 * (0.3 + 0.7 * Math.log1p(tot[b]) / lm));
        }
        const off = document.createElement("canvas");
        off.width = nx; off.height = ny;
        off.getContext("2d").putImageData(img, 0, 0);
        ctx.imageSmoothingEnabled = false;
        ctx.drawImage(off, 0, 0, nx * cell, ny * cell);
      } else {
        ctx.globalAlpha = 0.75;
        ctx.lineWidth = 1.3;
        const r0 = idx.length > 1500 ? 2.2 : 3.2;
        for (const i of idx) {
          ctx.fillStyle = ctx.strokeStyle = colours[klass[i]];
          drawMarker(ctx, st.colour === "soi" ? 0 : soi[i], px(i), py(i), r0);
        }
      }
      panel.append(axes, canvas);
      fig.append(panel);
      fig.dataset.points = String(idx.length);
      fig.dataset.mode = density ? "density" : "points";
      holder.append(fig);
    }
  }

  // ------------------------------------------------------------------------------------------- SOI shares
  function shares() {
    const s = section("shares", "SOI shares",
      "Share of the training examples in each Subset of Interest, per setting (mean over seeds) and group.");
    const settings = D.settings.filter((st) => st.shares && st.shares.all);
    if (!settings.length) { s.append(el("p", {cls: "empty-note", text: "No SOI shares (no analysed runs)."})); return s; }
    const keys = groupKeyOptions();
    let key = "all";
    const holder = el("div");
    const draw = () => { holder.textContent = ""; holder.append(sharesChart(settings, key)); };
    s.append(el("div", {cls: "controls"}, [labelled("groups", select(keys, key, (v) => { key = v; draw(); }, {id: "shares-key"}))]));
    s.append(legend(CATS.map((c, i) => ({colour: CAT_COLOURS[i], label: c}))));
    s.append(holder);
    draw();
    return s;
  }
  function sharesChart(settings, key) {
    const groups = [];
    for (const st of settings) for (const g in (st.shares[key] || {})) if (!groups.includes(g)) groups.push(g);
    groups.sort();
    const fig = figure("shares", key === "all" ? "SOI shares per setting" : "SOI shares per setting and " + key);
    const left = 190, W = 560, barH = 16, gap = 4, top = 4;
    let rows = 0;
    for (const g of groups) for (const st of settings) if (st.shares[key][g]) rows++;
    const H = rows * (barH + gap) + groups.length * (key === "all" ? 0 : 18);
    const svg = sv("svg", {width: left + W + 20, height: top + H + 26});
    svg.append(sv("rect", {x: left, y: top, width: W, height: H, fill: "none", stroke: "none", "data-plot": "1"}));
    let y = top;
    for (const g of groups) {
      if (key !== "all") { svg.append(svgText(4, y + 13, key + " = " + g, {"font-weight": 600})); y += 18; }
      for (const st of settings) {
        const sh = st.shares[key][g];
        if (!sh) continue;
        svg.append(svgText(left - 6, y + barH - 4, st.name + (st.setting && st.setting !== st.name ? " (" + st.setting + ")" : ""), {"text-anchor": "end"}));
        let x = left;
        sh.forEach((v, c) => {
          const w = v * W;
          if (w <= 0) return;
          svg.append(titled(sv("rect", {x: x, y: y, width: w, height: barH, fill: CAT_COLOURS[c]}),
            st.name + (key === "all" ? "" : ", " + key + " = " + g) + " — " + CATS[c] + ": " + pct(v)));
          if (w > 34) svg.append(svgText(x + w / 2, y + barH - 4, pct(v, 0), {"text-anchor": "middle", fill: c === 2 || c === 1 ? "#1f2328" : "#fff", "font-size": 10}));
          x += w;
        });
        y += barH + gap;
      }
    }
    for (const t of [0, 0.25, 0.5, 0.75, 1]) svg.append(svgText(left + t * W, top + H + 14, pct(t, 0), {"text-anchor": "middle", "font-size": 10}));
    fig.append(svg);
    return fig;
  }

  // ------------------------------------------------------------------------------------------- transitions
  function transitions() {
    const s = section("transitions", "SOI transitions",
      "How each shared example's category moves from run A (rows, usually the single-setting run) to run B (columns). " +
      "Colour = row %; each cell shows the count and the row %. * marks a category whose share change has a bootstrap " +
      "confidence interval excluding 0; McNemar's test compares final train-pass correctness (training dynamics). With seed folders, " +
      "the counts are pooled over seed pairs and the reseeding null below separates the setting's effect from seed-to-seed noise.");
    const comps = D.comparisons;
    if (!comps.length) { s.append(el("p", {cls: "empty-note", text: "No comparisons (soi compare) found."})); return s; }
    const st = {c: 0, g: 0, show: "both"};
    const ctl = el("div", {cls: "controls"});
    const gsel = el("span");
    const holder = el("div");
    const draw = () => {
      const c = comps[st.c];
      gsel.textContent = "";
      if (st.g >= c.groups.length) st.g = 0;
      gsel.append(labelled("group", select(c.groups.map((g, i) => [i, g.key === "all" ? "all shared" : g.key + " = " + g.group]), st.g,
        (v) => { st.g = +v; draw(); }, {id: "transitions-group"})));
      holder.textContent = "";
      holder.append(transitionView(c, c.groups[st.g], st.show), seedNullView(c, c.groups[st.g]));
    };
    ctl.append(labelled("comparison", select(comps.map((c, i) => [i, c.a + " → " + c.b + (c.seed !== null && c.seed !== undefined ? " · seed " + c.seed : "")]),
      st.c, (v) => { st.c = +v; st.g = 0; draw(); }, {id: "transitions-comparison"})));
    ctl.append(gsel);
    ctl.append(labelled("cells", select([["both", "count + row %"], ["counts", "counts"], ["rowpct", "row %"]], st.show,
      (v) => { st.show = v; draw(); }, {id: "transitions-cells"})));
    s.append(ctl, holder);
    draw();
    return s;
  }
  function transitionView(c, g, show) {
    const cats = c.categories, k = cats.length, cell = 66, left = 190, top = 22, colH = 120;
    const rows = g.counts.map((r) => r.reduce((a, b) => a + b, 0));
    const cols = cats.map((_, j) => g.counts.reduce((a, r) => a + r[j], 0));
    const fig = figure("transitions", c.a + " → " + c.b + (g.key === "all" ? ": all shared examples" : ": " + g.key + " = " + g.group) +
      " (n = " + g.n_shared.toLocaleString() + ")");
    const svg = sv("svg", {width: left + k * cell + 80, height: top + k * cell + colH});
    svg.append(sv("rect", {x: left, y: top, width: k * cell, height: k * cell, fill: "none", stroke: "none", "data-plot": "1"}));
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
      const n = g.counts[i][j], share = rows[i] ? n / rows[i] : 0;
      const x = left + j * cell, y = top + i * cell;
      svg.append(titled(sv("rect", {x: x, y: y, width: cell - 1, height: cell - 1, fill: ramp(BLUES, share)}),
        cats[i] + " → " + cats[j] + ": " + n + " (" + pct(share) + " of row)"));
      const ink = inkOn(share), w = i === j ? 700 : 400;
      const lines = show === "counts" ? [String(n)] : show === "rowpct" ? [rows[i] ? pct(share) : "–"] : [String(n), rows[i] ? pct(share) : "–"];
      lines.forEach((t, li) => svg.append(svgText(x + cell / 2, y + cell / 2 + (li - (lines.length - 1) / 2) * 14 + 4, t,
        {"text-anchor": "middle", fill: ink, "font-weight": w, "font-size": 12})));
    }
    for (let i = 0; i < k; i++) {
      const y = top + i * cell + cell / 2;
      svg.append(svgText(left - 6, y, cats[i] + (g.significant[i] ? " *" : ""), {"text-anchor": "end", "font-weight": g.significant[i] ? 700 : 400}));
      svg.append(svgText(left - 6, y + 13, "n = " + rows[i], {"text-anchor": "end", fill: "#656d76", "font-size": 10}));
    }
    for (let j = 0; j < k; j++) {
      const x = left + j * cell + cell / 2, y = top + k * cell + 12;
      const rot = `rotate(-35 ${x} ${y})`, bold = g.significant[j] ? 700 : 400;
      svg.append(svgText(x, y, cats[j] + (g.significant[j] ? " *" : ""), {"text-anchor": "end", transform: rot, "font-size": 11, "font-weight": bold}));
      svg.append(svgText(x + 8, y + 11, "n = " + cols[j] + ", " + pp(g.change[j]), {"text-anchor": "end", transform: rot, "font-size": 10, fill: "#656d76"}));
    }
    svg.append(svgText(left, top - 6, "rows: " + c.label_a + " (A)  ·  columns: " + c.label_b + " (B)  ·  colour: % of row", {"font-size": 11, fill: "#656d76"}));
    const barX = left + k * cell + 14, barH = k * cell, steps = 40;
    for (let t = 0; t < steps; t++) svg.append(sv("rect", {x: barX, y: top + barH - (t + 1) * barH / steps, width: 12, height: barH / steps + 0.5, fill: ramp(BLUES, (t + 0.5) / steps)}));
    for (let t = 0; t <= 4; t++) svg.append(svgText(barX + 16, top + barH - t / 4 * barH + 4, (25 * t) + "%", {"font-size": 10}));
    fig.append(svg);
    const wrap = el("div", {cls: "figrow"});
    wrap.append(fig);
    const info = el("div");
    info.append(el("p", {cls: "small", text: "Data: " + (g.mcnemar_data || "training dynamics") + " (the recorded training examples, not a test set)" +
      (g.pooled_over ? "; counts pooled over " + g.pooled_over : "") + "."}));
    info.append(el("p", {text: "Final train-pass accuracy " + fmt(g.accuracy_a) + " → " + fmt(g.accuracy_b) + "; McNemar p = " +
      pfmt(g.mcnemar_p) + " (" + g.mcnemar_method + "; " + g.mcnemar_b + " correct only in A, " + g.mcnemar_c + " only in B)."}));
    const stab = g.stability || {};
    if (stab.a || stab.b) info.append(el("p", {cls: "small", text: "Seed agreement on the shared examples — A: " +
      (stab.a && stab.a.kappa !== null && stab.a.kappa !== undefined ? "kappa " + fmt(stab.a.kappa, 2) + ", agreement " + fmt(stab.a.agreement, 2) : "one seed") +
      "; B: " + (stab.b && stab.b.kappa !== null && stab.b.kappa !== undefined ? "kappa " + fmt(stab.b.kappa, 2) + ", agreement " + fmt(stab.b.agreement, 2) : "one seed") + "."}));
    // a note the reseeding-null block below repeats is shown there only
    for (const n of (c.notes || [])) if (!(g.seed_null && g.seed_null.note === n)) info.append(el("p", {cls: "notes", text: n}));
    if (c.n_only_a || c.n_only_b) info.append(el("p", {cls: "small", text: "Not shared: " + c.n_only_a + " only in A, " + c.n_only_b + " only in B."}));
    const trs = cats.map((name, i) => ({cls: g.significant[i] ? "sig" : null, cells: [name, pct(g.share_a[i]), pct(g.share_b[i]), pp(g.change[i]),
      g.lo[i] === null || g.lo[i] === undefined ? "–" : "[" + pp(g.lo[i]) + ", " + pp(g.hi[i]) + "]", g.significant[i] ? "yes" : ""]}));
    info.append(table(["category", "share A", "share B", "change", Math.round(100 * (c.level || 0.95)) + "% CI", "CI excludes 0"], trs,
      {num: [1, 2, 3], id: "share-change-table"}));
    if (g.share_change_method) info.append(el("p", {cls: "small", text: "Share-change intervals: " + g.share_change_method + "."}));
    wrap.append(info);
    return wrap;
  }

  // ------------------------------------------------------------------------------------------- seed stability
  const DIVERGING = ["#b2182b", "#ef8a62", "#fddbc7", "#f7f7f7", "#d1e5f0", "#67a9cf", "#2166ac"];
  function fmtOpt(x, d) { return x === null || x === undefined ? "–" : fmt(x, d); }
  function stability() {
    const s = section("stability", "Seed stability",
      "Training dynamics: how often the seeds of one run agree on an example's SOI category. Per example, stability = share of " +
      "the seeds in its modal category (1 = all seeds agree); per group, Fleiss' kappa and mean pairwise agreement (Fleiss, 1971). " +
      "Low stability means a single seed's category is mostly reseeding noise.");
    const sets = D.stability || [];
    if (!sets.length) {
      s.append(el("p", {cls: "empty-note", id: "stability-note", text: "One seed per run: agreement between seeds needs >= 2 seeds of a run."}));
      return s;
    }
    const row = el("div", {cls: "figrow"});
    for (const st of sets) row.append(stabilityHist(st));
    s.append(row);
    const keys = [["all", "all examples"]].concat(GROUP_KEYS.filter((k) => sets.some((st) => st.groups[k] && Object.keys(st.groups[k]).length > 1))
      .map((k) => [k, "per " + k]));
    let key = "all";
    const holder = el("div");
    const draw = () => {
      holder.textContent = "";
      const rows = [];
      for (const st of sets) for (const g in (st.groups[key] || {})) {
        const v = st.groups[key][g];
        rows.push([st.name, key === "all" ? "all" : key + " = " + g, v.n, st.n_seeds, fmtOpt(v.mean_stability), fmtOpt(v.agreement), fmtOpt(v.kappa)]);
      }
      holder.append(table(["run", "group", "examples", "seeds", "mean stability", "agreement (Fleiss P̄)", "Fleiss' kappa"], rows,
        {num: [2, 3, 4, 5, 6], id: "stability-table"}));
    };
    s.append(el("div", {cls: "controls"}, [labelled("groups", select(keys, key, (v) => { key = v; draw(); }, {id: "stability-key"}))]));
    s.append(holder);
    draw();
    return s;
  }
  function stabilityHist(st) {
    const S = st.n_seeds, n = st.n, all = (st.groups.all || {}).all || {};
    const fig = figure("stability", st.name + " · " + S + " seeds · mean stability " + fmtOpt(all.mean_stability, 2) +
      " · kappa " + fmtOpt(all.kappa, 2));
    fig.dataset.run = st.name;
    const left = 44, top = 8, W = Math.max(200, 46 * S), H = 150, bw = W / S;
    const shares = st.hist.map((c) => n ? c / n : 0), yMax = Math.min(1, Math.ceil(Math.max(0.05, ...shares) * 10 - 1e-9) / 10);
    const svg = sv("svg", {width: left + W + 10, height: top + H + 40});
    svg.append(sv("rect", {x: left, y: top, width: W, height: H, fill: "none", stroke: "#d0d7de", "data-plot": "1"}));
    for (const t of niceTicks(0, yMax, 4)) {
      const y = top + H - t / yMax * H;
      svg.append(sv("line", {x1: left, x2: left + W, y1: y, y2: y, stroke: "#eef1f4"}));
      svg.append(svgText(left - 4, y + 4, pct(t, 0), {"text-anchor": "end", "font-size": 10}));
    }
    shares.forEach((v, i) => {
      const h = v / yMax * H, x = left + i * bw + 3;
      svg.append(titled(sv("rect", {x: x, y: top + H - h, width: bw - 6, height: h, fill: "#4292c6"}),
        st.name + ": " + st.hist[i] + " examples (" + pct(v) + ") with " + (i + 1) + " of " + S + " seeds in the modal category"));
      svg.append(svgText(x + (bw - 6) / 2, top + H + 14, (i + 1) + "/" + S, {"text-anchor": "middle", "font-size": 10}));
    });
    svg.append(svgText(left + W / 2, top + H + 32, "seeds in the modal category", {"text-anchor": "middle", "font-size": 10, fill: "#656d76"}));
    fig.append(svg);
    if (st.sampled) fig.append(el("div", {cls: "small", text: "on a sample of " + n.toLocaleString() + " examples (runs read out of core)"}));
    else if (st.n_not_in_every_seed) fig.append(el("div", {cls: "small", text: st.n_not_in_every_seed + " examples not in every seed left out"}));
    return fig;
  }

  // ------------------------------------------------------------------------------------------- reseeding null
  function nullHeatmap(panel, caption, M, cats, scale, sig, tip, rowLabels) {
    const k = cats.length, cell = 46, left = rowLabels ? 140 : 48, top = 8;
    const fig = figure("seed-null", caption);
    fig.dataset.panel = panel;
    const svg = sv("svg", {width: left + k * cell + 10, height: top + k * cell + 104});
    svg.append(sv("rect", {x: left, y: top, width: k * cell, height: k * cell, fill: "none", stroke: "none", "data-plot": "1"}));
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) {
      const v = M[i][j], x = left + j * cell, y = top + i * cell;
      const t = scale.diverging ? (scale.max > 0 ? (v / scale.max + 1) / 2 : 0.5) : (scale.max > 0 ? v / scale.max : 0);
      const fill = scale.diverging ? ramp(DIVERGING, t) : ramp(BLUES, t);
      const mark = sig && sig[i][j];
      svg.append(titled(sv("rect", {x: x, y: y, width: cell - 1, height: cell - 1, fill: fill}), tip(i, j)));
      const ink = scale.diverging ? (Math.abs(t - 0.5) > 0.33 ? "#ffffff" : "#1f2328") : inkOn(t);
      const txt = (scale.diverging ? (v >= 0 ? "+" : "") + (100 * v).toFixed(1) : (100 * v).toFixed(1)) + (mark ? " *" : "");
      svg.append(svgText(x + cell / 2, y + cell / 2 + 4, txt, {"text-anchor": "middle", fill: ink, "font-size": 10.5, "font-weight": mark ? 700 : 400}));
      if (mark) svg.append(sv("rect", {x: x + 1.5, y: y + 1.5, width: cell - 4, height: cell - 4, fill: "none", stroke: "#1f2328",
        "stroke-width": 2.5, "data-sig": cats[i] + " -> " + cats[j]}));
    }
    if (rowLabels) for (let i = 0; i < k; i++) svg.append(svgText(left - 6, top + i * cell + cell / 2 + 4, cats[i], {"text-anchor": "end", "font-size": 11}));
    for (let j = 0; j < k; j++) {
      const x = left + j * cell + cell / 2, y = top + k * cell + 12;
      svg.append(svgText(x, y, cats[j], {"text-anchor": "end", transform: `rotate(-35 ${x} ${y})`, "font-size": 11}));
    }
    fig.append(svg);
    return fig;
  }
  function seedNullView(c, g) {
    const wrap = el("div", {cls: "seed-null", "data-comparison": c.a + "__vs__" + c.b});
    wrap.append(el("h3", {text: "Reseeding null: transitions beyond seed-to-seed noise (training dynamics)"}));
    const sn = g.seed_null;
    if (!sn) {
      wrap.append(el("p", {cls: "notes", "data-null-note": "1", text: "This stats.json has no reseeding null (written by an older soi); re-run soi compare on seed folders."}));
      return wrap;
    }
    const cats = c.categories, o = sn.overall || {};
    if (sn.between && sn.within && sn.excess) wrap.append(el("p", {cls: "help", text: "Shares of the group's " + (sn.n || g.n_shared).toLocaleString() + " examples. Observed: A seed vs B seed " +
      "(pooled over seed pairs); within-seed null: two seeds of the same setting; excess = observed − null. * and a frame: BH q ≤ " +
      (sn.alpha === null || sn.alpha === undefined ? "α" : sn.alpha) + " (per-cell tests over seeds and examples). Seeds: A " +
      ((g.seeds && g.seeds.a) || c.seeds_a || []).join(", ") + "; B " + ((g.seeds && g.seeds.b) || c.seeds_b || []).join(", ") + "."}));
    const note = o.p_value === null || o.p_value === undefined ? (o.note || sn.note) : null;
    if (o.p_value !== null && o.p_value !== undefined) {
      wrap.append(el("p", {cls: "null-test", text: "Global test that the setting changes the category distribution beyond reseeding noise: " +
        "statistic " + fmtOpt(o.statistic, 4) + (o.statistic_name ? " (" + o.statistic_name + ")" : "") + ", p = " + pfmt(o.p_value) +
        (o.significant ? " (significant)" : "") + " — " + (o.method || "") + "." +
        (o.permutation_p !== null && o.permutation_p !== undefined ? " Run-label permutation: p = " + pfmt(o.permutation_p) + "." :
          (o.permutation_note ? " Run-label permutation: " + o.permutation_note + "." : ""))}));
    }
    if (note) wrap.append(el("p", {cls: "notes", "data-null-note": "1", text: note}));
    if (!sn.between || !sn.within || !sn.excess) return wrap;
    const vmax = Math.max(...sn.between.flat(), ...sn.within.flat());
    const emax = Math.max(1e-4, ...sn.excess.flat().map(Math.abs));
    const sig = sn.significant;
    const tip = (i, j) => {
      let t = cats[i] + " → " + cats[j] + ": observed " + pct(sn.between[i][j], 2) + ", reseeding null " + pct(sn.within[i][j], 2) +
        ", excess " + pp(sn.excess[i][j]);
      if (sn.lo && sn.lo[i][j] !== null) t += " [" + pp(sn.lo[i][j]) + ", " + pp(sn.hi[i][j]) + "], q = " + pfmt(sn.q_value[i][j]);
      return t;
    };
    const row = el("div", {cls: "figrow"});
    row.append(nullHeatmap("within", "within-seed null (% of examples)", sn.within, cats, {max: vmax}, null, tip, true),
      nullHeatmap("observed", "observed A → B (% of examples)", sn.between, cats, {max: vmax}, sig, tip, false),
      nullHeatmap("excess", "excess = observed − null (pp)", sn.excess, cats, {max: emax, diverging: true}, sig, tip, false));
    wrap.append(row);
    const cells = [];
    for (let i = 0; i < cats.length; i++) for (let j = 0; j < cats.length; j++) cells.push([i, j]);
    cells.sort((u, v) => Math.abs(sn.excess[v[0]][v[1]]) - Math.abs(sn.excess[u[0]][u[1]]));
    // every flagged cell, then the largest other excesses, up to 8 rows
    const flagged = cells.filter(([i, j]) => sig[i][j]);
    const shown = flagged.concat(cells.filter(([i, j]) => !sig[i][j] && sn.excess[i][j] !== 0).slice(0, Math.max(0, 8 - flagged.length)));
    const lvl = Math.round(100 * (sn.level || c.level || 0.95));
    wrap.append(table(["transition", "observed", "reseeding null", "excess", lvl + "% CI", "q (BH)", "significant"], shown.map(([i, j]) => ({
      cls: sig[i][j] ? "sig" : null,
      cells: [cats[i] + " → " + cats[j], pct(sn.between[i][j], 2), pct(sn.within[i][j], 2), pp(sn.excess[i][j]),
        sn.lo && sn.lo[i][j] !== null ? "[" + pp(sn.lo[i][j]) + ", " + pp(sn.hi[i][j]) + "]" : "–",
        sn.q_value ? pfmt(sn.q_value[i][j]) : "–", sig[i][j] ? "yes" : ""]})), {num: [1, 2, 3, 5], id: "seed-null-table"}));
    return wrap;
  }

  // ------------------------------------------------------------------------------------------- test-set differences
  function testSet() {
    const s = section("test-set", "Test-set differences",
      "Data: test set — held-out eval items predicted by the trained models (seed-*/eval/<key>.parquet), not the training dynamics above. " +
      "Accuracy difference B − A (seed means) with its interval and p-value: with ≥ 2 seeds per side a t-test over seeds and items " +
      "(a seed's luck, shared by all its items, counts as noise; \"CI over items and seeds\"), with 1 seed per side McNemar's test " +
      "(\"1 seed: CI over items only\"). Red / \"yes\": p ≤ alpha. McNemar per seed pair is descriptive; the clustered McNemar over the " +
      "seed pairs is item-level (conditional on these seeds) and is not the flag.");
    const comps = D.comparisons.filter((c) => c.test_set && c.test_set.length);
    if (!comps.length) {
      s.append(el("p", {cls: "empty-note", text: "No paired test-set statistics: the compared runs have no per-item eval predictions (seed-*/eval/<key>.parquet)."}));
      return s;
    }
    for (const c of comps) {
      s.append(el("h3", {text: c.a + " → " + c.b + (c.seed !== null && c.seed !== undefined ? " · seed " + c.seed : "")}));
      s.append(testSetForest(c));
      const lvl = Math.round(100 * ((c.test_set[0] && c.test_set[0].level) || c.level || 0.95));
      s.append(table(["eval set", "data", "items", "seed pairs", "acc. A", "acc. B", "B − A", lvl + "% CI", "significant",
        "CI over", "p", "test", "McNemar p (item-level)", "p per seed pair"], c.test_set.map((t) => ({cls: t.significant ? "sig" : null,
        cells: [t.key, t.data, t.n_items, t.mcnemar_pairs === null || t.mcnemar_pairs === undefined ? t.mcnemar_per_seed.length : t.mcnemar_pairs,
          fmtOpt(t.accuracy_a), fmtOpt(t.accuracy_b), t.difference === null || t.difference === undefined ? "–" : pp(t.difference),
          t.lo === null || t.lo === undefined ? "–" : "[" + pp(t.lo) + ", " + pp(t.hi) + "]", t.significant ? "yes" : "",
          ciLabel(t.ci_over), t.p_value === null || t.p_value === undefined ? "–" : pfmt(t.p_value), t.test || "–", pfmt(t.mcnemar_p),
          t.mcnemar_per_seed.map((m) => pfmt(m.p_value)).join(", ") || "–"]})), {num: [2, 3, 4, 5, 6, 10, 12], id: "test-set-table"}));
      const notes = c.test_set.filter((t) => t.note).map((t) => t.key + ": " + t.note);
      for (const n of notes) s.append(el("p", {cls: "small", text: n}));
    }
    return s;
  }
  function ciLabel(over) {
    // soi.analysis.paired.ci_label
    if (over === null || over === undefined) return "–";
    if (over === "items and seeds") return "CI over items and seeds";
    if (over.indexOf("per side") >= 0) return "1 seed: CI over items only";
    if (over.indexOf("on side") >= 0) return "1 seed on side " + over.replace(/\)$/, "").slice(-1) + ": CI over items only";
    return "CI over items only (no seed-to-seed spread)";
  }
  function testSetForest(c) {
    const items = c.test_set.filter((t) => t.difference !== null && t.difference !== undefined);
    const fig = figure("test-set", c.a + " → " + c.b + ": accuracy difference on test data (B − A, " +
      Math.round(100 * ((items[0] && items[0].level) || c.level || 0.95)) + "% CI)");
    const oneSeed = items.some((t) => t.ci_over && t.ci_over !== "items and seeds");
    const rowH = 24, left = oneSeed ? 470 : 300, W = 380, top = 6, H = Math.max(1, items.length) * rowH;
    let lo = 0, hi = 0;
    for (const t of items) { lo = Math.min(lo, t.lo === null ? t.difference : t.lo); hi = Math.max(hi, t.hi === null ? t.difference : t.hi); }
    const pad = Math.max(0.005, (hi - lo) * 0.1);
    lo -= pad; hi += pad;
    const x = (v) => left + (v - lo) / (hi - lo) * W;
    const svg = sv("svg", {width: left + W + 20, height: top + H + 34});
    svg.append(sv("rect", {x: left, y: top, width: W, height: H, fill: "none", stroke: "#d0d7de", "data-plot": "1"}));
    for (const t of niceTicks(lo, hi, 6)) {
      svg.append(sv("line", {x1: x(t), x2: x(t), y1: top, y2: top + H, stroke: Math.abs(t) < 1e-12 ? "#57606a" : "#eef1f4"}));
      svg.append(svgText(x(t), top + H + 14, pp(t), {"text-anchor": "middle", "font-size": 10}));
    }
    items.forEach((t, i) => {
      const cy = top + i * rowH + rowH / 2, col = t.significant ? "#cf222e" : "#0969da";
      svg.append(svgText(left - 6, cy + 4, t.key + " · test set, n = " + t.n_items + " items" +
        (t.ci_over && t.ci_over !== "items and seeds" ? " (" + ciLabel(t.ci_over) + ")" : ""), {"text-anchor": "end"}));
      if (t.lo !== null && t.lo !== undefined) svg.append(sv("line", {x1: x(t.lo), x2: x(t.hi), y1: cy, y2: cy, stroke: col, "stroke-width": 2}));
      svg.append(titled(sv("rect", {x: x(t.difference) - 4, y: cy - 4, width: 8, height: 8, fill: col}),
        t.key + " (test set): " + pp(t.difference) + (t.lo !== null && t.lo !== undefined ? " [" + pp(t.lo) + ", " + pp(t.hi) + "] " +
          ciLabel(t.ci_over) : "") + (t.p_value !== null && t.p_value !== undefined ? ", p = " + pfmt(t.p_value) + " (" + t.test + ")" : "")));
    });
    fig.append(svg);
    return fig;
  }

  // ------------------------------------------------------------------------------------------- example browser
  function browser() {
    const s = section("examples", "Example browser",
      "Filter the examples by run, group, SOI category, metric ranges and text (id or text, case-insensitive); click a column " +
      "header to sort. The trace is the gold-label probability at each checkpoint (dashed line: 0.5).");
    if (!EX.n) { s.append(el("p", {cls: "empty-note", text: "No examples."})); return s; }
    if (X.n < X.n_total) s.append(el("p", {cls: "notes", text: "The page holds a seeded sample of " + X.n.toLocaleString() +
      " of the " + X.n_total.toLocaleString() + " examples (report --max-examples)."}));
    const f = {run: "", soi: "", correct: "", q: "", groups: {}, ranges: {}};
    const st = {sort: null, dir: 1, page: 0, rows: new Int32Array(0)};
    const ctl = el("div", {cls: "controls"});
    let timer = null;
    const refresh = (delay) => { clearTimeout(timer); if (delay) timer = setTimeout(apply, delay); else apply(); };
    ctl.append(labelled("run", select([["", "all runs"], ...RUNS.map((r) => [r.id, runLabel(r)])], "", (v) => { f.run = v; refresh(); }, {id: "filter-run"})));
    for (const k of GROUP_KEYS) {
      const dict = EX.dicts[k] || [];
      if (dict.length < 2) continue;
      const opts = [["", "any"]];
      dict.forEach((name, i) => opts.push([i, name || "(none)"]));
      ctl.append(labelled(k, select(opts, "", (v) => { f.groups[k] = v; refresh(); }, {id: "filter-" + k})));
    }
    ctl.append(labelled("SOI", select([["", "any"], ...CATS.map((c, i) => [i, c])], "", (v) => { f.soi = v; refresh(); }, {id: "filter-soi"})));
    ctl.append(labelled("final", select([["", "any"], ["1", "correct"], ["0", "wrong"]], "", (v) => { f.correct = v; refresh(); }, {id: "filter-correct"})));
    const search = el("input", {type: "search", id: "filter-text", placeholder: "search id or text"});
    search.addEventListener("input", () => { f.q = search.value.trim().toLowerCase(); refresh(150); });
    ctl.append(labelled("text", search));
    s.append(ctl);
    const ranges = el("div", {cls: "ranges"});
    for (const m of D.metrics) {
      const mk = (which) => {
        const inp = el("input", {type: "number", step: "any", id: "range-" + m + "-" + which, placeholder: which});
        inp.addEventListener("input", () => {
          const v = inp.value === "" ? null : Number(inp.value);
          f.ranges[m] = Object.assign(f.ranges[m] || {}, {[which]: v});
          refresh(200);
        });
        return inp;
      };
      ranges.append(el("label", null, [METRIC_LABELS[m] + " ", mk("min"), " – ", mk("max")]));
    }
    s.append(el("details", null, [el("summary", {text: "metric ranges", id: "ranges-toggle"}), ranges]));
    const count = el("span", {id: "browser-count", "data-count": "0"});
    const pageInfo = el("span", {id: "browser-page"});
    const prev = el("button", {text: "◀ previous", id: "browser-prev", onclick: () => { if (st.page > 0) { st.page--; render(); } }});
    const next = el("button", {text: "next ▶", id: "browser-next", onclick: () => { if ((st.page + 1) * PAGE < st.rows.length) { st.page++; render(); } }});
    s.append(el("div", {cls: "pager"}, [count, prev, pageInfo, next]));
    const cols = [["run", "run", null], ["id", "id", "id"], ["task", "task", null], ["language", "lang", null], ["gold", "gold", null],
      ["soi", "SOI", "soi"], ["correct", "final", "correct"], ["confidence", "conf.", "confidence"], ["variability", "var.", "variability"],
      ["correctness_frac", "corr.", "correctness_frac"], ["forgetting_events", "forget", "forgetting_events"], ["aum", "AUM", "aum"],
      ["mean_loss", "loss", "mean_loss"], ["trace", "p(gold) trace", null]].concat(EX.text ? [["text", "text", null]] : []);
    const thead = el("tr");
    const ths = {};
    for (const [key, label, sortKey] of cols) {
      const th = el("th", {text: label, cls: sortKey ? "sortable" : null, "data-col": key});
      if (sortKey) th.addEventListener("click", () => {
        if (st.sort === sortKey) st.dir = -st.dir; else { st.sort = sortKey; st.dir = sortKey === "id" ? 1 : -1; }
        for (const k in ths) ths[k].classList.remove("sorted-asc", "sorted-desc");
        th.classList.add(st.dir > 0 ? "sorted-asc" : "sorted-desc");
        sortRows(); st.page = 0; render();
      });
      ths[key] = th;
      thead.append(th);
    }
    const tbody = el("tbody");
    s.append(el("div", {cls: "browser-wrap", id: "browser-wrap"}, [el("table", {cls: "data", id: "browser-table"}, [el("thead", null, [thead]), tbody])]));
    let hay = null;
    function haystack() {
      if (!hay) {
        hay = new Array(EX.n);
        for (let i = 0; i < EX.n; i++) hay[i] = (EX.ids[i] + "\u0001" + (EX.text ? EX.text[i] : "")).toLowerCase();
      }
      return hay;
    }
    function apply() {
      const C = EX.col, out = new Int32Array(EX.n);
      const run = f.run === "" ? -1 : +f.run, soi = f.soi === "" ? -1 : +f.soi, cor = f.correct === "" ? -1 : +f.correct;
      const gk = GROUP_KEYS.filter((k) => f.groups[k] !== undefined && f.groups[k] !== "").map((k) => [C[k], +f.groups[k]]);
      const rg = D.metrics.filter((m) => f.ranges[m] && (f.ranges[m].min !== null && f.ranges[m].min !== undefined ||
        f.ranges[m].max !== null && f.ranges[m].max !== undefined)).map((m) => [C[m], f.ranges[m].min, f.ranges[m].max]);
      const q = f.q, H = q ? haystack() : null;
      let n = 0;
      outer: for (let i = 0; i < EX.n; i++) {
        if (run >= 0 && C.run[i] !== run) continue;
        if (soi >= 0 && C.soi[i] !== soi) continue;
        if (cor >= 0 && C.correct[i] !== cor) continue;
        for (const [arr, v] of gk) if (arr[i] !== v) continue outer;
        for (const [arr, a, b] of rg) {
          if (a !== null && a !== undefined && !(arr[i] >= a)) continue outer;
          if (b !== null && b !== undefined && !(arr[i] <= b)) continue outer;
        }
        if (H && H[i].indexOf(q) < 0) continue;
        out[n++] = i;
      }
      st.rows = out.slice(0, n);
      sortRows();
      st.page = 0;
      render();
    }
    function sortRows() {
      if (!st.sort) return;
      const dir = st.dir;
      const arr = Array.from(st.rows);
      if (st.sort === "id") arr.sort((a, b) => dir * (EX.ids[a] < EX.ids[b] ? -1 : EX.ids[a] > EX.ids[b] ? 1 : a - b));
      else { const v = EX.col[st.sort]; arr.sort((a, b) => dir * (v[a] - v[b]) || a - b); }
      st.rows = Int32Array.from(arr);
    }
    function spark(i) {
      const r = RUNS[EX.col.run[i]], e = r.trace_checkpoints;
      const s = sv("svg", {width: 84, height: 22});
      s.setAttribute("class", "spark");
      if (!e) return s;
      const base = r.trace_start + (i - r.row_start) * e, pts = [];
      for (let j = 0; j < e; j++) pts.push([2 + (e === 1 ? 40 : j * 80 / (e - 1)), 20 - EX.trace[base + j] * 18]);
      s.append(sv("line", {x1: 2, x2: 82, y1: 11, y2: 11, stroke: "#d0d7de", "stroke-dasharray": "2 2"}));
      s.append(sv("polyline", {points: pts.map((p) => p[0].toFixed(1) + "," + p[1].toFixed(1)).join(" "), fill: "none", stroke: "#57606a", "stroke-width": 1.3}));
      const last = pts[pts.length - 1];
      s.append(sv("circle", {cx: last[0], cy: last[1], r: 2.5, fill: CORRECT_COLOURS[EX.col.correct[i]]}));
      const vals = [];
      for (let j = 0; j < e; j++) vals.push(EX.trace[base + j].toFixed(2));
      titled(s, "p(gold) per checkpoint: " + vals.join(", "));
      return s;
    }
    function render() {
      const n = st.rows.length, C = EX.col;
      count.textContent = n.toLocaleString() + " matching example" + (n === 1 ? "" : "s");
      count.dataset.count = String(n);
      const pages = Math.max(1, Math.ceil(n / PAGE));
      pageInfo.textContent = "page " + (st.page + 1) + " of " + pages;
      prev.disabled = st.page === 0; next.disabled = (st.page + 1) * PAGE >= n;
      tbody.textContent = "";
      const frag = document.createDocumentFragment();
      for (let p = st.page * PAGE; p < Math.min(n, (st.page + 1) * PAGE); p++) {
        const i = st.rows[p], r = RUNS[C.run[i]];
        const tr = el("tr", {"data-row": i});
        const cat = C.soi[i];
        const soiCell = el("td", null, [el("span", {cls: "cat-dot", style: "background:" + CAT_COLOURS[cat]}), CATS[cat]]);
        const cells = [runLabel(r), EX.ids[i], EX.dicts.task[C.task[i]], EX.dicts.language[C.language[i]], EX.dicts.gold[C.gold[i]]];
        cells.forEach((v, j) => tr.append(el("td", {text: v, cls: j === 1 ? "id" : null})));
        tr.append(soiCell);
        tr.append(el("td", {text: C.correct[i] ? "✓" : "✗", cls: C.correct[i] ? "ok" : "bad"}));
        for (const m of D.metrics) tr.append(el("td", {cls: "num", text: m === "forgetting_events" ? String(C[m][i]) : fmt(C[m][i])}));
        tr.append(el("td", null, [spark(i)]));
        if (EX.text) tr.append(el("td", {cls: "text", text: EX.text[i]}));
        frag.append(tr);
      }
      tbody.append(frag);
    }
    apply();
    return s;
  }

  // ------------------------------------------------------------------------------------------- two-stage
  function twoStage() {
    const TS = D.two_stage;
    const s = section("two-stage", "Two-stage training",
      "Stage 2 continues from a stage-1 run on a selected subset (SOI rule) against controls; each arm's score is the mean over " +
      "seeds with a 95% confidence interval; differences are paired over seeds.");
    const exps = (TS && TS.experiments) || [];
    if (!exps.length) { s.append(el("p", {cls: "empty-note", text: "No two-stage experiments."})); return s; }
    exps.forEach((ex, xi) => {
      s.append(el("h3", {text: ex.name}));
      s.append(el("p", {cls: "help", text: "from run " + ex.from_run + "; rule: " + ex.rule + "; stage 2: " + ex.stage2_epochs +
        " epoch(s), " + ex.stage2_steps + " step(s)"}));
      for (const note of (ex.notes || [])) s.append(el("p", {cls: "small", text: note}));
      let metric = "accuracy";
      const holder = el("div");
      const draw = () => { holder.textContent = ""; holder.append(forest(ex, metric, xi)); };
      s.append(el("div", {cls: "controls"}, [labelled("metric", select([["accuracy", "accuracy"], ["macro_f1", "macro-F1"]], metric,
        (v) => { metric = v; draw(); }))]));
      s.append(holder);
      draw();
      const arms = Object.keys(ex.arms || {});
      const evals = [];
      for (const a of arms) for (const k in (ex.arms[a].eval || {})) if (!evals.includes(k)) evals.push(k);
      const rows = arms.map((a) => [a, ex.arms[a].kind, ex.arms[a].n_train].concat(evals.map((k) => {
        const m = ex.arms[a].eval[k] && ex.arms[a].eval[k].accuracy;
        return m ? fmt(m.mean) + (m.ci95 ? " [" + fmt(m.ci95[0]) + ", " + fmt(m.ci95[1]) + "]" : "") : "–";
      })));
      s.append(table(["arm", "kind", "n train"].concat(evals.map((k) => k + " accuracy [95% CI]")), rows, {num: [2]}));
      const diffs = ex.differences || [];
      if (diffs.length) {
        s.append(table(["arm − control", "eval", "metric", "mean difference", "95% CI", "CI excludes 0"], diffs.map((d) => {
          const sig = d.ci95 && (d.ci95[0] > 0 || d.ci95[1] < 0);
          return {cls: sig ? "sig" : null, cells: [d.arm + " − " + d.control, d.eval, d.metric, (d.mean >= 0 ? "+" : "") + fmt(d.mean),
            d.ci95 ? "[" + fmt(d.ci95[0]) + ", " + fmt(d.ci95[1]) + "]" : "–", sig ? "yes" : ""]};
        }), {num: [3]}));
      }
    });
    return s;
  }
  function forest(ex, metric, xi) {
    const arms = Object.keys(ex.arms || {});
    const evals = [];
    for (const a of arms) for (const k in (ex.arms[a].eval || {})) if (!evals.includes(k)) evals.push(k);
    const items = [];
    for (const k of evals) for (const a of arms) {
      const e = ex.arms[a].eval[k];
      if (e && e[metric]) items.push({k: k, a: a, kind: ex.arms[a].kind, m: e[metric], ood: e.kind === "ood"});
    }
    const fig = figure("two-stage", ex.name + ": " + (metric === "accuracy" ? "accuracy" : "macro-F1") + " per arm (mean, 95% CI)");
    fig.dataset.experiment = String(xi);
    const rowH = 18, left = 230, W = 420, top = 6, H = items.length * rowH + evals.length * 6;
    let lo = Infinity, hi = -Infinity;
    for (const it of items) {
      const a = it.m.ci95 ? it.m.ci95[0] : it.m.mean, b = it.m.ci95 ? it.m.ci95[1] : it.m.mean;
      lo = Math.min(lo, a); hi = Math.max(hi, b);
    }
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    const pad = Math.max(0.01, (hi - lo) * 0.1);
    lo -= pad; hi += pad;
    const x = (v) => left + (v - lo) / (hi - lo) * W;
    const svg = sv("svg", {width: left + W + 20, height: top + H + 34});
    svg.append(sv("rect", {x: left, y: top, width: W, height: H, fill: "none", stroke: "#d0d7de", "data-plot": "1"}));
    for (const t of niceTicks(lo, hi, 6)) {
      svg.append(sv("line", {x1: x(t), x2: x(t), y1: top, y2: top + H, stroke: "#eef1f4"}));
      svg.append(svgText(x(t), top + H + 14, fmt(t, 3), {"text-anchor": "middle", "font-size": 10}));
    }
    const kindCol = {soi: "#cf222e", random: "#57606a", full: "#0969da", stage1: "#8250df"};
    let y = top + 3, prev = null;
    for (const it of items) {
      if (prev !== null && prev !== it.k) y += 6;
      prev = it.k;
      const cy = y + rowH / 2, col = kindCol[it.kind] || "#1f2328";
      svg.append(svgText(left - 6, cy + 4, it.k + " · " + it.a, {"text-anchor": "end"}));
      if (it.m.ci95) svg.append(sv("line", {x1: x(it.m.ci95[0]), x2: x(it.m.ci95[1]), y1: cy, y2: cy, stroke: col, "stroke-width": 2}));
      svg.append(titled(sv("rect", {x: x(it.m.mean) - 4, y: cy - 4, width: 8, height: 8, fill: col}),
        it.a + " on " + it.k + ": " + fmt(it.m.mean) + (it.m.ci95 ? " [" + fmt(it.m.ci95[0]) + ", " + fmt(it.m.ci95[1]) + "]" : "")));
      y += rowH;
    }
    fig.append(legend(Object.keys(kindCol).map((k) => ({colour: kindCol[k], label: k}))));
    fig.append(svg);
    return fig;
  }

  // ------------------------------------------------------------------------------------------- transfer
  function transfer() {
    const TR = D.transfer;
    const s = section("transfer", "Cross-lingual transfer",
      "Score per language against k (examples of the language in training): seen languages solid, unseen dashed; " +
      "the heatmap shows every language x k.");
    const tasks = TR ? Object.keys(TR) : [];
    if (!tasks.length) { s.append(el("p", {cls: "empty-note", text: "No transfer results."})); return s; }
    for (const task of tasks) {
      const t = TR[task];
      s.append(el("h3", {text: task + " (" + (t.metric || "score") + ")"}));
      let value = "score";
      const row = el("div", {cls: "figrow"});
      const hm = el("div");
      const draw = () => { hm.textContent = ""; hm.append(transferHeatmap(task, t, value)); };
      row.append(transferCurves(task, t), hm);
      s.append(el("div", {cls: "controls"}, [labelled("heatmap", select([["score", "score"], ["gain", "gain over k = " + (t.ks || [])[0]]],
        value, (v) => { value = v; draw(); }))]));
      s.append(row);
      draw();
      const ks = (t.ks || []).map(String);
      const rows = [["seen mean"].concat(ks.map((k) => fmt((t.seen_mean || {})[k]))),
        ["unseen mean"].concat(ks.map((k) => fmt((t.unseen_mean || {})[k]))),
        ["gap (seen − unseen)"].concat(ks.map((k) => fmt((t.gap || {})[k])))];
      s.append(table(["k"].concat(ks), rows, {num: ks.map((_, i) => i + 1)}));
      const st = (D.transfer_stats || {})[task];
      if (st) s.append(transferStats(st));
    }
    if (D.by_model) s.append(transferByModel(D.by_model));
    if (D.multitask && Object.keys(D.multitask).length) s.append(multitaskTable(D.multitask));
    return s;
  }
  function multitaskTable(mt) {
    const box = el("div", {cls: "transfer-multitask"});
    box.append(el("h3", {text: "Multi-task against single-task runs"}));
    for (const [key, m] of Object.entries(mt)) {
      box.append(el("p", {text: key + ": " + m.metric + ", " + m.multi + " − " + m.single + " on the " + m.data +
        " (" + Math.round(100 * m.level) + "% intervals, " + m.n_seeds + " seed(s)); * = the interval excludes 0"}));
      const rows = [];
      for (const [k, langs] of Object.entries(m.k))
        for (const [name, v] of Object.entries(langs))
          rows.push([k, name, fmt(v.single.mean), fmt(v.multi.mean), ciText(v.difference, true)]);
      box.append(table(["k", "language", "single", "multi-task", "difference"], rows, {num: [0, 2, 3]}));
    }
    return box;
  }
  function ciText(v, flag) {
    if (!v) return "–";
    const star = flag && v.significant ? " *" : "";
    return fmt(v.mean) + " [" + fmt(v.lo) + ", " + fmt(v.hi) + "]" + star;
  }
  function transferStats(st) {
    // soi.analysis.transfer: gains over k = 0 with intervals (test set), group means, gap, trend, plateau
    const box = el("div", {cls: "transfer-stats"});
    const ks = (st.ks || []).map(String), lvl = Math.round(100 * (st.level || 0.95));
    box.append(el("p", {cls: "note", text: "Gain over k = 0 with " + lvl + "% intervals on the " + st.data +
      " (" + st.method + "; " + st.n_seeds + " seed(s)); * = the interval excludes 0." +
      ((st.notes || []).length ? " " + st.notes.join(" ") : "")}));
    const rows = [];
    const add = (name, group, b) => rows.push([name, group].concat(ks.slice(1).map((k) => ciText(b.gain[k], true)),
      [b.plateau && b.plateau.k !== null ? b.plateau.k + " [" + (b.plateau.lo ?? "–") + ", " + (b.plateau.hi ?? "–") + "]" : "–"]));
    for (const [lang, lv] of Object.entries(st.languages || {})) add(lang, lv.group, lv);
    for (const [g, gv] of Object.entries(st.groups || {})) add(g + " mean", g, gv);
    if (st.gap) rows.push(["gap (seen − unseen)", ""].concat(ks.slice(1).map((k) => ciText(st.gap[k], true)), ["–"]));
    box.append(table(["language", "group"].concat(ks.slice(1).map((k) => "gain at k = " + k), ["plateau k (90% of max)"]), rows));
    const bits = [];
    if (st.gap_slope) bits.push("gap slope per 100 examples: " + ciText({mean: st.gap_slope.per_100, lo: st.gap_slope.lo,
      hi: st.gap_slope.hi, significant: st.gap_slope.significant}, true));
    if (st.correlation) bits.push("seen–unseen correlation over k: r = " + ciText({mean: st.correlation.r, lo: st.correlation.lo,
      hi: st.correlation.hi}, false));
    if (bits.length) box.append(el("p", {text: bits.join("; ")}));
    box.append(transferIntervals(st));
    return box;
  }
  function errorPlot(name, caption, series, xs, xLabel, yLabel, opts) {
    // series: [{label, colour, dash, width, points: [{x (index into xs or a number), v: {mean, lo, hi, significant}}]}]
    const fig = figure(name, caption);
    const left = 52, W = Math.max(260, 90 * xs.length), top = 8, H = 220;
    let lo = Infinity, hi = -Infinity;
    for (const s of series) for (const p of s.points) for (const v of [p.v.mean, p.v.lo, p.v.hi])
      if (v !== null && v !== undefined && Number.isFinite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    if (!Number.isFinite(lo)) { lo = -0.1; hi = 0.1; }
    lo = Math.min(lo, 0); hi = Math.max(hi, 0);
    const pad = Math.max(0.01, (hi - lo) * 0.08);
    lo -= pad; hi += pad;
    const xpos = opts && opts.xpos ? opts.xpos : (j) => (xs.length === 1 ? W / 2 : 16 + j * (W - 32) / (xs.length - 1));
    const x = (j) => left + xpos(j);
    const y = (v) => top + H - (v - lo) / (hi - lo) * H;
    const svg = sv("svg", {width: left + W + 10, height: top + H + 36});
    svg.append(sv("rect", {x: left, y: top, width: W, height: H, fill: "none", stroke: "#8c959f", "data-plot": "1"}));
    for (const tk of niceTicks(lo, hi, 5)) {
      svg.append(sv("line", {x1: left, x2: left + W, y1: y(tk), y2: y(tk), stroke: tk === 0 ? "#8c959f" : "#eef1f4"}));
      svg.append(svgText(left - 5, y(tk) + 3, fmt(tk, 2), {"text-anchor": "end", "font-size": 10}));
    }
    xs.forEach((k, j) => svg.append(svgText(x(j), top + H + 14, String(k), {"text-anchor": "middle", "font-size": 10})));
    svg.append(svgText(left + W / 2, top + H + 30, xLabel, {"text-anchor": "middle", "font-size": 11}));
    svg.append(svgText(12, top + H / 2, yLabel, {"text-anchor": "middle", "font-size": 10, transform: "rotate(-90 12 " + (top + H / 2) + ")"}));
    const n = series.length, items = [];
    series.forEach((s, si) => {
      const off = (si - (n - 1) / 2) * Math.min(4, 40 / Math.max(n, 1));  // small offsets keep the bars apart
      const pts = s.points.filter((p) => p.v && p.v.mean !== null && p.v.mean !== undefined).map((p) => ({px: x(p.x) + off, p: p}));
      if (pts.length > 1) svg.append(sv("polyline", {points: pts.map((q) => q.px + "," + y(q.p.v.mean)).join(" "), fill: "none",
        stroke: s.colour, "stroke-width": s.width || 1.5, "stroke-dasharray": s.dash || null}));
      for (const q of pts) {
        const v = q.p.v;
        if (v.lo !== null && v.lo !== undefined && v.hi !== null && v.hi !== undefined)
          svg.append(sv("line", {x1: q.px, x2: q.px, y1: y(v.lo), y2: y(v.hi), stroke: s.colour, "stroke-width": 1.2, "data-interval": "1"}));
        svg.append(titled(sv("circle", {cx: q.px, cy: y(v.mean), r: v.significant ? 4 : 3, fill: v.significant ? s.colour : "#ffffff",
          stroke: s.colour, "stroke-width": 1.5}), s.label + " at " + xs[q.p.x] + ": " + ciText(v, true)));
      }
      items.push({line: true, colour: s.colour, dash: s.dash, label: s.label});
    });
    fig.append(svg, legend(items));
    return fig;
  }
  function transferIntervals(st) {
    // gain over k = 0 with its interval per language, the group means (thick) and the seen − unseen gap (black)
    const ks = (st.ks || []).map(String), lvl = Math.round(100 * (st.level || 0.95));
    const series = [];
    let i = 0;
    const pts = (block) => ks.map((k, j) => ({x: j, v: block[k]})).filter((p) => p.v);
    for (const [lang, lv] of Object.entries(st.languages || {}))
      series.push({label: lang + " (" + lv.group + ")", colour: SERIES[i++ % SERIES.length],
        dash: lv.group === "unseen" ? "5 4" : lv.group === "other" ? "1.5 3" : null, points: pts(lv.gain)});
    for (const [g, gv] of Object.entries(st.groups || {}))
      series.push({label: g + " mean", colour: g === "seen" ? "#0a3069" : "#953800", width: 3, dash: g === "unseen" ? "5 4" : null,
        points: pts(gv.gain)});
    if (st.gap) series.push({label: "gap (seen − unseen)", colour: "#1f2328", width: 2, dash: "2 2", points: pts(st.gap)});
    return errorPlot("transfer-intervals", "gain in " + st.metric + " over k = 0 with " + lvl + "% intervals (" + st.data +
      "; filled = the interval excludes 0)", series, ks, "k (examples per seen language)", "gain / gap");
  }
  function transferByModel(byModel) {
    const box = el("div", {cls: "transfer-by-model"});
    box.append(el("h3", {text: "Transfer against model size"}));
    for (const [key, pts] of Object.entries(byModel)) {
      box.append(el("p", {text: key + " (gain over k = 0 at the largest k, with intervals; test set)"}));
      const rows = pts.map((p) => [p.model, p.parameters.toLocaleString(), p.k, ciText(p.seen, true), ciText(p.unseen, true), ciText(p.gap, true)]);
      box.append(table(["model", "parameters", "k", "seen mean gain", "unseen mean gain", "gap"], rows, {num: [1, 2]}));
      const sorted = pts.slice().sort((a, b) => a.parameters - b.parameters);
      const labels = sorted.map((p) => p.model);
      const logs = sorted.map((p) => Math.log10(Math.max(p.parameters, 1)));
      const lo = Math.min(...logs), hi = Math.max(...logs), W = Math.max(260, 90 * labels.length);
      const xpos = (j) => (hi === lo ? W / 2 : 48 + (logs[j] - lo) / (hi - lo) * (W - 96));  // log parameter count
      const series = [["seen", "#0a3069", null], ["unseen", "#953800", "5 4"], ["gap", "#1f2328", "2 2"]]
        .filter(([g]) => sorted.some((p) => p[g]))
        .map(([g, colour, dash]) => ({label: g === "gap" ? "gap (seen − unseen)" : g + " mean gain", colour: colour, dash: dash, width: 2,
          points: sorted.map((p, j) => ({x: j, v: p[g]})).filter((q) => q.v)}));
      box.append(errorPlot("transfer-by-model", key + ": transfer against model size (gain over k = 0 at k = " +
        (sorted.length ? sorted[0].k : "–") + ", intervals; test set)", series, labels, "model (parameters, log scale)", "gain / gap",
        {xpos: xpos}));
    }
    return box;
  }
  function transferLangs(t) {
    // languages outside seen/unseen (e.g. the fixed English set) first, as soi.gen.transfer orders them
    const seen = t.seen || [], unseen = t.unseen || [];
    const all = Object.keys(t.scores || {});
    const order = all.filter((l) => !seen.includes(l) && !unseen.includes(l))
      .concat(seen.filter((l) => all.includes(l)), unseen.filter((l) => all.includes(l)));
    return order.map((l) => ({lang: l, unseen: unseen.includes(l), kind: seen.includes(l) ? "seen" : unseen.includes(l) ? "unseen" : "other"}));
  }
  function scoreOf(t, lang, k) {
    const v = (t.scores[lang] || {})[k];
    if (v === null || v === undefined) return null;
    return typeof v === "number" ? v : v.mean;
  }
  function transferCurves(task, t) {
    const ks = (t.ks || []).map(String), langs = transferLangs(t);
    const fig = figure("transfer-curves", task + ": score vs k");
    const left = 48, W = Math.max(240, 90 * ks.length), top = 8, H = 240;
    let lo = Infinity, hi = -Infinity;
    for (const l of langs) for (const k of ks) { const v = scoreOf(t, l.lang, k); if (v !== null) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    const pad = Math.max(0.01, (hi - lo) * 0.08);
    lo = Math.max(0, lo - pad); hi = hi + pad;
    const x = (j) => left + (ks.length === 1 ? W / 2 : 16 + j * (W - 32) / (ks.length - 1));
    const y = (v) => top + H - (v - lo) / (hi - lo) * H;
    const svg = sv("svg", {width: left + W + 10, height: top + H + 36});
    svg.append(sv("rect", {x: left, y: top, width: W, height: H, fill: "none", stroke: "#8c959f", "data-plot": "1"}));
    for (const tk of niceTicks(lo, hi, 5)) {
      svg.append(sv("line", {x1: left, x2: left + W, y1: y(tk), y2: y(tk), stroke: "#eef1f4"}));
      svg.append(svgText(left - 5, y(tk) + 3, fmt(tk, 2), {"text-anchor": "end", "font-size": 10}));
    }
    ks.forEach((k, j) => svg.append(svgText(x(j), top + H + 14, k, {"text-anchor": "middle", "font-size": 10})));
    svg.append(svgText(left + W / 2, top + H + 30, "k (examples of the language in training)", {"text-anchor": "middle", "font-size": 11}));
    const items = [];
    langs.forEach((l, li) => {
      const col = SERIES[li % SERIES.length];
      const pts = [];
      ks.forEach((k, j) => { const v = scoreOf(t, l.lang, k); if (v !== null) pts.push([x(j), y(v), k, v]); });
      const dash = l.kind === "unseen" ? "5 4" : l.kind === "other" ? "1.5 3" : null;
      if (pts.length > 1) svg.append(sv("polyline", {points: pts.map((p) => p[0] + "," + p[1]).join(" "), fill: "none", stroke: col,
        "stroke-width": 2, "stroke-dasharray": dash}));
      for (const p of pts) svg.append(titled(sv("circle", {cx: p[0], cy: p[1], r: 3, fill: col}), l.lang + " at k = " + p[2] + ": " + fmt(p[3])));
      items.push({line: true, colour: col, dash: dash, label: l.lang + " (" + l.kind + ")"});
    });
    fig.append(svg, legend(items));
    return fig;
  }
  function transferHeatmap(task, t, value) {
    const ks = (t.ks || []).map(String), langs = transferLangs(t);
    const fig = figure("transfer-heatmap", task + ": " + (value === "score" ? "score" : "gain") + " per language and k");
    const cellW = 58, cellH = 24, left = 130, top = 22;
    const val = (l, k) => value === "score" ? scoreOf(t, l, k) : ((t.gain || {})[l] || {})[k];
    let lo = Infinity, hi = -Infinity;
    for (const l of langs) for (const k of ks) { const v = val(l.lang, k); if (v !== null && v !== undefined) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
    if (!Number.isFinite(lo)) { lo = 0; hi = 1; }
    if (hi === lo) hi = lo + 1e-9;
    const svg = sv("svg", {width: left + ks.length * cellW + 10, height: top + langs.length * cellH + 10});
    svg.append(sv("rect", {x: left, y: top, width: ks.length * cellW, height: langs.length * cellH, fill: "none", stroke: "none", "data-plot": "1"}));
    ks.forEach((k, j) => svg.append(svgText(left + j * cellW + cellW / 2, top - 6, "k = " + k, {"text-anchor": "middle", "font-size": 10})));
    langs.forEach((l, i) => {
      svg.append(svgText(left - 6, top + i * cellH + cellH / 2 + 4, l.lang + " (" + l.kind + ")", {"text-anchor": "end",
        "font-style": l.unseen ? "italic" : null}));
      ks.forEach((k, j) => {
        const v = val(l.lang, k), tt = v === null || v === undefined ? 0 : (v - lo) / (hi - lo);
        svg.append(titled(sv("rect", {x: left + j * cellW, y: top + i * cellH, width: cellW - 1, height: cellH - 1,
          fill: v === null || v === undefined ? "#f6f8fa" : ramp(BLUES, 0.1 + 0.9 * tt)}), l.lang + ", k = " + k + ": " + fmt(v)));
        svg.append(svgText(left + j * cellW + cellW / 2, top + i * cellH + cellH / 2 + 4, fmt(v), {"text-anchor": "middle",
          "font-size": 10, fill: inkOn(0.1 + 0.9 * tt)}));
      });
    });
    fig.append(svg);
    return fig;
  }

  // ------------------------------------------------------------------------------------------- figures list
  function figuresList() {
    if (!D.figures || !D.figures.length) return null;
    const s = section("figures", "Static figures", "PNG copies of the main figures for papers (next to this file).");
    s.append(el("ul", null, D.figures.map((f) => el("li", null, [el("a", {href: f, text: f})]))));
    return s;
  }

  // ------------------------------------------------------------------------------------------- assemble
  const parts = [];
  function add(id, title, fn) {
    try {
      const node = fn();
      if (node) { parts.push(node); sections.push([id, title]); }
    } catch (err) {
      console.error("soi report: section " + id + " failed", err);
      parts.push(el("div", {cls: "error", text: "Section '" + title + "' could not be drawn: " + err}));
    }
  }
  add("overview", "Overview", overview);
  add("datamaps", "Data maps", dataMaps);
  add("shares", "SOI shares", shares);
  if (D.stability && RUNS.length) add("stability", "Stability", stability);
  add("transitions", "Transitions", transitions);
  if (D.comparisons.length) add("test-set", "Test set", testSet);
  if (D.two_stage) add("two-stage", "Two-stage", twoStage);
  if (D.transfer) add("transfer", "Transfer", transfer);
  add("examples", "Examples", browser);
  add("figures", "Figures", figuresList);
  app.append(header(), nav(), ...parts);
  window.__soiReport = {ready: true, renderMs: performance.now() - T0, readyAt: performance.now(), examples: EX.n};
  document.body.dataset.rendered = "1";
})();
