//! Hot reload: the repository is polled while serving. A new version
//! directory is loaded in the background and becomes the newest once ready;
//! a version directory that disappears is unloaded, and requests already
//! running on it finish there; a broken new version is reported and ignored
//! (and retried when its directory changes), never taking down what runs.
//!
//! Add versions atomically: write `models/add/.2/...`, then rename it to
//! `models/add/2`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use super::{RepositoryError, ServableDir, load_version, scan_servable};
use crate::engine::LoadOptions;
use crate::engine::registry::Registry;
use crate::runtime::Runtime;

/// What one poll changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// Versions loaded, as `servable/version`.
    pub loaded: Vec<String>,
    /// Versions unloaded.
    pub unloaded: Vec<String>,
    /// Versions that failed to load, with the reason.
    pub failed: Vec<String>,
}

/// Polls one repository.
#[derive(Debug)]
pub struct Watcher {
    repo: PathBuf,
    runtime: Arc<Runtime>,
    options: LoadOptions,
    /// Versions that failed, with their directory's modification time then.
    broken: BTreeMap<(String, u64), Option<SystemTime>>,
    /// Servables unloaded on request: not reloaded until asked to load.
    held: std::collections::BTreeSet<String>,
}

fn mtime(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Watcher {
    /// A watcher of `repo`.
    pub fn new(repo: PathBuf, runtime: Arc<Runtime>, options: LoadOptions) -> Watcher {
        Watcher {
            repo,
            runtime,
            options,
            broken: BTreeMap::new(),
            held: Default::default(),
        }
    }

    /// Unloads every version of `name` and keeps it unloaded until
    /// [`Watcher::load`]. Returns the versions unloaded.
    pub fn unload(&mut self, registry: &Registry, name: &str) -> Vec<u64> {
        self.held.insert(name.to_owned());
        let versions = registry.versions(name);
        for &v in &versions {
            registry.remove(name, v);
        }
        versions
    }

    /// Loads `name` from the repository now (all its versions), also after
    /// an unload. Returns the changes, or why the servable is unusable.
    pub fn load(&mut self, registry: &Registry, name: &str) -> Result<Changes, String> {
        self.held.remove(name);
        self.broken.retain(|(n, _), _| n != name);
        let changes = self.poll(registry);
        if registry.versions(name).is_empty() {
            let reason = changes
                .failed
                .iter()
                .find(|f| f.starts_with(name))
                .cloned()
                .unwrap_or_else(|| format!("no servable directory '{name}' in the repository"));
            return Err(reason);
        }
        Ok(changes)
    }

    /// Compares the repository with `registry` and applies the difference.
    /// Blocking (loads models).
    pub fn poll(&mut self, registry: &Registry) -> Changes {
        let mut changes = Changes::default();
        let mut on_disk: BTreeMap<String, Result<ServableDir, RepositoryError>> = BTreeMap::new();
        if let Ok(entries) = std::fs::read_dir(&self.repo) {
            for entry in entries.filter_map(Result::ok) {
                let path = entry.path();
                let name = entry.file_name().to_string_lossy().into_owned();
                if path.is_dir() && !name.starts_with('.') && !self.held.contains(&name) {
                    on_disk.insert(name, scan_servable(&path));
                }
            }
        }
        // Unload versions whose directory is gone.
        for (name, loaded) in registry.list() {
            if self.held.contains(&name) {
                continue;
            }
            let present: Vec<u64> = match on_disk.get(&name) {
                Some(Ok(dir)) => dir.versions.clone(),
                // An unreadable configuration keeps what runs.
                Some(Err(_)) => loaded.clone(),
                None => Vec::new(),
            };
            for v in loaded.into_iter().filter(|v| !present.contains(v)) {
                registry.remove(&name, v);
                tracing::info!(servable = %name, version = v, "version directory removed; unloaded after its running requests");
                changes.unloaded.push(format!("{name}/{v}"));
            }
        }
        // Load new versions.
        for (name, dir) in on_disk {
            let dir = match dir {
                Ok(dir) => dir,
                Err(e) => {
                    let key = (name.clone(), 0);
                    let stamp = mtime(&e.path);
                    if self.broken.get(&key) != Some(&stamp) {
                        tracing::error!(servable = %name, error = %e, "servable directory is invalid; ignored until it changes");
                        changes.failed.push(format!("{name}: {e}"));
                        self.broken.insert(key, stamp);
                    }
                    continue;
                }
            };
            self.broken.remove(&(name.clone(), 0));
            let loaded = registry.versions(&name);
            for &v in dir.versions.iter().filter(|v| !loaded.contains(v)) {
                let key = (name.clone(), v);
                let stamp = mtime(&dir.dir.join(v.to_string()));
                if self.broken.get(&key) == Some(&stamp) {
                    continue;
                }
                match load_version(&self.runtime, &dir, v, &self.options) {
                    Ok(sv) => {
                        registry.insert(sv);
                        self.broken.remove(&key);
                        tracing::info!(servable = %name, version = v, "new version loaded and serving");
                        changes.loaded.push(format!("{name}/{v}"));
                    }
                    Err(e) => {
                        tracing::error!(servable = %name, version = v, error = %e, "new version failed to load; ignored until its directory changes");
                        changes.failed.push(format!("{name}/{v}: {e}"));
                        self.broken.insert(key, stamp);
                    }
                }
            }
        }
        changes
    }
}
