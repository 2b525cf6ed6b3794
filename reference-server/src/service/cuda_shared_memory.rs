//! Triton's CUDA shared-memory extension, as a server without CUDA memory
//! answers it: no region is ever registered, so the status lists none and
//! unregistering succeeds (tools that clean up at exit, tritonclient's
//! examples and perf_analyzer among them, call it unconditionally, and
//! Triton without a GPU answers it so), and a registration is refused with
//! what to use instead.
//!
//! The extension is not announced in the server metadata: it cannot be
//! used here.

use serving_proto::text::quote;

use crate::error::ServeError;

/// Why a registration is refused.
pub(crate) const UNSUPPORTED: &str = "CUDA shared memory is not supported: this server keeps tensors in host memory; use system shared memory (--allow-shared-memory)";

/// The registered regions: none. A named region is not found.
pub(crate) fn status(name: &str) -> Result<(), ServeError> {
    if name.is_empty() {
        Ok(())
    } else {
        Err(ServeError::NotFound(format!(
            "Unable to find cuda shared memory region: '{}'",
            quote(name)
        )))
    }
}

/// A registration: refused.
pub(crate) fn register(name: &str) -> ServeError {
    ServeError::Unsupported(format!(
        "failed to register CUDA shared memory region '{}': {UNSUPPORTED}",
        quote(name)
    ))
}

/// Unregistering a region, or all of them: nothing is registered, so it
/// succeeds, as Triton's does for a name it does not know.
pub(crate) fn unregister(_name: &str) -> Result<(), ServeError> {
    Ok(())
}
