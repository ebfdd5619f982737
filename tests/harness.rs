//! Tests of the test harness itself (tests/support) against the real servers:
//! VictoriaMetrics, the pymodbus server, and a child process.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use support::{
    Daemon, ExportedSeries, ModbusRequest, PyModbusServer, VictoriaMetrics, find_series,
};
use tokio_modbus::ExceptionCode;
use tokio_modbus::prelude::*;

const WAIT: Duration = Duration::from_secs(20);
const IO: Duration = Duration::from_secs(5);

fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

fn has(series: &[ExportedSeries], name: &str, labels: &[(&str, &str)], points: usize) -> bool {
    find_series(series, name, labels).is_some_and(|s| s.values.len() >= points)
}

#[tokio::test(flavor = "multi_thread")]
async fn victoria_metrics_maps_line_protocol_to_series() {
    let vm = VictoriaMetrics::start().await;
    let ts = now_ns() / 1000 * 1000 + 123_456; // sub-millisecond part 456 ns + 123 us
    let ts_ms = ts / 1_000_000;
    vm.write_line_protocol(&format!(
        "m,tag=a f=1i {ts}\n\
         m,tag=b f=2.5,ok=true,bad=false,s=\"idle\",u=7u {ts}\n"
    ))
    .await;

    let series = vm
        .wait_for_series(
            r#"{__name__=~"m_.*"}"#,
            |s| {
                has(s, "m_f", &[("tag", "a")], 1)
                    && has(s, "m_u", &[("tag", "b")], 1)
                    && s.len() >= 6
            },
            WAIT,
        )
        .await;
    let names: Vec<String> = series
        .iter()
        .map(|s| format!("{}{:?}", s.name(), s.labels()))
        .collect();
    assert_eq!(
        names,
        [
            r#"m_bad{"tag": "b"}"#,
            r#"m_f{"tag": "a"}"#,
            r#"m_f{"tag": "b"}"#,
            r#"m_ok{"tag": "b"}"#,
            r#"m_s{"tag": "b"}"#,
            r#"m_u{"tag": "b"}"#,
        ],
        "{series:#?}"
    );
    let point = |name: &str, tag: &str| {
        let s = find_series(&series, name, &[("tag", tag)]).unwrap();
        assert_eq!(
            s.timestamps,
            [ts_ms],
            "{name}: timestamps are cut to milliseconds"
        );
        s.values[0]
    };
    assert_eq!(point("m_f", "a"), 1.0, "integer field");
    assert_eq!(point("m_f", "b"), 2.5, "float field");
    assert_eq!(point("m_ok", "b"), 1.0, "true is stored as 1");
    assert_eq!(point("m_bad", "b"), 0.0, "false is stored as 0");
    assert_eq!(point("m_s", "b"), 0.0, "a string field is stored as 0");
    assert_eq!(point("m_u", "b"), 7.0, "unsigned field");
    // the two tags of one measurement/field are two series
    assert_eq!(series.iter().filter(|s| s.name() == "m_f").count(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn victoria_metrics_dedups_rewrites_keeps_old_points_and_survives_restart() {
    let mut vm = VictoriaMetrics::start().await;
    // a point from 2001: kept thanks to -retentionPeriod=100y
    let old = 1_000_000_000_000_000_000i64;
    let ts = now_ns();
    vm.write_line_protocol(&format!(
        "pump,asset=P1 run_hours=10i {old}\npump,asset=P1 run_hours=11i {ts}"
    ))
    .await;
    vm.write_line_protocol(&format!("pump,asset=P1 run_hours=11i {ts}"))
        .await; // a resend
    let series = vm
        .wait_for_series(
            "pump_run_hours",
            |s| has(s, "pump_run_hours", &[("asset", "P1")], 2),
            WAIT,
        )
        .await;
    vm.sync().await;
    let series_after_sync = vm.export("pump_run_hours").await;
    assert_eq!(series.len(), 1, "{series:#?}");
    assert_eq!(
        series_after_sync[0].points(),
        [(old / 1_000_000, 10.0), (ts / 1_000_000, 11.0)],
        "the resent point is stored once (-dedup.minScrapeInterval=1ms)"
    );

    // acknowledged writes survive a SIGTERM stop, and restart keeps port and data
    let ts2 = now_ns();
    vm.write_line_protocol(&format!("pump,asset=P1 run_hours=12i {ts2}"))
        .await;
    let port = vm.port();
    vm.stop().await;
    assert!(!vm.is_running());
    vm.restart().await;
    assert_eq!(vm.port(), port);
    let series = vm
        .wait_for_series(
            "pump_run_hours",
            |s| has(s, "pump_run_hours", &[("asset", "P1")], 3),
            WAIT,
        )
        .await;
    assert_eq!(series[0].values, [10.0, 11.0, 12.0], "{}", vm.log_tail());
}

fn two_unit_spec() -> serde_json::Value {
    json!({
        "units": {
            "1": {
                // hole at holding 2
                "holding": {"0": 1234, "1": 5678, "3": 9, "4": -2},
                "input": {"10": 215},
                "coils": {"0": true, "1": false, "2": true},
                "discrete": {"7": true}
            },
            "2": {
                "holding": {"0": 42, "1": 43},
                "input": {"0": 65535}
            }
        }
    })
}

async fn client(server: &PyModbusServer, unit: u8) -> tokio_modbus::client::Context {
    tokio::time::timeout(IO, tcp::connect_slave(server.addr(), Slave(unit)))
        .await
        .expect("connect timeout")
        .expect("connect")
}

macro_rules! io {
    ($e:expr) => {
        tokio::time::timeout(IO, $e)
            .await
            .expect("modbus timeout")
            .expect("modbus transport error")
    };
}

#[tokio::test(flavor = "multi_thread")]
async fn pymodbus_server_serves_sparse_map_per_unit_and_logs_each_request() {
    let server = PyModbusServer::start(&two_unit_spec()).await;
    let mut ctx = client(&server, 1).await;

    // wire addresses are the spec's addresses (no off-by-one)
    assert_eq!(io!(ctx.read_holding_registers(0, 2)), Ok(vec![1234, 5678]));
    assert_eq!(io!(ctx.read_holding_registers(3, 2)), Ok(vec![9, 0xFFFE]));
    assert_eq!(io!(ctx.read_input_registers(10, 1)), Ok(vec![215]));
    assert_eq!(io!(ctx.read_coils(0, 3)), Ok(vec![true, false, true]));
    assert_eq!(io!(ctx.read_discrete_inputs(7, 1)), Ok(vec![true]));
    // a read over the hole, and reads of unlisted addresses
    assert_eq!(
        io!(ctx.read_holding_registers(0, 4)),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        io!(ctx.read_holding_registers(2, 1)),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        io!(ctx.read_input_registers(0, 1)),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        io!(ctx.read_coils(2, 2)),
        Err(ExceptionCode::IllegalDataAddress)
    );
    // more than a device may be asked for at once
    assert_eq!(
        io!(ctx.read_holding_registers(0, 126)),
        Err(ExceptionCode::IllegalDataValue)
    );
    // the same connection, another unit: its own map
    ctx.set_slave(Slave(2));
    assert_eq!(io!(ctx.read_holding_registers(0, 2)), Ok(vec![42, 43]));
    assert_eq!(io!(ctx.read_input_registers(0, 1)), Ok(vec![65535]));
    assert_eq!(
        io!(ctx.read_holding_registers(3, 1)),
        Err(ExceptionCode::IllegalDataAddress)
    );

    // each request is logged once, in order, with unit, function code, address, count
    let requests = server.wait_for_requests(|r| r.len() >= 13, IO).await;
    let summary: Vec<(u8, u8, u16, u16)> = requests
        .iter()
        .map(|r| (r.unit, r.fc, r.address, r.count))
        .collect();
    assert_eq!(
        summary,
        [
            (1, 3, 0, 2),
            (1, 3, 3, 2),
            (1, 4, 10, 1),
            (1, 1, 0, 3),
            (1, 2, 7, 1),
            (1, 3, 0, 4),
            (1, 3, 2, 1),
            (1, 4, 0, 1),
            (1, 1, 2, 2),
            (1, 3, 0, 126),
            (2, 3, 0, 2),
            (2, 4, 0, 1),
            (2, 3, 3, 1),
        ]
    );
    assert!(requests.iter().all(ModbusRequest::is_read));

    // a unit id not in the spec gets no answer at all (the client times out)
    let mut silent = client(&server, 3).await;
    let outcome = tokio::time::timeout(
        Duration::from_millis(500),
        silent.read_holding_registers(0, 1),
    )
    .await;
    assert!(outcome.is_err(), "unit 3 answered: {outcome:?}");
    let requests = server.wait_for_requests(|r| r.len() >= 14, IO).await;
    assert_eq!(requests.len(), 14, "{requests:?}");
    assert_eq!((requests[13].unit, requests[13].fc), (3, 3));
}

#[tokio::test(flavor = "multi_thread")]
async fn pymodbus_server_can_be_changed_while_running() {
    let mut spec = two_unit_spec();
    spec["missing_units"] = json!("exception");
    let mut server = PyModbusServer::start(&spec).await;
    let mut ctx = client(&server, 1).await;

    // values and holes change under the client
    server.set_registers(1, "holding", 1, &[1, 2]).await; // also fills the hole at 2
    assert_eq!(
        io!(ctx.read_holding_registers(0, 4)),
        Ok(vec![1234, 1, 2, 9])
    );
    server.set_bits(1, "discrete", 8, &[true]).await;
    assert_eq!(io!(ctx.read_discrete_inputs(7, 2)), Ok(vec![true, true]));
    server.remove(1, "holding", 0, 1).await;
    assert_eq!(
        io!(ctx.read_holding_registers(0, 1)),
        Err(ExceptionCode::IllegalDataAddress)
    );

    // a unit answering with an exception code; then back to normal
    server.set_mode(1, "exception:6").await;
    assert_eq!(
        io!(ctx.read_holding_registers(1, 1)),
        Err(ExceptionCode::ServerDeviceBusy)
    );
    server.set_mode(1, "normal").await;
    assert_eq!(io!(ctx.read_holding_registers(1, 1)), Ok(vec![1]));

    // missing_units = exception: an unknown unit answers GATEWAY TARGET DEVICE (0x0B)
    ctx.set_slave(Slave(9));
    assert_eq!(
        io!(ctx.read_holding_registers(0, 1)),
        Err(ExceptionCode::GatewayTargetDevice)
    );

    // a slow unit: the answer comes after the delay
    ctx.set_slave(Slave(2));
    server.set_delay(2, Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    assert_eq!(io!(ctx.read_holding_registers(0, 1)), Ok(vec![42]));
    assert!(started.elapsed() >= Duration::from_millis(300));

    // bad commands are refused, not fatal
    assert!(server.command(json!({"cmd": "set", "unit": 1, "table": "holding", "address": 0, "values": [70000]})).await.is_err());
    assert!(
        server
            .command(json!({"cmd": "nonsense", "unit": 1}))
            .await
            .is_err()
    );
    assert!(server.command(json!({"cmd": "ping"})).await.is_ok());

    // a known unit that stops answering
    server.set_mode(2, "silent").await;
    let mut gone = client(&server, 2).await;
    let outcome = tokio::time::timeout(
        Duration::from_millis(500),
        gone.read_holding_registers(0, 1),
    )
    .await;
    assert!(outcome.is_err(), "silent unit 2 answered: {outcome:?}");

    // stop: the device is gone
    let addr = server.addr();
    server.stop().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread")]
async fn daemon_captures_output_passes_env_and_takes_signals() {
    let script = r#"echo "out FACILITYD_GATEWAY__ID=$FACILITYD_GATEWAY__ID"
echo err >&2
trap 'echo got-term; exit 7' TERM
echo ready
while :; do sleep 0.05; done"#;
    let mut daemon = Daemon::start(
        "/bin/sh",
        &["-c", script],
        &[("FACILITYD_GATEWAY__ID", "gw-test")],
    );
    assert!(
        daemon.wait_for_output("ready", WAIT).await,
        "{}",
        daemon.output()
    );
    assert!(
        daemon
            .stdout()
            .contains("out FACILITYD_GATEWAY__ID=gw-test"),
        "{}",
        daemon.output()
    );
    assert_eq!(daemon.stderr(), "err\n");
    assert!(daemon.is_running());
    assert_eq!(
        daemon.wait_with_timeout(Duration::from_millis(100)).await,
        None
    );
    daemon.sigterm();
    let status = daemon
        .wait_with_timeout(WAIT)
        .await
        .expect("exit after SIGTERM");
    assert_eq!(status.code(), Some(7), "{}", daemon.output());
    assert!(daemon.stdout().contains("got-term"));

    let mut crashed = Daemon::start(
        "/bin/sh",
        &["-c", "echo up; while :; do sleep 0.05; done"],
        &[],
    );
    assert!(crashed.wait_for_output("up", WAIT).await);
    let status = crashed.kill9();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}
