//! Fuzzing of the parsers that take outside input, as proptest properties (cargo fuzz needs
//! nightly). The rule: bad input gets a clear error, never a panic or a hang.
//!
//! Targets: config loading (arbitrary bytes, mutated valid configs, FACILITYD_* maps), Modbus
//! decoding (`codec` with any spec and transform, RTU reply and request scanning), MQTT payloads
//! and topics with the built-in MQTT profiles, the line-protocol encoder against an independent
//! parser, and the telemetry log's recovery (segment scanning of any bytes, damaged segments,
//! and the whole start-up path on a torn file).
//!
//! Each target first replays its seed corpus, `tests/fuzz_corpus/<target>/`, then runs random
//! cases (failures are kept in `proptest-regressions/fuzz.txt` and replayed first). The case
//! counts keep the file quick in CI; raise them for a longer run:
//! `FUZZ_CASES=100000 cargo test --release --test fuzz -- --nocapture`.

use std::collections::HashMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use facilityd::modbus::codec::{
    Decoded, Raw, apply, decode_bit_point, decode_register_point, decode_words,
};
use facilityd::modbus::rtu::{self, ReplyScan, RequestScan};
use facilityd::model::{DeviceStatus, Quality, Reading, Record, Value};
use facilityd::mqtt::payload::PayloadMap;
use facilityd::mqtt::topic::{Capture, PubTemplate, RouteDevice, Router, SubTemplate};
use facilityd::profile::{
    ByteOrder, DataType, FieldType, Point, PointKind, Profile, RegisterKind, RegisterSpec,
    Transform, builtin,
};
use facilityd::settings::load_with_env;
use facilityd::telemetry::line::LineEncoder;
use facilityd::telemetry::log::{
    self as tlog, Class, FILE_MAGIC, HEADER_LEN, LogConfig, RecordHeader, TelemetryLog,
};
use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, FileFailurePersistence, TestCaseError, TestRunner,
};

// ---------------------------------------------------------------------------------------------
// Harness

/// The case count: `FUZZ_CASES` when set, else the target's CI default.
fn cases(default: u32) -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The slowest a single case may be before it counts as a hang (debug build, loaded CI box).
const HANG: Duration = Duration::from_secs(10);

/// Runs `test` on `cases` random values of `strategy` (persisting failures), reporting the
/// count, the time and the slowest case; a case slower than [`HANG`] fails the target.
fn fuzz<S>(
    name: &str,
    default_cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let config = ProptestConfig {
        cases: cases(default_cases),
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/fuzz.txt",
        ))),
        max_shrink_iters: 2000,
        ..ProptestConfig::default()
    };
    let n = config.cases;
    let slowest = Mutex::new((Duration::ZERO, String::new()));
    let mut runner = TestRunner::new(config);
    let start = Instant::now();
    let result = runner.run(&strategy, |v| {
        let shown = format!("{v:?}");
        let t = Instant::now();
        let r = test(v);
        let took = t.elapsed();
        let mut s = slowest.lock().unwrap();
        if took > s.0 {
            *s = (took, shown.chars().take(300).collect());
        }
        r?;
        prop_assert!(took < HANG, "a case took {took:?} (a hang?)");
        Ok(())
    });
    let (took, input) = slowest.into_inner().unwrap();
    eprintln!(
        "fuzz {name}: {n} cases in {:.2?}; slowest case {took:.2?}: {input}",
        start.elapsed()
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_corpus")
        .join(target)
}

/// The seed files of a target, sorted: (file name, bytes).
fn corpus_files(target: &str) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(corpus_dir(target))
        .unwrap_or_else(|e| panic!("tests/fuzz_corpus/{target}: {e}"))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "tests/fuzz_corpus/{target} is empty");
    files
        .into_iter()
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            (name, std::fs::read(&p).unwrap())
        })
        .collect()
}

/// The non-empty, non-comment lines of a target's `.txt` seed files, with `\n`, `\r`, `\t`,
/// `\0`, `\\` and `\u{..}` escapes resolved (so seeds can hold any string).
fn corpus_lines(target: &str) -> Vec<String> {
    corpus_files(target)
        .into_iter()
        .filter(|(n, _)| n.ends_with(".txt"))
        .flat_map(|(_, b)| {
            String::from_utf8(b)
                .unwrap()
                .lines()
                .filter(|l| !l.is_empty() && !l.starts_with("# "))
                .map(unescape)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut it = s.chars();
    while let Some(c) = it.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match it.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('0') => out.push('\0'),
            Some('u') => {
                let hex: String = it.by_ref().skip(1).take_while(|&c| c != '}').collect();
                out.push(char::from_u32(u32::from_str_radix(&hex, 16).unwrap()).unwrap());
            }
            Some(c) => out.push(c),
            None => out.push('\\'),
        }
    }
    out
}

fn unhex(s: &str) -> Vec<u8> {
    let digits: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks_exact(2)
        .map(|c| u8::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

/// Turns a panic in a seed replay into a message naming the seed.
fn replay(target: &str, seed: &str, f: impl FnOnce() -> Result<(), TestCaseError>) {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("fuzz {target}: seed {seed}: {e}"),
        Err(_) => panic!("fuzz {target}: seed {seed} panicked"),
    }
}

/// Strings that stress parsers: any Unicode, control characters, syntax of TOML, JSON, topics and
/// line protocol.
fn arb_text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect()),
        proptest::string::string_regex(&format!(
            "[a-zA-Z0-9 _.,=\"'\\\\#+/{{}}\\[\\]$:\t\r\n\u{0}°\u{feff}-]{{0,{max}}}"
        ))
        .unwrap(),
    ]
}

// ---------------------------------------------------------------------------------------------
// 1. Config loading

/// Writes `bytes` as `facilityd.toml` in a fresh directory and loads it with `env`. Any Ok or
/// Err is fine; an Err must say something.
fn load_bytes(bytes: &[u8], env: HashMap<String, String>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("facilityd.toml");
    std::fs::write(&path, bytes).unwrap();
    if let Err(e) = load_with_env(&path, env) {
        prop_assert!(!e.0.is_empty(), "an error without issues");
        for issue in &e.0 {
            prop_assert!(
                !issue.message.trim().is_empty(),
                "an issue without a message: {issue:?}"
            );
        }
    }
    Ok(())
}

/// The valid base configs the structured fuzzer mutates: the `.toml` seeds and the config cases.
fn base_configs() -> Vec<String> {
    let mut out: Vec<String> = corpus_files("config")
        .into_iter()
        .filter(|(n, _)| n.ends_with(".toml"))
        .filter_map(|(_, b)| String::from_utf8(b).ok())
        .collect();
    let cases = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/config_cases");
    let mut dirs: Vec<_> = std::fs::read_dir(cases)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for d in dirs {
        if let Ok(s) = std::fs::read_to_string(d.join("facilityd.toml")) {
            out.push(s);
        }
    }
    out
}

#[derive(Debug, Clone)]
enum Edit {
    /// Replace the value of the n-th `key = value` (or inline `key = value`) with this text.
    Value(usize, String),
    /// Duplicate line n.
    Duplicate(usize),
    /// Delete line n.
    Delete(usize),
    /// Insert a line at n.
    Insert(usize, String),
    /// Cut the file at byte n (on a char boundary).
    Truncate(usize),
}

fn arb_replacement() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_text(24).prop_map(|s| format!("{s:?}")),
        arb_text(24),
        any::<i64>().prop_map(|i| i.to_string()),
        any::<u64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}")),
        Just("nan".to_string()),
        Just("-inf".to_string()),
        Just("1e400".to_string()),
        Just("true".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("[1, \"a\", {}]".to_string()),
        Just("{ a = 1 }".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("\"\"".to_string()),
        Just("\"0s\"".to_string()),
        Just("\"99999999999999999999h\"".to_string()),
        Just("\"18446744073709551616KiB\"".to_string()),
        Just("-1".to_string()),
        Just("65536".to_string()),
        Just("\"tcp://[::1]:99999\"".to_string()),
        Just("\"rtu:///dev/null?baud=0\"".to_string()),
        Just("\"{asset}/{asset}\"".to_string()),
        Just("\"/\"".to_string()),
    ]
}

fn arb_edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), arb_replacement()).prop_map(|(n, v)| Edit::Value(n, v)),
        1 => any::<usize>().prop_map(Edit::Duplicate),
        1 => any::<usize>().prop_map(Edit::Delete),
        1 => (any::<usize>(), prop_oneof![
            arb_text(40),
            Just("[gateway]".to_string()),
            Just("[[devices]]".to_string()),
            Just("[[profiles]]".to_string()),
            Just("[[rules]]".to_string()),
            Just("[mqtt]".to_string()),
            Just("id = \"P-1\"".to_string()),
            Just("profile = \"plc\"".to_string()),
        ]).prop_map(|(n, s)| Edit::Insert(n, s)),
        1 => any::<usize>().prop_map(Edit::Truncate),
    ]
}

/// Applies the edits to a config's text. Values are found as the text after `=` up to the end
/// of the line or the next `,` / `}` (inline tables), enough to hit every kind of value.
fn mutate(base: &str, edits: &[Edit]) -> String {
    let mut lines: Vec<String> = base.lines().map(str::to_string).collect();
    for e in edits {
        if lines.is_empty() {
            lines.push(String::new());
        }
        let len = lines.len();
        match e {
            Edit::Value(n, v) => {
                let spots: Vec<(usize, usize, usize)> = lines
                    .iter()
                    .enumerate()
                    .flat_map(|(li, l)| {
                        l.match_indices(" = ")
                            .map(|(at, _)| {
                                let from = at + 3;
                                let rest = &l[from..];
                                let to = from
                                    + if rest.starts_with(['{', '[']) {
                                        1
                                    } else {
                                        rest.find([',', '}', '#']).unwrap_or(rest.len())
                                    };
                                (li, from, to)
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect();
                if spots.is_empty() {
                    continue;
                }
                let (li, from, to) = spots[n % spots.len()];
                let l = &mut lines[li];
                let to = if l[from..to].starts_with(['{', '[']) {
                    from
                } else {
                    to
                };
                l.replace_range(from..to, &format!("{v} "));
            }
            Edit::Duplicate(n) => {
                let l = lines[n % len].clone();
                lines.insert(n % len, l);
            }
            Edit::Delete(n) => {
                lines.remove(n % len);
            }
            Edit::Insert(n, s) => lines.insert(n % (len + 1), s.clone()),
            Edit::Truncate(n) => {
                let text = lines.join("\n");
                let mut at = n % (text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                lines = text[..at].lines().map(str::to_string).collect();
            }
        }
    }
    lines.join("\n")
}

const ENV_KEYS: &[&str] = &[
    "FACILITYD_GATEWAY__ID",
    "FACILITYD_GATEWAY__STATE_DIR",
    "FACILITYD_GATEWAY__TIMEZONE",
    "FACILITYD_HTTP__LISTEN",
    "FACILITYD_INFLUXDB__URL",
    "FACILITYD_INFLUXDB__TOKEN",
    "FACILITYD_INFLUXDB__BATCH_SIZE",
    "FACILITYD_INFLUXDB__FLUSH_INTERVAL",
    "FACILITYD_INFLUXDB__QUEUE_MAX_BYTES",
    "FACILITYD_MQTT__URL",
    "FACILITYD_MQTT__KEEP_ALIVE",
    "FACILITYD_MQTT__MAX_PAYLOAD_BYTES",
    "FACILITYD_MQTT__PUBLISH_TELEMETRY__QOS",
    "FACILITYD_STORAGE__LOG_MAX_BYTES",
    "FACILITYD_WORK_ORDERS__RESPONSE_TIMES__URGENT",
    "FACILITYD_DEVICES",
    "FACILITYD_DEVICES__0__ID",
    "FACILITYD_PROFILES",
    "FACILITYD_",
    "FACILITYD__",
    "FACILITYD_GATEWAY",
    "FACILITYD_GATEWAY__",
    "FACILITYD_GATEWAY____ID",
];

fn arb_env() -> impl Strategy<Value = HashMap<String, String>> {
    let key = prop_oneof![
        4 => proptest::sample::select(ENV_KEYS).prop_map(str::to_string),
        1 => arb_text(20).prop_map(|s| format!("FACILITYD_{s}")),
        1 => proptest::string::string_regex("FACILITYD_[A-Z_]{0,30}").unwrap(),
    ];
    let value = prop_oneof![arb_text(30), arb_replacement(),];
    proptest::collection::hash_map(key, value, 0..4)
}

#[test]
fn fuzz_config() {
    let envs: Vec<HashMap<String, String>> = vec![
        HashMap::new(),
        [("FACILITYD_GATEWAY__ID".to_string(), "\u{0}".to_string())].into(),
        [(
            "FACILITYD_INFLUXDB__BATCH_SIZE".to_string(),
            "-1".to_string(),
        )]
        .into(),
        [(
            "FACILITYD_MQTT__MAX_PAYLOAD_BYTES".to_string(),
            "99999999999999999999999".to_string(),
        )]
        .into(),
        [("FACILITYD_DEVICES".to_string(), "[".to_string())].into(),
    ];
    for (name, bytes) in corpus_files("config") {
        for env in &envs {
            replay("config", &name, || load_bytes(&bytes, env.clone()));
        }
    }
    // Arbitrary bytes (and arbitrary UTF-8) with arbitrary FACILITYD_* variables.
    fuzz(
        "config/bytes",
        2000,
        (
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..512),
                arb_text(512).prop_map(String::into_bytes),
            ],
            arb_env(),
        ),
        |(bytes, env)| load_bytes(&bytes, env),
    );
    // Near-valid TOML: a valid config with values replaced, lines duplicated, deleted, added.
    let bases = base_configs();
    let accepted = AtomicU64::new(0);
    fuzz(
        "config/mutated",
        2000,
        (
            0..bases.len(),
            proptest::collection::vec(arb_edit(), 1..4),
            prop_oneof![3 => Just(HashMap::new()), 1 => arb_env()],
        ),
        |(b, edits, env)| {
            let text = mutate(&bases[b], &edits);
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("facilityd.toml");
            std::fs::write(&path, &text).unwrap();
            if load_with_env(&path, env).is_ok() {
                accepted.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        },
    );
    eprintln!(
        "fuzz config/mutated: {} loaded",
        accepted.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------------------
// 2. Modbus decoding

const DATA_TYPES: [DataType; 10] = [
    DataType::Bool,
    DataType::U16,
    DataType::I16,
    DataType::U32,
    DataType::I32,
    DataType::U64,
    DataType::I64,
    DataType::F32,
    DataType::F64,
    DataType::String,
];
const ORDERS: [ByteOrder; 4] = [
    ByteOrder::ABCD,
    ByteOrder::DCBA,
    ByteOrder::BADC,
    ByteOrder::CDAB,
];
const KINDS: [RegisterKind; 4] = [
    RegisterKind::Holding,
    RegisterKind::Input,
    RegisterKind::Coil,
    RegisterKind::Discrete,
];

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        proptest::sample::select(vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            0.5,
            0.01,
            1e-300,
            1e300,
            -1e300,
            1e20,
            9.3e18,
            f64::MAX,
            f64::MIN,
            f64::MIN_POSITIVE,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ]),
        (-1000i64..1000).prop_map(|i| i as f64),
    ]
}

fn arb_spec() -> impl Strategy<Value = RegisterSpec> {
    (
        proptest::sample::select(&KINDS[..]),
        any::<u16>(),
        proptest::sample::select(&DATA_TYPES[..]),
        proptest::sample::select(&ORDERS[..]),
        prop_oneof![
            Just(None),
            (0u8..16).prop_map(Some),
            any::<u8>().prop_map(Some)
        ],
        prop_oneof![Just(None), (0u8..20).prop_map(Some)],
        prop_oneof![0u16..10, 0u16..=130, any::<u16>()],
    )
        .prop_map(
            |(kind, address, data_type, order, bit, bits, count)| RegisterSpec {
                kind,
                address,
                data_type,
                order,
                bit,
                bits,
                count,
            },
        )
}

fn arb_transform() -> impl Strategy<Value = Transform> {
    (
        arb_f64(),
        arb_f64(),
        any::<bool>(),
        prop_oneof![
            Just(Vec::new()),
            any::<i64>().prop_map(|v| vec![(v, v)]),
            (-2i64..70000).prop_map(|v| vec![(v, v)]),
            (any::<i64>(), any::<i64>()).prop_map(|(a, b)| vec![(a, b), (b, a)]),
        ],
        proptest::option::of(arb_f64()),
        proptest::option::of(arb_f64()),
        proptest::option::of(proptest::collection::btree_map(
            prop_oneof![any::<i64>(), -3i64..10],
            arb_text(8),
            0..4,
        )),
        proptest::option::of(prop_oneof![
            Just(FieldType::Float),
            Just(FieldType::Integer),
            Just(FieldType::Boolean),
            Just(FieldType::String),
        ]),
    )
        .prop_map(
            |(scale, offset, integer, na, min, max, map, output)| Transform {
                scale,
                offset,
                integer,
                na,
                min,
                max,
                map,
                output,
            },
        )
}

fn arb_raw() -> impl Strategy<Value = Raw> {
    prop_oneof![
        any::<bool>().prop_map(Raw::Bool),
        any::<i128>().prop_map(Raw::Int),
        any::<i64>().prop_map(|i| Raw::Int(i.into())),
        any::<u64>().prop_map(|i| Raw::Int(i.into())),
        arb_f64().prop_map(Raw::Float),
        arb_text(16).prop_map(Raw::Str),
    ]
}

fn point(spec: Option<RegisterSpec>, transform: Transform) -> Point {
    Point {
        name: "p".into(),
        kind: PointKind::Gauge,
        unit: None,
        register: spec,
        json: None,
        transform,
    }
}

/// The properties every decode must keep.
fn check_decoded(d: &Decoded) -> Result<(), TestCaseError> {
    if let Decoded::Good(Value::Float(f)) = d {
        prop_assert!(f.is_finite(), "a non-finite good value: {f}");
    }
    Ok(())
}

/// A good value has the field type the point declares: the line would be refused otherwise.
fn check_typed(d: &Decoded, output: Option<FieldType>) -> Result<(), TestCaseError> {
    if let (Decoded::Good(v) | Decoded::Unmapped(v), Some(t)) = (d, output) {
        let fits = matches!(
            (t, v),
            (FieldType::Float, Value::Float(_))
                | (FieldType::Integer, Value::Int(_))
                | (FieldType::Boolean, Value::Bool(_))
                | (FieldType::String, Value::Str(_))
        );
        prop_assert!(fits, "{v:?} decoded for an output of {t:?}");
    }
    Ok(())
}

fn check_codec(
    spec: RegisterSpec,
    transform: Transform,
    words: Vec<u16>,
    start: u16,
    bits: Vec<bool>,
    raw: Raw,
) -> Result<(), TestCaseError> {
    let decoded = decode_words(&spec, &words);
    if words.len() != usize::from(spec.count) {
        prop_assert!(
            decoded.is_none(),
            "decoded {} words for a count of {}",
            words.len(),
            spec.count
        );
    }
    if let Some(raw) = decoded {
        check_decoded(&apply(&transform, Some(spec.data_type), raw.clone()))?;
        check_decoded(&apply(&transform, None, raw))?;
    }
    let typed = apply(&transform, Some(spec.data_type), raw.clone());
    check_decoded(&typed)?;
    check_typed(&typed, transform.output)?;
    check_decoded(&apply(&transform, None, raw))?;
    let p = point(Some(spec), transform.clone());
    check_decoded(&decode_register_point(&p, start, &words))?;
    check_decoded(&decode_register_point(
        &p,
        p.register.as_ref().unwrap().address,
        &words,
    ))?;
    let b = decode_bit_point(&p, start, &bits);
    check_typed(&b, transform.output)?;
    if transform.output.is_none() {
        prop_assert!(matches!(
            b,
            Decoded::Good(Value::Bool(_)) | Decoded::Bad(Quality::CommError)
        ));
    }
    let none = point(None, transform);
    prop_assert_eq!(
        decode_register_point(&none, start, &words),
        Decoded::Bad(Quality::CommError)
    );
    prop_assert_eq!(
        decode_bit_point(&none, start, &bits),
        Decoded::Bad(Quality::CommError)
    );
    Ok(())
}

/// A codec seed line: `type order count bit scale offset integer na min max start | words`,
/// `-` for none; words in hex.
fn parse_codec_seed(line: &str) -> (RegisterSpec, Transform, Vec<u16>, u16) {
    let (head, words) = line.split_once('|').expect("a '|' before the words");
    let f: Vec<&str> = head.split_whitespace().collect();
    assert_eq!(f.len(), 11, "11 fields in {line:?}");
    let dt = DATA_TYPES
        .iter()
        .copied()
        .find(|d| d.as_str() == f[0])
        .expect("a data type");
    let order = ORDERS
        .iter()
        .copied()
        .find(|o| format!("{o:?}") == f[1])
        .expect("an order");
    let opt = |s: &str| (s != "-").then(|| s.to_string());
    let spec = RegisterSpec {
        kind: RegisterKind::Holding,
        address: 0,
        data_type: dt,
        order,
        bit: opt(f[3]).map(|s| s.parse().unwrap()),
        bits: None,
        count: f[2].parse().unwrap(),
    };
    let transform = Transform {
        scale: f[4].parse().unwrap(),
        offset: f[5].parse().unwrap(),
        integer: f[6].parse().unwrap(),
        na: opt(f[7])
            .map(|s| {
                let v: i64 = s.parse().unwrap();
                vec![(v, v)]
            })
            .unwrap_or_default(),
        min: opt(f[8]).map(|s| s.parse().unwrap()),
        max: opt(f[9]).map(|s| s.parse().unwrap()),
        map: None,
        output: None,
    };
    let words = words
        .split_whitespace()
        .map(|w| u16::from_str_radix(w, 16).unwrap())
        .collect();
    (spec, transform, words, f[10].parse().unwrap())
}

#[test]
fn fuzz_modbus_codec() {
    for line in corpus_lines("codec") {
        let (spec, transform, words, start) = parse_codec_seed(&line);
        replay("codec", &line, || {
            check_codec(spec, transform, words, start, vec![true; 3], Raw::Int(-1))
        });
    }
    fuzz(
        "modbus/codec",
        20000,
        (
            arb_spec(),
            arb_transform(),
            prop_oneof![
                proptest::collection::vec(any::<u16>(), 0..10),
                proptest::collection::vec(any::<u16>(), 0..140),
            ],
            prop_oneof![Just(0u16), any::<u16>()],
            proptest::collection::vec(any::<bool>(), 0..40),
            arb_raw(),
        )
            .prop_map(|(spec, t, mut words, start, bits, raw)| {
                // Often exactly the count the spec wants, so decoding gets past the length check.
                if words.len() % 2 == 0 && spec.count <= 200 {
                    words.resize(usize::from(spec.count), 0xFFFF);
                }
                (spec, t, words, start, bits, raw)
            }),
        |(spec, t, words, start, bits, raw)| check_codec(spec, t, words, start, bits, raw),
    );
}

fn check_reply(buf: &[u8], unit: u8, kind: RegisterKind, count: u16) -> Result<(), TestCaseError> {
    match rtu::scan_reply(buf, unit, kind, count) {
        ReplyScan::Data { len, data } => {
            prop_assert!(len <= buf.len() && len <= rtu::MAX_FRAME + 5);
            prop_assert!(rtu::crc_ok(&buf[..len]));
            let n = match data {
                facilityd::modbus::poller::ReadData::Words(w) => w.len(),
                facilityd::modbus::poller::ReadData::Bits(b) => b.len(),
            };
            prop_assert_eq!(n, usize::from(count));
        }
        ReplyScan::Exception { len, .. } | ReplyScan::WrongUnit { len, .. } => {
            prop_assert!(len <= buf.len());
            prop_assert!(rtu::crc_ok(&buf[..len]));
        }
        ReplyScan::Garbled(why) | ReplyScan::Malformed(why) => prop_assert!(!why.is_empty()),
        ReplyScan::Incomplete => {}
    }
    match rtu::scan_request(buf) {
        RequestScan::Frame { len } | RequestScan::BadCrc { len } => prop_assert!(len <= buf.len()),
        RequestScan::Incomplete | RequestScan::Unknown => {}
    }
    if let Some((_, _, _, _)) = rtu::parse_read_request(buf) {
        prop_assert_eq!(buf.len(), rtu::READ_REQUEST_LEN);
    }
    let _ = rtu::register_kind(buf.first().copied().unwrap_or(0));
    Ok(())
}

#[derive(Debug, Clone)]
enum FrameMutation {
    None,
    Flip(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
    /// Change a byte and fix the CRC: a well-formed frame of the wrong shape.
    Reseal(usize, u8),
}

#[test]
fn fuzz_modbus_rtu() {
    for (name, bytes) in corpus_files("rtu") {
        let frame = unhex(&String::from_utf8_lossy(&bytes));
        for kind in KINDS {
            for count in [0, 1, 2, 3, 8, 9, 125, 2000, u16::MAX] {
                replay("rtu", &name, || check_reply(&frame, 1, kind, count));
            }
        }
    }
    fuzz(
        "modbus/rtu/bytes",
        20000,
        (
            proptest::collection::vec(any::<u8>(), 0..300),
            prop_oneof![Just(1u8), any::<u8>()],
            proptest::sample::select(&KINDS[..]),
            prop_oneof![0u16..10, 0u16..=2000, any::<u16>()],
        ),
        |(buf, unit, kind, count)| check_reply(&buf, unit, kind, count),
    );
    // Valid replies (sealed with a good CRC), then damaged: these get past the CRC check.
    fuzz(
        "modbus/rtu/frames",
        20000,
        (
            any::<u8>(),
            proptest::sample::select(&KINDS[..]),
            0u16..=130,
            proptest::collection::vec(any::<u8>(), 0..260),
            prop_oneof![
                Just(FrameMutation::None),
                (any::<usize>(), any::<u8>()).prop_map(|(i, b)| FrameMutation::Flip(i, b)),
                any::<usize>().prop_map(FrameMutation::Truncate),
                proptest::collection::vec(any::<u8>(), 0..8).prop_map(FrameMutation::Append),
                (any::<usize>(), any::<u8>()).prop_map(|(i, b)| FrameMutation::Reseal(i, b)),
            ],
            prop_oneof![Just(None), (0u16..=130).prop_map(Some)],
        ),
        |(unit, kind, count, data, m, asked)| {
            let n = rtu::data_bytes(kind, count).min(255);
            let mut body = vec![unit, rtu::function_code(kind), n as u8];
            body.extend(data.iter().copied().cycle().take(n));
            let mut frame = rtu::seal(body);
            match m {
                FrameMutation::None => {}
                FrameMutation::Flip(i, b) => {
                    let l = frame.len();
                    frame[i % l] ^= b;
                }
                FrameMutation::Truncate(i) => frame.truncate(i % (frame.len() + 1)),
                FrameMutation::Append(extra) => frame.extend(extra),
                FrameMutation::Reseal(i, b) => {
                    frame.truncate(frame.len() - 2);
                    let l = frame.len();
                    frame[i % l] = b;
                    frame = rtu::seal(frame);
                }
            }
            check_reply(&frame, unit, kind, asked.unwrap_or(count))
        },
    );
}

// ---------------------------------------------------------------------------------------------
// 3. MQTT payloads and topics

/// The built-in MQTT profiles (`src/profile/builtin/*_mqtt.toml`), built once.
fn mqtt_profiles() -> &'static [Profile] {
    static PROFILES: std::sync::OnceLock<Vec<Profile>> = std::sync::OnceLock::new();
    PROFILES.get_or_init(|| {
        builtin::names()
            .filter(|n| n.ends_with("_mqtt"))
            .map(|n| {
                let cfg = builtin::load(n).unwrap().unwrap();
                cfg.build().unwrap().0
            })
            .collect()
    })
}

fn check_payload(
    map: &PayloadMap,
    profile: &Profile,
    payload: &[u8],
    point: Option<usize>,
    received: i64,
) -> Result<(), TestCaseError> {
    if let Ok(d) = map.decode(payload, point, received) {
        for (i, v) in &d.values {
            prop_assert!(*i < profile.points.len());
            if let Value::Float(f) = v {
                prop_assert!(f.is_finite(), "a non-finite value {f}");
            }
            check_typed(
                &Decoded::Good(v.clone()),
                Some(profile.points[*i].field_type()),
            )?;
            if let Some(p) = point {
                prop_assert_eq!(*i, p);
            }
        }
        // A payload time is positive (the subscriber then applies the time window); without
        // one the time of receipt stands.
        if d.payload_time {
            prop_assert!(d.timestamp_ns > 0 && !d.bad_timestamp);
        } else {
            prop_assert_eq!(d.timestamp_ns, received);
        }
    }
    Ok(())
}

/// JSON leaves: everything a device might send, and more.
fn arb_json_leaf() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value as J, json};
    prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(|i| json!(i)),
        any::<u64>().prop_map(|i| json!(i)),
        (-5i64..300).prop_map(|i| json!(i)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        proptest::sample::select(vec![
            "true",
            "OFF",
            "on",
            "idle",
            "stopped",
            "OpenForced",
            "open-forced",
            "OPEN_FORCED",
            "door_forced",
            "DoorForced",
            "normal",
            "",
            " ",
            "2026-01-05T10:00:00Z",
            "9999-12-31T23:59:59Z",
            "1767607200123",
            "1e30",
            "-1",
            "NaN",
        ])
        .prop_map(|s| J::String(s.to_string())),
        arb_text(12).prop_map(J::String),
        Just(json!([])),
        Just(json!({})),
        Just(json!(1.0e300)),
        Just(json!(9.3e18)),
        Just(json!(-9.3e18)),
    ]
}

/// A JSON document with leaves at the profile's pointers (and its timestamp's).
fn json_at(
    pointers: &[String],
    leaves: Vec<(usize, serde_json::Value)>,
    extra: Option<serde_json::Value>,
) -> Vec<u8> {
    let mut doc = serde_json::Value::Object(Default::default());
    for (i, leaf) in leaves {
        let ptr = &pointers[i % pointers.len()];
        let mut at = &mut doc;
        let parts: Vec<&str> = ptr.split('/').skip(1).collect();
        for (k, part) in parts.iter().enumerate() {
            if !at.is_object() {
                *at = serde_json::Value::Object(Default::default());
            }
            let obj = at.as_object_mut().unwrap();
            if k + 1 == parts.len() {
                obj.insert(part.to_string(), leaf.clone());
                break;
            }
            at = obj
                .entry(part.to_string())
                .or_insert_with(|| serde_json::json!({}));
        }
    }
    if let (Some(e), Some(o)) = (extra, doc.as_object_mut()) {
        o.insert("x".into(), e);
    }
    serde_json::to_vec(&doc).unwrap()
}

#[test]
fn fuzz_mqtt_payload() {
    let profiles = mqtt_profiles();
    assert!(profiles.len() >= 2, "the built-in MQTT profiles");
    let maps: Vec<PayloadMap> = profiles.iter().map(PayloadMap::new).collect();
    let now = 1_767_607_200_000_000_000i64;
    for (name, bytes) in corpus_files("mqtt_payload") {
        for (m, p) in maps.iter().zip(profiles) {
            for point in [None, Some(0), Some(p.points.len() - 1), Some(usize::MAX)] {
                for received in [now, 0, -1, i64::MAX, i64::MIN] {
                    replay("mqtt_payload", &name, || {
                        check_payload(m, p, &bytes, point, received)
                    });
                }
            }
        }
    }
    let pointers: Vec<Vec<String>> = profiles
        .iter()
        .map(|p| {
            p.points
                .iter()
                .filter_map(|pt| pt.json.clone())
                .chain(p.timestamp.iter().map(|t| t.json.clone()))
                .collect()
        })
        .collect();
    let arb_point = prop_oneof![3 => Just(None), 2 => (0usize..20).prop_map(Some), 1 => any::<usize>().prop_map(Some)];
    let arb_received = prop_oneof![Just(now), any::<i64>()];
    fuzz(
        "mqtt/payload/bytes",
        10000,
        (
            0..profiles.len(),
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                arb_text(100).prop_map(String::into_bytes),
            ],
            arb_point.clone(),
            arb_received.clone(),
        ),
        |(i, payload, point, received)| {
            check_payload(&maps[i], &profiles[i], &payload, point, received)
        },
    );
    fuzz(
        "mqtt/payload/json",
        10000,
        (
            0..profiles.len(),
            proptest::collection::vec((any::<usize>(), arb_json_leaf()), 0..12),
            proptest::option::of(arb_json_leaf()),
            arb_point,
            arb_received,
        ),
        |(i, leaves, extra, point, received)| {
            let payload = json_at(&pointers[i], leaves, extra);
            check_payload(&maps[i], &profiles[i], &payload, point, received)
        },
    );
}

fn arb_topic() -> impl Strategy<Value = String> {
    prop_oneof![
        arb_text(40),
        proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(vec![
                    "+",
                    "#",
                    "{asset}",
                    "{site}",
                    "{building}",
                    "{floor}",
                    "{gateway}",
                    "{point}",
                    "{nope}",
                    "{}",
                    "{",
                    "}",
                    "$SYS",
                    "",
                    "lifts",
                    "doors",
                    "A",
                    "L1",
                    "P-1",
                    "a+b",
                    "{asset}x",
                    "status",
                ])
                .prop_map(str::to_string),
                arb_text(6),
            ],
            0..7,
        )
        .prop_map(|v| v.join("/")),
    ]
}

fn check_topics(
    template: &str,
    topic: &str,
    bindings: &[String; 4],
    gateway: &str,
) -> Result<(), TestCaseError> {
    let profiles = mqtt_profiles();
    let devices = vec![
        RouteDevice {
            asset: bindings[0].clone(),
            site: Some(bindings[1].clone()),
            building: Some(bindings[2].clone()),
            floor: Some(bindings[3].clone()),
        },
        RouteDevice {
            asset: "D-2".into(),
            ..Default::default()
        },
    ];
    let mut router = Router::new(gateway, devices);
    for p in profiles {
        let t = SubTemplate::parse(p.mqtt_topic.as_deref().unwrap()).unwrap();
        router.add_template(t, &[0, 1, 7]);
    }
    match SubTemplate::parse(template) {
        Ok(t) => {
            let _ = t.filter();
            let _ = t.literal();
            let _ = t.captures().count();
            let _ = t.matches(topic);
            let bound = t.bind(|c| match c {
                Capture::Asset => Some(bindings[0].clone()),
                Capture::Site => Some(bindings[1].clone()),
                Capture::Building => Some(bindings[2].clone()),
                Capture::Floor => None,
                Capture::Gateway => Some(gateway.to_string()),
                Capture::Point => None,
            });
            if let Ok(b) = bound {
                let _ = b.matches(topic);
                router.add_device_topic(b, 0);
            }
            router.add_template(t, &[0, 1]);
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    let _ = router.filters();
    if let Ok(ds) = router.route(topic) {
        for d in ds {
            prop_assert!(d.device < 2);
            if let Some(p) = d.point {
                prop_assert!(topic.contains(p));
            }
        }
    }
    let allowed = ["gateway", "asset", "kind"];
    match PubTemplate::parse(template, &allowed) {
        Ok(p) => {
            let out = p.render(|name| match name {
                "asset" => Some(bindings[0].clone()),
                "kind" => Some(topic.to_string()),
                _ => None,
            });
            prop_assert!(!out.is_empty());
        }
        Err(e) => prop_assert!(!e.to_string().is_empty()),
    }
    Ok(())
}

#[test]
fn fuzz_mqtt_topic() {
    let seeds = corpus_lines("mqtt_topic");
    for a in &seeds {
        for b in &seeds {
            let bindings = [a.clone(), b.clone(), a.clone(), b.clone()];
            replay("mqtt_topic", a, || check_topics(a, b, &bindings, b));
        }
    }
    fuzz(
        "mqtt/topic",
        10000,
        (
            arb_topic(),
            arb_topic(),
            [arb_text(6), arb_text(6), arb_text(6), arb_text(6)],
            arb_text(6),
        ),
        |(template, topic, bindings, gw)| check_topics(&template, &topic, &bindings, &gw),
    );
}

// ---------------------------------------------------------------------------------------------
// 4. Line protocol

/// A TOML basic string holding `s` exactly.
fn toml_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[derive(Debug, Clone)]
struct Names {
    gateway: String,
    measurement: String,
    points: [String; 4],
    id: String,
    site: String,
    building: String,
    tag: (String, String),
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        1 => arb_text(10),
        1 => proptest::string::string_regex("[a-z_#\\- ,=\"\t\r]{1,6}").unwrap(),
        // Mostly names the config takes, so most cases reach the encoder.
        6 => proptest::string::string_regex("[a-zA-Z0-9 _.,=\"'#°{}:/+\u{feff}é-]{1,8}").unwrap(),
        1 => Just("x".to_string()),
    ]
}

fn arb_names() -> impl Strategy<Value = Names> {
    (
        arb_name(),
        arb_name(),
        [arb_name(), arb_name(), arb_name(), arb_name()],
        arb_name(),
        arb_name(),
        arb_name(),
        (arb_name(), arb_name()),
    )
        .prop_map(
            |(gateway, measurement, points, id, site, building, tag)| Names {
                gateway,
                measurement,
                points,
                id,
                site,
                building,
                tag,
            },
        )
}

fn names_config(n: &Names) -> String {
    let kinds = ["gauge", "counter", "state", "alarm"];
    let points: Vec<String> = n
        .points
        .iter()
        .zip(kinds)
        .enumerate()
        .map(|(i, (name, kind))| {
            let register = if kind == "alarm" { "coil" } else { "holding" };
            format!(
                "{{ name = {}, kind = \"{kind}\", register = \"{register}\", address = {i} }}",
                toml_str(name)
            )
        })
        .collect();
    format!(
        "[gateway]\nid = {}\nstate_dir = \"/tmp/facilityd-fuzz\"\n\n[[profiles]]\nname = \"p\"\ndevice_type = \"pump\"\nmeasurement = {}\npoints = [\n  {}\n]\n\n[[devices]]\nid = {}\nprofile = \"p\"\nsite = {}\nbuilding = {}\ntags = {{ {} = {} }}\nmodbus = {{ url = \"tcp://127.0.0.1\", unit = 1 }}\n",
        toml_str(&n.gateway),
        toml_str(&n.measurement),
        points.join(",\n  "),
        toml_str(&n.id),
        toml_str(&n.site),
        toml_str(&n.building),
        toml_str(&n.tag.0),
        toml_str(&n.tag.1),
    )
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        arb_f64().prop_map(Value::Float),
        any::<i64>().prop_map(Value::Int),
        any::<bool>().prop_map(Value::Bool),
        arb_text(16).prop_map(Value::Str),
    ]
}

/// Encodes a reading and a status of a device whose names the config accepted; the independent
/// parser must read each back as exactly one line with the same fields.
fn check_line(
    n: &Names,
    values: Vec<Value>,
    ts: i64,
    accepted: &AtomicU64,
) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("facilityd.toml");
    std::fs::write(&path, names_config(n)).unwrap();
    let Ok(settings) = load_with_env(&path, HashMap::new()) else {
        return Ok(());
    };
    // Every name the config accepts must come out as one well-formed line: a measurement
    // starting with `#` (a comment), control characters and backslashes are config errors.
    accepted.fetch_add(1, Ordering::Relaxed);
    let enc = LineEncoder::new(&settings.gateway.id, &settings.devices);
    let device: &Arc<_> = &settings.devices[0];
    let values: Vec<(usize, Value)> = values.into_iter().enumerate().collect();
    let writable: Vec<&(usize, Value)> = values
        .iter()
        .filter(|(_, v)| !matches!(v, Value::Float(f) if !f.is_finite()))
        .collect();
    let reading = Record::Reading(Reading {
        device: 0,
        timestamp_ns: ts,
        values: values.clone(),
    });
    let mut out = String::new();
    let wrote = enc.encode(&reading, &mut out);
    prop_assert_eq!(wrote, !writable.is_empty());
    if wrote {
        let lines: Vec<_> = influxdb_line_protocol::parse_lines(&out).collect();
        prop_assert_eq!(lines.len(), 1, "{} lines from {:?}", lines.len(), out);
        let line = lines.into_iter().next().unwrap();
        let line = line.map_err(|e| TestCaseError::fail(format!("{e} in {out:?}")))?;
        let want_m = device
            .profile
            .measurement
            .replace(['\r', '\n'], " ")
            .replace('\\', "/");
        prop_assert_eq!(line.series.measurement.to_string(), want_m, "in {:?}", out);
        prop_assert_eq!(line.field_set.len(), writable.len(), "in {:?}", out);
        for ((_, (i, _)), (k, _)) in writable.iter().enumerate().zip(line.field_set.iter()) {
            let want = device.profile.points[*i]
                .name
                .replace(['\r', '\n'], " ")
                .replace('\\', "/");
            prop_assert_eq!(k.to_string(), want, "in {:?}", out);
        }
        prop_assert_eq!(line.timestamp, Some(ts));
    }
    // `errors` over i64::MAX would be written as an out-of-range `i` integer (reported; a count
    // of failed requests in one cycle never gets there), so it stays in range here.
    let status = Record::Status(DeviceStatus {
        device: 0,
        timestamp_ns: ts,
        online: ts % 2 == 0,
        poll_ms: f64::from_bits(ts as u64),
        errors: ts.unsigned_abs() & i64::MAX as u64,
    });
    let mut out = String::new();
    prop_assert!(enc.encode(&status, &mut out));
    let lines: Vec<_> = influxdb_line_protocol::parse_lines(&out).collect();
    prop_assert_eq!(lines.len(), 1);
    let line = lines.into_iter().next().unwrap();
    line.map_err(|e| TestCaseError::fail(format!("{e} in {out:?}")))?;
    Ok(())
}

#[test]
fn fuzz_line_protocol() {
    let accepted = AtomicU64::new(0);
    let values = vec![
        Value::Float(f64::MIN_POSITIVE),
        Value::Int(i64::MIN),
        Value::Bool(true),
        Value::Str("\\\"\n".into()),
    ];
    for name in corpus_lines("line") {
        let n = Names {
            gateway: name.clone(),
            measurement: name.clone(),
            points: [
                name.clone(),
                format!("{name}2"),
                format!("{name}3"),
                format!("{name}4"),
            ],
            id: name.clone(),
            site: name.clone(),
            building: name.clone(),
            tag: (name.clone(), name.clone()),
        };
        replay("line", &name, || {
            check_line(&n, values.clone(), -1, &accepted)
        });
    }
    fuzz(
        "line",
        3000,
        (
            arb_names(),
            [arb_value(), arb_value(), arb_value(), arb_value()],
            prop_oneof![Just(1_767_607_200_000_000_000i64), any::<i64>()],
        ),
        |(n, values, ts)| check_line(&n, values.to_vec(), ts, &accepted),
    );
    eprintln!(
        "fuzz line: {} configs accepted",
        accepted.load(Ordering::Relaxed)
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Telemetry log recovery

/// What a scan of any bytes must satisfy: no panic; the kept part ends on the last intact
/// record; records in order, inside the bytes, with increasing sequence numbers.
fn check_scan(bytes: &[u8]) -> Result<tlog::SegmentScan, TestCaseError> {
    let scan = tlog::scan_segment(bytes, None);
    prop_assert!(scan.valid_len as usize <= bytes.len());
    // Records and holes in order, never overlapping, inside the bytes.
    let mut end = 0u64;
    let mut last = None;
    let mut holes = scan.holes.iter().peekable();
    for (h, off) in &scan.records {
        while let Some((a, b, _)) = holes.next_if(|(a, _, _)| *a < *off) {
            prop_assert!(*a >= end && a < b && b <= off, "hole {a}..{b} before {off}");
            end = *b;
        }
        prop_assert!(*off >= end);
        end = off + HEADER_LEN as u64 + h.len as u64;
        prop_assert!(end as usize <= bytes.len());
        prop_assert!(last.is_none_or(|l| h.seq > l));
        last = Some(h.seq);
    }
    prop_assert!(
        holes.next().is_none(),
        "a hole after the last record is a tail"
    );
    if !scan.records.is_empty() {
        prop_assert_eq!(scan.valid_len, end);
    }
    if scan.error.is_none() {
        prop_assert_eq!(scan.valid_len as usize, bytes.len());
    }
    Ok(scan)
}

/// A valid segment of records with the given payloads; returns the bytes and each record's end.
fn segment(payloads: &[String]) -> (Vec<u8>, Vec<usize>) {
    let mut out = FILE_MAGIC.to_vec();
    let mut ends = Vec::new();
    for (i, p) in payloads.iter().enumerate() {
        let h = RecordHeader {
            seq: i as u64 + 1,
            len: p.len() as u32,
            lines: p.lines().count() as u32,
            class: if i % 3 == 0 {
                Class::Priority
            } else {
                Class::Bulk
            },
            min_ts: i as i64,
            max_ts: i as i64 + 1,
            appended_ms: 0,
        };
        tlog::encode_record(&h, p.as_bytes(), &mut out);
        ends.push(out.len());
    }
    (out, ends)
}

#[derive(Debug, Clone)]
enum Damage {
    Flip(usize, u8),
    Truncate(usize),
    Append(Vec<u8>),
    Zero(usize, usize),
}

/// A damaged segment scans to exactly the records that end before the first damaged byte.
fn check_damaged(payloads: &[String], damage: &Damage) -> Result<(), TestCaseError> {
    let (orig, ends) = segment(payloads);
    let mut bytes = orig.clone();
    match damage {
        Damage::Flip(i, b) => {
            let i = FILE_MAGIC.len() + i % (bytes.len() - FILE_MAGIC.len()).max(1);
            if i < bytes.len() {
                bytes[i] ^= b;
            }
        }
        Damage::Truncate(i) => {
            let at = FILE_MAGIC.len() + i % (bytes.len() - FILE_MAGIC.len() + 1);
            bytes.truncate(at);
        }
        Damage::Append(extra) => bytes.extend_from_slice(extra),
        Damage::Zero(i, n) => {
            let at = FILE_MAGIC.len() + i % (bytes.len() - FILE_MAGIC.len()).max(1);
            let end = (at + n % 64 + 1).min(bytes.len());
            bytes[at..end].fill(0);
        }
    }
    let scan = check_scan(&bytes)?;
    // Exactly the records whose bytes the damage left alone survive: the ones after a damaged
    // stretch too (it is a hole, not the end).
    let intact: Vec<u64> = ends
        .iter()
        .enumerate()
        .filter(|(k, e)| {
            let start = if *k == 0 {
                FILE_MAGIC.len()
            } else {
                ends[k - 1]
            };
            **e <= bytes.len() && bytes[start..**e] == orig[start..**e]
        })
        .map(|(k, _)| k as u64 + 1)
        .collect();
    let got: Vec<u64> = scan.records.iter().map(|(h, _)| h.seq).collect();
    prop_assert_eq!(got, intact, "damage {:?}", damage);
    for (h, _) in &scan.records {
        prop_assert_eq!(h.len as usize, payloads[h.seq as usize - 1].len());
    }
    Ok(())
}

/// The whole start-up path on a damaged segment file: it opens, cuts, and reads back the intact
/// prefix, line for line.
fn check_open(payloads: &[String], cut: usize) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, ends) = segment(payloads);
    let at = FILE_MAGIC.len() + cut % (bytes.len() - FILE_MAGIC.len() + 1);
    std::fs::write(dir.path().join("00000000000000000001.seg"), &bytes[..at]).unwrap();
    let cfg = LogConfig {
        dir: dir.path().to_path_buf(),
        max_bytes: 1 << 20,
        fsync_interval: Duration::from_millis(10),
        retention: Duration::from_secs(60),
        forwarding: true,
    };
    let (log, rec) = TelemetryLog::open(cfg, Default::default())
        .map_err(|e| TestCaseError::fail(format!("open failed: {e}")))?;
    let intact = ends.iter().filter(|e| **e <= at).count();
    prop_assert_eq!(rec.records, intact);
    // A cut is reported exactly when the file ended inside a record.
    let boundary = at == FILE_MAGIC.len() || ends.contains(&at);
    prop_assert_eq!(rec.cuts.len(), usize::from(!boundary));
    let mut body = String::new();
    let mut from = 0;
    while let Some(c) = log.read_chunk(from, 1000).unwrap() {
        body.push_str(&c.body);
        from = c.next_seq;
    }
    let expected: String = payloads[..intact].concat();
    prop_assert_eq!(body, expected);
    Ok(())
}

fn arb_payloads() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        proptest::collection::vec(
            "[a-z]{1,8},asset=[A-Z0-9]{1,4} v=[0-9]{1,6}i [0-9]{1,19}",
            1..6,
        )
        .prop_map(|lines| lines.into_iter().map(|l| l + "\n").collect::<String>()),
        1..8,
    )
}

#[test]
fn fuzz_log_recovery() {
    for (name, hex) in corpus_files("log") {
        let bytes = unhex(&String::from_utf8_lossy(&hex));
        replay("log", &name, || {
            let scan = check_scan(&bytes)?;
            if name == "valid_three.hex" {
                prop_assert_eq!(scan.records.len(), 3);
                prop_assert!(scan.error.is_none());
            }
            Ok(())
        });
    }
    fuzz(
        "log/bytes",
        20000,
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..400),
            proptest::collection::vec(any::<u8>(), 0..400).prop_map(|mut v| {
                let mut b = FILE_MAGIC.to_vec();
                b.append(&mut v);
                b
            }),
        ],
        |bytes| check_scan(&bytes).map(|_| ()),
    );
    fuzz(
        "log/damaged",
        5000,
        (
            arb_payloads(),
            prop_oneof![
                (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Damage::Flip(i, b)),
                any::<usize>().prop_map(Damage::Truncate),
                proptest::collection::vec(any::<u8>(), 0..80).prop_map(Damage::Append),
                (any::<usize>(), any::<usize>()).prop_map(|(i, n)| Damage::Zero(i, n)),
            ],
        ),
        |(payloads, damage)| check_damaged(&payloads, &damage),
    );
    fuzz(
        "log/open",
        300,
        (arb_payloads(), any::<usize>()),
        |(payloads, cut)| check_open(&payloads, cut),
    );
}
