//! facilityd: the command line. Parsing only; the work is in the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use facilityd::cli;
use facilityd::modbus::link::Link;
use facilityd::modbus::probe::{ProbeTarget, probe};
use facilityd::profile::{ByteOrder, DataType, RegisterKind};

#[derive(Parser)]
#[command(
    name = "facilityd",
    version,
    about = "Facility-monitoring gateway: Modbus equipment to InfluxDB, with maintenance work orders"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Configuration file (conf.d/*.toml beside it is read too).
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Validate the configuration and print devices, points and Modbus request plans.
    Check {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Simulated equipment and the gateway in one process; no external services needed.
    #[cfg(feature = "demo")]
    Demo(facilityd::demo::DemoArgs),
    /// Write Grafana dashboards for the configured devices' profiles, and provisioning files.
    Dashboards {
        #[arg(short, long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Output directory: dashboards/*.json and provisioning/ are written into it.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Modbus TCP simulators of the built-in device types, with fault injection.
    Simulate(facilityd::sim::SimulateArgs),
    /// Read registers once from a device and print raw and decoded values.
    Probe(ProbeArgs),
    /// List, show, acknowledge, resolve or close work orders of the running daemon.
    #[command(name = "work-orders")]
    WorkOrders(facilityd::cli::work_orders::WorkOrdersArgs),
    /// Record, list, show or diff a building's handover baseline (承接查验) on the running daemon.
    Handover(facilityd::cli::handover::HandoverArgs),
    /// List the telemetry dead-letter files, or re-send their lines to the database.
    #[command(name = "dead-letters")]
    DeadLetters(facilityd::cli::dead_letters::DeadLettersArgs),
    /// The owners' engineering report over a month or any period (HTML, CSV or JSON).
    Report(facilityd::cli::report::ReportArgs),
}

#[derive(clap::Args)]
struct ProbeArgs {
    /// Device URL: tcp://HOST[:PORT], rtu+tcp://HOST[:PORT] or rtu:///dev/ttyUSB0?baud=9600
    url: String,
    /// Unit id.
    #[arg(short, long, default_value_t = 1)]
    unit: u8,
    /// Read every point of this profile (built-in: elevator, pump, fire_panel, access_door).
    #[arg(long, conflicts_with_all = ["register", "address", "count"])]
    profile: Option<String>,
    /// Register table.
    #[arg(short, long, value_enum, default_value_t = RegisterKind::Holding)]
    register: RegisterKind,
    /// First wire address (0-based).
    #[arg(short, long, default_value_t = 0)]
    address: u16,
    /// Registers (or bits) to read.
    #[arg(short, long, default_value_t = 10)]
    count: u16,
    /// Decode registers as this type.
    #[arg(short = 't', long = "type", value_enum, default_value_t = DataType::U16)]
    data_type: DataType,
    /// Byte order of multi-register values.
    #[arg(short, long, value_enum, default_value_t = ByteOrder::ABCD)]
    order: ByteOrder,
    /// Timeout per request, e.g. 500ms.
    #[arg(long, default_value = "1s")]
    timeout: humantime::Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    facilityd::gateway::service::ignore_file_size_signal();
    facilityd::gateway::service::single_malloc_arena();
    match cli.command {
        Command::Check { config } => {
            let path = cli::config_path(config);
            match cli::check_report(&path) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("{e}");
                    eprintln!("configuration invalid: {}", path.display());
                    ExitCode::from(1)
                }
            }
        }
        Command::Dashboards { config, out } => {
            let path = cli::config_path(config);
            match facilityd::dashboards::run(&path, &out) {
                Ok(report) => {
                    print!("{report}");
                    ExitCode::SUCCESS
                }
                Err(e @ facilityd::dashboards::DashboardsError::Config(_)) => {
                    eprintln!("{e}");
                    eprintln!("configuration invalid: {}", path.display());
                    ExitCode::from(1)
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Run { config } => {
            cli::init_logging("info");
            let path = cli::config_path(config);
            block_on(cli::run(&path))
        }
        #[cfg(feature = "demo")]
        Command::Demo(a) => {
            cli::init_logging("warn");
            block_on(facilityd::demo::run(a))
        }
        Command::Simulate(a) => {
            cli::init_logging("info");
            block_on(facilityd::sim::run_simulate(a))
        }
        Command::WorkOrders(a) => {
            cli::init_logging("warn");
            block_on(facilityd::cli::work_orders::run(a))
        }
        Command::Handover(a) => {
            cli::init_logging("warn");
            block_on(facilityd::cli::handover::run(a))
        }
        Command::DeadLetters(a) => {
            cli::init_logging("warn");
            block_on(facilityd::cli::dead_letters::run(a))
        }
        Command::Report(a) => match cli::report::run(a) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::Probe(a) => {
            cli::init_logging("warn");
            block_on(run_probe(a))
        }
    }
}

fn block_on(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    // One worker thread runs every task. The gateway's async work is I/O-bound (a fleet of
    // 1,000 devices x 50 points a second takes a few percent of one core), and with two
    // workers each woken task made the idle worker wake up to look for work: about one
    // futex round trip per Modbus reply. What may block (the telemetry log's disk writes, the
    // work-order database, file reads) runs on its own threads or in `spawn_blocking`, so it
    // never holds this one up.
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = rt.block_on(fut);
    // A blocking task stuck on a dead disk must not hold the exit forever (dropping the
    // runtime would wait for it): what had to be flushed was flushed or reported by now.
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn run_probe(a: ProbeArgs) -> anyhow::Result<()> {
    let link = Link::parse(&a.url).map_err(anyhow::Error::msg)?;
    let target = match &a.profile {
        Some(name) => {
            let cfg = facilityd::profile::builtin::load(name)
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "unknown profile {name:?}: expected one of {}",
                        facilityd::profile::builtin::names()
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })?
                .map_err(anyhow::Error::msg)?;
            let (p, _) = cfg.build().map_err(|e| anyhow::anyhow!("{e:?}"))?;
            ProbeTarget::Profile(std::sync::Arc::new(p))
        }
        None => ProbeTarget::Range {
            kind: a.register,
            address: a.address,
            count: a.count,
            data_type: a.data_type,
            order: a.order,
        },
    };
    let timeout: Duration = a.timeout.into();
    let report = probe(&link, a.unit, timeout, target)
        .await
        .map_err(anyhow::Error::msg)?;
    print!("{report}");
    Ok(())
}
