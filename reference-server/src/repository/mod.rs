//! Model repositories on disk: `<repo>/<servable>/servable.toml` and numeric
//! version directories holding the `.onnx` files it names.
//!
//! ```text
//! models/
//!   add/
//!     servable.toml
//!     1/add.onnx
//!     2/add.onnx
//! ```

pub mod config;
pub mod watch;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use config::ServableConfig;

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

/// A servable directory, parsed but not loaded.
#[derive(Clone, Debug)]
pub struct ServableDir {
    /// Servable name (the directory name).
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// Its configuration.
    pub config: ServableConfig,
    /// Its version numbers, ascending.
    pub versions: Vec<u64>,
}

/// The version numbers of a servable directory: positive integer names.
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

/// Reads and checks one servable directory.
pub fn scan_servable(dir: &Path) -> Result<ServableDir, RepositoryError> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| fail(dir, "the directory name is not UTF-8"))?
        .to_owned();
    let toml_path = dir.join("servable.toml");
    let text = fs::read_to_string(&toml_path).map_err(|e| fail(&toml_path, e.to_string()))?;
    let config = ServableConfig::parse(&text).map_err(|reason| fail(&toml_path, reason))?;
    let versions = versions(dir)?;
    if versions.is_empty() {
        return Err(fail(
            dir,
            "no version directory (1/, 2/, ...) holds the models",
        ));
    }
    Ok(ServableDir {
        name,
        dir: dir.to_owned(),
        config,
        versions,
    })
}

/// Reads and checks every servable directory of a repository.
pub fn scan(repo: &Path) -> Result<Vec<ServableDir>, RepositoryError> {
    let mut dirs: Vec<PathBuf> = fs::read_dir(repo)
        .map_err(|e| fail(repo, e.to_string()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    dirs.sort();
    if dirs.is_empty() {
        return Err(fail(
            repo,
            "the model repository holds no servable directory",
        ));
    }
    dirs.iter().map(|d| scan_servable(d)).collect()
}

/// Loads one version of a scanned servable.
pub fn load_version(
    runtime: &Arc<Runtime>,
    servable: &ServableDir,
    version: u64,
    options: &LoadOptions,
) -> Result<ServableVersion, RepositoryError> {
    let vdir = servable.dir.join(version.to_string());
    for model in &servable.config.model {
        let file = vdir.join(&model.file);
        if !file.is_file() {
            return Err(fail(
                &file,
                format!("model '{}' is missing from version {version}", model.name),
            ));
        }
    }
    let mut models = Vec::with_capacity(servable.config.model.len());
    for model in &servable.config.model {
        let file = vdir.join(&model.file);
        tracing::info!(file = %file.display(), "loading model");
        models.push(fs::read(&file).map_err(|e| fail(&file, e.to_string()))?);
    }
    let spec = servable
        .config
        .spec()
        .map_err(|reason| fail(&servable.dir.join("servable.toml"), reason))?;
    ServableVersion::load(runtime, &servable.name, version, spec, models, options)
        .map_err(|e| fail(&vdir, e.to_string()))
}
