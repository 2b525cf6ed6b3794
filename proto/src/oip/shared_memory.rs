//! Triton's shared-memory parameters: where an input's data lies, or where
//! an output's data is to be written, in a region registered with the
//! server, instead of in the message.
//!
//! ```
//! use serving_proto::oip::shared_memory::{self, Placement};
//! use serving_proto::oip::{Parameter, Parameters};
//!
//! let mut p = Parameters::new();
//! p.insert(shared_memory::REGION.into(), Parameter::String("in".into()));
//! p.insert(shared_memory::BYTE_SIZE.into(), Parameter::Int64(64));
//! let placed = shared_memory::placement(&p)?.unwrap();
//! assert_eq!(placed, Placement { region: "in".into(), offset: 0, byte_size: 64 });
//! assert_eq!(placed.range(128)?, 0..64);
//! assert!(placed.range(32).is_err());
//! # Ok::<(), shared_memory::PlacementError>(())
//! ```

use std::ops::Range;

use super::{Parameter, Parameters};
use crate::text::quote;

/// The region's name (string).
pub const REGION: &str = "shared_memory_region";
/// The offset of the data in the region, in bytes (integer, default 0).
pub const OFFSET: &str = "shared_memory_offset";
/// What the placement parameters' names begin with.
pub const PREFIX: &str = "shared_memory_";
/// The size of the data, in bytes (integer).
pub const BYTE_SIZE: &str = "shared_memory_byte_size";

/// Where a tensor's data lies in a registered region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    /// The region's name.
    pub region: String,
    /// Bytes from the start of the region.
    pub offset: u64,
    /// Bytes of data.
    pub byte_size: u64,
}

/// Shared-memory parameters that do not make a placement.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlacementError {
    /// One of the two required parameters without the other.
    #[error("'{REGION}' and '{BYTE_SIZE}' must be given together; '{given}' is given alone")]
    Incomplete {
        /// The one given.
        given: &'static str,
    },
    /// A parameter of the wrong type.
    #[error("'{name}' must be {expected}")]
    Type {
        /// The parameter.
        name: &'static str,
        /// What it must be.
        expected: &'static str,
    },
    /// Data that runs past the end of its region.
    #[error(
        "the data at offset {offset} of {byte_size} bytes runs past the end of region '{}', which holds {region_size} bytes", quote(.region)
    )]
    Overrun {
        /// The region.
        region: String,
        /// The offset given.
        offset: u64,
        /// The size given.
        byte_size: u64,
        /// The region's size.
        region_size: u64,
    },
}

fn uint(p: &Parameter, name: &'static str) -> Result<u64, PlacementError> {
    p.as_u64().ok_or(PlacementError::Type {
        name,
        expected: "a non-negative integer",
    })
}

/// The placement `parameters` give, if any.
pub fn placement(parameters: &Parameters) -> Result<Option<Placement>, PlacementError> {
    let region = parameters.get(REGION);
    let size = parameters.get(BYTE_SIZE);
    let (region, size) = match (region, size) {
        (None, None) => {
            return match parameters.get(OFFSET) {
                None => Ok(None),
                Some(_) => Err(PlacementError::Incomplete { given: OFFSET }),
            };
        }
        (Some(_), None) => return Err(PlacementError::Incomplete { given: REGION }),
        (None, Some(_)) => return Err(PlacementError::Incomplete { given: BYTE_SIZE }),
        (Some(r), Some(s)) => (r, s),
    };
    let Parameter::String(region) = region else {
        return Err(PlacementError::Type {
            name: REGION,
            expected: "a string, the name of a registered region",
        });
    };
    let offset = match parameters.get(OFFSET) {
        None => 0,
        Some(p) => uint(p, OFFSET)?,
    };
    Ok(Some(Placement {
        region: region.clone(),
        offset,
        byte_size: uint(size, BYTE_SIZE)?,
    }))
}

impl Placement {
    /// The byte range of the data in a region of `region_size` bytes,
    /// checked to lie inside it.
    pub fn range(&self, region_size: u64) -> Result<Range<usize>, PlacementError> {
        let overrun = || PlacementError::Overrun {
            region: self.region.clone(),
            offset: self.offset,
            byte_size: self.byte_size,
            region_size,
        };
        let end = self
            .offset
            .checked_add(self.byte_size)
            .ok_or_else(overrun)?;
        if end > region_size {
            return Err(overrun());
        }
        let start = usize::try_from(self.offset).map_err(|_| overrun())?;
        let end = usize::try_from(end).map_err(|_| overrun())?;
        Ok(start..end)
    }
}

/// Whether `parameters` place a tensor in shared memory (its data then
/// travels in no message).
pub fn is_placed(parameters: &Parameters) -> bool {
    parameters.contains_key(REGION)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(items: &[(&str, Parameter)]) -> Parameters {
        items
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect()
    }

    #[test]
    fn both_required_parameters_or_neither() {
        assert_eq!(placement(&Parameters::new()), Ok(None));
        let e = placement(&params(&[(REGION, Parameter::String("r".into()))])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "'shared_memory_region' and 'shared_memory_byte_size' must be given together; 'shared_memory_region' is given alone"
        );
        assert!(placement(&params(&[(OFFSET, Parameter::Int64(4))])).is_err());
        let e = placement(&params(&[
            (REGION, Parameter::Int64(1)),
            (BYTE_SIZE, Parameter::Int64(4)),
        ]))
        .unwrap_err();
        assert!(matches!(e, PlacementError::Type { name: REGION, .. }));
        let e = placement(&params(&[
            (REGION, Parameter::String("r".into())),
            (BYTE_SIZE, Parameter::Int64(-4)),
        ]))
        .unwrap_err();
        assert!(matches!(
            e,
            PlacementError::Type {
                name: BYTE_SIZE,
                ..
            }
        ));
    }

    #[test]
    fn ranges_stay_inside_the_region() {
        let p = |offset, byte_size| Placement {
            region: "r".into(),
            offset,
            byte_size,
        };
        assert_eq!(p(8, 8).range(16), Ok(8..16));
        assert_eq!(p(16, 0).range(16), Ok(16..16));
        assert!(p(9, 8).range(16).is_err());
        assert!(p(u64::MAX, 2).range(16).is_err());
        assert_eq!(
            p(9, 8).range(16).unwrap_err().to_string(),
            "the data at offset 9 of 8 bytes runs past the end of region 'r', which holds 16 bytes"
        );
    }
}
