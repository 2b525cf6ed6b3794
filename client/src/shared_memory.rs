//! System shared memory (Triton's `system_shared_memory` extension): tensor
//! bytes that a client and a server on the same host exchange through a
//! POSIX shared-memory object instead of the connection.
//!
//! Create a [`SharedMemoryRegion`], register it with the server
//! ([`crate::Client::register_region`]), place inputs in it and have
//! outputs written to it ([`crate::InferBuilder::input_in_region`],
//! [`crate::InferBuilder::output_in_region`]): the request carries the
//! region's name, an offset and a size instead of the bytes, so the send
//! cap counts only what travels. Outputs read back as tensors that view the
//! region in place.
//!
//! ```no_run
//! # async fn demo() -> Result<(), serving_client::Error> {
//! use serving_client::shared_memory::SharedMemoryRegion;
//! use serving_client::{Client, DataType, Tensor};
//!
//! let client = Client::builder().endpoint("grpc://127.0.0.1:8001").build()?;
//! let input = SharedMemoryRegion::create("/my-input", 64 << 20)?;
//! let output = SharedMemoryRegion::create("/my-output", 64 << 20)?;
//! input.write(0, &vec![7u8; 64 << 20])?;
//! client.register_region(&input).await?;
//! client.register_region(&output).await?;
//! let response = client
//!     .infer("identity_u8")
//!     .input_in_region("x", DataType::Uint8, &[64 << 20], &input, 0)?
//!     .output_in_region("y", &output, 0, 64 << 20)?
//!     .send()
//!     .await?;
//! let y = response.tensor("y").unwrap();
//! assert_eq!(y.raw().unwrap()[0], 7);
//! client.unregister_system_shared_memory(None).await?;
//! # Ok(())
//! # }
//! ```
//!
//! Unix only. The object is created by [`SharedMemoryRegion::create`] and
//! removed from the namespace when the last clone of the region (and of the
//! tensors viewing it) is dropped.
//!
//! # Views never change: what the client enforces
//!
//! A view of a region ([`SharedMemoryRegion::bytes`],
//! [`SharedMemoryRegion::tensor`], the tensor of an output written to a
//! region) is a [`Bytes`] that reads the mapping in place, and a `Bytes`
//! promises that its bytes never change while it lives. The region keeps
//! that promise by bookkeeping, per byte range, who uses its bytes:
//!
//! - [`SharedMemoryRegion::write`] refuses (an [`Error::SharedMemory`])
//!   bytes that a live view covers, so `region.write(0,
//!   &region.bytes(4, 16)?)` is an error, not a write under a view; a write
//!   next to a view (`region.write(64, &region.bytes(4, 16)?)`) is fine.
//! - A request that has outputs written to a region claims those bytes
//!   while it is in flight (retries and all): sending it is refused while a
//!   view of them is alive (an earlier response's output, typically: drop
//!   it, or place the next output elsewhere), and views of them are refused
//!   until it returns. Its own outputs are the views it returns.
//! - Views of bytes being written are refused.
//!
//! Inputs placed in a region hold no view: the request's tensor for such an
//! input is a stand-in of its type and shape (zeros), and the server reads
//! the region when the request is sent, so an input region may be rewritten
//! between sends of the same request.
//!
//! # What the client cannot enforce: the cross-process contract
//!
//! Another process can write the object, and the client cannot stop it.
//! Views are sound only under this contract, which the reference server
//! keeps:
//!
//! - The server writes a region only at the placements of a request's
//!   outputs, while that request runs, and only reads input placements.
//! - No other process writes the object. [`SharedMemoryRegion::create`]
//!   makes it exclusively, readable and writable by its user only
//!   (`0600`); any process of that user can still open it.
//! - A call that was cancelled or timed out returns (and releases its
//!   claim) while the server may still be running it and write its output
//!   placements later: do not view those bytes until a later request placing
//!   outputs there has completed.
//! - Placements made by hand (an [`crate::InferRequest`] with shared-memory
//!   parameters sent with [`crate::Client::infer_request`], a region
//!   registered by key with [`crate::Client::register_system_shared_memory`])
//!   are outside the region's bookkeeping.
//!
//! The server's side of it: a server reads and writes only what a request
//! places, checks every placement against the region and the region against
//! the object's size before each use, and cannot protect itself from a
//! client that shrinks the object under a running request (the client never
//! resizes a region).

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serving_proto::{DataType, Tensor};

use crate::Error;

/// A POSIX shared-memory object this process created, mapped read-write.
/// Cheap to clone: clones share the mapping.
#[derive(Clone)]
pub struct SharedMemoryRegion {
    inner: Arc<Mapping>,
}

struct Mapping {
    key: String,
    map: memmap2::MmapRaw,
    /// Who uses which bytes: live views, writes, requests in flight.
    claims: Mutex<Claims>,
}

/// The live claims on a mapping's bytes, by id.
#[derive(Default)]
struct Claims {
    next: u64,
    live: BTreeMap<u64, (Range<usize>, Use)>,
}

/// What a claim does with its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Use {
    /// A view reads them in place: they must not change.
    View,
    /// [`SharedMemoryRegion::write`] copies into them.
    Write,
    /// The server writes them: an output placement of the request in flight
    /// of this id.
    Output(u64),
}

impl Use {
    /// Why `self` keeps a new claim off bytes it holds.
    fn why(self) -> &'static str {
        match self {
            Use::View => {
                "a live view holds them (a tensor or Bytes from this region: an earlier output, bytes(), tensor()); drop it first"
            }
            Use::Write => "another write is copying into them",
            Use::Output(_) => "a request in flight has the server write its outputs there",
        }
    }

    /// Whether a claim `new` may share bytes with `self` (views of a
    /// call's own outputs are admitted by [`Mapping::claim`]'s `within`).
    fn admits(self, new: Use) -> bool {
        match (self, new) {
            (Use::View, Use::View) => true,
            // Two outputs of one request placed over the same bytes.
            (Use::Output(a), Use::Output(b)) => a == b,
            _ => false,
        }
    }
}

/// A claim on a mapping's bytes, released when dropped.
struct Claim {
    mapping: Arc<Mapping>,
    id: u64,
    range: Range<usize>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.mapping.claims().live.remove(&self.id);
    }
}

impl Mapping {
    fn claims(&self) -> std::sync::MutexGuard<'_, Claims> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims `range` for `what`, unless a live claim on bytes of it does
    /// not admit that; `within`: the id of the call whose output claims
    /// admit it (an output read as its call returns).
    fn claim(
        self: &Arc<Self>,
        range: Range<usize>,
        what: Use,
        within: Option<u64>,
    ) -> Result<Claim, Error> {
        let mut claims = self.claims();
        let overlaps = |r: &Range<usize>| r.start < range.end && range.start < r.end;
        if let Some((held, used)) = claims.live.values().find(|(held, used)| {
            overlaps(held)
                && !(used.admits(what) || within.is_some_and(|c| *used == Use::Output(c)))
        }) {
            let doing = match what {
                Use::View => "view",
                Use::Write => "write",
                Use::Output(_) => "have the server write an output to",
            };
            return Err(Error::SharedMemory {
                region: self.key.clone(),
                message: format!(
                    "cannot {doing} bytes {}..{}: bytes {}..{} are in use, {}",
                    range.start,
                    range.end,
                    held.start,
                    held.end,
                    used.why()
                ),
                source: None,
            });
        }
        let id = claims.next;
        claims.next += 1;
        claims.live.insert(id, (range.clone(), what));
        drop(claims);
        Ok(Claim {
            mapping: self.clone(),
            id,
            range,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let _ = rustix::shm::unlink(self.key.as_str());
    }
}

impl std::fmt::Debug for SharedMemoryRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryRegion")
            .field("key", &self.inner.key)
            .field("len", &self.len())
            .finish()
    }
}

fn failed(region: &str, what: String, e: std::io::Error) -> Error {
    Error::SharedMemory {
        region: region.to_owned(),
        message: format!("{what}: {e}"),
        source: Some(Box::new(e)),
    }
}

/// A view of part of a region, the owner of a tensor's bytes: its claim
/// keeps writes off them while it lives.
struct View(Claim);

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        let Claim { mapping, range, .. } = &self.0;
        // SAFETY: the range was checked against the mapping, which the
        // claim keeps alive as long as this view. The claim keeps this
        // process from changing the bytes while it lives (`write` and
        // output placements are refused over it), so they do not change
        // under the slice; other processes are bound by the module's
        // cross-process contract.
        unsafe { std::slice::from_raw_parts(mapping.map.as_ptr().add(range.start), range.len()) }
    }
}

impl SharedMemoryRegion {
    /// Creates the object `key` (a name as `shm_open` takes it, such as
    /// `/serving-input-0`) of `byte_size` bytes, zeroed, and maps it. An
    /// object of that name must not exist yet.
    pub fn create(key: &str, byte_size: usize) -> Result<SharedMemoryRegion, Error> {
        use rustix::fs::Mode;
        use rustix::shm::OFlags;
        if byte_size == 0 {
            return Err(Error::SharedMemory {
                region: key.to_owned(),
                message: "a region holds at least one byte".into(),
                source: None,
            });
        }
        let fd = rustix::shm::open(
            key,
            OFlags::CREATE | OFlags::EXCL | OFlags::RDWR,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| {
            failed(
                key,
                "cannot create the shared memory object".into(),
                e.into(),
            )
        })?;
        let file = std::fs::File::from(fd);
        // From here on the object is removed again if anything fails.
        let unlink = |e: Error| {
            let _ = rustix::shm::unlink(key);
            e
        };
        file.set_len(byte_size as u64).map_err(|e| {
            unlink(failed(
                key,
                format!("cannot size the object to {byte_size} bytes"),
                e,
            ))
        })?;
        let map = memmap2::MmapOptions::new()
            .len(byte_size)
            .map_raw(&file)
            .map_err(|e| unlink(failed(key, "cannot map the object".into(), e)))?;
        Ok(SharedMemoryRegion {
            inner: Arc::new(Mapping {
                key: key.to_owned(),
                map,
                claims: Mutex::default(),
            }),
        })
    }

    /// The object's name, what the server opens.
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The name the region is registered under: its key without the
    /// leading `/`.
    pub fn name(&self) -> &str {
        self.inner.key.strip_prefix('/').unwrap_or(&self.inner.key)
    }

    /// The region's size in bytes.
    pub fn len(&self) -> usize {
        self.inner.map.len()
    }

    /// Whether the region holds no bytes (never: regions hold at least one).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `offset..offset + len`, if it lies within the region.
    pub(crate) fn range(&self, offset: usize, len: usize) -> Result<Range<usize>, Error> {
        match offset.checked_add(len) {
            Some(end) if end <= self.len() => Ok(offset..end),
            _ => Err(Error::SharedMemory {
                region: self.inner.key.clone(),
                message: format!(
                    "{len} bytes at offset {offset} run past the end of the region, which holds {} bytes",
                    self.len()
                ),
                source: None,
            }),
        }
    }

    /// Copies `bytes` into the region at `offset`.
    ///
    /// Refused with an [`Error::SharedMemory`] while any of those bytes is
    /// viewed (a live tensor or `Bytes` of this region: an earlier output,
    /// [`SharedMemoryRegion::bytes`], [`SharedMemoryRegion::tensor`]),
    /// written by another write, or placed as an output of a request in
    /// flight: a view's bytes never change (see the [module](self)). So
    /// `region.write(0, &region.bytes(4, 16)?)` is an error, and
    /// `region.write(64, &region.bytes(4, 16)?)` copies.
    pub fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), Error> {
        let range = self.range(offset, bytes.len())?;
        let _writing = self.inner.claim(range.clone(), Use::Write, None)?;
        // SAFETY: the range lies within the mapping, which is writable and
        // lives as long as `self`. The write claim guarantees that no view
        // (the only references into the mapping this crate hands out)
        // covers these bytes and that no other write or output placement
        // of this process uses them until it is dropped. `bytes` is either
        // outside the mapping or a view, which then lies elsewhere in it;
        // `copy` allows overlap all the same.
        unsafe {
            std::ptr::copy(
                bytes.as_ptr(),
                self.inner.map.as_mut_ptr().add(range.start),
                bytes.len(),
            );
        }
        Ok(())
    }

    /// Writes a tensor's bytes (little-endian elements; BYTES elements each
    /// after a 4-byte length, as the protocol's raw form) at `offset`, and
    /// returns how many bytes it wrote.
    pub fn write_tensor(&self, offset: usize, tensor: &Tensor) -> Result<usize, Error> {
        let raw = serving_proto::oip::raw_contents(tensor);
        self.write(offset, &raw)?;
        Ok(raw.len())
    }

    /// The bytes at `offset..offset + len`, viewed in place (no copy).
    /// While the view (or a clone or slice of it) lives, writes to those
    /// bytes are refused; a view of bytes being written, or placed as an
    /// output of a request in flight, is refused (an
    /// [`Error::SharedMemory`]).
    pub fn bytes(&self, offset: usize, len: usize) -> Result<Bytes, Error> {
        self.view(offset, len, None)
    }

    /// A view, admitted over the output claims of call `within`.
    fn view(&self, offset: usize, len: usize, within: Option<u64>) -> Result<Bytes, Error> {
        let range = self.range(offset, len)?;
        let claim = self.inner.claim(range, Use::View, within)?;
        Ok(Bytes::from_owner(View(claim)))
    }

    /// A tensor of `dtype` and `shape` whose bytes are the region's at
    /// `offset`, viewed in place (a view as [`SharedMemoryRegion::bytes`]
    /// makes).
    pub fn tensor(&self, dtype: DataType, shape: &[i64], offset: usize) -> Result<Tensor, Error> {
        let len = fixed_size(dtype, shape)?;
        Ok(Tensor::from_raw(
            dtype,
            shape.to_vec(),
            self.bytes(offset, len)?,
        )?)
    }

    /// The stand-in tensor of an input placed at `offset`: the type and
    /// shape of the data there, zeros for its bytes (the server reads the
    /// region, not the tensor), after checking that it fits.
    pub(crate) fn placed_input(
        &self,
        dtype: DataType,
        shape: &[i64],
        offset: usize,
    ) -> Result<Tensor, Error> {
        let len = fixed_size(dtype, shape)?;
        self.range(offset, len)?;
        // Zeroed memory is mapped lazily: a stand-in of 64 MiB costs no
        // copy and no resident page.
        Ok(Tensor::from_raw(
            dtype,
            shape.to_vec(),
            Bytes::from(vec![0u8; len]),
        )?)
    }
}

/// The size of a tensor of `dtype` and `shape` placed in shared memory.
fn fixed_size(dtype: DataType, shape: &[i64]) -> Result<usize, Error> {
    serving_proto::tensor::byte_size(dtype, shape).ok_or_else(|| {
        Error::Request(format!(
            "a {dtype:?} tensor of shape {shape:?} has no fixed size to place in shared memory"
        ))
    })
}

/// A request whose outputs are written to regions, while it is in flight:
/// the claims on its output placements (released when dropped, cancelled
/// or not) and how its outputs are read back.
pub(crate) struct OutputsInFlight {
    _claims: Vec<Claim>,
    pub(crate) read: crate::transport::OutputRegions,
}

/// Claims the output placements of `request` that lie in `regions` for
/// one call, refused while a view or another call holds those bytes.
pub(crate) fn outputs_in_flight(
    request: &crate::InferRequest,
    regions: Arc<BTreeMap<String, SharedMemoryRegion>>,
) -> Result<OutputsInFlight, Error> {
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let call = CALLS.fetch_add(1, Ordering::Relaxed);
    let mut claims = Vec::new();
    for output in &request.outputs {
        // Placements that do not parse, or lie in no region given, or
        // past one's end, are the server's to refuse, as before.
        let Ok(Some(placed)) = serving_proto::oip::shared_memory::placement(&output.parameters)
        else {
            continue;
        };
        let Some(region) = regions.get(&placed.region) else {
            continue;
        };
        let (Ok(offset), Ok(len)) = (
            usize::try_from(placed.offset),
            usize::try_from(placed.byte_size),
        ) else {
            continue;
        };
        let Ok(range) = region.range(offset, len) else {
            continue;
        };
        claims.push(region.inner.claim(range, Use::Output(call), None)?);
    }
    let read: crate::transport::OutputRegions =
        Arc::new(move |name, placement| read_output(&regions, name, placement, call));
    Ok(OutputsInFlight {
        _claims: claims,
        read,
    })
}

/// The data of output `name` that the server wrote where `placement` says,
/// in one of `regions` (the regions the request placed outputs in).
fn read_output(
    regions: &BTreeMap<String, SharedMemoryRegion>,
    name: &str,
    placement: &serving_proto::oip::shared_memory::Placement,
    call: u64,
) -> Result<Bytes, String> {
    use serving_proto::text::quote;
    let region = regions.get(&placement.region).ok_or_else(|| {
        format!(
            "the server wrote output '{}' to region '{}', which the request did not place it in",
            quote(name),
            quote(&placement.region)
        )
    })?;
    let too_far = || {
        format!(
            "the server placed output '{}' at offset {} in {} bytes, past the end of region '{}' ({} bytes)",
            quote(name),
            placement.offset,
            placement.byte_size,
            quote(&placement.region),
            region.len()
        )
    };
    let offset = usize::try_from(placement.offset).map_err(|_| too_far())?;
    let len = usize::try_from(placement.byte_size).map_err(|_| too_far())?;
    region.range(offset, len).map_err(|_| too_far())?;
    region
        .view(offset, len, Some(call))
        .map_err(|e| format!("output '{}': {e}", quote(name)))
}

impl crate::Client {
    /// Registers `region` with the server under its [name](SharedMemoryRegion::name),
    /// the whole object: [`crate::Client::register_system_shared_memory`].
    /// A region the server cannot open (another host, a server that does
    /// not allow shared memory) is an [`Error::SharedMemory`] with the
    /// server's reason.
    pub async fn register_region(&self, region: &SharedMemoryRegion) -> Result<(), Error> {
        self.register_system_shared_memory(region.name(), region.key(), 0, region.len() as u64)
            .await
    }

    /// Sends a complete request whose tensors are placed in `regions` (an
    /// [`crate::InferBuilder::request`] built with `input_in_region` and
    /// `output_in_region`, kept and sent again and again, as a load
    /// generator does): outputs come back as tensors viewing the region.
    /// An output written to a region not in `regions` is an
    /// [`Error::Protocol`].
    pub async fn infer_request_placed(
        &self,
        request: &crate::InferRequest,
        regions: &[SharedMemoryRegion],
    ) -> Result<crate::InferResponse, Error> {
        let regions: BTreeMap<String, SharedMemoryRegion> = regions
            .iter()
            .map(|r| (r.name().to_owned(), r.clone()))
            .collect();
        let outputs = outputs_in_flight(request, Arc::new(regions))?;
        self.infer_placed(request, Some(&outputs.read)).await
    }
}
