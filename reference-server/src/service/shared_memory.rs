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
//! What a region costs the server: a mapping of exactly its bytes (from
//! the page below `offset` to the page holding its last byte), never the
//! whole object, and no descriptor: the object is closed once mapped, so
//! registered regions cannot run the process out of descriptors (and new
//! connections with it). The mapped bytes of all regions, counted until
//! their mapping goes, are capped (`--max-shared-memory-mb`), as is their
//! number ([`MAX_REGIONS`]), so that clients cannot take the address space.
//!
//! What shared memory cannot protect against: a client that shrinks the
//! object of a region while a request is reading it makes the server fault
//! (as Triton does). Serve shared memory only to local clients you trust.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
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

/// The most bytes mapped for regions at once unless the server is told
/// otherwise (`--max-shared-memory-mb`).
pub(crate) const DEFAULT_MAX_MAPPED: u64 = crate::server::DEFAULT_MAX_SHARED_MEMORY_MB << 20;

/// The directory of the POSIX shared-memory namespace.
const SHM_DIR: &str = "/dev/shm";

/// One registered region: `byte_size` bytes at `offset` of object `key`,
/// mapped (those bytes only; the object's descriptor is closed).
#[derive(Debug)]
pub(crate) struct Region {
    pub(crate) name: String,
    pub(crate) key: String,
    pub(crate) offset: u64,
    pub(crate) byte_size: u64,
    /// The object's path, and its device and inode when it was mapped: the
    /// size check before each use looks the object up by name.
    path: PathBuf,
    object: (u64, u64),
    map: memmap2::MmapRaw,
    /// The region's bytes counted against the cap; given back after the
    /// mapping goes (fields drop in order).
    _counted: Counted,
}

/// Bytes counted against the cap on mapped shared memory until dropped.
#[derive(Debug)]
struct Counted {
    mapped: Arc<AtomicU64>,
    bytes: u64,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.mapped.fetch_sub(self.bytes, Ordering::AcqRel);
    }
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
    /// Bytes of the mappings alive (registered, or unregistered and still
    /// held by requests), and the most there may be.
    mapped: Arc<AtomicU64>,
    max_mapped: u64,
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

/// Opens object `key` and reads its metadata once.
fn open(key: &str) -> Result<(std::fs::File, std::fs::Metadata, PathBuf), ServeError> {
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
    let metadata = file.metadata().map_err(failed)?;
    let kind = metadata.file_type();
    if !kind.is_file() || kind.is_fifo() || kind.is_socket() {
        return Err(ServeError::InvalidArgument(format!(
            "shared memory object '{}' is not a regular object",
            quote(key)
        )));
    }
    Ok((file, metadata, path))
}

impl SharedMemory {
    /// A registry, enabled or not (`--allow-shared-memory`).
    pub(crate) fn new(enabled: bool) -> SharedMemory {
        SharedMemory {
            enabled,
            regions: RwLock::new(BTreeMap::new()),
            mapped: Arc::new(AtomicU64::new(0)),
            max_mapped: DEFAULT_MAX_MAPPED,
        }
    }

    /// Caps the bytes mapped for all regions at once
    /// (`--max-shared-memory-mb`).
    pub(crate) fn set_max_mapped(&mut self, bytes: u64) {
        self.max_mapped = bytes;
    }

    /// Counts `byte_size` more bytes of region `name` against the cap, or
    /// says why it cannot.
    fn count(&self, name: &str, byte_size: u64) -> Result<Counted, ServeError> {
        let max = self.max_mapped;
        if byte_size > max {
            return Err(ServeError::InvalidArgument(format!(
                "shared memory region '{}' of {byte_size} bytes is larger than the {max} bytes this server maps for all regions (--max-shared-memory-mb)",
                quote(name)
            )));
        }
        self.mapped
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                now.checked_add(byte_size).filter(|&total| total <= max)
            })
            .map_err(|now| {
                ServeError::Unavailable(format!(
                    "shared memory region '{}' of {byte_size} bytes would bring the shared memory this server maps to {} bytes, over its limit of {max} bytes (--max-shared-memory-mb); {now} bytes are mapped now: unregister some first",
                    quote(name),
                    now.saturating_add(byte_size)
                ))
            })?;
        Ok(Counted {
            mapped: self.mapped.clone(),
            bytes: byte_size,
        })
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
        let (file, metadata, path) = open(key)?;
        let size = metadata.len();
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
        let counted = self.count(name, byte_size)?;
        // Only the region's bytes: memmap2 maps from the page below
        // `offset` (mmap takes page-aligned offsets) and points past the
        // in-page delta; the object is closed right after, which leaves
        // the mapping in place.
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
        drop(file);
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
                path,
                object: (metadata.dev(), metadata.ino()),
                map,
                _counted: counted,
            }),
        );
        Ok(())
    }

    /// [`SharedMemory::register`] on the blocking pool (opening and mapping
    /// a file is blocking work), for the front ends.
    pub(crate) async fn register_off_workers(
        state: std::sync::Arc<crate::service::State>,
        name: String,
        key: String,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), ServeError> {
        tokio::task::spawn_blocking(move || {
            state.shared_memory.register(&name, &key, offset, byte_size)
        })
        .await
        .map_err(|e| ServeError::Internal(format!("registering a shared memory region: {e}")))?
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
        // The object may have been shrunk since it was registered. The
        // server holds no descriptor of it, so it looks it up by name: while
        // the name is the object mapped, its size is checked; once the
        // object is unlinked or replaced it cannot be (nor can it in
        // Triton, which never checks), and the mapping is used as it is.
        if let Ok(m) = std::fs::symlink_metadata(&region.path)
            && (m.dev(), m.ino()) == region.object
            && region.offset + region.byte_size > m.len()
        {
            let size = m.len();
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

    #[test]
    fn mapped_bytes_are_capped_and_given_back_when_the_mapping_goes() {
        let key = format!("/serving-test-cap-{}", std::process::id());
        let path = std::path::Path::new(SHM_DIR).join(&key[1..]);
        std::fs::write(&path, vec![0u8; 1 << 16]).unwrap();
        let mut shm = SharedMemory::new(true);
        shm.set_max_mapped(8192);
        shm.register("a", &key, 100, 6000).unwrap();
        let e = shm.register("b", &key, 0, 4096).unwrap_err();
        assert!(matches!(e, ServeError::Unavailable(_)), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("10096 bytes, over its limit of 8192 bytes")
                && text.contains("6000 bytes are mapped now"),
            "{text}"
        );
        let e = shm.register("c", &key, 0, 8193).unwrap_err();
        assert!(matches!(e, ServeError::InvalidArgument(_)), "{e:?}");
        assert!(e.to_string().contains("larger than the 8192 bytes"), "{e}");
        // A request holding "a" keeps its bytes counted after it goes.
        let held = shm
            .input(&Placement {
                region: "a".into(),
                offset: 0,
                byte_size: 8,
            })
            .unwrap();
        shm.unregister("a").unwrap();
        assert!(shm.register("b", &key, 0, 4096).is_err());
        drop(held);
        shm.register("b", &key, 0, 4096).unwrap();
        shm.register("c", &key, 4096, 4096).unwrap();
        assert_eq!(shm.mapped.load(Ordering::Acquire), 8192);
        shm.unregister("").unwrap();
        assert_eq!(shm.mapped.load(Ordering::Acquire), 0);
        // A refusal counts nothing.
        assert!(
            shm.register("x", "/serving-test-never-created", 0, 8)
                .is_err()
        );
        assert_eq!(shm.mapped.load(Ordering::Acquire), 0);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_shrunk_object_is_refused_while_its_name_is_the_object() {
        let key = format!("/serving-test-shrink-{}", std::process::id());
        let path = std::path::Path::new(SHM_DIR).join(&key[1..]);
        std::fs::write(&path, vec![0u8; 8192]).unwrap();
        let shm = SharedMemory::new(true);
        shm.register("r", &key, 4000, 4000).unwrap();
        let at = Placement {
            region: "r".into(),
            offset: 0,
            byte_size: 8,
        };
        shm.input(&at).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(4096)
            .unwrap();
        let e = shm.input(&at).unwrap_err();
        assert!(
            e.contains("is now 4096 bytes, smaller than the region"),
            "{e}"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
