use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

use super::*;

/// A database that refuses lines holding `bad` (400, writing the others of the batch, as
/// InfluxDB does), batches over `max_lines` (413), and every write from the `fail_from`th on
/// (a network error).
#[derive(Default)]
struct Script {
    max_lines: usize,
    fail_from: Option<usize>,
    writes: Mutex<usize>,
    written: Mutex<Vec<String>>,
}

impl LineWriter for Script {
    fn write<'a>(
        &'a self,
        body: String,
    ) -> Pin<Box<dyn Future<Output = Result<(), WriteError>> + Send + 'a>> {
        Box::pin(async move {
            let n = {
                let mut w = self.writes.lock().unwrap();
                *w += 1;
                *w
            };
            if self.fail_from.is_some_and(|f| n >= f) {
                return Err(WriteError::Retryable("connection refused".into()));
            }
            if body.lines().count() > self.max_lines {
                return Err(WriteError::TooLarge);
            }
            let mut written = self.written.lock().unwrap();
            written.extend(
                body.lines()
                    .filter(|l| !l.contains("bad"))
                    .map(String::from),
            );
            if body.contains("bad") {
                return Err(WriteError::Rejected {
                    status: 400,
                    text: "field type conflict".into(),
                });
            }
            Ok(())
        })
    }
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.ends_with(".lock"))
        .collect();
    v.sort();
    v
}

const OLD: &str = "# 2026-01-01T00:00:00.000Z HTTP 400: old reason\n";

#[tokio::test]
async fn only_the_lines_refused_again_are_kept_with_the_new_reason() {
    let dir = tempfile::tempdir().unwrap();
    let dl = Arc::new(DeadLetter::new(dir.path(), 1 << 20, Arc::default()));
    std::fs::write(
        dir.path().join("dead-letter.lp.1"),
        format!("{OLD}m good=1 1\nm good=2 2\nm bad=1 3\nm good=3 4\nm good=4 5\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dead-letter.lp"),
        "m good=5 6\nm bad=2 7\nm good=6 8\n",
    )
    .unwrap();
    let db = Script {
        max_lines: 3,
        ..Default::default()
    };
    let report = resend(dl.clone(), &db, 4).await.unwrap();
    assert_eq!(report.files, 2);
    assert_eq!(report.sent, 6);
    assert_eq!(
        report.refused,
        [("HTTP 400: field type conflict".to_string(), 2)]
    );
    assert_eq!((report.left, report.stopped_by), (0, None));
    let mut written = db.written.lock().unwrap().clone();
    written.sort();
    written.dedup();
    assert_eq!(written.len(), 6, "{written:?}");
    assert_eq!(files_in(dir.path()), ["dead-letter.lp"]);
    let kept = read_entries(&dl.path()).unwrap();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0].reason(), "HTTP 400: field type conflict");
    assert_eq!(kept[0].lines, ["m bad=1 3", "m bad=2 7"]);
    assert!(kept[0].time().unwrap().year() >= 2026);
}

use chrono::Datelike as _;

#[tokio::test]
async fn a_failure_stops_the_resend_and_every_unsent_line_goes_back_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let dl = Arc::new(DeadLetter::new(dir.path(), 1 << 20, Arc::default()));
    std::fs::write(
        dir.path().join("dead-letter.lp"),
        format!("m a=1 1\nm a=2 2\n{OLD}m b=1 3\nm bad=1 4\nm b=2 5\n"),
    )
    .unwrap();
    // A leftover of an interrupted resend is sent first.
    std::fs::write(dir.path().join("dead-letter.resend.4"), "m first=1 0\n").unwrap();
    let db = Script {
        max_lines: 100,
        fail_from: Some(2),
        ..Default::default()
    };
    let report = resend(dl.clone(), &db, 2).await.unwrap();
    assert_eq!(report.sent, 2);
    assert_eq!(report.left, 4);
    assert!(matches!(report.stopped_by, Some(WriteError::Retryable(_))));
    assert_eq!(*db.written.lock().unwrap(), ["m first=1 0", "m a=1 1"]);
    assert_eq!(files_in(dir.path()), ["dead-letter.lp"]);
    let back = read_entries(&dl.path()).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back[0].reason(), "reason unknown");
    assert_eq!(back[0].lines, ["m a=2 2"]);
    assert_eq!(back[1].header.as_deref(), Some(&OLD[2..OLD.len() - 1]));
    assert_eq!(back[1].lines, ["m b=1 3", "m bad=1 4", "m b=2 5"]);
    let text = report.describe("db", &dl);
    assert!(
        text.contains("re-sent 2 lines from 2 files to db"),
        "{text}"
    );
    assert!(text.contains("left: 4 lines (put back into"), "{text}");
}

#[tokio::test]
async fn one_resend_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let dl = Arc::new(DeadLetter::new(dir.path(), 1 << 20, Arc::default()));
    dl.append("m a=1 1\n", "r").unwrap();
    let _held = dl.begin_resend().unwrap().unwrap();
    let err = resend(dl.clone(), &Script::default(), 10)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another"), "{err}");
    assert_eq!(files_in(dir.path()), ["dead-letter.lp"]);
}

#[test]
fn list_shows_files_lines_and_reasons_with_their_times() {
    let dir = tempfile::tempdir().unwrap();
    let dl = DeadLetter::new(dir.path(), 1 << 20, Arc::default());
    assert_eq!(
        list_report(&dl).unwrap(),
        format!("no dead letters in {}\n", dir.path().display())
    );
    std::fs::write(
        dir.path().join("dead-letter.lp.1"),
        "# 2026-03-01T10:00:00.000Z HTTP 400: conflict\nm a=1 1\nm a=2 2\n# 2026-03-01T09:00:00.000Z HTTP 413: big\nm b=1 1\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("dead-letter.lp"),
        "# 2026-03-02T10:00:00.000Z HTTP 400: conflict\nm a=3 3\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("dead-letter.resend.2"), "m c=1 1\n").unwrap();
    let out = list_report(&dl).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[0],
        format!(
            "dead letters in {} (bound 1MiB: the current file and 3 rotations of a quarter each)",
            dir.path().display()
        )
    );
    assert!(
        lines[1].contains("file") && lines[1].contains("lines"),
        "{out}"
    );
    let row = |name: &str| {
        lines
            .iter()
            .find(|l| l.trim_start().starts_with(&format!("{name} ")))
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .unwrap_or_else(|| panic!("no row {name}:\n{out}"))
    };
    assert_eq!(row("dead-letter.lp.1")[2], "3");
    assert_eq!(row("dead-letter.lp")[2], "1");
    assert_eq!(row("dead-letter.resend.2")[2], "1");
    assert!(out.contains("left by an interrupted resend"), "{out}");
    assert_eq!(row("total")[2], "5");
    assert!(out.contains("reasons: 3"), "{out}");
    assert_eq!(
        row("3"),
        [
            "3",
            "2026-03-01T10:00:00.000Z",
            "2026-03-02T10:00:00.000Z",
            "HTTP",
            "400:",
            "conflict"
        ]
    );
    assert!(out.contains("reason unknown"), "{out}");
    let files = dl.snapshot().unwrap();
    assert_eq!(
        dry_run_report(&files, 2, "db"),
        "would re-send 5 lines from 3 files in 3 batches of up to 2 lines to db; nothing sent, nothing moved\n"
    );
}
