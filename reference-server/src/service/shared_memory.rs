//! Triton's `system_shared_memory` extension: clients register regions of
//! POSIX shared memory objects, then place inputs in them and have outputs
//! written to them instead of sending tensor bytes over the connection.
//!
//! Off unless the server starts with `--allow-shared-memory`. Regions are
//! only objects of the server's POSIX shared-memory namespace (`/dev/shm`):
//! a key is one name, opened without following links, and must be a
//! regular file. Every offset and size is checked against the region, and
//! the region against the object's current size before each use. A region
//! is held by the requests using it: unregistering it while they run is
//! safe, the mapping goes when the last of them ends. Inputs are read in
//! place (ONNX Runtime reads the mapping; no copy).
//!
//! What shared memory cannot protect against: a client that shrinks the
//! object of a region while a request is reading it makes the server fault
//! (as Triton does). Serve shared memory only to local clients you trust.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use serving_proto::oip::shared_memory::Placement;
use serving_proto::text::QUOTE_MAX;
use serving_proto::text::quote;

use crate::error::ServeError;

/// The text of every shared-memory call while shared memory is off.
pub(crate) const DISABLED: &str =
    "shared memory is disabled; start the server with --allow-shared-memory";

/// The most regions registered at once.
pub(crate) const MAX_REGIONS: usize = 1024;

/// The directory of the POSIX shared-memory namespace.
const SHM_DIR: &str = "/dev/shm";

/// One registered region: `byte_size` bytes at `offset` of object `key`.
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) offset: u64,
    pub(crate) byte_size: u64,
    file: std::fs::File,
    map: memmap2::MmapRaw,
}

/// The status of one region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Status {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) offset: u64,
    pub(crate) byte_size: u64,
}

/// The registered regions.
#[derive(Debug)]
pub(crate) struct SharedMemory {
    enabled: bool,
    regions: RwLock<BTreeMap<String, Arc<Region>>>,
}

/// A key's name in the namespace: one path segment after an optional
/// leading `/`, as `shm_open` takes it.
fn object_name(key: &str) -> Result<&str, ServeError> {
    let name = key.strip_prefix('/').unwrap_or(key);
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.len() > 255
        || name.contains(['/', '\0'])
    {
        return Err(ServeError::InvalidArgument(format!(
            "shared memory key '{}' is not the name of a POSIX shared memory object: one name, optionally after a '/', at most 255 bytes",
            quote(key)
        )));
    }
    Ok(name)
}

fn open(key: &str) -> Result<std::fs::File, ServeError> {
    use rustix::fs::{Mode, OFlags};
    let name = object_name(key)?;
    let path = std::path::Path::new(SHM_DIR).join(name);
    let failed = |e: std::io::Error| {
        ServeError::InvalidArgument(format!(
            "unable to open shared memory object '{}': {e}",
            quote(key)
        ))
    };
    let fd = rustix::fs::open(
        &path,
        OFlags::RDWR | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NOCTTY,
        Mode::empty(),
    )
    .map_err(|e| failed(e.into()))?;
    let file = std::fs::File::from(fd);
    let kind = file.metadata().map_err(failed)?.file_type();
    if !kind.is_file() || kind.is_fifo() || kind.is_socket() {
        return Err(ServeError::InvalidArgument(format!(
            "shared memory object '{}' is not a regular object",
            quote(key)
        )));
    }
    Ok(file)
}

impl SharedMemory {
    /// A registry, enabled or not (`--allow-shared-memory`).
    pub(crate) fn new(enabled: bool) -> SharedMemory {
        SharedMemory {
            enabled,
            regions: RwLock::new(BTreeMap::new()),
        }
    }

    /// Whether clients may use shared memory.
    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    fn check_enabled(&self) -> Result<(), ServeError> {
        if self.enabled {
            Ok(())
        } else {
            Err(ServeError::FailedPrecondition(DISABLED.into()))
        }
    }

    /// Registers region `name`: `byte_size` bytes at `offset` of object `key`.
    pub(crate) fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), ServeError> {
        self.check_enabled()?;
        if name.is_empty() || name.len() > QUOTE_MAX {
            return Err(ServeError::InvalidArgument(format!(
                "a shared memory region needs a name of 1 to {} bytes",
                QUOTE_MAX
            )));
        }
        if self.read().contains_key(name) {
            return Err(ServeError::AlreadyExists(format!(
                "shared memory region '{}' is already registered; unregister it first",
                quote(name)
            )));
        }
        let file = open(key)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        if offset.checked_add(byte_size).is_none_or(|end| end > size) {
            return Err(ServeError::InvalidArgument(format!(
                "shared memory region '{}' of {byte_size} bytes at offset {offset} runs past the end of object '{}', which holds {size} bytes",
                quote(name),
                quote(key)
            )));
        }
        if byte_size == 0 {
            return Err(ServeError::InvalidArgument(format!(
                "shared memory region '{}' has byte_size 0; a region holds at least one byte",
                quote(name)
            )));
        }
        let len = usize::try_from(byte_size).map_err(|_| {
            ServeError::InvalidArgument(format!(
                "shared memory region '{}' of {byte_size} bytes does not fit in this server's address space",
                quote(name)
            ))
        })?;
        let map = memmap2::MmapOptions::new()
            .offset(offset)
            .len(len)
            .map_raw(&file)
            .map_err(|e| {
                ServeError::InvalidArgument(format!(
                    "unable to map shared memory object '{}': {e}",
                    quote(key)
                ))
            })?;
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        if regions.len() >= MAX_REGIONS {
            return Err(ServeError::Unavailable(format!(
                "{MAX_REGIONS} shared memory regions are registered, the most this server holds; unregister some first"
            )));
        }
        if regions.contains_key(name) {
            return Err(ServeError::AlreadyExists(format!(
                "shared memory region '{}' is already registered; unregister it first",
                quote(name)
            )));
        }
        tracing::info!(region = %name, key = %key, offset, byte_size, "shared memory region registered");
        regions.insert(
            name.to_owned(),
            Arc::new(Region {
                name: name.to_owned(),
                key: key.to_owned(),
                offset,
                byte_size,
                file,
                map,
            }),
        );
        Ok(())
    }

    /// Unregisters region `name`, or every region for "". Requests using
    /// a region keep it until they end. Unregistering a name that is not
    /// registered succeeds, as in Triton.
    pub(crate) fn unregister(&self, name: &str) -> Result<(), ServeError> {
        self.check_enabled()?;
        let mut regions = self.regions.write().unwrap_or_else(|e| e.into_inner());
        if name.is_empty() {
            regions.clear();
        } else {
            regions.remove(name);
        }
        Ok(())
    }

    /// The status of region `name`, or of every region for "".
    pub(crate) fn status(&self, name: &str) -> Result<Vec<Status>, ServeError> {
        self.check_enabled()?;
        let regions = self.read();
        let status = |r: &Region| Status {
            name: r.name.clone(),
            key: r.key.clone(),
            offset: r.offset,
            byte_size: r.byte_size,
        };
        if name.is_empty() {
            return Ok(regions.values().map(|r| status(r)).collect());
        }
        regions
            .get(name)
            .map(|r| vec![status(r)])
            .ok_or_else(|| not_registered(name))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Arc<Region>>> {
        self.regions.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The region a placement names, and the byte range it places, checked.
    fn locate(&self, p: &Placement) -> Result<(Arc<Region>, std::ops::Range<usize>), String> {
        if !self.enabled {
            return Err(DISABLED.into());
        }
        let region = self
            .read()
            .get(&p.region)
            .cloned()
            .ok_or_else(|| not_registered(&p.region).to_string())?;
        let range = p.range(region.byte_size).map_err(|e| e.to_string())?;
        // The object may have been shrunk since it was registered.
        let size = region.file.metadata().map(|m| m.len()).unwrap_or(0);
        if region.offset + region.byte_size > size {
            return Err(format!(
                "shared memory object '{}' of region '{}' is now {size} bytes, smaller than the region; register it again",
                quote(&region.key),
                quote(&region.name)
            ));
        }
        Ok((region, range))
    }

    /// The bytes of an input placed in shared memory, read in place.
    pub(crate) fn input(&self, p: &Placement) -> Result<Bytes, String> {
        let (region, range) = self.locate(p)?;
        Ok(Bytes::from_owner(Slice { region, range }))
    }

    /// Where output `output` of `len` bytes goes: the first `len` bytes of
    /// placement `p`, checked to lie in a registered region and to hold
    /// them.
    pub(crate) fn output_slot(
        &self,
        output: &str,
        p: &Placement,
        len: usize,
    ) -> Result<OutputSlot, ServeError> {
        let (region, range) = self
            .locate(p)
            .map_err(|e| ServeError::InvalidArgument(format!("output '{}': {e}", quote(output))))?;
        if len > range.len() {
            return Err(ServeError::InvalidArgument(format!(
                "output '{}' is {len} bytes, more than the {} bytes of shared memory given for it (shared_memory_byte_size)",
                quote(output),
                range.len()
            )));
        }
        Ok(OutputSlot {
            region,
            range: range.start..range.start + len,
        })
    }
}

/// A checked place in a registered region for one output's bytes; it keeps
/// the region mapped while it lives (an unregistration meanwhile unmaps
/// nothing), so it can be written on another thread.
///
/// Not guarded against: a client that shrinks its shared-memory object
/// (`ftruncate`) after registering it makes a write past the new end fault
/// (SIGBUS), as with Triton's system shared memory. Regions are registered
/// only where the server allows it (`--allow-shared-memory`), by clients
/// that hold the routes' credentials and an object on this host.
pub(crate) struct OutputSlot {
    region: Arc<Region>,
    range: std::ops::Range<usize>,
}

impl OutputSlot {
    /// Copies `bytes`, exactly as many as the slot was made for, into it.
    pub(crate) fn write(&self, bytes: &[u8]) {
        assert_eq!(
            bytes.len(),
            self.range.len(),
            "an output slot is written with the size it was checked for"
        );
        // SAFETY: `range` lies inside the mapping (checked by `locate`
        // against the region's length, which is the mapping's), the
        // mapping is writable and lives as long as `region`, and `bytes`
        // is exactly `range` long. The source may itself lie in a mapped
        // region (an input read in place and passed through), even the
        // same bytes, so the copy allows overlap.
        unsafe {
            std::ptr::copy(
                bytes.as_ptr(),
                self.region.map.as_mut_ptr().add(self.range.start),
                bytes.len(),
            );
        }
    }
}

fn not_registered(name: &str) -> ServeError {
    ServeError::NotFound(format!(
        "shared memory region '{}' is not registered",
        quote(name)
    ))
}

/// Bytes of a region, holding the region.
struct Slice {
    region: Arc<Region>,
    range: std::ops::Range<usize>,
}

impl AsRef<[u8]> for Slice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: the range lies inside the mapping, which lives as long as
        // `self.region`. The memory is shared with the client, which may
        // change it while the request runs; the tensor then holds what the
        // client wrote, as with any shared-memory protocol.
        unsafe {
            std::slice::from_raw_parts(
                self.region.map.as_ptr().add(self.range.start),
                self.range.len(),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_single_names_of_the_namespace() {
        assert_eq!(object_name("/input").unwrap(), "input");
        assert_eq!(object_name("input").unwrap(), "input");
        for bad in ["", "/", "/..", "..", "/a/b", "//x", "a\0b", "/."] {
            assert!(object_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn disabled_says_how_to_enable() {
        let shm = SharedMemory::new(false);
        let e = shm.status("").unwrap_err();
        assert_eq!(e.to_string(), DISABLED);
        assert!(shm.register("r", "/k", 0, 8).is_err());
    }

    #[test]
    fn regions_read_and_write_in_place_and_overruns_are_refused() {
        let key = format!("/serving-test-{}", std::process::id());
        let path = std::path::Path::new(SHM_DIR).join(&key[1..]);
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let shm = SharedMemory::new(true);
        shm.register("r", &key, 1024, 1024).unwrap();
        assert!(matches!(
            shm.register("r", &key, 0, 8),
            Err(ServeError::AlreadyExists(_))
        ));
        assert!(shm.register("big", &key, 4000, 1024).is_err());
        let at = |offset, byte_size| Placement {
            region: "r".into(),
            offset,
            byte_size,
        };
        shm.output_slot("y", &at(8, 4), 4)
            .unwrap()
            .write(&[1, 2, 3, 4]);
        assert_eq!(&std::fs::read(&path).unwrap()[1032..1036], &[1, 2, 3, 4]);
        let held = shm.input(&at(8, 4)).unwrap();
        shm.unregister("r").unwrap();
        // Still readable: the request holds the region.
        assert_eq!(&held[..], &[1, 2, 3, 4]);
        assert!(shm.input(&at(8, 4)).is_err());
        shm.register("r", &key, 0, 16).unwrap();
        let e = shm.input(&at(8, 16)).unwrap_err();
        assert!(e.contains("runs past the end of region 'r'"), "{e}");
        let e = shm.output_slot("y", &at(0, 2), 4).err().unwrap();
        assert!(e.to_string().contains("more than the 2 bytes"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }
}
