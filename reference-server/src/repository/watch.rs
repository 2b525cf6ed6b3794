//! Hot reload: the repository is polled while serving. A new version
//! directory is loaded in the background and becomes the newest once ready;
//! a version directory that disappears is unloaded, and requests already
//! running on it finish there; a broken new version is reported and ignored
//! until something in it changes, never taking down what runs.
//!
//! Versions copied in place (`cp`, `kubectl cp`, `rsync --inplace`) are
//! written in steps, so a poll can see half a model file. Each version
//! directory not yet loaded is tracked by a [`Fingerprint`]: the path, size
//! and modification time of everything in it (and of `servable.toml`). A
//! version is loaded only when two polls in a row see the same fingerprint,
//! and one that failed is retried once its fingerprint changes, so a
//! version is served within two polls of its last write, in whatever order
//! its files were written. Loaded versions are never reloaded by a poll.
//!
//! Writing a version under a hidden name and renaming it into place
//! (`models/add/.2/...` to `models/add/2`) still works, and is the fastest.
//!
//! Which versions serve is the model's: every version directory for ours,
//! the version policy's for a Triton model (by default the latest). A
//! version the policy no longer names is unloaded only once the one that
//! replaces it serves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::{Options, RepositoryError, ServableDir, Source, load_version};
use crate::engine::Backends;
use crate::engine::registry::Registry;

/// What a directory holds, as far as a poll can tell without reading the
/// files: every entry's relative path, size and modification time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, u64, Option<SystemTime>)>);

/// The most entries a fingerprint lists (a version directory holds a few
/// files; a larger tree is cut off there, and still compared).
const MAX_ENTRIES: usize = 4096;
/// How deep a fingerprint looks into a version directory.
const MAX_DEPTH: usize = 8;

impl Fingerprint {
    /// The fingerprint of `dir` (and of `extra` files beside it).
    pub fn of(dir: &Path, extra: &[&Path]) -> Fingerprint {
        let mut entries = Vec::new();
        for file in extra {
            push_entry(&mut entries, file, file);
        }
        walk(dir, dir, 0, &mut entries);
        entries.sort();
        Fingerprint(entries)
    }
}

fn push_entry(entries: &mut Vec<(PathBuf, u64, Option<SystemTime>)>, path: &Path, name: &Path) {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        entries.push((name.to_owned(), meta.len(), meta.modified().ok()));
    }
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    entries: &mut Vec<(PathBuf, u64, Option<SystemTime>)>,
) {
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in read.filter_map(Result::ok) {
        if entries.len() >= MAX_ENTRIES {
            return;
        }
        let path = entry.path();
        let name = path.strip_prefix(root).unwrap_or(&path).to_owned();
        push_entry(entries, &path, &name);
        if depth < MAX_DEPTH && entry.file_type().is_ok_and(|t| t.is_dir()) {
            walk(root, &path, depth + 1, entries);
        }
    }
}

/// What one poll knows of a version (or model directory) not loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// Seen with this fingerprint at the last poll, not yet loaded.
    Settling(Fingerprint),
    /// Failed to load with this fingerprint, for this reason.
    Failed(Fingerprint, String),
}

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

/// Polls one repository (or one model directory).
#[derive(Debug)]
pub struct Watcher {
    source: Source,
    backends: Arc<Backends>,
    options: Options,
    /// Versions not loaded, by model and version (0: the model directory
    /// itself, when its configuration is unusable).
    seen: BTreeMap<(String, u64), Seen>,
    /// Models unloaded on request, with the versions they had: not
    /// reloaded until asked to load.
    held: BTreeMap<String, Vec<u64>>,
    /// Configurations given with a load (Triton's `config` parameter), used
    /// instead of the model's config.pbtxt until a load without one.
    overrides: BTreeMap<String, Box<serving_proto::model_config::ModelConfig>>,
    /// Model directories given with a load (Triton's `file:` parameters),
    /// used instead of the repository's until a load without files; each
    /// is removed with its entry.
    dirs: BTreeMap<String, LoadedFiles>,
    /// The failures, as of the last scan, for readers that must not wait
    /// for a scan in progress.
    published: Arc<std::sync::RwLock<Vec<Failure>>>,
}

/// A model's files given with a load (Triton's `file:` parameters): the
/// private directory they were written to, and how many bytes they hold.
#[derive(Debug)]
pub struct LoadedFiles {
    /// The directory, removed when this goes.
    pub dir: tempfile::TempDir,
    /// The files' bytes.
    pub bytes: u64,
}

/// The reason the repository index gives for a model unloaded by request.
pub const UNLOADED: &str = "unloaded";

/// Whether `name` can be a directory of the repository: one path segment,
/// not hidden, no separators.
pub fn is_servable_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).components().count() == 1
}

/// A model directory or version that failed to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The model.
    pub model: String,
    /// The version; 0 when the directory itself is unusable.
    pub version: u64,
    /// Why.
    pub reason: String,
}

impl Watcher {
    /// A watcher of `source`.
    pub fn new(source: Source, backends: Arc<Backends>, options: Options) -> Watcher {
        Watcher {
            source,
            backends,
            options,
            seen: BTreeMap::new(),
            held: BTreeMap::new(),
            overrides: BTreeMap::new(),
            dirs: BTreeMap::new(),
            published: Arc::default(),
        }
    }

    /// The failures as of the last scan, readable without waiting for the
    /// scan in progress (readiness and the repository index read them).
    pub fn published(&self) -> Arc<std::sync::RwLock<Vec<Failure>>> {
        self.published.clone()
    }

    /// Publishes the failures, and the models held unloaded (as Triton
    /// reports them: unavailable, "unloaded").
    fn publish(&self) {
        let mut all = self.failures();
        for (model, versions) in &self.held {
            let versions: &[u64] = if versions.is_empty() { &[0] } else { versions };
            all.extend(versions.iter().map(|&version| Failure {
                model: model.clone(),
                version,
                reason: UNLOADED.into(),
            }));
        }
        *self.published.write().unwrap_or_else(|e| e.into_inner()) = all;
    }

    /// Holds every model directory of the repository but `names` unloaded
    /// (Triton's explicit model control: only the models named at start
    /// load), until [`Watcher::load`].
    pub fn hold_all_but(&mut self, names: &std::collections::BTreeSet<String>) {
        for name in self.source.model_dirs().into_keys() {
            if !names.contains(&name) {
                self.held.insert(name, Vec::new());
            }
        }
        self.publish();
    }

    /// The first load, at start-up: every model's versions, at once. With
    /// `exit_on_error`, the first model that cannot be loaded is the error;
    /// without, it is recorded (reported not ready, retried when it
    /// changes) and the others serve.
    pub fn start(
        &mut self,
        registry: &Registry,
        exit_on_error: bool,
    ) -> Result<Changes, RepositoryError> {
        let dirs = if self.held.is_empty() {
            self.source.scan()?
        } else {
            self.source
                .model_dirs()
                .into_iter()
                .filter(|(name, _)| !self.held.contains_key(name))
                .map(|(name, path)| self.source.scan_dir(&name, &path))
                .collect()
        };
        // Every model is tried, so that one start reports every model
        // that cannot be served, not only the first.
        let mut errors: Vec<RepositoryError> = Vec::new();
        for dir in dirs {
            match (&dir, exit_on_error) {
                (Err(e), true) => errors.push(RepositoryError {
                    path: e.path.clone(),
                    reason: e.reason.clone(),
                }),
                (Ok(dir), true) => {
                    for v in dir.served(&dir.versions) {
                        match load_version(&self.backends, dir, v, &self.options) {
                            Ok(loaded) => registry.insert(loaded.into_version()),
                            Err(e) => errors.push(e),
                        }
                    }
                }
                _ => {}
            }
        }
        match errors.len() {
            0 => {}
            1 => return Err(errors.remove(0)),
            n => {
                let list: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
                return Err(RepositoryError {
                    path: self.source.root().to_owned(),
                    reason: format!(
                        "{n} models cannot be served (--exit-on-error false serves the others):\n{}",
                        list.join("\n")
                    ),
                });
            }
        }
        Ok(if exit_on_error {
            Changes::default()
        } else {
            self.scan(registry, None, true)
        })
    }

    fn scan(&mut self, registry: &Registry, now: Option<&str>, all_now: bool) -> Changes {
        let changes = self.scan_once(registry, now, all_now);
        self.publish();
        changes
    }

    /// What failed to load and has not changed since.
    pub fn failures(&self) -> Vec<Failure> {
        self.seen
            .iter()
            .filter_map(|((model, version), seen)| match seen {
                Seen::Failed(_, reason) => Some(Failure {
                    model: model.clone(),
                    version: *version,
                    reason: reason.clone(),
                }),
                Seen::Settling(_) => None,
            })
            .collect()
    }

    /// Unloads every version of `name` and keeps it unloaded until
    /// [`Watcher::load`]. Returns the versions unloaded.
    /// A name that is neither loaded nor failing is not held (so that
    /// clients cannot grow the held set with names of their own).
    pub fn unload(&mut self, registry: &Registry, name: &str) -> Vec<u64> {
        let versions = registry.versions(name);
        let failing = self.failures().iter().any(|f| f.model == name);
        if versions.is_empty() && !failing && !self.held.contains_key(name) {
            return versions;
        }
        // The versions it had, as Triton's index names them; unloading it
        // again keeps them.
        let held = self.held.entry(name.to_owned()).or_default();
        if !versions.is_empty() {
            held.clone_from(&versions);
        }
        for &v in &versions {
            registry.remove(name, v);
        }
        self.publish();
        versions
    }

    /// Loads `name` from the repository now (its versions, without waiting
    /// for two polls to agree), also after an unload; versions already
    /// loaded are loaded again from their files, replacing the old ones
    /// once loaded. Returns the changes, or why the model is unusable.
    pub fn load(&mut self, registry: &Registry, name: &str) -> Result<Changes, String> {
        self.load_with(registry, name, None, None)
    }

    /// [`Watcher::load`], with a configuration to use instead of the
    /// model's `config.pbtxt` (Triton's load parameter `config`), and a
    /// directory of the model's files to use instead of the repository's
    /// (Triton's `file:` parameters, which need a configuration); `None`
    /// goes back to the repository's.
    pub fn load_with(
        &mut self,
        registry: &Registry,
        name: &str,
        config: Option<serving_proto::model_config::ModelConfig>,
        dir: Option<LoadedFiles>,
    ) -> Result<Changes, String> {
        if !is_servable_name(name) {
            return Err(format!(
                "'{}' is not a model directory name: one path segment, not hidden",
                serving_proto::text::quote(name)
            ));
        }
        if dir.is_some() && config.is_none() {
            return Err("a model's files need its configuration, given with them".into());
        }
        // A failed load keeps none of what it gave; a model that goes on
        // serving keeps what was given before.
        let before = (self.overrides.remove(name), self.dirs.remove(name));
        let result = self.load_given(registry, name, config, dir);
        if result.is_err() {
            let serving = !registry.versions(name).is_empty();
            let (config, dir) = before;
            match config.filter(|_| serving) {
                Some(c) => self.overrides.insert(name.to_owned(), c),
                None => self.overrides.remove(name),
            };
            match dir.filter(|_| serving) {
                Some(d) => self.dirs.insert(name.to_owned(), d),
                None => self.dirs.remove(name),
            };
        }
        result
    }

    /// The bytes of the files given with loads that the models but
    /// `except` hold on disk (a load of `except` replaces its own).
    pub fn files_held(&self, except: &str) -> u64 {
        self.dirs
            .iter()
            .filter(|(name, _)| name.as_str() != except)
            .map(|(_, f)| f.bytes)
            .sum()
    }

    fn load_given(
        &mut self,
        registry: &Registry,
        name: &str,
        config: Option<serving_proto::model_config::ModelConfig>,
        dir: Option<LoadedFiles>,
    ) -> Result<Changes, String> {
        if let Some(c) = config {
            let path = match &dir {
                Some(d) => Some(d.dir.path().to_owned()),
                None => self.source.model_dirs().remove(name),
            };
            let triton = path
                .map(|p| self.source.scan_dir(name, &p))
                .is_some_and(|d| d.is_ok_and(|d| matches!(d.format, super::Format::Triton(_))));
            if !triton {
                return Err(format!(
                    "a configuration given with the load applies to a Triton model (config.pbtxt or bare model files); '{}' is not one",
                    serving_proto::text::quote(name)
                ));
            }
            self.overrides.insert(name.to_owned(), Box::new(c));
        }
        if let Some(d) = dir {
            self.dirs.insert(name.to_owned(), d);
        }
        self.held.remove(name);
        self.seen.retain(|(n, _), _| n != name);
        let changes = self.scan(registry, Some(name), false);
        let prefix = format!("{name}/");
        let failed = changes
            .failed
            .iter()
            .find(|f| f.starts_with(&prefix) || f.starts_with(&format!("{name}:")));
        if let (Some(reason), false) = (failed, registry.versions(name).is_empty()) {
            // What served before goes on serving.
            return Err(format!(
                "{reason} (the versions loaded before keep serving)"
            ));
        }
        if registry.versions(name).is_empty() {
            let reason = changes
                .failed
                .iter()
                .find(|f| f.starts_with(name))
                .cloned()
                .unwrap_or_else(|| {
                    format!(
                        "no model directory '{}' in the repository",
                        serving_proto::text::quote(name)
                    )
                });
            return Err(reason);
        }
        Ok(changes)
    }

    /// Compares the repository with `registry` and applies the difference.
    /// Blocking (loads models).
    pub fn poll(&mut self, registry: &Registry) -> Changes {
        self.scan(registry, None, false)
    }

    /// One poll; versions of `now` (or every version, `all_now`) load
    /// without waiting for a second look.
    fn scan_once(&mut self, registry: &Registry, now: Option<&str>, all_now: bool) -> Changes {
        let mut changes = Changes::default();
        let mut on_disk: BTreeMap<String, PathBuf> = self.source.model_dirs();
        // Files given with a load stand for the repository's.
        for (name, files) in &self.dirs {
            on_disk.insert(name.clone(), files.dir.path().to_owned());
        }
        on_disk.retain(|name, _| !self.held.contains_key(name));
        let scanned: BTreeMap<String, Result<ServableDir, RepositoryError>> = on_disk
            .iter()
            .map(|(name, path)| {
                let mut dir = self.source.scan_dir(name, path);
                // A configuration given with a load replaces config.pbtxt.
                if let (Ok(d), Some(c)) = (&mut dir, self.overrides.get(name)) {
                    d.format = super::Format::Triton(Some(c.clone()));
                }
                (name.clone(), dir)
            })
            .collect();
        // Unload what is gone from the disk.
        for (name, loaded) in registry.list() {
            if self.held.contains_key(&name) {
                continue;
            }
            let present: Vec<u64> = match scanned.get(&name) {
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
        // Forget what is gone from the disk.
        self.seen.retain(|(n, v), _| {
            scanned.get(n).is_some_and(|dir| match dir {
                Ok(dir) => *v == 0 || dir.versions.contains(v),
                Err(_) => true,
            })
        });
        for (name, dir) in scanned {
            let path = &on_disk[&name];
            let dir = match dir {
                Ok(dir) => {
                    self.seen.remove(&(name.clone(), 0));
                    dir
                }
                Err(e) => {
                    let print = Fingerprint::of(path, &[]);
                    let key = (name.clone(), 0);
                    if !matches!(self.seen.get(&key), Some(Seen::Failed(p, _)) if *p == print) {
                        tracing::error!(servable = %name, error = %e, "model directory is invalid; ignored until something in it changes");
                        changes.failed.push(format!("{name}: {e}"));
                        self.seen.insert(key, Seen::Failed(print, e.to_string()));
                    }
                    continue;
                }
            };
            let config_file = dir.config_file();
            let loaded = registry.versions(&name);
            // Load the versions to serve, once they have settled.
            // A model loaded through the API is read again, loaded versions
            // too (Triton reloads a model on load: a changed configuration
            // takes effect); the old ones serve until the new ones do.
            let reload = now == Some(name.as_str());
            for v in dir.served(&dir.versions) {
                if loaded.contains(&v) && !reload {
                    continue;
                }
                let key = (name.clone(), v);
                let print = Fingerprint::of(&dir.version_dir(v), &[&config_file]);
                let settled = all_now
                    || now == Some(name.as_str())
                    || self.seen.get(&key) == Some(&Seen::Settling(print.clone()));
                match self.seen.get(&key) {
                    Some(Seen::Failed(p, _)) if *p == print => continue,
                    _ if !settled => {
                        tracing::debug!(servable = %name, version = v, "new version seen; loading it once the next poll sees it unchanged");
                        self.seen.insert(key, Seen::Settling(print));
                        continue;
                    }
                    _ => {}
                }
                match load_version(&self.backends, &dir, v, &self.options) {
                    Ok(l) => {
                        registry.insert(l.into_version());
                        self.seen.remove(&key);
                        tracing::info!(servable = %name, version = v, "new version loaded and serving");
                        changes.loaded.push(format!("{name}/{v}"));
                    }
                    Err(e) => {
                        tracing::error!(servable = %name, version = v, error = %e, "version failed to load; ignored until something in it changes");
                        changes.failed.push(format!("{name}/{v}: {e}"));
                        self.seen.insert(key, Seen::Failed(print, e.to_string()));
                    }
                }
            }
            // Versions the policy no longer names, now that what replaces
            // them serves.
            let loaded = registry.versions(&name);
            let keep = dir.served(&loaded);
            for v in loaded.into_iter().filter(|v| !keep.contains(v)) {
                registry.remove(&name, v);
                tracing::info!(servable = %name, version = v, "version no longer named by the version policy; unloaded after its running requests");
                changes.unloaded.push(format!("{name}/{v}"));
            }
        }
        changes
    }
}
