//! Request planning: the fewest reads that cover a device's points.
//!
//! Points of one register table are sorted by address and cut into consecutive groups; a group
//! is one read when its span fits the per-request limit, every hole inside it is at most
//! `max_gap`, and it does not cross a boundary learned from a refused read. A small dynamic
//! program over the sorted points finds the fewest reads (ties: fewest registers read).

use std::collections::BTreeSet;

use crate::device::ModbusSource;
use crate::profile::{DeviceLimits, Point, RegisterKind};

/// One Modbus read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadRequest {
    pub kind: RegisterKind,
    pub start: u16,
    /// Registers or bits.
    pub count: u16,
    /// Indexes of the profile points this read serves.
    pub points: Vec<usize>,
}

impl ReadRequest {
    pub fn end(&self) -> u32 {
        u32::from(self.start) + u32::from(self.count)
    }
}

/// Limits for planning one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanLimits {
    /// Largest hole (registers; for coils and discrete inputs, bits / 16) one read spans.
    pub max_gap: u16,
    /// Most registers per read (bits are limited by the protocol's 2000 only).
    pub max_registers: u16,
    /// Register reads cover an even number of registers (a read whose points span an odd
    /// number takes one register more, after them or, at the top of the address space, before).
    pub even_count: bool,
}

impl Default for PlanLimits {
    fn default() -> Self {
        PlanLimits {
            max_gap: 10,
            max_registers: 125,
            even_count: false,
        }
    }
}

impl PlanLimits {
    /// A configured device's limits (the configuration already took the lower of the device's
    /// and its profile's `max_registers`).
    pub fn of(source: &ModbusSource) -> Self {
        PlanLimits {
            max_gap: source.max_gap,
            max_registers: source.max_registers,
            even_count: source.even_count,
        }
    }

    /// The defaults within a device model's limits (for `probe`, which has no device).
    pub fn of_profile(limits: DeviceLimits) -> Self {
        PlanLimits {
            max_registers: limits.max_registers,
            even_count: limits.even_count,
            ..PlanLimits::default()
        }
    }

    /// The most registers one read may carry, counting the protocol's limit and evenness.
    fn register_limit(self, kind: RegisterKind) -> u32 {
        let lim = u32::from(self.max_registers.min(kind.protocol_limit()));
        if self.even_count { lim - lim % 2 } else { lim }
    }
}

/// A learned split: no read may contain both addresses below and at-or-above `address`.
pub type Boundary = (RegisterKind, u16);

#[derive(Debug, Clone, Copy)]
struct Span {
    point: usize,
    start: u32,
    end: u32,
}

/// Plans the reads for `points` (points without a register are skipped).
pub fn plan(
    points: &[Point],
    limits: PlanLimits,
    boundaries: &BTreeSet<Boundary>,
) -> Vec<ReadRequest> {
    plan_only(points, None, limits, boundaries)
}

/// Plans the reads for the points listed in `only` (all points when `None`).
pub fn plan_only(
    points: &[Point],
    only: Option<&[usize]>,
    limits: PlanLimits,
    boundaries: &BTreeSet<Boundary>,
) -> Vec<ReadRequest> {
    let mut out = Vec::new();
    for kind in [
        RegisterKind::Coil,
        RegisterKind::Discrete,
        RegisterKind::Holding,
        RegisterKind::Input,
    ] {
        let mut spans: Vec<Span> = points
            .iter()
            .enumerate()
            .filter(|(i, _)| only.is_none_or(|o| o.contains(i)))
            .filter_map(|(i, p)| {
                let r = p.register.as_ref().filter(|r| r.kind == kind)?;
                Some(Span {
                    point: i,
                    start: u32::from(r.address),
                    end: u32::from(r.address) + u32::from(r.count),
                })
            })
            .collect();
        if spans.is_empty() {
            continue;
        }
        spans.sort_by_key(|s| (s.start, s.end, s.point));
        let (limit, gap, even) = if kind.is_bit() {
            (
                u32::from(kind.protocol_limit()),
                u32::from(limits.max_gap) * 16,
                false,
            )
        } else {
            (
                limits.register_limit(kind),
                u32::from(limits.max_gap),
                limits.even_count,
            )
        };
        let cuts: Vec<u32> = boundaries
            .iter()
            .filter(|(k, _)| *k == kind)
            .map(|(_, a)| u32::from(*a))
            .collect();
        out.extend(plan_table(kind, &spans, limit, gap, even, &cuts));
    }
    out
}

/// The registers a read of `start..end` carries: the span, rounded up to even when it must be.
fn read_len(start: u32, end: u32, even: bool) -> u32 {
    let n = end - start;
    if even { n + n % 2 } else { n }
}

/// The read for the points spanning `start..end`: padded by one register to an even count where
/// the device needs it, after the points, or before them where the register after is past the
/// address space or across a learned boundary (a refused register is likeliest there).
fn read_at(
    kind: RegisterKind,
    start: u32,
    end: u32,
    even: bool,
    cuts: &[u32],
    points: Vec<usize>,
) -> ReadRequest {
    let count = read_len(start, end, even);
    let pad_after_blocked = end + 1 > 65536 || cuts.contains(&end);
    let start = if count > end - start && pad_after_blocked && start > 0 {
        start - 1
    } else {
        start
    };
    ReadRequest {
        kind,
        start: start as u16,
        count: count as u16,
        points,
    }
}

fn plan_table(
    kind: RegisterKind,
    spans: &[Span],
    limit: u32,
    max_gap: u32,
    even: bool,
    cuts: &[u32],
) -> Vec<ReadRequest> {
    let n = spans.len();
    // best[i] = (reads, registers) to cover spans[..i]; from[i] = where the last group starts.
    let mut best: Vec<Option<(u32, u32)>> = vec![None; n + 1];
    let mut from = vec![0usize; n + 1];
    best[0] = Some((0, 0));
    for j in 0..n {
        let Some((reads, regs)) = best[j] else {
            continue;
        };
        let start = spans[j].start;
        let mut end = spans[j].end;
        for k in j..n {
            if k > j {
                let s = spans[k];
                // The hole before this point, measured from everything already in the group.
                if s.start > end && s.start - end > max_gap {
                    break;
                }
                if cuts.iter().any(|&c| start < c && s.start >= c) {
                    break;
                }
                end = end.max(s.end);
            }
            if read_len(start, end, even) > limit {
                break;
            }
            let cand = (reads + 1, regs + read_len(start, end, even));
            if best[k + 1].is_none_or(|b| cand < b) {
                best[k + 1] = Some(cand);
                from[k + 1] = j;
            }
        }
    }
    // Every single point fits a read on its own (validated), so best[n] is set; fall back to one
    // read per point if it somehow is not.
    if best[n].is_none() {
        return spans
            .iter()
            .map(|s| read_at(kind, s.start, s.end, even, cuts, vec![s.point]))
            .collect();
    }
    let mut groups = Vec::new();
    let mut i = n;
    while i > 0 {
        let j = from[i];
        groups.push((j, i));
        i = j;
    }
    groups.reverse();
    groups
        .into_iter()
        .map(|(j, i)| {
            let g = &spans[j..i];
            let start = g[0].start;
            let end = g.iter().map(|s| s.end).max().unwrap_or(start + 1);
            read_at(
                kind,
                start,
                end,
                even,
                cuts,
                g.iter().map(|s| s.point).collect(),
            )
        })
        .collect()
}

/// Where to split a refused read: at the largest hole between its points (a hole in the
/// device's map is the likeliest cause), else between the middle points. `None` for a read
/// that serves a single register span and cannot be split.
pub fn split_point(req: &ReadRequest, points: &[Point]) -> Option<Boundary> {
    let mut spans: Vec<(u32, u32)> = req
        .points
        .iter()
        .filter_map(|&i| points.get(i)?.register.as_ref())
        .map(|r| {
            (
                u32::from(r.address),
                u32::from(r.address) + u32::from(r.count),
            )
        })
        .collect();
    spans.sort();
    let mut best: Option<(i64, u32)> = None;
    let mut end = spans.first()?.1;
    for w in spans.iter().skip(1) {
        if w.0 > spans[0].0 {
            let hole = i64::from(w.0) - i64::from(end);
            // Only cut where no point straddles the cut.
            if w.0 >= end && best.is_none_or(|(h, _)| hole > h) {
                best = Some((hole, w.0));
            }
        }
        end = end.max(w.1);
    }
    best.map(|(_, addr)| (req.kind, addr as u16))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::{ByteOrder, DataType, PointKind, RegisterSpec, Transform};
    use proptest::prelude::*;
    use std::sync::Arc;

    fn pt(kind: RegisterKind, address: u16, count: u16) -> Point {
        Point {
            name: Arc::from(format!("p{address}")),
            kind: PointKind::Gauge,
            unit: None,
            register: Some(RegisterSpec {
                kind,
                address,
                data_type: if kind.is_bit() {
                    DataType::Bool
                } else {
                    DataType::U16
                },
                order: ByteOrder::ABCD,
                bit: None,
                bits: None,
                count,
            }),
            json: None,
            transform: Transform::IDENTITY,
        }
    }

    fn valid(reqs: &[ReadRequest], points: &[Point], limits: PlanLimits) {
        let mut covered = vec![false; points.len()];
        for r in reqs {
            let lim = if r.kind.is_bit() {
                2000
            } else {
                limits.register_limit(r.kind) as u16
            };
            assert!(r.count >= 1 && r.count <= lim, "{r:?} over limit {lim}");
            assert!(r.end() <= 65536, "{r:?} past the address space");
            if limits.even_count && !r.kind.is_bit() {
                assert_eq!(
                    r.count % 2,
                    0,
                    "{r:?}: an odd count for a device that refuses them"
                );
            }
            for &i in &r.points {
                let spec = points[i].register.as_ref().unwrap();
                assert_eq!(spec.kind, r.kind);
                assert!(
                    spec.address >= r.start
                        && u32::from(spec.address) + u32::from(spec.count) <= r.end(),
                    "{r:?} misses point {i}"
                );
                covered[i] = true;
            }
        }
        assert!(covered.iter().all(|c| *c), "uncovered points: {covered:?}");
    }

    /// Whether a group of spans may be one read (limit, largest hole).
    type GroupOk<'a> = &'a dyn Fn(&[(u32, u32)], u32, u32) -> bool;

    /// Exhaustive minimum over all set partitions (small n only).
    fn brute_min(spans: &[(u32, u32)], limit: u32, gap: u32, even: bool) -> usize {
        let ok = |group: &[(u32, u32)], limit: u32, gap: u32| -> bool {
            let mut g = group.to_vec();
            g.sort();
            let start = g[0].0;
            let mut end = g[0].1;
            for s in &g[1..] {
                if s.0 > end && s.0 - end > gap {
                    return false;
                }
                end = end.max(s.1);
            }
            let n = end - start;
            (if even { n + n % 2 } else { n }) <= limit
        };
        fn rec(
            rest: &[(u32, u32)],
            groups: &mut Vec<Vec<(u32, u32)>>,
            limit: u32,
            gap: u32,
            best: &mut usize,
            ok: GroupOk,
        ) {
            if groups.len() >= *best {
                return;
            }
            let Some((&first, tail)) = rest.split_first() else {
                if groups.iter().all(|g| ok(g, limit, gap)) {
                    *best = groups.len();
                }
                return;
            };
            // Validity is checked only on complete groups: a hole can be bridged by a point
            // that joins the group later.
            for gi in 0..groups.len() {
                groups[gi].push(first);
                rec(tail, groups, limit, gap, best, ok);
                groups[gi].pop();
            }
            groups.push(vec![first]);
            rec(tail, groups, limit, gap, best, ok);
            groups.pop();
        }
        let mut best = usize::MAX;
        rec(spans, &mut Vec::new(), limit, gap, &mut best, &ok);
        best
    }

    #[test]
    fn merges_within_gap_and_splits_over_it() {
        let pts = vec![
            pt(RegisterKind::Holding, 0, 2),
            pt(RegisterKind::Holding, 5, 1),
            pt(RegisterKind::Holding, 30, 1),
        ];
        let reqs = plan(
            &pts,
            PlanLimits {
                max_gap: 10,
                max_registers: 125,
                even_count: false,
            },
            &BTreeSet::new(),
        );
        assert_eq!(reqs.len(), 2);
        assert_eq!((reqs[0].start, reqs[0].count), (0, 6));
        assert_eq!((reqs[1].start, reqs[1].count), (30, 1));
    }

    #[test]
    fn learned_boundary_splits_and_split_point_finds_the_hole() {
        let pts = vec![
            pt(RegisterKind::Input, 0, 1),
            pt(RegisterKind::Input, 1, 1),
            pt(RegisterKind::Input, 6, 2),
        ];
        let reqs = plan(&pts, PlanLimits::default(), &BTreeSet::new());
        assert_eq!(reqs.len(), 1);
        let cut = split_point(&reqs[0], &pts).unwrap();
        assert_eq!(cut, (RegisterKind::Input, 6));
        let reqs = plan(&pts, PlanLimits::default(), &BTreeSet::from([cut]));
        assert_eq!(
            reqs.iter().map(|r| (r.start, r.count)).collect::<Vec<_>>(),
            vec![(0, 2), (6, 2)]
        );
    }

    /// The SDM630's quirks: at most 80 registers a read, never an odd count. A map of float
    /// pairs from 0 to 88 needs two reads, and a lone 16-bit register is read as two.
    #[test]
    fn a_device_model_limit_and_even_counts_shape_the_reads() {
        let limits = PlanLimits {
            max_gap: 20,
            max_registers: 80,
            even_count: true,
        };
        let mut pts: Vec<Point> = (0..44).map(|i| pt(RegisterKind::Input, i * 2, 2)).collect();
        pts.push(pt(RegisterKind::Holding, 10, 1));
        pts.push(pt(RegisterKind::Holding, 65535, 1));
        let reqs = plan(&pts, limits, &BTreeSet::new());
        valid(&reqs, &pts, limits);
        let shape: Vec<(RegisterKind, u16, u16)> =
            reqs.iter().map(|r| (r.kind, r.start, r.count)).collect();
        assert_eq!(
            shape,
            vec![
                (RegisterKind::Holding, 10, 2),
                (RegisterKind::Holding, 65534, 2),
                (RegisterKind::Input, 0, 8),
                (RegisterKind::Input, 8, 80),
            ]
        );
    }

    proptest! {
        /// Whatever the map, the device's limits and the boundaries learned from refused reads:
        /// no read exceeds the device's register limit, none has an odd count where the device
        /// refuses them, none crosses a learned boundary between its points, and every point
        /// is read.
        #[test]
        fn no_read_ever_exceeds_the_device_limits(
            raw in proptest::collection::vec((0u16..=65535, 1u16..5), 1..40),
            max_gap in 0u16..40,
            max_registers in 2u16..=125,
            even_count in any::<bool>(),
            cuts in proptest::collection::btree_set(0u16..=65535, 0..4),
        ) {
            let limits = PlanLimits { max_gap, max_registers, even_count };
            // Every point fits one read (the configuration refuses the others).
            let fits = limits.register_limit(RegisterKind::Input) as u16;
            let pts: Vec<Point> = raw.iter().map(|&(a, c)| {
                let c = c.min(fits);
                let a = u32::from(a).min(65536 - u32::from(c)) as u16;
                pt(RegisterKind::Input, a, c)
            }).collect();
            // Boundaries are learned between points, never inside one (`split_point`).
            let cuts: BTreeSet<u16> = cuts.into_iter().filter(|&c| !pts.iter().any(|p| {
                let r = p.register.as_ref().unwrap();
                r.address < c && u32::from(c) < u32::from(r.address) + u32::from(r.count)
            })).collect();
            let boundaries: BTreeSet<Boundary> = cuts.iter().map(|&c| (RegisterKind::Input, c)).collect();
            let reqs = plan(&pts, limits, &boundaries);
            valid(&reqs, &pts, limits);
            for r in &reqs {
                let lo = r.points.iter().map(|&i| pts[i].register.as_ref().unwrap().address).min().unwrap();
                let hi = r.points.iter().map(|&i| pts[i].register.as_ref().unwrap().address).max().unwrap();
                for &c in &cuts {
                    prop_assert!(!(lo < c && hi >= c), "{r:?} crosses the learned boundary {c}");
                    // The padding register stays on the points' side of a boundary too, unless
                    // boundaries close in the points on both sides.
                    let (c32, s, e) = (u32::from(c), u32::from(r.start), r.end());
                    let walled = cuts.contains(&lo) || lo == 0;
                    if !walled {
                        prop_assert!(!(s < c32 && e > c32), "{r:?} reads across the learned boundary {c}");
                    }
                }
            }
        }

        #[test]
        fn plan_is_minimal_and_within_limits(
            raw in proptest::collection::vec((0u16..300, 1u16..5, any::<bool>()), 1..8),
            max_gap in 0u16..20,
            max_registers in 4u16..130,
            even_count in any::<bool>(),
        ) {
            let limits = PlanLimits { max_gap, max_registers, even_count };
            let pts: Vec<Point> = raw.iter().map(|&(a, c, bit)| {
                if bit { pt(RegisterKind::Coil, a, 1) } else { pt(RegisterKind::Holding, a, c) }
            }).collect();
            let reqs = plan(&pts, limits, &BTreeSet::new());
            valid(&reqs, &pts, limits);
            let mut expected = 0;
            for kind in [RegisterKind::Coil, RegisterKind::Holding] {
                let spans: Vec<(u32, u32)> = pts.iter().filter_map(|p| p.register.as_ref()).filter(|r| r.kind == kind)
                    .map(|r| (u32::from(r.address), u32::from(r.address) + u32::from(r.count))).collect();
                if spans.is_empty() { continue; }
                let (limit, gap, even) = if kind.is_bit() { (2000, u32::from(max_gap) * 16, false) } else { (limits.register_limit(kind), u32::from(max_gap), even_count) };
                expected += brute_min(&spans, limit, gap, even);
            }
            prop_assert_eq!(reqs.len(), expected);
        }
    }
}
