//! Finding the ONNX Runtime shared library, or provisioning it.
//!
//! In order: an explicit path (`--ort-lib`, then `ORT_DYLIB_PATH`); a library
//! next to the executable; an installed Python `onnxruntime*` package of the
//! right device family; else the pinned PyPI wheel for the family, fetched with
//! `python3 -m pip download` into a cache directory and extracted there. The
//! wheels carry `onnxruntime/capi/libonnxruntime.so.<version>` and the provider
//! libraries that ONNX Runtime loads from the same directory.

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The ONNX Runtime version provisioned for every family. The `ort` API level
/// (24) needs at least 1.24, and `onnxruntime-cann` stops at 1.24.
pub const PINNED_VERSION: &str = "1.24.4";

/// The oldest ONNX Runtime minor version the `ort` API level accepts.
pub const MIN_MINOR: u32 = 24;

/// Which ONNX Runtime build a device needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// CPU only: the `onnxruntime` wheel.
    Cpu,
    /// NVIDIA GPUs: the `onnxruntime-gpu` wheel.
    Cuda,
    /// Ascend NPUs: the `onnxruntime-cann` wheel.
    Cann,
}

impl Family {
    /// The PyPI package of this family.
    pub fn package(self) -> &'static str {
        match self {
            Family::Cpu => "onnxruntime",
            Family::Cuda => "onnxruntime-gpu",
            Family::Cann => "onnxruntime-cann",
        }
    }

    /// Installed packages that can serve this family, best first.
    fn acceptable_packages(self) -> &'static [&'static str] {
        match self {
            Family::Cpu => &["onnxruntime", "onnxruntime-gpu", "onnxruntime-cann"],
            Family::Cuda => &["onnxruntime-gpu"],
            Family::Cann => &["onnxruntime-cann"],
        }
    }
}

/// Where the library was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--ort-lib`.
    Flag,
    /// `ORT_DYLIB_PATH`.
    Env,
    /// Next to the executable.
    BesideExecutable,
    /// An installed Python package.
    PythonPackage {
        /// Package name.
        package: String,
        /// Its version.
        version: String,
    },
    /// Provisioned into the cache from the pinned wheel.
    Provisioned {
        /// Package name.
        package: String,
        /// Its version.
        version: String,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag => f.write_str("--ort-lib"),
            Origin::Env => f.write_str("ORT_DYLIB_PATH"),
            Origin::BesideExecutable => f.write_str("next to the executable"),
            Origin::PythonPackage { package, version } => {
                write!(f, "installed Python package {package} {version}")
            }
            Origin::Provisioned { package, version } => {
                write!(f, "provisioned from the {package}=={version} wheel")
            }
        }
    }
}

/// A library to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Located {
    /// The `libonnxruntime` file.
    pub path: PathBuf,
    /// How it was found.
    pub origin: Origin,
}

/// Why no library could be found or provisioned.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LibraryError {
    /// An explicit path that does not exist.
    #[error(
        "ONNX Runtime library {path} (from {origin}) does not exist; point it at libonnxruntime.so"
    )]
    Missing {
        /// The path given.
        path: PathBuf,
        /// Where it came from.
        origin: Origin,
    },
    /// A file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// pip could not be run or failed.
    #[error(
        "provisioning ONNX Runtime failed: `{command}` {outcome}; install it with `pip install {package}=={version}` or pass --ort-lib PATH"
    )]
    Pip {
        /// The command line.
        command: String,
        /// What happened.
        outcome: String,
        /// The package.
        package: String,
        /// The version.
        version: String,
    },
    /// The wheel is not what was expected.
    #[error("the wheel {path} is unusable: {reason}")]
    Wheel {
        /// The wheel file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> LibraryError + 'a {
    move |source| LibraryError::Io {
        action,
        path: path.to_owned(),
        source,
    }
}

/// Resolves the library for a device family.
#[derive(Clone, Debug)]
pub struct Resolver {
    /// `--ort-lib`.
    pub explicit: Option<PathBuf>,
    /// The device family.
    pub family: Family,
    /// The cache directory for provisioned libraries.
    pub cache_dir: PathBuf,
    /// The Python interpreter used for look-ups and pip.
    pub python: String,
}

impl Resolver {
    /// A resolver from the environment: `SERVING_CACHE_DIR` (else the user
    /// cache directory) and `SERVING_PYTHON` (else `python3`).
    pub fn from_env(explicit: Option<PathBuf>, family: Family) -> Resolver {
        Resolver {
            explicit,
            family,
            cache_dir: default_cache_dir(),
            python: std::env::var("SERVING_PYTHON").unwrap_or_else(|_| "python3".into()),
        }
    }

    /// Finds an existing library without provisioning one.
    pub fn locate(&self) -> Result<Option<Located>, LibraryError> {
        if let Some(path) = &self.explicit {
            return explicit(path, Origin::Flag).map(Some);
        }
        if let Some(path) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
            return explicit(Path::new(&path), Origin::Env).map(Some);
        }
        if let Some(found) = beside_executable() {
            return Ok(Some(Located {
                path: found,
                origin: Origin::BesideExecutable,
            }));
        }
        if let Some(found) = self.python_package() {
            return Ok(Some(found));
        }
        let dir = self.provision_dir();
        Ok(complete_library(&dir).map(|path| Located {
            path,
            origin: Origin::Provisioned {
                package: self.family.package().into(),
                version: PINNED_VERSION.into(),
            },
        }))
    }

    /// Finds the library, provisioning the pinned wheel if none is found.
    pub fn resolve(&self) -> Result<Located, LibraryError> {
        match self.locate()? {
            Some(found) => Ok(found),
            None => self.provision(),
        }
    }

    /// What `locate` would return, or a description of what `resolve` would
    /// provision (for `--version`).
    pub fn describe(&self) -> String {
        match self.locate() {
            Ok(Some(found)) => format!("{} ({})", found.path.display(), found.origin),
            Ok(None) => format!(
                "none found yet; the first start provisions {}=={PINNED_VERSION} into {}",
                self.family.package(),
                self.provision_dir().display()
            ),
            Err(e) => format!("unusable: {e}"),
        }
    }

    fn provision_dir(&self) -> PathBuf {
        self.cache_dir
            .join("onnxruntime")
            .join(format!("{}-{PINNED_VERSION}", self.family.package()))
    }

    /// Asks the Python interpreter for installed `onnxruntime*` packages.
    fn python_package(&self) -> Option<Located> {
        const SCRIPT: &str = r#"
import importlib.metadata as m
for name in ("onnxruntime", "onnxruntime-gpu", "onnxruntime-cann"):
    try:
        d = m.distribution(name)
    except Exception:
        continue
    for f in d.files or []:
        s = str(f).replace("\\", "/")
        if s.startswith("onnxruntime/capi/libonnxruntime.so"):
            print(name, d.version, d.locate_file(f), sep="\t")
"#;
        let out = Command::new(&self.python)
            .args(["-c", SCRIPT])
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let found: Vec<(&str, &str, &str)> = text
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, '\t');
                Some((parts.next()?, parts.next()?, parts.next()?))
            })
            .collect();
        for wanted in self.family.acceptable_packages() {
            for (name, version, path) in &found {
                if name != wanted || !Path::new(path).is_file() {
                    continue;
                }
                if minor_version(version).is_some_and(|m| m < MIN_MINOR) {
                    tracing::warn!(
                        package = name,
                        version,
                        "ignoring installed ONNX Runtime older than 1.{MIN_MINOR}"
                    );
                    continue;
                }
                return Some(Located {
                    path: PathBuf::from(path),
                    origin: Origin::PythonPackage {
                        package: (*name).to_owned(),
                        version: (*version).to_owned(),
                    },
                });
            }
        }
        None
    }

    /// Downloads the pinned wheel with pip and extracts its libraries. Safe
    /// for concurrent first starts: one process provisions under a file lock,
    /// the others wait and use its result.
    fn provision(&self) -> Result<Located, LibraryError> {
        let package = self.family.package();
        let dir = self.provision_dir();
        let parent = dir.parent().unwrap_or(&self.cache_dir).to_owned();
        fs::create_dir_all(&parent).map_err(io_err("creating", &parent))?;
        let lock_path = parent.join(format!("{package}-{PINNED_VERSION}.lock"));
        let lock = File::create(&lock_path).map_err(io_err("creating", &lock_path))?;
        lock.lock().map_err(io_err("locking", &lock_path))?;
        let located = |path| Located {
            path,
            origin: Origin::Provisioned {
                package: package.into(),
                version: PINNED_VERSION.into(),
            },
        };
        if let Some(path) = complete_library(&dir) {
            return Ok(located(path));
        }
        eprintln!(
            "serving: provisioning ONNX Runtime: downloading {package}=={PINNED_VERSION} with pip into {} (once; later starts reuse it)",
            dir.display()
        );
        let work = parent.join(format!(".work-{}", std::process::id()));
        let _ = fs::remove_dir_all(&work);
        let wheels = work.join("wheel");
        fs::create_dir_all(&wheels).map_err(io_err("creating", &wheels))?;
        let spec = format!("{package}=={PINNED_VERSION}");
        let args = [
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--dest",
        ];
        let command = format!(
            "{} {} {} {spec}",
            self.python,
            args.join(" "),
            wheels.display()
        );
        let pip_err = |outcome: String| LibraryError::Pip {
            command: command.clone(),
            outcome,
            package: package.into(),
            version: PINNED_VERSION.into(),
        };
        let status = Command::new(&self.python)
            .args(args)
            .arg(&wheels)
            .arg(&spec)
            .stdin(Stdio::null())
            .stdout(io::stderr())
            .stderr(io::stderr())
            .status()
            .map_err(|e| pip_err(format!("could not start: {e}")))?;
        if !status.success() {
            return Err(pip_err(format!("exited with {status}")));
        }
        let wheel = fs::read_dir(&wheels)
            .map_err(io_err("reading", &wheels))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .ok_or_else(|| pip_err("left no wheel".into()))?;
        let staged = work.join("lib");
        eprintln!(
            "serving: provisioning ONNX Runtime: extracting {}",
            wheel.display()
        );
        extract_libraries(&wheel, &staged)?;
        if dir.exists() {
            fs::remove_dir_all(&dir).map_err(io_err("removing", &dir))?;
        }
        fs::rename(&staged, &dir).map_err(io_err("moving into place", &dir))?;
        let _ = fs::remove_dir_all(&work);
        let path = find_library(&dir).ok_or_else(|| LibraryError::Wheel {
            path: wheel.clone(),
            reason: "it holds no onnxruntime/capi/libonnxruntime.so*".into(),
        })?;
        fs::write(
            dir.join(COMPLETE),
            path.file_name().unwrap_or_default().as_encoded_bytes(),
        )
        .map_err(io_err("writing", &dir))?;
        eprintln!(
            "serving: provisioning ONNX Runtime: ready at {}",
            path.display()
        );
        Ok(located(path))
    }
}

/// Marks a fully extracted provision directory.
const COMPLETE: &str = ".complete";

fn complete_library(dir: &Path) -> Option<PathBuf> {
    if !dir.join(COMPLETE).is_file() {
        return None;
    }
    find_library(dir)
}

fn find_library(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == "libonnxruntime.so" || n.starts_with("libonnxruntime.so."))
        })
        .collect();
    found.sort();
    found.pop()
}

fn explicit(path: &Path, origin: Origin) -> Result<Located, LibraryError> {
    if path.is_file() {
        Ok(Located {
            path: path.to_owned(),
            origin,
        })
    } else {
        Err(LibraryError::Missing {
            path: path.to_owned(),
            origin,
        })
    }
}

fn beside_executable() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    find_library(exe.parent()?)
}

/// `SERVING_CACHE_DIR`, else `$XDG_CACHE_HOME/serving`, else `~/.cache/serving`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SERVING_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("serving");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => PathBuf::from(home).join(".cache").join("serving"),
        None => std::env::temp_dir().join("serving-cache"),
    }
}

/// The minor version of `1.<minor>.<patch>`.
pub fn minor_version(version: &str) -> Option<u32> {
    version.split('.').nth(1)?.parse().ok()
}

/// Extracts `onnxruntime/capi/*.so*` from a wheel into `dest`.
fn extract_libraries(wheel: &Path, dest: &Path) -> Result<(), LibraryError> {
    let bad = |reason: String| LibraryError::Wheel {
        path: wheel.to_owned(),
        reason,
    };
    let file = File::open(wheel).map_err(io_err("opening", wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| bad(e.to_string()))?;
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let mut extracted = 0;
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).map_err(|e| bad(e.to_string()))?;
        let name = entry.name().to_owned();
        let Some(file_name) = name.strip_prefix("onnxruntime/capi/") else {
            continue;
        };
        if file_name.contains('/') || !file_name.starts_with("lib") || !file_name.contains(".so") {
            continue;
        }
        let target = dest.join(file_name);
        let mut out = File::create(&target).map_err(io_err("creating", &target))?;
        io::copy(&mut (&mut entry).take(u64::MAX), &mut out).map_err(io_err("writing", &target))?;
        extracted += 1;
    }
    if extracted == 0 {
        return Err(bad("it holds no onnxruntime/capi/*.so files".into()));
    }
    Ok(())
}
