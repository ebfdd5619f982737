//! Prometheus text exposition of the gateway's counters (rendered by hand with
//! [`MetricsText`]: a few dozen families, no global recorder).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::GatewayView;
use crate::metrics_text::{Kind, MetricsText};
use crate::modbus::stats::{DeviceStats, POLL_BUCKETS};

/// Reads one counter of a device.
type Counter = fn(&DeviceStats) -> u64;

/// A family with one label: a sample per (label value, counter).
fn labelled(
    out: &mut MetricsText,
    (name, kind, help): (&str, Kind, &str),
    label: &str,
    rows: &[(&str, &AtomicU64)],
) {
    let rows: Vec<(&str, u64)> = rows.iter().map(|(l, v)| (*l, v.load(Relaxed))).collect();
    out.labelled(name, kind, help, label, &rows);
}

/// Renders the device and telemetry metrics; `extra` (work orders, outbox, MQTT, written by
/// their owners with [`MetricsText`]) is appended.
pub fn render(gw: &GatewayView, extra: &str) -> String {
    let mut out = MetricsText::with_capacity(8192 + extra.len());
    write_gateway(gw, &mut out);
    if let Some(a) = &gw.availability {
        a.stats.write_metrics(&mut out);
    }
    out.push_text(extra);
    out.into_string()
}

/// Writes the device, telemetry, log, rule and reload metrics.
fn write_gateway(gw: &GatewayView, out: &mut MetricsText) {
    // The devices in force (a reload changes them).
    let set = gw.current.get();
    let devices: Vec<(&str, &DeviceStats)> = set
        .settings
        .devices
        .iter()
        .zip(&set.stats)
        .map(|(d, s)| (&*d.id, s.as_ref()))
        .collect();

    let counters: [(&str, &str, Counter); 6] = [
        (
            "facilityd_modbus_polls_total",
            "Poll cycles per device.",
            |s| DeviceStats::get(&s.polls),
        ),
        (
            "facilityd_modbus_requests_total",
            "Modbus requests sent per device.",
            |s| DeviceStats::get(&s.requests),
        ),
        (
            "facilityd_bad_values_total",
            "Readings left out: not-available sentinels and out-of-range values.",
            |s| DeviceStats::get(&s.bad_values),
        ),
        (
            "facilityd_unmapped_values_total",
            "Enum values missing from the point's map.",
            |s| DeviceStats::get(&s.unmapped),
        ),
        (
            "facilityd_modbus_splits_total",
            "Merged reads refused by the device and split.",
            |s| DeviceStats::get(&s.splits),
        ),
        (
            "facilityd_poll_overruns_total",
            "Poll ticks skipped because the link was busy.",
            |s| DeviceStats::get(&s.overruns),
        ),
    ];
    for (name, help, get) in counters {
        out.family(name, Kind::Counter, help);
        for (id, s) in &devices {
            out.sample(name, &[("asset", id)], get(s));
        }
    }
    out.family(
        "facilityd_modbus_errors_total",
        Kind::Counter,
        "Failed Modbus requests per device, by kind.",
    );
    for (id, s) in &devices {
        for (kind, v) in [
            ("timeout", &s.timeouts),
            ("exception", &s.exceptions),
            ("transport", &s.transport_errors),
            ("malformed", &s.malformed),
            ("crc", &s.crc_errors),
            ("wrong_unit", &s.wrong_unit),
        ] {
            out.sample(
                "facilityd_modbus_errors_total",
                &[("asset", id), ("kind", kind)],
                DeviceStats::get(v),
            );
        }
    }
    out.family(
        "facilityd_device_online",
        Kind::Gauge,
        "1 while the device answers, 0 while it is backed off to its probe schedule.",
    );
    for (id, s) in &devices {
        out.sample(
            "facilityd_device_online",
            &[("asset", id)],
            u8::from(s.online.load(Relaxed)),
        );
    }
    out.family(
        "facilityd_modbus_cycle_seconds",
        Kind::Gauge,
        "Achieved poll cycle per device: from the start of its previous poll to the start of its last (above the interval when its link cannot keep the schedule).",
    );
    for (id, s) in &devices {
        out.sample(
            "facilityd_modbus_cycle_seconds",
            &[("asset", id)],
            s.last_cycle_us.load(Relaxed) as f64 / 1e6,
        );
    }
    out.family(
        "facilityd_serial_bus_seconds_total",
        Kind::Counter,
        "Serial bus time taken by each device's reads (frames, silences, turnaround, waiting for the answer); its rate summed by bus is the bus's utilisation.",
    );
    for ((id, s), d) in devices.iter().zip(set.settings.devices.iter()) {
        if let crate::device::DeviceSource::Modbus(m) = &d.source
            && let crate::modbus::link::Link::Rtu(serial) = &m.link
        {
            out.sample(
                "facilityd_serial_bus_seconds_total",
                &[("asset", id), ("bus", &serial.path)],
                s.bus_us.load(Relaxed) as f64 / 1e6,
            );
        }
    }
    out.family(
        "facilityd_poll_duration_seconds",
        Kind::Histogram,
        "Duration of poll cycles, per device.",
    );
    for (id, s) in &devices {
        let mut cum = 0;
        for (i, le) in POLL_BUCKETS.iter().enumerate() {
            cum += s.poll_hist[i].load(Relaxed);
            out.sample(
                "facilityd_poll_duration_seconds_bucket",
                &[("asset", id), ("le", &le.to_string())],
                cum,
            );
        }
        cum += s.poll_hist[POLL_BUCKETS.len()].load(Relaxed);
        out.sample(
            "facilityd_poll_duration_seconds_bucket",
            &[("asset", id), ("le", "+Inf")],
            cum,
        );
        out.sample(
            "facilityd_poll_duration_seconds_sum",
            &[("asset", id)],
            s.poll_us_sum.load(Relaxed) as f64 / 1e6,
        );
        out.sample(
            "facilityd_poll_duration_seconds_count",
            &[("asset", id)],
            cum,
        );
    }

    let t = &gw.telemetry;
    labelled(
        out,
        (
            "facilityd_telemetry_lines_total",
            Kind::Counter,
            "Telemetry lines by outcome: accepted into the log, written to the database, dropped (the log writer was gone at shutdown, or the dead-letter file could not be written), dead-lettered (rejected by the database).",
        ),
        "state",
        &[
            ("accepted", &t.lines_accepted),
            ("written", &t.lines_written),
            ("dropped", &t.lines_dropped),
            ("dead_lettered", &t.lines_dead_lettered),
        ],
    );
    out.scalar(
        "facilityd_telemetry_records_dropped_total",
        Kind::Counter,
        "Records dropped because the poller-to-telemetry channel was full.",
        t.records_dropped.load(Relaxed),
    );
    out.scalar(
        "facilityd_telemetry_write_errors_total",
        Kind::Counter,
        "Failed database writes (retried).",
        t.write_errors.load(Relaxed),
    );
    log_metrics(out, gw);
    let m = &gw.maintenance;
    let rule_counters: [(&str, &str, &std::sync::atomic::AtomicU64); 10] = [
        (
            "facilityd_rule_samples_total",
            "Samples evaluated by the rule engine.",
            &m.samples_evaluated,
        ),
        (
            "facilityd_rule_readings_dropped_total",
            "Readings dropped because the rule engine's queue was full.",
            &m.readings_dropped,
        ),
        (
            "facilityd_rule_triggers_total",
            "Rule triggers recorded as work-order changes.",
            &m.triggers,
        ),
        (
            "facilityd_work_order_events_total",
            "Work-order lifecycle events.",
            &m.events,
        ),
        (
            "facilityd_work_order_store_errors_total",
            "Failed writes to the work-order store (retried).",
            &m.store_errors,
        ),
        (
            "facilityd_rule_unless_unknown_total",
            "Evaluations of a rule whose `unless` point is unknown or unread (not suppressed).",
            &m.unless_unknown,
        ),
        (
            "facilityd_rule_unless_suppressed_total",
            "Evaluations held back by `unless`.",
            &m.unless_suppressed,
        ),
        (
            "facilityd_rule_unless_held_total",
            "Evaluations held back by a rule-form `unless` (another rule's incident in scope).",
            &m.unless_held,
        ),
        (
            "facilityd_meter_resets_total",
            "Meter readings taken as a counter reset.",
            &m.meter_resets,
        ),
        (
            "facilityd_meter_untrusted_total",
            "Meter readings not trusted (replaced device, implausible jump): no usage counted.",
            &m.meter_untrusted,
        ),
    ];
    for (name, help, v) in rule_counters {
        out.scalar(name, Kind::Counter, help, v.load(Relaxed));
    }
    out.scalar(
        "facilityd_meter_wraps_total",
        Kind::Counter,
        "Meter readings taken as a register wrap-around.",
        m.meter_wraps.load(Relaxed),
    );
    out.scalar(
        "facilityd_work_order_commit_latency_seconds",
        Kind::Gauge,
        "From the reading that triggered the last work-order change to its commit.",
        m.last_commit_latency_us.load(Relaxed) as f64 / 1e6,
    );
    let r = &gw.reloads;
    labelled(
        out,
        (
            "facilityd_config_reloads_total",
            Kind::Counter,
            "Configuration reloads (SIGHUP) by result: ok (applied), error (rejected; the running configuration stayed in force).",
        ),
        "result",
        &[("ok", &r.ok), ("error", &r.error)],
    );
    out.scalar(
        "facilityd_config_last_reload_successful",
        Kind::Gauge,
        "0 when the last configuration reload was rejected, else 1.",
        u8::from(!r.last_failed.load(Relaxed)),
    );
    out.scalar(
        "facilityd_config_last_reload_success_timestamp_seconds",
        Kind::Gauge,
        "Time of the last applied configuration reload (0: none since the start).",
        r.last_ok_unix.load(Relaxed),
    );
    out.scalar(
        "facilityd_config_restart_required",
        Kind::Gauge,
        "1 when the reloaded configuration changes settings that take effect only after a restart.",
        u8::from(r.restart_required.load(Relaxed)),
    );
}

/// The on-disk telemetry log: size, backlog, forwarding, drops, recovery.
fn log_metrics(out: &mut MetricsText, gw: &GatewayView) {
    let l = &gw.log_stats;
    let scalars: [(&str, Kind, &str, u64); 14] = [
        (
            "facilityd_log_bytes",
            Kind::Gauge,
            "Bytes of the on-disk telemetry log (forwarded history included).",
            l.bytes.load(Relaxed),
        ),
        (
            "facilityd_log_segments",
            Kind::Gauge,
            "Segment files of the telemetry log.",
            l.segments.load(Relaxed),
        ),
        (
            "facilityd_log_backlog_bytes",
            Kind::Gauge,
            "Bytes of the log not yet written to the database.",
            l.backlog_bytes.load(Relaxed),
        ),
        (
            "facilityd_log_backlog_lines",
            Kind::Gauge,
            "Lines of the log not yet written to the database.",
            l.backlog_lines.load(Relaxed),
        ),
        (
            "facilityd_log_disk_failing",
            Kind::Gauge,
            "1 while the disk refuses writes to the telemetry log.",
            l.disk_failing.load(Relaxed),
        ),
        (
            "facilityd_log_writer_running",
            Kind::Gauge,
            "1 while the telemetry log's writer thread runs (0 while running means a bug: /readyz fails).",
            l.writer_running.load(Relaxed),
        ),
        (
            "facilityd_gateway_database_refused",
            Kind::Gauge,
            "1 while the database refuses our writes (HTTP 401, 403, 404).",
            gw.faults.database_refused().is_some() as u64,
        ),
        (
            "facilityd_gateway_database_unexpected",
            Kind::Gauge,
            "1 while telemetry writes get an answer no database gives (a redirect, 405, an unexpected 2xx).",
            gw.faults.database_unexpected().is_some() as u64,
        ),
        (
            "facilityd_log_appended_lines_total",
            Kind::Counter,
            "Lines appended to the telemetry log.",
            l.appended_lines.load(Relaxed),
        ),
        (
            "facilityd_log_forwarded_lines_total",
            Kind::Counter,
            "Lines forwarded from the log to the database.",
            l.forwarded_lines.load(Relaxed),
        ),
        (
            "facilityd_log_fsyncs_total",
            Kind::Counter,
            "Group commits (syncs) of the telemetry log.",
            l.fsyncs.load(Relaxed),
        ),
        (
            "facilityd_log_write_errors_total",
            Kind::Counter,
            "Writes and syncs of the telemetry log the disk refused.",
            l.write_errors.load(Relaxed),
        ),
        (
            "facilityd_log_recovery_cuts_total",
            Kind::Counter,
            "Torn segment tails cut and corrupt stretches skipped at start-up.",
            l.recovery_cuts.load(Relaxed),
        ),
        (
            "facilityd_log_recovery_cut_bytes_total",
            Kind::Counter,
            "Bytes cut from torn tails and skipped as corrupt at start-up.",
            l.recovery_cut_bytes.load(Relaxed),
        ),
    ];
    for (name, kind, help, v) in scalars {
        out.scalar(name, kind, help, v);
    }
    let age = gw
        .log
        .get()
        .and_then(|log| log.oldest_backlog_age())
        .map_or(0.0, |d| d.as_secs_f64());
    out.scalar(
        "facilityd_log_backlog_oldest_seconds",
        Kind::Gauge,
        "Age of the oldest line not yet written to the database (0 when none).",
        age,
    );
    out.scalar(
        "facilityd_log_forward_rate",
        Kind::Gauge,
        "Lines per second written from the log to the database, over the last seconds.",
        l.forward_rate(),
    );
    labelled(
        out,
        (
            "facilityd_log_dropped_lines_total",
            Kind::Counter,
            "Unforwarded lines lost: bulk and priority (the log bound was hit; bulk goes first), disk (the disk refused them too long), corrupt (damaged on disk).",
        ),
        "reason",
        &[
            ("bulk", &l.dropped_bulk_lines),
            ("priority", &l.dropped_priority_lines),
            ("disk", &l.dropped_disk_lines),
            ("corrupt", &l.dropped_corrupt_lines),
        ],
    );
    labelled(
        out,
        (
            "facilityd_log_history_removed_bytes_total",
            Kind::Counter,
            "Forwarded history removed from the log: to stay under log_max_bytes (bound), or after history_retention (retention).",
        ),
        "reason",
        &[
            ("bound", &l.history_evicted_bytes),
            ("retention", &l.history_expired_bytes),
        ],
    );
    let file = gw.state_dir.join(crate::telemetry::dead_letter::FILE_NAME);
    out.family(
        "facilityd_telemetry_dead_letter_lines_total",
        Kind::Counter,
        "Lines the database rejected (HTTP 400, or a single line too large), kept in the named file.",
    );
    out.sample(
        "facilityd_telemetry_dead_letter_lines_total",
        &[("file", &file.display().to_string())],
        gw.telemetry.lines_dead_lettered.load(Relaxed),
    );
    out.scalar(
        "facilityd_telemetry_dead_letter_bytes",
        Kind::Gauge,
        "Bytes of the dead-letter files: the current file, its rotations, and files a resend has taken.",
        gw.telemetry.dead_letter.bytes.load(Relaxed),
    );
    out.scalar(
        "facilityd_telemetry_dead_letter_dropped_lines_total",
        Kind::Counter,
        "Dead-lettered lines removed with the oldest rotation to stay within storage.dead_letter_max_bytes.",
        gw.telemetry.dead_letter.dropped_lines.load(Relaxed),
    );
    out.family(
        "facilityd_telemetry_write_failures_total",
        Kind::Counter,
        "Failed telemetry writes by the database's HTTP status (0: no answer: a network error or timeout).",
    );
    for (status, n) in gw.telemetry.failures_by_status() {
        out.sample(
            "facilityd_telemetry_write_failures_total",
            &[("status", &status.to_string())],
            n,
        );
    }
}
