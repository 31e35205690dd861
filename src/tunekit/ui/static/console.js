// tunekit console: the page scripts. Served from the package (no inline script: the CSP forbids it).
// Rule kept throughout: user data (file names, rows, model answers, event messages) goes into the page
// only as textContent or as a chart's data, never as HTML.
"use strict";

(function () {
  const meta = (name) => (document.querySelector(`meta[name="${name}"]`) || {}).content || "";
  const PREFIX = meta("ui-prefix") || "/ui";
  const CSRF = meta("csrf-token");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    return node;
  }

  // The service API through the console's forwarder: the session cookie and the CSRF token, never a key.
  async function api(method, path, body) {
    const init = { method, headers: { "X-CSRF-Token": CSRF }, credentials: "same-origin" };
    if (body instanceof FormData) init.body = body;
    else if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers["Content-Type"] = "application/json";
    }
    const response = await fetch(`${PREFIX}/api/v1/${path}`, init);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const message = data && data.error ? data.error.message : `the server answered ${response.status}`;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  const utc = (seconds) => (seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "–");

  // --- tables: sort by a header click, filter by a search box ----------------------------------------
  function cellValue(row, index) {
    const cell = row.cells[index];
    if (!cell) return "";
    return cell.dataset.value !== undefined ? cell.dataset.value : cell.textContent.trim();
  }

  function makeSortable(table) {
    const headers = table.tHead ? Array.from(table.tHead.rows[0].cells) : [];
    headers.forEach((th, index) => {
      if (th.dataset.sort === "none") return;
      th.tabIndex = 0;
      th.classList.add("sort");
      th.title = "Sort by this column";
      const sort = () => {
        const numeric = th.dataset.sort === "num";
        const ascending = th.getAttribute("aria-sort") !== "ascending";
        headers.forEach((h) => h.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
        const body = table.tBodies[0];
        const rows = Array.from(body.rows);
        rows.sort((a, b) => {
          let x = cellValue(a, index), y = cellValue(b, index);
          if (numeric) {
            x = x === "" ? -Infinity : parseFloat(x);
            y = y === "" ? -Infinity : parseFloat(y);
            return ascending ? x - y : y - x;
          }
          return ascending ? x.localeCompare(y, undefined, { numeric: true }) : y.localeCompare(x, undefined, { numeric: true });
        });
        rows.forEach((r) => body.append(r));
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
    });
  }

  function makeFilter(input) {
    const table = document.getElementById(input.dataset.table);
    if (!table) return;
    const count = el("span", { class: "muted filter-count" });
    input.after(count);
    input.addEventListener("input", () => {
      const words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
      let shown = 0;
      for (const row of table.tBodies[0].rows) {
        const text = row.textContent.toLowerCase();
        const keep = words.every((w) => text.includes(w));
        row.hidden = !keep;
        shown += keep ? 1 : 0;
      }
      count.textContent = words.length ? `${shown} of ${table.tBodies[0].rows.length}` : "";
    });
  }

  // --- charts (plotly.js, served by tunekit) -------------------------------------------------------------
  const LAYOUT = { margin: { l: 55, r: 15, t: 35, b: 45 }, height: 280, font: { size: 12 }, legend: { orientation: "h", y: -0.25 } };
  // no mode bar: its button colours are style elements made per chart, which the CSP blocks (see charts.py)
  const CONFIG = { displayModeBar: false, responsive: true };

  function plot(node, traces, layout) {
    if (!window.Plotly) {
      node.textContent = "Charts need plotly.min.js, which did not load.";
      return;
    }
    window.Plotly.react(node, traces, Object.assign({}, LAYOUT, layout), CONFIG);
  }

  function jsonOf(id) {
    const node = document.getElementById(id);
    return node ? JSON.parse(node.textContent) : null;
  }

  const charts = {
    history(node) {  // a run's training history: losses and validation metrics per epoch
      const rows = jsonOf(node.dataset.source) || [];
      const keys = Object.keys(rows[0] || {}).filter((k) => k !== "epoch" && typeof rows[0][k] === "number" && !k.endsWith("seconds"));
      const traces = keys.map((k) => ({ x: rows.map((r) => r.epoch), y: rows.map((r) => r[k]), name: k, mode: "lines+markers",
        yaxis: k.includes("loss") ? "y" : "y2" }));
      plot(node, traces, { title: { text: "Training per epoch" }, xaxis: { title: { text: "epoch" }, dtick: 1 }, margin: { l: 55, r: 70, t: 35, b: 45 },
        yaxis: { title: { text: "loss" } }, yaxis2: { title: { text: "validation metric" }, overlaying: "y", side: "right" } });
    },
    traffic(node) {  // the production page: one series of the request log per chart
      const points = jsonOf(node.dataset.source) || [];
      const x = points.map((p) => new Date(p.t * 1000).toISOString());
      const field = node.dataset.field;
      const traces = field === "latency"
        ? [{ x, y: points.map((p) => p.p50_ms), name: "median", mode: "lines+markers" }, { x, y: points.map((p) => p.p95_ms), name: "p95", mode: "lines+markers" }]
        : [{ x, y: points.map((p) => p[field]), name: node.dataset.title, mode: "lines+markers" }];
      const layout = { title: { text: node.dataset.title }, showlegend: field === "latency" };
      if (field === "error_rate") layout.yaxis = { tickformat: ".1%", rangemode: "tozero" };
      else layout.yaxis = { rangemode: "tozero" };
      if (!points.length) layout.annotations = [{ text: "no requests in this window", showarrow: false, xref: "paper", yref: "paper", x: 0.5, y: 0.5 }];
      plot(node, traces, layout);
    },
    bars(node) {  // an eval run: pass rate per grader
      const rows = jsonOf(node.dataset.source) || [];
      plot(node, [{ type: "bar", x: rows.map((r) => r.testing_criteria), y: rows.map((r) => r.passed / Math.max(1, r.passed + r.failed)),
        text: rows.map((r) => `${r.passed}/${r.passed + r.failed}`), textposition: "auto" }],
      { title: { text: "Pass rate per grader" }, yaxis: { tickformat: ".0%", range: [0, 1] } });
    },
  };

  // --- runs: pick two to compare --------------------------------------------------------------------
  function runsPage() {
    const form = document.querySelector(".compare-form");
    if (!form) return;
    const button = document.getElementById("compare");
    const picked = () => Array.from(form.querySelectorAll(".pick:checked")).map((c) => c.value);
    form.addEventListener("change", () => {
      const n = picked().length;
      button.disabled = n !== 2;
      button.textContent = n === 2 ? "Compare these two runs" : `Compare two runs (${n} picked)`;
    });
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const [a, b] = picked();
      if (a && b) window.location.href = `${PREFIX}/runs/compare?a=${encodeURIComponent(a)}&b=${encodeURIComponent(b)}`;
    });
  }

  // --- jobs: upload, start -------------------------------------------------------------------------------
  function jobsPage() {
    const upload = document.getElementById("upload-form");
    if (!upload) return;
    upload.addEventListener("submit", async (e) => {
      e.preventDefault();
      const result = document.getElementById("upload-result");
      const errors = document.getElementById("upload-errors");
      const file = document.getElementById("upload-file").files[0];
      errors.replaceChildren();
      result.className = "";
      if (!file) return;
      result.textContent = `Uploading ${file.name}…`;
      const body = new FormData();
      body.append("purpose", "fine-tune");
      body.append("file", file, file.name);
      try {
        const made = await api("POST", "files", body);
        result.className = "ok";
        result.textContent = `Uploaded ${made.filename} as ${made.id}. Reloading the file list…`;
        setTimeout(() => window.location.reload(), 600);
      } catch (err) {
        result.className = "error";
        const [head, ...rest] = err.message.split(/: (?=line \d+)/);
        result.textContent = `${file.name} was not accepted: ${rest.length ? head : err.message}`;
        // "invalid fine-tune file (3 problems): line 2: ...; line 5: ..." -> one list item per line problem
        const problems = rest.length ? rest.join(": ").split(/; (?=line \d+|and \d+ more|the file)/) : [];
        for (const p of problems) errors.append(el("li", { class: "line-error" }, p));
      }
    });

    const method = document.getElementById("job-method");
    const toggle = () => document.querySelectorAll(".dpo-only").forEach((n) => {
      const show = method.value === "dpo";
      n.hidden = !show;
      const label = document.querySelector(`label[for="${n.id}"]`);
      if (label) label.hidden = !show;
    });
    method.addEventListener("change", toggle);
    toggle();

    document.getElementById("job-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const out = document.getElementById("job-error");
      out.hidden = true;
      const hyper = {};
      document.querySelectorAll("#job-form .hp").forEach((input) => {
        if (input.hidden || input.value.trim() === "") return;
        const n = Number(input.value);
        hyper[input.name] = Number.isNaN(n) ? input.value.trim() : n;
      });
      const body = { model: document.getElementById("job-model").value, training_file: document.getElementById("job-file").value,
        method: { type: method.value, [method.value]: { hyperparameters: hyper } } };
      const suffix = document.getElementById("job-suffix").value.trim();
      const seed = document.getElementById("job-seed").value.trim();
      if (suffix) body.suffix = suffix;
      if (seed) body.seed = Number(seed);
      try {
        const job = await api("POST", "fine_tuning/jobs", body);
        window.location.href = `${PREFIX}/jobs/${encodeURIComponent(job.id)}`;
      } catch (err) {
        out.textContent = err.message;
        out.hidden = false;
      }
    });
  }

  // --- one job: events and the loss curve, live -----------------------------------------------------
  function jobPage() {
    const root = document.getElementById("job");
    if (!root) return;
    const id = root.dataset.job;
    const seen = new Set();
    const steps = new Map();  // step -> metrics data
    const tbody = document.querySelector("#events-table tbody");
    const chart = document.getElementById("loss-chart");
    const FINISHED = ["succeeded", "failed", "cancelled"];
    let drawn = 0;
    let tailPolls = 1;

    function draw() {
      if (!steps.size || steps.size === drawn) return;
      drawn = steps.size;
      const rows = Array.from(steps.values()).sort((a, b) => a.step - b.step);
      const traces = [{ x: rows.map((r) => r.step), y: rows.map((r) => r.train_loss), name: "training loss", mode: "lines+markers" }];
      const valid = rows.filter((r) => typeof r.valid_loss === "number");
      if (valid.length) traces.push({ x: valid.map((r) => r.step), y: valid.map((r) => r.valid_loss), name: "validation loss", mode: "lines+markers" });
      const empty = document.getElementById("loss-empty");
      if (empty) empty.remove();
      chart.dataset.points = String(rows.length);
      plot(chart, traces, { xaxis: { title: { text: "step" } }, yaxis: { title: { text: "loss" } }, showlegend: true });
      const last = rows[rows.length - 1];
      document.getElementById("job-step").textContent = `${last.step} / ${last.total_steps}`;
    }

    async function poll() {
      let job;
      try {
        const events = await api("GET", `fine_tuning/jobs/${encodeURIComponent(id)}/events?limit=1000`);
        const fresh = events.data.filter((ev) => !seen.has(ev.id)).reverse();  // oldest first
        for (const ev of fresh) {
          seen.add(ev.id);
          if (ev.type === "metrics" && ev.data) steps.set(ev.data.step, ev.data);
          tbody.prepend(el("tr", { class: `level-${ev.level}` }, el("td", {}, utc(ev.created_at)), el("td", {}, ev.level), el("td", {}, ev.message)));
        }
        draw();
        job = await api("GET", `fine_tuning/jobs/${encodeURIComponent(id)}`);
      } catch (err) {
        document.getElementById("job-status").textContent = `cannot reach the server (${err.message}); retrying`;
        setTimeout(poll, 3000);
        return;
      }
      const status = document.getElementById("job-status");
      status.textContent = job.status;
      status.className = `badge status-${job.status}`;
      document.getElementById("job-model").textContent = job.fine_tuned_model || "–";
      const error = document.getElementById("job-error-text");
      error.hidden = !job.error;
      error.textContent = job.error ? job.error.message : "";
      const done = FINISHED.includes(job.status);
      document.getElementById("cancel-job").hidden = done;
      document.getElementById("pause-job").hidden = job.status !== "running";
      document.getElementById("resume-job").hidden = job.status !== "paused";
      document.getElementById("job-run").hidden = job.status !== "succeeded";
      document.getElementById("job-chat").hidden = job.status !== "succeeded";
      if (!done && job.status !== "paused") setTimeout(poll, 1000);
      else if (tailPolls-- > 0) setTimeout(poll, 1000);  // one more, for the job's last events
    }

    document.getElementById("cancel-job").addEventListener("click", async (e) => {
      const button = e.currentTarget;
      if (!window.confirm(`Cancel job ${id}? Training stops at its next step; the job cannot be resumed.`)) return;
      button.disabled = true;
      try {
        await api("POST", `fine_tuning/jobs/${encodeURIComponent(id)}/cancel`);
      } catch (err) {
        window.alert(err.message);
      }
      button.disabled = false;
    });
    for (const [what, again] of [["pause", false], ["resume", true]]) {
      document.getElementById(`${what}-job`).addEventListener("click", async (e) => {
        const button = e.currentTarget;
        button.disabled = true;
        try {
          await api("POST", `fine_tuning/jobs/${encodeURIComponent(id)}/${what}`);
          if (again) {  // a paused job is not polled; resumed, it is again, with its tail poll at the end
            tailPolls = 1;
            setTimeout(poll, 500);
          }
        } catch (err) {
          window.alert(err.message);
        }
        button.disabled = false;
      });
    }
    poll();
  }

  // --- playground: one or two models, the same conversation --------------------------------------------
  function playground() {
    const form = document.getElementById("chat-form");
    if (!form) return;
    const history = { a: [], b: [] };
    const pane = (side) => document.getElementById(`chat-${side}`);
    const turn = (side, role, text, cls) => {
      const node = el("div", { class: `turn ${role} ${cls || ""}` }, el("span", { class: "role" }, role), el("div", { class: "text" }, text));
      pane(side).append(node);
      node.scrollIntoView({ block: "nearest" });
      return node;
    };
    const syncTitles = () => {
      const b = document.getElementById("model-b").value;
      document.getElementById("title-a").textContent = document.getElementById("model-a").value || "Model";
      document.getElementById("title-b").textContent = b || "Compared model";
      document.getElementById("pane-b").hidden = !b;
    };
    form.addEventListener("change", syncTitles);
    syncTitles();
    document.getElementById("chat-clear").addEventListener("click", () => {
      history.a = []; history.b = [];
      pane("a").replaceChildren(); pane("b").replaceChildren();
    });
    document.getElementById("prompt").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && e.ctrlKey) form.requestSubmit();
    });

    async function ask(side, model, text) {
      const system = document.getElementById("system").value.trim();
      history[side].push({ role: "user", content: text });
      turn(side, "user", text);
      const waiting = turn(side, "assistant", "…", "pending");
      const messages = (system ? [{ role: "system", content: system }] : []).concat(history[side]);
      const started = performance.now();
      try {
        const reply = await api("POST", "chat/completions", { model, messages, max_tokens: Number(document.getElementById("max-tokens").value) || 64,
          temperature: Number(document.getElementById("temperature").value) || 0 });
        const answer = reply.choices[0].message.content || "";
        history[side].push({ role: "assistant", content: answer });
        waiting.querySelector(".text").textContent = answer;
        if (!answer.trim()) waiting.append(el("small", { class: "muted" }, `(the answer is empty or only whitespace: ${answer.length} characters) `));
        waiting.classList.remove("pending");
        const usage = reply.usage ? `${reply.usage.completion_tokens} tokens, ` : "";
        waiting.append(el("small", { class: "muted" }, `${usage}${Math.round(performance.now() - started)} ms`));
      } catch (err) {
        history[side].pop();
        waiting.querySelector(".text").textContent = err.message;
        waiting.classList.remove("pending");
        waiting.classList.add("error");
      }
    }

    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const prompt = document.getElementById("prompt");
      const text = prompt.value.trim();
      if (!text) return;
      prompt.value = "";
      const a = document.getElementById("model-a").value, b = document.getElementById("model-b").value;
      ask("a", a, text);
      if (b) ask("b", b, text);
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("table.sortable").forEach(makeSortable);
    document.querySelectorAll("input.filter").forEach(makeFilter);
    document.querySelectorAll("[data-chart]").forEach((node) => charts[node.dataset.chart](node));
    runsPage();
    jobsPage();
    jobPage();
    playground();
  });
})();
