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

/// The SHA-256 of every Linux wheel of [`PINNED_VERSION`] of the three
/// packages, as PyPI lists them. pip is asked for these hashes
/// (`--require-hashes`), and the downloaded wheel is checked against them
/// again before anything is extracted from it: a substituted or tampered
/// download (a mirror, a proxy, a compromised index) is refused.
pub const PINNED_WHEELS: &[(&str, &str)] = &[
    (
        "onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "046ff290045a387676941a02a8ae5c3ebec6b4f551ae228711968c4a69d8f6b7",
    ),
    (
        "onnxruntime-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "e54ad52e61d2d4618dcff8fa1480ac66b24ee2eab73331322db1049f11ccf330",
    ),
    (
        "onnxruntime-1.24.4-cp312-cp312-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "1a5c5a544b22f90859c88617ecb30e161ee3349fcc73878854f43d77f00558b5",
    ),
    (
        "onnxruntime-1.24.4-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "0d640eb9f3782689b55cfa715094474cd5662f2f137be6a6f847a594b6e9705c",
    ),
    (
        "onnxruntime-1.24.4-cp313-cp313-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "dc4aaed1e5e1aaacf2343c838a30a7c3ade78f13eeb16817411f929d04040a13",
    ),
    (
        "onnxruntime-1.24.4-cp313-cp313-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "e30c972bc02e072911aabb6891453ec73795386c0af2b761b65444b8a4c4745f",
    ),
    (
        "onnxruntime-1.24.4-cp313-cp313t-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "1700f559c8086d06b2a4d5de51e62cb4ff5e2631822f71a36db8c72383db71ee",
    ),
    (
        "onnxruntime-1.24.4-cp313-cp313t-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "4c74e268dc808e61e63784d43f9ddcdaf50a776c2819e8bd1d1b11ef64bf7e36",
    ),
    (
        "onnxruntime-1.24.4-cp314-cp314-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "e2b7969e72d8cb53ffc88ab6d49dd5e75c1c663bda7be7eb0ece192f127343d1",
    ),
    (
        "onnxruntime-1.24.4-cp314-cp314-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "14ed1f197fab812b695a5eaddb536c635e58a2fbbe50a517c78f082cc6ce9177",
    ),
    (
        "onnxruntime-1.24.4-cp314-cp314t-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "aa12ddc54c9c4594073abcaa265cd9681e95fb89dae982a6f508a794ca42e661",
    ),
    (
        "onnxruntime-1.24.4-cp314-cp314t-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "e1cc6a518255f012134bc791975a6294806be9a3b20c4a54cca25194c90cf731",
    ),
    (
        "onnxruntime_gpu-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "c2a698659271c28220b3f56fe9b63f70eae3b3c36afa544201bf750b929a36dc",
    ),
    (
        "onnxruntime_gpu-1.24.4-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "eb0e38f0c1ef3b76ae0081c8e51eed20dd8925aa916f0fc6f9b8b17d05610e99",
    ),
    (
        "onnxruntime_gpu-1.24.4-cp313-cp313-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "bbdaa73f9055fb2a177425edbed651a1843a6239f9d5430e284f4e5f65440a33",
    ),
    (
        "onnxruntime_gpu-1.24.4-cp313-cp313t-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "e4b348a078ced73fc577d21b83992fd2187edd10c233729c8d01b000b8543525",
    ),
    (
        "onnxruntime_gpu-1.24.4-cp314-cp314-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "af9dd7ef92d94c75e5523cf070e180f3d8cdbb2fc007dcea97ba71b03e3b96d6",
    ),
    (
        "onnxruntime_gpu-1.24.4-cp314-cp314t-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "097c6f53e99ee35f21d0fdba76ca283b92465a0e364c6f0209cb9653c424e2a4",
    ),
    (
        "onnxruntime_cann-1.24.4-cp311-cp311-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "acb52f29066fab2d073161b984fe48eadeaac6b2bbfd0735ab9dae579ec8b21a",
    ),
    (
        "onnxruntime_cann-1.24.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "6813780ee96892f5c1bd3e05390f821016eb73e599264bd69807a83010a7abbe",
    ),
    (
        "onnxruntime_cann-1.24.4-cp312-cp312-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "ce65253213f604b6f8bdf745ec86be7f284151d0bb4e4db2b5a63ef201a1c539",
    ),
    (
        "onnxruntime_cann-1.24.4-cp312-cp312-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "7ca3bde2965a9c6065f83bdfe7b2c22e14de9fbc3ba24d15b19849b76aa017b0",
    ),
    (
        "onnxruntime_cann-1.24.4-cp313-cp313-manylinux_2_27_aarch64.manylinux_2_28_aarch64.whl",
        "0cab040de19ae991f04cc4f6738d66dcd84c479eaa6bec2b1d58e94e7b2c06ba",
    ),
    (
        "onnxruntime_cann-1.24.4-cp313-cp313-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl",
        "6bfd5e9c625e54cab21d60ef8b0553987bfa7c19ddc33d7932c36961325a9922",
    ),
];

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
    /// The downloaded wheel is not one of [`PINNED_WHEELS`].
    #[error(
        "the downloaded wheel {path} has SHA-256 {actual}, {expected}: refusing to use it (a substituted or tampered download); install {package}=={version} yourself and pass --ort-lib PATH"
    )]
    Hash {
        /// The wheel file.
        path: PathBuf,
        /// Its SHA-256.
        actual: String,
        /// What was pinned for it.
        expected: String,
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
        // pip checks the download against the pinned hashes, and so do we
        // below, before extracting anything.
        let requirements = work.join("requirements.txt");
        fs::write(&requirements, pinned_requirement(self.family))
            .map_err(io_err("writing", &requirements))?;
        let args = [
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--require-hashes",
            "--dest",
        ];
        let command = format!(
            "{} {} {} -r {}",
            self.python,
            args.join(" "),
            wheels.display(),
            requirements.display()
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
            .arg("-r")
            .arg(&requirements)
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
        if let Err(e) = verify_wheel(&wheel, package) {
            let _ = fs::remove_dir_all(&work);
            return Err(e);
        }
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

/// The requirements file for the pinned wheels of `family`, with their
/// hashes.
fn pinned_requirement(family: Family) -> String {
    let prefix = format!("{}-{PINNED_VERSION}-", family.package().replace('-', "_"));
    let mut line = format!("{}=={PINNED_VERSION}", family.package());
    for (name, hash) in PINNED_WHEELS {
        if name.starts_with(&prefix) {
            line.push_str(&format!(" --hash=sha256:{hash}"));
        }
    }
    line.push('\n');
    line
}

/// Refuses a wheel whose SHA-256 is not the one pinned for its file name.
fn verify_wheel(wheel: &Path, package: &str) -> Result<(), LibraryError> {
    let actual = sha256_file(wheel)?;
    let name = wheel
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    let expected = match PINNED_WHEELS.iter().find(|(n, _)| *n == name) {
        Some((_, hash)) if *hash == actual => return Ok(()),
        Some((_, hash)) => format!("not the pinned {hash}"),
        None => "and no wheel of that name is pinned".to_owned(),
    };
    Err(LibraryError::Hash {
        path: wheel.to_owned(),
        actual,
        expected,
        package: package.to_owned(),
        version: PINNED_VERSION.to_owned(),
    })
}

/// The SHA-256 of a file, in lower-case hex: *ring*'s, through the TLS
/// provider the server already links.
fn sha256_file(path: &Path) -> Result<String, LibraryError> {
    let hash = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .map(|suite| suite.common.hash_provider)
        .filter(|h| h.algorithm() == rustls::crypto::hash::HashAlgorithm::SHA256)
        .ok_or_else(|| LibraryError::Wheel {
            path: path.to_owned(),
            reason: "no SHA-256 implementation to check it with".into(),
        })?;
    let mut file = File::open(path).map_err(io_err("opening", path))?;
    let mut context = hash.start();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err("reading", path))?;
        if n == 0 {
            break;
        }
        context.update(&buf[..n]);
    }
    Ok(context
        .finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_is_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("abc");
        fs::write(&file, b"abc").unwrap();
        assert_eq!(
            sha256_file(&file).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn every_family_pins_hashes_for_pip() {
        for family in [Family::Cpu, Family::Cuda, Family::Cann] {
            let line = pinned_requirement(family);
            assert!(line.starts_with(&format!("{}==1.24.4 --hash=sha256:", family.package())));
            assert!(line.matches("--hash=").count() >= 6, "{line}");
        }
        assert_eq!(
            pinned_requirement(Family::Cpu).matches("--hash=").count(),
            12
        );
    }

    /// A "Python" whose pip leaves a wheel of a pinned name but other
    /// bytes: provisioning refuses it, naming both hashes, and leaves no
    /// library behind.
    #[test]
    fn a_download_with_another_hash_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let name = PINNED_WHEELS[1].0;
        let script = dir.path().join("fake-python");
        fs::write(
            &script,
            format!(
                "#!/bin/sh\nwhile [ $# -gt 0 ]; do\n  if [ \"$1\" = --dest ]; then shift; printf 'not the wheel' > \"$1/{name}\"; fi\n  shift\ndone\n"
            ),
        )
        .unwrap();
        fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
        let resolver = Resolver {
            explicit: None,
            family: Family::Cpu,
            cache_dir: dir.path().join("cache"),
            python: script.display().to_string(),
        };
        let e = resolver.provision().unwrap_err();
        assert!(matches!(e, LibraryError::Hash { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("not the pinned {}", PINNED_WHEELS[1].1)),
            "{text}"
        );
        assert!(text.contains("refusing to use it"), "{text}");
        assert!(complete_library(&resolver.provision_dir()).is_none());
    }
}
