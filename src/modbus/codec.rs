//! Decoding registers into point values, and the inverse for the simulators.
//!
//! Pure functions; no I/O. A byte order is named by letters: A is the value's most significant
//! byte, B the next, and so on, listed in the order they travel on the wire. For a 32-bit
//! value: ABCD big-endian, DCBA little-endian, BADC the bytes of each word swapped, CDAB the
//! words swapped.

use smallvec::SmallVec;

use crate::model::{Quality, Value};
use crate::profile::{ByteOrder, DataType, Point, RegisterSpec, Transform};

/// A value as read off the wire, before scaling and mapping.
#[derive(Debug, Clone, PartialEq)]
pub enum Raw {
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
}

/// The result of decoding one point.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    Good(Value),
    /// An enum value missing from the point's `map`: written as its number in a string, and counted.
    Unmapped(Value),
    Bad(Quality),
}

/// Reorders bytes between wire order and most-significant-first order. Each of the four
/// orders is its own inverse (identity, full reversal, byte swap in each word, word reversal),
/// so the same function serves decoding and encoding.
fn reorder(bytes: &mut [u8], order: ByteOrder) {
    match order {
        ByteOrder::ABCD => {}
        ByteOrder::DCBA => bytes.reverse(),
        ByteOrder::BADC => bytes.chunks_exact_mut(2).for_each(|c| c.swap(0, 1)),
        // Word order reversed, bytes within each word kept: a full reversal, then each word's
        // two bytes back in place.
        ByteOrder::CDAB => {
            bytes.reverse();
            bytes.chunks_exact_mut(2).for_each(|c| c.swap(0, 1));
        }
    }
}

/// Puts the wire bytes of `words` into most-significant-first order. Up to four registers
/// (every numeric type) stay on the stack: this runs for every register point of every poll.
fn value_bytes(words: &[u16], order: ByteOrder) -> SmallVec<[u8; 8]> {
    let mut bytes: SmallVec<[u8; 8]> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
    reorder(&mut bytes, order);
    bytes
}

/// The inverse of [`value_bytes`]: most-significant-first bytes to wire words.
fn wire_words(bytes: &[u8], order: ByteOrder) -> Vec<u16> {
    let mut wire = bytes.to_vec();
    reorder(&mut wire, order);
    wire.chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect()
}

/// Decodes the raw value of a register point from exactly `spec.count` words.
pub fn decode_words(spec: &RegisterSpec, words: &[u16]) -> Option<Raw> {
    // A count too small for the type (or a bit past 15) is a spec the config rejects; here it
    // is `None` rather than an out-of-bounds panic.
    if words.len() != usize::from(spec.count) || spec.count < spec.data_type.registers(spec.count) {
        return None;
    }
    let b = value_bytes(words, spec.order);
    Some(match spec.data_type {
        DataType::Bool => {
            let bit = u32::from(spec.bit.unwrap_or(0));
            Raw::Bool((words.first()?.checked_shr(bit)?) & 1 == 1)
        }
        DataType::U16 => {
            let word = u16::from_be_bytes([b[0], b[1]]);
            match (spec.bit, spec.bits) {
                // A bit field: `bits` bits from `bit` up.
                (Some(lo), Some(w)) => {
                    let field = u32::from(word).checked_shr(u32::from(lo))?;
                    Raw::Int(i128::from(field & ((1u32 << w.min(16)) - 1)))
                }
                _ => Raw::Int(i128::from(word)),
            }
        }
        DataType::I16 => Raw::Int(i128::from(i16::from_be_bytes([b[0], b[1]]))),
        DataType::U32 => Raw::Int(i128::from(u32::from_be_bytes(b[..4].try_into().ok()?))),
        DataType::I32 => Raw::Int(i128::from(i32::from_be_bytes(b[..4].try_into().ok()?))),
        DataType::U64 => Raw::Int(i128::from(u64::from_be_bytes(b[..8].try_into().ok()?))),
        DataType::I64 => Raw::Int(i128::from(i64::from_be_bytes(b[..8].try_into().ok()?))),
        DataType::F32 => Raw::Float(f64::from(f32::from_be_bytes(b[..4].try_into().ok()?))),
        DataType::F64 => Raw::Float(f64::from_be_bytes(b[..8].try_into().ok()?)),
        DataType::String => {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            Raw::Str(String::from_utf8_lossy(&b[..end]).trim_end().to_string())
        }
    })
}

/// Whether a raw integer is one of the `na` ranges, compared both as the value and as the
/// register's bit pattern (`na = 65535` or `na = -1` both match 0xFFFF of an i16).
fn matches_na(raw: i128, na: &[(i64, i64)], data_type: DataType) -> bool {
    let bits = u32::from(data_type.registers(1)) * 16;
    let mask = (bits < 128).then(|| (1i128 << bits) - 1);
    na.iter().any(|&(from, to)| {
        let (from, to) = (i128::from(from), i128::from(to));
        if (from..=to).contains(&raw) {
            return true;
        }
        mask.is_some_and(|m| {
            let (f, t) = (from & m, to & m);
            f <= t && t - f == to - from && (f..=t).contains(&(raw & m))
        })
    })
}

/// Scales, maps and range-checks a raw value, and gives it the point's field type (a value
/// that cannot have it, such as a fraction for an integer field, is out of range).
pub fn apply(transform: &Transform, data_type: Option<DataType>, raw: Raw) -> Decoded {
    coerce(transform, scale_and_map(transform, data_type, raw))
}

/// `decoded` as the point's field type.
pub fn coerce(transform: &Transform, decoded: Decoded) -> Decoded {
    let Some(output) = transform.output else {
        return decoded;
    };
    match decoded {
        Decoded::Good(v) => match output.coerce(v) {
            Some(v) => Decoded::Good(v),
            None => Decoded::Bad(Quality::OutOfRange),
        },
        Decoded::Unmapped(v) => match output.coerce(v) {
            Some(v) => Decoded::Unmapped(v),
            None => Decoded::Bad(Quality::OutOfRange),
        },
        bad => bad,
    }
}

fn scale_and_map(transform: &Transform, data_type: Option<DataType>, raw: Raw) -> Decoded {
    match raw {
        Raw::Bool(b) => Decoded::Good(Value::Bool(b)),
        Raw::Str(s) => Decoded::Good(Value::Str(s)),
        Raw::Float(f) => {
            if !f.is_finite() {
                return Decoded::Bad(Quality::NotAvailable);
            }
            if transform
                .na
                .iter()
                .any(|&(from, to)| (from as f64..=to as f64).contains(&f))
            {
                return Decoded::Bad(Quality::NotAvailable);
            }
            finish_float(transform, f * transform.scale + transform.offset)
        }
        Raw::Int(i) => {
            if !transform.na.is_empty()
                && matches_na(i, &transform.na, data_type.unwrap_or(DataType::I64))
            {
                return Decoded::Bad(Quality::NotAvailable);
            }
            if let Some(map) = &transform.map {
                let key = i64::try_from(i).unwrap_or(i64::MAX);
                return match map.get(&key) {
                    Some(name) => Decoded::Good(Value::Str(name.clone())),
                    None => Decoded::Unmapped(Value::Str(i.to_string())),
                };
            }
            if transform.integer {
                // Whole-number scale and offset: exact integer arithmetic, no float rounding.
                // Checked: a huge whole-number scale (`scale = 1e20` on a u64) must not overflow.
                let v = i
                    .checked_mul(transform.scale as i128)
                    .and_then(|v| v.checked_add(transform.offset as i128));
                let Some(Ok(v)) = v.map(i64::try_from) else {
                    return Decoded::Bad(Quality::OutOfRange);
                };
                if transform.min.is_some_and(|lo| (v as f64) < lo)
                    || transform.max.is_some_and(|hi| (v as f64) > hi)
                {
                    return Decoded::Bad(Quality::OutOfRange);
                }
                return Decoded::Good(Value::Int(v));
            }
            finish_float(transform, i as f64 * transform.scale + transform.offset)
        }
    }
}

fn finish_float(transform: &Transform, v: f64) -> Decoded {
    if !v.is_finite() {
        return Decoded::Bad(Quality::OutOfRange);
    }
    if transform.min.is_some_and(|lo| v < lo) || transform.max.is_some_and(|hi| v > hi) {
        return Decoded::Bad(Quality::OutOfRange);
    }
    Decoded::Good(Value::Float(v))
}

/// Decodes a register point from the words of a response that starts at `start`.
pub fn decode_register_point(point: &Point, start: u16, words: &[u16]) -> Decoded {
    let Some(spec) = &point.register else {
        return Decoded::Bad(Quality::CommError);
    };
    let from = usize::from(spec.address.wrapping_sub(start));
    let to = from + usize::from(spec.count);
    let Some(slice) = words.get(from..to) else {
        return Decoded::Bad(Quality::CommError);
    };
    match decode_words(spec, slice) {
        Some(raw) => apply(&point.transform, Some(spec.data_type), raw),
        None => Decoded::Bad(Quality::CommError),
    }
}

/// Decodes a coil or discrete-input point from the bits of a response that starts at `start`.
pub fn decode_bit_point(point: &Point, start: u16, bits: &[bool]) -> Decoded {
    let Some(spec) = &point.register else {
        return Decoded::Bad(Quality::CommError);
    };
    match bits.get(usize::from(spec.address.wrapping_sub(start))) {
        Some(&b) => coerce(&point.transform, Decoded::Good(Value::Bool(b))),
        None => Decoded::Bad(Quality::CommError),
    }
}

/// Encodes an engineering value into the words of a register point, the inverse of decoding
/// (used by the simulators). `current` is the register's present content, needed for `bit` points.
pub fn encode_words(
    spec: &RegisterSpec,
    transform: &Transform,
    value: &Value,
    current: &[u16],
) -> Option<Vec<u16>> {
    if let (Some(lo), Some(w)) = (spec.bit, spec.bits) {
        // A bit field: the value (or the name its map gives it) into its bits of the word.
        let n = match (value, &transform.map) {
            (Value::Str(name), Some(map)) => *map.iter().find(|(_, v)| *v == name)?.0,
            (v, _) => v.as_f64()?.round() as i64,
        };
        let mask = (((1u32 << w.min(16)) - 1) << lo) as u16;
        let word = current.first().copied().unwrap_or(0);
        let field = ((n as u32) << lo) as u16 & mask;
        return Some(vec![(word & !mask) | field]);
    }
    if let Some(bit) = spec.bit {
        let on = match value {
            Value::Bool(b) => *b,
            other => other.as_f64()? != 0.0,
        };
        let word = current.first().copied().unwrap_or(0);
        let mask = 1u16 << bit;
        return Some(vec![if on { word | mask } else { word & !mask }]);
    }
    let raw: Raw = match (value, &transform.map) {
        (Value::Str(name), Some(map)) if spec.data_type != DataType::String => {
            let n = map.iter().find(|(_, v)| *v == name).map(|(k, _)| *k)?;
            Raw::Int(i128::from(n))
        }
        (Value::Str(s), _) => Raw::Str(s.clone()),
        (Value::Bool(b), _) => Raw::Int(i128::from(*b)),
        (v, _) => {
            let eng = v.as_f64()?;
            let x = (eng - transform.offset) / transform.scale;
            match spec.data_type {
                DataType::F32 | DataType::F64 => Raw::Float(x),
                _ => Raw::Int(x.round() as i128),
            }
        }
    };
    encode_raw(spec, &raw)
}

/// Encodes a raw value into wire words for `spec` (wrapping integers into the type's width).
pub fn encode_raw(spec: &RegisterSpec, raw: &Raw) -> Option<Vec<u16>> {
    let bytes: Vec<u8> = match (spec.data_type, raw) {
        (DataType::U16 | DataType::I16, Raw::Int(i)) => (*i as u16).to_be_bytes().to_vec(),
        (DataType::U32 | DataType::I32, Raw::Int(i)) => (*i as u32).to_be_bytes().to_vec(),
        (DataType::U64 | DataType::I64, Raw::Int(i)) => (*i as u64).to_be_bytes().to_vec(),
        (DataType::F32, Raw::Float(f)) => (*f as f32).to_be_bytes().to_vec(),
        (DataType::F64, Raw::Float(f)) => f.to_be_bytes().to_vec(),
        (DataType::String, Raw::Str(s)) => {
            let mut b = s.as_bytes().to_vec();
            b.resize(usize::from(spec.count) * 2, 0);
            b
        }
        (DataType::Bool, Raw::Bool(v)) => vec![0, u8::from(*v)],
        _ => return None,
    };
    Some(wire_words(&bytes, spec.order))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::RegisterKind;

    fn spec(t: DataType, order: ByteOrder) -> RegisterSpec {
        RegisterSpec {
            kind: RegisterKind::Holding,
            address: 0,
            data_type: t,
            order,
            bit: None,
            bits: None,
            count: t.registers(4),
        }
    }

    #[test]
    fn orders_lay_out_bytes_as_their_letters_say() {
        // 0x0102_0304 (A = 01, B = 02, C = 03, D = 04) as it travels in each order.
        let cases = [
            (ByteOrder::ABCD, [0x0102, 0x0304]),
            (ByteOrder::DCBA, [0x0403, 0x0201]),
            (ByteOrder::BADC, [0x0201, 0x0403]),
            (ByteOrder::CDAB, [0x0304, 0x0102]),
        ];
        for (order, words) in cases {
            assert_eq!(
                decode_words(&spec(DataType::U32, order), &words),
                Some(Raw::Int(0x0102_0304)),
                "{order:?}"
            );
        }
    }

    /// An independent encoder: the value's big-endian bytes permuted by explicit tables (the
    /// wire position of each value byte), not by the word/byte swapping the decoder uses.
    fn wire(be: &[u8], order: ByteOrder) -> Vec<u16> {
        let perm: Vec<usize> = match (be.len(), order) {
            (_, ByteOrder::ABCD) => (0..be.len()).collect(),
            (n, ByteOrder::DCBA) => (0..n).rev().collect(),
            (2, ByteOrder::BADC) => vec![1, 0],
            (4, ByteOrder::BADC) => vec![1, 0, 3, 2],
            (8, ByteOrder::BADC) => vec![1, 0, 3, 2, 5, 4, 7, 6],
            (2, ByteOrder::CDAB) => vec![0, 1],
            (4, ByteOrder::CDAB) => vec![2, 3, 0, 1],
            (8, ByteOrder::CDAB) => vec![6, 7, 4, 5, 2, 3, 0, 1],
            _ => unreachable!(),
        };
        let bytes: Vec<u8> = perm.iter().map(|&i| be[i]).collect();
        bytes
            .chunks(2)
            .map(|c| u16::from(c[0]) << 8 | u16::from(c[1]))
            .collect()
    }

    fn arb_order() -> impl proptest::strategy::Strategy<Value = ByteOrder> {
        proptest::sample::select(vec![
            ByteOrder::ABCD,
            ByteOrder::DCBA,
            ByteOrder::BADC,
            ByteOrder::CDAB,
        ])
    }

    proptest::proptest! {
        #[test]
        fn every_type_and_order_decodes_what_an_independent_encoder_wrote(
            order in arb_order(), a in proptest::prelude::any::<u64>(), f in proptest::prelude::any::<f64>(), g in proptest::prelude::any::<f32>(),
        ) {
            let cases: Vec<(DataType, Vec<u8>, Raw)> = vec![
                (DataType::U16, (a as u16).to_be_bytes().to_vec(), Raw::Int(i128::from(a as u16))),
                (DataType::I16, (a as i16).to_be_bytes().to_vec(), Raw::Int(i128::from(a as i16))),
                (DataType::U32, (a as u32).to_be_bytes().to_vec(), Raw::Int(i128::from(a as u32))),
                (DataType::I32, (a as i32).to_be_bytes().to_vec(), Raw::Int(i128::from(a as i32))),
                (DataType::U64, a.to_be_bytes().to_vec(), Raw::Int(i128::from(a))),
                (DataType::I64, (a as i64).to_be_bytes().to_vec(), Raw::Int(i128::from(a as i64))),
                (DataType::F32, g.to_be_bytes().to_vec(), Raw::Float(f64::from(g))),
                (DataType::F64, f.to_be_bytes().to_vec(), Raw::Float(f)),
            ];
            for (t, be, expected) in cases {
                // 16-bit values have no word order; only byte order within the word applies.
                let order = if be.len() == 2 { ByteOrder::ABCD } else { order };
                let words = wire(&be, order);
                let sp = spec(t, order);
                let got = decode_words(&sp, &words).unwrap();
                match (&got, &expected) {
                    (Raw::Float(x), Raw::Float(y)) if x.is_nan() => proptest::prop_assert!(y.is_nan()),
                    _ => proptest::prop_assert_eq!(&got, &expected, "{:?} {:?}", t, order),
                }
                // And the simulators' encoder is the exact inverse.
                proptest::prop_assert_eq!(encode_raw(&sp, &got).unwrap(), words);
            }
        }

        #[test]
        fn strings_and_bits_decode(text in "[A-Za-z0-9 ]{0,8}", word in proptest::prelude::any::<u16>(), bit in 0u8..16) {
            let mut be = text.as_bytes().to_vec();
            be.resize(8, 0);
            let sp = RegisterSpec { kind: RegisterKind::Holding, address: 0, data_type: DataType::String, order: ByteOrder::ABCD, bit: None, bits: None, count: 4 };
            proptest::prop_assert_eq!(decode_words(&sp, &wire(&be, ByteOrder::ABCD)), Some(Raw::Str(text.trim_end().to_string())));
            let sp = RegisterSpec { data_type: DataType::Bool, bit: Some(bit), count: 1, ..sp };
            proptest::prop_assert_eq!(decode_words(&sp, &[word]), Some(Raw::Bool(word & (1 << bit) != 0)));
        }
    }

    #[test]
    fn na_matches_either_spelling() {
        let t = Transform {
            na: vec![(-1, -1)],
            ..Transform::IDENTITY
        };
        assert_eq!(
            apply(&t, Some(DataType::U16), Raw::Int(65535)),
            Decoded::Bad(Quality::NotAvailable)
        );
        let t = Transform {
            na: vec![(65535, 65535)],
            ..Transform::IDENTITY
        };
        assert_eq!(
            apply(&t, Some(DataType::I16), Raw::Int(-1)),
            Decoded::Bad(Quality::NotAvailable)
        );
        assert_eq!(
            apply(&t, Some(DataType::I16), Raw::Int(-2)),
            Decoded::Good(Value::Float(-2.0))
        );
    }

    /// GenComm's sentinels (0xFFF8-0xFFFF, 0x7FF8-0x7FFF, 0xFFFFFFF8-) are never readings;
    /// the value just below them is.
    #[test]
    fn na_ranges_hold_every_sentinel_and_nothing_below() {
        for (dt, from, to, raw_ok) in [
            (DataType::U16, 65528, 65535, 65527i128),
            (DataType::I16, 32760, 32767, 32759),
            (DataType::U32, 4294967288, 4294967295, 4294967287),
            (DataType::I32, 2147483640, 2147483647, 2147483639),
        ] {
            let t = Transform {
                na: vec![(from, to)],
                ..Transform::IDENTITY
            };
            for raw in from..=to {
                assert_eq!(
                    apply(&t, Some(dt), Raw::Int(i128::from(raw))),
                    Decoded::Bad(Quality::NotAvailable),
                    "{dt:?} {raw:#x}"
                );
            }
            assert_eq!(
                apply(&t, Some(dt), Raw::Int(raw_ok)),
                Decoded::Good(Value::Float(raw_ok as f64))
            );
        }
    }

    /// A 4-bit alarm state packed four to a register (GenComm page 8): decoded from its own
    /// bits only, and encoded without touching its neighbours.
    #[test]
    fn bit_fields_decode_and_encode_alone() {
        let spec = RegisterSpec {
            kind: RegisterKind::Holding,
            address: 2050,
            data_type: DataType::U16,
            order: ByteOrder::ABCD,
            bit: Some(4),
            bits: Some(4),
            count: 1,
        };
        // Under speed 1, over speed 1, fail to start 3 (shutdown), fail to come to rest 1.
        assert_eq!(decode_words(&spec, &[0x1131]), Some(Raw::Int(3)));
        let t = Transform::IDENTITY;
        let w = encode_words(&spec, &t, &Value::Int(2), &[0x1131]).unwrap();
        assert_eq!(w, vec![0x1121]);
        let w = encode_words(&spec, &t, &Value::Int(0xF), &[0x0000]).unwrap();
        assert_eq!(w, vec![0x00F0]);
    }

    #[test]
    fn unmapped_enum_is_its_number() {
        let mut map = std::collections::BTreeMap::new();
        map.insert(0, "idle".to_string());
        let t = Transform {
            map: Some(map),
            ..Transform::IDENTITY
        };
        assert_eq!(
            apply(&t, Some(DataType::U16), Raw::Int(0)),
            Decoded::Good(Value::Str("idle".into()))
        );
        assert_eq!(
            apply(&t, Some(DataType::U16), Raw::Int(7)),
            Decoded::Unmapped(Value::Str("7".into()))
        );
    }
}
