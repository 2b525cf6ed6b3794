//! The shared memory one Python worker and the server exchange tensors
//! through: a POSIX shared-memory object both map. The server creates it,
//! the worker maps it by name, then the name is removed: the memory lives as
//! long as the two mappings, and nothing is left behind when either dies.
//!
//! The one `unsafe` here maps the object (see its SAFETY note).

#![allow(unsafe_code)]

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

/// The directory of POSIX shared-memory objects on Linux.
const SHM_DIR: &str = "/dev/shm";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// One region.
pub(crate) struct Region {
    path: Option<PathBuf>,
    map: MmapMut,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("path", &self.path)
            .field("len", &self.map.len())
            .finish()
    }
}

impl Region {
    /// A new region of `size` bytes (zeroed: the object is sparse until
    /// written).
    pub(crate) fn create(size: usize) -> std::io::Result<Region> {
        let size = size.max(4096);
        let path = PathBuf::from(SHM_DIR).join(format!(
            "serving-python-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let made = file.set_len(size as u64).and_then(|()| {
            // SAFETY: the object was just created by this process, with
            // mode 0600, and is mapped whole; only its worker (which this
            // server starts) maps it besides. The worker writes outputs
            // only after the server has stopped reading the region for the
            // call, and the server reads them only after the worker
            // answered: the two never touch the same bytes at once.
            unsafe { MmapMut::map_mut(&file) }
        });
        match made {
            Ok(map) => Ok(Region {
                path: Some(path),
                map,
            }),
            Err(e) => {
                let _ = std::fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// The object's path, for the worker to map.
    pub(crate) fn path(&self) -> String {
        self.path
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    }

    /// Removes the object's name (the mappings stay).
    pub(crate) fn unlink(&mut self) {
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.map
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.map
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        self.unlink();
    }
}
