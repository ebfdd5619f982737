//! Start-up: the scan of every segment, which cuts torn or corrupt tails (and skips damaged
//! stretches) so that they are never replayed, the index built from what is intact, and the
//! forward cursor's file.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;
use tracing::warn;

use super::record::{CRC, Damage, scan_segment, u32_at, u64_at};
use super::{
    LogConfig, LogStats, Meta, SEGMENT_EXT, Segment, State, TelemetryLog, segment_path, sync_dir,
};

/// What start-up found.
#[derive(Debug, Default, Clone)]
pub struct Recovery {
    pub segments: usize,
    pub records: usize,
    /// Unforwarded lines found (they are forwarded now).
    pub backlog_lines: u64,
    /// Each cut: file, offset, bytes removed, why.
    pub cuts: Vec<(PathBuf, u64, u64, Damage)>,
}

impl TelemetryLog {
    /// Opens (creating) the log directory, scans every segment, cuts torn or corrupt tails and
    /// loads the cursor. The writer is started with [`TelemetryLog::start_writer`].
    pub fn open(cfg: LogConfig, stats: Arc<LogStats>) -> io::Result<(Arc<Self>, Recovery)> {
        fs::create_dir_all(&cfg.dir)?;
        let mut ids: Vec<u64> = Vec::new();
        for entry in fs::read_dir(&cfg.dir)? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) == Some("tmp") {
                // A compaction interrupted by a crash: the original is still in place.
                let _ = fs::remove_file(&path);
                continue;
            }
            if path.extension().and_then(|e| e.to_str()) != Some(SEGMENT_EXT) {
                continue;
            }
            if let Some(id) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
                .filter(|id| *id < u64::MAX / 2)
            {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        let mut rec = Recovery::default();
        let mut segments = VecDeque::new();
        let mut last_seq: Option<u64> = None;
        for id in ids {
            let path = segment_path(&cfg.dir, id);
            let bytes = fs::read(&path)?;
            let scan = scan_segment(&bytes, last_seq);
            for (from, to, why) in &scan.holes {
                // Damage inside a segment (not a crash, which only tears the tail): the
                // intact records after it are kept; the stretch is skipped, never replayed.
                stats.recovery_cuts.fetch_add(1, Relaxed);
                stats.recovery_cut_bytes.fetch_add(to - from, Relaxed);
                warn!(file = %path.display(), offset = from, skipped_bytes = to - from, reason = %why, "telemetry log: skipped a corrupt stretch; the records after it are kept");
                rec.cuts.push((path.clone(), *from, to - from, why.clone()));
            }
            if let Some(why) = &scan.error {
                let cut = bytes.len() as u64 - scan.valid_len;
                stats.recovery_cuts.fetch_add(1, Relaxed);
                stats.recovery_cut_bytes.fetch_add(cut, Relaxed);
                warn!(file = %path.display(), offset = scan.valid_len, cut_bytes = cut, reason = %why, "telemetry log: cut a torn or corrupt tail");
                rec.cuts
                    .push((path.clone(), scan.valid_len, cut, why.clone()));
                if scan.records.is_empty() {
                    fs::remove_file(&path)?;
                    continue;
                }
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(scan.valid_len)?;
                f.sync_all()?;
            }
            if scan.records.is_empty() {
                // Only a header (a crash right after rotation): nothing to keep.
                fs::remove_file(&path)?;
                continue;
            }
            last_seq = scan.records.last().map(|(h, _)| h.seq);
            rec.records += scan.records.len();
            segments.push_back(Segment {
                id,
                path,
                bytes: scan.valid_len,
                records: scan
                    .records
                    .into_iter()
                    .map(|(h, offset)| Meta::new(&h, offset))
                    .collect(),
                opened: Instant::now(),
            });
        }
        if !rec.cuts.is_empty() {
            sync_dir(&cfg.dir)?;
        }
        rec.segments = segments.len();
        let next_seq = last_seq.map_or(1, |s| s.saturating_add(1));
        let first_seq = segments
            .front()
            .and_then(|s: &Segment| s.records.first())
            .map_or(next_seq, |m| m.seq);
        let stored = read_cursor(&cfg.dir.join("cursor"));
        let cursor = if cfg.forwarding {
            match stored {
                Ok(Some(c)) => c.max(first_seq).min(next_seq),
                Ok(None) => first_seq,
                Err(e) => {
                    warn!(error = %e, "telemetry log: the forward cursor is unreadable; forwarding everything in the log again");
                    first_seq
                }
            }
        } else {
            next_seq
        };
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let (mut backlog_bytes, mut backlog_lines) = (0u64, 0u64);
        for m in segments.iter().flat_map(|s| s.records.iter()) {
            if m.seq >= cursor {
                backlog_bytes += m.total();
                backlog_lines += m.lines as u64;
            }
        }
        rec.backlog_lines = backlog_lines;
        let (synced_tx, _) = watch::channel(next_seq);
        let log = Arc::new(TelemetryLog {
            cfg,
            state: Mutex::new(State {
                segments,
                next_seq,
                synced: next_seq,
                cursor,
                total_bytes,
                backlog_bytes,
                backlog_lines,
                generation: 0,
                inflight_end: 0,
                tail: VecDeque::new(),
                tail_bytes: 0,
            }),
            synced_tx,
            stats,
            cursor_file: Mutex::new(cursor),
        });
        log.publish_gauges(&log.lock());
        Ok((log, rec))
    }
}

fn read_cursor(path: &Path) -> io::Result<Option<u64>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if bytes.len() != 12 || CRC.checksum(&bytes[..8]) != u32_at(&bytes, 8) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "cursor file is damaged",
        ));
    }
    Ok(Some(u64_at(&bytes, 0)))
}

pub(super) fn write_cursor(dir: &Path, cursor: u64) -> io::Result<()> {
    let mut bytes = cursor.to_le_bytes().to_vec();
    bytes.extend_from_slice(&CRC.checksum(&bytes).to_le_bytes());
    let tmp = dir.join("cursor.tmp");
    {
        let mut f = File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, dir.join("cursor"))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use std::fs::{self, OpenOptions};
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::telemetry::log::record::{FILE_MAGIC, HEADER_LEN, encode_record};
    use crate::telemetry::log::tests::{cfg, close, header, only_segment, part, read_all};
    use crate::telemetry::log::{Class, LogStats, SEGMENT_EXT};

    #[tokio::test]
    async fn a_torn_tail_is_cut_at_start_and_the_rest_kept() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
        let app = log.start_writer().unwrap();
        for i in 0..3 {
            app.append(vec![part(Class::Bulk, "a", i * 10, 10)], Vec::new())
                .await
                .unwrap();
        }
        close(app).await;
        drop(log);
        let seg = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
            .unwrap();
        let len = fs::metadata(&seg).unwrap().len();
        // A crash in the middle of the third record.
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let stats = Arc::new(LogStats::default());
        let (log, rec) = TelemetryLog::open(cfg(dir.path(), 1 << 20, true), stats.clone()).unwrap();
        assert_eq!(rec.cuts.len(), 1);
        assert_eq!(rec.records, 2);
        assert_eq!(stats.recovery_cuts.load(Relaxed), 1);
        let (body, _) = read_all(&log, log.cursor());
        assert_eq!(body.lines().count(), 20);
        // Appending goes on after the cut, with fresh sequence numbers.
        let app = log.start_writer().unwrap();
        app.append(vec![part(Class::Bulk, "a", 30, 1)], Vec::new())
            .await
            .unwrap();
        close(app).await;
        let (body, _) = read_all(&log, log.cursor());
        assert_eq!(body.lines().count(), 21);
    }

    /// A record damaged on disk while running: the intact records before it are read and
    /// forwarded, only the damaged one is skipped (and counted), and the ones after it too are
    /// read.
    #[tokio::test]
    async fn a_damaged_record_costs_only_its_own_lines() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let (log, _) = TelemetryLog::open(cfg(dir.path(), 1 << 20, true), stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        for i in 0..4 {
            app.append(vec![part(Class::Bulk, "a", i * 10, 10)], Vec::new())
                .await
                .unwrap();
        }
        close(app).await;
        // Flip a payload byte of the third record.
        let seg = only_segment(dir.path());
        let mut bytes = fs::read(&seg).unwrap();
        let scan = scan_segment(&bytes, None);
        let (_, off) = scan.records[2];
        bytes[off as usize + HEADER_LEN + 3] ^= 0x20;
        fs::write(&seg, &bytes).unwrap();
        let first = log.read_chunk(1, 1000).unwrap().unwrap();
        assert_eq!((first.lines, first.next_seq), (20, 3));
        let skipped = log.read_chunk(3, 1000).unwrap().unwrap();
        assert_eq!((skipped.lines, skipped.next_seq), (0, 4));
        assert_eq!(stats.dropped_corrupt_lines.load(Relaxed), 10);
        let last = log.read_chunk(4, 1000).unwrap().unwrap();
        assert_eq!(last.body, part(Class::Bulk, "a", 30, 10).body);
        // At start-up the damaged record is a hole: the one after it is kept.
        drop(log);
        let (log, rec) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
        assert_eq!(rec.records, 3);
        assert_eq!(rec.cuts.len(), 1);
        let (body, _) = read_all(&log, 1);
        assert_eq!(body.lines().count(), 30);
    }

    #[test]
    fn an_impossible_sequence_number_is_damage_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = FILE_MAGIC.to_vec();
        let mut h = header(7);
        h.len = 4;
        encode_record(&h, b"a 1\n", &mut seg);
        h.seq = u64::MAX;
        encode_record(&h, b"a 2\n", &mut seg);
        fs::write(dir.path().join("00000000000000000001.seg"), &seg).unwrap();
        write_cursor(dir.path(), 5).unwrap();
        let (log, rec) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
        assert_eq!(rec.records, 1);
        assert_eq!(log.cursor(), 7);
    }
}
