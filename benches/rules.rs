//! The rule-engine benchmark: 10,000 assets x 20 rules of mixed types, every asset reporting 24
//! points each simulated second, offered on one thread. Reports samples offered per second, ns
//! per sample, the cost of the once-a-second tick, the triggers produced and the heap
//! allocations made while offering (only triggers allocate).
//!
//!     cargo bench --bench rules                        # 10,000 assets, 200 simulated seconds
//!     cargo bench --bench rules -- --assets 1000 --rounds 50
//!
//! Values are mostly inside their limits; 10 % of the assets have short excursions on their
//! gauges, alarms and door states, 1 % a chattering alarm contact and now and then a counter
//! reset, so thresholds, on-delays, hysteresis, count windows, meters and the flap guard all do
//! real work. A first phase with every value inside its limits shows the steady state: no
//! heap allocation at all.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use chrono::DateTime;
use facilityd::model::Value;
use facilityd::profile::{DeviceType, PointKind};
use facilityd::rules::config::parse_rules;
use facilityd::rules::engine::RuleEngine;
use facilityd::rules::types::{AssetInfo, PointInfo, Trigger, TriggerChange};

/// Counts heap allocations, to show the hot path makes none.
struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Relaxed);
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const S: i64 = 1_000_000_000;
/// 2026-01-01T00:00:00Z.
const T0: i64 = 1_767_225_600 * S;

/// The points of every asset: (name, kind, unit).
const POINTS: [(&str, PointKind, Option<&str>); 24] = [
    ("g0", PointKind::Gauge, Some("bar")),
    ("g1", PointKind::Gauge, Some("bar")),
    ("g2", PointKind::Gauge, Some("degC")),
    ("g3", PointKind::Gauge, Some("degC")),
    ("g4", PointKind::Gauge, Some("A")),
    ("g5", PointKind::Gauge, Some("A")),
    ("g6", PointKind::Gauge, Some("mm/s")),
    ("g7", PointKind::Gauge, Some("mm/s")),
    ("g8", PointKind::Gauge, Some("%")),
    ("g9", PointKind::Gauge, Some("Hz")),
    ("trips_total", PointKind::Counter, None),
    ("run_hours", PointKind::Counter, Some("h")),
    ("mode", PointKind::State, None),
    ("door_state", PointKind::State, None),
    ("run_state", PointKind::State, None),
    ("overload", PointKind::State, None),
    ("a0", PointKind::Alarm, None),
    ("a1", PointKind::Alarm, None),
    ("a2", PointKind::Alarm, None),
    ("a3", PointKind::Alarm, None),
    ("door_fault", PointKind::Event, None),
    ("dry_run", PointKind::Event, None),
    ("x0", PointKind::Gauge, None),
    ("x1", PointKind::Gauge, None),
];

/// 20 rules: 10 thresholds (some with on/off-delays, some with `unless`), 2 held alarms, a
/// held door state, 2 count windows, an event rule, 2 meters, a calendar, an offline rule.
fn rules_toml() -> String {
    let mut s = String::new();
    for i in 0..8 {
        let _ = write!(
            s,
            "[[rules]]\nid = \"high-g{i}\"\ntype = \"threshold\"\npoint = \"g{i}\"\nabove = 80\nclear = 75\n{}{}\n",
            if i % 2 == 0 { "for = \"3s\"\n" } else { "" },
            if i % 4 == 1 {
                "unless = { point = \"mode\", equals = \"local\" }\n"
            } else {
                ""
            },
        );
    }
    s.push_str(
        r#"
[[rules]]
id = "band-g8"
type = "threshold"
point = "g8"
below = 20
above = 80
clear_below = 25
clear_above = 75
clear_for = "5s"

[[rules]]
id = "band-g9"
type = "threshold"
point = "g9"
below = 45
above = 55
for = "2s"

[[rules]]
id = "alarm-a0"
type = "state"
point = "a0"
for = "10s"

[[rules]]
id = "alarm-a1"
type = "state"
point = "a1"
unless = { point = "mode", equals = "local" }

[[rules]]
id = "door-held"
type = "state"
point = "door_state"
equals = ["fault", "stuck"]
for = "30s"

[[rules]]
id = "door-faults"
type = "state"
point = "door_state"
equals = "fault"
count = 3
within = "24h"

[[rules]]
id = "door-fault-events"
type = "state"
point = "door_fault"
count = 3
within = "1h"

[[rules]]
id = "dry-run"
type = "state"
point = "dry_run"

[[rules]]
id = "trips"
type = "meter"
point = "trips_total"
every = 100000

[[rules]]
id = "run-hours"
type = "meter"
point = "run_hours"
every = 2000
max_rate = 1

[[rules]]
id = "half-monthly"
type = "calendar"
every = "15d"
start = "2025-12-20"
lead = "2d"

[[rules]]
id = "comm-lost"
type = "offline"
after = "5m"
"#,
    );
    s
}

fn assets(n: usize) -> Vec<Arc<AssetInfo>> {
    let points: Arc<[PointInfo]> = POINTS
        .iter()
        .map(|(name, kind, unit)| PointInfo {
            name: Arc::from(*name),
            kind: *kind,
            unit: unit.map(str::to_string),
            numeric: matches!(kind, PointKind::Gauge | PointKind::Counter),
        })
        .collect();
    (0..n)
        .map(|i| {
            Arc::new(AssetInfo {
                id: Arc::from(format!("A{i:05}")),
                name: None,
                site: Some("bench".into()),
                building: Some(format!("B{}", i / 1000)),
                floor: None,
                device_type: DeviceType::Pump,
                profile: "bench".into(),
                tags: BTreeMap::new(),
                points: points.clone(),
            })
        })
        .collect()
}

fn items(toml: &str) -> Vec<(String, usize, config::Value)> {
    #[derive(serde::Deserialize)]
    struct F {
        rules: Vec<config::Value>,
    }
    let f: F = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize())
        .expect("bench rules");
    f.rules
        .into_iter()
        .enumerate()
        .map(|(i, v)| ("bench.toml".to_string(), i, v))
        .collect()
}

/// xorshift64*: cheap and deterministic.
struct Rng(u64);

impl Rng {
    #[inline]
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The fleet's devices: counters and the states that change.
struct Fleet {
    /// No excursions at all (everything inside its limits).
    quiet: bool,
    trips: Vec<i64>,
    hours: Vec<i64>,
    rng: Rng,
    states: [Value; 5],
}

impl Fleet {
    fn new(n: usize) -> Fleet {
        Fleet {
            quiet: false,
            trips: (0..n)
                .map(|i| 1_000_000 + (i as i64 * 7_919) % 90_000)
                .collect(),
            hours: (0..n).map(|i| (i as i64 * 31) % 1_900).collect(),
            rng: Rng(0x9E37_79B9_7F4A_7C15),
            // Preallocated so generating samples allocates nothing.
            states: [
                Value::Str("auto".into()),
                Value::Str("local".into()),
                Value::Str("closed".into()),
                Value::Str("open".into()),
                Value::Str("fault".into()),
            ],
        }
    }

    /// The value of point `p` of asset `a` at round `r`; `troubled` assets have excursions.
    #[inline]
    fn sample(&mut self, a: usize, p: usize, r: i64, out: &mut Value) -> Option<usize> {
        let troubled = !self.quiet && a % 10 == 3;
        // An excursion: 4 s of every 100, phase per asset and point.
        let excursion = troubled && (r + (a as i64) * 7 + (p as i64) * 13) % 100 < 4;
        let noise = self.rng.unit();
        *out = match p {
            0..=7 => Value::Float(if excursion {
                85.0 + noise
            } else {
                50.0 + 10.0 * noise
            }),
            8 => Value::Float(if excursion { 15.0 } else { 40.0 + 20.0 * noise }),
            9 => Value::Float(if excursion { 56.0 } else { 49.0 + 2.0 * noise }),
            10 => {
                // Now and then a controller is reset and its trip counter starts from zero.
                if troubled && a % 500 == 3 && r % 150 == 149 {
                    self.trips[a] = 0;
                }
                self.trips[a] += (noise * 4.0) as i64;
                Value::Int(self.trips[a])
            }
            11 => {
                if r % 3600 == (a as i64) % 3600 {
                    self.hours[a] += 1;
                }
                Value::Int(self.hours[a])
            }
            // mode, door_state: index into the preallocated states.
            12 => return Some(if a % 50 == 7 { 1 } else { 0 }),
            13 => {
                return Some(if excursion {
                    4
                } else if noise < 0.1 {
                    3
                } else {
                    2
                });
            }
            14 => Value::Int((noise * 3.0) as i64),
            15 => Value::Bool(false),
            // A chattering contact on 1 % of the assets: 30 s of toggling every 100 s.
            17 if troubled && a % 100 == 3 && (r + a as i64) % 100 < 30 => Value::Bool(r % 2 == 0),
            16..=19 => Value::Bool(excursion),
            20 | 21 => Value::Bool(excursion && noise < 0.2),
            _ => Value::Float(noise * 100.0),
        };
        None
    }
}

fn count(out: &[Trigger], tally: &mut [u64; 4]) {
    for t in out {
        let i = match t.change {
            TriggerChange::Fire { .. } => 0,
            TriggerChange::Occurrence { .. } => 1,
            TriggerChange::Flapping { .. } => 2,
            TriggerChange::Clear { .. }
            | TriggerChange::Done { .. }
            | TriggerChange::Affected { .. } => 3,
        };
        tally[i] += 1;
    }
}

struct Bench {
    out: Vec<Trigger>,
    value: Value,
    tally: [u64; 4],
    offer_ns: u128,
    tick_ns: u128,
    worst_tick: u128,
    samples: u64,
    allocs: u64,
}

impl Bench {
    /// `rounds` simulated seconds: every asset reports every point, then the engine ticks and
    /// its dirty state is taken (as the maintenance loop does).
    fn run(
        &mut self,
        engine: &mut RuleEngine,
        fleet: &mut Fleet,
        round: &mut i64,
        rounds: i64,
        measure: bool,
    ) {
        let n_assets = fleet.trips.len();
        for _ in 0..rounds {
            let r = *round;
            *round += 1;
            let t = T0 + r * S;
            let a0 = ALLOCS.load(Relaxed);
            let started = Instant::now();
            for a in 0..n_assets {
                for p in 0..POINTS.len() {
                    match fleet.sample(a, p, r, &mut self.value) {
                        Some(i) => engine.offer(a, p, &fleet.states[i], t, &mut self.out),
                        None => engine.offer(a, p, &self.value, t, &mut self.out),
                    }
                }
            }
            let offered = started.elapsed().as_nanos();
            let a1 = ALLOCS.load(Relaxed);
            let tick_started = Instant::now();
            engine.tick(DateTime::from_timestamp_nanos(t), &mut self.out);
            let ticked = tick_started.elapsed().as_nanos();
            if measure {
                self.offer_ns += offered;
                self.tick_ns += ticked;
                self.worst_tick = self.worst_tick.max(ticked);
                self.samples += (n_assets * POINTS.len()) as u64;
                self.allocs += a1 - a0;
                count(&self.out, &mut self.tally);
            }
            self.out.clear();
            let _ = engine.take_dirty();
        }
    }
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this binary without it.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "rules benchmark: run it with `cargo bench --bench rules` (skipped under cargo test)"
        );
        return;
    }
    let arg = |name: &str, default: usize| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let n_assets = arg("--assets", 10_000);
    let rounds = arg("--rounds", 200) as i64;
    let warmup = 20i64;

    let assets = assets(n_assets);
    let built = Instant::now();
    let (rules, warnings) =
        parse_rules(&items(&rules_toml()), &assets, "bench", "UTC").expect("valid bench rules");
    assert!(warnings.is_empty(), "{warnings:?}");
    let n_rules = rules.len();
    let mut engine = RuleEngine::new(rules, assets.clone());
    println!(
        "rules benchmark: {n_assets} assets x {n_rules} rules = {} instances, {} points each; built in {:.0} ms",
        engine.instance_count(),
        POINTS.len(),
        built.elapsed().as_secs_f64() * 1e3
    );

    let mut fleet = Fleet::new(n_assets);
    let mut bench = Bench {
        out: Vec::with_capacity(1024),
        value: Value::Bool(false),
        tally: [0; 4],
        offer_ns: 0,
        tick_ns: 0,
        worst_tick: 0,
        samples: 0,
        allocs: 0,
    };
    // Everything inside its limits: the steady state of a healthy building.
    fleet.quiet = true;
    let mut round = 0;
    bench.run(&mut engine, &mut fleet, &mut round, warmup, false);
    bench.run(&mut engine, &mut fleet, &mut round, warmup, true);
    println!(
        "quiet fleet (all values inside limits): {} samples, {:.1} ns per sample, {} heap allocations, {} triggers",
        bench.samples,
        bench.offer_ns as f64 / bench.samples as f64,
        bench.allocs,
        bench.tally.iter().sum::<u64>()
    );
    // The realistic mix.
    fleet.quiet = false;
    bench = Bench {
        tally: [0; 4],
        offer_ns: 0,
        tick_ns: 0,
        worst_tick: 0,
        samples: 0,
        allocs: 0,
        ..bench
    };
    bench.run(&mut engine, &mut fleet, &mut round, warmup, false);
    bench.run(&mut engine, &mut fleet, &mut round, rounds, true);
    let Bench {
        tally,
        offer_ns,
        tick_ns,
        worst_tick,
        samples,
        allocs,
        ..
    } = bench;
    let secs = offer_ns as f64 / 1e9;
    let triggers: u64 = tally.iter().sum();
    println!(
        "offered {samples} samples in {secs:.3} s on one thread: {:.2} million samples/s, {:.1} ns per sample",
        samples as f64 / secs / 1e6,
        offer_ns as f64 / samples as f64
    );
    println!(
        "tick (once per simulated second, {} instances): mean {:.2} ms, worst {:.2} ms",
        engine.instance_count(),
        tick_ns as f64 / rounds as f64 / 1e6,
        worst_tick as f64 / 1e6
    );
    println!(
        "triggers over {rounds} simulated seconds: {triggers} (fire {}, occurrence {}, flapping {}, clear {}); {:.4} % of samples",
        tally[0],
        tally[1],
        tally[2],
        tally[3],
        triggers as f64 * 100.0 / samples as f64
    );
    println!(
        "heap allocations while offering: {allocs} ({:.2} per trigger, {:.5} per sample)",
        allocs as f64 / triggers.max(1) as f64,
        allocs as f64 / samples as f64
    );
    let stats = engine.stats();
    println!(
        "engine stats: unless suppressed {}, unless unknown {}, meter wraps {}, resets {}, untrusted {}",
        stats.unless_suppressed,
        stats.unless_unknown,
        stats.meter_wraps,
        stats.meter_resets,
        stats.meter_untrusted
    );
}
