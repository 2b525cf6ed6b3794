//! The MindSpore Serving protocol: gRPC `MSService.Predict` and the REST API.
//!
//! Both transports carry a list of *instances*, each a map of named tensors,
//! and answer per instance: an instance succeeds with its outputs or fails
//! with an in-band error ([`ServableError`]). The reply rules of spec §2.5 (a
//! single error entry applies to the whole request; identical failures
//! collapse into one) are implemented once, in [`Outcome`].

pub mod grpc;
pub mod rest;
pub mod url;

use crate::NamedTensors;
use crate::text::quote;

/// MindSpore Serving's `StatusCode`, carried in `ErrorMsg.error_code`.
///
/// Clients should treat any non-zero code as an error and not depend on the
/// specific value: the same text can come with different codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StatusCode {
    /// 0: success (per-instance entries of a mixed reply).
    Success,
    /// 1: queue full and miscellaneous failures.
    Failed,
    /// 2: bad request: unknown servable or method, missing input, bad tensor.
    InvalidInputs,
    /// 3: a stage or the runtime failed.
    SystemError,
    /// 4: a worker could not be reached.
    WorkerUnavailable,
    /// 5: no replica of the servable is alive.
    ServableUnavailable,
}

impl StatusCode {
    /// The wire value.
    pub const fn code(self) -> i64 {
        match self {
            StatusCode::Success => 0,
            StatusCode::Failed => 1,
            StatusCode::InvalidInputs => 2,
            StatusCode::SystemError => 3,
            StatusCode::WorkerUnavailable => 4,
            StatusCode::ServableUnavailable => 5,
        }
    }

    /// The status of a wire value; `None` for values outside the table.
    pub const fn from_code(code: i64) -> Option<StatusCode> {
        Some(match code {
            0 => StatusCode::Success,
            1 => StatusCode::Failed,
            2 => StatusCode::InvalidInputs,
            3 => StatusCode::SystemError,
            4 => StatusCode::WorkerUnavailable,
            5 => StatusCode::ServableUnavailable,
            _ => return None,
        })
    }
}

/// An in-band error of a servable: a non-zero code and its text.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ServableError {
    /// The `error_code`, non-zero. REST replies carry no code; errors decoded
    /// from them have code 1 (`FAILED`).
    pub code: i64,
    /// The error text, exactly as the server wrote it.
    pub message: String,
}

impl ServableError {
    /// An error with a known status code.
    pub fn new(code: StatusCode, message: impl Into<String>) -> ServableError {
        ServableError {
            code: code.code(),
            message: message.into(),
        }
    }

    /// The same error with another status code.
    pub fn with_code(mut self, code: StatusCode) -> ServableError {
        self.code = code.code();
        self
    }

    /// `Request servable({name}) method({method}) , servable is not available`,
    /// with MindSpore's exact spacing for an explicit version (code 2).
    pub fn servable_not_available(servable: &str, method: &str, version: u64) -> ServableError {
        let (servable, method) = (quote(servable), quote(method));
        let message = if version == 0 {
            format!("Request servable({servable}) method({method}) , servable is not available")
        } else {
            format!(
                "Request servable({servable}) method({method})  version({version}) , servable is not available"
            )
        };
        ServableError::new(StatusCode::InvalidInputs, message)
    }

    /// `Request servable({name}) method({method}) , method is not available` (code 2).
    pub fn method_not_available(servable: &str, method: &str) -> ServableError {
        let (servable, method) = (quote(servable), quote(method));
        ServableError::new(
            StatusCode::InvalidInputs,
            format!("Request servable({servable}) method({method}) , method is not available"),
        )
    }

    /// `Serving Error: enqueued requests count exceeds the limit {limit}` (code 1).
    pub fn queue_full(limit: usize) -> ServableError {
        ServableError::new(
            StatusCode::Failed,
            format!("Serving Error: enqueued requests count exceeds the limit {limit}"),
        )
    }

    /// `Cannot find input {input} in instance input , servable {name}, method {method}` (code 2).
    pub fn missing_input(input: &str, servable: &str, method: &str) -> ServableError {
        let (input, servable, method) = (quote(input), quote(servable), quote(method));
        ServableError::new(
            StatusCode::InvalidInputs,
            format!(
                "Cannot find input {input} in instance input , servable {servable}, method {method}"
            ),
        )
    }
}

/// The result of one instance: its outputs, or its in-band error.
pub type InstanceResult = Result<NamedTensors, ServableError>;

/// What a MindSpore reply says, after the rules of spec §2.5.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// The whole request failed with one error (form 1, and form 4 after
    /// collapsing identical per-instance failures).
    Failed(ServableError),
    /// One result per instance, in request order (forms 2 and 3).
    Instances(Vec<InstanceResult>),
}

impl Outcome {
    /// Applies the collapse rule to per-instance results: when every instance
    /// failed with the same code and text, the outcome is that one error.
    pub fn from_results(results: Vec<InstanceResult>) -> Outcome {
        if let Some(Err(first)) = results.first()
            && results.iter().all(|r| r.as_ref().err() == Some(first))
        {
            return Outcome::Failed(first.clone());
        }
        Outcome::Instances(results)
    }

    /// The result of instance `index`: a request-level failure applies to
    /// every instance.
    pub fn instance(&self, index: usize) -> Option<InstanceResult> {
        match self {
            Outcome::Failed(e) => Some(Err(e.clone())),
            Outcome::Instances(results) => results.get(index).cloned(),
        }
    }
}

/// A decoded `Predict` request: which method of which servable, and the
/// instances to run it on.
#[derive(Clone, Debug, PartialEq)]
pub struct PredictRequest {
    /// Servable name.
    pub servable: String,
    /// Method name.
    pub method: String,
    /// Version; 0 means the newest loaded version.
    pub version: u64,
    /// The instances, at least one.
    pub instances: Vec<NamedTensors>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_failures_collapse_and_mixed_ones_do_not() {
        let e = ServableError::new(StatusCode::InvalidInputs, "bad");
        let all_same = Outcome::from_results(vec![Err(e.clone()), Err(e.clone())]);
        assert_eq!(all_same, Outcome::Failed(e.clone()));
        let other = ServableError::new(StatusCode::InvalidInputs, "worse");
        let different = Outcome::from_results(vec![Err(e.clone()), Err(other)]);
        assert!(matches!(different, Outcome::Instances(ref r) if r.len() == 2));
        let mixed = Outcome::from_results(vec![Ok(NamedTensors::new()), Err(e.clone())]);
        assert_eq!(mixed.instance(1), Some(Err(e)));
        assert_eq!(Outcome::from_results(vec![]), Outcome::Instances(vec![]));
    }

    #[test]
    fn not_available_texts_keep_mindspore_spacing() {
        assert_eq!(
            ServableError::servable_not_available("add", "add_common", 0).message,
            "Request servable(add) method(add_common) , servable is not available"
        );
        assert_eq!(
            ServableError::servable_not_available("add", "add_common", 2).message,
            "Request servable(add) method(add_common)  version(2) , servable is not available"
        );
        assert_eq!(
            ServableError::method_not_available("add", "add_common2").message,
            "Request servable(add) method(add_common2) , method is not available"
        );
        assert_eq!(
            ServableError::queue_full(1).message,
            "Serving Error: enqueued requests count exceeds the limit 1"
        );
        assert_eq!(
            ServableError::missing_input("x1", "add", "add_common").message,
            "Cannot find input x1 in instance input , servable add, method add_common"
        );
    }
}
