//! A real headless browser (Debian's `chromium`) for the pages facilityd renders: the DOM
//! after the page loaded (scripts run), the console errors it logged, and a screenshot with a
//! check that it is not blank.
//!
//! Pages mark their figures with `data-figure="name"` attributes; [`figures`] reads them back
//! from the DOM so that a test can compare what a reader sees with the JSON behind it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

const CHROMIUM_MISSING: &str =
    "chromium not found: install it with `apt-get install chromium` (or run ./scripts/test.sh)";

/// What the browser made of a page.
#[derive(Debug)]
pub struct Rendered {
    /// The DOM after load, serialized.
    pub dom: String,
    /// Console messages at error level and uncaught exceptions.
    pub console_errors: Vec<String>,
    /// The screenshot (PNG), `width` x `height`.
    pub png: PathBuf,
}

fn chromium() -> PathBuf {
    super::find_binary(
        "chromium",
        &["/usr/bin/chromium", "/usr/bin/chromium-browser"],
    )
    .expect(CHROMIUM_MISSING)
}

fn run(args: &[String]) -> (String, String) {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-extensions",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .args(args)
        .output()
        .expect(CHROMIUM_MISSING);
    assert!(
        out.status.success(),
        "chromium {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Loads `page` (a file) in headless chromium: its DOM, console errors, and a screenshot
/// `width` x `height` written to `png`.
pub fn render(page: &Path, png: &Path, width: u32, height: u32) -> Rendered {
    let url = format!("file://{}", page.display());
    let profile = tempfile::tempdir().expect("chromium profile dir");
    let profile_arg = format!("--user-data-dir={}", profile.path().display());
    let (dom, log) = run(&[profile_arg.clone(), "--dump-dom".into(), url.clone()]);
    let (_, shot_log) = run(&[
        profile_arg,
        format!("--screenshot={}", png.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".into(),
        url,
    ]);
    let console_errors = log
        .lines()
        .chain(shot_log.lines())
        .filter(|l| l.contains(":CONSOLE") && (l.contains("Uncaught") || l.contains("Error")))
        .map(str::to_string)
        .collect();
    Rendered {
        dom,
        console_errors,
        png: png.to_path_buf(),
    }
}

/// Share of the screenshot's pixels that differ from its most common colour: a blank page
/// is 0.
pub fn ink_share(png: &Path) -> f64 {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(png).expect("open screenshot"),
    ));
    let mut reader = decoder.read_info().expect("screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("decode screenshot");
    let bytes = &buf[..info.buffer_size()];
    let px = info.color_type.samples();
    let mut counts: BTreeMap<&[u8], usize> = BTreeMap::new();
    for p in bytes.chunks_exact(px) {
        *counts.entry(p).or_default() += 1;
    }
    let total = bytes.len() / px;
    let background = counts.values().copied().max().unwrap_or(0);
    (total - background) as f64 / total.max(1) as f64
}

/// The page's figures: the text of every element with `data-figure="NAME"`, by name (a name
/// used more than once keeps every text, in page order).
pub fn figures(dom: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut rest = dom;
    while let Some(at) = rest.find("data-figure=\"") {
        rest = &rest[at + "data-figure=\"".len()..];
        let Some(end) = rest.find('"') else { break };
        let name = rest[..end].to_string();
        // The element's text: from the end of its start tag to the next tag.
        let Some(gt) = rest.find('>') else { break };
        let text_start = &rest[gt + 1..];
        let text_end = text_start.find('<').unwrap_or(text_start.len());
        let text = html_unescape(text_start[..text_end].trim());
        out.entry(name).or_default().push(text);
        rest = text_start;
    }
    out
}

fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// Fails when the page refers to anything outside itself (scripts, styles, fonts, images).
pub fn assert_self_contained(html: &str) {
    for needle in [
        "src=\"http",
        "href=\"http",
        "src='http",
        "url(http",
        "@import",
        "<link ",
    ] {
        assert!(
            !html.contains(needle),
            "the page refers to something outside itself ({needle})"
        );
    }
}
