//! Gathering a request that arrives in pieces into one buffer, with memory
//! in proportion to the bytes that have arrived and a bound for a whole
//! server.
//!
//! A gRPC frame header or a `Content-Length` announces a size before the
//! bytes come, and a client can announce 99 MiB and stall. [`Gather`]
//! never trusts the announcement for memory: the pieces that arrive are
//! kept as they are (no copy; small ones copied into one staging buffer,
//! see [`COPY_BELOW`]) until an eighth of the message is in; only
//! then is the message's buffer allocated, the pieces copied into it once
//! and dropped, and the rest written straight into it. So a request holds
//! at most 8x what it has sent (a stalled one exactly what it sent), every
//! byte is copied exactly once, and a buffer is never regrown. (The
//! eighth, not a half: the pieces are freed at once when the buffer takes
//! over, and an allocator keeps freed memory resident for a while; at a
//! half, one 256 MiB request peaked at 2.6x its size in resident memory
//! instead of 2.1x.) Everything held is taken from a
//! [`Budget`] shared by all requests of a server and given back when the
//! request is complete or dropped; when the budget is spent, the request
//! that needs more is refused with [`Exhausted`] instead of waiting.
//!
//! The buffer can place one offset of the message (the first large tensor)
//! at an [`ALIGN`]-byte boundary, so that the tensor can be used in place
//! (ONNX Runtime reads aligned input without a copy).
//!
//! ```
//! use bytes::Bytes;
//! use serving_proto::gather::{ALIGN, Budget, Gather};
//!
//! let budget = Budget::new(4 << 20);
//! let mut g = Gather::new(&budget, 1_000_000, Some(7));
//! // An eighth of the message not yet in: the piece is kept as it came.
//! g.push(Bytes::from(vec![1u8; 100_000])).unwrap();
//! assert_eq!(budget.held(), 100_000);
//! g.push(Bytes::from(vec![2u8; 900_000])).unwrap();
//! let message = g.finish();
//! assert_eq!(message.len(), 1_000_000);
//! assert_eq!((message.as_ptr() as usize + 7) % ALIGN, 0);
//! assert_eq!(budget.held(), 0);
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

/// Alignment given to the chosen offset of a gathered message: what any
/// element type and SIMD loads need.
pub const ALIGN: usize = 64;

/// The buffer is allocated once `1 / SWITCH` of the message is in.
pub const SWITCH: usize = 8;

/// Until then, pieces smaller than this are copied into one staging
/// buffer (charged at its capacity) rather than kept as they came: a piece
/// is a slice of the connection's receive buffer and keeps all of it
/// alive (an HTTP/2 frame's padding included), and costs a handle of its
/// own, so a client sending one byte per padded frame could make each
/// charged byte hold hundreds.
pub const COPY_BELOW: usize = 64 << 10;

/// Memory held by requests still arriving, over a whole server.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    held: AtomicU64,
}

/// The budget had no room for more.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the server holds {held} bytes of requests still arriving and cannot take {wanted} more (its limit is {limit}); retry later"
)]
pub struct Exhausted {
    /// Bytes held when refused.
    pub held: u64,
    /// Bytes asked for.
    pub wanted: u64,
    /// The budget.
    pub limit: u64,
}

impl Budget {
    /// A budget of `limit` bytes.
    pub const fn new(limit: u64) -> Budget {
        Budget {
            limit,
            held: AtomicU64::new(0),
        }
    }

    /// A budget that never refuses (a client reading its replies).
    pub const fn unlimited() -> Budget {
        Budget::new(u64::MAX)
    }

    /// Bytes held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn take(&self, wanted: u64) -> Result<(), Exhausted> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(wanted)
                    .filter(|&total| total <= self.limit)
            })
            .map(|_| ())
            .map_err(|held| Exhausted {
                held,
                wanted,
                limit: self.limit,
            })
    }

    fn give(&self, bytes: u64) {
        self.held.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Takes `bytes` for as long as the returned [`Charge`] lives: memory
    /// a request holds after it has arrived (the message while it is
    /// decoded and run, the structures decoding builds).
    pub fn charge(self: &Arc<Self>, bytes: u64) -> Result<Charge, Exhausted> {
        self.take(bytes)?;
        Ok(Charge {
            budget: self.clone(),
            bytes,
        })
    }
}

/// Bytes taken from a [`Budget`] and given back when dropped.
#[derive(Debug)]
pub struct Charge {
    budget: Arc<Budget>,
    bytes: u64,
}

impl Charge {
    /// Takes `more` bytes into this charge.
    pub fn grow(&mut self, more: u64) -> Result<(), Exhausted> {
        self.budget.take(more)?;
        self.bytes += more;
        Ok(())
    }

    /// Makes this charge `bytes`: takes what more it needs, or gives back
    /// what it no longer does.
    pub fn set(&mut self, bytes: u64) -> Result<(), Exhausted> {
        if bytes > self.bytes {
            self.grow(bytes - self.bytes)
        } else {
            self.budget.give(self.bytes - bytes);
            self.bytes = bytes;
            Ok(())
        }
    }

    /// Bytes held by this charge.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.give(self.bytes);
    }
}

/// One message being gathered: at most `len` bytes, held first as the
/// pieces that arrived, then (from `1 / SWITCH` of the message on) in its
/// own buffer;
/// everything held is taken from a [`Budget`] and given back on
/// [`Gather::finish`] or drop.
#[derive(Debug)]
pub struct Gather<'a> {
    budget: &'a Budget,
    /// Bytes taken from the budget.
    taken: u64,
    /// The offset of the message to align, if any.
    aligned: Option<usize>,
    /// The most bytes the message may have.
    len: usize,
    /// Bytes of the message received.
    received: usize,
    /// The pieces received, until the buffer exists.
    pieces: Vec<Bytes>,
    /// Small pieces received after the last of `pieces`, copied.
    staging: Vec<u8>,
    /// The buffer and the padding before the message in it.
    buf: Option<(Vec<u8>, usize)>,
}

impl<'a> Gather<'a> {
    /// Starts gathering a message of at most `len` bytes (already checked
    /// against the size limit), to place message offset `aligned` at an
    /// [`ALIGN`]-byte boundary. Nothing is allocated or taken yet.
    pub fn new(budget: &'a Budget, len: usize, aligned: Option<usize>) -> Gather<'a> {
        Gather {
            budget,
            taken: 0,
            aligned,
            len,
            received: 0,
            pieces: Vec::new(),
            staging: Vec::new(),
            buf: None,
        }
    }

    /// Bytes of the message gathered so far.
    pub fn received(&self) -> usize {
        self.received
    }

    /// The most bytes the message may have.
    pub fn expected(&self) -> usize {
        self.len
    }

    /// Sets the offset to align, if none was given and the buffer does not
    /// exist yet (it is often known only once the first bytes are in).
    pub fn align(&mut self, offset: usize) {
        if self.aligned.is_none() && self.buf.is_none() {
            self.aligned = Some(offset);
        }
    }

    /// Appends `data` (kept without a copy while less than `1 / SWITCH` of
    /// the message is in). Bytes past the message's length are the caller's to
    /// refuse: only `min(data.len(), room)` are taken, and that count is
    /// returned.
    pub fn push(&mut self, mut data: Bytes) -> Result<usize, Exhausted> {
        let take = data.len().min(self.len - self.received);
        data.truncate(take);
        if take == 0 {
            return Ok(0);
        }
        match &mut self.buf {
            Some((buf, _)) => buf.extend_from_slice(&data),
            None if (self.received + take) * SWITCH < self.len => {
                if take < COPY_BELOW {
                    let need = self.staging.len() + take;
                    if need > self.staging.capacity() {
                        let capacity = need.next_power_of_two();
                        let more = capacity - self.staging.capacity();
                        self.budget.take(more as u64)?;
                        self.taken += more as u64;
                        self.staging.reserve_exact(capacity - self.staging.len());
                    }
                    self.staging.extend_from_slice(&data);
                } else {
                    self.budget.take(take as u64)?;
                    self.taken += take as u64;
                    self.flush();
                    self.pieces.push(data);
                }
            }
            None => {
                self.allocate()?;
                if let Some((buf, _)) = &mut self.buf {
                    buf.extend_from_slice(&data);
                }
            }
        }
        self.received += take;
        Ok(take)
    }

    /// Whether all `len` bytes are in.
    pub fn is_complete(&self) -> bool {
        self.received == self.len
    }

    /// Moves the staged small pieces behind the others.
    fn flush(&mut self) {
        if !self.staging.is_empty() {
            self.pieces
                .push(Bytes::from(std::mem::take(&mut self.staging)));
        }
    }

    /// The message gathered so far, giving its budget back.
    pub fn finish(mut self) -> Bytes {
        self.flush();
        match self.buf.take() {
            Some((buf, pad)) => Bytes::from(buf).slice(pad..),
            None => match self.pieces.as_slice() {
                [] => Bytes::new(),
                [one] => one.clone(),
                pieces => Bytes::from(pieces.concat()),
            },
        }
    }

    /// Allocates the message's buffer (taking from the budget what the
    /// pieces do not already hold), copies the pieces into it and gives
    /// theirs back. The alignment padding (under [`ALIGN`] bytes) is not
    /// charged, so that a message of the budget's whole size fits an idle
    /// server.
    fn allocate(&mut self) -> Result<(), Exhausted> {
        let size = self.len + ALIGN;
        let charged = self.len as u64;
        self.budget.take(charged.saturating_sub(self.taken))?;
        let mut buf = Vec::with_capacity(size);
        let pad = match self.aligned {
            Some(offset) => {
                let at = (buf.as_ptr() as usize).wrapping_add(offset);
                (ALIGN - at % ALIGN) % ALIGN
            }
            None => 0,
        };
        buf.resize(pad, 0);
        for piece in self.pieces.drain(..) {
            buf.extend_from_slice(&piece);
        }
        buf.extend_from_slice(&self.staging);
        self.staging = Vec::new();
        if self.taken > charged {
            self.budget.give(self.taken - charged);
        }
        self.taken = self.taken.max(charged);
        self.buf = Some((buf, pad));
        Ok(())
    }
}

impl Drop for Gather<'_> {
    fn drop(&mut self) {
        self.budget.give(self.taken);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(message: &[u8], size: usize) -> Vec<Bytes> {
        message.chunks(size).map(Bytes::copy_from_slice).collect()
    }

    #[test]
    fn memory_follows_the_bytes_received() {
        let budget = Budget::unlimited();
        let len = 99 << 20;
        let mut g = Gather::new(&budget, len, None);
        assert_eq!(budget.held(), 0);
        g.push(Bytes::from(vec![1; 1000])).unwrap();
        // Copied into the staging buffer, charged at its capacity.
        assert_eq!(budget.held(), 1024);
        let chunk = Bytes::from(vec![3u8; 1 << 20]);
        let mut sent = 1000;
        while sent < len {
            let n = g.push(chunk.clone()).unwrap();
            sent += n;
            // At most SWITCH times what arrived (the buffer is the
            // message's size, allocated once 1 / SWITCH of it is in), plus
            // the alignment slack.
            assert!(
                budget.held() <= (SWITCH * sent + ALIGN) as u64,
                "{} for {sent}",
                budget.held()
            );
        }
        assert!(g.is_complete());
        drop(g);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn the_aligned_offset_is_aligned_for_any_pieces() {
        let budget = Budget::unlimited();
        let len = 3 << 20;
        let message: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        for offset in [0, 1, 13, 63, 64, 1000] {
            for piece in [4093usize, 65536, 1 << 20, len] {
                let mut g = Gather::new(&budget, len, Some(offset));
                for part in pieces(&message, piece) {
                    let n = part.len();
                    assert_eq!(g.push(part).unwrap(), n);
                }
                assert!(g.is_complete());
                let got = g.finish();
                assert_eq!(&got[..], &message[..], "offset {offset}, piece {piece}");
                assert_eq!((got.as_ptr() as usize + offset) % ALIGN, 0);
            }
        }
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn an_offset_set_late_is_aligned_too() {
        let budget = Budget::unlimited();
        let mut g = Gather::new(&budget, 200_000, None);
        g.push(Bytes::from(vec![9; 100])).unwrap();
        g.align(37);
        g.push(Bytes::from(vec![8; 199_900])).unwrap();
        let got = g.finish();
        assert_eq!((got.as_ptr() as usize + 37) % ALIGN, 0);
        assert_eq!(&got[..100], &[9; 100]);
        assert_eq!(got.len(), 200_000);
    }

    #[test]
    fn the_budget_refuses_and_is_given_back() {
        let budget = Budget::new(300_000);
        let mut a = Gather::new(&budget, 4 << 20, None);
        a.push(Bytes::from(vec![0; 200_000])).unwrap();
        assert_eq!(budget.held(), 200_000);
        let mut b = Gather::new(&budget, 4 << 20, None);
        let e = b.push(Bytes::from(vec![0; 200_000])).unwrap_err();
        assert_eq!(
            e,
            Exhausted {
                held: 200_000,
                wanted: 200_000,
                limit: 300_000
            }
        );
        assert!(e.to_string().ends_with("retry later"), "{e}");
        drop(a);
        b.push(Bytes::from(vec![0; 200_000])).unwrap();
        // An eighth of the message: the rest of the buffer of 4 MiB does
        // not fit.
        let e = b.push(Bytes::from(vec![0; 400_000])).unwrap_err();
        assert_eq!(e.wanted, (4 << 20) - 200_000);
        drop(b);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_message_of_the_whole_budget_fits_an_idle_server() {
        let budget = Budget::new(1 << 20);
        let mut g = Gather::new(&budget, 1 << 20, Some(5));
        for _ in 0..16 {
            g.push(Bytes::from(vec![1u8; 64 << 10])).unwrap();
        }
        assert!(g.is_complete());
        assert_eq!(budget.held(), 1 << 20);
        assert_eq!(g.finish().len(), 1 << 20);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn a_charge_grows_within_the_budget_and_is_given_back() {
        let budget = Arc::new(Budget::new(1000));
        let mut charge = budget.charge(600).unwrap();
        charge.grow(300).unwrap();
        assert_eq!(charge.bytes(), 900);
        let e = charge.grow(200).unwrap_err();
        assert_eq!((e.held, e.wanted, e.limit), (900, 200, 1000));
        assert!(budget.charge(101).is_err());
        charge.set(100).unwrap();
        assert_eq!(budget.held(), 100);
        charge.set(1000).unwrap();
        drop(charge);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn small_pieces_are_copied_and_charged_at_their_capacity() {
        let budget = Budget::unlimited();
        let mut g = Gather::new(&budget, 8 << 20, None);
        // One useful byte in each 4 KiB receive buffer: kept as slices,
        // each would hold its whole buffer for one charged byte.
        let mut kept = Vec::new();
        for i in 0..1000u32 {
            let buffer = Bytes::from(vec![(i % 251) as u8; 4096]);
            kept.push(buffer.as_ptr());
            g.push(buffer.slice(..1)).unwrap();
        }
        assert_eq!(budget.held(), 1024, "the staging buffer's capacity");
        g.push(Bytes::from(vec![7u8; COPY_BELOW])).unwrap();
        assert_eq!(budget.held(), 1024 + COPY_BELOW as u64);
        g.push(Bytes::from_static(&[9, 9])).unwrap();
        drop(g);
        assert_eq!(budget.held(), 0);
        let mut g = Gather::new(&budget, 3000, None);
        for i in 0..3000u32 {
            g.push(Bytes::from(vec![(i % 251) as u8])).unwrap();
        }
        let message = g.finish();
        assert!(
            message
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 251) as u8)
        );
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn bytes_past_the_length_are_not_taken() {
        let budget = Budget::unlimited();
        let mut g = Gather::new(&budget, 10, None);
        assert_eq!(g.push(Bytes::from_static(&[1; 6])).unwrap(), 6);
        assert_eq!(g.push(Bytes::from_static(&[2; 6])).unwrap(), 4);
        assert!(g.is_complete());
        assert_eq!(g.push(Bytes::from_static(&[3])).unwrap(), 0);
        assert_eq!(&g.finish()[..], &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
        let empty = Gather::new(&budget, 0, Some(0));
        assert!(empty.is_complete());
        assert!(empty.finish().is_empty());
        assert_eq!(budget.held(), 0);
    }
}
