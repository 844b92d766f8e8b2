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

  // Sizes as the server's pages say them: one rule for every script (format.js).
  var size = testdrive.size, exact = testdrive.exact;

  function extension(name) {
    var dot = name.lastIndexOf(".");
    return dot > 0 ? name.slice(dot + 1).toLowerCase() : "";
  }

  // A file named as text that is something else (a workbook renamed .csv), told from its
  // first bytes in the server's words (tabular's sniff): what it is and what to do.
  var TEXT = ["csv", "tsv", "tab", "txt", "json", "jsonl", "ndjson"];
  var SAVE_AS_CSV = "save it again as CSV UTF-8 (in Excel: File → Save As → CSV UTF-8 (comma delimited)), then upload that file";
  var EXCEL = "open it in Excel and use File → Save As → CSV UTF-8 (comma delimited), then upload that file";
  var ZIP = "unpack it and upload the files inside (if it is an Excel workbook, open it in Excel and use File → Save As → CSV UTF-8 (comma delimited), then upload that file)";
  var EXPORT = "export the table it shows as CSV UTF-8 from the program the data came from, then upload that file";

  function expected(ext) {
    if (ext === "csv") return "a CSV file";
    if (ext === "tsv" || ext === "tab") return "a tab-separated text file";
    if (ext === "json" || ext === "jsonl" || ext === "ndjson") return "a JSON file";
    return "a text file";
  }

  function startsWith(bytes, magic) {
    if (bytes.length < magic.length) return false;
    for (var i = 0; i < magic.length; i++) if (bytes[i] !== magic[i]) return false;
    return true;
  }

  function has(bytes, text) {
    outer: for (var i = 0; i + text.length <= bytes.length; i++) {
      for (var j = 0; j < text.length; j++) if (bytes[i + j] !== text.charCodeAt(j)) continue outer;
      return true;
    }
    return false;
  }

  // [what it is, what to do], or null for text.
  function kindOf(b) {
    if (startsWith(b, [0x50, 0x4B, 0x03, 0x04]) || startsWith(b, [0x50, 0x4B, 0x05, 0x06])) {
      if (has(b, "application/vnd.oasis.opendocument")) {
        return ["an OpenDocument file (LibreOffice)", "open it in LibreOffice and use File → Save As → Text CSV with the character set Unicode (UTF-8), then upload that file"];
      }
      if (has(b, "xl/")) return ["an Excel workbook", EXCEL];
      if (has(b, "word/")) return ["a Word document", EXPORT];
      if (has(b, "ppt/")) return ["a PowerPoint presentation", EXPORT];
      return ["a ZIP archive (an Excel workbook is one)", ZIP];
    }
    if (startsWith(b, [0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1])) {
      return ["an Excel 97–2003 workbook (or another old Office file)", EXCEL];
    }
    if (startsWith(b, [0x25, 0x50, 0x44, 0x46, 0x2D])) return ["a PDF document", EXPORT];
    var pictures = [["PNG", [0x89, 0x50, 0x4E, 0x47]], ["JPEG", [0xFF, 0xD8, 0xFF]], ["GIF", [0x47, 0x49, 0x46, 0x38]]];
    for (var i = 0; i < pictures.length; i++) {
      if (startsWith(b, pictures[i][1])) {
        return ["a picture (" + pictures[i][0] + ")", "upload the data the picture was made from, saved as CSV UTF-8"];
      }
    }
    if (startsWith(b, [0x1F, 0x8B]) || startsWith(b, [0x37, 0x7A, 0xBC, 0xAF])) {
      return ["a compressed archive", "unpack it and upload the files inside"];
    }
    if (startsWith(b, [0xFF, 0xFE]) || startsWith(b, [0xFE, 0xFF])) {
      return ["text in UTF-16 (Excel's \"Unicode Text\")", SAVE_AS_CSV];
    }
    // UTF-16 without a byte order mark: every other byte of ASCII text is zero.
    var n = Math.min(b.length, 512) & ~1, zeros = [0, 0];
    for (var k = 0; k < n; k++) if (b[k] === 0) zeros[k % 2]++;
    if (n >= 8 && (zeros[0] * 10 >= n / 2 * 9 || zeros[1] * 10 >= n / 2 * 9)) {
      return ["text in UTF-16 (Excel's \"Unicode Text\")", SAVE_AS_CSV];
    }
    return null;
  }

  // Resolves to the sentences for the files that are not what their names say.
  function sniffed(files) {
    var checks = Array.prototype.map.call(files, function (f) {
      var ext = extension(f.name);
      if (TEXT.indexOf(ext) < 0 || !f.slice || f.size === 0) return Promise.resolve(null);
      return f.slice(0, 4096).arrayBuffer().then(function (buffer) {
        var kind = kindOf(new Uint8Array(buffer));
        return kind ? f.name + " is " + kind[0] + ", not " + expected(ext) + ": " + kind[1] + "." : null;
      }, function () { return null; });
    });
    return Promise.all(checks).then(function (found) {
      return found.filter(function (line) { return line; });
    });
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
    var files = input.files;
    var found = files.length ? problems(files) : [];
    showError(found);
    sniffed(files).then(function (wrong) {
      if (input.files === files && wrong.length) showError(found.concat(wrong));
    });
  }

  // What the prospect filled in, kept in this tab so that "Try again" after a failed trial
  // brings it back. Files cannot be: a page may not set a file input.
  var FIELDS = ["seconds", "email", "company", "needs"];
  // The vendor's questions, `q.<id>`, in the order the page asks them.
  Array.prototype.forEach.call(form.elements, function (el) {
    if (el.name && el.name.indexOf("q.") === 0) FIELDS.push(el.name);
  });
  var storeKey = "testdrive.form." + form.elements.demo.value;

  function keepAnswers() {
    var kept = {};
    FIELDS.forEach(function (name) {
      var field = form.elements[name];
      if (field) kept[name] = field.value;
    });
    try { window.sessionStorage.setItem(storeKey, JSON.stringify(kept)); } catch (ignored) { /* private mode */ }
  }

  function restoreAnswers() {
    var kept = null;
    try { kept = JSON.parse(window.sessionStorage.getItem(storeKey) || "null"); } catch (ignored) { kept = null; }
    if (!kept) return;
    var restored = false;
    FIELDS.forEach(function (name) {
      var field = form.elements[name];
      if (field && typeof kept[name] === "string" && kept[name] !== "") {
        field.value = kept[name];
        restored = true;
      }
    });
    if (!restored) return;
    var note = document.createElement("p");
    note.id = "refilled";
    note.className = "hint refilled";
    note.textContent = "Your answers from your last try are filled in again. Choose your files again: a browser cannot keep them.";
    drop.parentNode.insertBefore(note, drop);
  }

  restoreAnswers();

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

  // The vendor's required questions, asked after the files: checked only when sending.
  function unanswered() {
    var found = [];
    Array.prototype.forEach.call(form.querySelectorAll("[required]"), function (el) {
      if (el.value.trim() === "") {
        var label = form.querySelector("label[for='" + el.id + "']");
        found.push("Please answer: " + (label ? label.textContent.replace(" (required)", "") : el.name) + ".");
      }
    });
    return found;
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    var found = problems(input.files).concat(unanswered());
    showError(found);
    if (found.length) return;
    keepAnswers();
    start.disabled = true;
    sniffed(input.files).then(function (wrong) {
      start.disabled = false;
      showError(wrong);
      if (!wrong.length) send();
    });
  });

  function send() {

    // The demo field first: the server reads the form in order and needs it before files.
    var data = new FormData();
    data.append("demo", form.elements.demo.value);
    if (form.elements.invitation) data.append("invitation", form.elements.invitation.value);
    FIELDS.forEach(function (name) {
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
  }
})();
