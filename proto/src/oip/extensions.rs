//! The bodies of Triton's repository and system-shared-memory extensions
//! on REST, typed, and their conversions from the gRPC messages: one
//! definition that the server writes and the client reads (model
//! configuration and statistics are the generated messages themselves, in
//! protobuf's JSON mapping: [`crate::json_mapping`]).
//!
//! ```
//! use serving_proto::oip::extensions::RepositoryModel;
//!
//! let index: Vec<RepositoryModel> =
//!     serde_json::from_str(r#"[{"name": "add", "version": "1", "state": "READY"}]"#)?;
//! assert_eq!(index[0].state, "READY");
//! assert_eq!(index[0].reason, "");
//! assert_eq!(
//!     serde_json::to_string(&index[0])?,
//!     r#"{"name":"add","version":"1","state":"READY"}"#
//! );
//! # Ok::<(), serde_json::Error>(())
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::pb::inference as pb;

/// One entry of the repository index (`POST /v2/repository/index`): a
/// model version and its state.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RepositoryModel {
    /// The model's name.
    pub name: String,
    /// The version; empty for a model that is unusable as a whole.
    #[serde(default)]
    pub version: String,
    /// `READY`, `UNAVAILABLE`, `LOADING`, `UNLOADING` (Triton's states);
    /// empty where a server does not say.
    #[serde(default)]
    pub state: String,
    /// Why the version is not ready; empty when it is.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

impl From<pb::repository_index_response::ModelIndex> for RepositoryModel {
    fn from(m: pb::repository_index_response::ModelIndex) -> RepositoryModel {
        RepositoryModel {
            name: m.name,
            version: m.version,
            state: m.state,
            reason: m.reason,
        }
    }
}

impl From<RepositoryModel> for pb::repository_index_response::ModelIndex {
    fn from(m: RepositoryModel) -> pb::repository_index_response::ModelIndex {
        pb::repository_index_response::ModelIndex {
            name: m.name,
            version: m.version,
            state: m.state,
            reason: m.reason,
        }
    }
}

/// The body of `POST /v2/repository/index`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryIndexRequest {
    /// Only the versions ready for inference.
    #[serde(default)]
    pub ready: bool,
}

/// The body of `POST /v2/repository/models/{model}/load` and `.../unload`:
/// Triton's parameters (`config`, `file:...` for load,
/// `unload_dependents` for unload), kept as JSON values.
#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct ModelControlRequest {
    /// The parameters by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, serde_json::Value>,
}

/// The body of `POST /v2/systemsharedmemory/region/{name}/register`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterSystemSharedMemory {
    /// The POSIX shared-memory object's name (`shm_open`'s).
    pub key: String,
    /// Where the region starts in the object, in bytes.
    #[serde(default)]
    pub offset: u64,
    /// The region's size in bytes.
    pub byte_size: u64,
}

/// One registered system shared-memory region
/// (`GET /v2/systemsharedmemory[/region/{name}]/status`).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SystemSharedMemoryRegion {
    /// The region's name.
    pub name: String,
    /// The POSIX shared-memory object's name.
    pub key: String,
    /// Where the region starts in the object, in bytes.
    #[serde(default)]
    pub offset: u64,
    /// The region's size in bytes.
    pub byte_size: u64,
}

impl From<pb::system_shared_memory_status_response::RegionStatus> for SystemSharedMemoryRegion {
    fn from(r: pb::system_shared_memory_status_response::RegionStatus) -> SystemSharedMemoryRegion {
        SystemSharedMemoryRegion {
            name: r.name,
            key: r.key,
            offset: r.offset,
            byte_size: r.byte_size,
        }
    }
}

impl From<SystemSharedMemoryRegion> for pb::system_shared_memory_status_response::RegionStatus {
    fn from(r: SystemSharedMemoryRegion) -> pb::system_shared_memory_status_response::RegionStatus {
        pb::system_shared_memory_status_response::RegionStatus {
            name: r.name,
            key: r.key,
            offset: r.offset,
            byte_size: r.byte_size,
        }
    }
}

/// One registered CUDA shared-memory region
/// (`GET /v2/cudasharedmemory[/region/{name}]/status`).
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CudaSharedMemoryRegion {
    /// The region's name.
    pub name: String,
    /// The GPU that holds it.
    #[serde(default)]
    pub device_id: u64,
    /// The region's size in bytes.
    pub byte_size: u64,
}

impl From<pb::cuda_shared_memory_status_response::RegionStatus> for CudaSharedMemoryRegion {
    fn from(r: pb::cuda_shared_memory_status_response::RegionStatus) -> CudaSharedMemoryRegion {
        CudaSharedMemoryRegion {
            name: r.name,
            device_id: r.device_id,
            byte_size: r.byte_size,
        }
    }
}

/// The body of `POST /v2/cudasharedmemory/region/{name}/register`: the
/// `cudaIpcMemHandle_t` of the memory, base64, as Triton's REST route
/// takes it.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RegisterCudaSharedMemory {
    /// `{"b64": ...}`: the handle's bytes.
    pub raw_handle: RawHandle,
    /// The GPU that holds the memory.
    pub device_id: i64,
    /// The region's size in bytes.
    pub byte_size: u64,
}

/// A CUDA IPC handle in JSON: its bytes as base64 under `b64`.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RawHandle {
    /// The handle's bytes, base64.
    pub b64: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_of_requests_are_refused_and_defaults_filled() {
        let r: RepositoryIndexRequest = serde_json::from_str("{}").unwrap();
        assert!(!r.ready);
        assert!(serde_json::from_str::<RepositoryIndexRequest>(r#"{"ready": 1}"#).is_err());
        assert!(serde_json::from_str::<RepositoryIndexRequest>(r#"{"redy": true}"#).is_err());
        let s: RegisterSystemSharedMemory =
            serde_json::from_str(r#"{"key": "/k", "byte_size": 8}"#).unwrap();
        assert_eq!(s.offset, 0);
        assert!(serde_json::from_str::<RegisterSystemSharedMemory>(r#"{"key": "/k"}"#).is_err());
    }
}
