// cdcflow dashboard: forms that call the HTTP API (/api/*) with the session cookie and the CSRF header,
// and show the API's answer: problem+json errors next to the fields they name (errors[].field), or the
// result. A form opts in with data-api="METHOD /path"; data-body says how its JSON body is built;
// data-on-success names what to do with a 2xx answer. No build step: plain ES2017 in the browser.
(function () {
  "use strict";

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  async function api(method, url, body) {
    var options = { method: method, credentials: "same-origin", headers: { "X-CSRF-Token": csrf(), Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    var response = await fetch(url, options);
    var data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    return { ok: response.ok, status: response.status, data: data };
  }
  window.cdcflowApi = api;

  function text(el, value) { if (el) { el.textContent = value; } }

  function escapeHtml(value) {
    return String(value).replace(/[&<>"']/g, function (c) {
      return { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c];
    });
  }

  // -- building bodies -------------------------------------------------------------------------
  function typedValue(input) {
    var raw = input.value;
    var type = input.dataset.type || "string";
    if (type === "object" || type === "array" || type === "any") {
      try { return JSON.parse(raw); } catch (e) { return raw; }  // the API says what is wrong with it
    }
    return raw;  // integers, numbers and booleans are coerced (or refused, by name) by the API
  }

  function list(value) {
    return value.split(",").map(function (s) { return s.trim(); }).filter(function (s) { return s; });
  }

  var bodies = {
    none: function () { return undefined; },
    fixed: function (form) { return JSON.parse(form.elements.body.value); },
    json: function (form) {
      var raw = form.querySelector("[data-json]").value;
      try { return JSON.parse(raw); } catch (e) { throw new Error("not valid JSON: " + e.message); }
    },
    // fields named "params.X" go into params (empty ones left out: the plugin's default applies)
    trigger: function (form) {
      var body = { params: {} };
      form.querySelectorAll("[name^='params.']").forEach(function (input) {
        if (input.value !== "") { body.params[input.name.slice(7)] = typedValue(input); }
      });
      if (form.elements.priority && form.elements.priority.value) { body.priority = form.elements.priority.value; }
      // as typed: the API coerces a number or refuses it (422 naming delay_seconds)
      if (form.elements.delay_seconds && form.elements.delay_seconds.value.trim()) { body.delay_seconds = form.elements.delay_seconds.value.trim(); }
      return body;
    },
    replay: function (form) {
      var f = form.elements;
      var body = { source: f.source.value.trim(), dry_run: f.dry_run.checked, filters: {} };
      ["since", "until", "replay_id"].forEach(function (k) { if (f[k].value.trim()) { body[k] = f[k].value.trim(); } });
      ["from_offsets", "to_offsets"].forEach(function (k) { if (f[k].value.trim()) { body[k] = list(f[k].value); } });
      var rate = f.rate.value.trim();
      if (rate) { body.rate = isNaN(Number(rate)) ? rate : Number(rate); }  // not a number: the API says so
      ["tables", "ops", "plugins", "rules", "statuses", "where"].forEach(function (k) {
        var v = f["filters." + k].value;
        if (v.trim()) { body.filters[k] = k === "where" ? v.split("\n").map(function (s) { return s.trim(); }).filter(Boolean) : list(v); }
      });
      return body;
    },
    dlq: function (form) {
      var ids = Array.prototype.map.call(form.querySelectorAll("input[name='dlq_id']:checked"), function (c) { return c.value; });
      return { ids: ids };
    }
  };

  // -- showing answers -------------------------------------------------------------------------
  // data-result-in: the answer goes to that element (outside a table that live refreshes replace)
  function resultOf(form) {
    return form.dataset.resultIn ? document.getElementById(form.dataset.resultIn) : form.querySelector("[data-result]");
  }

  function clearErrors(form) {
    form.querySelectorAll("[data-error-for]").forEach(function (el) { el.textContent = ""; });
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
  }

  function showProblem(form, answer) {
    var problem = answer.data || {};
    var unplaced = [];
    (problem.errors || []).forEach(function (error) {
      var slot = form.querySelector('[data-error-for="' + CSS.escape(error.field) + '"]');
      var input = form.querySelector('[name="' + CSS.escape(error.field) + '"]');
      if (input) { input.setAttribute("aria-invalid", "true"); }
      if (slot) { slot.textContent = error.message; } else { unplaced.push(error.field + ": " + error.message); }
    });
    var summary = (problem.title || ("HTTP " + answer.status)) + ": " + (problem.detail || "");
    if (unplaced.length) { summary += " (" + unplaced.join("; ") + ")"; }
    var out = resultOf(form);
    if (out) { out.className = "alert problem"; out.setAttribute("role", "alert"); text(out, summary); }
    var first = form.querySelector("[aria-invalid='true']");
    if (first) { first.focus(); }
  }

  var onSuccess = {
    message: function (form, answer, out) { text(out, form.dataset.successText || "Done."); },
    reload: function () { window.location.reload(); },
    invocation: function (form, answer, out) {
      var id = answer.data.invocation_id;
      out.innerHTML = "Sent: invocation <a data-testid=\"invocation-link\" href=\"/runs/" + encodeURIComponent(id) + "\"><code>" +
        escapeHtml(id) + "</code></a> (" + escapeHtml(answer.data.status) + ").";
    },
    explain: function (form, answer, out) {
      var rows = answer.data.map(function (v) {
        return "<tr data-rule=\"" + escapeHtml(v.rule) + "\" data-matched=\"" + v.matched + "\"><th scope=\"row\">" + escapeHtml(v.rule) +
          "</th><td><span class=\"tag " + (v.matched ? "ok\">matches" : "muted\">does not match") + "</span></td><td>" + escapeHtml(v.reason) + "</td></tr>";
      });
      out.innerHTML = rows.length
        ? "<table id=\"explain-verdicts\"><thead><tr><th scope=\"col\">Rule</th><th scope=\"col\">Verdict</th><th scope=\"col\">Why</th></tr></thead><tbody>" + rows.join("") + "</tbody></table>"
        : "<p id=\"explain-verdicts\">No rule watches that table.</p>";
    },
    replay: function (form, answer, out) {
      text(out, "Replay " + answer.data.replay_id + " started.");
      var box = document.getElementById("replay-progress");
      if (box && window.htmx) { window.htmx.ajax("GET", "/ui/replays/" + encodeURIComponent(answer.data.replay_id), { target: box, swap: "innerHTML" }); }
      if (window.history) { window.history.replaceState(null, "", "/replays?id=" + encodeURIComponent(answer.data.replay_id)); }
    },
    dlq: function (form, answer, out) {
      var done = answer.data.filter(function (r) { return r.replayed_as; }).length;
      text(out, "Replayed " + done + " of " + answer.data.length + " (the others were replayed before).");
    }
  };

  async function submit(event) {
    var form = event.target.closest("form[data-api]");
    if (!form) { return; }
    event.preventDefault();
    var spec = (event.submitter && event.submitter.dataset.api) || form.dataset.api;
    var method = spec.split(" ")[0], url = spec.split(" ")[1];
    var out = resultOf(form);
    clearErrors(form);
    var body;
    try { body = bodies[form.dataset.body || "none"](form); } catch (e) { showProblem(form, { status: 0, data: { title: "Not sent", detail: e.message } }); return; }
    var buttons = form.querySelectorAll("button");
    buttons.forEach(function (b) { b.disabled = true; });
    if (out) { out.className = ""; out.setAttribute("role", "status"); text(out, "Sending…"); }
    try {
      var answer = await api(method, url, body);
      if (answer.ok) {
        if (out) { out.className = "alert ok"; }
        onSuccess[(event.submitter && event.submitter.dataset.onSuccess) || form.dataset.onSuccess || "message"](form, answer, out);
      } else {
        showProblem(form, answer);
      }
    } catch (e) {
      showProblem(form, { status: 0, data: { title: "Network error", detail: e.message } });
    } finally {
      buttons.forEach(function (b) { b.disabled = false; });
    }
  }

  document.addEventListener("submit", submit);
})();
