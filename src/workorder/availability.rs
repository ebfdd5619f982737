//! The availability history and the counters per day, as the work-order store keeps them for
//! the owners' report (see the `availability_spans` and `counter_days` tables in `schema`).
//!
//! The writer (the gateway's availability tracker) hands over spans and counter days in
//! batches, one transaction each; the report reads them back by period. Times are Unix
//! milliseconds; `day` is the local date (`YYYY-MM-DD`) in the gateway's time zone, and a span
//! never crosses a local midnight (the writer splits it).

use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::store::{StoreError, WorkOrderStore};

/// What an asset was doing during a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AvailState {
    /// Online and in service.
    Available,
    /// Online, but in a state its profile declares unusable (`unavailable_when`).
    Unavailable,
    /// Not answering (its polls failed, or its MQTT messages stopped).
    Offline,
}

impl AvailState {
    pub fn as_str(self) -> &'static str {
        match self {
            AvailState::Available => "available",
            AvailState::Unavailable => "unavailable",
            AvailState::Offline => "offline",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "available" => AvailState::Available,
            "unavailable" => AvailState::Unavailable,
            "offline" => AvailState::Offline,
            _ => return None,
        })
    }
}

/// One span to write: a new one (`id: None`, inserted) or one written before whose end moved
/// (`id: Some`, updated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanWrite {
    pub id: Option<i64>,
    pub asset: String,
    /// `YYYY-MM-DD` in the gateway's time zone; the span lies within that day.
    pub day: String,
    pub state: AvailState,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// A span as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Span {
    pub id: i64,
    pub asset: String,
    pub day: String,
    pub state: AvailState,
    pub start_ms: i64,
    pub end_ms: i64,
}

/// One counter point of one asset on one local day.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CounterDay {
    pub asset: String,
    pub point: String,
    pub day: String,
    pub first_value: f64,
    pub first_ms: i64,
    pub last_value: f64,
    pub last_ms: i64,
    /// The sum of the counter's rises over the day (a reset counts the new value from 0).
    pub increase: f64,
}

impl WorkOrderStore {
    /// Writes a batch of spans in one transaction; returns each span's row id, in order (the
    /// writer keeps it to move the span's end later).
    pub fn write_spans(&mut self, spans: &[SpanWrite]) -> Result<Vec<i64>, StoreError> {
        let tx = self.conn.transaction()?;
        let mut ids = Vec::with_capacity(spans.len());
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO availability_spans (asset, day, state, start_ms, end_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?;
            let mut update =
                tx.prepare_cached("UPDATE availability_spans SET end_ms = ?2 WHERE id = ?1")?;
            for s in spans {
                let end = s.end_ms.max(s.start_ms);
                match s.id {
                    Some(id) if update.execute(params![id, end])? == 1 => ids.push(id),
                    // A row that is gone (a restored backup, say) is written again.
                    _ => {
                        insert.execute(params![
                            s.asset,
                            s.day,
                            s.state.as_str(),
                            s.start_ms,
                            end
                        ])?;
                        ids.push(tx.last_insert_rowid());
                    }
                }
            }
        }
        tx.commit()?;
        Ok(ids)
    }

    /// The spans that overlap `[from_ms, to_ms)`, of every asset or of those named, by asset
    /// and start. Not clipped: the caller cuts them to its period.
    pub fn spans(
        &self,
        from_ms: i64,
        to_ms: i64,
        assets: Option<&[String]>,
    ) -> Result<Vec<Span>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT id, asset, day, state, start_ms, end_ms FROM availability_spans
             WHERE end_ms > ?1 AND start_ms < ?2 ORDER BY asset, start_ms, id",
        )?;
        let rows = stmt.query_map(params![from_ms, to_ms], |r| {
            let state: String = r.get(3)?;
            Ok((
                Span {
                    id: r.get(0)?,
                    asset: r.get(1)?,
                    day: r.get(2)?,
                    state: AvailState::Available,
                    start_ms: r.get(4)?,
                    end_ms: r.get(5)?,
                },
                state,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (mut span, state) = row?;
            // A state this code does not know (a newer writer) is left out, not guessed at.
            let Some(state) = AvailState::parse(&state) else {
                continue;
            };
            if assets.is_some_and(|a| !a.contains(&span.asset)) {
                continue;
            }
            span.state = state;
            out.push(span);
        }
        Ok(out)
    }

    /// Writes counter days in one transaction: a new (asset, point, day) row is inserted; an
    /// existing one keeps its first value and takes the given last value and increase.
    pub fn write_counter_days(&mut self, days: &[CounterDay]) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        {
            let mut upsert = tx.prepare_cached(
                "INSERT INTO counter_days
                     (asset, point, day, first_value, first_ms, last_value, last_ms, increase)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (asset, point, day) DO UPDATE SET
                     last_value = excluded.last_value,
                     last_ms = excluded.last_ms,
                     increase = excluded.increase",
            )?;
            for d in days {
                upsert.execute(params![
                    d.asset,
                    d.point,
                    d.day,
                    d.first_value,
                    d.first_ms,
                    d.last_value,
                    d.last_ms,
                    d.increase
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The counter days from `from_day` to `to_day` (inclusive, `YYYY-MM-DD`), by asset, point
    /// and day.
    pub fn counter_days(
        &self,
        from_day: &str,
        to_day: &str,
    ) -> Result<Vec<CounterDay>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT asset, point, day, first_value, first_ms, last_value, last_ms, increase
             FROM counter_days WHERE day >= ?1 AND day <= ?2 ORDER BY asset, point, day",
        )?;
        let rows = stmt.query_map(params![from_day, to_day], read_counter_day)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The newest counter day of every (asset, point): where the tracker takes up after a
    /// restart, so that the rise while the gateway was down is not lost.
    pub fn latest_counter_days(&self) -> Result<Vec<CounterDay>, StoreError> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT asset, point, day, first_value, first_ms, last_value, last_ms, increase
             FROM counter_days c
             WHERE day = (SELECT MAX(day) FROM counter_days d
                          WHERE d.asset = c.asset AND d.point = c.point)
             ORDER BY asset, point",
        )?;
        let rows = stmt.query_map([], read_counter_day)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

fn read_counter_day(r: &rusqlite::Row<'_>) -> rusqlite::Result<CounterDay> {
    Ok(CounterDay {
        asset: r.get(0)?,
        point: r.get(1)?,
        day: r.get(2)?,
        first_value: r.get(3)?,
        first_ms: r.get(4)?,
        last_value: r.get(5)?,
        last_ms: r.get(6)?,
        increase: r.get(7)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workorder::store::ResponseTimes;

    fn store() -> (tempfile::TempDir, WorkOrderStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = WorkOrderStore::open(&dir.path().join("wo.db"), ResponseTimes::default()).unwrap();
        (dir, s)
    }

    fn span(id: Option<i64>, asset: &str, state: AvailState, start: i64, end: i64) -> SpanWrite {
        SpanWrite {
            id,
            asset: asset.into(),
            day: "2026-11-30".into(),
            state,
            start_ms: start,
            end_ms: end,
        }
    }

    #[test]
    fn spans_are_inserted_then_extended_and_read_back_by_overlap() {
        let (_d, mut s) = store();
        let ids = s
            .write_spans(&[
                span(None, "EL-1", AvailState::Available, 1_000, 2_000),
                span(None, "PU-1", AvailState::Offline, 1_500, 1_600),
            ])
            .unwrap();
        assert_eq!(ids.len(), 2);
        // The writer moves the first span's end; a lost row id is written anew.
        let again = s
            .write_spans(&[
                span(Some(ids[0]), "EL-1", AvailState::Available, 1_000, 5_000),
                span(Some(9_999), "EL-1", AvailState::Unavailable, 5_000, 6_000),
            ])
            .unwrap();
        assert_eq!(again[0], ids[0]);
        assert_ne!(again[1], 9_999);
        let all = s.spans(0, i64::MAX, None).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!((all[0].start_ms, all[0].end_ms), (1_000, 5_000));
        assert_eq!(all[1].state, AvailState::Unavailable);
        // Overlap is half-open: a span ending at `from` is not in it.
        let later = s.spans(5_000, 7_000, None).unwrap();
        assert_eq!(later.len(), 1);
        let pumps = s.spans(0, i64::MAX, Some(&["PU-1".to_string()])).unwrap();
        assert_eq!(pumps.len(), 1);
        assert_eq!(pumps[0].state, AvailState::Offline);
    }

    #[test]
    fn counter_days_keep_their_first_value_and_the_latest_is_found() {
        let (_d, mut s) = store();
        let day = |day: &str, first: f64, last: f64, inc: f64| CounterDay {
            asset: "PM-1".into(),
            point: "energy_import_kwh".into(),
            day: day.into(),
            first_value: first,
            first_ms: 1,
            last_value: last,
            last_ms: 2,
            increase: inc,
        };
        s.write_counter_days(&[day("2026-11-29", 100.0, 110.0, 10.0)])
            .unwrap();
        s.write_counter_days(&[day("2026-11-30", 110.0, 115.0, 5.0)])
            .unwrap();
        // A later flush of the same day: the first value stays.
        s.write_counter_days(&[day("2026-11-30", 999.0, 120.0, 10.0)])
            .unwrap();
        let days = s.counter_days("2026-11-01", "2026-11-30").unwrap();
        assert_eq!(days.len(), 2);
        assert_eq!(days[1].first_value, 110.0);
        assert_eq!((days[1].last_value, days[1].increase), (120.0, 10.0));
        let latest = s.latest_counter_days().unwrap();
        assert_eq!(latest.len(), 1);
        assert_eq!(latest[0].day, "2026-11-30");
        assert_eq!(s.counter_days("2026-11-30", "2026-11-30").unwrap().len(), 1);
    }
}
