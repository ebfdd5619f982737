//! `facilityd simulate`: a fleet of the built-in device types over one or more ports (TCP or
//! serial buses), laid out from the command line, listed, and served until stopped; with
//! `--power-room`, a power meter, a generator and a transfer switch that supply the rest. The
//! `--fault` argument's grammar is in `fault_arg.rs`.

use std::io::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use super::fault_arg::{FAULT_HELP, FaultArg, FaultTarget};
use super::serial::start_serial_site;
use super::{DEFAULT_TICK, SimBusSpec, SimDeviceSpec, SimError, SimPortSpec, SimSpec, start};

/// The most devices on one port: unit ids 1-247, the range every Modbus gateway accepts.
pub const MAX_UNITS_PER_PORT: usize = 247;

/// Arguments of `facilityd simulate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulateArgs {
    /// Address of the first port; further ports use the following port numbers.
    #[arg(long, default_value = "127.0.0.1:5020")]
    pub listen: SocketAddr,
    /// Spread the devices over this many consecutive ports (round robin, unit ids from 1).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub ports: u16,
    /// Number of lifts (built-in profile `elevator`).
    #[arg(long, default_value_t = 1)]
    pub elevators: usize,
    /// Number of booster pumps (built-in profile `pump`).
    #[arg(long, default_value_t = 1)]
    pub pumps: usize,
    /// Number of fire alarm panels (built-in profile `fire_panel`).
    #[arg(long, default_value_t = 1)]
    pub fire_panels: usize,
    /// Number of access-controlled doors (built-in profile `access_door`).
    #[arg(long, default_value_t = 1)]
    pub doors: usize,
    /// Add the power room: a mains power meter PM-0001 (`power_meter`), a standby generator
    /// GEN-0001 (`generator`) and a transfer switch ATS-0001 (`ats`), which supply every other
    /// device (see `--fault mains-failure`; given such a fault, the power room is added).
    #[arg(long)]
    pub power_room: bool,
    /// Seed of the devices' random generators: the same seed gives the same fleet.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Nothing moves by itself; values change only through faults.
    #[arg(long)]
    pub frozen: bool,
    /// How often the equipment models move.
    #[arg(long, default_value = "100ms", value_parser = humantime::parse_duration)]
    pub tick: Duration,
    /// Inject a fault: TARGET=FAULT[@AT[..UNTIL]] (see --help).
    #[arg(long = "fault", value_name = "TARGET=FAULT[@AT[..UNTIL]]", value_parser = FaultArg::parse, long_help = FAULT_HELP)]
    pub faults: Vec<FaultArg>,
    /// Serve the devices as Modbus RTU slaves on this serial device or pty instead of TCP
    /// (repeat for more buses: devices are spread round robin, unit ids from 1 on each).
    #[arg(long = "serial", value_name = "PATH")]
    pub serial: Vec<String>,
    /// Baud rate of the serial buses.
    #[arg(long, default_value_t = 9600, value_parser = clap::value_parser!(u32).range(1..))]
    pub baud: u32,
    /// Parity of the serial buses: N, E or O.
    #[arg(long, default_value = "N", value_parser = parse_parity)]
    pub parity: char,
    /// Stop bits of the serial buses (1 or 2).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=2))]
    pub stop_bits: u8,
    /// Answer at once instead of pacing replies at the baud rate (a pty carries bytes
    /// instantly; pacing makes it behave like a real bus).
    #[arg(long)]
    pub no_pace: bool,
    /// Also publish MQTT devices (built-in profiles `access_door_mqtt` and `lift_monitor_mqtt`)
    /// to this broker, e.g. mqtt://127.0.0.1:1883.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Number of access-control doors publishing over MQTT (assets DOOR-M-0001...).
    #[arg(long, default_value_t = 1)]
    pub mqtt_doors: usize,
    /// Number of lift monitors publishing over MQTT (assets LIFT-M-0001...).
    #[arg(long, default_value_t = 1)]
    pub mqtt_lifts: usize,
    /// The building in the MQTT devices' topics.
    #[arg(long, default_value = "A")]
    pub mqtt_building: String,
}

/// `--parity` is not one of N, E or O (clap prints it after the argument's name).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected N, E or O, found {0:?}")]
pub struct ParityError(String);

fn parse_parity(s: &str) -> Result<char, ParityError> {
    match s {
        "N" | "n" | "none" => Ok('N'),
        "E" | "e" | "even" => Ok('E'),
        "O" | "o" | "odd" => Ok('O'),
        _ => Err(ParityError(s.to_string())),
    }
}

/// A fleet of the built-in device types spread round robin over consecutive ports.
#[derive(Debug, Clone)]
pub struct FleetSpec {
    /// The first port; the others follow (port 0: every port picks a free one).
    pub listen: SocketAddr,
    pub ports: u16,
    pub elevators: usize,
    pub pumps: usize,
    pub fire_panels: usize,
    pub doors: usize,
    /// One power meter, generator and transfer switch (`PM-0001`, `GEN-0001`, `ATS-0001`),
    /// laid out after the doors; the site's mains failure needs them.
    pub power_room: bool,
    pub seed: u64,
    pub tick: Duration,
    pub frozen: bool,
    pub faults: Vec<FaultArg>,
}

impl FleetSpec {
    /// One device of each type on one port.
    pub fn new(listen: SocketAddr) -> Self {
        FleetSpec {
            listen,
            ports: 1,
            elevators: 1,
            pumps: 1,
            fire_panels: 1,
            doors: 1,
            power_room: false,
            seed: 1,
            tick: DEFAULT_TICK,
            frozen: false,
            faults: Vec::new(),
        }
    }

    pub fn devices(&self) -> usize {
        self.elevators
            + self.pumps
            + self.fire_panels
            + self.doors
            + 3 * usize::from(self.power_room)
    }

    /// Whether a `--fault` is the site's (a mains failure).
    pub fn has_site_faults(&self) -> bool {
        self.faults.iter().any(|f| f.target == FaultTarget::Site)
    }

    /// Lays the fleet out: device k (lifts first, then pumps, panels, doors, the power room)
    /// goes to port `k % ports` with the next free unit id there; names are `EL-0001`,
    /// `PU-0001`, `FP-0001`, `DOOR-0001`, `PM-0001`, `GEN-0001`, `ATS-0001`.
    pub fn build(&self) -> Result<SimSpec, SimError> {
        let ports = usize::from(self.ports.max(1));
        let per_port = self.devices().div_ceil(ports);
        if per_port > MAX_UNITS_PER_PORT {
            return Err(SimError::Fleet(format!(
                "{} devices on {ports} port(s) is {per_port} per port; at most {MAX_UNITS_PER_PORT} fit (unit ids 1-247): use --ports {}",
                self.devices(),
                self.devices().div_ceil(MAX_UNITS_PER_PORT)
            )));
        }
        let mut spec = SimSpec {
            ports: Vec::with_capacity(ports),
            tick: self.tick,
            frozen: self.frozen,
            site: Vec::new(),
        };
        for i in 0..ports {
            let mut listen = self.listen;
            if listen.port() != 0 {
                let port = u16::try_from(usize::from(listen.port()) + i).map_err(|_| {
                    SimError::Fleet(format!(
                        "{ports} ports from {} run past port 65535",
                        self.listen
                    ))
                })?;
                listen.set_port(port);
            }
            spec.ports.push(SimPortSpec {
                listen,
                devices: Vec::with_capacity(per_port),
            });
        }
        let kinds = [
            ("elevator", "EL", self.elevators),
            ("pump", "PU", self.pumps),
            ("fire_panel", "FP", self.fire_panels),
            ("access_door", "DOOR", self.doors),
            ("power_meter", "PM", usize::from(self.power_room)),
            ("generator", "GEN", usize::from(self.power_room)),
            ("ats", "ATS", usize::from(self.power_room)),
        ];
        let mut k = 0usize;
        for (profile, prefix, n) in kinds {
            for j in 1..=n {
                let port = &mut spec.ports[k % ports];
                // per_port <= 247 was checked above, so the unit id fits.
                let unit = u8::try_from(port.devices.len() + 1).unwrap_or(u8::MAX);
                port.devices.push(SimDeviceSpec {
                    unit,
                    profile: profile.into(),
                    name: Some(format!("{prefix}-{j:04}")),
                    seed: mix(self.seed, k as u64),
                    faults: Vec::new(),
                });
                k += 1;
            }
        }
        if self.has_site_faults() && !self.power_room {
            return Err(SimError::NoPowerRoom);
        }
        for f in &self.faults {
            attach_fault(&mut spec, f)?;
        }
        Ok(spec)
    }
}

impl From<&SimulateArgs> for FleetSpec {
    fn from(a: &SimulateArgs) -> Self {
        FleetSpec {
            listen: a.listen,
            ports: a.ports,
            elevators: a.elevators,
            pumps: a.pumps,
            fire_panels: a.fire_panels,
            doors: a.doors,
            power_room: a.power_room || a.faults.iter().any(|f| f.target == FaultTarget::Site),
            seed: a.seed,
            tick: a.tick,
            frozen: a.frozen,
            faults: a.faults.clone(),
        }
    }
}

/// SplitMix64 of the fleet seed and the device's place: well-spread seeds per device.
fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(k.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn attach_fault(spec: &mut SimSpec, f: &FaultArg) -> Result<(), SimError> {
    let device = match &f.target {
        FaultTarget::Site => {
            spec.site.extend(f.scheduled());
            return Ok(());
        }
        FaultTarget::Name(name) => spec
            .ports
            .iter_mut()
            .flat_map(|p| p.devices.iter_mut())
            .find(|d| d.name.as_deref() == Some(name.as_str())),
        FaultTarget::Unit { port, unit } => {
            let p = match port {
                None => spec.ports.first_mut(),
                Some(number) => spec.ports.iter_mut().find(|p| p.listen.port() == *number),
            };
            p.and_then(|p| p.devices.iter_mut().find(|d| d.unit == *unit))
        }
    };
    let device = device.ok_or_else(|| {
        SimError::Fleet(format!("--fault {:?}: no such device in the fleet", f.text))
    })?;
    device.faults.extend(f.scheduled());
    Ok(())
}

/// The fleet laid out over serial buses: the TCP layout with one "port" per bus, numbered
/// from 1 so that `BUS:UNIT` fault targets name the bus's place in the list; and the site's
/// faults.
fn serial_fleet(
    args: &SimulateArgs,
    mut fleet: FleetSpec,
) -> Result<(Vec<SimBusSpec>, Vec<super::ScheduledFault>), SimError> {
    fleet.listen = SocketAddr::from(([0, 0, 0, 0], 1));
    fleet.ports = u16::try_from(args.serial.len())
        .map_err(|_| SimError::Fleet("too many --serial buses".into()))?;
    let spec = fleet.build()?;
    let buses = spec
        .ports
        .into_iter()
        .zip(&args.serial)
        .map(|(port, path)| {
            let mut bus = SimBusSpec::new(path.clone(), args.baud, port.devices);
            bus.line.parity = args.parity;
            bus.line.stop_bits = args.stop_bits;
            bus.pace = !args.no_pace;
            bus
        })
        .collect();
    Ok((buses, spec.site))
}

/// Runs `facilityd simulate` until Ctrl-C or SIGTERM.
pub async fn run_simulate(args: SimulateArgs) -> anyhow::Result<()> {
    let fleet = FleetSpec::from(&args);
    if fleet.devices() == 0 && args.mqtt_url.is_none() {
        anyhow::bail!(
            "nothing to simulate: set --elevators, --pumps, --fire-panels, --doors, --power-room or --mqtt-url"
        );
    }
    let serial = !args.serial.is_empty();
    let handle = if serial {
        let (buses, site) = serial_fleet(&args, fleet.clone())?;
        start_serial_site(buses, fleet.tick, fleet.frozen, site).await?
    } else {
        start(fleet.build()?).await?
    };
    let devices = handle.devices();
    {
        let mut out = std::io::stdout().lock();
        let place = if serial {
            format!(
                "{} serial bus(es) at {} baud{}",
                args.serial.len(),
                args.baud,
                if args.no_pace { ", unpaced" } else { "" }
            )
        } else {
            format!("{} port(s)", handle.addrs().len())
        };
        writeln!(
            out,
            "facilityd simulate: {} device(s) on {place}, seed {}, {}",
            devices.len(),
            fleet.seed,
            if fleet.frozen {
                "frozen".to_string()
            } else {
                format!("tick {}", humantime::format_duration(fleet.tick))
            },
        )?;
        writeln!(out, "{:<22} {:>4}  {:<12} NAME", "ADDRESS", "UNIT", "TYPE")?;
        let buses = handle.buses();
        for d in &devices {
            let address = match buses.get(d.port) {
                Some(path) => path.clone(),
                None => d.addr.to_string(),
            };
            writeln!(
                out,
                "{:<22} {:>4}  {:<12} {}",
                address,
                d.unit,
                d.device_type.as_str(),
                d.name
            )?;
        }
        if fleet.power_room && !args.power_room {
            writeln!(out, "power room added for the site's mains failure")?;
        }
        for f in &fleet.faults {
            writeln!(out, "fault: {}", f.text)?;
        }
        writeln!(out, "serving; Ctrl-C to stop")?;
        out.flush()?;
    }
    let mqtt_stop = tokio_util::sync::CancellationToken::new();
    if let Some(url) = &args.mqtt_url {
        let mut spec = mqtt_fleet(&args, url)?;
        // They go quiet with the rest of the site while its supply is off.
        spec.supply = handle.site_supply();
        println!("publishing {} MQTT device(s) to {url}:", spec.devices.len());
        for d in &spec.devices {
            let topic = match d.kind {
                super::mqtt::MqttSimKind::Door => {
                    format!("acs/{}/doors/{}/state|event", d.building, d.asset)
                }
                super::mqtt::MqttSimKind::Lift => {
                    format!("lifts/{}/{}/status", d.building, d.asset)
                }
            };
            println!("  {:<14} {topic}", d.asset);
        }
        tokio::spawn(super::mqtt::run(spec, mqtt_stop.clone()));
    }
    shutdown_signal().await?;
    mqtt_stop.cancel();
    handle.shutdown().await;
    Ok(())
}

/// The MQTT devices of `--mqtt-url`.
fn mqtt_fleet(args: &SimulateArgs, url: &str) -> anyhow::Result<super::mqtt::MqttSimSpec> {
    use super::mqtt::{MqttSimDevice, MqttSimKind, MqttSimSpec};
    let rest = url
        .strip_prefix("mqtt://")
        .ok_or_else(|| anyhow::anyhow!("--mqtt-url: expected mqtt://HOST[:PORT], found {url:?}"))?;
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => (
            h.to_string(),
            p.parse::<u16>()
                .map_err(|_| anyhow::anyhow!("--mqtt-url: bad port in {url:?}"))?,
        ),
        None => (rest.to_string(), 1883),
    };
    let mut devices = Vec::new();
    for i in 1..=args.mqtt_doors {
        devices.push(MqttSimDevice {
            asset: format!("DOOR-M-{i:04}"),
            building: args.mqtt_building.clone(),
            kind: MqttSimKind::Door,
        });
    }
    for i in 1..=args.mqtt_lifts {
        devices.push(MqttSimDevice {
            asset: format!("LIFT-M-{i:04}"),
            building: args.mqtt_building.clone(),
            kind: MqttSimKind::Lift,
        });
    }
    Ok(MqttSimSpec {
        host,
        port,
        devices,
        interval: Duration::from_secs(5),
        seed: args.seed,
        script: Vec::new(),
        supply: None,
    })
}

async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_fleet_spreads_over_buses_numbered_from_one() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: SimulateArgs,
        }
        let cli = Cli::try_parse_from([
            "simulate",
            "--serial",
            "/dev/ttyUSB0",
            "--serial",
            "/dev/ttyUSB1",
            "--baud",
            "19200",
            "--parity",
            "E",
            "--doors",
            "0",
        ])
        .expect("parses");
        let (buses, _) = serial_fleet(&cli.args, FleetSpec::from(&cli.args)).expect("fits");
        assert_eq!(buses.len(), 2);
        assert_eq!(buses[0].line.path, "/dev/ttyUSB0");
        assert_eq!((buses[1].line.baud, buses[1].line.parity), (19200, 'E'));
        assert!(buses[0].pace);
        let units: Vec<Vec<u8>> = buses
            .iter()
            .map(|b| b.devices.iter().map(|d| d.unit).collect())
            .collect();
        assert_eq!(units, [vec![1, 2], vec![1]]);
        // BUS:UNIT names a bus by its place in the list: bus 2 has no unit 2.
        let with_fault = |target: &str| {
            let cli = Cli::try_parse_from([
                "simulate", "--serial", "/dev/a", "--serial", "/dev/b", "--doors", "0", "--fault",
                target,
            ])
            .expect("parses");
            serial_fleet(&cli.args, FleetSpec::from(&cli.args))
        };
        assert!(with_fault("2:2=garbled").is_err());
        let (buses, _) = with_fault("1:2=garbled").expect("fits");
        assert_eq!(buses[0].devices[1].faults.len(), 1);
        assert_eq!(buses[0].devices[1].name.as_deref(), Some("FP-0001"));
    }

    #[test]
    fn fleet_spreads_round_robin() {
        let mut fleet = FleetSpec::new("127.0.0.1:5020".parse().expect("addr"));
        fleet.ports = 3;
        fleet.elevators = 4;
        fleet.pumps = 3;
        fleet.faults = vec![
            FaultArg::parse("PU-0002=silent@1s").expect("valid"),
            FaultArg::parse("5022:2=exception").expect("valid"),
        ];
        let spec = fleet.build().expect("fits");
        let ports: Vec<u16> = spec.ports.iter().map(|p| p.listen.port()).collect();
        assert_eq!(ports, [5020, 5021, 5022]);
        let layout: Vec<Vec<(u8, String)>> = spec
            .ports
            .iter()
            .map(|p| {
                p.devices
                    .iter()
                    .map(|d| (d.unit, d.name.clone().unwrap_or_default()))
                    .collect()
            })
            .collect();
        // k = 0..9: EL1 EL2 EL3 EL4 PU1 PU2 PU3 FP1 DOOR1, round robin over three ports.
        assert_eq!(
            layout[0],
            [
                (1, "EL-0001".into()),
                (2, "EL-0004".into()),
                (3, "PU-0003".into())
            ]
        );
        assert_eq!(
            layout[1],
            [
                (1, "EL-0002".into()),
                (2, "PU-0001".into()),
                (3, "FP-0001".into())
            ]
        );
        assert_eq!(
            layout[2],
            [
                (1, "EL-0003".into()),
                (2, "PU-0002".into()),
                (3, "DOOR-0001".into())
            ]
        );
        // Both faults landed on PU-0002 (port 5022, unit 2).
        assert_eq!(spec.ports[2].devices[1].faults.len(), 2);
        let seeds: std::collections::BTreeSet<u64> = spec
            .ports
            .iter()
            .flat_map(|p| p.devices.iter().map(|d| d.seed))
            .collect();
        assert_eq!(seeds.len(), 9);
    }

    #[test]
    fn power_room_is_laid_out_and_a_mains_failure_asks_for_it() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: SimulateArgs,
        }
        let cli =
            Cli::try_parse_from(["simulate", "--fault", "mains-failure@30s..2m"]).expect("parses");
        let fleet = FleetSpec::from(&cli.args);
        assert!(fleet.power_room && fleet.has_site_faults());
        assert_eq!(fleet.devices(), 7);
        let spec = fleet.build().expect("fits");
        let names: Vec<String> = spec.ports[0]
            .devices
            .iter()
            .map(|d| d.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            [
                "EL-0001",
                "PU-0001",
                "FP-0001",
                "DOOR-0001",
                "PM-0001",
                "GEN-0001",
                "ATS-0001"
            ]
        );
        assert_eq!(spec.site.len(), 2, "the failure and its end");
        assert!(spec.ports[0].devices.iter().all(|d| d.faults.is_empty()));
        let plain = Cli::try_parse_from(["simulate"]).expect("parses");
        assert!(!FleetSpec::from(&plain.args).power_room);
        let room = Cli::try_parse_from(["simulate", "--power-room"]).expect("parses");
        assert!(FleetSpec::from(&room.args).power_room);
    }

    #[test]
    fn fleet_limits() {
        let mut fleet = FleetSpec::new("127.0.0.1:5020".parse().expect("addr"));
        fleet.elevators = 1000;
        assert!(matches!(fleet.build(), Err(SimError::Fleet(_))));
        fleet.ports = 5;
        assert!(fleet.build().is_ok());
        fleet.faults = vec![FaultArg::parse("NOPE-1=silent").expect("valid")];
        assert!(matches!(fleet.build(), Err(SimError::Fleet(_))));
        let mut fleet = FleetSpec::new("127.0.0.1:65535".parse().expect("addr"));
        fleet.ports = 2;
        assert!(fleet.build().is_err());
    }
}
