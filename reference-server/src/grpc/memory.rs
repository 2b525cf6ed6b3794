//! What a gRPC request holds of the server's memory, charged to the budget
//! (`--max-incoming-mb`) before it is allocated: a compressed message while
//! it inflates, and a whole message with the structures decoding it builds
//! (counted from its bytes by [`serving_proto::decode_cost`]) until it is
//! answered.

use bytes::Bytes;
use serving_proto::compression::{self, Encoding};
use serving_proto::gather::{Charge, Exhausted};
use tonic::Status;

use crate::service::State;

/// Why a message could not be taken in.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The server's memory for requests is spent (or the message could
    /// never fit it): the message itself may be fine, so a stream answers
    /// it like a failed request and goes on.
    Budget(Status),
    /// The message is bad (it inflates past the limit, or is not valid
    /// compressed data): a stream ends.
    Message(Status),
}

impl From<Refused> for Status {
    fn from(r: Refused) -> Status {
        match r {
            Refused::Budget(s) | Refused::Message(s) => s,
        }
    }
}

/// Charges `bytes` for a request; a request that could never fit the budget
/// is RESOURCE_EXHAUSTED, one that does not fit now UNAVAILABLE (retry).
pub(crate) fn charge(state: &State, bytes: u64, what: &str) -> Result<Charge, Status> {
    state.incoming.charge(bytes).map_err(|e| refusal(e, what))
}

/// The status of a refused charge.
fn refusal(e: Exhausted, what: &str) -> Status {
    if e.wanted > e.limit {
        Status::resource_exhausted(format!(
            "{what} needs {} bytes of server memory, more than the {} bytes this server gives all requests together (--max-incoming-mb)",
            e.wanted, e.limit
        ))
    } else {
        Status::unavailable(e.to_string())
    }
}

/// Charges a received message of `len` bytes and the `decoded` bytes of
/// structures decoding it builds, continuing `inflating` (the charge its
/// inflation held, which then becomes this one) when it was compressed.
pub(crate) fn charge_message(
    state: &State,
    inflating: Option<Charge>,
    len: usize,
    decoded: u64,
) -> Result<Charge, Refused> {
    let bytes = (len as u64).saturating_add(decoded);
    let what = "the request, decoded,";
    match inflating {
        Some(mut charge) => match charge.set(bytes) {
            Ok(()) => Ok(charge),
            Err(e) => Err(Refused::Budget(refusal(e, what))),
        },
        None => charge(state, bytes, what).map_err(Refused::Budget),
    }
}

/// Inflates `packed` under `limit` bytes, off the connection's thread,
/// charging the compressed bytes and the output before it is allocated
/// (see [`compression::inflate_charged`]); the charge comes back with the
/// message, for [`charge_message`] to turn into what the message keeps.
pub(crate) async fn inflate(
    state: &State,
    encoding: Encoding,
    packed: Bytes,
    limit: u64,
) -> Result<(Bytes, Charge), Refused> {
    let packed_len = packed.len() as u64;
    let mut charge = charge(state, packed_len, "inflating the request").map_err(Refused::Budget)?;
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let inflated = tokio::task::spawn_blocking(move || {
        let mut refused = None;
        let result = compression::inflate_charged(encoding, &packed, limit, &mut |n| match charge
            .set(packed_len.saturating_add(n as u64))
        {
            Ok(()) => true,
            Err(e) => {
                refused = Some(e);
                false
            }
        });
        (result, refused, charge)
    })
    .await;
    match inflated {
        Ok((Ok(bytes), _, charge)) => Ok((Bytes::from(bytes), charge)),
        Ok((Err(e @ compression::InflateError::TooLarge { .. }), _, _)) => Err(Refused::Message(
            Status::resource_exhausted(format!("Received message larger than max: {e}")),
        )),
        Ok((Err(compression::InflateError::Refused { .. }), Some(e), _)) => {
            Err(Refused::Budget(refusal(e, "inflating the request")))
        }
        Ok((Err(e), _, _)) => Err(Refused::Message(Status::internal(e.to_string()))),
        Err(e) => Err(Refused::Message(Status::internal(e.to_string()))),
    }
}
