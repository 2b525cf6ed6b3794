//! ONNX Runtime: the library, the process-wide environment, sessions on
//! devices, and tensors in and out of sessions.

pub mod device;
pub mod library;
pub mod tensor_io;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::environment::Environment;
use ort::ep;
use ort::session::Session;

use device::Device;
use library::{Family, LibraryError, Located, Resolver};

/// Why ONNX Runtime cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// No library found or provisioned.
    #[error(transparent)]
    Library(#[from] LibraryError),
    /// The library is older than the `ort` API level accepts.
    #[error(
        "ONNX Runtime {found} at {path} is too old: this server uses the ONNX Runtime 1.{min} API and needs version 1.{min} or newer; pass --ort-lib with a newer libonnxruntime.so or remove the override to provision {pinned}",
        min = library::MIN_MINOR,
        pinned = library::PINNED_VERSION
    )]
    TooOld {
        /// The version found.
        found: String,
        /// Where.
        path: PathBuf,
    },
    /// The library could not be loaded.
    #[error("cannot load ONNX Runtime from {path}: {reason}")]
    Load {
        /// The library.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },
    /// The environment could not be created.
    #[error("cannot create the ONNX Runtime environment: {0}")]
    Environment(String),
    /// A device cannot be used.
    #[error(
        "device {device} cannot be used with ONNX Runtime {library}: {reason}. Check the device's driver and runtime libraries, or pass --allow-cpu-fallback to run this replica on the CPU"
    )]
    Device {
        /// The device.
        device: Device,
        /// The library in use.
        library: String,
        /// ONNX Runtime's cause.
        reason: String,
    },
    /// A model could not be loaded.
    #[error("cannot load model {model}: {reason}")]
    Model {
        /// Which model.
        model: String,
        /// ONNX Runtime's cause.
        reason: String,
    },
}

/// The loaded ONNX Runtime and its one environment.
#[derive(Clone, Debug)]
pub struct Runtime {
    environment: Environment,
    library: Located,
    version: String,
}

static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);

impl Runtime {
    /// Loads ONNX Runtime for `family` (resolving or provisioning the
    /// library) and creates the environment, once per process: later calls
    /// return the same runtime, since one process can load one library.
    pub fn global(explicit: Option<PathBuf>, family: Family) -> Result<Arc<Runtime>, RuntimeError> {
        let mut slot = RUNTIME.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(rt) = slot.as_ref() {
            return Ok(rt.clone());
        }
        let library = Resolver::from_env(explicit, family).resolve()?;
        let rt = Arc::new(Runtime::load(library)?);
        *slot = Some(rt.clone());
        Ok(rt)
    }

    fn load(library: Located) -> Result<Runtime, RuntimeError> {
        let path = library.path.clone();
        let version = tensor_io::library_version(&path).unwrap_or_else(|| "unknown".into());
        if library::minor_version(&version).is_some_and(|m| m < library::MIN_MINOR) {
            return Err(RuntimeError::TooOld {
                found: version,
                path,
            });
        }
        let builder = ort::init_from(&path).map_err(|e| match e {
            ort::LoadDynamicError::BadVersion { version_str, path } => RuntimeError::TooOld {
                found: version_str,
                path,
            },
            other => RuntimeError::Load {
                path: path.clone(),
                reason: other.to_string(),
            },
        })?;
        let environment = builder
            .with_name("serving")
            .with_telemetry(false)
            .build()
            .map_err(|e| RuntimeError::Environment(e.to_string()))?;
        environment.set_log_level(ort::logging::LogLevel::Warning);
        tracing::info!(path = %path.display(), %version, origin = %library.origin, "ONNX Runtime loaded");
        Ok(Runtime {
            environment,
            library,
            version,
        })
    }

    /// The ONNX Runtime version, such as `1.24.4`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The library in use and how it was found.
    pub fn library(&self) -> &Located {
        &self.library
    }

    /// Loads a model on a device. A device whose execution provider cannot
    /// be registered is an error carrying ONNX Runtime's cause, unless
    /// `cpu_fallback`, which logs a warning and loads on the CPU instead.
    pub fn session(
        &self,
        model: &str,
        bytes: &[u8],
        device: Device,
        intra_threads: usize,
        cpu_fallback: bool,
    ) -> Result<Session, RuntimeError> {
        let model_err = |e: ort::Error| RuntimeError::Model {
            model: model.to_owned(),
            reason: e.to_string(),
        };
        let builder = || -> Result<_, RuntimeError> {
            Session::builder(&self.environment)
                .map_err(model_err)?
                .with_intra_threads(intra_threads.max(1))
                .map_err(|e| model_err(e.into()))
        };
        let provider = match device {
            Device::Cpu => None,
            Device::Cuda(id) => Some(ep::CUDA::default().with_device_id(id).build()),
            Device::Cann(id) => Some(ep::CANN::default().with_device_id(id).build()),
        };
        let mut b = builder()?;
        if let Some(provider) = provider {
            match b.with_execution_providers([provider.error_on_failure()]) {
                Ok(with_ep) => b = with_ep,
                Err(e) => {
                    let err: ort::Error = e.into();
                    let reason = err.to_string().trim_end().trim_end_matches('.').to_owned();
                    if !cpu_fallback {
                        return Err(RuntimeError::Device {
                            device,
                            library: format!(
                                "{} ({})",
                                self.library.path.display(),
                                self.library.origin
                            ),
                            reason,
                        });
                    }
                    tracing::warn!(%device, %reason, model, "device unusable; --allow-cpu-fallback: running this replica on the CPU");
                    b = builder()?;
                }
            }
        }
        b.commit_from_memory(bytes).map_err(model_err)
    }

    /// Reads a model file for [`Runtime::session`].
    pub fn read_model(path: &Path) -> Result<Vec<u8>, RuntimeError> {
        std::fs::read(path).map_err(|e| RuntimeError::Model {
            model: path.display().to_string(),
            reason: e.to_string(),
        })
    }
}
