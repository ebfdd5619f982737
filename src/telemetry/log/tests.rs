//! Fixtures shared by the log's test modules, and the round trip through the whole log.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::model::Ack;

pub(super) fn header(seq: u64) -> RecordHeader {
    RecordHeader {
        seq,
        len: 0,
        lines: 1,
        class: Class::Bulk,
        min_ts: 1,
        max_ts: 2,
        appended_ms: 3,
    }
}

pub(super) fn cfg(dir: &Path, max_bytes: u64, forwarding: bool) -> LogConfig {
    LogConfig {
        dir: dir.to_path_buf(),
        max_bytes,
        fsync_interval: Duration::from_millis(5),
        retention: Duration::from_secs(3600),
        forwarding,
    }
}

pub(super) fn part(class: Class, tag: &str, from: usize, n: usize) -> Part {
    let body: String = (from..from + n)
        .map(|i| format!("m,asset={tag} v={i}i {}\n", 1_000 + i))
        .collect();
    Part {
        class,
        body,
        lines: n as u32,
        min_ts: 1_000 + from as i64,
        max_ts: 1_000 + (from + n) as i64 - 1,
    }
}

pub(super) async fn close(app: LogAppender) {
    tokio::task::spawn_blocking(move || app.close_and_join())
        .await
        .unwrap();
}

pub(super) fn read_all(log: &TelemetryLog, from: u64) -> (String, u64) {
    let mut body = String::new();
    let mut at = from;
    while let Some(c) = log.read_chunk(at, 1000).unwrap() {
        body.push_str(&c.body);
        at = c.next_seq;
    }
    (body, at)
}

pub(super) fn only_segment(dir: &Path) -> PathBuf {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == SEGMENT_EXT))
        .unwrap()
}

#[tokio::test]
async fn appended_records_survive_a_reopen_and_acks_wait_for_the_sync() {
    let dir = tempfile::tempdir().unwrap();
    let (log, rec) =
        TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
    assert_eq!(rec.records, 0);
    let app = log.start_writer().unwrap();
    let (ack, done) = Ack::new();
    app.append(
        vec![
            part(Class::Bulk, "a", 0, 3),
            part(Class::Priority, "a", 3, 2),
        ],
        vec![ack],
    )
    .await
    .unwrap();
    tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("ack not fired")
        .expect("ack dropped");
    // The ack fired: both records are synced and readable.
    let (body, next) = read_all(&log, log.cursor());
    assert_eq!(body.lines().count(), 5);
    log.advance(next);
    log.persist_cursor().unwrap();
    app.append(vec![part(Class::Bulk, "a", 5, 4)], Vec::new())
        .await
        .unwrap();
    close(app).await;
    drop(log);

    let (log, rec) =
        TelemetryLog::open(cfg(dir.path(), 1 << 20, true), Default::default()).unwrap();
    assert_eq!(rec.records, 3);
    assert!(rec.cuts.is_empty());
    assert_eq!(
        rec.backlog_lines, 4,
        "only the unforwarded record is backlog"
    );
    let (body, _) = read_all(&log, log.cursor());
    assert_eq!(body, part(Class::Bulk, "a", 5, 4).body);
}

/// What the forwarder reads moments after the group commit comes from memory, and is what the
/// disk holds; what is not in memory (forwarded past, too large, or after the writer stopped)
/// is read from disk.
#[tokio::test]
async fn synced_records_are_read_from_memory_as_they_are_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = TelemetryLog::open(cfg(dir.path(), 64 << 20, true), Default::default()).unwrap();
    let app = log.start_writer().unwrap();
    let (ack, done) = Ack::new();
    let (a, b) = (
        part(Class::Bulk, "a", 0, 3),
        part(Class::Priority, "a", 3, 2),
    );
    app.append(vec![a.clone(), b.clone()], vec![ack])
        .await
        .unwrap();
    done.await.unwrap();
    let mem = log.read_chunk_in_memory(1, 1000).unwrap().unwrap();
    assert_eq!((mem.lines, mem.next_seq), (5, 3));
    assert_eq!(mem.body, format!("{}{}", a.body, b.body));
    let first = log.read_chunk_in_memory(1, 3).unwrap().unwrap();
    assert_eq!((first.body, first.next_seq), (a.body.clone(), 2));
    // Nothing synced after them: answered without the disk too.
    assert!(matches!(log.read_chunk_in_memory(3, 1000), Some(None)));

    // Forwarded: out of memory, still on disk.
    log.advance(2);
    assert!(log.read_chunk_in_memory(1, 1000).is_none());
    assert_eq!(log.read_chunk(1, 3).unwrap().unwrap().body, a.body);

    // A batch larger than the memory bound is read from disk only.
    let big = part(Class::Bulk, "big", 100, 200_000);
    assert!(big.body.len() > TAIL_MAX_BYTES);
    let (ack, done) = Ack::new();
    app.append(vec![big.clone()], vec![ack]).await.unwrap();
    done.await.unwrap();
    assert!(log.read_chunk_in_memory(2, 1_000_000).is_none());
    assert_eq!(
        log.read_chunk(2, 1_000_000).unwrap().unwrap().body,
        format!("{}{}", b.body, big.body)
    );

    // Once the writer stopped, every read goes to disk, the same bytes.
    let (ack, done) = Ack::new();
    let c = part(Class::Bulk, "c", 0, 4);
    app.append(vec![c.clone()], vec![ack]).await.unwrap();
    done.await.unwrap();
    assert_eq!(
        log.read_chunk_in_memory(4, 1000).unwrap().unwrap().body,
        c.body
    );
    close(app).await;
    assert!(log.read_chunk_in_memory(4, 1000).is_none());
    assert_eq!(log.read_chunk(4, 1000).unwrap().unwrap().body, c.body);
}
