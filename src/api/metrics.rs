//! Prometheus text exposition of the gateway's counters (rendered by hand: a few dozen lines
//! of format, no global recorder).

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::GatewayView;
use crate::modbus::stats::{DeviceStats, POLL_BUCKETS};

/// Reads one counter of a device.
type Counter = fn(&DeviceStats) -> u64;

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A family with one label: a sample per (label value, counter).
fn labelled(
    out: &mut String,
    (name, kind, help): (&str, &str, &str),
    label: &str,
    rows: &[(&str, &AtomicU64)],
) {
    family(out, name, kind, help);
    for (value, v) in rows {
        let _ = writeln!(out, "{name}{{{label}=\"{value}\"}} {}", v.load(Relaxed));
    }
}

/// Renders the device and telemetry metrics; `extra` is appended (work orders, outbox).
pub fn render(gw: &GatewayView, extra: &str) -> String {
    let mut out = String::with_capacity(8192);
    // The devices in force (a reload changes them).
    let set = gw.current.get();
    let devices: Vec<(String, &DeviceStats)> = set
        .settings
        .devices
        .iter()
        .zip(&set.stats)
        .map(|(d, s)| (escape_label(&d.id), s.as_ref()))
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
        family(&mut out, name, "counter", help);
        for (id, s) in &devices {
            let _ = writeln!(out, "{name}{{asset=\"{id}\"}} {}", get(s));
        }
    }
    family(
        &mut out,
        "facilityd_modbus_errors_total",
        "counter",
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
            let _ = writeln!(
                out,
                "facilityd_modbus_errors_total{{asset=\"{id}\",kind=\"{kind}\"}} {}",
                DeviceStats::get(v)
            );
        }
    }
    family(
        &mut out,
        "facilityd_device_online",
        "gauge",
        "1 while the device answers, 0 while it is backed off to its probe schedule.",
    );
    for (id, s) in &devices {
        let _ = writeln!(
            out,
            "facilityd_device_online{{asset=\"{id}\"}} {}",
            u8::from(s.online.load(Relaxed))
        );
    }
    family(
        &mut out,
        "facilityd_modbus_cycle_seconds",
        "gauge",
        "Achieved poll cycle per device: from the start of its previous poll to the start of its last (above the interval when its link cannot keep the schedule).",
    );
    for (id, s) in &devices {
        let _ = writeln!(
            out,
            "facilityd_modbus_cycle_seconds{{asset=\"{id}\"}} {}",
            s.last_cycle_us.load(Relaxed) as f64 / 1e6
        );
    }
    family(
        &mut out,
        "facilityd_serial_bus_seconds_total",
        "counter",
        "Serial bus time taken by each device's reads (frames, silences, turnaround, waiting for the answer); its rate summed by bus is the bus's utilisation.",
    );
    for ((id, s), d) in devices.iter().zip(set.settings.devices.iter()) {
        if let crate::device::DeviceSource::Modbus(m) = &d.source
            && let crate::modbus::link::Link::Rtu(serial) = &m.link
        {
            let _ = writeln!(
                out,
                "facilityd_serial_bus_seconds_total{{asset=\"{id}\",bus=\"{}\"}} {}",
                escape_label(&serial.path),
                s.bus_us.load(Relaxed) as f64 / 1e6
            );
        }
    }
    family(
        &mut out,
        "facilityd_poll_duration_seconds",
        "histogram",
        "Duration of poll cycles, per device.",
    );
    for (id, s) in &devices {
        let mut cum = 0;
        for (i, le) in POLL_BUCKETS.iter().enumerate() {
            cum += s.poll_hist[i].load(Relaxed);
            let _ = writeln!(
                out,
                "facilityd_poll_duration_seconds_bucket{{asset=\"{id}\",le=\"{le}\"}} {cum}"
            );
        }
        cum += s.poll_hist[POLL_BUCKETS.len()].load(Relaxed);
        let _ = writeln!(
            out,
            "facilityd_poll_duration_seconds_bucket{{asset=\"{id}\",le=\"+Inf\"}} {cum}"
        );
        let _ = writeln!(
            out,
            "facilityd_poll_duration_seconds_sum{{asset=\"{id}\"}} {}",
            s.poll_us_sum.load(Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "facilityd_poll_duration_seconds_count{{asset=\"{id}\"}} {cum}"
        );
    }

    let t = &gw.telemetry;
    labelled(
        &mut out,
        (
            "facilityd_telemetry_lines_total",
            "counter",
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
    family(
        &mut out,
        "facilityd_telemetry_records_dropped_total",
        "counter",
        "Records dropped because the poller-to-telemetry channel was full.",
    );
    let _ = writeln!(
        out,
        "facilityd_telemetry_records_dropped_total {}",
        t.records_dropped.load(Relaxed)
    );
    family(
        &mut out,
        "facilityd_telemetry_write_errors_total",
        "counter",
        "Failed database writes (retried).",
    );
    let _ = writeln!(
        out,
        "facilityd_telemetry_write_errors_total {}",
        t.write_errors.load(Relaxed)
    );
    log_metrics(&mut out, gw);
    let m = &gw.maintenance;
    let rule_counters: [(&str, &str, &std::sync::atomic::AtomicU64); 9] = [
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
        family(&mut out, name, "counter", help);
        let _ = writeln!(out, "{name} {}", v.load(Relaxed));
    }
    family(
        &mut out,
        "facilityd_meter_wraps_total",
        "counter",
        "Meter readings taken as a register wrap-around.",
    );
    let _ = writeln!(
        out,
        "facilityd_meter_wraps_total {}",
        m.meter_wraps.load(Relaxed)
    );
    family(
        &mut out,
        "facilityd_work_order_commit_latency_seconds",
        "gauge",
        "From the reading that triggered the last work-order change to its commit.",
    );
    let _ = writeln!(
        out,
        "facilityd_work_order_commit_latency_seconds {}",
        m.last_commit_latency_us.load(Relaxed) as f64 / 1e6
    );
    let r = &gw.reloads;
    labelled(
        &mut out,
        (
            "facilityd_config_reloads_total",
            "counter",
            "Configuration reloads (SIGHUP) by result: ok (applied), error (rejected; the running configuration stayed in force).",
        ),
        "result",
        &[("ok", &r.ok), ("error", &r.error)],
    );
    family(
        &mut out,
        "facilityd_config_last_reload_successful",
        "gauge",
        "0 when the last configuration reload was rejected, else 1.",
    );
    let _ = writeln!(
        out,
        "facilityd_config_last_reload_successful {}",
        u8::from(!r.last_failed.load(Relaxed))
    );
    family(
        &mut out,
        "facilityd_config_last_reload_success_timestamp_seconds",
        "gauge",
        "Time of the last applied configuration reload (0: none since the start).",
    );
    let _ = writeln!(
        out,
        "facilityd_config_last_reload_success_timestamp_seconds {}",
        r.last_ok_unix.load(Relaxed)
    );
    family(
        &mut out,
        "facilityd_config_restart_required",
        "gauge",
        "1 when the reloaded configuration changes settings that take effect only after a restart.",
    );
    let _ = writeln!(
        out,
        "facilityd_config_restart_required {}",
        u8::from(r.restart_required.load(Relaxed))
    );
    out.push_str(extra);
    out
}

/// The on-disk telemetry log: size, backlog, forwarding, drops, recovery.
fn log_metrics(out: &mut String, gw: &GatewayView) {
    let l = &gw.log_stats;
    let scalars: [(&str, &str, &str, u64); 14] = [
        (
            "facilityd_log_bytes",
            "gauge",
            "Bytes of the on-disk telemetry log (forwarded history included).",
            l.bytes.load(Relaxed),
        ),
        (
            "facilityd_log_segments",
            "gauge",
            "Segment files of the telemetry log.",
            l.segments.load(Relaxed),
        ),
        (
            "facilityd_log_backlog_bytes",
            "gauge",
            "Bytes of the log not yet written to the database.",
            l.backlog_bytes.load(Relaxed),
        ),
        (
            "facilityd_log_backlog_lines",
            "gauge",
            "Lines of the log not yet written to the database.",
            l.backlog_lines.load(Relaxed),
        ),
        (
            "facilityd_log_disk_failing",
            "gauge",
            "1 while the disk refuses writes to the telemetry log.",
            l.disk_failing.load(Relaxed),
        ),
        (
            "facilityd_log_writer_running",
            "gauge",
            "1 while the telemetry log's writer thread runs (0 while running means a bug: /readyz fails).",
            l.writer_running.load(Relaxed),
        ),
        (
            "facilityd_gateway_database_refused",
            "gauge",
            "1 while the database refuses our writes (HTTP 401, 403, 404).",
            gw.faults.database_refused().is_some() as u64,
        ),
        (
            "facilityd_gateway_database_unexpected",
            "gauge",
            "1 while telemetry writes get an answer no database gives (a redirect, 405, an unexpected 2xx).",
            gw.faults.database_unexpected().is_some() as u64,
        ),
        (
            "facilityd_log_appended_lines_total",
            "counter",
            "Lines appended to the telemetry log.",
            l.appended_lines.load(Relaxed),
        ),
        (
            "facilityd_log_forwarded_lines_total",
            "counter",
            "Lines forwarded from the log to the database.",
            l.forwarded_lines.load(Relaxed),
        ),
        (
            "facilityd_log_fsyncs_total",
            "counter",
            "Group commits (syncs) of the telemetry log.",
            l.fsyncs.load(Relaxed),
        ),
        (
            "facilityd_log_write_errors_total",
            "counter",
            "Writes and syncs of the telemetry log the disk refused.",
            l.write_errors.load(Relaxed),
        ),
        (
            "facilityd_log_recovery_cuts_total",
            "counter",
            "Torn segment tails cut and corrupt stretches skipped at start-up.",
            l.recovery_cuts.load(Relaxed),
        ),
        (
            "facilityd_log_recovery_cut_bytes_total",
            "counter",
            "Bytes cut from torn tails and skipped as corrupt at start-up.",
            l.recovery_cut_bytes.load(Relaxed),
        ),
    ];
    for (name, kind, help, v) in scalars {
        family(out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    let age = gw
        .log
        .get()
        .and_then(|log| log.oldest_backlog_age())
        .map_or(0.0, |d| d.as_secs_f64());
    family(
        out,
        "facilityd_log_backlog_oldest_seconds",
        "gauge",
        "Age of the oldest line not yet written to the database (0 when none).",
    );
    let _ = writeln!(out, "facilityd_log_backlog_oldest_seconds {age}");
    family(
        out,
        "facilityd_log_forward_rate",
        "gauge",
        "Lines per second written from the log to the database, over the last seconds.",
    );
    let _ = writeln!(out, "facilityd_log_forward_rate {}", l.forward_rate());
    labelled(
        out,
        (
            "facilityd_log_dropped_lines_total",
            "counter",
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
            "counter",
            "Forwarded history removed from the log: to stay under log_max_bytes (bound), or after history_retention (retention).",
        ),
        "reason",
        &[
            ("bound", &l.history_evicted_bytes),
            ("retention", &l.history_expired_bytes),
        ],
    );
    let file = gw.state_dir.join(crate::telemetry::dead_letter::FILE_NAME);
    family(
        out,
        "facilityd_telemetry_dead_letter_lines_total",
        "counter",
        "Lines the database rejected (HTTP 400, or a single line too large), kept in the named file.",
    );
    let _ = writeln!(
        out,
        "facilityd_telemetry_dead_letter_lines_total{{file=\"{}\"}} {}",
        escape_label(&file.display().to_string()),
        gw.telemetry.lines_dead_lettered.load(Relaxed)
    );
    family(
        out,
        "facilityd_telemetry_dead_letter_bytes",
        "gauge",
        "Bytes of the dead-letter files: the current file, its rotations, and files a resend has taken.",
    );
    let _ = writeln!(
        out,
        "facilityd_telemetry_dead_letter_bytes {}",
        gw.telemetry.dead_letter.bytes.load(Relaxed)
    );
    family(
        out,
        "facilityd_telemetry_dead_letter_dropped_lines_total",
        "counter",
        "Dead-lettered lines removed with the oldest rotation to stay within storage.dead_letter_max_bytes.",
    );
    let _ = writeln!(
        out,
        "facilityd_telemetry_dead_letter_dropped_lines_total {}",
        gw.telemetry.dead_letter.dropped_lines.load(Relaxed)
    );
    family(
        out,
        "facilityd_telemetry_write_failures_total",
        "counter",
        "Failed telemetry writes by the database's HTTP status (0: no answer: a network error or timeout).",
    );
    for (status, n) in gw.telemetry.failures_by_status() {
        let _ = writeln!(
            out,
            "facilityd_telemetry_write_failures_total{{status=\"{status}\"}} {n}"
        );
    }
}
