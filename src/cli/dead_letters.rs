//! `facilityd dead-letters list|resend`: what the dead-letter files hold, and sending their
//! lines again once the cause of the refusal is fixed.
//!
//! The resend writes to the database of the config's `[influxdb]` itself, never through the
//! running daemon, and works while the daemon runs: under the dead-letter lock it renames the
//! files to `dead-letter.resend.N` and releases the lock, so the daemon goes on appending to a
//! new file meanwhile (see [`super::dead_letter`]). Lines are sent in batches of `batch_size`,
//! split on 413 and bisected on 400/422 like the forwarder does, so that only the lines refused
//! again are kept: they go back with the new reason. Any other failure (network, 5xx, 401, ...)
//! stops the resend: every line not sent yet goes back as it was, comment included, and the
//! command fails with the error. A resend killed midway leaves its `.resend.N` files; the next
//! one sends them first (lines written twice are overwritten in place by the database).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, FixedOffset};

use crate::telemetry::dead_letter::{
    DeadLetter, Entry, FileInfo, FileKind, ROTATIONS, read_entries,
};
use crate::telemetry::influx::{InfluxWriter, LineWriter, WriteError};

#[derive(Debug, clap::Args)]
pub struct DeadLettersArgs {
    /// Configuration file: `[gateway] state_dir`, `[storage]` and `[influxdb]` are read from it.
    #[arg(short, long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: DeadLettersCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// The dead-letter files: sizes, line counts, and the reasons with their counts and first
    /// and last time.
    List,
    /// Send the dead letters to the database again; lines refused again are kept with the new
    /// reason. Safe while the daemon runs.
    Resend {
        /// Say what would be sent, and to where, without sending or moving anything.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Runs `facilityd dead-letters ...`.
pub async fn run(a: DeadLettersArgs) -> anyhow::Result<()> {
    let path = crate::cli::config_path(a.config.clone());
    let s = crate::settings::load(&path).map_err(|e| anyhow!("{e}"))?;
    let dl = Arc::new(DeadLetter::new(
        &s.gateway.state_dir,
        s.storage.dead_letter_max_bytes,
        Arc::default(),
    ));
    match a.command {
        DeadLettersCommand::List => {
            let d = dl.clone();
            let report = tokio::task::spawn_blocking(move || list_report(&d)).await??;
            print!("{report}");
            Ok(())
        }
        DeadLettersCommand::Resend { dry_run } => {
            let ix = s.influxdb.as_ref().ok_or_else(|| {
                anyhow!(
                    "{}: no [influxdb] url configured: nowhere to send the dead letters",
                    path.display()
                )
            })?;
            let writer = InfluxWriter::new(ix).map_err(anyhow::Error::msg)?;
            let target = format!("{} ({})", ix.url, ix.api.target());
            if dry_run {
                let d = dl.clone();
                let files = tokio::task::spawn_blocking(move || d.snapshot()).await??;
                print!("{}", dry_run_report(&files, ix.batch_size, &target));
                return Ok(());
            }
            let report = resend(dl.clone(), &writer, ix.batch_size).await?;
            print!("{}", report.describe(&target, &dl));
            match report.stopped_by {
                Some(e) => Err(anyhow!("the resend stopped: {e}")),
                None => Ok(()),
            }
        }
    }
}

/// What a resend did.
#[derive(Debug, Default)]
pub struct ResendReport {
    /// Files taken (the leftovers of an interrupted resend among them).
    pub files: usize,
    pub sent: u64,
    /// Lines refused again, by the new reason, in the order first met.
    pub refused: Vec<(String, u64)>,
    /// Lines not sent because the resend stopped; put back as they were.
    pub left: u64,
    /// The failure that stopped the resend.
    pub stopped_by: Option<WriteError>,
}

impl ResendReport {
    pub fn refused_lines(&self) -> u64 {
        self.refused.iter().map(|(_, n)| n).sum()
    }

    fn describe(&self, target: &str, dl: &DeadLetter) -> String {
        let mut out = String::new();
        let file = dl.path();
        if self.files == 0 {
            let _ = writeln!(out, "no dead letters in {}", dl.dir().display());
            return out;
        }
        let _ = writeln!(
            out,
            "re-sent {} lines from {} to {target}",
            self.sent,
            count(self.files, "file")
        );
        let _ = writeln!(
            out,
            "refused again: {} lines (kept in {})",
            self.refused_lines(),
            file.display()
        );
        for (reason, n) in &self.refused {
            let _ = writeln!(out, "  {n:>8}  {reason}");
        }
        let _ = write!(out, "left: {} lines", self.left);
        if let Some(e) = &self.stopped_by {
            let _ = write!(out, " (put back into {}; stopped by: {e})", file.display());
        }
        let _ = writeln!(out);
        let dropped = dl
            .stats()
            .dropped_lines
            .load(std::sync::atomic::Ordering::Relaxed);
        if dropped > 0 {
            let _ = writeln!(
                out,
                "dropped: {dropped} lines (the oldest rotation went to keep storage.dead_letter_max_bytes)"
            );
        }
        out
    }
}

/// One line to send and the entry it came from.
struct Line {
    text: String,
    entry: usize,
}

/// Takes the dead-letter files, sends their lines with `writer` in batches of `batch_size`, keeps
/// what is refused again, puts back what could not be sent, and removes the taken files.
pub async fn resend(
    dl: Arc<DeadLetter>,
    writer: &dyn LineWriter,
    batch_size: usize,
) -> anyhow::Result<ResendReport> {
    let d = dl.clone();
    let (held, files) = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        if !d.dir().is_dir() {
            return Ok((None, Vec::new()));
        }
        let held = d
            .begin_resend()
            .context("cannot take the resend lock")?
            .ok_or_else(|| anyhow!("another `facilityd dead-letters resend` is running"))?;
        let files = d
            .take_for_resend(&held)
            .context("cannot take the dead-letter files")?;
        Ok((Some(held), files))
    })
    .await??;
    let Some(held) = held else {
        return Ok(ResendReport::default());
    };
    let paths = files.clone();
    let entries = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<Entry>> {
        let mut all = Vec::new();
        for p in &paths {
            all.extend(read_entries(p)?);
        }
        Ok(all)
    })
    .await?
    .context("cannot read the dead-letter files (they stay for the next resend)")?;
    let lines: Vec<Line> = entries
        .iter()
        .enumerate()
        .flat_map(|(i, e)| {
            e.lines.iter().map(move |l| Line {
                text: l.clone(),
                entry: i,
            })
        })
        .collect();

    let mut report = ResendReport {
        files: files.len(),
        ..Default::default()
    };
    // Refused lines by their new reason, in the order first met.
    let mut refused: Vec<(String, String)> = Vec::new();
    let mut keep = |reason: String, range: std::ops::Range<usize>| {
        let body: String = lines[range].iter().map(|l| l.text.clone() + "\n").collect();
        match refused.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, b)) => b.push_str(&body),
            None => refused.push((reason, body)),
        }
    };
    let step = batch_size.max(1);
    let mut parts: VecDeque<std::ops::Range<usize>> = (0..lines.len())
        .step_by(step)
        .map(|a| a..(a + step).min(lines.len()))
        .collect();
    let mut unsent: Vec<std::ops::Range<usize>> = Vec::new();
    while let Some(part) = parts.pop_front() {
        let body: String = lines[part.clone()]
            .iter()
            .map(|l| l.text.clone() + "\n")
            .collect();
        match writer.write(body).await {
            Ok(()) => report.sent += part.len() as u64,
            Err(WriteError::TooLarge) if part.len() > 1 => {
                let mid = part.start + part.len() / 2;
                parts.push_front(mid..part.end);
                parts.push_front(part.start..mid);
            }
            Err(WriteError::TooLarge) => {
                keep("a single line is too large (HTTP 413)".into(), part);
            }
            // The database writes the valid lines of a refused batch; halving finds the others
            // (a line written twice is overwritten in place).
            Err(WriteError::Rejected { .. }) if part.len() > 1 => {
                let mid = part.start + part.len() / 2;
                parts.push_front(mid..part.end);
                parts.push_front(part.start..mid);
            }
            Err(WriteError::Rejected { status, text }) => {
                keep(format!("HTTP {status}: {text}"), part);
            }
            Err(e) => {
                unsent.push(part);
                unsent.extend(parts.drain(..));
                report.stopped_by = Some(e);
            }
        }
    }

    // What could not be sent goes back with its own comment, entry by entry.
    let mut back: Vec<(usize, Entry)> = Vec::new();
    for l in unsent.into_iter().flat_map(|r| &lines[r]) {
        report.left += 1;
        match back.last_mut() {
            Some((i, e)) if *i == l.entry => e.lines.push(l.text.clone()),
            _ => back.push((
                l.entry,
                Entry {
                    header: entries[l.entry].header.clone(),
                    lines: vec![l.text.clone()],
                },
            )),
        }
    }
    let back: Vec<Entry> = back.into_iter().map(|(_, e)| e).collect();
    report.refused = refused
        .iter()
        .map(|(r, b)| (r.clone(), b.lines().count() as u64))
        .collect();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        for (reason, body) in &refused {
            dl.append(body, reason).context(
                "cannot keep the lines refused again (the taken files stay for the next resend)",
            )?;
        }
        dl.put_back(&back).context(
            "cannot put back the lines not sent (the taken files stay for the next resend)",
        )?;
        dl.finish_resend(&files, &held)
            .context("cannot remove the files the resend took")?;
        Ok(())
    })
    .await??;
    Ok(report)
}

/// What `resend --dry-run` prints.
fn dry_run_report(files: &[FileInfo], batch_size: usize, target: &str) -> String {
    let lines: usize = files.iter().map(FileInfo::lines).sum();
    let batches = lines.div_ceil(batch_size.max(1));
    format!(
        "would re-send {lines} lines from {} in {} of up to {batch_size} lines to {target}; nothing sent, nothing moved\n",
        count(files.len(), "file"),
        count(batches, "batch"),
    )
}

/// What `list` prints: each file, then the reasons.
pub fn list_report(dl: &DeadLetter) -> anyhow::Result<String> {
    let files = dl.snapshot().with_context(|| {
        format!(
            "cannot read the dead-letter files in {}",
            dl.dir().display()
        )
    })?;
    let mut out = String::new();
    if files.is_empty() {
        let _ = writeln!(out, "no dead letters in {}", dl.dir().display());
        return Ok(out);
    }
    let _ = writeln!(
        out,
        "dead letters in {} (bound {}: the current file and {ROTATIONS} rotations of a quarter each)",
        dl.dir().display(),
        size(dl.max_bytes())
    );
    let running = dl.resend_running();
    let width = files
        .iter()
        .filter_map(|f| f.path.file_name())
        .map(|n| n.len())
        .max()
        .unwrap_or(0)
        .max("total".len());
    let _ = writeln!(out, "  {:<width$}  {:>12}  {:>9}", "file", "bytes", "lines");
    for f in &files {
        let name = f
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let note = match f.kind {
            FileKind::Resend(_) if running => "  (being re-sent now)",
            FileKind::Resend(_) => {
                "  (left by an interrupted resend: the next resend sends it first)"
            }
            _ => "",
        };
        let _ = writeln!(
            out,
            "  {name:<width$}  {:>12}  {:>9}{note}",
            f.bytes,
            f.lines()
        );
    }
    let _ = writeln!(
        out,
        "  {:<width$}  {:>12}  {:>9}",
        "total",
        files.iter().map(|f| f.bytes).sum::<u64>(),
        files.iter().map(FileInfo::lines).sum::<usize>()
    );

    // Reasons: lines, first and last time.
    type Seen = (
        usize,
        Option<DateTime<FixedOffset>>,
        Option<DateTime<FixedOffset>>,
    );
    let mut reasons: BTreeMap<&str, Seen> = BTreeMap::new();
    for e in files.iter().flat_map(|f| &f.entries) {
        let r = reasons.entry(e.reason()).or_insert((0, None, None));
        r.0 += e.lines.len();
        if let Some(t) = e.time() {
            r.1 = Some(r.1.map_or(t, |f| f.min(t)));
            r.2 = Some(r.2.map_or(t, |l| l.max(t)));
        }
    }
    let mut reasons: Vec<(&str, Seen)> = reasons.into_iter().collect();
    reasons.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(b.0)));
    let time = |t: Option<DateTime<FixedOffset>>| {
        t.map_or("-".to_string(), |t| {
            t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
        })
    };
    let _ = writeln!(out, "\nreasons: {}", reasons.len());
    let _ = writeln!(
        out,
        "  {:>9}  {:<24}  {:<24}  reason",
        "lines", "first", "last"
    );
    for (reason, (n, first, last)) in reasons {
        let _ = writeln!(
            out,
            "  {n:>9}  {:<24}  {:<24}  {reason}",
            time(first),
            time(last)
        );
    }
    Ok(out)
}

/// `1 file`, `2 files`, `3 batches`.
fn count(n: usize, word: &str) -> String {
    match (n, word.ends_with("ch")) {
        (1, _) => format!("1 {word}"),
        (_, true) => format!("{n} {word}es"),
        _ => format!("{n} {word}s"),
    }
}

/// A size as the config writes it when it is a whole number of MiB or KiB.
fn size(b: u64) -> String {
    match b {
        _ if b >= 1 << 20 && b.is_multiple_of(1 << 20) => format!("{}MiB", b >> 20),
        _ if b >= 1 << 10 && b.is_multiple_of(1 << 10) => format!("{}KiB", b >> 10),
        _ => format!("{b} bytes"),
    }
}

#[cfg(test)]
mod tests;
