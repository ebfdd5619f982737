//! The telemetry dead-letter file: lines the database refused, kept on disk within a bound for
//! an operator to read and to re-send (`facilityd dead-letters list|resend`).
//!
//! Files under `state_dir`:
//!
//! | file | what |
//! | --- | --- |
//! | `dead-letter.lp` | the current file, appended to |
//! | `dead-letter.lp.1` .. `.3` | rotations, the oldest has the highest number |
//! | `dead-letter.resend.N` | files a resend took (renamed); removed when it is done, and taken first by the next resend when one was interrupted |
//! | `dead-letter.lock` | every operation on the files above holds an exclusive lock on it, so that the daemon and a resend never lose each other's lines |
//! | `dead-letter.resend.lock` | held by a resend for as long as it runs: one resend at a time, and a `.resend.N` file nobody holds is a leftover |
//!
//! Each append is one entry: a comment line `# <RFC 3339 time> <reason>`, then the refused lines.
//! Line protocol treats a line starting with `#` as a comment, so the files stay importable as
//! they are. Appends are synced (and the directory too when a file was created, renamed or
//! removed) before they count as kept.
//!
//! The bound (`[storage] dead_letter_max_bytes`) covers the current file and its rotations. The
//! current file rotates when the next append would take it past a quarter of the bound; the
//! oldest rotation beyond `.3` is removed and its lines are counted as dropped. Older rotations
//! are also removed while the files would otherwise exceed the bound (rotations holding one
//! oversized append each), so the files never exceed the bound unless a single append is larger
//! than the whole bound; such an append is kept, alone. `.resend.N` files are outside the bound:
//! they exist only while a resend runs, or after one was interrupted.
//!
//! All of this is blocking I/O: async callers use `spawn_blocking`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat, Utc};
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

/// Where lines the database rejects go, under `state_dir`: the current file's name (rotations
/// add `.1` .. `.3`).
pub const FILE_NAME: &str = "dead-letter.lp";
/// How many rotations are kept beside the current file.
pub const ROTATIONS: u32 = 3;
const LOCK_NAME: &str = "dead-letter.lock";
const RESEND_LOCK_NAME: &str = "dead-letter.resend.lock";
const RESEND_PREFIX: &str = "dead-letter.resend.";
/// How often the running daemon re-reads the files' total size (a resend changes it).
const REFRESH: Duration = Duration::from_secs(30);

/// Counters of the dead-letter files, for `/metrics`.
#[derive(Debug, Default)]
pub struct DeadLetterStats {
    /// Bytes of every dead-letter file (current, rotations, files taken by a resend).
    pub bytes: AtomicU64,
    /// Lines removed with the oldest rotation to stay within the bound.
    pub dropped_lines: AtomicU64,
}

/// The dead-letter files of one state directory.
#[derive(Debug)]
pub struct DeadLetter {
    dir: PathBuf,
    max_bytes: u64,
    stats: Arc<DeadLetterStats>,
}

/// One append: the comment line that heads it, and the lines after it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// The comment without `#` and the newline: `<time> <reason>`. `None` for lines before any
    /// comment (files written before reasons were kept).
    pub header: Option<String>,
    pub lines: Vec<String>,
}

impl Entry {
    /// The time of the append, when its comment has one.
    pub fn time(&self) -> Option<DateTime<FixedOffset>> {
        let h = self.header.as_deref()?;
        let (t, _) = h.split_once(' ').unwrap_or((h, ""));
        DateTime::parse_from_rfc3339(t).ok()
    }

    /// Why the lines were refused (`"reason unknown"` without a comment).
    pub fn reason(&self) -> &str {
        match self.header.as_deref() {
            None => "reason unknown",
            Some(h) => match h.split_once(' ') {
                Some((t, r)) if DateTime::parse_from_rfc3339(t).is_ok() => r,
                _ if DateTime::parse_from_rfc3339(h).is_ok() => "reason unknown",
                _ => h,
            },
        }
    }
}

/// Which of the files a [`FileInfo`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Current,
    Rotation(u32),
    /// Taken by a resend (`dead-letter.resend.N`).
    Resend(u64),
}

/// A dead-letter file as read by [`DeadLetter::snapshot`].
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub path: PathBuf,
    pub kind: FileKind,
    pub bytes: u64,
    pub entries: Vec<Entry>,
}

impl FileInfo {
    pub fn lines(&self) -> usize {
        self.entries.iter().map(|e| e.lines.len()).sum()
    }
}

/// Held by a resend while it runs (see [`DeadLetter::begin_resend`]).
#[derive(Debug)]
pub struct ResendLock {
    _file: File,
}

impl DeadLetter {
    /// The dead-letter files of `dir`, bounded by `max_bytes`. Touches nothing on disk.
    pub fn new(dir: &Path, max_bytes: u64, stats: Arc<DeadLetterStats>) -> Self {
        DeadLetter {
            dir: dir.to_path_buf(),
            max_bytes,
            stats,
        }
    }

    /// The current file.
    pub fn path(&self) -> PathBuf {
        self.rotation(0)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn stats(&self) -> &Arc<DeadLetterStats> {
        &self.stats
    }

    /// The current file (0) or a rotation (1..=3).
    fn rotation(&self, n: u32) -> PathBuf {
        if n == 0 {
            self.dir.join(FILE_NAME)
        } else {
            self.dir.join(format!("{FILE_NAME}.{n}"))
        }
    }

    fn quarter(&self) -> u64 {
        (self.max_bytes / 4).max(1)
    }

    /// Opens (creating it if needed) and locks `dead-letter.lock`; the lock goes with the file.
    fn lock(&self, exclusive: bool) -> io::Result<File> {
        let path = self.dir.join(LOCK_NAME);
        let f = open_lock_file(&path, self)?;
        if exclusive {
            f.lock()?
        } else {
            f.lock_shared()?
        }
        Ok(f)
    }

    /// Appends `lines` (newline-separated; blank lines and comments are left out) headed by a
    /// comment with the time and `reason`, rotating first if needed. Returns the lines kept.
    pub fn append(&self, lines: &str, reason: &str) -> io::Result<usize> {
        let (body, n) = normalize(lines);
        if n == 0 {
            return Ok(0);
        }
        let header = header_now(reason);
        let _lock = self.lock(true)?;
        let r = self.write_entry(&header, &body);
        self.update_bytes();
        r.map(|()| n)
    }

    /// Puts entries back as they were read, their comments unchanged (lines a resend could not
    /// send). An entry without a comment gets one saying its reason is unknown.
    pub fn put_back(&self, entries: &[Entry]) -> io::Result<usize> {
        let _lock = self.lock(true)?;
        let mut kept = 0;
        let mut result = Ok(());
        for e in entries {
            let (body, n) = normalize(&e.lines.join("\n"));
            if n == 0 {
                continue;
            }
            let header = match &e.header {
                Some(h) => format!("# {h}\n"),
                None => header_now("reason unknown"),
            };
            if let Err(err) = self.write_entry(&header, &body) {
                result = Err(err);
                break;
            }
            kept += n;
        }
        self.update_bytes();
        result.map(|()| kept)
    }

    /// Writes one entry into the current file; the caller holds the lock.
    fn write_entry(&self, header: &str, body: &str) -> io::Result<()> {
        let n = (header.len() + body.len()) as u64;
        let current = self.path();
        let mut size = file_size(&current)?;
        let mut dir_changed = false;
        if size > 0 && size + n > self.quarter() {
            self.rotate()?;
            size = 0;
            dir_changed = true;
        }
        // Rotations that each hold one oversized append could together pass the bound: the
        // oldest go until the files fit (or only the current file is left).
        loop {
            let rotations: Vec<(u32, u64)> = (1..=ROTATIONS)
                .filter_map(|i| match file_size(&self.rotation(i)) {
                    Ok(0) => None,
                    Ok(s) => Some((i, s)),
                    Err(_) => None,
                })
                .collect();
            let total = size + n + rotations.iter().map(|(_, s)| s).sum::<u64>();
            match rotations.last() {
                Some(&(oldest, _)) if total > self.max_bytes => {
                    // A rotation that cannot be removed (a read-only or failing disk) ends
                    // this: the append fails and its lines are counted as dropped, rather
                    // than the lock being held in a loop.
                    self.drop_rotation(oldest)?;
                    dir_changed = true;
                }
                _ => break,
            }
        }
        let existed = current.exists();
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)?;
        if !existed {
            adopt_owner(&self.dir, &current);
            dir_changed = true;
        }
        let mut data = Vec::with_capacity(n as usize);
        data.extend_from_slice(header.as_bytes());
        data.extend_from_slice(body.as_bytes());
        let written = f.write_all(&data).and_then(|()| f.sync_data());
        if let Err(e) = written {
            // No half entry may stay: the next append would run on from it.
            let _ = f.set_len(size).and_then(|()| f.sync_data());
            return Err(e);
        }
        if dir_changed {
            sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// `.3` goes (its lines counted as dropped), `.2` -> `.3`, `.1` -> `.2`, current -> `.1`.
    fn rotate(&self) -> io::Result<()> {
        let oldest = self.rotation(ROTATIONS);
        if oldest.exists() {
            self.drop_rotation(ROTATIONS)?;
        }
        for i in (0..ROTATIONS).rev() {
            let from = self.rotation(i);
            if from.exists() {
                fs::rename(&from, self.rotation(i + 1))?;
            }
        }
        Ok(())
    }

    /// Removes a rotation and counts its lines (not its comments) as dropped; `Err` when it
    /// stays.
    fn drop_rotation(&self, n: u32) -> io::Result<()> {
        let path = self.rotation(n);
        let lines = match File::open(&path).and_then(|f| count_lines(BufReader::new(f))) {
            Ok(l) => l,
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot read the oldest dead-letter rotation before removing it; its lines are not counted");
                0
            }
        };
        match fs::remove_file(&path) {
            Ok(()) => {
                self.stats.dropped_lines.fetch_add(lines, Relaxed);
                warn!(file = %path.display(), lines, bound = self.max_bytes, "dead-letter files at their bound (storage.dead_letter_max_bytes): removed the oldest rotation and its lines");
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                error!(file = %path.display(), error = %e, "cannot remove the oldest dead-letter rotation");
                Err(e)
            }
        }
    }

    /// The `.resend.N` files, by N.
    fn resend_files(&self) -> io::Result<Vec<(u64, PathBuf)>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            let name = e.file_name();
            let Some(n) = name
                .to_str()
                .and_then(|s| s.strip_prefix(RESEND_PREFIX))
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            out.push((n, e.path()));
        }
        out.sort();
        Ok(out)
    }

    /// Every dead-letter file: rotations oldest first, the current file, then `.resend.N`.
    fn all_files(&self) -> io::Result<Vec<(FileKind, PathBuf)>> {
        let mut out: Vec<(FileKind, PathBuf)> = (1..=ROTATIONS)
            .rev()
            .map(|i| (FileKind::Rotation(i), self.rotation(i)))
            .chain([(FileKind::Current, self.path())])
            .filter(|(_, p)| p.exists())
            .collect();
        for (n, p) in self.resend_files()? {
            out.push((FileKind::Resend(n), p));
        }
        Ok(out)
    }

    /// Re-reads the files' total size into the gauge (under the lock).
    pub fn refresh(&self) -> io::Result<u64> {
        let _lock = self.lock(true)?;
        Ok(self.update_bytes())
    }

    fn update_bytes(&self) -> u64 {
        let total = match self.all_files() {
            Ok(files) => files.iter().map(|(_, p)| file_size(p).unwrap_or(0)).sum(),
            Err(_) => return self.stats.bytes.load(Relaxed),
        };
        self.stats.bytes.store(total, Relaxed);
        total
    }

    /// [`refresh`](Self::refresh) off the async threads; a failure is logged, not returned.
    pub async fn refresh_in_background(self: Arc<Self>) {
        let dir = self.dir.clone();
        match tokio::task::spawn_blocking(move || self.refresh()).await {
            Ok(Ok(_)) | Err(_) => {}
            Ok(Err(e)) => {
                warn!(dir = %dir.display(), error = %e, "cannot read the dead-letter files' size")
            }
        }
    }

    /// Keeps the gauge right while the daemon runs (a resend changes the files): re-reads the
    /// sizes every 30 s until `stop` fires.
    pub async fn watch(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(REFRESH) => {}
            }
            self.clone().refresh_in_background().await;
        }
    }

    /// Every file with its entries, oldest first. The files are opened under a shared lock and
    /// read after it is released (an open file reads the same after a rename or removal), so
    /// the daemon waits only for the opening.
    pub fn snapshot(&self) -> io::Result<Vec<FileInfo>> {
        if !self.dir.is_dir() {
            return Ok(Vec::new());
        }
        let opened = {
            // Without write access to the state directory, the files are read without it.
            let _lock = self.lock(false).ok();
            let mut opened = Vec::new();
            for (kind, path) in self.all_files()? {
                match File::open(&path) {
                    Ok(f) => {
                        let bytes = f.metadata()?.len();
                        opened.push((kind, path, f, bytes));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_context(e, &path)),
                }
            }
            opened
        };
        let mut out = Vec::new();
        for (kind, path, f, bytes) in opened {
            let entries =
                parse_entries(BufReader::new(f.take(bytes))).map_err(|e| io_context(e, &path))?;
            out.push(FileInfo {
                path,
                kind,
                bytes,
                entries,
            });
        }
        Ok(out)
    }

    /// Takes the lock a resend holds while it runs; `None` when another resend holds it.
    pub fn begin_resend(&self) -> io::Result<Option<ResendLock>> {
        let f = open_lock_file(&self.dir.join(RESEND_LOCK_NAME), self)?;
        match f.try_lock() {
            Ok(()) => Ok(Some(ResendLock { _file: f })),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether a resend is running now (for `list`).
    pub fn resend_running(&self) -> bool {
        match File::open(self.dir.join(RESEND_LOCK_NAME)) {
            Ok(f) => matches!(f.try_lock_shared(), Err(fs::TryLockError::WouldBlock)),
            Err(_) => false,
        }
    }

    /// Renames the current file and its rotations to `dead-letter.resend.N` (oldest first,
    /// after the leftovers of an interrupted resend) and returns every `.resend.N` file in the
    /// order to send them. Appends made from now on start a new current file.
    pub fn take_for_resend(&self, _held: &ResendLock) -> io::Result<Vec<PathBuf>> {
        let _lock = self.lock(true)?;
        let mut taken = self.resend_files()?;
        let mut next = taken.last().map_or(1, |(n, _)| n + 1);
        let mut renamed = false;
        let mut result = Ok(());
        for i in (0..=ROTATIONS).rev() {
            let from = self.rotation(i);
            if !from.exists() {
                continue;
            }
            let to = self.dir.join(format!("{RESEND_PREFIX}{next}"));
            if let Err(e) = fs::rename(&from, &to) {
                result = Err(io_context(e, &from));
                break;
            }
            taken.push((next, to));
            next += 1;
            renamed = true;
        }
        if renamed {
            sync_dir(&self.dir)?;
        }
        self.update_bytes();
        result.map(|()| taken.into_iter().map(|(_, p)| p).collect())
    }

    /// Removes the files a resend took, once their lines are sent or put back.
    pub fn finish_resend(&self, files: &[PathBuf], _held: &ResendLock) -> io::Result<()> {
        let _lock = self.lock(true)?;
        for f in files {
            match fs::remove_file(f) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_context(e, f)),
            }
        }
        sync_dir(&self.dir)?;
        self.update_bytes();
        Ok(())
    }
}

/// Reads a dead-letter file's entries; comments head entries and are not lines.
pub fn read_entries(path: &Path) -> io::Result<Vec<Entry>> {
    let f = File::open(path).map_err(|e| io_context(e, path))?;
    parse_entries(BufReader::new(f)).map_err(|e| io_context(e, path))
}

fn parse_entries(mut r: impl BufRead) -> io::Result<Vec<Entry>> {
    let mut out: Vec<Entry> = Vec::new();
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if line.trim().is_empty() {
            continue;
        }
        if let Some(c) = line.strip_prefix('#') {
            out.push(Entry {
                header: Some(c.strip_prefix(' ').unwrap_or(c).to_string()),
                lines: Vec::new(),
            });
            continue;
        }
        match out.last_mut() {
            Some(e) => e.lines.push(line.to_string()),
            None => out.push(Entry {
                header: None,
                lines: vec![line.to_string()],
            }),
        }
    }
    out.retain(|e| !e.lines.is_empty());
    Ok(out)
}

/// Lines that are neither blank nor comments.
fn count_lines(mut r: impl BufRead) -> io::Result<u64> {
    let mut n = 0;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if r.read_until(b'\n', &mut buf)? == 0 {
            return Ok(n);
        }
        let t = buf.trim_ascii();
        if !t.is_empty() && t[0] != b'#' {
            n += 1;
        }
    }
}

/// The lines to keep, each ending in a newline, and how many.
fn normalize(lines: &str) -> (String, usize) {
    let mut out = String::with_capacity(lines.len() + 1);
    let mut n = 0;
    for l in lines.lines() {
        let l = l.trim_end_matches('\r');
        if l.trim().is_empty() || l.starts_with('#') {
            continue;
        }
        out.push_str(l);
        out.push('\n');
        n += 1;
    }
    (out, n)
}

/// `# <now> <reason>\n`, the reason on one line.
fn header_now(reason: &str) -> String {
    let reason: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!(
        "# {} {}\n",
        Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true),
        reason.trim()
    )
}

fn file_size(p: &Path) -> io::Result<u64> {
    match fs::metadata(p) {
        Ok(m) => Ok(m.len()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(io_context(e, p)),
    }
}

fn io_context(e: io::Error, p: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Opens a lock file read-only (a lock needs no write access), creating it when missing.
fn open_lock_file(path: &Path, dl: &DeadLetter) -> io::Result<File> {
    match File::open(path) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| io_context(e, path))?;
            adopt_owner(&dl.dir, path);
            Ok(f)
        }
        Err(e) => Err(io_context(e, path)),
    }
}

/// A file created by someone other than the state directory's owner (root running a resend)
/// is given to that owner, so that the daemon can go on writing it. Best effort: only root can.
fn adopt_owner(dir: &Path, path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt as _;
        if let (Ok(d), Ok(f)) = (fs::metadata(dir), fs::metadata(path))
            && (d.uid(), d.gid()) != (f.uid(), f.gid())
        {
            let _ = std::os::unix::fs::chown(path, Some(d.uid()), Some(d.gid()));
        }
    }
}

/// Makes the directory's entries (files created, renamed, removed) durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_context(e, dir))
}

#[cfg(test)]
mod tests;
