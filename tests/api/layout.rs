//! The pages' layout and words where a newcomer found them wrong (issue 15), read in a real
//! Chromium as element boxes (`getBoundingClientRect`, the line boxes of a text), never as
//! pixels of a screenshot or as timings: the countdown's "until" after an extension, the
//! consoles' rows at desktop and phone width, one size format on every page, and the CSV
//! Explorer's row numbers, jumps and type badges.

use serde_json::{Value, json};

use crate::browser::{Browser, ONE_AT_A_TIME, Session, Snap};
use crate::helpers::*;
use crate::screens::*;

/// For each element matching `css`: its box, the distinct line tops of its text and of
/// each word (a word broken across lines has two), and the same of its descendants
/// matching each selector of `parts` — all read in one script call, so at one layout
/// (the consoles re-render every second).
const BOXES_JS: &str = r#"
const tops = (node, start, end) => {
  const r = document.createRange();
  r.setStart(node, start); r.setEnd(node, end);
  return [...new Set([...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top)))];
};
const measure = el => {
  const b = el.getBoundingClientRect();
  const words = [];
  const lines = new Set();
  const walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.data.length) tops(n, 0, n.data.length).forEach(t => lines.add(t));
    const re = /\S+/g; let m;
    while ((m = re.exec(n.data))) words.push({word: m[0], lines: tops(n, m.index, m.index + m[0].length).length});
  }
  return {text: el.innerText, top: b.top, bottom: b.bottom, height: b.height,
          lines: lines.size, words};
};
const parts = arguments[1] || [];
return [...document.querySelectorAll(arguments[0])].map(el => {
  const m = measure(el);
  m.parts = parts.map(sel => [...el.querySelectorAll(sel)].map(measure));
  return m;
});
"#;

#[derive(Debug, Clone)]
struct Boxed {
    text: String,
    top: f64,
    bottom: f64,
    height: f64,
    lines: u64,
    /// Words shown on more than one line.
    broken: Vec<String>,
    /// The descendants matching each of the `parts` selectors.
    parts: Vec<Vec<Boxed>>,
}

impl Boxed {
    fn of(b: &Value) -> Boxed {
        Boxed {
            text: b["text"].as_str().unwrap_or_default().to_string(),
            top: b["top"].as_f64().unwrap(),
            bottom: b["bottom"].as_f64().unwrap(),
            height: b["height"].as_f64().unwrap(),
            lines: b["lines"].as_u64().unwrap(),
            broken: b["words"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|w| w["lines"].as_u64().unwrap() > 1)
                .map(|w| w["word"].as_str().unwrap().to_string())
                .collect(),
            parts: b["parts"]
                .as_array()
                .map(|parts| {
                    parts
                        .iter()
                        .map(|p| p.as_array().unwrap().iter().map(Boxed::of).collect())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }
}

async fn boxes(s: &Session, css: &str) -> Vec<Boxed> {
    boxes_with(s, css, &[]).await
}

async fn boxes_with(s: &Session, css: &str, parts: &[&str]) -> Vec<Boxed> {
    let v = s
        .execute(BOXES_JS, vec![json!(css), json!(parts)])
        .await
        .unwrap();
    v.as_array().unwrap().iter().map(Boxed::of).collect()
}

/// Hours and minutes of `iso` on the browser's clock, as a 24- and a 12-hour clock show them.
async fn local_clock(s: &Session, iso: &str) -> [String; 2] {
    let v = s
        .execute(
            "const d = new Date(arguments[0]); return [d.getHours(), d.getMinutes()];",
            vec![json!(iso)],
        )
        .await
        .unwrap();
    let (h, m) = (v[0].as_u64().unwrap(), v[1].as_u64().unwrap());
    [
        format!("{h}:{m:02}"),
        format!("{}:{m:02}", (h + 11) % 12 + 1),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_until_time_follows_an_extension() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("the_until_time_follows_an_extension").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, key) = app.vendor("Acme Analytics").await;
    let mut manifest = static_manifest("until-check", "Until Check");
    manifest["trial"] = json!({"seconds": 900, "max_seconds": 7200});
    let demo = app.demo(&key, manifest).await;
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("a.csv");
    std::fs::write(&path, b"x,y\n1,2\n").unwrap();

    let s = browser.session().await;
    let id = start_trial(&s, &app, &demo, &path).await.unwrap();
    assert_eq!(trial_status(&s, &["ready", "failed"]).await, "ready");
    let until = ".countdown-box .hint";
    let before = s.wait_visible(until).await;
    let first = s.snap("#countdown").await.unwrap();
    let first_at = first.attr("data-expires-at").unwrap().to_string();

    s.click("button#extend").await;
    let moved = s
        .wait_until(
            "#countdown",
            |c| c.attr("data-expires-at").is_some_and(|at| at != first_at),
            PATIENCE,
        )
        .await;
    let expires = moved.attr("data-expires-at").unwrap().to_string();
    let api: Value = app.sandbox(&id).await;
    assert_eq!(api["expires_at"], expires.as_str(), "{api}");
    // Without a reload, the "until" says the new time, on the browser's clock.
    let clock = local_clock(&s, &expires).await;
    let after = s
        .wait_until(
            until,
            |u| clock.iter().any(|c| u.text.contains(c.as_str())),
            PATIENCE,
        )
        .await;
    assert_ne!(after.text, before.text);
    let shown = s.snap(&format!("{until} time")).await.unwrap();
    assert_eq!(shown.attr("datetime"), Some(expires.as_str()), "{shown:?}");
    // With the zone the browser is in.
    let zone = s
        .execute(
            "return new Date(arguments[0]).toLocaleTimeString(undefined, {timeZoneName: 'short'}).split(' ').pop();",
            vec![json!(expires)],
        )
        .await
        .unwrap();
    let zone = zone.as_str().unwrap();
    assert!(after.text.contains(zone), "{:?} lacks {zone}", after.text);
    s.close().await;
    end_all(&app, &[id]).await;
}

/// The table of a console: every row's cells as tall as the row, its End button inside the
/// row, no word of a demo's or vendor's name broken across lines (and, when `one_line`,
/// those names on one line each).
async fn check_rows(s: &Session, which: &str, one_line: bool) {
    let rows = boxes_with(
        s,
        "#sandboxes tbody tr",
        &[
            ":scope > td",
            ":scope:not(.gone) button.end",
            "td.vendor, td.demo",
        ],
    )
    .await;
    assert!(!rows.is_empty(), "{which}: no rows");
    if one_line {
        // At desktop width the whole table shows, End buttons included, without scrolling.
        let fits = s
            .execute(
                "const w = document.querySelector('.table-scroll'); \
                 return w.scrollWidth <= w.clientWidth + 1;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(
            fits,
            json!(true),
            "{which}: the table is wider than its box"
        );
    }
    for (i, row) in rows.iter().enumerate() {
        let [cells, ends, names] = &row.parts[..] else {
            unreachable!()
        };
        for (j, cell) in cells.iter().enumerate() {
            assert!(
                (cell.height - row.height).abs() <= 1.0 && (cell.top - row.top).abs() <= 1.0,
                "{which}: cell {j} of row {i} ({:?}) is {:.1}..{:.1}, its row {:.1}..{:.1}",
                cell.text,
                cell.top,
                cell.bottom,
                row.top,
                row.bottom
            );
        }
        for end in ends {
            assert!(
                end.top >= row.top - 0.5 && end.bottom <= row.bottom + 0.5,
                "{which}: the End button of row {i} is at {:.1}..{:.1}, its row {:.1}..{:.1}",
                end.top,
                end.bottom,
                row.top,
                row.bottom
            );
        }
        for name in names {
            assert!(
                name.broken.is_empty(),
                "{which}: {:?} in row {i} breaks {:?} mid-word",
                name.text,
                name.broken
            );
            if one_line {
                assert_eq!(
                    name.lines, 1,
                    "{which}: {:?} in row {i} takes {} lines",
                    name.text, name.lines
                );
            }
        }
    }
    // The event list: every time as the browser's clock shows it, with the exact moment in
    // the markup; no raw timestamp in the words.
    let times = s
        .execute(
            "return [...document.querySelectorAll('#events time')].map(t => \
               [t.getAttribute('datetime'), t.getAttribute('title'), t.innerText]);",
            vec![],
        )
        .await
        .unwrap();
    let times = times.as_array().unwrap();
    assert!(!times.is_empty(), "{which}: no times in the events");
    for t in times {
        assert!(t[0].is_string(), "{which}: a time without datetime: {t}");
        assert!(t[1].is_string(), "{which}: a time without a title: {t}");
    }
    let texts = s
        .execute(
            "return [...document.querySelectorAll('#events li')].map(l => l.innerText);",
            vec![],
        )
        .await
        .unwrap();
    for text in texts.as_array().unwrap() {
        let text = text.as_str().unwrap();
        let raw = text
            .as_bytes()
            .windows(13)
            .any(|w| w[..4].iter().all(u8::is_ascii_digit) && w[4] == b'-' && w[10] == b'T');
        assert!(!raw, "{which}: an event shows a raw timestamp: {text:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_rows_hold_their_cells_and_names() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("console_rows_hold_their_cells_and_names").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let made = populate_consoles(&app).await;
    let all: Vec<&String> = made.live.iter().chain(&made.ended).collect();
    let own: Vec<&String> = made.live[..2].iter().chain(&made.ended).collect();

    for (wide, s) in [
        (true, browser.session().await),
        (false, browser.phone().await),
    ] {
        let width = if wide { "1280 px" } else { "390 px" };
        console_with_rows(&s, &app, "/ops", &app.admin, &all).await;
        for id in &made.ended {
            s.wait_until(
                &format!("tr{} .status", css_id("data-sandbox-id", id)),
                |st| st.attr("data-status") == Some("ended"),
                PATIENCE,
            )
            .await;
        }
        s.wait_until("#events", |e| e.text.contains("extended"), PATIENCE)
            .await;
        check_rows(&s, &format!("/ops at {width}"), wide).await;
        let px = width.trim_end_matches(" px");
        shot(&s, &format!("ops-{px}.png")).await;
        console_with_rows(&s, &app, "/vendor", &made.vendor_key, &own).await;
        s.wait_until("#events", |e| e.text.contains("extended"), PATIENCE)
            .await;
        check_rows(&s, &format!("/vendor at {width}"), wide).await;
        shot(&s, &format!("vendor-{px}.png")).await;
        s.close().await;
    }
    end_all(&app, &made.live).await;
    assert!(
        app.instance_objects().is_empty(),
        "{:?}",
        app.instance_objects()
    );
}

/// A CSV of exactly `bytes` bytes.
fn csv_of_exactly(bytes: usize) -> Vec<u8> {
    let mut csv = csv_of_size(bytes - 200);
    let fill = bytes - csv.len() - "999999,north,1.00,\"\"\n".len();
    csv.extend_from_slice(format!("999999,north,1.00,\"{}\"\n", "z".repeat(fill)).as_bytes());
    assert_eq!(csv.len(), bytes);
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sizes_read_the_same_on_every_page() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) = Browser::start("sizes_read_the_same_on_every_page").await else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&key, csv_explorer_manifest()).await;
    let files = tempfile::tempdir().unwrap();
    // Sizes around each unit's edges, as the form, the trial page and the CSV Explorer show
    // them; 210,329 bytes is 205.4 KiB or 210.3 kB: the two ways of counting disagree.
    let sizes: [(usize, &str, &str); 5] = [
        (999, "999 bytes", "999 bytes"),
        (1_536, "1.5 KiB", "1,536 bytes"),
        (210_329, "205 KiB", "210,329 bytes"),
        (1_048_500, "1 MiB", "1,048,500 bytes"),
        (3_000_000, "2.9 MiB", "3,000,000 bytes"),
    ];
    let mut paths = Vec::new();
    for (bytes, _, _) in sizes {
        let path = files.path().join(format!("size-{bytes}.csv"));
        std::fs::write(&path, csv_of_exactly(bytes)).unwrap();
        paths.push(path.display().to_string());
    }
    let expected: Vec<Value> = sizes
        .iter()
        .map(|(bytes, spoken, exact)| json!([format!("size-{bytes}.csv"), spoken, exact]))
        .collect();

    let s = browser.session().await;
    // The demo's page: the limit in the same units, and its reassurance said once.
    s.goto(&app.url(&format!("/demos/{demo}"))).await.unwrap();
    s.wait_visible("form#trial-form").await;
    let page = s
        .execute("return document.body.innerText;", vec![])
        .await
        .unwrap();
    let page = page.as_str().unwrap();
    assert!(page.contains("50 MiB in all"), "{page}");
    assert_eq!(
        page.matches("destroyed").count(),
        1,
        "the reassurance is said more than once: {page}"
    );
    s.find(fantoccini::Locator::Css("input#files"))
        .await
        .unwrap()
        .send_keys(&paths.join("\n"))
        .await
        .unwrap();
    s.wait_until("#file-list li .size", Snap::shows_something, PATIENCE)
        .await;
    let listed = s
        .execute(
            "return [...document.querySelectorAll('#file-list li')].map(li => \
               [li.firstChild.textContent, li.querySelector('.size').textContent, \
                li.querySelector('.size').title]);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(listed, json!(expected), "the form's sizes");
    s.click("button#start").await;
    let url = s
        .wait_url(|u| u.path().starts_with("/trials/"), PROVISIONING)
        .await;
    let id = url.path().trim_start_matches("/trials/").to_string();
    assert_eq!(trial_status(&s, &["ready", "failed"]).await, "ready");
    s.wait_visible("table.files td.size").await;
    let shown = s
        .execute(
            "return [...document.querySelectorAll('table.files tbody tr')].map(tr => \
               [tr.cells[0].innerText, tr.querySelector('td.size').innerText, \
                tr.querySelector('td.size').title]);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(shown, json!(expected), "the trial page's sizes");
    let cookies = s.get_all_cookies().await.unwrap();
    open_demo(&s, &app, &id, "size-999.csv").await;
    let metas = s
        .execute(
            "return [...document.querySelectorAll('section.file')].map(f => \
               [f.querySelector('h2').innerText, f.querySelector('.meta').innerText]);",
            vec![],
        )
        .await
        .unwrap();
    for (bytes, spoken, _) in sizes {
        let name = format!("size-{bytes}.csv");
        let meta = metas
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m[0] == name.as_str())
            .unwrap_or_else(|| panic!("no {name} in the CSV Explorer: {metas}"));
        assert!(
            meta[1]
                .as_str()
                .unwrap()
                .contains(&format!("CSV · {spoken} ·")),
            "the CSV Explorer's size of {name}: {meta}"
        );
    }

    // The receipt: the exact bytes.
    s.goto(&app.url("/")).await.unwrap();
    for cookie in cookies {
        s.add_cookie(cookie).await.unwrap();
    }
    s.goto(&app.url(&format!("/trials/{id}"))).await.unwrap();
    s.click("button#end").await;
    s.click("button#end-confirm").await;
    s.wait_until("#receipt .bytes", Snap::shows_something, PATIENCE)
        .await;
    let receipt = s
        .execute(
            "return [...document.querySelectorAll('#receipt tr.receipt-file')].map(tr => \
               [tr.querySelector('.name').innerText, tr.querySelector('.bytes').innerText]);",
            vec![],
        )
        .await
        .unwrap();
    let exact: Vec<Value> = sizes
        .iter()
        .map(|(bytes, _, exact)| json!([format!("size-{bytes}.csv"), exact]))
        .collect();
    assert_eq!(receipt, json!(exact), "the receipt's sizes");
    // Every moment of the receipt on the browser's clock, with the exact one kept.
    let times = s
        .execute(
            "return [...document.querySelectorAll('#receipt time')].map(t => \
               [t.getAttribute('datetime'), t.innerText]);",
            vec![],
        )
        .await
        .unwrap();
    let times = times.as_array().unwrap();
    assert!(times.len() >= 4, "{times:?}");
    for t in times {
        let [clock24, clock12] = local_clock(&s, t[0].as_str().unwrap()).await;
        let text = t[1].as_str().unwrap();
        assert!(
            text.contains(&clock24) || text.contains(&clock12),
            "{text:?} is not {} on the browser's clock",
            t[0]
        );
    }
    s.close().await;
    app.wait_as_admin(&id, |s| s["data_deleted_at"].is_string())
        .await;
    assert_no_objects(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_csv_explorer_keeps_numbers_headings_and_badges_whole() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let Some(browser) =
        Browser::start("the_csv_explorer_keeps_numbers_headings_and_badges_whole").await
    else {
        return;
    };
    let app = TestApp::spawn().await;
    let (_, key) = app.vendor("Acme Analytics").await;
    let demo = app.demo(&key, csv_explorer_manifest()).await;
    let files = tempfile::tempdir().unwrap();
    let first = files.path().join("a-wetter.csv");
    std::fs::write(&first, european_export(60)).unwrap();
    let second = files.path().join("b-flights.csv");
    std::fs::write(&second, csv_of_size(4000)).unwrap();

    let s = browser.session().await;
    s.goto(&app.url(&format!("/demos/{demo}"))).await.unwrap();
    s.wait_visible("form#trial-form").await;
    // Both files in the one picker.
    s.find(fantoccini::Locator::Css("input#files"))
        .await
        .unwrap()
        .send_keys(&format!("{}\n{}", first.display(), second.display()))
        .await
        .unwrap();
    s.click("button#start").await;
    let url = s
        .wait_url(|u| u.path().starts_with("/trials/"), PROVISIONING)
        .await;
    let id = url.path().trim_start_matches("/trials/").to_string();
    assert_eq!(trial_status(&s, &["ready", "failed"]).await, "ready");
    open_demo(&s, &app, &id, "b-flights.csv").await;
    let demo_url = s.current_url().await.unwrap();
    let cookies = s.get_all_cookies().await.unwrap();

    // Row number 10 on one line.
    let numbers = boxes(&s, "#file-0 table.data td.rn").await;
    let ten = numbers
        .iter()
        .find(|n| n.text.trim() == "10")
        .expect("a row numbered 10");
    assert_eq!(ten.lines, 1, "row number 10 takes {} lines", ten.lines);

    // A jump to a file leaves its heading in sight, below the sticky header.
    s.click("nav.toc a[href='#file-1']").await;
    s.wait_url(|u| u.fragment() == Some("file-1"), PATIENCE)
        .await;
    let header = boxes(&s, "body > header").await[0].clone();
    let heading = boxes(&s, "#file-1 h2").await[0].clone();
    assert!(
        heading.top >= header.bottom,
        "the heading is at {:.1}, under the header ending at {:.1}",
        heading.top,
        header.bottom
    );
    // And the jump did bring it up there (the page scrolled to it).
    assert!(
        heading.top <= header.bottom + 40.0,
        "the heading is at {:.1}, far below the header ending at {:.1}",
        heading.top,
        header.bottom
    );

    // On a phone: type badges and row numbers whole.
    let phone = browser.phone().await;
    phone.goto(demo_url.as_str()).await.unwrap();
    for cookie in cookies {
        phone.add_cookie(cookie).await.unwrap();
    }
    phone.goto(demo_url.as_str()).await.unwrap();
    phone
        .wait_until("#file-1 h2", |h| h.text.contains("b-flights.csv"), PATIENCE)
        .await;
    for badge in boxes(&phone, ".stats .t").await {
        assert_eq!(badge.lines, 1, "the badge {:?} breaks", badge.text);
    }
    for n in boxes(&phone, "table.data td.rn").await {
        assert_eq!(n.lines, 1, "row number {:?} breaks", n.text);
    }
    phone.close().await;
    s.close().await;
    end_all(&app, &[id]).await;
}
