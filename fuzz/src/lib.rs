//! What every fuzz target shares: the tensor invariant and an allocator that
//! records the largest single allocation, so that targets can assert no
//! decoder allocates from an untrusted length before checking it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use serving_proto::{Tensor, TensorData};

/// The system allocator, recording the largest request since [`reset`].
pub struct Recording;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Recording {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LARGEST.fetch_max(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LARGEST.fetch_max(new_size, Ordering::Relaxed);
        // SAFETY: the caller's contract is passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Recording = Recording;

/// Starts recording for one input.
pub fn reset() {
    LARGEST.store(0, Ordering::Relaxed);
}

/// The most any single allocation may take while decoding `input_len`
/// bytes: JSON trees cost tens of bytes per input byte (a `Value` is 32
/// bytes and vectors double), a decoded element at most 8 per digit.
pub fn bound(input_len: usize) -> usize {
    64 * input_len + (64 << 10)
}

/// Asserts that nothing allocated more than [`bound`] since [`reset`].
pub fn assert_bounded(input_len: usize, what: &str) {
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= bound(input_len),
        "{what}: one allocation of {largest} bytes for an input of {input_len} bytes"
    );
}

/// Asserts that nothing allocated more than [`bound`], or more than
/// `charged` (what the server charges to its budget for decoding the
/// input, from `serving_proto::decode_cost`) and 64 KiB, since [`reset`].
pub fn assert_charged(input_len: usize, charged: u64, what: &str) {
    let largest = LARGEST.load(Ordering::Relaxed);
    let allowed = bound(input_len).max(
        usize::try_from(charged)
            .unwrap_or(usize::MAX)
            .saturating_add(64 << 10),
    );
    assert!(
        largest <= allowed,
        "{what}: one allocation of {largest} bytes for an input of {input_len} bytes charged {charged}"
    );
}

/// A decoded tensor's data agrees with its dtype and shape: byte length
/// equals element count times item size.
pub fn check_tensor(t: &Tensor) {
    let count = serving_proto::tensor::element_count(t.shape())
        .unwrap_or_else(|| panic!("decoded shape {:?} has no element count", t.shape()));
    match t.data() {
        TensorData::Raw(raw) => {
            let item = t
                .dtype()
                .item_size()
                .expect("raw data only for fixed-size types");
            assert_eq!(raw.len(), count * item, "{:?} {:?}", t.dtype(), t.shape());
        }
        TensorData::Elements(e) => {
            assert!(
                t.dtype().item_size().is_none(),
                "elements only for STRING and BYTES"
            );
            assert_eq!(e.len(), count, "{:?} {:?}", t.dtype(), t.shape());
        }
    }
}
