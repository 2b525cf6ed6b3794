//! Model repositories on disk, in two formats side by side: ours
//! (`servable.toml`) and Triton's (`config.pbtxt`, or a bare ONNX file whose
//! configuration is completed from the model).
//!
//! ```text
//! models/
//!   add/                    ours: servable.toml names the models and methods
//!     servable.toml
//!     1/add.onnx
//!   resnet/                 Triton's, with a configuration
//!     config.pbtxt
//!     1/model.onnx
//!   squeezenet/             Triton's, bare: completed from the ONNX file
//!     1/model.onnx
//! ```

pub mod config;
#[cfg(unix)]
pub mod mindspore;
mod python;
pub mod triton;
mod warmup;
pub mod watch;

use std::collections::{BTreeMap, VecDeque};
use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use config::ServableConfig;
use serving_proto::model_config::ModelConfig;

use crate::engine::Backends;
use crate::engine::{LoadOptions, ServableVersion};

/// A repository that cannot be served, naming the file and the reason.
#[derive(Debug, thiserror::Error)]
#[error("{}: {reason}", path.display())]
pub struct RepositoryError {
    /// The file or directory at fault.
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

fn fail(path: &Path, reason: impl Into<String>) -> RepositoryError {
    RepositoryError {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// How to load a repository's models.
#[derive(Clone, Debug)]
pub struct Options {
    /// How the engine loads each version.
    pub load: LoadOptions,
    /// `max_batch_size` of a Triton model completed from its ONNX file when
    /// every input and output has a dynamic first dimension (Triton's
    /// default is 4); 0 turns that batching off.
    pub default_max_batch_size: u32,
    /// The Python backend, which completes Python models' configurations
    /// (`auto_complete_config`) before they load; `None`: Python models
    /// are refused.
    #[cfg(unix)]
    pub python: Option<Arc<crate::backends::python::Python>>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            load: LoadOptions::default(),
            default_max_batch_size: DEFAULT_MAX_BATCH_SIZE,
            #[cfg(unix)]
            python: None,
        }
    }
}

/// Triton's `default-max-batch-size`.
pub const DEFAULT_MAX_BATCH_SIZE: u32 = 4;

/// The format of a model directory.
#[derive(Clone, Debug)]
pub enum Format {
    /// `servable.toml`.
    Servable(ServableConfig),
    /// Triton's: the `config.pbtxt` as read, or `None` for a bare model.
    Triton(Option<Box<ModelConfig>>),
    /// MindSpore Serving's: the `servable_config.py`, imported at load.
    MindSpore(PathBuf),
}

/// A model directory, read but not loaded.
#[derive(Clone, Debug)]
pub struct ServableDir {
    /// Servable (model) name: the directory name.
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// Its format and configuration.
    pub format: Format,
    /// Its version directories, ascending.
    pub versions: Vec<u64>,
    /// A single model's directory holding its files directly, without
    /// version directories (`--model-name`, as KServe mounts a model): it
    /// is version 1.
    pub flat: bool,
}

impl ServableDir {
    /// The versions to serve of those on disk: all of them for ours, the
    /// version policy's for Triton's (by default the latest).
    pub fn served(&self, on_disk: &[u64]) -> Vec<u64> {
        match &self.format {
            Format::Servable(_) | Format::MindSpore(_) => on_disk.to_vec(),
            Format::Triton(c) => triton::served(c.as_deref(), on_disk),
        }
    }

    /// The devices the directory names (best effort, for choosing the ONNX
    /// Runtime build before anything loads).
    pub fn devices(&self) -> Vec<crate::runtime::device::Device> {
        use crate::runtime::device::Device;
        match &self.format {
            Format::Servable(c) => c.devices().unwrap_or_default(),
            Format::MindSpore(_) => Vec::new(),
            Format::Triton(c) => c
                .iter()
                .flat_map(|c| &c.instance_group)
                .flat_map(|g| &g.gpus)
                .map(|&id| Device::Cuda(id))
                .collect(),
        }
    }

    /// The directory holding version `version`'s files.
    pub fn version_dir(&self, version: u64) -> PathBuf {
        version_dir(&self.dir, self.flat, version)
    }

    /// The file `file` of version `version`, resolved inside the model
    /// directory (see [`resolve_beneath`]), or the error that it leads
    /// outside; the error names the file as configured, and is the same
    /// whether or not anything exists where it leads.
    pub fn model_path(&self, version: u64, file: &str) -> Result<PathBuf, RepositoryError> {
        resolve_beneath(&self.dir, &relative(self.flat, version, file))
            .map_err(|Escape| fail(&self.version_dir(version).join(file), ESCAPES))
    }

    /// The configuration file, for messages and fingerprints.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join(match self.format {
            Format::Servable(_) => "servable.toml",
            Format::Triton(_) => "config.pbtxt",
            Format::MindSpore(_) => mindspore::CONFIG_FILE,
        })
    }
}

/// The reason given for a model file, version directory or configuration
/// file that leads outside its model directory.
pub const ESCAPES: &str = "leads outside the model directory (through '..', an absolute path or a symbolic link); model files resolve inside it";

/// A path that leads outside the directory it must stay in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Escape;

/// The most symbolic links followed resolving one path (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Whether `file` is a relative path that stays inside the directory it is
/// joined to, read as written: not empty, not absolute, no `..` segment.
/// (Symbolic links are [`resolve_beneath`]'s.)
pub fn is_inside_path(file: &str) -> bool {
    let path = Path::new(file);
    !file.contains('\0')
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        && path.components().any(|c| matches!(c, Component::Normal(_)))
}

/// What `rel` names inside `root`, with every symbolic link on the way
/// followed, as long as each step stays inside `root`: `Err(Escape)` as
/// soon as a `..`, an absolute path or a link's target leads outside it.
/// Nothing outside `root` is ever looked at, so the answer never depends on
/// what exists there (a client reading the repository index learns nothing
/// of the server's file system). A path that does not exist is followed as
/// written; the result then does not exist either. The result is an
/// absolute path with no symbolic link in it, under `root`'s canonical
/// path.
pub fn resolve_beneath(root: &Path, rel: &Path) -> Result<PathBuf, Escape> {
    enum Part {
        Parent,
        Name(OsString),
    }
    fn parts(path: &Path) -> Result<Vec<Part>, Escape> {
        path.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(Ok(Part::Name(n.to_owned()))),
                Component::ParentDir => Some(Ok(Part::Parent)),
                Component::CurDir => None,
                Component::RootDir | Component::Prefix(_) => Some(Err(Escape)),
            })
            .collect()
    }
    let base = fs::canonicalize(root).map_err(|_| Escape)?;
    let mut pending: VecDeque<Part> = parts(rel)?.into();
    let mut current = base.clone();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        let name = match part {
            Part::Parent if current == base => return Err(Escape),
            Part::Parent => {
                current.pop();
                continue;
            }
            Part::Name(name) => name,
        };
        let next = current.join(&name);
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Escape);
                }
                let target = fs::read_link(&next).map_err(|_| Escape)?;
                let target = if target.is_absolute() {
                    current = base.clone();
                    target
                        .strip_prefix(&base)
                        .or_else(|_| target.strip_prefix(root))
                        .map_err(|_| Escape)?
                        .to_owned()
                } else {
                    target
                };
                for p in parts(&target)?.into_iter().rev() {
                    pending.push_front(p);
                }
            }
            _ => current = next,
        }
    }
    Ok(current)
}

/// The version numbers of a model directory: positive integer names of
/// directories, and of symbolic links to directories inside the model
/// directory. A link that leads outside counts as a version (whose load
/// then fails), so that the versions listed never depend on what exists
/// outside.
pub fn versions(dir: &Path) -> Result<Vec<u64>, RepositoryError> {
    let mut found: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| fail(dir, e.to_string()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u64>().ok()?;
            let kind = e.file_type().ok()?;
            let listed = kind.is_dir()
                || (kind.is_symlink()
                    && match resolve_beneath(dir, Path::new(&e.file_name())) {
                        Err(Escape) => true,
                        Ok(p) => p.is_dir(),
                    });
            (listed && v > 0).then_some(v)
        })
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// A configuration file of a model directory, resolved inside it: `None`
/// when there is none (or it is not a file), an error when it is a link
/// that leads outside the directory.
fn config_path(dir: &Path, name: &str) -> Result<Option<PathBuf>, RepositoryError> {
    let path = dir.join(name);
    match fs::symlink_metadata(&path) {
        Err(_) => Ok(None),
        Ok(meta) if meta.file_type().is_symlink() => match resolve_beneath(dir, Path::new(name)) {
            Err(Escape) => Err(fail(&path, ESCAPES)),
            Ok(p) => Ok(p.is_file().then_some(p)),
        },
        Ok(meta) => Ok(meta.is_file().then_some(path)),
    }
}

/// The path of version `version`'s `file` relative to the model directory.
fn relative(flat: bool, version: u64, file: &str) -> PathBuf {
    if flat {
        PathBuf::from(file)
    } else {
        Path::new(&version.to_string()).join(file)
    }
}

/// The first `.onnx` file of the version directories, for the error that
/// helps a user write a configuration.
fn some_onnx(dir: &Path, flat: bool, versions: &[u64]) -> Option<PathBuf> {
    versions.iter().find_map(|&v| {
        let vdir = resolve_beneath(dir, &relative(flat, v, "")).ok()?;
        let mut files: Vec<PathBuf> = fs::read_dir(vdir)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.file_name())
            .filter(|n| Path::new(n).extension().is_some_and(|e| e == "onnx"))
            .filter_map(|n| resolve_beneath(dir, &relative(flat, v, n.to_str()?)).ok())
            .collect();
        files.sort();
        files.into_iter().next()
    })
}

/// The directory of `version` in model directory `dir`: `dir` itself for a
/// flat one.
fn version_dir(dir: &Path, flat: bool, version: u64) -> PathBuf {
    if flat {
        dir.to_owned()
    } else {
        dir.join(version.to_string())
    }
}

/// Reads and checks one model directory of a repository, of either format.
pub fn scan_servable(dir: &Path) -> Result<ServableDir, RepositoryError> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| fail(dir, "the directory name is not UTF-8"))?
        .to_owned();
    scan_named(dir, &name, false)
}

/// Reads and checks one model directory served as `name`; with
/// `allow_flat`, a directory without version directories that holds its
/// model files itself is version 1.
pub fn scan_named(
    dir: &Path,
    name: &str,
    allow_flat: bool,
) -> Result<ServableDir, RepositoryError> {
    let name = name.to_owned();
    let toml = config_path(dir, "servable.toml")?;
    let pbtxt = config_path(dir, "config.pbtxt")?;
    let servable_config = config_path(dir, mindspore::CONFIG_FILE)?;
    let toml_path = dir.join("servable.toml");
    let pbtxt_path = dir.join("config.pbtxt");
    let mut versions = versions(dir)?;
    let flat = allow_flat && versions.is_empty();
    if flat {
        versions = vec![1];
    }
    let format = match (toml, pbtxt) {
        (toml, pbtxt) if servable_config.is_some() && (toml.is_some() || pbtxt.is_some()) => {
            return Err(fail(
                dir,
                format!(
                    "both {} and {}: a model directory is in one format; keep one",
                    mindspore::CONFIG_FILE,
                    if toml.is_some() {
                        "servable.toml"
                    } else {
                        "config.pbtxt"
                    }
                ),
            ));
        }
        (None, None) if servable_config.is_some() => {
            Format::MindSpore(servable_config.expect("checked"))
        }
        (Some(_), Some(_)) => {
            return Err(fail(
                dir,
                "both servable.toml and config.pbtxt: a model directory is in one format; keep one",
            ));
        }
        (Some(file), None) => {
            let text = fs::read_to_string(&file).map_err(|e| fail(&toml_path, e.to_string()))?;
            Format::Servable(
                ServableConfig::parse(&text).map_err(|reason| fail(&toml_path, reason))?,
            )
        }
        (None, Some(file)) => {
            let text = fs::read_to_string(&file).map_err(|e| fail(&pbtxt_path, e.to_string()))?;
            let config = serving_proto::model_config::parse_text(&text)
                .map_err(|e| fail(&pbtxt_path, e.to_string()))?;
            triton::check(&config, &name).map_err(|reason| fail(&pbtxt_path, reason))?;
            Format::Triton(Some(Box::new(config)))
        }
        (None, None) => {
            // A model file that leads outside counts as present (its load
            // then fails), whether or not anything exists there.
            let bare = versions.iter().any(|&v| {
                match resolve_beneath(dir, &relative(flat, v, triton::MODEL_FILE)) {
                    Err(Escape) => true,
                    Ok(p) => p.is_file(),
                }
            });
            if !bare {
                let mut reason = format!(
                    "neither servable.toml nor config.pbtxt, and no version directory (1/, 2/, ...) holds {}; see docs/server.md, \"Model repositories\"",
                    triton::MODEL_FILE
                );
                if let Some(file) = some_onnx(dir, flat, &versions)
                    && let Ok(sig) = fs::read(&file)
                        .map_err(|e| e.to_string())
                        .and_then(|b| crate::onnx::signature(&b))
                {
                    reason.push_str(&format!(
                        ". {} has {}: name it {}, or write a config.pbtxt with default_model_filename: \"{}\"",
                        file.display(),
                        triton::describe(&sig),
                        triton::MODEL_FILE,
                        file.file_name().unwrap_or_default().to_string_lossy()
                    ));
                }
                return Err(fail(dir, reason));
            }
            Format::Triton(None)
        }
    };
    if versions.is_empty() {
        return Err(fail(
            dir,
            "no version directory (1/, 2/, ...) holds the models",
        ));
    }
    Ok(ServableDir {
        name,
        dir: dir.to_owned(),
        format,
        versions,
        flat,
    })
}

/// Where the models come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// A repository: every directory in it is a model, named by its
    /// directory (`--model-repository DIR`).
    Repository(PathBuf),
    /// One model directory served under a name (`--model-repository DIR
    /// --model-name NAME`): `DIR/NAME` when that is a directory (a
    /// repository of one model, as KServe's Triton examples mount it),
    /// else `DIR` itself, with or without version directories (as KServe's
    /// storage initializer puts a model at `/mnt/models`).
    Single {
        /// The name clients use.
        name: String,
        /// The model's directory.
        dir: PathBuf,
    },
}

impl Source {
    /// The source `--model-repository` and `--model-name` describe.
    pub fn new(dir: PathBuf, name: Option<String>) -> Source {
        match name {
            None => Source::Repository(dir),
            Some(name) => {
                let inner = dir.join(&name);
                let dir = if watch::is_servable_name(&name) && inner.is_dir() {
                    inner
                } else {
                    dir
                };
                Source::Single { name, dir }
            }
        }
    }

    /// The directory polled.
    pub fn root(&self) -> &Path {
        match self {
            Source::Repository(dir) | Source::Single { dir, .. } => dir,
        }
    }

    /// The model directories on disk now, by name (hidden ones skipped).
    pub fn model_dirs(&self) -> BTreeMap<String, PathBuf> {
        match self {
            Source::Single { name, dir } => [(name.clone(), dir.clone())].into(),
            Source::Repository(repo) => list_model_dirs(repo).unwrap_or_default(),
        }
    }

    /// Reads and checks model directory `name` at `path`.
    pub fn scan_dir(&self, name: &str, path: &Path) -> Result<ServableDir, RepositoryError> {
        scan_named(path, name, matches!(self, Source::Single { .. }))
    }

    /// Every model directory, read and checked.
    pub fn scan(&self) -> Result<Vec<Result<ServableDir, RepositoryError>>, RepositoryError> {
        match self {
            Source::Repository(repo) => scan(repo),
            Source::Single { name, dir } => {
                if !dir.is_dir() {
                    return Err(fail(dir, "the model directory does not exist"));
                }
                Ok(vec![self.scan_dir(name, dir)])
            }
        }
    }
}

/// The model directories of a repository (hidden ones skipped), each read
/// and checked.
pub fn scan(repo: &Path) -> Result<Vec<Result<ServableDir, RepositoryError>>, RepositoryError> {
    let dirs = list_model_dirs(repo).map_err(|e| fail(repo, e.to_string()))?;
    if dirs.is_empty() {
        return Err(fail(repo, "the model repository holds no model directory"));
    }
    Ok(dirs.values().map(|d| scan_servable(d)).collect())
}

/// The model directories of a repository by name, hidden ones skipped. A
/// name that is not UTF-8 is kept (lossily) so that its directory is
/// reported as failing, not ignored.
fn list_model_dirs(repo: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    Ok(fs::read_dir(repo)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (!name.starts_with('.')).then(|| (name, e.path()))
        })
        .collect())
}

/// The most bytes of a label file (`label_filename`): labels are names of
/// classes, a few bytes each; 64 MiB holds millions.
pub const MAX_LABEL_FILE_BYTES: u64 = 64 << 20;

/// The labels of an output, one per line of `name` in the model directory
/// (Triton's `label_filename`: beside `config.pbtxt`, not in a version).
fn read_labels(servable: &ServableDir, name: &str) -> Result<Arc<[String]>, RepositoryError> {
    let file = servable.dir.join(name);
    let outside = || {
        fail(
            &file,
            "label_filename must be a path inside the model directory: relative, without '..'"
                .to_owned(),
        )
    };
    if !is_inside_path(name) {
        return Err(outside());
    }
    let resolved = resolve_beneath(&servable.dir, Path::new(name)).map_err(|Escape| outside())?;
    let opened =
        fs::File::open(&resolved).map_err(|e| fail(&file, format!("label_filename: {e}")))?;
    let len = opened
        .metadata()
        .map_err(|e| fail(&file, e.to_string()))?
        .len();
    if len > MAX_LABEL_FILE_BYTES {
        return Err(fail(
            &file,
            format!("label_filename: {len} bytes, over the bound {MAX_LABEL_FILE_BYTES}"),
        ));
    }
    let mut text = String::new();
    std::io::Read::read_to_string(
        &mut std::io::Read::take(opened, MAX_LABEL_FILE_BYTES),
        &mut text,
    )
    .map_err(|e| {
        fail(
            &file,
            format!("label_filename: {e} (labels are UTF-8 text, one per line)"),
        )
    })?;
    Ok(text.lines().map(str::to_owned).collect())
}

/// A loaded version, and for a Triton model its configuration as completed.
#[derive(Debug)]
pub struct Loaded {
    /// What serves.
    pub version: ServableVersion,
    /// The completed Triton configuration, for a Triton model.
    pub triton: Option<ModelConfig>,
}

impl Loaded {
    /// The version, with the completed Triton configuration attached for
    /// the front ends.
    pub fn into_version(self) -> ServableVersion {
        let mut v = self.version;
        if let Some(config) = self.triton {
            v.attachment = Some(Arc::new(config));
        }
        v
    }
}

/// Loads one version of a scanned model directory.
pub fn load_version(
    backends: &Arc<Backends>,
    servable: &ServableDir,
    version: u64,
    options: &Options,
) -> Result<Loaded, RepositoryError> {
    let vdir = servable.version_dir(version);
    // The model file `name`, resolved inside the model directory, read;
    // errors name it as configured.
    let read = |name: &str, missing: String| -> Result<Vec<u8>, RepositoryError> {
        let file = vdir.join(name);
        let resolved = servable.model_path(version, name)?;
        if !resolved.is_file() {
            return Err(fail(&file, missing));
        }
        tracing::info!(file = %file.display(), "loading model");
        fs::read(&resolved).map_err(|e| fail(&file, e.to_string()))
    };
    let (spec, models, triton, warm) = match &servable.format {
        Format::Servable(config) => {
            let spec = config
                .spec()
                .map_err(|reason| fail(&servable.config_file(), reason))?;
            let entries = config
                .warmup_samples()
                .map_err(|reason| fail(&servable.config_file(), reason))?;
            let batched = config.model.iter().any(|m| m.with_batch_dim);
            let max_batch = match (batched, spec.deployment.batching.max_batch_size) {
                (false, _) => 0,
                (true, Some(n)) => n,
                (true, None) => crate::engine::DYNAMIC_BATCH,
            };
            let refs: Vec<(Option<String>, &serving_proto::pb::inference::ModelWarmup)> =
                entries.iter().map(|(m, w)| (m.clone(), w)).collect();
            let warm = warmup::build(
                &refs,
                i32::try_from(max_batch).unwrap_or(i32::MAX),
                &servable.dir,
            )
            .map_err(|reason| fail(&servable.config_file(), reason))?;
            let mut models = Vec::with_capacity(config.model.len());
            for model in &config.model {
                models.push(read(
                    &model.file,
                    format!("model '{}' is missing from version {version}", model.name),
                )?);
            }
            (spec, models, None, warm)
        }
        Format::Triton(Some(config)) if triton::is_ensemble(Some(config)) => {
            // An ensemble runs other models: no file of its own.
            let where_ = servable.config_file();
            let (method, steps) = triton::ensemble_of(config).map_err(|r| fail(&where_, r))?;
            let mut completed = (**config).clone();
            completed.name = servable.name.clone();
            triton::complete_ensemble(&mut completed);
            let version = ServableVersion::ensemble(
                backends,
                &servable.name,
                version,
                method,
                steps,
                &options.load,
            )
            .map_err(|e| fail(&where_, e.to_string()))?;
            return Ok(Loaded {
                version,
                triton: Some(completed),
            });
        }
        Format::Triton(config) => {
            let config = config.as_deref();
            let name = triton::model_file(config);
            let file = vdir.join(name);
            let bytes = read(
                name,
                format!("the model file is missing from version {version}"),
            )?;
            let python = if triton::is_python(config) {
                Some(python::prepare(
                    servable, version, name, config, &bytes, options,
                )?)
            } else {
                None
            };
            let config = python.as_ref().map(|p| &p.config).or(config);
            let signature = match &python {
                Some(p) => p.signature.clone(),
                None => crate::onnx::signature(&bytes).map_err(|reason| fail(&file, reason))?,
            };
            let defaults = triton::Defaults {
                max_batch_size: options.default_max_batch_size,
                devices: options.load.default_devices.clone(),
            };
            let where_ = if config.is_some() {
                servable.config_file()
            } else {
                file.clone()
            };
            let t = triton::translate(&servable.name, config, &signature, &defaults)
                .map_err(|reason| fail(&where_, reason))?;
            for field in &t.ignored {
                tracing::warn!(model = %servable.name, field = %field, file = %where_.display(), "configuration field ignored: it only tunes performance in Triton's backends");
            }
            let mut spec = t.spec;
            if let (Some(p), Some(model)) = (&python, spec.models.first_mut()) {
                model.options = p.options(&t.config);
            }
            for o in t
                .config
                .output
                .iter()
                .filter(|o| !o.label_filename.is_empty())
            {
                let labels = read_labels(servable, &o.label_filename)?;
                if let Some(method) = spec.methods.first_mut() {
                    method.labels.insert(o.name.clone(), labels);
                }
            }
            let warm = warmup::samples(&t.config, &servable.dir)
                .map_err(|reason| fail(&where_, reason))?;
            (spec, vec![bytes], Some(t.config), warm)
        }
        Format::MindSpore(config_file) => {
            let (spec, models) = mindspore::load(servable, config_file, version, options)?;
            (spec, models, None, Vec::new())
        }
    };
    let version = ServableVersion::load(
        backends,
        &servable.name,
        version,
        spec,
        models,
        &options.load,
    )
    .map_err(|e| fail(&vdir, e.to_string()))?;
    if !warm.is_empty() {
        // Ready means warmed: the version is not served before this.
        let first = version
            .methods()
            .first()
            .map_or_else(|| triton::METHOD.to_owned(), |m| m.name.clone());
        warmup::run(&version, &first, &warm)
            .map_err(|reason| fail(&servable.config_file(), reason))?;
    }
    Ok(Loaded { version, triton })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn paths_as_written_stay_inside() {
        for ok in ["model.onnx", "sub/model.onnx", "./model.onnx", "a..b.onnx"] {
            assert!(is_inside_path(ok), "{ok}");
        }
        for bad in ["", ".", "../x.onnx", "sub/../../x", "/etc/hostname", "a\0b"] {
            assert!(!is_inside_path(bad), "{bad:?}");
        }
    }

    #[test]
    fn links_are_followed_only_inside_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("m");
        fs::create_dir_all(root.join("shared")).unwrap();
        fs::create_dir_all(root.join("1")).unwrap();
        fs::write(root.join("shared/model.onnx"), b"x").unwrap();
        fs::write(tmp.path().join("outside.onnx"), b"x").unwrap();
        let canonical = fs::canonicalize(&root).unwrap();
        symlink("../shared/model.onnx", root.join("1/in.onnx")).unwrap();
        symlink(root.join("shared"), root.join("2")).unwrap();
        symlink("../../outside.onnx", root.join("1/out.onnx")).unwrap();
        symlink("../../missing.onnx", root.join("1/gone.onnx")).unwrap();
        symlink("/etc", root.join("3")).unwrap();
        symlink("loop", root.join("1/loop")).unwrap();
        let r = |rel: &str| resolve_beneath(&root, Path::new(rel));
        assert_eq!(r("1/in.onnx"), Ok(canonical.join("shared/model.onnx")));
        assert_eq!(r("2/model.onnx"), Ok(canonical.join("shared/model.onnx")));
        assert_eq!(r("1/none.onnx"), Ok(canonical.join("1/none.onnx")));
        assert_eq!(
            r("1/../shared/model.onnx"),
            Ok(canonical.join("shared/model.onnx"))
        );
        for bad in [
            "1/out.onnx",
            "1/gone.onnx",
            "3/hostname",
            "3/nothing",
            "1/loop",
            "..",
        ] {
            assert_eq!(r(bad), Err(Escape), "{bad}");
        }
        assert_eq!(versions(&root).unwrap(), vec![1, 2, 3]);
    }
}
