// The demo page's trial form: checks the files against the demo's rules before anything is
// sent, then uploads with a real progress bar and goes on to the trial page. Without this
// script the form still posts and the server checks the same rules.
(function () {
  "use strict";
  var form = document.getElementById("trial-form");
  if (!form) return;
  var input = document.getElementById("files");
  var drop = document.getElementById("drop");
  var list = document.getElementById("file-list");
  var errorBox = document.getElementById("form-error");
  var start = document.getElementById("start");
  var box = document.getElementById("upload-box");
  var bar = document.getElementById("upload-progress");
  var statusText = document.getElementById("upload-status");
  var maxBytes = Number(form.dataset.maxBytes);
  var maxFiles = Number(form.dataset.maxFiles);
  var extensions = form.dataset.extensions ? form.dataset.extensions.split(",") : [];

  // The same rule as the server's pages (spoken_bytes): binary units, one decimal under
  // 10, whole numbers from 10; `exact` to the byte.
  function size(bytes) {
    if (bytes < 1024) return bytes + " bytes";
    var units = ["KiB", "MiB", "GiB", "TiB"], value = bytes / 1024, u = 0;
    while (u + 1 < units.length && Math.round(value * 10) / 10 >= 1023.5) { value /= 1024; u++; }
    var tenths = Math.round(value * 10) / 10;
    return (tenths < 10 && tenths % 1 !== 0 ? tenths.toFixed(1) : String(Math.round(value))) + " " + units[u];
  }
  function exact(bytes) { return bytes.toLocaleString("en-US") + (bytes === 1 ? " byte" : " bytes"); }

  function extension(name) {
    var dot = name.lastIndexOf(".");
    return dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  }

  // Each problem as a sentence; none means the files may be sent.
  function problems(files) {
    var found = [], total = 0;
    if (files.length === 0) found.push("Choose at least one file.");
    if (files.length > maxFiles) {
      found.push("Too many files: " + files.length + " chosen, at most " + maxFiles + " accepted.");
    }
    for (var i = 0; i < files.length; i++) {
      var f = files[i];
      total += f.size;
      if (extensions.length && extensions.indexOf(extension(f.name)) < 0) {
        found.push(f.name + ": this type of file is not accepted (accepted: ." + extensions.join(", .") + ").");
      }
      if (f.size === 0) found.push(f.name + ": the file is empty.");
    }
    if (total > maxBytes) {
      found.push("The files are too large: " + size(total) + " in all, at most " + size(maxBytes) + " accepted.");
    }
    return found;
  }

  function showError(lines) {
    errorBox.textContent = "";
    if (!lines.length) { errorBox.hidden = true; return; }
    lines.forEach(function (line) {
      var p = document.createElement("p");
      p.textContent = line;
      errorBox.appendChild(p);
    });
    errorBox.hidden = false;
  }

  function listFiles() {
    list.textContent = "";
    Array.prototype.forEach.call(input.files, function (f) {
      var li = document.createElement("li");
      var name = document.createElement("span");
      name.textContent = f.name;
      var bytes = document.createElement("span");
      bytes.textContent = size(f.size);
      bytes.className = "size";
      bytes.title = exact(f.size);
      li.appendChild(name);
      li.appendChild(bytes);
      if (extensions.length && extensions.indexOf(extension(f.name)) < 0) li.className = "bad";
      list.appendChild(li);
    });
    showError(input.files.length ? problems(input.files) : []);
  }

  input.addEventListener("change", listFiles);
  ["dragenter", "dragover"].forEach(function (kind) {
    drop.addEventListener(kind, function (e) { e.preventDefault(); drop.classList.add("over"); });
  });
  ["dragleave", "drop"].forEach(function (kind) {
    drop.addEventListener(kind, function () { drop.classList.remove("over"); });
  });
  drop.addEventListener("drop", function (e) {
    e.preventDefault();
    if (e.dataTransfer && e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      listFiles();
    }
  });

  function busy(on) {
    start.disabled = on;
    input.disabled = on;
    box.hidden = !on;
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var found = problems(input.files);
    showError(found);
    if (found.length) return;

    // The demo field first: the server reads the form in order and needs it before files.
    var data = new FormData();
    data.append("demo", form.elements.demo.value);
    ["seconds", "email", "company", "needs"].forEach(function (name) {
      var field = form.elements[name];
      if (field && field.value.trim() !== "") data.append(name, field.value);
    });
    Array.prototype.forEach.call(input.files, function (f) { data.append("file", f, f.name); });

    var xhr = new XMLHttpRequest();
    xhr.open("POST", form.action);
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.addEventListener("progress", function (ev) {
      if (!ev.lengthComputable) return;
      var percent = Math.floor((ev.loaded / ev.total) * 100);
      bar.value = percent;
      statusText.textContent = "Uploading " + percent + "% (" + size(ev.loaded) + " of " + size(ev.total) + ")";
      if (ev.loaded === ev.total) statusText.textContent = "Uploaded. Preparing your sandbox…";
    });
    xhr.addEventListener("load", function () {
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (ignored) { body = null; }
      if (xhr.status === 201 && body && body.location) {
        bar.value = 100;
        window.location.assign(body.location);
        return;
      }
      busy(false);
      var detail = body && body.detail ? body.detail : "The server answered " + xhr.status + ".";
      var retry = xhr.getResponseHeader("Retry-After");
      if (retry) detail += " Try again in " + retry + " seconds.";
      showError([detail]);
    });
    xhr.addEventListener("error", function () {
      busy(false);
      showError(["The upload did not get through. Check your connection and try again."]);
    });
    busy(true);
    bar.value = 0;
    statusText.textContent = "Uploading…";
    xhr.send(data);
  });
})();
