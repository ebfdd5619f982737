//! History queries: the samples of one asset (and point) in a time range, read from the
//! records in the log, forwarded or not.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt as _;
use std::path::PathBuf;

use super::record::{HEADER_LEN, decode_record};
use super::{Meta, TelemetryLog};

/// One sample of the history API.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HistorySample {
    /// Nanoseconds since the epoch.
    pub time_ns: i64,
    pub point: String,
    pub value: serde_json::Value,
}

impl TelemetryLog {
    /// Samples of one asset from the log (forwarded or not), oldest first, at most `limit`;
    /// the flag says whether more matched. Blocking (reads files).
    pub fn history(
        &self,
        asset: &str,
        point: Option<&str>,
        from_ns: i64,
        to_ns: i64,
        limit: usize,
    ) -> io::Result<(Vec<HistorySample>, bool)> {
        let plan: Vec<(PathBuf, Meta)> = {
            let st = self.lock();
            st.segments
                .iter()
                .flat_map(|s| s.records.iter().map(move |m| (s, m)))
                .filter(|(_, m)| m.max_ts >= from_ns && m.min_ts <= to_ns)
                .map(|(s, m)| (s.path.clone(), m.clone()))
                .collect()
        };
        let mut out = Vec::new();
        let mut file: Option<(PathBuf, File)> = None;
        for (path, m) in plan {
            if file.as_ref().is_none_or(|(p, _)| *p != path) {
                match File::open(&path) {
                    Ok(f) => file = Some((path.clone(), f)),
                    // Removed meanwhile (retention, bound): that history is gone.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some((_, f)) = &file else { continue };
            let mut buf = vec![0u8; m.total() as usize];
            if f.read_exact_at(&mut buf, m.offset).is_err()
                || !matches!(decode_record(&buf), Ok(Some((h, _))) if h.seq == m.seq)
            {
                continue;
            }
            let text = String::from_utf8_lossy(&buf[HEADER_LEN..]);
            collect_history(&text, asset, point, from_ns, to_ns, &mut out);
            if out.len() > 2 * limit + 1 {
                // Bounded memory: only the oldest `limit` (and one, to tell there is more)
                // can be in the answer.
                sort_samples(&mut out);
                out.truncate(limit + 1);
            }
        }
        sort_samples(&mut out);
        let more = out.len() > limit;
        out.truncate(limit);
        Ok((out, more))
    }
}

fn sort_samples(v: &mut [HistorySample]) {
    v.sort_by(|a, b| a.time_ns.cmp(&b.time_ns).then(a.point.cmp(&b.point)));
}

fn collect_history(
    text: &str,
    asset: &str,
    point: Option<&str>,
    from_ns: i64,
    to_ns: i64,
    out: &mut Vec<HistorySample>,
) {
    use influxdb_line_protocol::FieldValue;
    for line in influxdb_line_protocol::parse_lines(text).flatten() {
        let Some(ts) = line.timestamp else { continue };
        if ts < from_ns || ts > to_ns {
            continue;
        }
        let is_asset = line
            .series
            .tag_set
            .as_ref()
            .is_some_and(|tags| tags.iter().any(|(k, v)| &**k == "asset" && &**v == asset));
        // Work-order events carry an `asset` tag too, but they are not samples of a point.
        if !is_asset || &*line.series.measurement == "work_order" {
            continue;
        }
        for (k, v) in &line.field_set {
            let name: &str = k;
            if point.is_some_and(|p| p != name) {
                continue;
            }
            let value = match v {
                FieldValue::I64(i) => serde_json::json!(i),
                FieldValue::U64(u) => serde_json::json!(u),
                FieldValue::F64(f) => serde_json::json!(f),
                FieldValue::String(s) => serde_json::json!(s.to_string()),
                FieldValue::Boolean(b) => serde_json::json!(b),
            };
            out.push(HistorySample {
                time_ns: ts,
                point: name.to_string(),
                value,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::telemetry::log::tests::{cfg, close, part};
    use crate::telemetry::log::{Class, Part, TelemetryLog};

    #[tokio::test]
    async fn history_reads_one_asset_and_point_in_a_time_range() {
        let dir = tempfile::tempdir().unwrap();
        let (log, _) =
            TelemetryLog::open(cfg(dir.path(), 1 << 20, false), Default::default()).unwrap();
        let app = log.start_writer().unwrap();
        app.append(
            vec![
                part(Class::Bulk, "a", 0, 10),
                part(Class::Bulk, "b", 0, 10),
                Part {
                    class: Class::Priority,
                    body: "work_order,asset=a id=1i 1003\nm,asset=a on=true 1004\n".into(),
                    lines: 2,
                    min_ts: 1003,
                    max_ts: 1004,
                },
            ],
            Vec::new(),
        )
        .await
        .unwrap();
        close(app).await;
        let (got, more) = log.history("a", Some("v"), 1_002, 1_005, 100).unwrap();
        let times: Vec<i64> = got.iter().map(|h| h.time_ns).collect();
        assert_eq!(times, vec![1_002, 1_003, 1_004, 1_005]);
        assert_eq!(got[0].value, serde_json::json!(2));
        assert!(!more);
        let (all, _) = log.history("a", None, 1_004, 1_004, 100).unwrap();
        assert_eq!(all.len(), 2, "v and on, not the work order: {all:?}");
        let (few, more) = log.history("a", Some("v"), 0, 2_000, 3).unwrap();
        assert_eq!((few.len(), more), (3, true));
    }
}
