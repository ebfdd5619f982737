//! The simulators over real sockets, read with tokio-modbus's own client.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use facilityd::model::Value;
use facilityd::profile::RegisterKind;
use facilityd::sim::{
    Fault, FaultChange, FaultKind, FleetSpec, Registers, ScheduledFault, SimDeviceSpec, SimError,
    SimHandle, SimPortSpec, SimSpec, start,
};
use tokio_modbus::client::{Context, Reader, Writer, tcp};
use tokio_modbus::prelude::SlaveContext;
use tokio_modbus::{ExceptionCode, Slave};

#[path = "sim/power.rs"]
mod power;

/// Long enough for a reply on a loaded test machine, short enough to keep timeouts cheap.
const NO_REPLY: Duration = Duration::from_millis(300);

fn any_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// One port, frozen, with the given devices.
async fn sim(devices: Vec<SimDeviceSpec>) -> SimHandle {
    let spec = SimSpec {
        ports: vec![SimPortSpec {
            listen: any_port(),
            devices,
        }],
        frozen: true,
        ..SimSpec::default()
    };
    start(spec).await.expect("simulator starts")
}

async fn connect(h: &SimHandle, unit: u8) -> Context {
    tcp::connect_slave(h.addrs()[0], Slave(unit))
        .await
        .expect("connects")
}

fn words(r: Registers) -> Vec<u16> {
    match r {
        Registers::Words(w) => w,
        Registers::Bits(b) => panic!("expected words, got bits {b:?}"),
    }
}

fn value_of(h: &SimHandle, unit: u8, point: &str) -> Value {
    h.point_values(0, unit)
        .expect("unit exists")
        .into_iter()
        .find(|(n, _)| n == point)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no point {point}"))
}

#[tokio::test]
async fn two_units_behind_one_port_answer_their_own_maps() {
    let h = sim(vec![
        SimDeviceSpec::new(1, "elevator"),
        SimDeviceSpec::new(2, "pump"),
    ])
    .await;
    h.set_point(0, 2, "discharge_pressure_bar", Value::Float(4.2))
        .expect("settable");
    h.set_point(0, 1, "car_floor", Value::Int(7))
        .expect("settable");
    let mut ctx = connect(&h, 1).await;

    let lift = ctx
        .read_input_registers(0, 18)
        .await
        .expect("io")
        .expect("answers");
    assert_eq!(
        lift,
        words(
            h.registers(0, 1, RegisterKind::Input, 0, 18)
                .expect("mapped")
        )
    );
    assert_eq!(lift[0], 7, "car_floor");
    // The lift has no holding registers at all.
    assert_eq!(
        ctx.read_holding_registers(0, 1).await.expect("io"),
        Err(ExceptionCode::IllegalDataAddress)
    );

    ctx.set_slave(Slave(2));
    let pump = ctx
        .read_holding_registers(0, 22)
        .await
        .expect("io")
        .expect("answers");
    assert_eq!(
        pump,
        words(
            h.registers(0, 2, RegisterKind::Holding, 0, 22)
                .expect("mapped")
        )
    );
    assert_eq!(pump[0], 4200, "discharge_pressure_bar at 0.001 bar");
    assert_eq!(value_of(&h, 2, "discharge_pressure_bar"), Value::Float(4.2));
    // And the pump has no input registers.
    assert_eq!(
        ctx.read_input_registers(0, 1).await.expect("io"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    let dry = ctx
        .read_discrete_inputs(0, 3)
        .await
        .expect("io")
        .expect("answers");
    assert_eq!(&dry[..3], &[false, false, false]);

    assert_eq!(h.requests_served(0, 1).expect("unit"), 2);
    assert_eq!(h.requests_served(0, 2).expect("unit"), 3);
}

#[tokio::test]
async fn holes_and_limits_answer_exceptions() {
    // fire_panel: holding 0-4, 6 and 10-13; discrete 0-5.
    let h = sim(vec![SimDeviceSpec::new(5, "fire_panel")]).await;
    let mut ctx = connect(&h, 5).await;
    assert!(ctx.read_holding_registers(0, 5).await.expect("io").is_ok());
    assert!(ctx.read_holding_registers(6, 1).await.expect("io").is_ok());
    assert!(ctx.read_holding_registers(10, 4).await.expect("io").is_ok());
    for (addr, n) in [(0, 6), (5, 1), (6, 2), (4, 3), (0, 14), (13, 2), (100, 1)] {
        assert_eq!(
            ctx.read_holding_registers(addr, n).await.expect("io"),
            Err(ExceptionCode::IllegalDataAddress),
            "holding {addr}+{n}"
        );
    }
    assert_eq!(
        ctx.read_discrete_inputs(0, 7).await.expect("io"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_coils(0, 1).await.expect("io"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_holding_registers(65535, 2).await.expect("io"),
        Err(ExceptionCode::IllegalDataAddress)
    );
    assert_eq!(
        ctx.read_holding_registers(0, 0).await.expect("io"),
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(
        ctx.read_holding_registers(0, 126).await.expect("io"),
        Err(ExceptionCode::IllegalDataValue)
    );
    assert_eq!(
        ctx.read_discrete_inputs(0, 2001).await.expect("io"),
        Err(ExceptionCode::IllegalDataValue)
    );
    // The handle reads through the same checks.
    assert!(matches!(
        h.registers(0, 5, RegisterKind::Holding, 5, 1),
        Err(SimError::Exception(ExceptionCode::IllegalDataAddress))
    ));
}

#[tokio::test]
async fn writes_are_refused_and_change_nothing() {
    let h = sim(vec![
        SimDeviceSpec::new(1, "pump"),
        SimDeviceSpec::new(2, "elevator"),
    ])
    .await;
    let before = h
        .registers(0, 1, RegisterKind::Holding, 0, 22)
        .expect("mapped");
    let mut ctx = connect(&h, 1).await;
    assert_eq!(
        ctx.write_single_register(0, 1).await.expect("io"),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ctx.write_multiple_registers(0, &[1, 2]).await.expect("io"),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ctx.masked_write_register(10, 0, 0xFFFF).await.expect("io"),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ctx.read_write_multiple_registers(0, 1, 0, &[1])
            .await
            .expect("io"),
        Err(ExceptionCode::IllegalFunction)
    );
    ctx.set_slave(Slave(2));
    assert_eq!(
        ctx.write_single_coil(0, true).await.expect("io"),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        ctx.write_multiple_coils(0, &[true, true])
            .await
            .expect("io"),
        Err(ExceptionCode::IllegalFunction)
    );
    assert_eq!(
        h.registers(0, 1, RegisterKind::Holding, 0, 22)
            .expect("mapped"),
        before
    );
    assert_eq!(
        h.registers(0, 2, RegisterKind::Coil, 0, 2).expect("mapped"),
        Registers::Bits(vec![false, false])
    );
}

#[tokio::test]
async fn silent_unit_times_out_while_its_neighbour_answers() {
    let h = sim(vec![
        SimDeviceSpec::new(1, "pump"),
        SimDeviceSpec::new(2, "pump"),
    ])
    .await;
    h.set_fault(0, 1, Some(Fault::Silent)).expect("unit");
    let mut ctx = connect(&h, 1).await;
    let silent = tokio::time::timeout(NO_REPLY, ctx.read_holding_registers(0, 1)).await;
    assert!(silent.is_err(), "a silent unit answered: {silent:?}");
    assert_eq!(
        h.requests_served(0, 1).expect("unit"),
        1,
        "the request did arrive"
    );

    // Same connection, other unit: the port is fine.
    ctx.set_slave(Slave(2));
    let other = tokio::time::timeout(NO_REPLY, ctx.read_holding_registers(0, 2)).await;
    assert!(
        matches!(other, Ok(Ok(Ok(ref w))) if w.len() == 2),
        "{other:?}"
    );

    // Cleared, the unit answers again.
    h.clear_fault(0, 1, FaultKind::Silent).expect("unit");
    ctx.set_slave(Slave(1));
    let back = tokio::time::timeout(NO_REPLY, ctx.read_holding_registers(0, 2)).await;
    assert!(matches!(back, Ok(Ok(Ok(_)))), "{back:?}");
}

#[tokio::test]
async fn unknown_unit_gets_no_reply() {
    let h = sim(vec![SimDeviceSpec::new(1, "pump")]).await;
    let mut ctx = connect(&h, 9).await;
    let r = tokio::time::timeout(NO_REPLY, ctx.read_holding_registers(0, 1)).await;
    assert!(r.is_err(), "unit 9 answered: {r:?}");
    assert!(h.requests_served(0, 9).is_err());
    assert_eq!(h.requests_served(0, 1).expect("unit"), 0);
}

#[tokio::test]
async fn exception_fault_answers_every_request_with_it() {
    let h = sim(vec![SimDeviceSpec::new(1, "access_door")]).await;
    let mut ctx = connect(&h, 1).await;
    assert!(ctx.read_input_registers(0, 11).await.expect("io").is_ok());
    h.set_fault(0, 1, Some(Fault::exception())).expect("unit");
    assert_eq!(
        ctx.read_input_registers(0, 11).await.expect("io"),
        Err(ExceptionCode::ServerDeviceFailure)
    );
    assert_eq!(
        ctx.read_discrete_inputs(0, 11).await.expect("io"),
        Err(ExceptionCode::ServerDeviceFailure)
    );
    h.set_fault(
        0,
        1,
        Some(Fault::Exception {
            code: ExceptionCode::GatewayTargetDevice,
        }),
    )
    .expect("unit");
    assert_eq!(
        ctx.read_coils(0, 1).await.expect("io"),
        Err(ExceptionCode::GatewayTargetDevice)
    );
    h.set_fault(0, 1, None).expect("unit");
    assert!(ctx.read_input_registers(0, 11).await.expect("io").is_ok());
}

#[tokio::test]
async fn slow_fault_delays_replies() {
    let h = sim(vec![SimDeviceSpec::new(1, "pump")]).await;
    let mut ctx = connect(&h, 1).await;
    h.set_fault(
        0,
        1,
        Some(Fault::Slow {
            delay: Duration::from_millis(250),
        }),
    )
    .expect("unit");
    let t = Instant::now();
    assert!(ctx.read_holding_registers(0, 4).await.expect("io").is_ok());
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "replied after {:?}",
        t.elapsed()
    );
    h.clear_fault(0, 1, FaultKind::Slow).expect("unit");
    let t = Instant::now();
    assert!(ctx.read_holding_registers(0, 4).await.expect("io").is_ok());
    assert!(
        t.elapsed() < Duration::from_millis(200),
        "still slow: {:?}",
        t.elapsed()
    );
}

#[tokio::test]
async fn out_of_range_holds_a_point_until_cleared() {
    let h = sim(vec![
        SimDeviceSpec::new(1, "pump"),
        SimDeviceSpec::new(2, "elevator"),
    ])
    .await;
    h.set_fault(
        0,
        1,
        Some(Fault::OutOfRange {
            point: "discharge_pressure_bar".into(),
            value: Value::Float(0.5),
        }),
    )
    .expect("valid");
    assert_eq!(
        words(
            h.registers(0, 1, RegisterKind::Holding, 0, 1)
                .expect("mapped")
        ),
        [500]
    );
    assert_eq!(value_of(&h, 1, "discharge_pressure_bar"), Value::Float(0.5));
    // The model carries on underneath, but the point stays held.
    h.advance(Duration::from_secs(30));
    assert_eq!(value_of(&h, 1, "discharge_pressure_bar"), Value::Float(0.5));
    h.clear_fault(0, 1, FaultKind::OutOfRange).expect("unit");
    assert_ne!(value_of(&h, 1, "discharge_pressure_bar"), Value::Float(0.5));

    // A bit in a table of its own, and a name from a map.
    h.set_fault(
        0,
        2,
        Some(Fault::OutOfRange {
            point: "trapped_alarm".into(),
            value: Value::Bool(true),
        }),
    )
    .expect("valid");
    h.set_fault(
        0,
        2,
        Some(Fault::OutOfRange {
            point: "service_mode".into(),
            value: Value::Str("fire_return".into()),
        }),
    )
    .expect("valid");
    let mut ctx = connect(&h, 2).await;
    assert_eq!(
        &ctx.read_discrete_inputs(0, 4)
            .await
            .expect("io")
            .expect("answers")[..4],
        &[true, false, false, false]
    );
    assert_eq!(
        ctx.read_input_registers(3, 1)
            .await
            .expect("io")
            .expect("answers"),
        [2]
    );

    // Points and values that cannot be served are refused up front.
    assert!(matches!(
        h.set_fault(
            0,
            1,
            Some(Fault::OutOfRange {
                point: "no_such_point".into(),
                value: Value::Int(1)
            })
        ),
        Err(SimError::UnknownPoint { .. })
    ));
    assert!(matches!(
        h.set_fault(
            0,
            2,
            Some(Fault::OutOfRange {
                point: "service_mode".into(),
                value: Value::Str("party".into())
            })
        ),
        Err(SimError::BadValue { .. })
    ));
}

#[tokio::test]
async fn scheduled_faults_start_and_clear_on_time() {
    let mut pump = SimDeviceSpec::new(1, "pump");
    pump.faults = ScheduledFault::window(
        Fault::Silent,
        Duration::ZERO,
        Some(Duration::from_millis(400)),
    );
    pump.faults.push(ScheduledFault {
        at: Duration::from_millis(400),
        change: FaultChange::Set(Fault::OutOfRange {
            point: "fault".into(),
            value: Value::Bool(true),
        }),
    });
    let h = sim(vec![pump]).await;
    let mut ctx = connect(&h, 1).await;
    let r = tokio::time::timeout(
        Duration::from_millis(200),
        ctx.read_holding_registers(10, 1),
    )
    .await;
    assert!(r.is_err(), "silent from the start, but answered {r:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let status = ctx
        .read_holding_registers(10, 1)
        .await
        .expect("io")
        .expect("answers again");
    assert_eq!(
        status[0] & 0b10,
        0b10,
        "the fault bit is held: {:#06b}",
        status[0]
    );
}

#[tokio::test]
async fn frozen_stays_put_and_running_moves() {
    let frozen = sim(vec![SimDeviceSpec::new(1, "fire_panel")]).await;
    let a = frozen.point_values(0, 1).expect("unit");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(frozen.point_values(0, 1).expect("unit"), a);

    let spec = SimSpec {
        ports: vec![SimPortSpec {
            listen: any_port(),
            devices: vec![SimDeviceSpec::new(1, "fire_panel")],
        }],
        tick: Duration::from_millis(10),
        frozen: false,
        site: Vec::new(),
    };
    let running = start(spec).await.expect("starts");
    let mut ctx = tcp::connect_slave(running.addrs()[0], Slave(1))
        .await
        .expect("connects");
    // Battery voltage (holding 6) carries measurement noise: it changes within a few ticks.
    let first = ctx
        .read_holding_registers(6, 1)
        .await
        .expect("io")
        .expect("answers")[0];
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let now = ctx
            .read_holding_registers(6, 1)
            .await
            .expect("io")
            .expect("answers")[0];
        if now != first {
            assert!((2600..2800).contains(&now), "battery at {now} cV");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "battery voltage never moved from {first}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn set_point_drives_the_model() {
    let h = sim(vec![SimDeviceSpec::new(1, "pump")]).await;
    h.set_point(0, 1, "discharge_pressure_bar", Value::Float(4.4))
        .expect("settable");
    h.set_point(0, 1, "running", Value::Bool(false))
        .expect("settable");
    assert_eq!(value_of(&h, 1, "running"), Value::Bool(false));
    h.advance(Duration::from_secs(10));
    let Value::Float(p) = value_of(&h, 1, "discharge_pressure_bar") else {
        panic!("not a float")
    };
    assert!(p < 4.4, "pressure did not sag while stopped: {p}");
    assert!(matches!(
        h.set_point(0, 1, "running", Value::Str("yes".into())),
        Err(SimError::BadValue { .. })
    ));
    assert!(matches!(
        h.set_point(0, 7, "running", Value::Bool(true)),
        Err(SimError::NoSuchUnit { .. })
    ));
    assert!(matches!(
        h.point_values(3, 1),
        Err(SimError::NoSuchPort { port: 3 })
    ));
}

#[tokio::test]
async fn fleet_over_several_ports() {
    let mut fleet = FleetSpec::new(any_port());
    fleet.ports = 3;
    fleet.elevators = 3;
    fleet.pumps = 3;
    fleet.fire_panels = 2;
    fleet.doors = 2;
    fleet.frozen = true;
    let h = start(fleet.build().expect("fits")).await.expect("starts");
    let addrs = h.addrs();
    assert_eq!(addrs.len(), 3);
    assert!(addrs[0] != addrs[1] && addrs[1] != addrs[2]);
    let devices = h.devices();
    assert_eq!(devices.len(), 10);
    // Every listed device answers on its port with its own map.
    for d in &devices {
        let mut ctx = tcp::connect_slave(d.addr, Slave(d.unit))
            .await
            .expect("connects");
        let ok = match d.profile.as_str() {
            "elevator" | "access_door" => ctx.read_input_registers(0, 1).await,
            _ => ctx.read_holding_registers(0, 1).await,
        };
        assert!(
            matches!(ok, Ok(Ok(_))),
            "{} ({}) on {} unit {}: {ok:?}",
            d.name,
            d.profile,
            d.addr,
            d.unit
        );
    }
    // Same seed, same fleet.
    let again = start(fleet.build().expect("fits")).await.expect("starts");
    for d in &devices {
        assert_eq!(
            h.point_values(d.port, d.unit).expect("unit"),
            again.point_values(d.port, d.unit).expect("unit")
        );
    }
}

#[tokio::test]
async fn duplicate_units_and_unknown_profiles_are_errors() {
    let spec = SimSpec {
        ports: vec![SimPortSpec {
            listen: any_port(),
            devices: vec![
                SimDeviceSpec::new(1, "pump"),
                SimDeviceSpec::new(1, "elevator"),
            ],
        }],
        ..SimSpec::default()
    };
    assert!(matches!(
        start(spec).await,
        Err(SimError::DuplicateUnit { unit: 1, .. })
    ));
    let spec = SimSpec {
        ports: vec![SimPortSpec {
            listen: any_port(),
            devices: vec![SimDeviceSpec::new(1, "toaster")],
        }],
        ..SimSpec::default()
    };
    assert!(matches!(
        start(spec).await,
        Err(SimError::UnknownProfile { .. })
    ));
}

#[tokio::test]
async fn shutdown_closes_the_port() {
    let h = sim(vec![SimDeviceSpec::new(1, "pump")]).await;
    let addr = h.addrs()[0];
    let mut ctx = tcp::connect_slave(addr, Slave(1)).await.expect("connects");
    assert!(ctx.read_holding_registers(0, 1).await.expect("io").is_ok());
    h.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still listening"
    );
    // The open connection ends too.
    let r = tokio::time::timeout(NO_REPLY, ctx.read_holding_registers(0, 1)).await;
    assert!(matches!(r, Ok(Err(_))), "{r:?}");
}
