//! What a REST request holds of the server's memory once its body has
//! arrived, charged to the budget (`--max-incoming-mb`) before it is
//! allocated: the body itself, and what decoding its JSON builds (charged
//! by the decoders as they go, see [`serving_proto::json_charge`]), until
//! the request is answered. The body was charged while it arrived
//! ([`super::read_body`]).

use serving_proto::gather::{Charge, Exhausted};
use serving_proto::json_charge::{self, Refusal};

use crate::error::ServeError;
use crate::service::State;

/// Why a request could not be taken in.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The budget refused the body, or part of what decoding it builds.
    Budget(Refusal),
    /// The server is shutting down (a blocking decode was cancelled).
    ShuttingDown,
}

impl Refused {
    /// Whether the request needs more than the whole budget (413), or
    /// only more than is free now (503, retry).
    pub(crate) fn never_fits(&self) -> bool {
        matches!(self, Refused::Budget(r) if r.never_fits())
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Budget(r) if r.never_fits() => write!(
                f,
                "the request, decoded, needs at least {} bytes of server memory, more than the {} bytes this server gives all requests together (--max-incoming-mb)",
                r.needed, r.exhausted.limit
            ),
            Refused::Budget(r) => r.exhausted.fmt(f),
            Refused::ShuttingDown => f.write_str("the server is shutting down"),
        }
    }
}

impl From<Refused> for ServeError {
    fn from(r: Refused) -> ServeError {
        if r.never_fits() {
            ServeError::ResourceExhausted(r.to_string())
        } else {
            ServeError::Unavailable(r.to_string())
        }
    }
}

/// Charges a body of `len` bytes that has arrived.
pub(crate) fn charge_body(state: &State, len: usize) -> Result<Charge, Refused> {
    state
        .incoming
        .charge(len as u64)
        .map_err(|exhausted: Exhausted| {
            Refused::Budget(Refusal {
                needed: len as u64,
                exhausted,
            })
        })
}

/// Runs `decode` with what it builds charged to `charge` (the body's),
/// off the async workers when `large`: its result and the charge, to be
/// dropped once the request is answered.
pub(crate) async fn decode<T: Send + 'static>(
    charge: Charge,
    large: bool,
    decode: impl FnOnce() -> T + Send + 'static,
) -> Result<(T, Charge), Refused> {
    super::oip::off_workers(large, move || json_charge::charged(charge, decode))
        .await
        .ok_or(Refused::ShuttingDown)?
        .map_err(Refused::Budget)
}
