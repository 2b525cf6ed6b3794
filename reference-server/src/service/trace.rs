//! Triton's `trace` extension, for both transports: the trace settings of
//! the server (`model` empty) or of one model, by Triton's names, as lists
//! of strings (`trace_level` `["TIMESTAMPS"]`, `trace_rate` `["1"]`, ...),
//! read and changed. A setting given as none (JSON `null`, an empty list)
//! takes the server's value again for a model.

use super::State;
use crate::error::ServeError;
use crate::trace::{self, Level, Mode, TraceSettings};
use serving_proto::text::quote;

/// The settings by Triton's names.
fn named(s: &TraceSettings) -> Vec<(&'static str, Vec<String>)> {
    vec![
        (
            "trace_level",
            vec![match s.level {
                Level::Off => "OFF".to_owned(),
                _ => "TIMESTAMPS".to_owned(),
            }],
        ),
        ("trace_rate", vec![s.rate.to_string()]),
        ("trace_count", vec![s.count.to_string()]),
        ("log_frequency", vec![s.log_frequency.to_string()]),
        ("trace_file", vec![s.file.clone()]),
        (
            "trace_mode",
            vec![match s.mode {
                Mode::OpenTelemetry => "opentelemetry".to_owned(),
                _ => "triton".to_owned(),
            }],
        ),
    ]
}

fn check_model(state: &State, model: &str) -> Result<(), ServeError> {
    if model.is_empty() || !state.registry.versions(model).is_empty() {
        return Ok(());
    }
    Err(ServeError::NotFound(format!(
        "model '{}' is not found",
        quote(model)
    )))
}

/// The settings of `model` (`""`: the server's).
pub(crate) fn settings(
    state: &State,
    model: &str,
) -> Result<Vec<(&'static str, Vec<String>)>, ServeError> {
    check_model(state, model)?;
    Ok(named(&state.traces.settings(model)))
}

/// Changes the settings of `model` named in `changes` (`None`: back to the
/// server's value); returns them all.
pub(crate) fn update(
    state: &State,
    model: &str,
    changes: Vec<(String, Option<Vec<String>>)>,
) -> Result<Vec<(&'static str, Vec<String>)>, ServeError> {
    check_model(state, model)?;
    let server = state.traces.settings("");
    let updated = state
        .traces
        .update(model, |s| {
            for (name, value) in changes {
                let one = |v: &[String]| match v {
                    [one] => Ok(one.clone()),
                    _ => Err(format!("trace setting '{name}' takes one value")),
                };
                let number = |v: &[String]| {
                    one(v)?
                        .parse::<i64>()
                        .map_err(|_| format!("trace setting '{name}' must be a number"))
                };
                match (name.as_str(), value) {
                    ("trace_level", None) => s.level = server.level,
                    ("trace_level", Some(v)) => {
                        let levels: Vec<&str> = v.iter().map(String::as_str).collect();
                        s.level = trace::parse_level(&levels)?;
                    }
                    ("trace_rate", None) => s.rate = server.rate,
                    ("trace_rate", Some(v)) => match number(&v)? {
                        n if n >= 1 => s.rate = n as u64,
                        _ => return Err("trace setting 'trace_rate' must be at least 1".into()),
                    },
                    ("trace_count", None) => s.count = server.count,
                    ("trace_count", Some(v)) => match number(&v)? {
                        n if n >= -1 => s.count = n,
                        _ => return Err("trace setting 'trace_count' must be -1 (no limit) or more".into()),
                    },
                    ("log_frequency", None) => s.log_frequency = server.log_frequency,
                    ("log_frequency", Some(v)) => match number(&v)? {
                        n if n >= 0 => s.log_frequency = n as u64,
                        _ => return Err("trace setting 'log_frequency' must be 0 or more".into()),
                    },
                    // A client naming a file the server writes would be a
                    // write anywhere the server may: Triton refuses it too.
                    ("trace_file", _) => {
                        return Err("trace file location can not be updated through network protocol: start the server with --trace-config triton,file=PATH".into());
                    }
                    ("trace_mode", None) => s.mode = server.mode,
                    ("trace_mode", Some(v)) => s.mode = trace::parse_mode(&one(&v)?)?,
                    _ => {
                        return Err(format!(
                            "unknown trace setting '{}': the settings are trace_level, trace_rate, trace_count, log_frequency, trace_file and trace_mode",
                            quote(&name)
                        ));
                    }
                }
            }
            Ok(())
        })
        .map_err(ServeError::InvalidArgument)?;
    Ok(named(&updated))
}
