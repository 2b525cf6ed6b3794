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
pub mod triton;
pub mod watch;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::ServableConfig;
use serving_proto::model_config::ModelConfig;

use crate::engine::{LoadOptions, ServableVersion};
use crate::runtime::Runtime;

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
}

impl Default for Options {
    fn default() -> Options {
        Options {
            load: LoadOptions::default(),
            default_max_batch_size: DEFAULT_MAX_BATCH_SIZE,
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
            Format::Servable(_) => on_disk.to_vec(),
            Format::Triton(c) => triton::served(c.as_deref(), on_disk),
        }
    }

    /// The devices the directory names (best effort, for choosing the ONNX
    /// Runtime build before anything loads).
    pub fn devices(&self) -> Vec<crate::runtime::device::Device> {
        use crate::runtime::device::Device;
        match &self.format {
            Format::Servable(c) => c.devices().unwrap_or_default(),
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

    /// The configuration file, for messages and fingerprints.
    pub fn config_file(&self) -> PathBuf {
        self.dir.join(match self.format {
            Format::Servable(_) => "servable.toml",
            Format::Triton(_) => "config.pbtxt",
        })
    }
}

/// The version numbers of a model directory: positive integer names.
pub fn versions(dir: &Path) -> Result<Vec<u64>, RepositoryError> {
    let mut found: Vec<u64> = fs::read_dir(dir)
        .map_err(|e| fail(dir, e.to_string()))?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&v| v > 0)
        .collect();
    found.sort_unstable();
    Ok(found)
}

/// The first `.onnx` file of the version directories, for the error that
/// helps a user write a configuration.
fn some_onnx(dir: &Path, flat: bool, versions: &[u64]) -> Option<PathBuf> {
    versions.iter().find_map(|&v| {
        let mut files: Vec<PathBuf> = fs::read_dir(version_dir(dir, flat, v))
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "onnx"))
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
    let toml_path = dir.join("servable.toml");
    let pbtxt_path = dir.join("config.pbtxt");
    let mut versions = versions(dir)?;
    let flat = allow_flat && versions.is_empty();
    if flat {
        versions = vec![1];
    }
    let format = match (toml_path.is_file(), pbtxt_path.is_file()) {
        (true, true) => {
            return Err(fail(
                dir,
                "both servable.toml and config.pbtxt: a model directory is in one format; keep one",
            ));
        }
        (true, false) => {
            let text =
                fs::read_to_string(&toml_path).map_err(|e| fail(&toml_path, e.to_string()))?;
            Format::Servable(
                ServableConfig::parse(&text).map_err(|reason| fail(&toml_path, reason))?,
            )
        }
        (false, true) => {
            let text =
                fs::read_to_string(&pbtxt_path).map_err(|e| fail(&pbtxt_path, e.to_string()))?;
            let config = serving_proto::model_config::parse_text(&text)
                .map_err(|e| fail(&pbtxt_path, e.to_string()))?;
            triton::check(&config, &name).map_err(|reason| fail(&pbtxt_path, reason))?;
            Format::Triton(Some(Box::new(config)))
        }
        (false, false) => {
            let bare = versions
                .iter()
                .any(|&v| version_dir(dir, flat, v).join(triton::MODEL_FILE).is_file());
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
    runtime: &Arc<Runtime>,
    servable: &ServableDir,
    version: u64,
    options: &Options,
) -> Result<Loaded, RepositoryError> {
    let vdir = servable.version_dir(version);
    let read = |file: &Path| -> Result<Vec<u8>, RepositoryError> {
        if !file.is_file() {
            return Err(fail(
                file,
                format!("the model file is missing from version {version}"),
            ));
        }
        tracing::info!(file = %file.display(), "loading model");
        fs::read(file).map_err(|e| fail(file, e.to_string()))
    };
    let (spec, models, triton) = match &servable.format {
        Format::Servable(config) => {
            let spec = config
                .spec()
                .map_err(|reason| fail(&servable.config_file(), reason))?;
            let mut models = Vec::with_capacity(config.model.len());
            for model in &config.model {
                let file = vdir.join(&model.file);
                if !file.is_file() {
                    return Err(fail(
                        &file,
                        format!("model '{}' is missing from version {version}", model.name),
                    ));
                }
                models.push(read(&file)?);
            }
            (spec, models, None)
        }
        Format::Triton(config) => {
            let config = config.as_deref();
            let file = vdir.join(triton::model_file(config));
            let bytes = read(&file)?;
            let signature = crate::onnx::signature(&bytes).map_err(|reason| fail(&file, reason))?;
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
            (t.spec, vec![bytes], Some(t.config))
        }
    };
    let version = ServableVersion::load(
        runtime,
        &servable.name,
        version,
        spec,
        models,
        &options.load,
    )
    .map_err(|e| fail(&vdir, e.to_string()))?;
    Ok(Loaded { version, triton })
}
