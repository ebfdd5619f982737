//! Misbehaving peers: RTU-over-TCP device servers (pymodbus, and a scripted one that answers
//! late), a peer that answers garbage, and a scripted HTTP peer for the database status codes
//! VictoriaMetrics never returns.

mod support;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facilityd::device::link::Link;
use facilityd::gateway::Gateway;
use facilityd::modbus::plan::ReadRequest;
use facilityd::modbus::poller::{self, LinkPoller, PolledDevice, ReadData, ReadError, RecordSink};
use facilityd::modbus::rtu;
use facilityd::modbus::stats::DeviceStats;
use facilityd::model::{Record, Value};
use facilityd::profile::RegisterKind;
use facilityd::sim::{SimDeviceSpec, SimPortSpec, SimSpec};
use facilityd::telemetry::dead_letter::{DeadLetter, read_entries};
use facilityd::telemetry::influx::InfluxWriter;
use facilityd::telemetry::log::{Class, LogAppender, LogConfig, LogStats, Part, TelemetryLog};
use facilityd::telemetry::pipeline::{Batch, Forwarder, GatewayFaults, TelemetryStats};
use serde_json::json;
use support::PyModbusServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn settings(dir: &std::path::Path, body: &str) -> facilityd::settings::Settings {
    std::fs::write(
        dir.join("facilityd.toml"),
        format!(
            "[gateway]\nid = \"gw\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:0\"\n\n{body}",
            dir.join("state").display().to_string()
        ),
    )
    .unwrap();
    facilityd::settings::load_with_env(&dir.join("facilityd.toml"), Default::default())
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn run_for(gw: &Gateway, d: Duration) {
    let stop = CancellationToken::new();
    let task = tokio::spawn({
        let (gw, stop) = (gw.clone(), stop.clone());
        async move { gw.run(stop, Default::default()).await }
    });
    tokio::time::sleep(d).await;
    stop.cancel();
    task.await.unwrap().unwrap();
}

fn latest(gw: &Gateway, device: usize, point: &str) -> Option<Value> {
    let d = &gw.settings.devices[device];
    let (i, _) = d.profile.point(point)?;
    gw.latest.device(device)?.points[i].clone().map(|(v, _)| v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_reads_two_units_behind_a_serial_device_server() {
    let server = PyModbusServer::start(&json!({
        "framer": "rtu",
        "units": {
            "1": { "holding": { "0": 1500, "1": 7 } },
            "2": { "holding": { "0": 900, "1": 65535 } },
        }
    }))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let profile = "[[profiles]]\nname = \"tank\"\ndevice_type = \"pump\"\npoints = [\n  { name = \"level_cm\", kind = \"gauge\", register = \"holding\", address = 0, scale = 0.1 },\n  { name = \"alarms\", kind = \"state\", register = \"holding\", address = 1, na = 65535, output = \"integer\" },\n]\n";
    let url = format!("rtu+tcp://127.0.0.1:{}", server.port());
    let s = settings(
        dir.path(),
        &format!(
            "{profile}\n[[devices]]\nid = \"T-1\"\nprofile = \"tank\"\ninterval = \"100ms\"\nmodbus = {{ url = \"{url}\", unit = 1, timeout = \"300ms\" }}\n\n[[devices]]\nid = \"T-2\"\nprofile = \"tank\"\ninterval = \"100ms\"\nmodbus = {{ url = \"{url}\", unit = 2, timeout = \"300ms\" }}\n"
        ),
    );
    let gw = Gateway::new(s);
    run_for(&gw, Duration::from_millis(1500)).await;
    assert_eq!(latest(&gw, 0, "level_cm"), Some(Value::Float(150.0)));
    assert_eq!(latest(&gw, 0, "alarms"), Some(Value::Int(7)));
    assert_eq!(latest(&gw, 1, "level_cm"), Some(Value::Float(90.0)));
    assert_eq!(
        latest(&gw, 1, "alarms"),
        None,
        "the na sentinel became a value"
    );
    assert_eq!(
        DeviceStats::get(&gw.device_stats[1].bad_values),
        DeviceStats::get(&gw.device_stats[1].polls)
    );
    let reqs = server.requests();
    assert!(reqs.iter().any(|r| r.unit == 1) && reqs.iter().any(|r| r.unit == 2));
    assert!(reqs.iter().all(|r| r.is_read()));
}

/// The requests a scripted device server got, as sent.
type RequestLog = Arc<Mutex<Vec<Vec<u8>>>>;

/// A serial device server (`rtu+tcp://`) with a scripted bus behind it: the n-th read request
/// (counted over every connection) is logged, then answered with `answer(n, request)`, a
/// delay and the bytes to send (none: silence), one request at a time like a bus. Returns its
/// address, the connections it accepted and the requests it got.
async fn scripted_device_server(
    answer: impl Fn(usize, &[u8]) -> (Duration, Option<Vec<u8>>) + Send + Sync + 'static,
) -> (std::net::SocketAddr, Arc<AtomicUsize>, RequestLog) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let log = RequestLog::default();
    let answer = Arc::new(answer);
    let (c, l) = (conns.clone(), log.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (log, answer) = (l.clone(), answer.clone());
            tokio::spawn(async move {
                let mut req = [0u8; rtu::READ_REQUEST_LEN];
                while sock.read_exact(&mut req).await.is_ok() {
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(req.to_vec());
                        log.len() - 1
                    };
                    let (delay, reply) = answer(n, &req);
                    tokio::time::sleep(delay).await;
                    if let Some(bytes) = reply
                        && sock.write_all(&bytes).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (addr, conns, log)
}

/// The reply to a read request with every register (or bit) set to `value`.
fn reply_with(req: &[u8], value: u16) -> Vec<u8> {
    let (unit, kind, _, count) = rtu::parse_read_request(req).unwrap();
    let data = if kind.is_bit() {
        ReadData::Bits(vec![value != 0; usize::from(count)])
    } else {
        ReadData::Words(vec![value; usize::from(count)])
    };
    rtu::data_reply(unit, kind, &data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_drains_a_late_reply_and_the_next_read_gets_its_own_answer() {
    // Unit 7 answers the first read 250 ms late (after the 100 ms timeout) with 111s: a reply
    // of the very shape the next read asks for. It answers the next one at once with 222s,
    // the third with a corrupted CRC, the fourth with 444s.
    let (addr, conns, log) = scripted_device_server(|n, req| match n {
        0 => (Duration::from_millis(250), Some(reply_with(req, 111))),
        1 => (Duration::ZERO, Some(reply_with(req, 222))),
        2 => {
            let mut bad = reply_with(req, 333);
            bad[3] ^= 0x01;
            (Duration::ZERO, Some(bad))
        }
        _ => (Duration::ZERO, Some(reply_with(req, 444))),
    })
    .await;
    let link = Link::parse(&format!("rtu+tcp://{addr}")).unwrap();
    let mut conn = poller::connect(&link, 7, Duration::from_secs(1))
        .await
        .unwrap();
    let req = ReadRequest {
        kind: RegisterKind::Holding,
        start: 10,
        count: 2,
        points: vec![],
    };
    let limit = Duration::from_millis(100);

    let t0 = std::time::Instant::now();
    let r = poller::read(&mut conn, &req, limit).await;
    assert!(matches!(r, Err(ReadError::Timeout)), "{r:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(250),
        "{:?}",
        t0.elapsed()
    );
    // The next poll, after the late reply has arrived on the same connection: it is drained
    // before the request goes out, and the answer is the one to this request.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let r = poller::read(&mut conn, &req, limit).await;
    assert_eq!(r.ok(), Some(ReadData::Words(vec![222, 222])));
    assert_eq!(
        conn.stray_bytes(),
        rtu::reply_len(RegisterKind::Holding, 2) as u64,
        "the late reply was not drained as stray bytes"
    );
    // A reply whose CRC fails is discarded, not decoded; the connection stays in step.
    let r = poller::read(&mut conn, &req, limit).await;
    assert!(matches!(r, Err(ReadError::Garbled(_))), "{r:?}");
    let r = poller::read(&mut conn, &req, limit).await;
    assert_eq!(r.ok(), Some(ReadData::Words(vec![444, 444])));

    // One connection throughout: neither the timeout nor the garbled frame reopened it.
    assert_eq!(conns.load(Ordering::SeqCst), 1);
    let sent = log.lock().unwrap().clone();
    assert_eq!(sent.len(), 4);
    for f in &sent {
        assert_eq!(f[..], rtu::read_request(7, RegisterKind::Holding, 10, 2));
    }
    conn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rtu_over_tcp_poller_keeps_the_link_through_a_late_reply_and_never_records_it() {
    // The first read is answered 250 ms late (the timeout is 100 ms) with 111; every later
    // one at once with 222. Polls come every 500 ms, after the late reply has arrived.
    let (addr, conns, _) = scripted_device_server(|n, req| {
        if n == 0 {
            (Duration::from_millis(250), Some(reply_with(req, 111)))
        } else {
            (Duration::ZERO, Some(reply_with(req, 222)))
        }
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        dir.path(),
        &format!(
            "[[profiles]]\nname = \"tank\"\ndevice_type = \"pump\"\npoints = [\n  {{ name = \"alarms\", kind = \"state\", register = \"holding\", address = 10, output = \"integer\" }},\n]\n\n[[devices]]\nid = \"T-7\"\nprofile = \"tank\"\ninterval = \"500ms\"\nmodbus = {{ url = \"rtu+tcp://{addr}\", unit = 7, timeout = \"100ms\" }}\n"
        ),
    );
    let stats = Arc::new(DeviceStats::default());
    let device = PolledDevice::new(0, s.devices[0].clone(), stats.clone()).unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    let sink = RecordSink::new(tx, Arc::default());
    let link = device.source.link.clone();
    let stop = CancellationToken::new();
    let task = tokio::spawn(LinkPoller::new(link, vec![device], sink).run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(1800)).await;
    stop.cancel();
    task.await.unwrap();

    let mut readings = Vec::new();
    while let Ok(r) = rx.try_recv() {
        if let Record::Reading(r) = r {
            readings.extend(r.values.into_iter().map(|(_, v)| v));
        }
    }
    assert!(readings.len() >= 2, "{readings:?}");
    assert!(
        readings.iter().all(|v| *v == Value::Int(222)),
        "a late reply was recorded: {readings:?}"
    );
    assert_eq!(DeviceStats::get(&stats.timeouts), 1, "{stats:?}");
    assert_eq!(stats.errors(), 1, "{stats:?}");
    assert_eq!(
        conns.load(Ordering::SeqCst),
        1,
        "a timeout reopened the connection"
    );
}

/// A "device" that answers every request with bytes that are not a Modbus frame.
async fn garbage_peer() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    tokio::spawn(async move {
        let mut n = 0u8;
        while let Ok((mut sock, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            n = n.wrapping_add(1);
            let variant = n;
            tokio::spawn(async move {
                let mut buf = [0u8; 260];
                while let Ok(k) = sock.read(&mut buf).await {
                    if k == 0 {
                        break;
                    }
                    let reply: Vec<u8> = match variant % 3 {
                        // A well-formed MBAP header with the wrong transaction id.
                        0 => vec![0xBE, 0xEF, 0, 0, 0, 5, buf[6], 3, 2, 0, 1],
                        // A length field far beyond the data that follows.
                        1 => vec![buf[0], buf[1], 0, 0, 0xFF, 0xFF, buf[6], 3],
                        // Plain noise.
                        _ => b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(),
                    };
                    if sock.write_all(&reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    (addr, conns)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_are_counted_and_never_stop_the_other_links() {
    let (bad, conns) = garbage_peer().await;
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            devices: vec![SimDeviceSpec::new(1, "pump")],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let s = settings(
        dir.path(),
        &format!(
            "[[devices]]\nid = \"BAD\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{bad}\", unit = 1, timeout = \"100ms\", probe_interval = \"200ms\" }}\n\n[[devices]]\nid = \"GOOD\"\nprofile = \"pump\"\ninterval = \"100ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1, timeout = \"100ms\" }}\n",
            sim.addrs()[0]
        ),
    );
    let gw = Gateway::new(s);
    run_for(&gw, Duration::from_secs(3)).await;
    let bad = &gw.device_stats[0];
    let errors = DeviceStats::get(&bad.transport_errors)
        + DeviceStats::get(&bad.timeouts)
        + DeviceStats::get(&bad.malformed);
    assert!(errors >= 3, "garbage was not counted: {bad:?}");
    assert!(
        conns.load(Ordering::SeqCst) >= 3,
        "the connection was not reopened after garbage"
    );
    assert!(
        latest(&gw, 0, "discharge_pressure_bar").is_none(),
        "garbage became a value"
    );
    let good = &gw.device_stats[1];
    assert!(
        DeviceStats::get(&good.polls) >= 25,
        "the healthy link was held up: {} polls",
        DeviceStats::get(&good.polls)
    );
    assert_eq!(good.errors(), 0);
}

/// A scripted HTTP peer: answers the n-th write with `script(n, body)`, records what it got.
async fn scripted_http(
    script: impl Fn(usize, &str) -> u16 + Send + Sync + 'static,
) -> (String, TimedLog) {
    scripted_http_with(move |n, body| (script(n, body), None)).await
}

/// What the scripted peer got: the status it answered, the body, and when.
type TimedLog = Arc<Mutex<Vec<(u16, String, std::time::Instant)>>>;

/// [`scripted_http`] whose script may also set a `Retry-After` header.
async fn scripted_http_with(
    script: impl Fn(usize, &str) -> (u16, Option<&'static str>) + Send + Sync + 'static,
) -> (String, TimedLog) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let log: TimedLog = Arc::default();
    let script = Arc::new(script);
    let l = log.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (log, script) = (l.clone(), script.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    let mut chunk = [0u8; 8192];
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                    let len: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0);
                    while buf.len() < head_end + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => buf.extend_from_slice(&chunk[..k]),
                        }
                    }
                    let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                    buf.drain(..head_end + len);
                    let n = log.lock().unwrap().len();
                    let (code, retry_after) = script(n, &body);
                    log.lock()
                        .unwrap()
                        .push((code, body, std::time::Instant::now()));
                    let reason = if code == 204 { "No Content" } else { "Error" };
                    let text = if code == 204 {
                        String::new()
                    } else {
                        format!("{{\"code\":\"x\",\"message\":\"scripted {code}\"}}")
                    };
                    let extra = retry_after
                        .map(|r| format!("Retry-After: {r}\r\n"))
                        .unwrap_or_default();
                    let resp = format!(
                        "HTTP/1.1 {code} {reason}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, log)
}

/// A forwarder reading a fresh log under `dir/name`, writing to `url`; 10 lines per write.
fn forwarder(
    url: &str,
    dir: &std::path::Path,
    name: &str,
) -> (
    Forwarder,
    LogAppender,
    Arc<TelemetryStats>,
    Arc<GatewayFaults>,
) {
    let s = settings(
        dir,
        &format!(
            "[influxdb]\nurl = {url:?}\norg = \"o\"\nbucket = \"b\"\ntoken = \"t\"\ntimeout = \"2s\"\n"
        ),
    );
    let writer = Arc::new(InfluxWriter::new(s.influxdb.as_ref().unwrap()).unwrap());
    let stats = Arc::new(TelemetryStats::default());
    let (log, _) = TelemetryLog::open(
        LogConfig {
            dir: dir.join(name),
            max_bytes: 1 << 20,
            fsync_interval: Duration::from_millis(10),
            retention: Duration::from_secs(3600),
            forwarding: true,
        },
        Arc::new(LogStats::default()),
    )
    .unwrap();
    let appender = log.start_writer().unwrap();
    let faults = Arc::new(GatewayFaults::default());
    (
        Forwarder {
            writer,
            log,
            stats: stats.clone(),
            batch_size: 10,
            dead_letter: Arc::new(DeadLetter::new(dir, 64 << 20, Arc::default())),
            faults: faults.clone(),
        },
        appender,
        stats,
        faults,
    )
}

fn lines(range: std::ops::Range<usize>) -> Batch {
    let body: String = range
        .clone()
        .map(|i| {
            format!(
                "m,asset=a v={i}i {}\n",
                1_700_000_000_000_000_000i64 + i as i64
            )
        })
        .collect();
    Batch {
        body,
        lines: range.len(),
    }
}

async fn push(app: &LogAppender, b: Batch) {
    let part = Part {
        class: Class::Bulk,
        body: b.body,
        lines: b.lines as u32,
        min_ts: 0,
        max_ts: 0,
    };
    app.append(vec![part], Vec::new()).await.unwrap();
}

/// Closes the log (everything synced) and runs the forwarder until it has written it all.
async fn drain(fw: Forwarder, app: LogAppender) {
    tokio::task::spawn_blocking(move || app.close_and_join())
        .await
        .unwrap();
    let drain = CancellationToken::new();
    drain.cancel();
    tokio::time::timeout(
        Duration::from_secs(20),
        fw.run(CancellationToken::new(), drain),
    )
    .await
    .expect("forwarder did not drain the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_errors_are_retried_split_or_dead_lettered_never_dropped() {
    // 503 twice, then 429, then fine: every line arrives once, in order.
    let (url, log) = scripted_http(|n, _| match n {
        0 | 1 => 503,
        2 => 429,
        _ => 204,
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (fw, app, stats, _) = forwarder(&url, dir.path(), "a");
    push(&app, lines(0..10)).await;
    push(&app, lines(10..20)).await;
    drain(fw, app).await;
    let got = log.lock().unwrap().clone();
    let delivered: String = got
        .iter()
        .filter(|(c, _, _)| *c == 204)
        .map(|(_, b, _)| b.as_str())
        .collect();
    assert_eq!(
        delivered,
        format!("{}{}", lines(0..10).body, lines(10..20).body)
    );
    assert_eq!(stats.write_errors.load(Relaxed), 3);
    assert_eq!(stats.lines_written.load(Relaxed), 20);

    // 413 for anything over 4 lines: batches are halved until they fit, nothing lost or doubled.
    let (url, log) =
        scripted_http(|_, body| if body.lines().count() > 4 { 413 } else { 204 }).await;
    let (fw, app, stats, _) = forwarder(&url, dir.path(), "b");
    push(&app, lines(0..13)).await;
    drain(fw, app).await;
    let delivered: String = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(c, _, _)| *c == 204)
        .map(|(_, b, _)| b.clone())
        .collect();
    assert_eq!(delivered, lines(0..13).body);
    assert_eq!(stats.lines_written.load(Relaxed), 13);

    // 400: the batch is bisected down to the line the database refuses, which goes to the
    // dead-letter file; every other line is written, and the next batch too.
    let (url, log) = scripted_http(|_, body| if body.contains("v=3i") { 400 } else { 204 }).await;
    let (fw, app, stats, _) = forwarder(&url, dir.path(), "c");
    push(&app, lines(0..5)).await;
    push(&app, lines(5..8)).await;
    drain(fw, app).await;
    let kept = read_entries(&dir.path().join("dead-letter.lp")).unwrap();
    assert_eq!(kept.len(), 1);
    assert!(kept[0].reason().starts_with("HTTP 400"), "{kept:?}");
    assert_eq!(kept[0].lines.join("\n") + "\n", lines(3..4).body);
    assert_eq!(stats.lines_dead_lettered.load(Relaxed), 1);
    let mut written: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(c, _, _)| *c == 204)
        .flat_map(|(_, b, _)| b.lines().map(String::from).collect::<Vec<_>>())
        .collect();
    written.sort();
    let mut expected: Vec<String> = lines(0..8)
        .body
        .lines()
        .filter(|l| !l.contains("v=3i"))
        .map(String::from)
        .collect();
    expected.sort();
    assert_eq!(written, expected);

    // 401 (a wrong token): kept and retried, not dropped, and the gateway's own fault is up
    // while it lasts; written once the token works, and the fault clears.
    let (url, log) = scripted_http(|n, _| if n < 3 { 401 } else { 204 }).await;
    let (fw, app, stats, faults) = forwarder(&url, dir.path(), "d");
    push(&app, lines(0..3)).await;
    let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let (faults, seen) = (faults.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                if faults.database_refused().is_some_and(|w| w.contains("401")) {
                    seen.store(true, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    drain(fw, app).await;
    watch.abort();
    assert!(
        seen.load(Relaxed),
        "HTTP 401 did not raise the gateway fault"
    );
    assert!(faults.database_refused().is_none() && faults.database_ok());
    assert_eq!(
        log.lock()
            .unwrap()
            .iter()
            .filter(|(c, _, _)| *c == 401)
            .count(),
        3
    );
    assert_eq!(stats.lines_written.load(Relaxed), 3);
    assert_eq!(stats.lines_dead_lettered.load(Relaxed), 0);
}

/// The lines of a dead-letter file (without its comment lines).
fn dead_lines(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("dead-letter.lp"))
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_422_dead_letters_only_the_refused_line_and_forwarding_goes_on() {
    // InfluxDB 2.x answers 422 to a batch with a field-type conflict and writes its other
    // lines; the scripted peer refuses every batch that holds line 6.
    let (url, log) = scripted_http(|_, body| if body.contains("v=6i") { 422 } else { 204 }).await;
    let dir = tempfile::tempdir().unwrap();
    let (fw, app, stats, faults) = forwarder(&url, dir.path(), "a");
    push(&app, lines(0..10)).await;
    push(&app, lines(10..14)).await;
    drain(fw, app).await;
    assert_eq!(dead_lines(dir.path()), lines(6..7).body);
    assert_eq!(stats.lines_dead_lettered.load(Relaxed), 1);
    let mut written: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|(c, _, _)| *c == 204)
        .flat_map(|(_, b, _)| b.lines().map(String::from).collect::<Vec<_>>())
        .collect();
    written.sort();
    written.dedup();
    let mut expected: Vec<String> = lines(0..14)
        .body
        .lines()
        .filter(|l| !l.contains("v=6i"))
        .map(String::from)
        .collect();
    expected.sort();
    assert_eq!(written, expected, "every other line, the next batch too");
    assert!(faults.database_unexpected().is_none() && faults.database_refused().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_waits_as_told() {
    let (url, log) = scripted_http_with(|n, _| match n {
        0 => (429, Some("3")),
        _ => (204, None),
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (fw, app, stats, _) = forwarder(&url, dir.path(), "a");
    push(&app, lines(0..5)).await;
    drain(fw, app).await;
    let got = log.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one refusal, one retry: {got:?}");
    let waited = got[1].2 - got[0].2;
    // The backoff alone would retry after 125-250 ms.
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(10),
        "retried after {waited:?}, not after the 3 s Retry-After"
    );
    assert_eq!(stats.lines_written.load(Relaxed), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_no_database_gives_holds_the_lines_and_raises_a_fault() {
    // A proxy answering 405 three times, then the database behind it.
    let (url, log) = scripted_http(|n, _| if n < 3 { 405 } else { 204 }).await;
    let dir = tempfile::tempdir().unwrap();
    let (fw, app, stats, faults) = forwarder(&url, dir.path(), "a");
    push(&app, lines(0..4)).await;
    let seen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = {
        let (faults, seen) = (faults.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                if faults
                    .database_unexpected()
                    .is_some_and(|w| w.contains("405"))
                {
                    seen.store(true, Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    drain(fw, app).await;
    watch.abort();
    assert!(
        seen.load(Relaxed),
        "HTTP 405 did not raise the gateway fault"
    );
    assert!(faults.database_unexpected().is_none() && faults.database_ok());
    let got = log.lock().unwrap().clone();
    assert_eq!(got.iter().filter(|(c, _, _)| *c == 405).count(), 3);
    let delivered: String = got
        .iter()
        .filter(|(c, _, _)| *c == 204)
        .map(|(_, b, _)| b.as_str())
        .collect();
    assert_eq!(delivered, lines(0..4).body, "held, then written once");
    assert_eq!(stats.lines_dead_lettered.load(Relaxed), 0);
    assert_eq!(stats.failures_by_status(), [(405, 3)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_opens_a_gateway_work_order_for_a_405() {
    // A fault present from the first write on (the case that once never opened one).
    let (url, _log) = scripted_http(|_, _| 405).await;
    let sim = facilityd::sim::start(SimSpec {
        ports: vec![SimPortSpec {
            listen: "127.0.0.1:0".parse().unwrap(),
            devices: vec![SimDeviceSpec::new(1, "pump")],
        }],
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = support::free_port();
    let cfg = format!(
        "[gateway]\nid = \"gw-405\"\nstate_dir = {:?}\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n\n[influxdb]\nurl = \"{url}\"\norg = \"o\"\nbucket = \"b\"\nflush_interval = \"200ms\"\n\n[[devices]]\nid = \"PU-1\"\nprofile = \"pump\"\ninterval = \"500ms\"\nmodbus = {{ url = \"tcp://{}\", unit = 1 }}\n",
        dir.path().join("state").display().to_string(),
        sim.addrs()[0]
    );
    let path = dir.path().join("facilityd.toml");
    std::fs::write(&path, cfg).unwrap();
    let mut gw = support::Daemon::start(
        env!("CARGO_BIN_EXE_facilityd"),
        &["run", "-c", &path.display().to_string()],
        &[("RUST_LOG", "info")],
    );
    let api = format!("http://127.0.0.1:{port}/api/v1/work-orders?asset=gw-405");
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut found = None;
    while std::time::Instant::now() < deadline && found.is_none() {
        if let Ok(r) = reqwest011::get(&api).await {
            let list: serde_json::Value = r.json().await.unwrap_or_default();
            found = list.as_array().and_then(|l| {
                l.iter()
                    .find(|w| w["rule"] == "gateway_database_unexpected")
                    .cloned()
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let wo =
        found.unwrap_or_else(|| panic!("no gateway work order for HTTP 405:\n{}", gw.output()));
    assert_eq!(wo["status"], "open");
    assert!(
        wo["description"].as_str().unwrap_or("").contains("405"),
        "{wo}"
    );
    assert!(gw.is_running(), "{}", gw.output());
    gw.stop_cleanly(Duration::from_secs(20)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_line_by_line_raises_a_fault_until_lines_are_taken_again() {
    // A proxy answering 400 to every request while the first chunk is bisected (10 lines:
    // 19 requests), then the database: the first chunk is all dead-lettered and raises the
    // fault; the second is written and clears it.
    let (url, _log) = scripted_http(|n, _| if n < 19 { 400 } else { 204 }).await;
    let dir = tempfile::tempdir().unwrap();
    let (fw, app, stats, faults) = forwarder(&url, dir.path(), "a");
    let drain = CancellationToken::new();
    let run = tokio::spawn(fw.run(CancellationToken::new(), drain.clone()));
    push(&app, lines(0..10)).await;
    // The second chunk only once the fault is up, so the test sees it whatever the timing.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while faults.database_rejecting().is_none() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let why = faults.database_rejecting();
    assert!(
        why.as_deref()
            .is_some_and(|w| w.contains("every line of a batch of 10") && w.contains("400")),
        "no fault for a batch refused line by line: {why:?}"
    );
    push(&app, lines(10..20)).await;
    tokio::task::spawn_blocking(move || app.close_and_join())
        .await
        .unwrap();
    drain.cancel();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("forwarder did not drain the log")
        .unwrap();
    assert!(faults.database_rejecting().is_none(), "not cleared");
    assert_eq!(dead_lines(dir.path()), lines(0..10).body);
    assert_eq!(stats.lines_dead_lettered.load(Relaxed), 10);
    assert_eq!(stats.lines_written.load(Relaxed), 10);
}
