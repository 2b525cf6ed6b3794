//! What a REST JSON decode builds, charged to a [`Budget`](crate::gather::Budget) before it is
//! allocated.
//!
//! The JSON decoders ([`crate::oip::rest`], [`crate::mindspore::rest`])
//! read straight into tensor buffers, so what they build is mostly the
//! tensors the body describes. But not only: an element of BYTES costs a
//! 32-byte handle for as little as 3 bytes of text (`"",`), and an
//! instance, a tensor of a list or a parameter costs a map entry of a few
//! hundred bytes for as little as 8 (`{"x":1},`). Under [`charged`], each
//! decoder charges what it is about to allocate to a [`Charge`] of the
//! server's budget first, and stops as soon as the budget refuses: a body
//! whose decoding would hold more than the server gives all requests is
//! refused having held what the budget allowed, whatever its shape.
//!
//! The charge is carried by the decoding thread (a decode is synchronous
//! and never moves threads), so that the decoders' signatures, public and
//! internal, stay as they are; outside [`charged`] (a client decoding its
//! replies, tests) nothing is charged.
//!
//! ```
//! use std::sync::Arc;
//! use bytes::Bytes;
//! use serving_proto::gather::Budget;
//! use serving_proto::json_charge;
//! use serving_proto::oip::rest;
//!
//! let budget = Arc::new(Budget::new(1 << 20));
//! let body = Bytes::from_static(
//!     br#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1,2]}]}"#,
//! );
//! let charge = budget.charge(body.len() as u64).unwrap();
//! let (decoded, charge) = json_charge::charged(charge, || rest::decode_request(body, None))
//!     .expect("fits the budget");
//! assert!(decoded.is_ok());
//! // The body, the tensor's 8 bytes and its structures are charged.
//! assert!(charge.bytes() > 8 + 70);
//! drop(charge); // the request answered
//!
//! // 100,000 empty strings: 300 KB of text, 3.2 MB of handles.
//! let data = vec![r#""""#; 100_000].join(",");
//! let body = format!(
//!     r#"{{"inputs":[{{"name":"x","shape":[100000],"datatype":"BYTES","data":[{data}]}}]}}"#
//! );
//! let charge = budget.charge(body.len() as u64).unwrap();
//! let refused = json_charge::charged(charge, || rest::decode_request(Bytes::from(body), None));
//! assert!(refused.unwrap_err().needed > 1 << 20);
//! assert_eq!(budget.held(), 0);
//! ```

use std::cell::RefCell;

use crate::gather::{Charge, Exhausted};

/// The decode under way on this thread: its charge, and the refusal that
/// stopped it.
struct Current {
    charge: Charge,
    refused: Option<Refusal>,
}

/// Why a charged decode stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("decoding the request needs at least {needed} bytes of server memory: {exhausted}")]
pub struct Refusal {
    /// What the decode had charged with what it asked for when refused:
    /// a lower bound of what it needs. More than `exhausted.limit`: the
    /// request can never be decoded by this server.
    pub needed: u64,
    /// The budget's answer.
    pub exhausted: Exhausted,
}

impl Refusal {
    /// Whether the request needs more than the whole budget.
    pub fn never_fits(&self) -> bool {
        self.needed > self.exhausted.limit
    }
}

thread_local! {
    static CURRENT: RefCell<Option<Current>> = const { RefCell::new(None) };
}

/// Runs `decode` with what it builds charged to `charge`: the result and
/// the charge, grown by what the result holds (give it back by dropping
/// it once the request is answered), or the refusal when the budget had no
/// room, the partial result then dropped and all of `charge` given back.
pub fn charged<T>(charge: Charge, decode: impl FnOnce() -> T) -> Result<(T, Charge), Refusal> {
    /// Puts the outer decode's charge back on the thread when this one
    /// ends, even if `decode` panics (this one's charge, if still there,
    /// is then dropped: given back).
    struct Restore(Option<Current>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            let mine = CURRENT.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
            drop(mine);
        }
    }
    let outer = CURRENT.with(|c| {
        c.borrow_mut().replace(Current {
            charge,
            refused: None,
        })
    });
    let restore = Restore(outer);
    let value = decode();
    let mine = CURRENT.with(|c| c.borrow_mut().take());
    drop(restore);
    let Some(mine) = mine else {
        unreachable!("the charge is set for the decode's whole run");
    };
    match mine.refused {
        Some(e) => Err(e),
        None => Ok((value, mine.charge)),
    }
}

/// The budget refused what a decode was about to allocate: the decode
/// stops (its error is then replaced by the refusal).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused by the server's memory budget")]
pub(crate) struct Refused;

/// Charges `bytes` the decode on this thread is about to allocate.
pub(crate) fn grow(bytes: usize) -> Result<(), Refused> {
    if bytes == 0 {
        return Ok(());
    }
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        let Some(current) = c.as_mut() else {
            return Ok(());
        };
        if current.refused.is_some() {
            return Err(Refused);
        }
        match current.charge.grow(bytes as u64) {
            Ok(()) => Ok(()),
            Err(exhausted) => {
                current.refused = Some(Refusal {
                    needed: current.charge.bytes().saturating_add(bytes as u64),
                    exhausted,
                });
                Err(Refused)
            }
        }
    })
}

/// Gives back `bytes` charged with [`grow`] for something the decode has
/// freed.
pub(crate) fn shrink(bytes: usize) {
    CURRENT.with(|c| {
        if let Some(current) = c.borrow_mut().as_mut() {
            let left = current.charge.bytes().saturating_sub(bytes as u64);
            // Giving back never fails.
            let _ = current.charge.set(left);
        }
    });
}

/// Many small allocations (strings of BYTES elements), charged in steps of
/// [`Prepaid::STEP`] bytes ahead instead of one by one.
#[derive(Debug, Default)]
pub(crate) struct Prepaid {
    left: usize,
}

impl Prepaid {
    const STEP: usize = 64 << 10;

    /// Charges `bytes` about to be allocated.
    #[inline]
    pub(crate) fn take(&mut self, bytes: usize) -> Result<(), Refused> {
        if bytes > self.left {
            let step = bytes.max(Self::STEP);
            grow(step)?;
            self.left += step;
        }
        self.left -= bytes;
        Ok(())
    }
}

/// What an allocation of `len` bytes costs the allocator: rounded up to 16.
#[inline]
pub(crate) fn block(len: usize) -> usize {
    if len == 0 {
        0
    } else {
        len.next_multiple_of(16)
    }
}

/// What a map built from JSON costs: one node at first, then (nodes at
/// least half full) twice an entry's size per entry, each entry's key text
/// besides.
pub(crate) fn map_node<K, V>() -> usize {
    11 * (std::mem::size_of::<K>() + std::mem::size_of::<V>()) + 64
}

/// One entry of a map of `K` to `V`, its key `key_len` bytes of text.
pub(crate) fn map_entry<K, V>(key_len: usize) -> usize {
    2 * (std::mem::size_of::<K>() + std::mem::size_of::<V>()) + block(key_len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gather::Budget;
    use std::sync::Arc;

    #[test]
    fn a_refusal_stops_the_decode_and_gives_everything_back() {
        let budget = Arc::new(Budget::new(1000));
        let charge = budget.charge(100).unwrap();
        let r = charged(charge, || {
            grow(500).unwrap();
            assert_eq!(budget.held(), 600);
            assert_eq!(grow(500), Err(Refused));
            // Once refused, refused.
            assert_eq!(grow(1), Err(Refused));
            "partial"
        });
        let e = r.unwrap_err();
        assert_eq!(e.needed, 1100);
        assert!(e.never_fits());
        let e = e.exhausted;
        assert_eq!((e.held, e.wanted, e.limit), (600, 500, 1000));
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn outside_a_charged_decode_nothing_is_charged_and_nesting_restores() {
        assert_eq!(grow(usize::MAX), Ok(()));
        let budget = Arc::new(Budget::new(1 << 20));
        let (((), inner), outer) = charged(budget.charge(0).unwrap(), || {
            grow(10).unwrap();
            let inner = charged(budget.charge(0).unwrap(), || grow(20).unwrap()).unwrap();
            grow(30).unwrap();
            shrink(5);
            inner
        })
        .unwrap();
        assert_eq!((outer.bytes(), inner.bytes()), (35, 20));
        let mut prepaid = Prepaid::default();
        let (_, c) = charged(budget.charge(0).unwrap(), || {
            for _ in 0..1000 {
                prepaid.take(100).unwrap();
            }
        })
        .unwrap();
        assert_eq!(c.bytes(), 2 * (64 << 10));
    }

    #[test]
    fn a_panicking_decode_gives_its_charge_back() {
        let budget = Arc::new(Budget::new(1 << 20));
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            charged(budget.charge(10).unwrap(), || {
                grow(100).unwrap();
                panic!("decoder bug");
            })
        }));
        assert!(caught.is_err());
        assert_eq!(budget.held(), 0);
        assert_eq!(grow(usize::MAX), Ok(()));
    }
}
