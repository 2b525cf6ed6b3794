//! Protobuf's JSON mapping of the generated messages, by reflection over
//! the compiled descriptors: the form Triton's REST routes answer with
//! where its gRPC RPCs answer with the message (model configuration,
//! statistics). Proto field names, 64-bit integers as numbers, enums by
//! name, and every field written, defaults included (clients read
//! `max_batch_size` even when it is 0).
//!
//! ```
//! use serving_proto::json_mapping::to_json;
//! use serving_proto::pb::inference::{ModelStatistics, ModelStatisticsResponse};
//!
//! let stats = ModelStatisticsResponse {
//!     model_stats: vec![ModelStatistics { name: "m".into(), inference_count: 3, ..Default::default() }],
//! };
//! let json = to_json(&stats, "inference.ModelStatisticsResponse").unwrap();
//! assert_eq!(json["model_stats"][0]["inference_count"], 3);
//! assert_eq!(json["model_stats"][0]["execution_count"], 0);
//!
//! let back: ModelStatisticsResponse =
//!     serving_proto::json_mapping::from_json(&json, "inference.ModelStatisticsResponse").unwrap();
//! assert_eq!(back, stats);
//! ```

use prost_reflect::{DeserializeOptions, DynamicMessage, SerializeOptions};

use crate::model_config::POOL;

/// The JSON form of `message`, whose protobuf name is `full_name`
/// (`None` if no compiled message has that name).
pub fn to_json<M: prost::Message>(message: &M, full_name: &str) -> Option<serde_json::Value> {
    let descriptor = POOL.get_message_by_name(full_name)?;
    let mut d = DynamicMessage::new(descriptor);
    d.transcode_from(message).ok()?;
    let options = SerializeOptions::new()
        .use_proto_field_name(true)
        .stringify_64_bit_integers(false)
        .skip_default_fields(false);
    d.serialize_with_options(serde_json::value::Serializer, &options)
        .ok()
}

/// A message of type `M` (protobuf name `full_name`) read from its JSON
/// form: fields by their proto or JSON names, 64-bit integers as numbers
/// or strings, enums by name or number; fields this build does not know
/// are skipped (a newer server may send more).
pub fn from_json<M: prost::Message + Default>(
    json: &serde_json::Value,
    full_name: &str,
) -> Result<M, JsonMappingError> {
    let descriptor = POOL
        .get_message_by_name(full_name)
        .ok_or_else(|| JsonMappingError(format!("no compiled message is named {full_name}")))?;
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let d = DynamicMessage::deserialize_with_options(descriptor, json, &options)
        .map_err(|e| JsonMappingError(format!("not a valid {full_name}: {e}")))?;
    d.transcode_to::<M>()
        .map_err(|e| JsonMappingError(format!("not a valid {full_name}: {e}")))
}

/// JSON that is not the form of the message asked for.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonMappingError(String);
