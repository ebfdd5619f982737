//! The register image of one simulated device: the four Modbus tables, covering exactly the
//! addresses its profile's points use, and the read path that answers requests from them.
//!
//! Pure data; no I/O. A device's map has holes where no point lives, and a read that touches a
//! hole is refused with `IllegalDataAddress`, as real devices do (the gateway's request planner
//! learns its splits from that answer).

use tokio_modbus::ExceptionCode;

use crate::profile::{Point, RegisterKind};

/// One contiguous run of used addresses.
#[derive(Debug, Clone)]
struct Segment<T> {
    /// First address of the run (u32: a run may end at 65535 inclusive).
    start: u32,
    cells: Vec<T>,
}

/// A sparse table: the used address runs of one register kind, in address order.
#[derive(Debug, Clone)]
pub(crate) struct Table<T> {
    segments: Vec<Segment<T>>,
}

impl<T: Copy + Default> Table<T> {
    /// Builds the table from the (start, count) ranges the points occupy; overlapping and
    /// adjacent ranges (several `bit` points in one register, a u32 after a u16) are merged.
    fn build(mut ranges: Vec<(u32, u32)>) -> Self {
        ranges.sort_unstable();
        let mut merged: Vec<(u32, u32)> = Vec::new();
        for (start, count) in ranges {
            let end = start + count;
            match merged.last_mut() {
                Some((_, last_end)) if start <= *last_end => *last_end = (*last_end).max(end),
                _ => merged.push((start, end)),
            }
        }
        let segments = merged
            .into_iter()
            .map(|(start, end)| Segment {
                start,
                cells: vec![T::default(); (end - start) as usize],
            })
            .collect();
        Table { segments }
    }

    /// The segment index and offset holding `[address, address + count)` entirely, if any.
    fn locate(&self, address: u16, count: u16) -> Option<(usize, usize)> {
        let address = u32::from(address);
        // The last segment starting at or before `address`.
        let i = self
            .segments
            .partition_point(|s| s.start <= address)
            .checked_sub(1)?;
        let seg = &self.segments[i];
        let offset = (address - seg.start) as usize;
        (offset + usize::from(count) <= seg.cells.len()).then_some((i, offset))
    }

    pub(crate) fn get(&self, address: u16, count: u16) -> Option<&[T]> {
        let (i, offset) = self.locate(address, count)?;
        self.segments[i]
            .cells
            .get(offset..offset + usize::from(count))
    }

    pub(crate) fn get_mut(&mut self, address: u16, count: u16) -> Option<&mut [T]> {
        let (i, offset) = self.locate(address, count)?;
        self.segments[i]
            .cells
            .get_mut(offset..offset + usize::from(count))
    }

    /// Number of addresses in use.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.segments.iter().map(|s| s.cells.len()).sum()
    }
}

/// The four tables of one device.
#[derive(Debug, Clone)]
pub(crate) struct RegisterImage {
    pub(crate) holding: Table<u16>,
    pub(crate) input: Table<u16>,
    pub(crate) coils: Table<bool>,
    pub(crate) discrete: Table<bool>,
}

impl RegisterImage {
    /// An all-zero image covering the addresses of `points` (MQTT points take none).
    pub(crate) fn for_points(points: &[Point]) -> Self {
        let ranges = |kind: RegisterKind| -> Vec<(u32, u32)> {
            points
                .iter()
                .filter_map(|p| p.register.as_ref())
                .filter(|r| r.kind == kind)
                .map(|r| (u32::from(r.address), u32::from(r.count.max(1))))
                .collect()
        };
        RegisterImage {
            holding: Table::build(ranges(RegisterKind::Holding)),
            input: Table::build(ranges(RegisterKind::Input)),
            coils: Table::build(ranges(RegisterKind::Coil)),
            discrete: Table::build(ranges(RegisterKind::Discrete)),
        }
    }

    pub(crate) fn words(&self, kind: RegisterKind) -> Option<&Table<u16>> {
        match kind {
            RegisterKind::Holding => Some(&self.holding),
            RegisterKind::Input => Some(&self.input),
            RegisterKind::Coil | RegisterKind::Discrete => None,
        }
    }

    pub(crate) fn words_mut(&mut self, kind: RegisterKind) -> Option<&mut Table<u16>> {
        match kind {
            RegisterKind::Holding => Some(&mut self.holding),
            RegisterKind::Input => Some(&mut self.input),
            RegisterKind::Coil | RegisterKind::Discrete => None,
        }
    }

    pub(crate) fn bits(&self, kind: RegisterKind) -> Option<&Table<bool>> {
        match kind {
            RegisterKind::Coil => Some(&self.coils),
            RegisterKind::Discrete => Some(&self.discrete),
            RegisterKind::Holding | RegisterKind::Input => None,
        }
    }

    pub(crate) fn bits_mut(&mut self, kind: RegisterKind) -> Option<&mut Table<bool>> {
        match kind {
            RegisterKind::Coil => Some(&mut self.coils),
            RegisterKind::Discrete => Some(&mut self.discrete),
            RegisterKind::Holding | RegisterKind::Input => None,
        }
    }

    /// Answers a register read (FC 3/4) the way a device with this map would.
    pub(crate) fn read_words(
        &self,
        kind: RegisterKind,
        address: u16,
        count: u16,
    ) -> Result<&[u16], ExceptionCode> {
        check_request(kind, address, count)?;
        self.words(kind)
            .and_then(|t| t.get(address, count))
            .ok_or(ExceptionCode::IllegalDataAddress)
    }

    /// Answers a coil or discrete-input read (FC 1/2).
    pub(crate) fn read_bits(
        &self,
        kind: RegisterKind,
        address: u16,
        count: u16,
    ) -> Result<&[bool], ExceptionCode> {
        check_request(kind, address, count)?;
        self.bits(kind)
            .and_then(|t| t.get(address, count))
            .ok_or(ExceptionCode::IllegalDataAddress)
    }
}

/// The checks of the Modbus application protocol (v1.1b3, 6.1-6.4), in its order: the quantity
/// (`IllegalDataValue`), then the address range (`IllegalDataAddress`).
fn check_request(kind: RegisterKind, address: u16, count: u16) -> Result<(), ExceptionCode> {
    if count == 0 || count > kind.protocol_limit() {
        return Err(ExceptionCode::IllegalDataValue);
    }
    if u32::from(address) + u32::from(count) > 65536 {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::builtin;

    fn image(name: &str) -> RegisterImage {
        let cfg = builtin::load(name).expect("listed").expect("parses");
        let (profile, _) = cfg.build().expect("valid");
        RegisterImage::for_points(&profile.points)
    }

    #[test]
    fn covers_exactly_the_used_addresses() {
        // fire_panel: holding 0-4 (bits share register 0), 6, 10-13; discrete 0-5.
        let img = image("fire_panel");
        assert_eq!(img.holding.len(), 10);
        assert_eq!(img.discrete.len(), 6);
        assert_eq!(img.input.len(), 0);
        assert!(img.read_words(RegisterKind::Holding, 0, 5).is_ok());
        assert_eq!(
            img.read_words(RegisterKind::Holding, 0, 6),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            img.read_words(RegisterKind::Holding, 5, 1),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert!(img.read_words(RegisterKind::Holding, 6, 1).is_ok());
        assert!(img.read_words(RegisterKind::Holding, 10, 4).is_ok());
        assert_eq!(
            img.read_words(RegisterKind::Holding, 10, 5),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            img.read_words(RegisterKind::Input, 0, 1),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert!(img.read_bits(RegisterKind::Discrete, 0, 6).is_ok());
        assert_eq!(
            img.read_bits(RegisterKind::Discrete, 0, 7),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            img.read_bits(RegisterKind::Coil, 0, 1),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn multi_register_values_merge_into_one_run() {
        // elevator: input 0-17 with u32 counters at 5, 7 and 9 and four bits in register 4.
        let img = image("elevator");
        assert_eq!(img.input.len(), 18);
        assert!(img.read_words(RegisterKind::Input, 0, 18).is_ok());
        assert!(img.read_bits(RegisterKind::Coil, 0, 2).is_ok());
    }

    #[test]
    fn quantity_limits_answer_illegal_data_value() {
        let img = image("pump");
        assert_eq!(
            img.read_words(RegisterKind::Holding, 0, 0),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            img.read_words(RegisterKind::Holding, 0, 126),
            Err(ExceptionCode::IllegalDataValue)
        );
        assert_eq!(
            img.read_bits(RegisterKind::Discrete, 0, 2001),
            Err(ExceptionCode::IllegalDataValue)
        );
        // Within the limit but past the map: an address problem.
        assert_eq!(
            img.read_words(RegisterKind::Holding, 0, 125),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            img.read_words(RegisterKind::Holding, 65535, 2),
            Err(ExceptionCode::IllegalDataAddress)
        );
    }

    #[test]
    fn table_at_the_top_of_the_address_space() {
        let mut t: Table<u16> = Table::build(vec![(65534, 2)]);
        assert!(t.get(65534, 2).is_some());
        assert!(t.get(65535, 1).is_some());
        assert!(t.get(65533, 1).is_none());
        if let Some(w) = t.get_mut(65535, 1) {
            w[0] = 7;
        }
        assert_eq!(t.get(65534, 2), Some(&[0u16, 7][..]));
    }
}
