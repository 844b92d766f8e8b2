// The trial page: follows provisioning, counts the trial window down, extends and ends the
// trial. The page itself is rendered by the server; when the status changes in a way that
// changes the page (ready, ended, failed) it reloads to show the new state and the receipt.
(function () {
  "use strict";
  var root = document.getElementById("trial");
  if (!root) return;
  var state = JSON.parse(root.dataset.state);
  var base = "/trials/" + root.dataset.id;
  // Shown only in this page; every call of this script must carry it (see web/session.rs).
  var key = root.dataset.key;
  var statusEl = document.getElementById("status");
  var countdown = document.getElementById("countdown");
  var expiresEl = document.getElementById("expires");
  var openLink = document.getElementById("open");
  var extendBtn = document.getElementById("extend");
  var endBtn = document.getElementById("end");
  var confirmBox = document.getElementById("end-confirm-box");
  var confirmBtn = document.getElementById("end-confirm");
  var cancelBtn = document.getElementById("end-cancel");
  var actionError = document.getElementById("action-error");
  // The server's clock minus ours, so the countdown agrees with the deadline it enforces.
  var skew = Date.parse(state.now) - Date.now();
  var shownStatus = state.status;

  function clockFace(seconds) {
    var h = Math.floor(seconds / 3600), m = Math.floor((seconds % 3600) / 60), s = seconds % 60;
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return h > 0 ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
  }

  // Moments come rendered in UTC inside <time datetime>; shown on the browser's clock, with
  // its zone, the exact moment kept in the title. The deadline as a clock time only.
  function showTime(el) {
    var at = new Date(el.dateTime);
    if (isNaN(at)) return;
    el.textContent = el === expiresEl
      ? at.toLocaleTimeString(undefined, { hour: "numeric", minute: "2-digit", timeZoneName: "short" })
      : at.toLocaleString(undefined, { timeZoneName: "short" });
    el.title = el.dateTime;
  }

  function remaining() {
    if (!countdown) return 0;
    var left = Date.parse(countdown.dataset.expiresAt) - (Date.now() + skew);
    return Math.max(0, Math.floor(left / 1000));
  }

  function tick() {
    if (!countdown) return;
    var left = remaining();
    countdown.textContent = clockFace(left);
    countdown.classList.toggle("low", left < 60);
    if (left === 0) poll();
  }

  function apply(next) {
    skew = Date.parse(next.now) - Date.now();
    if (countdown) countdown.dataset.expiresAt = next.expires_at;
    if (expiresEl && expiresEl.dateTime !== next.expires_at) {
      expiresEl.dateTime = next.expires_at;
      showTime(expiresEl);
    }
    statusEl.dataset.status = next.status;
    statusEl.textContent = next.status_text;
    if (extendBtn && next.extend_seconds === 0) extendBtn.hidden = true;
    // Anything beyond a countdown change is easiest to show as the server renders it.
    var settledChange = next.status !== shownStatus &&
      !(shownStatus === "ready" && next.status === "sleeping") &&
      !(shownStatus === "sleeping" && next.status === "ready");
    if (settledChange || (next.deleted && !document.getElementById("receipt"))) {
      if (next.status === "ended" && !next.deleted) return; // teardown in progress
      window.location.reload();
    }
    tick();
  }

  var polling = false;
  function poll() {
    if (polling) return;
    polling = true;
    fetch(base + "/state", { headers: { Accept: "application/json", "X-Testdrive-Page": key }, cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (next) { if (next) apply(next); })
      .catch(function () {})
      .then(function () { polling = false; });
  }

  function failed(response) {
    return response.json().catch(function () { return {}; }).then(function (body) {
      actionError.textContent = body.detail || ("The server answered " + response.status + ".");
      actionError.hidden = false;
    });
  }

  function post(path) {
    actionError.hidden = true;
    return fetch(base + path, { method: "POST", headers: { Accept: "application/json", "X-Testdrive-Page": key } });
  }

  if (extendBtn) {
    extendBtn.addEventListener("click", function () {
      extendBtn.disabled = true;
      post("/extend").then(function (r) {
        extendBtn.disabled = false;
        return r.ok ? r.json().then(apply) : failed(r);
      });
    });
  }
  if (endBtn) {
    endBtn.addEventListener("click", function () {
      confirmBox.hidden = false;
      confirmBtn.focus();
    });
    cancelBtn.addEventListener("click", function () {
      confirmBox.hidden = true;
      endBtn.focus();
    });
    confirmBtn.addEventListener("click", function () {
      confirmBtn.disabled = true;
      confirmBtn.textContent = "Deleting…";
      post("/end").then(function (r) {
        if (r.ok) { window.location.reload(); return; }
        confirmBtn.disabled = false;
        confirmBtn.textContent = "Yes, delete everything";
        return failed(r);
      });
    });
  }
  if (openLink && state.status !== "provisioning") openLink.hidden = false;

  // What the prospect says to the vendor: a JSON body, the same page key.
  function say(path, body, errorEl) {
    errorEl.hidden = true;
    return fetch(base + path, {
      method: "POST",
      headers: { Accept: "application/json", "Content-Type": "application/json", "X-Testdrive-Page": key },
      body: JSON.stringify(body)
    }).then(function (r) {
      if (r.ok) return true;
      return r.json().catch(function () { return {}; }).then(function (problem) {
        errorEl.textContent = problem.detail || ("The server answered " + r.status + ".");
        errorEl.hidden = false;
        return false;
      });
    });
  }

  var contactOpen = document.getElementById("contact-open");
  var contactForm = document.getElementById("contact-form");
  if (contactOpen && contactForm) {
    contactOpen.addEventListener("click", function () {
      contactForm.hidden = false;
      contactOpen.hidden = true;
      document.getElementById("contact-message").focus();
    });
    contactForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var message = document.getElementById("contact-message");
      var send = document.getElementById("contact-send");
      send.disabled = true;
      say("/contact", { message: message.value }, document.getElementById("contact-error")).then(function (ok) {
        send.disabled = false;
        if (!ok) return;
        message.value = "";
        contactForm.hidden = true;
        contactOpen.hidden = false;
        document.getElementById("contact-sent").hidden = false;
      });
    });
  }

  var feedbackForm = document.getElementById("feedback-form");
  if (feedbackForm) {
    feedbackForm.addEventListener("submit", function (e) {
      e.preventDefault();
      var answers = {};
      Array.prototype.forEach.call(feedbackForm.querySelectorAll("[data-question]"), function (el) {
        if (el.value.trim() !== "") answers[el.dataset.question] = el.value;
      });
      var send = document.getElementById("feedback-send");
      send.disabled = true;
      say("/feedback", { answers: answers }, document.getElementById("feedback-error")).then(function (ok) {
        send.disabled = false;
        if (!ok) return;
        feedbackForm.hidden = true;
        document.getElementById("feedback-sent").hidden = false;
      });
    });
  }

  Array.prototype.forEach.call(document.querySelectorAll("time[datetime]"), showTime);
  setInterval(tick, 1000);
  tick();
  // Quickly while the sandbox is being prepared, slowly after: the deadline can move
  // (extended elsewhere) and the sandbox can fall asleep or end.
  (function schedule() {
    var settled = shownStatus !== "provisioning";
    setTimeout(function () { poll(); schedule(); }, settled ? 5000 : 700);
  })();
})();
