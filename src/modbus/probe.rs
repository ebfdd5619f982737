//! `facilityd probe`: read registers once and print raw and decoded values (like mbpoll).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use super::codec::{Decoded, decode_words};
use super::link::Link;
use super::plan::{PlanLimits, ReadRequest, plan};
use super::poller::{ConnectError, ReadData, ReadError, connect, read};
use crate::profile::{ByteOrder, DataType, Point, Profile, RegisterKind, RegisterSpec};

/// What to read.
pub enum ProbeTarget {
    /// A raw range, decoded as `data_type` in `order`.
    Range {
        kind: RegisterKind,
        address: u16,
        count: u16,
        data_type: DataType,
        order: ByteOrder,
    },
    /// Every point of a profile.
    Profile(Arc<Profile>),
}

/// Why a probe gave no report.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The range asked for is empty, over the protocol's limit (`limit`) or past the end of
    /// the address space.
    #[error("count must be 1-{limit} within the address space")]
    Count { limit: u16 },
}

/// Reads once and renders a report. Errors are about the link; device answers (exceptions
/// included) are part of the report.
pub async fn probe(
    link: &Link,
    unit: u8,
    timeout: Duration,
    target: ProbeTarget,
) -> Result<String, ProbeError> {
    let mut ctx = connect(link, unit, timeout.max(Duration::from_secs(1))).await?;
    let mut out = String::new();
    let _ = writeln!(out, "{link} unit {unit}");
    match target {
        ProbeTarget::Range {
            kind,
            address,
            count,
            data_type,
            order,
        } => {
            if count == 0
                || count > kind.protocol_limit()
                || u32::from(address) + u32::from(count) > 65536
            {
                return Err(ProbeError::Count {
                    limit: kind.protocol_limit(),
                });
            }
            let req = ReadRequest {
                kind,
                start: address,
                count,
                points: vec![],
            };
            match read(&mut ctx, &req, timeout).await {
                Ok(ReadData::Bits(bits)) => {
                    for (i, b) in bits.iter().enumerate() {
                        let _ = writeln!(
                            out,
                            "{:<8} {:>5}  {}",
                            kind.as_str(),
                            u32::from(address) + i as u32,
                            u8::from(*b)
                        );
                    }
                }
                Ok(ReadData::Words(words)) => {
                    let width = usize::from(data_type.registers(1));
                    let _ = writeln!(
                        out,
                        "{:<8} {:>5}  {:>6}  {:>6}  decoded as {} {:?}",
                        "table",
                        "addr",
                        "hex",
                        "u16",
                        data_type.as_str(),
                        order
                    );
                    for (i, w) in words.iter().enumerate() {
                        let mut line = format!(
                            "{:<8} {:>5}  0x{w:04X}  {w:>6}",
                            kind.as_str(),
                            u32::from(address) + i as u32
                        );
                        if data_type != DataType::String
                            && i % width == 0
                            && i + width <= words.len()
                        {
                            let spec = RegisterSpec {
                                kind,
                                address: 0,
                                data_type,
                                order,
                                bit: None,
                                bits: None,
                                count: width as u16,
                            };
                            if let Some(raw) = decode_words(&spec, &words[i..i + width]) {
                                let _ = write!(line, "  {raw:?}");
                            }
                        }
                        let _ = writeln!(out, "{line}");
                    }
                    if data_type == DataType::String {
                        let spec = RegisterSpec {
                            kind,
                            address: 0,
                            data_type,
                            order,
                            bit: None,
                            bits: None,
                            count,
                        };
                        let _ = writeln!(out, "string: {:?}", decode_words(&spec, &words));
                    }
                }
                Err(e) => {
                    let _ = writeln!(
                        out,
                        "{} {address}+{count}: {}",
                        kind.as_str(),
                        describe_error(&e)
                    );
                }
            }
        }
        ProbeTarget::Profile(profile) => {
            let reqs = plan(
                &profile.points,
                PlanLimits::of_profile(profile.limits),
                &BTreeSet::new(),
            );
            let _ = writeln!(out, "profile {}: {} requests", profile.name, reqs.len());
            for req in &reqs {
                match read(&mut ctx, req, timeout).await {
                    Ok(data) => {
                        for &i in &req.points {
                            let Some(p) = profile.points.get(i) else {
                                continue;
                            };
                            let (raw, decoded) = render_point(p, req, &data);
                            let _ = writeln!(
                                out,
                                "  {:<26} {:<24} {}{}",
                                p.name,
                                raw,
                                decoded,
                                p.unit
                                    .as_deref()
                                    .map(|u| format!(" {u}"))
                                    .unwrap_or_default()
                            );
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(
                            out,
                            "  {} {}+{}: {}",
                            req.kind.as_str(),
                            req.start,
                            req.count,
                            describe_error(&e)
                        );
                        // A suspect tokio-modbus context is reopened; our RTU master stays
                        // in step after anything but an I/O error. (The old connection is
                        // closed first: a serial port is opened exclusively.)
                        let reopen = match e {
                            ReadError::Exception(_) => false,
                            ReadError::Transport(_) => true,
                            _ => !ctx.is_rtu(),
                        };
                        if reopen {
                            ctx.close().await;
                            ctx = connect(link, unit, timeout.max(Duration::from_secs(1))).await?;
                        }
                    }
                }
            }
        }
    }
    Ok(out)
}

fn render_point(p: &Point, req: &ReadRequest, data: &ReadData) -> (String, String) {
    let Some(spec) = &p.register else {
        return (String::new(), String::new());
    };
    let off = usize::from(spec.address - req.start);
    let raw = match data {
        ReadData::Words(w) => w
            .get(off..off + usize::from(spec.count))
            .map(|s| {
                s.iter()
                    .map(|x| format!("{x:04X}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default(),
        ReadData::Bits(b) => b
            .get(off)
            .map(|x| u8::from(*x).to_string())
            .unwrap_or_default(),
    };
    let decoded = match data {
        ReadData::Words(w) => super::codec::decode_register_point(p, req.start, w),
        ReadData::Bits(b) => super::codec::decode_bit_point(p, req.start, b),
    };
    let shown = match decoded {
        Decoded::Good(v) => v.to_string(),
        Decoded::Unmapped(v) => format!("{v} (not in map)"),
        Decoded::Bad(q) => format!("({q:?})"),
    };
    (raw, shown)
}

fn describe_error(e: &ReadError) -> String {
    match e {
        ReadError::Exception(c) => format!("exception {c:?}"),
        ReadError::Timeout => "no answer (timeout)".into(),
        ReadError::Transport(t) => format!("transport error: {t}"),
        ReadError::Malformed(m) => format!("malformed answer: {m}"),
        ReadError::Garbled(g) => format!("garbled answer discarded: {g}"),
        ReadError::WrongUnit(u) => format!("answer from unit {u} discarded"),
    }
}
