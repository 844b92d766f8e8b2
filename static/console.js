// The operators' and vendors' console: renders each snapshot the server pushes (server-sent
// events, one a second) into the table, keeping rows in place so a pending "confirm end"
// survives updates; ages and time left tick locally between snapshots.
(function () {
  "use strict";
  var root = document.getElementById("console");
  if (!root) return;
  var base = root.dataset.base;
  // Shown only in this page; every call of this script must carry it (see web/session.rs).
  var key = root.dataset.key;
  var ops = base === "/ops";
  var live = document.getElementById("live");
  var tbody = document.querySelector("#sandboxes tbody");
  var none = document.getElementById("no-sandboxes");
  var eventsList = document.getElementById("events");
  var capacity = document.getElementById("capacity");
  var nodes = document.getElementById("nodes");
  var demos = document.getElementById("demos");
  var imagesMissing = document.getElementById("images-missing");
  var imagesMissingList = document.getElementById("images-missing-list");
  var skew = 0;
  var rows = {};

  function now() { return Date.now() + skew; }
  function span(ms) {
    var s = Math.max(0, Math.floor(ms / 1000));
    var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    if (h > 0) return h + "h " + m + "m";
    if (m > 0) return m + "m " + (s % 60) + "s";
    return s + "s";
  }
  // Sizes as the server's pages say them: one rule for every script (format.js).
  var size = testdrive.size, exact = testdrive.exact;
  // Every moment the same way: the browser's clock with its zone, the exact one in the
  // markup and on hover.
  function moment(at) {
    var t = document.createElement("time");
    t.dateTime = at; t.title = at;
    t.textContent = new Date(at).toLocaleTimeString(undefined, { timeZoneName: "short" });
    return t;
  }
  // Event details name moments in RFC 3339 ("until 2026-11-18T11:06:40.123Z").
  var RFC3339 = /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:\d{2})/g;
  function withMoments(parent, text) {
    var last = 0, m;
    RFC3339.lastIndex = 0;
    while ((m = RFC3339.exec(text))) {
      parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      parent.appendChild(moment(m[0]));
      last = m.index + m[0].length;
    }
    parent.appendChild(document.createTextNode(text.slice(last)));
  }
  function cell(tr, cls) {
    var td = tr.querySelector("." + cls);
    if (!td) { td = document.createElement("td"); td.className = cls; tr.appendChild(td); }
    return td;
  }
  function text(td, value) { if (td.textContent !== value) td.textContent = value; }

  function newRow(id) {
    var tr = document.createElement("tr");
    tr.dataset.sandboxId = id;
    var cols = ["id", "demo"].concat(ops ? ["vendor", "node"] : [], ["prospect", "status", "age", "left", "mem", "cpu", "requests", "actions"]);
    cols.forEach(function (c) { cell(tr, c); });
    var actions = tr.querySelector(".actions");
    var end = document.createElement("button");
    end.type = "button"; end.className = "button danger end"; end.textContent = "End";
    end.setAttribute("aria-label", "End sandbox " + id.slice(-8));
    var confirm = document.createElement("button");
    confirm.type = "button"; confirm.className = "button danger end-confirm"; confirm.textContent = "Confirm end";
    confirm.hidden = true;
    end.addEventListener("click", function () { end.hidden = true; confirm.hidden = false; confirm.focus(); });
    confirm.addEventListener("click", function () {
      confirm.disabled = true; confirm.textContent = "Ending…";
      fetch(base + "/sandboxes/" + id + "/end", { method: "POST", headers: { Accept: "application/json", "X-Testdrive-Page": key } })
        .then(function (r) {
          if (!r.ok) { confirm.disabled = false; confirm.textContent = "Retry end"; }
        });
    });
    actions.appendChild(end);
    actions.appendChild(confirm);
    return tr;
  }

  function update(tr, s) {
    tr.dataset.created = s.created_at;
    tr.dataset.expires = s.expires_at;
    var liveNow = ["provisioning", "ready", "sleeping"].indexOf(s.status) >= 0;
    tr.dataset.live = liveNow ? "1" : "";
    tr.classList.toggle("gone", !liveNow);
    // The end of the id: ids are time-ordered, so their beginnings are alike.
    text(cell(tr, "id"), s.id.slice(-8));
    cell(tr, "id").title = s.id;
    text(cell(tr, "demo"), s.demo);
    if (ops) text(cell(tr, "vendor"), s.vendor);
    if (ops) text(cell(tr, "node"), s.node || "–");
    text(cell(tr, "prospect"), [s.email, s.company].filter(Boolean).join(" · ") || "–");
    var st = cell(tr, "status");
    st.dataset.status = s.status;
    text(st, s.status + (s.end_reason && s.end_reason !== s.status ? " (" + s.end_reason.replace(/_/g, " ") + ")" : ""));
    var mem = cell(tr, "mem");
    text(mem, s.memory_bytes == null ? "–" : size(s.memory_bytes) + (s.memory_limit_bytes ? " / " + size(s.memory_limit_bytes) : ""));
    mem.title = s.memory_bytes == null ? "" : exact(s.memory_bytes) + (s.memory_limit_bytes ? " of " + exact(s.memory_limit_bytes) : "");
    text(cell(tr, "cpu"), s.cpu_percent == null ? "–" : s.cpu_percent.toFixed(1) + "%");
    text(cell(tr, "requests"), String(s.requests));
    ticking(tr);
  }

  function ticking(tr) {
    var created = Date.parse(tr.dataset.created);
    text(cell(tr, "age"), span(now() - created));
    text(cell(tr, "left"), tr.dataset.live ? span(Date.parse(tr.dataset.expires) - now()) : "–");
  }

  function render(snap) {
    skew = Date.parse(snap.now) - Date.now();
    var seen = {};
    snap.sandboxes.forEach(function (s, i) {
      seen[s.id] = true;
      var tr = rows[s.id] || (rows[s.id] = newRow(s.id));
      update(tr, s);
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    Object.keys(rows).forEach(function (id) {
      if (!seen[id]) { rows[id].remove(); delete rows[id]; }
    });
    none.hidden = snap.sandboxes.length > 0;
    if (capacity && snap.capacity) {
      var c = snap.capacity;
      capacity.textContent = "Running " + c.running + " of " + c.max_running +
        (c.warm ? " (and " + c.warm + " warm, ready to claim)" : "") +
        " · sleeping " + c.sleeping + " of " + c.max_sleeping;
    }
    if (nodes && snap.nodes) {
      var nbody = nodes.querySelector("tbody");
      nbody.textContent = "";
      snap.nodes.forEach(function (n) {
        var tr = document.createElement("tr");
        tr.dataset.node = n.name;
        tr.dataset.status = n.status;
        text(cell(tr, "name"), n.name);
        var st = cell(tr, "status");
        st.dataset.status = n.status === "up" ? "ready" : "failed";
        text(st, n.status);
        text(cell(tr, "live"), n.live + " of " + n.max_sandboxes);
        text(cell(tr, "seen"), span(now() - Date.parse(n.last_seen)) + " ago");
        nbody.appendChild(tr);
      });
      // One node is the whole deployment: the table says nothing the capacity line does not.
      nodes.hidden = snap.nodes.length < 2;
    }
    if (demos && snap.demos) {
      demos.textContent = "";
      snap.demos.forEach(function (d) {
        var li = document.createElement("li");
        li.dataset.demoId = d.id;
        li.dataset.imageStatus = d.image_status;
        li.textContent = d.title + " (" + d.slug + ")" + (d.enabled ? "" : " · disabled") +
          imageNote(d) + " · " + d.live + " live";
        demos.appendChild(li);
      });
    }
    if (imagesMissing && snap.images_missing) {
      imagesMissingList.textContent = "";
      snap.images_missing.forEach(function (d) {
        var li = document.createElement("li");
        li.dataset.demoId = d.id;
        li.textContent = d.title + " by " + d.vendor + " · image " + d.image;
        imagesMissingList.appendChild(li);
      });
      imagesMissing.hidden = snap.images_missing.length === 0;
    }
    eventsList.textContent = "";
    snap.events.forEach(function (e) {
      var li = document.createElement("li");
      li.appendChild(moment(e.at));
      // A deployment's event (no sandbox) is marked as such, so healing stands out.
      if (!e.sandbox_id) li.className = "service-event";
      var who = e.sandbox_id ? e.sandbox_id.slice(-8) : "service";
      withMoments(li, " " + who + " " + e.kind.replace(/_/g, " ") + (e.detail ? ": " + e.detail : ""));
      eventsList.appendChild(li);
    });
  }

  // What a vendor needs to know of its demo's image: a pull under way (with how far it
  // is), a failed one (with why), or an image gone from the server.
  function imageNote(d) {
    if (d.image_status === "pulling") {
      var p = d.pull;
      var how = p && p.bytes ? " " + Math.floor(100 * p.bytes_done / p.bytes) + "% (" +
        p.layers_done + " of " + p.layers + " layers)" : "";
      return " · pulling the image" + how;
    }
    if (d.image_status === "failed") return " · image pull failed: " + (d.image_error || "");
    if (d.image_status === "missing") return " · image missing: out of the catalog until it is back";
    return "";
  }

  function connect() {
    var source = new EventSource(base + "/stream?key=" + encodeURIComponent(key));
    source.addEventListener("open", function () {
      live.dataset.connected = "true"; live.textContent = "live";
    });
    source.addEventListener("snapshot", function (e) {
      live.dataset.connected = "true"; live.textContent = "live";
      render(JSON.parse(e.data));
    });
    source.addEventListener("signed-out", function () { source.close(); window.location.reload(); });
    source.addEventListener("error", function () {
      // EventSource reconnects by itself; say so meanwhile.
      live.dataset.connected = "false"; live.textContent = "reconnecting…";
    });
  }

  setInterval(function () { Object.keys(rows).forEach(function (id) { ticking(rows[id]); }); }, 1000);
  connect();
})();
