//! The single HTML page: the prospect's greeting, every file's table and statistics, and
//! the live search's script. Every URL in it is relative: the page is served under a path
//! prefix (`/s/<sandbox-id>/`) by the testdrive proxy.

use std::fmt::Write as _;
use std::sync::Arc;

use crate::prospect::Prospect;
use crate::records::Shape;
use crate::stats::{ColType, ColumnReport, Table};
use crate::summary::{FileSummary, Kind};

/// Content-Security-Policy for the page: nothing from other origins.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; \
                       connect-src 'self' ws: wss:; img-src data:; base-uri 'none'; form-action 'none'";

pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes everything but unreserved characters (a file name in a URL path).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "205 KiB", "1.5 MiB": the same rule as testdrive's pages (its `spoken_bytes`), so a
/// file's size reads the same there and here: binary units, one decimal under 10 (none
/// when it is .0), whole numbers from 10.
pub fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut u = 0;
    // Rounded as shown: 1023.7 KiB reads "1 MiB", not "1024 KiB".
    while u + 1 < UNITS.len() && (v * 10.0).round() / 10.0 >= 1023.5 {
        v /= 1024.0;
        u += 1;
    }
    let tenths = (v * 10.0).round() / 10.0;
    if tenths < 10.0 && tenths.fract() != 0.0 {
        format!("{tenths:.1} {}", UNITS[u])
    } else {
        format!("{} {}", v.round(), UNITS[u])
    }
}

fn is_numeric(c: &ColumnReport) -> bool {
    matches!(c.kind, ColType::Integer | ColType::Number)
}

fn stats_table(out: &mut String, t: &Table) {
    out.push_str(
        "<div class=scroll><table class=stats><thead><tr><th>Column</th><th>Type</th>\
         <th class=num>Non-empty</th><th class=num>Empty</th><th class=num>Distinct</th>\
         <th class=num>Min</th><th class=num>Max</th><th class=num>Mean</th></tr></thead><tbody>",
    );
    for (j, c) in t.columns.iter().enumerate() {
        // A number is shown as the file writes it: `2,5` in a column of decimal commas.
        let commas = t.decimal_comma
            && is_numeric(c)
            && t.preview
                .iter()
                .any(|row| row.get(j).is_some_and(|v| v.contains(',')));
        let written = |s: String| {
            if commas { s.replace('.', ",") } else { s }
        };
        let opt = |v: Option<String>| v.map(|s| escape(&written(s))).unwrap_or_else(|| "–".into());
        let distinct = if c.distinct_capped {
            format!("{}+", thousands(c.distinct))
        } else {
            thousands(c.distinct)
        };
        let _ = write!(
            out,
            "<tr><th scope=row>{}</th><td><span class=\"t t-{k}\">{k}</span></td>\
             <td class=num>{}</td><td class=num>{}</td><td class=num>{}</td>\
             <td class=num>{}</td><td class=num>{}</td><td class=num>{}</td></tr>",
            escape(&c.name),
            thousands(c.non_empty),
            thousands(c.empty),
            distinct,
            opt(c.min.as_ref().map(|s| s.display())),
            opt(c.max.as_ref().map(|s| s.display())),
            opt(c.mean.map(crate::stats::format_number)),
            k = c.kind.as_str(),
        );
    }
    out.push_str("</tbody></table></div>");
}

fn preview_table(out: &mut String, t: &Table) {
    let _ = write!(
        out,
        "<details open><summary>Preview: first {} of {} rows</summary>\
         <div class=\"scroll tall\"><table class=data style=\"--rn:{}ch\"><thead><tr><th class=rn>#</th>",
        thousands(t.preview.len() as u64),
        thousands(t.rows),
        // The row-number column as wide as its longest number, so it never wraps.
        t.preview.len().max(1).to_string().len(),
    );
    for c in &t.columns {
        // A number column's heading sits over its right-aligned numbers.
        let cls = if is_numeric(c) { " class=num" } else { "" };
        let _ = write!(out, "<th{cls}>{}</th>", escape(&c.name));
    }
    out.push_str("</tr></thead><tbody>");
    for (i, row) in t.preview.iter().enumerate() {
        let _ = write!(out, "<tr><td class=rn>{}</td>", i + 1);
        for (j, c) in t.columns.iter().enumerate() {
            let v = row.get(j).map(String::as_str).unwrap_or("");
            let cls = if is_numeric(c) { " class=num" } else { "" };
            let _ = write!(out, "<td{cls}>{}</td>", escape(v));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div></details>");
}

fn file_section(out: &mut String, idx: usize, f: &FileSummary) {
    let _ = write!(
        out,
        "<section class=file id=\"file-{idx}\"><h2>{}</h2><p class=meta>",
        escape(&f.name)
    );
    let mut meta = vec![f.kind.as_str().to_uppercase(), human_size(f.size)];
    if let Some(t) = &f.table {
        meta.push(format!("{} rows", thousands(t.rows)));
        meta.push(format!(
            "{} columns",
            thousands(t.columns.len() as u64 + t.extra_columns)
        ));
    }
    if let Some(d) = f.delimiter {
        let d = match d {
            b'\t' => "tab".to_string(),
            d => format!("“{}”", d as char),
        };
        meta.push(format!("delimiter {d}"));
    }
    out.push_str(&escape(&meta.join(" · ")));
    let _ = write!(
        out,
        " · <a href=\"files/{}\" download=\"{}\">Download</a></p>",
        percent_encode(&f.name),
        escape(&f.name)
    );
    if let Some(e) = &f.error {
        let _ = write!(out, "<p class=\"note err\">{}</p>", escape(e));
    }
    for n in &f.notes {
        let _ = write!(out, "<p class=note>{}</p>", escape(n));
    }
    match (&f.table, &f.shape) {
        (Some(t), _) if !t.columns.is_empty() => {
            out.push_str("<h3>Columns</h3>");
            stats_table(out, t);
            preview_table(out, t);
        }
        (_, Some(Shape::Object { keys, total })) => {
            let _ = write!(
                out,
                "<h3>JSON object with {} top-level key{}</h3><div class=scroll><table class=stats>\
                 <thead><tr><th>Key</th><th>Value</th></tr></thead><tbody>",
                thousands(*total),
                if *total == 1 { "" } else { "s" }
            );
            for (k, v) in keys {
                let _ = write!(
                    out,
                    "<tr><th scope=row>{}</th><td>{}</td></tr>",
                    escape(k),
                    escape(v)
                );
            }
            out.push_str("</tbody></table></div>");
        }
        (_, Some(Shape::Scalar(v))) => {
            let _ = write!(out, "<p>The document is a single {}.</p>", escape(v));
        }
        (_, Some(Shape::Array { len: 0, .. })) if f.kind == Kind::Ndjson => {
            out.push_str("<p>The file holds no JSON values.</p>")
        }
        (_, Some(Shape::Array { len: 0, .. })) => {
            out.push_str("<p>The document is an empty array.</p>")
        }
        _ if f.kind == Kind::Other => {
            out.push_str("<p class=muted>Not a CSV or JSON file: available for download only.</p>")
        }
        _ => {}
    }
    out.push_str("</section>");
}

/// Who the demo was prepared for, and what they asked: the first thing on the page.
fn greeting(out: &mut String, p: &Prospect) {
    if p.is_empty() {
        return;
    }
    out.push_str("<section id=\"prepared-for\" class=prepared aria-label=\"Prepared for you\">");
    if let Some(company) = &p.company {
        let _ = write!(
            out,
            "<p class=for>Prepared for <strong id=\"prospect-company\">{}</strong></p>",
            escape(company)
        );
    }
    if let Some(needs) = &p.needs {
        let _ = write!(
            out,
            "<p class=needs>Your question: <q id=\"prospect-needs\">{}</q></p>",
            escape(needs)
        );
    }
    if let Some(note) = &p.invitation_note {
        let _ = write!(
            out,
            "<p class=invite id=\"invitation-note\">{}</p>",
            escape(note)
        );
    }
    out.push_str("</section>");
}

/// Renders the whole page.
pub fn index(
    data_dir: &str,
    files: &[Arc<FileSummary>],
    problem: Option<&str>,
    prospect: Option<&Prospect>,
) -> String {
    let mut out = String::with_capacity(64 * 1024);
    out.push_str(HEAD);
    let total: u64 = files.iter().map(|f| f.size).sum();
    let _ = write!(
        out,
        "<header><div class=wrap><h1>CSV Explorer</h1><p class=sub>{} in <code>{}</code> · {}</p>\
         <div class=search><input id=q type=search maxlength=200 placeholder=\"Search every row…\" \
         autocomplete=off aria-label=\"Search every row of every file\"><span id=status aria-live=polite></span></div>\
         </div></header><main class=wrap>",
        if files.len() == 1 {
            "1 file".to_string()
        } else {
            format!("{} files", files.len())
        },
        escape(data_dir),
        human_size(total),
    );
    if let Some(p) = prospect {
        greeting(&mut out, p);
    }
    out.push_str("<section id=results hidden></section>");
    if let Some(p) = problem {
        let _ = write!(out, "<p class=\"note err\">{}</p>", escape(p));
    }
    if files.is_empty() && problem.is_none() {
        out.push_str(
            "<p class=empty>No files yet. Upload CSV or JSON files to explore them here.</p>",
        );
    }
    if files.len() > 1 {
        out.push_str("<nav class=toc>");
        for (i, f) in files.iter().enumerate() {
            let _ = write!(out, "<a href=\"#file-{i}\">{}</a>", escape(&f.name));
        }
        out.push_str("</nav>");
    }
    for (i, f) in files.iter().enumerate() {
        file_section(&mut out, i, f);
    }
    out.push_str("<footer>Same data as JSON: <a href=\"api/files\">api/files</a></footer></main>");
    // Column names per file, for rendering search results.
    let columns: serde_json::Map<String, serde_json::Value> = files
        .iter()
        .filter_map(|f| {
            let t = f.table.as_ref()?;
            let names: Vec<_> = t.columns.iter().map(|c| c.name.clone()).collect();
            Some((f.name.clone(), names.into()))
        })
        .collect();
    let columns = serde_json::Value::Object(columns)
        .to_string()
        .replace('<', "\\u003c");
    let _ = write!(
        out,
        "<script id=columns type=\"application/json\">{columns}</script>"
    );
    out.push_str(SCRIPT);
    out.push_str("</body></html>\n");
    out
}

const HEAD: &str = r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>CSV Explorer</title><link rel="icon" href="data:,">
<style>
:root{--bg:#f6f7f9;--fg:#1d2330;--muted:#667085;--card:#fff;--line:#e3e6eb;--accent:#2f6fde;--mark:#ffe58a}
@media (prefers-color-scheme:dark){:root{--bg:#13161c;--fg:#e6e9ef;--muted:#98a2b3;--card:#1b1f27;--line:#2c323d;--accent:#7aa7ff;--mark:#6b5a10}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
.wrap{max-width:1200px;margin:0 auto;padding:0 16px}
header{background:var(--card);border-bottom:1px solid var(--line);position:sticky;top:0;z-index:2}
header .wrap{display:flex;flex-wrap:wrap;align-items:center;gap:4px 16px;padding:10px 16px}
h1{font-size:20px;margin:0}
.sub{margin:0;color:var(--muted);font-size:13px;flex:1}
.search{display:flex;align-items:center;gap:8px;flex:1 1 260px}
#q{flex:1;min-width:0;font:inherit;padding:8px 10px;border:1px solid var(--line);border-radius:8px;background:var(--bg);color:var(--fg)}
#status{color:var(--muted);font-size:13px;white-space:nowrap}
a{color:var(--accent)}
.file,#results{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin:16px 0}
.file{scroll-margin-top:calc(var(--head,64px) + 8px)}
h2{font-size:18px;margin:0 0 2px;word-break:break-all}
h3{font-size:14px;margin:14px 0 6px;color:var(--muted);text-transform:uppercase;letter-spacing:.04em}
.meta{margin:0;color:var(--muted);font-size:13px}
.note{background:rgba(255,193,7,.15);border-left:3px solid #e0a800;padding:6px 10px;margin:8px 0;font-size:14px}
.err{background:rgba(220,53,69,.12);border-color:#dc3545}
.muted,.empty{color:var(--muted)}
.prepared{background:var(--card);border:1px solid var(--line);border-left:4px solid var(--accent);border-radius:10px;padding:10px 16px;margin:16px 0}
.prepared p{margin:4px 0;overflow-wrap:anywhere}.prepared .for{font-size:16px}.prepared .needs q{font-style:italic}.prepared .invite{color:var(--muted)}
.toc{display:flex;flex-wrap:wrap;gap:6px;margin:16px 0 0}
.toc a{background:var(--card);border:1px solid var(--line);border-radius:99px;padding:2px 10px;text-decoration:none;font-size:13px}
.scroll{overflow:auto;border:1px solid var(--line);border-radius:8px;max-width:100%}
.tall{max-height:70vh}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:5px 9px;border-bottom:1px solid var(--line);text-align:left;vertical-align:top;max-width:28em;overflow-wrap:break-word}
thead th{position:sticky;top:0;background:var(--card);font-weight:600;white-space:nowrap}
tbody th{font-weight:600}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.rn{color:var(--muted);text-align:right;width:1%;white-space:nowrap;overflow-wrap:normal;min-width:calc(var(--rn,2ch) + 18px)}
details{margin-top:12px}summary{cursor:pointer;color:var(--muted);font-size:14px;margin-bottom:6px}
.t{display:inline-block;white-space:nowrap;overflow-wrap:normal;border-radius:4px;padding:0 6px;font-size:12px;background:rgba(102,112,133,.15)}
.t-integer,.t-number{background:rgba(47,111,222,.15)}.t-date{background:rgba(25,135,84,.15)}.t-boolean{background:rgba(111,66,193,.15)}
mark{background:var(--mark);color:inherit;border-radius:2px}
footer{color:var(--muted);font-size:13px;margin:24px 0}
@media (max-width:600px){body{font-size:14px}.wrap{padding:0 10px}th,td{padding:4px 6px}h1{font-size:18px}}
</style></head><body>
"#;

const SCRIPT: &str = r#"<script>
(() => {
  // A jump to a file keeps its heading below the sticky header, however tall it wraps.
  const head = document.querySelector('body > header');
  const fit = () => document.documentElement.style.setProperty('--head', head.offsetHeight + 'px');
  fit();
  addEventListener('resize', fit);
  const q = document.getElementById('q');
  const status = document.getElementById('status');
  const box = document.getElementById('results');
  const columns = JSON.parse(document.getElementById('columns').textContent);
  let ws = null, timer = null, pending = null, retry = 500;

  function wsUrl() {
    // Relative to the page, so it works under any path prefix.
    const u = new URL('ws', location.href);
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
    u.search = ''; u.hash = '';
    return u.href;
  }
  function connect() {
    if (ws) return;
    ws = new WebSocket(wsUrl());
    ws.onopen = () => { retry = 500; if (pending !== null) send(pending); };
    ws.onmessage = (e) => { try { render(JSON.parse(e.data)); } catch (_) {} };
    ws.onclose = () => {
      ws = null;
      if (pending !== null || q.value.trim()) {
        status.textContent = 'reconnecting…';
        setTimeout(() => { if (pending !== null || q.value.trim()) connect(); }, retry);
        retry = Math.min(retry * 2, 10000);
      }
    };
  }
  function send(text) {
    if (ws && ws.readyState === 1) { ws.send(text); pending = null; status.textContent = 'searching…'; }
    else { pending = text; if (!ws) connect(); }
  }
  function el(tag, text, cls) {
    const e = document.createElement(tag);
    if (text !== undefined) e.textContent = text;
    if (cls) e.className = cls;
    return e;
  }
  function highlighted(text, needle) {
    const td = el('td');
    const lower = text.toLowerCase();
    let i = 0, j;
    while (needle && (j = lower.indexOf(needle, i)) !== -1 && lower.length === text.length) {
      td.append(text.slice(i, j), el('mark', text.slice(j, j + needle.length)));
      i = j + needle.length;
    }
    td.append(text.slice(i));
    return td;
  }
  function render(r) {
    if (r.query !== q.value.trim()) return; // an older answer
    const needle = r.query.toLowerCase();
    status.textContent = '';
    box.replaceChildren();
    box.hidden = false;
    const shown = r.rows.length;
    box.append(el('h2', r.matches === 0 ? `No rows match “${r.query}”` :
      `${r.matches.toLocaleString()} matching row${r.matches === 1 ? '' : 's'} for “${r.query}”` +
      (shown < r.matches ? ` (first ${shown} shown)` : '')));
    const byFile = new Map();
    for (const row of r.rows) {
      if (!byFile.has(row.file)) byFile.set(row.file, []);
      byFile.get(row.file).push(row.row);
    }
    for (const [file, rows] of byFile) {
      box.append(el('h3', file));
      const cols = columns[file] || [];
      const width = Math.max(cols.length, ...rows.map((x) => x.length));
      const table = el('table', undefined, 'data');
      const head = table.createTHead().insertRow();
      for (let i = 0; i < width; i++) head.append(el('th', cols[i] ?? `column_${i + 1}`));
      const body = table.createTBody();
      for (const row of rows) {
        const tr = body.insertRow();
        for (let i = 0; i < width; i++) tr.append(highlighted(row[i] ?? '', needle));
      }
      const wrap = el('div', undefined, 'scroll');
      wrap.append(table);
      box.append(wrap);
    }
  }
  q.addEventListener('focus', () => { if (!ws) connect(); }, { once: true });
  q.addEventListener('input', () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const v = q.value.trim();
      if (!v) { pending = null; box.hidden = true; status.textContent = ''; return; }
      send(v);
    }, 250);
  });
})();
</script>
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(
            escape("<a href='x'>&\"</a>"),
            "&lt;a href=&#39;x&#39;&gt;&amp;&quot;&lt;/a&gt;"
        );
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(human_size(512), "512 bytes");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(1024), "1 KiB");
        assert_eq!(human_size(210_329), "205 KiB");
        assert_eq!(human_size(1_048_500), "1 MiB");
        assert_eq!(human_size(52_428_800), "50 MiB");
        assert_eq!(percent_encode("a bé/x.csv"), "a%20b%C3%A9%2Fx.csv");
    }

    #[test]
    fn numbers_read_as_the_file_writes_them_and_sit_under_their_heading() {
        let file = "Datum;Niederschlag;Wetter\r\n01.01.2012;0,5;Regen\r\n02.01.2012;4,25;Sonne\r\n";
        let dialect = tabular::dialect::Dialect::sniff(file.as_bytes());
        let mut b = crate::stats::TableBuilder::new(
            ["Datum", "Niederschlag", "Wetter"].map(String::from),
            dialect,
        );
        for line in file.lines().skip(1) {
            let cells: Vec<&str> = line.trim_end().split(';').collect();
            for (i, v) in cells.iter().enumerate() {
                b.cell(i, v);
            }
            b.end_row(cells.len());
        }
        let mut out = String::new();
        stats_table(&mut out, &b.finish());
        assert!(
            out.contains("<td class=num>0,5</td><td class=num>4,25</td>"),
            "{out}"
        );
        assert!(out.contains("2012-01-01"), "dates are not numbers: {out}");
        let mut b = crate::stats::TableBuilder::new(["Niederschlag"].map(String::from), dialect);
        b.cell(0, "2.5");
        b.end_row(1);
        let t = b.finish();
        let mut out = String::new();
        stats_table(&mut out, &t);
        assert!(
            out.contains(">2.5<"),
            "a column written with points keeps them: {out}"
        );
        let mut out = String::new();
        preview_table(&mut out, &t);
        assert!(out.contains("<th class=num>Niederschlag</th>"), "{out}");
    }

    #[test]
    fn page_uses_only_relative_urls() {
        let page = index("/data", &[], None, None);
        assert!(page.contains("No files yet"));
        for bad in [
            "href=\"/", "src=\"/", "http://", "https://", "'/ws'", "\"/ws\"", "fetch('/",
        ] {
            assert!(!page.contains(bad), "page contains {bad}");
        }
        assert!(page.contains("new URL('ws', location.href)"));
    }

    #[test]
    fn greets_the_prospect_with_their_words_escaped() {
        let hostile = crate::prospect::parse(
            br#"{"company": "<script>alert(1)</script> & Co", "needs": "Does it \"scale\"?",
                 "invitation_note": "Hi <b>Ana</b>"}"#,
        )
        .unwrap();
        let page = index("/data", &[], None, Some(&hostile));
        assert!(
            page.contains(
                "<strong id=\"prospect-company\">&lt;script&gt;alert(1)&lt;/script&gt; &amp; Co</strong>"
            ),
            "{page}"
        );
        assert!(
            page.contains("Your question: <q id=\"prospect-needs\">Does it &quot;scale&quot;?</q>")
        );
        assert!(page.contains("Hi &lt;b&gt;Ana&lt;/b&gt;"));
        assert!(!page.contains("<script>alert"));
        // The greeting comes first, above the search results and the files.
        let at = |s: &str| page.find(s).unwrap();
        assert!(at("id=\"prepared-for\"") < at("id=results"));
        // Only what was given.
        let needs_only = crate::prospect::parse(br#"{"needs": "Regions?"}"#).unwrap();
        let page = index("/data", &[], None, Some(&needs_only));
        assert!(page.contains("id=\"prospect-needs\"") && !page.contains("Prepared for <"));
        for nobody in [None, Some(&crate::prospect::Prospect::default())] {
            let page = index("/data", &[], None, nobody);
            assert!(!page.contains("prepared-for"), "{page}");
        }
    }
}
