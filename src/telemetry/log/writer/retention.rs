//! Keeping the log in its bounds, on the writer thread: retention removes forwarded history
//! older than `history_retention`; over `log_max_bytes`, forwarded history goes first (whole
//! segments), then the oldest unforwarded bulk lines (closed segments rewritten without them),
//! and only last whole segments with their alarm, state and event lines. Every drop is counted.

use std::fs::{self, File};
use std::io::{self, Write as _};
use std::os::unix::fs::FileExt as _;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tracing::{info, warn};

use super::Writer;
use crate::telemetry::log::record::{Class, FILE_MAGIC};
use crate::telemetry::log::{now_ms, sync_dir};

/// A segment is closed after this long, so that retention can remove old data of a quiet log.
const SEGMENT_MAX_AGE: Duration = Duration::from_secs(3600);

impl Writer {
    pub(super) fn housekeeping(&mut self) {
        // Rotate an old active segment so that retention can remove it later.
        let old_active = {
            let st = self.log.lock();
            st.segments
                .back()
                .is_some_and(|s| !s.records.is_empty() && s.opened.elapsed() >= SEGMENT_MAX_AGE)
        };
        if old_active {
            if let Err(e) = self.rotate() {
                self.disk_failed(&e);
            }
            self.requeue_recovered();
        }
        self.expire_history();
    }

    /// Removes forwarded segments older than `history_retention`.
    fn expire_history(&mut self) {
        let limit = now_ms()
            .saturating_sub(self.log.cfg.retention.as_millis().min(i64::MAX as u128) as i64);
        let mut removed = Vec::new();
        {
            let mut st = self.log.lock();
            while st.segments.len() > 1 {
                let Some(first) = st.segments.front() else {
                    break;
                };
                let forwarded = first.last_seq().is_none_or(|l| l < st.cursor);
                let old = first.records.last().is_none_or(|m| m.appended_ms < limit);
                if !(forwarded && old) {
                    break;
                }
                if let Some(seg) = st.segments.pop_front() {
                    st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
                    st.generation += 1;
                    self.log
                        .stats
                        .history_expired_bytes
                        .fetch_add(seg.bytes, Relaxed);
                    removed.push(seg.path);
                }
            }
            self.log.publish_gauges(&st);
        }
        for p in removed {
            if let Err(e) = fs::remove_file(&p) {
                warn!(file = %p.display(), error = %e, "telemetry log: cannot remove an expired segment");
            }
        }
    }

    /// Removes whole forwarded segments, oldest first: until the log is under its bound, or
    /// `all` of them (the disk is full).
    pub(super) fn evict_history(&mut self, all: bool) {
        let mut removed = Vec::new();
        let mut freed = 0u64;
        {
            let mut st = self.log.lock();
            while all || st.total_bytes > self.log.cfg.max_bytes {
                // Never the active segment (the last one).
                if st.segments.len() < 2 {
                    break;
                }
                let Some(first) = st.segments.front() else {
                    break;
                };
                if first.last_seq().is_some_and(|l| l >= st.cursor) {
                    break;
                }
                if let Some(seg) = st.segments.pop_front() {
                    st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
                    st.generation += 1;
                    freed += seg.bytes;
                    removed.push(seg.path);
                }
            }
            self.log.publish_gauges(&st);
        }
        if freed > 0 {
            self.log
                .stats
                .history_evicted_bytes
                .fetch_add(freed, Relaxed);
            info!(
                bytes = freed,
                "telemetry log: removed forwarded history to make room"
            );
        }
        for p in removed {
            if let Err(e) = fs::remove_file(&p) {
                warn!(file = %p.display(), error = %e, "telemetry log: cannot remove a segment");
            }
        }
    }

    /// Brings the log under `log_max_bytes`: forwarded history first, then the oldest
    /// unforwarded bulk lines, then the oldest priority lines. Every drop is counted and logged.
    pub(super) fn enforce_bound(&mut self) {
        let max = self.log.cfg.max_bytes;
        self.evict_history(false);
        if self.log.lock().total_bytes > max && self.compact_bulk() {
            // Still over: the active segment may hold the bulk lines left; close it so it can
            // be compacted too, rather than drop priority lines before them.
            let active_has_bulk = {
                let st = self.log.lock();
                st.total_bytes > max
                    && st.segments.back().is_some_and(|s| {
                        s.records
                            .iter()
                            .any(|m| m.seq < st.cursor || m.class == Class::Bulk)
                    })
            };
            // Only once the active segment is worth it: rotating a small one on every append
            // would make a new file (and half a dozen syncs) per batch.
            if active_has_bulk && self.active_bytes >= self.log.cfg.segment_bytes() / 2 {
                match self.rotate() {
                    Ok(()) => {
                        self.compact_bulk();
                    }
                    Err(e) => self.disk_failed(&e),
                }
            }
        }
        // Bulk lines still in a small active segment are dropped once it is worth closing;
        // until then the log may exceed its bound by up to half a segment rather than lose
        // priority lines before them.
        let slack = {
            let st = self.log.lock();
            let active_bulk = st.segments.back().is_some_and(|s| {
                s.records
                    .iter()
                    .any(|m| m.seq >= st.cursor && m.class == Class::Bulk)
            });
            if active_bulk {
                self.log.cfg.segment_bytes() / 2
            } else {
                0
            }
        };
        if self.log.lock().total_bytes <= max.saturating_add(slack) {
            return;
        }
        // Last resort: whole closed segments, oldest first, whatever they carry.
        let (mut prio, mut bulk) = (0u64, 0u64);
        let mut removed = Vec::new();
        {
            let mut st = self.log.lock();
            while st.total_bytes > max.saturating_add(slack) && st.segments.len() > 1 {
                let Some(seg) = st.segments.pop_front() else {
                    break;
                };
                st.total_bytes = st.total_bytes.saturating_sub(seg.bytes);
                st.generation += 1;
                let (cursor, inflight) = (st.cursor, st.inflight_end);
                for m in seg.records.iter().filter(|m| m.seq >= cursor) {
                    // In the forwarder's hands: delivered by it, not dropped.
                    if m.seq >= inflight {
                        match m.class {
                            Class::Priority => prio += m.lines as u64,
                            Class::Bulk => bulk += m.lines as u64,
                        }
                    }
                    st.backlog_bytes = st.backlog_bytes.saturating_sub(m.total());
                    st.backlog_lines = st.backlog_lines.saturating_sub(m.lines as u64);
                }
                removed.push(seg.path);
            }
            self.log.publish_gauges(&st);
        }
        for p in removed {
            let _ = fs::remove_file(&p);
        }
        let stats = &self.log.stats;
        stats.dropped_bulk_lines.fetch_add(bulk, Relaxed);
        stats.dropped_priority_lines.fetch_add(prio, Relaxed);
        if prio + bulk > 0 {
            warn!(
                priority_lines = prio,
                bulk_lines = bulk,
                max_bytes = max,
                "telemetry log full: dropped the oldest segments whole, alarm, state and event lines too (bulk lines could not be dropped first)"
            );
        }
    }

    /// Compacts closed segments, oldest first, until the log is under its bound. False when
    /// the disk refused.
    fn compact_bulk(&mut self) -> bool {
        let ids: Vec<u64> = {
            let st = self.log.lock();
            let closed = st.segments.len().saturating_sub(1);
            st.segments
                .iter()
                .take(closed)
                .filter(|seg| {
                    seg.records
                        .iter()
                        .any(|m| m.seq < st.cursor || m.class == Class::Bulk)
                })
                .map(|seg| seg.id)
                .collect()
        };
        for id in ids {
            if self.log.lock().total_bytes <= self.log.cfg.max_bytes {
                break;
            }
            if let Err(e) = self.compact(id) {
                self.disk_failed(&e);
                return false;
            }
        }
        true
    }

    /// Rewrites segment `id` without its forwarded and its bulk records.
    fn compact(&mut self, id: u64) -> io::Result<()> {
        let (path, metas, cursor, inflight) = {
            let st = self.log.lock();
            let Some(seg) = st.segments.iter().find(|s| s.id == id) else {
                return Ok(());
            };
            (
                seg.path.clone(),
                seg.records.clone(),
                st.cursor,
                st.inflight_end,
            )
        };
        let src = File::open(&path)?;
        let mut out = FILE_MAGIC.to_vec();
        let mut kept = Vec::new();
        let mut dropped = Vec::new();
        for m in &metas {
            // Forwarded history goes, and bulk lines the forwarder is not writing right now.
            if m.seq < cursor || (m.class == Class::Bulk && m.seq >= inflight) {
                dropped.push(m);
                continue;
            }
            let mut buf = vec![0u8; m.total() as usize];
            src.read_exact_at(&mut buf, m.offset)?;
            let mut k = m.clone();
            k.offset = out.len() as u64;
            out.extend_from_slice(&buf);
            kept.push(k);
        }
        let new_len = out.len() as u64;
        let removed_all = kept.is_empty();
        let tmp = path.with_extension("tmp");
        if !removed_all {
            let written = File::create(&tmp).and_then(|mut f| {
                f.write_all(&out)?;
                f.sync_all()
            });
            if let Err(e) = written {
                // A full disk must not be made fuller by what was meant to free it.
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
        }
        let (mut bulk_lines, mut history_bytes) = (0u64, 0u64);
        {
            // The file and the index change together, under the lock: a reader either planned
            // before (and reads the old file it has open, or finds the generation changed) or
            // plans after.
            let mut st = self.log.lock();
            if !removed_all && let Err(e) = fs::rename(&tmp, &path) {
                drop(st);
                let _ = fs::remove_file(&tmp);
                return Err(e);
            }
            // The forwarder may have moved on during the rewrite: what it wrote meanwhile is
            // history, not a drop (and is off the backlog already); what it has taken into
            // memory since is delivered by it, not dropped (but leaves the backlog here, as
            // its cursor will not find it in the index).
            let (cursor_now, inflight_now) = (st.cursor, st.inflight_end);
            let (mut backlog_bytes, mut backlog_lines, mut old_bytes) = (0u64, 0u64, 0u64);
            for m in dropped {
                if m.seq < cursor_now {
                    history_bytes += m.total();
                    continue;
                }
                backlog_bytes += m.total();
                backlog_lines += m.lines as u64;
                if m.seq >= inflight_now {
                    bulk_lines += m.lines as u64;
                }
            }
            if removed_all {
                if let Some(pos) = st.segments.iter().position(|s| s.id == id) {
                    old_bytes = st.segments.remove(pos).map_or(0, |s| s.bytes);
                }
                st.total_bytes = st.total_bytes.saturating_sub(old_bytes);
            } else if let Some(seg) = st.segments.iter_mut().find(|s| s.id == id) {
                old_bytes = seg.bytes;
                seg.bytes = new_len;
                seg.records = kept;
                st.total_bytes = st.total_bytes.saturating_sub(old_bytes) + new_len;
            }
            st.backlog_bytes = st.backlog_bytes.saturating_sub(backlog_bytes);
            st.backlog_lines = st.backlog_lines.saturating_sub(backlog_lines);
            st.generation += 1;
            self.log.publish_gauges(&st);
        }
        if removed_all {
            // Out of the index first: a reader finds the file gone and the generation changed.
            if let Err(e) = fs::remove_file(&path) {
                warn!(file = %path.display(), error = %e, "telemetry log: cannot remove a compacted segment");
            }
        }
        sync_dir(&self.log.cfg.dir)?;
        let stats = &self.log.stats;
        stats
            .history_evicted_bytes
            .fetch_add(history_bytes, Relaxed);
        if bulk_lines > 0 {
            stats.dropped_bulk_lines.fetch_add(bulk_lines, Relaxed);
            warn!(
                lines = bulk_lines,
                max_bytes = self.log.cfg.max_bytes,
                "telemetry log full: dropped the oldest unforwarded bulk lines (alarm, state and event lines kept)"
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::Ordering::Relaxed;
    use std::time::Duration;

    use crate::model::Ack;
    use crate::telemetry::log::tests::{cfg, close, part, read_all};
    use crate::telemetry::log::{Class, LogStats, Part, TelemetryLog};

    #[tokio::test]
    async fn a_full_log_drops_history_then_bulk_and_keeps_priority_lines() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let max = 64 << 10;
        let (log, _) = TelemetryLog::open(cfg(dir.path(), max, true), stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        // Some forwarded history first.
        app.append(vec![part(Class::Bulk, "h", 0, 50)], Vec::new())
            .await
            .unwrap();
        let (ack, done) = Ack::new();
        app.append(Vec::new(), vec![ack]).await.unwrap();
        done.await.unwrap();
        let (_, next) = read_all(&log, log.cursor());
        log.advance(next);
        // Then far more than the bound, never forwarded (the database is down).
        let mut prio_lines = 0;
        for i in 0..400 {
            let mut parts = vec![part(Class::Bulk, "b", i * 20, 20)];
            if i % 4 == 0 {
                parts.push(part(Class::Priority, "p", i, 1));
                prio_lines += 1;
            }
            app.append(parts, Vec::new()).await.unwrap();
        }
        close(app).await;
        let seg = log.cfg.segment_bytes();
        assert!(
            stats.bytes.load(Relaxed) <= max + seg,
            "{} bytes over the bound {max}",
            stats.bytes.load(Relaxed)
        );
        assert!(stats.history_evicted_bytes.load(Relaxed) > 0);
        assert!(stats.dropped_bulk_lines.load(Relaxed) > 0);
        assert_eq!(stats.dropped_priority_lines.load(Relaxed), 0);
        let (body, _) = read_all(&log, log.cursor());
        let kept_prio = body.lines().filter(|l| l.contains("asset=p")).count();
        assert_eq!(kept_prio, prio_lines, "every priority line kept");
        assert!(!body.contains("asset=h"), "history went first");
        // What is left of the bulk lines is the newest, in order.
        let bulk: Vec<i64> = body
            .lines()
            .filter(|l| l.contains("asset=b"))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert!(bulk.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(*bulk.last().unwrap(), 1_000 + 400 * 20 - 1);
        let dropped = stats.dropped_bulk_lines.load(Relaxed);
        assert_eq!(
            dropped as usize + bulk.len(),
            400 * 20,
            "every drop counted"
        );
    }

    /// Compacting a segment away must not skip the next one: with two bulk-only segments
    /// after a large priority record, both bulk records go before the priority one.
    #[tokio::test]
    async fn every_bulk_segment_is_compacted_before_a_priority_line_goes() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let (log, _) = TelemetryLog::open(cfg(dir.path(), 65_536, true), stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        let big = |class: Class, bytes: usize, tag: &str| {
            let line = format!("m,asset={tag} v=1i 1700000000000000000\n");
            let n = bytes / line.len();
            Part {
                class,
                body: line.repeat(n),
                lines: n as u32,
                min_ts: 1,
                max_ts: 1,
            }
        };
        for p in [
            big(Class::Priority, 40_000, "p"),
            big(Class::Bulk, 7_000, "b1"),
            big(Class::Bulk, 7_000, "b2"),
            big(Class::Bulk, 20_000, "b3"),
        ] {
            app.append(vec![p], Vec::new()).await.unwrap();
        }
        close(app).await;
        assert_eq!(stats.dropped_priority_lines.load(Relaxed), 0);
        assert!(stats.dropped_bulk_lines.load(Relaxed) > 0);
        let (body, _) = read_all(&log, log.cursor());
        assert!(body.contains("asset=p"));
        assert!(!body.contains("asset=b1") && !body.contains("asset=b2"));
    }

    /// A forwarder reading and advancing while the writer compacts at the bound: every line is
    /// forwarded, dropped or left exactly once, and none is taken for damaged.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn forwarding_during_compaction_counts_every_line_once() {
        let dir = tempfile::tempdir().unwrap();
        let stats = Arc::new(LogStats::default());
        let (log, _) = TelemetryLog::open(cfg(dir.path(), 64 << 10, true), stats.clone()).unwrap();
        let app = log.start_writer().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reader = {
            let (log, stop, seen) = (log.clone(), stop.clone(), stats.clone());
            std::thread::spawn(move || {
                let mut forwarded = 0u64;
                // Not a line read before the bound is first hit: however fast this thread
                // runs on a loaded machine, compaction then races the reads that follow.
                while seen.dropped_bulk_lines.load(Relaxed) == 0 && !stop.load(Relaxed) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                loop {
                    let done = stop.load(Relaxed);
                    match log.read_chunk(log.cursor(), 50).unwrap() {
                        Some(c) => {
                            forwarded += c.lines as u64;
                            log.advance(c.next_seq);
                        }
                        None if done => return forwarded,
                        None => std::thread::sleep(Duration::from_millis(1)),
                    }
                    // Slower than the writer, so that the bound is hit.
                    std::thread::sleep(Duration::from_micros(300));
                }
            })
        };
        let mut appended = 0u64;
        for i in 0..3000 {
            let mut parts = vec![part(Class::Bulk, "b", i * 10, 10)];
            appended += 10;
            if i % 10 == 0 {
                parts.push(part(Class::Priority, "p", i, 1));
                appended += 1;
            }
            app.append(parts, Vec::new()).await.unwrap();
        }
        close(app).await;
        stop.store(true, Relaxed);
        let forwarded = reader.join().unwrap();
        let dropped =
            stats.dropped_bulk_lines.load(Relaxed) + stats.dropped_priority_lines.load(Relaxed);
        let left = stats.backlog_lines.load(Relaxed);
        assert_eq!(stats.dropped_corrupt_lines.load(Relaxed), 0);
        assert!(dropped > 0, "the bound was never hit");
        assert_eq!(forwarded + dropped + left, appended);
        assert_eq!(left, 0);
    }
}
