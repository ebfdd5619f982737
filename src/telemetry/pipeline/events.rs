//! The forwarder's operational events (see [`crate::events`]): database writes that failed,
//! counted by HTTP status (`facilityd_telemetry_write_failures_total`, and in
//! `facilityd_telemetry_write_errors_total`).

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tracing::error;

use super::TelemetryStats;
use crate::events::Event;
use crate::telemetry::influx::WriteError;
use crate::telemetry::log::LogStats;

/// A write that failed for a reason that passes: the lines stay in the log and the write is
/// retried after a backoff. Logged at most once per 10 s per chunk being written.
pub(super) struct WriteRetried<'a> {
    pub stats: &'a TelemetryStats,
    /// For the backlog in the log line.
    pub log_stats: &'a LogStats,
    /// The backoff's next step.
    pub retry_in: Duration,
    pub cause: RetryCause<'a>,
}

pub(super) enum RetryCause<'a> {
    /// HTTP 429 or 503: the database is busy, perhaps saying for how long.
    Busy {
        status: u16,
        text: &'a str,
        retry_after: Option<Duration>,
    },
    /// Another 5xx (or 408).
    ServerError { status: u16, text: &'a str },
    /// No answer: a network error or a timeout (counted as status 0).
    NoAnswer { error: &'a WriteError },
}

impl Event for WriteRetried<'_> {
    fn count(&self) {
        let status = match self.cause {
            RetryCause::Busy { status, .. } | RetryCause::ServerError { status, .. } => status,
            RetryCause::NoAnswer { .. } => 0,
        };
        self.stats.count_failure(status);
    }

    fn log(&self, suppressed: u64) {
        let retry_in_ms = self.retry_in.as_millis() as u64;
        let backlog = self.log_stats.backlog_bytes.load(Relaxed);
        match self.cause {
            RetryCause::Busy {
                status,
                text,
                retry_after,
            } => {
                error!(status, reason = %text, retry_after_ms = retry_after.map(|d| d.as_millis() as u64), suppressed, "database busy; the lines stay in the log, retrying");
            }
            RetryCause::ServerError { status, text } => {
                error!(status, reason = %text, retry_in_ms, backlog_bytes = backlog, suppressed, "database write failed; the lines stay in the log, retrying");
            }
            RetryCause::NoAnswer { error } => {
                error!(error = %error, retry_in_ms, backlog_bytes = backlog, suppressed, "database write failed; the lines stay in the log, retrying");
            }
        }
    }
}

/// A write the database refused for a configuration cause: `refused` (401, 403, 404:
/// credentials, org, bucket, database) or not (an answer no database gives). The lines stay in
/// the log; logged when the cause changes (the gateway's own work order says why meanwhile).
pub(super) struct WriteRefused<'a> {
    pub stats: &'a TelemetryStats,
    pub status: u16,
    pub text: &'a str,
    pub refused: bool,
}

impl Event for WriteRefused<'_> {
    fn count(&self) {
        self.stats.count_failure(self.status);
    }

    fn log(&self, _suppressed: u64) {
        let (status, text) = (self.status, self.text);
        if self.refused {
            error!(status, reason = %text, "the database refuses our writes (check the [influxdb] credentials, org, bucket, database or retention policy); telemetry stays in the local log");
        } else {
            error!(status, reason = %text, "the database URL answers writes as no database does (a proxy, a redirect, another service?); telemetry stays in the local log");
        }
    }
}
