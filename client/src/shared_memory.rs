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

#![allow(unsafe_code)]

use std::ops::Range;
use std::sync::Arc;

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

/// A view of part of a region, the owner of a tensor's bytes.
struct View {
    region: Arc<Mapping>,
    range: Range<usize>,
}

impl AsRef<[u8]> for View {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range was checked against the mapping, which lives
        // as long as this view. The bytes may change under the view if the
        // region is written again (as with any shared memory): read a
        // tensor before reusing its region.
        unsafe {
            std::slice::from_raw_parts(
                self.region.map.as_ptr().add(self.range.start),
                self.range.len(),
            )
        }
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
    pub fn write(&self, offset: usize, bytes: &[u8]) -> Result<(), Error> {
        let range = self.range(offset, bytes.len())?;
        // SAFETY: the range lies within the mapping; the mapping is
        // writable. Concurrent readers of the same bytes (a server reading
        // a request, a tensor viewing them) see the bytes change, as with
        // any shared memory; nothing here reads them.
        unsafe {
            std::ptr::copy_nonoverlapping(
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
    pub fn bytes(&self, offset: usize, len: usize) -> Result<Bytes, Error> {
        let range = self.range(offset, len)?;
        Ok(Bytes::from_owner(View {
            region: self.inner.clone(),
            range,
        }))
    }

    /// A tensor of `dtype` and `shape` whose bytes are the region's at
    /// `offset`, viewed in place.
    pub fn tensor(&self, dtype: DataType, shape: &[i64], offset: usize) -> Result<Tensor, Error> {
        let len = serving_proto::tensor::byte_size(dtype, shape).ok_or_else(|| {
            Error::Request(format!(
                "a {dtype:?} tensor of shape {shape:?} has no fixed size to place in shared memory"
            ))
        })?;
        Ok(Tensor::from_raw(
            dtype,
            shape.to_vec(),
            self.bytes(offset, len)?,
        )?)
    }
}

/// The data of output `name` that the server wrote where `placement` says,
/// in one of `regions` (the regions the request placed outputs in).
pub(crate) fn read_output(
    regions: &std::collections::BTreeMap<String, SharedMemoryRegion>,
    name: &str,
    placement: &serving_proto::oip::shared_memory::Placement,
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
    region.bytes(offset, len).map_err(|_| too_far())
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
        let regions: std::collections::BTreeMap<String, SharedMemoryRegion> = regions
            .iter()
            .map(|r| (r.name().to_owned(), r.clone()))
            .collect();
        let read: crate::transport::OutputRegions =
            std::sync::Arc::new(move |name, placement| read_output(&regions, name, placement));
        self.infer_placed(request, Some(&read)).await
    }
}
