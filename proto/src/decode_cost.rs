//! What decoding a request message would allocate, read from its bytes
//! without decoding it.
//!
//! prost turns every entry of a repeated message field into a struct of
//! its own: an empty `InferInputTensor` costs two bytes on the wire
//! (`2a 00`) and about 300 bytes decoded, so a 10 MB `ModelInferRequest`
//! of empty inputs asks for gigabytes before any check can run. The
//! walkers here count, in one pass over the wire format and with no
//! allocation, an upper bound of the bytes [`prost::Message::decode`]
//! allocates for [`ModelInferRequest`] and [`PredictRequest`] (the `bytes`
//! fields decoded from a [`bytes::Bytes`] share its buffer and cost only
//! their handle). A server charges that figure to its memory
//! budget, or refuses the message, before decoding it.
//!
//! The bound counts every vector at four times its elements (vectors grow
//! by doubling, the old buffer lives while the new one is filled, and the
//! first allocation holds four), every map entry as a tree node's share, and every string
//! copied; a malformed message is walked up to the point where prost
//! would stop, so the figure bounds what prost allocates before it fails.
//!
//! ```
//! use prost::Message;
//! use serving_proto::decode_cost;
//! use serving_proto::pb::inference::ModelInferRequest;
//!
//! // `model_name` and 1000 empty inputs: 2,006 bytes on the wire.
//! let mut wire = vec![0x0a, 0x04, b'n', b'a', b'm', b'e'];
//! for _ in 0..1000 {
//!     wire.extend_from_slice(&[0x2a, 0x00]);
//! }
//! let cost = decode_cost::model_infer_request(&wire);
//! assert!(cost > 100 * wire.len() as u64, "{cost}");
//! assert_eq!(ModelInferRequest::decode(&wire[..]).unwrap().inputs.len(), 1000);
//! ```

use std::mem::size_of;

use bytes::Bytes;

use crate::pb::inference::{
    InferParameter, InferTensorContents, ModelInferRequest, model_infer_request,
};
use crate::pb::mindspore::{
    Instance, PredictRequest, ServableSpec, ShmTensorData, Tensor, TensorShape,
};

/// The bytes `ModelInferRequest::decode` may allocate for `message` (also
/// each message of `ModelStreamInfer`).
pub fn model_infer_request(message: &[u8]) -> u64 {
    size_of::<ModelInferRequest>() as u64 + walk(message, &MODEL_INFER_REQUEST, 0)
}

/// The bytes `PredictRequest::decode` may allocate for `message`.
pub fn predict_request(message: &[u8]) -> u64 {
    size_of::<PredictRequest>() as u64 + walk(message, &PREDICT_REQUEST, 0)
}

/// How a field's entries decode.
#[derive(Clone, Copy)]
enum Kind {
    /// A `string`: copied.
    Str,
    /// A `bytes` field decoded as [`Bytes`]: shares the message's buffer.
    Bytes,
    /// A singular message: boxed or inline; its own fields count.
    Message(&'static Schema<'static>),
    /// A repeated message: each entry is a struct of `Schema::size`.
    Repeated(&'static Schema<'static>),
    /// A repeated `bytes`: a [`Bytes`] handle per entry.
    RepeatedBytes,
    /// A repeated scalar of this many bytes per element, packed or not.
    RepeatedScalar(u64, Wire),
    /// A `map<string, V>` entry: the key copied, `V` decoded.
    Map(&'static Schema<'static>),
}

/// How a packed scalar is laid out on the wire.
#[derive(Clone, Copy)]
enum Wire {
    Varint,
    Fixed32,
    Fixed64,
}

/// A message type: its decoded size and the fields that allocate.
struct Schema<'a> {
    size: usize,
    fields: &'a [(u32, Kind)],
}

/// A vector's peak over its elements' size: it doubles, and the old
/// buffer is alive while it is copied into the new one (3x); its first
/// allocation holds 4 elements (Rust's smallest capacity for elements of
/// up to 1 KiB), so one element costs 4.
const VEC_GROWTH: u64 = 4;

/// The smallest allocation of a non-empty string.
const MIN_STRING: u64 = 8;

/// A BTreeMap node holds up to 11 entries and is allocated whole: a map's
/// first entry costs a node, each later one twice its share of a node
/// (nodes split half full), plus the node's own links.
const MAP_NODE_ENTRIES: u64 = 11;
const MAP_NODE_SHARE: u64 = 16;

/// How deep messages nest here at most; deeper data is not ours (prost
/// refuses recursion past 100 anyway).
const MAX_DEPTH: u32 = 8;

const PARAMETER: Schema = Schema {
    size: size_of::<InferParameter>(),
    fields: &[(3, Kind::Str)],
};

const CONTENTS: Schema = Schema {
    size: size_of::<InferTensorContents>(),
    fields: &[
        (1, Kind::RepeatedScalar(1, Wire::Varint)),
        (2, Kind::RepeatedScalar(4, Wire::Varint)),
        (3, Kind::RepeatedScalar(8, Wire::Varint)),
        (4, Kind::RepeatedScalar(4, Wire::Varint)),
        (5, Kind::RepeatedScalar(8, Wire::Varint)),
        (6, Kind::RepeatedScalar(4, Wire::Fixed32)),
        (7, Kind::RepeatedScalar(8, Wire::Fixed64)),
        (8, Kind::RepeatedBytes),
    ],
};

const INPUT: Schema = Schema {
    size: size_of::<model_infer_request::InferInputTensor>(),
    fields: &[
        (1, Kind::Str),
        (2, Kind::Str),
        (3, Kind::RepeatedScalar(8, Wire::Varint)),
        (4, Kind::Map(&PARAMETER)),
        (5, Kind::Message(&CONTENTS)),
    ],
};

const OUTPUT: Schema = Schema {
    size: size_of::<model_infer_request::InferRequestedOutputTensor>(),
    fields: &[(1, Kind::Str), (2, Kind::Map(&PARAMETER))],
};

const MODEL_INFER_REQUEST: Schema = Schema {
    size: size_of::<ModelInferRequest>(),
    fields: &[
        (1, Kind::Str),
        (2, Kind::Str),
        (3, Kind::Str),
        (4, Kind::Map(&PARAMETER)),
        (5, Kind::Repeated(&INPUT)),
        (6, Kind::Repeated(&OUTPUT)),
        (7, Kind::RepeatedBytes),
    ],
};

const SPEC: Schema = Schema {
    size: size_of::<ServableSpec>(),
    fields: &[(1, Kind::Str), (2, Kind::Str)],
};

const SHAPE: Schema = Schema {
    size: size_of::<TensorShape>(),
    fields: &[(1, Kind::RepeatedScalar(8, Wire::Varint))],
};

const SHM: Schema = Schema {
    size: size_of::<ShmTensorData>(),
    fields: &[(1, Kind::Str)],
};

const MS_TENSOR: Schema = Schema {
    size: size_of::<Tensor>(),
    fields: &[
        (1, Kind::Message(&SHAPE)),
        (3, Kind::Bytes),
        (4, Kind::RepeatedBytes),
        (5, Kind::Message(&SHM)),
    ],
};

const INSTANCE: Schema = Schema {
    size: size_of::<Instance>(),
    fields: &[(1, Kind::Map(&MS_TENSOR)), (2, Kind::Map(&SHM))],
};

const PREDICT_REQUEST: Schema = Schema {
    size: size_of::<PredictRequest>(),
    fields: &[(1, Kind::Message(&SPEC)), (2, Kind::Repeated(&INSTANCE))],
};

/// A map entry (`key = 1`, `value = 2`) whose value has `value`'s schema.
const fn entry(value: &'static Schema<'static>) -> [(u32, Kind); 2] {
    [(1, Kind::Str), (2, Kind::Message(value))]
}

/// Reads a varint at `*at`, advancing; `None` past the end or over 10 bytes.
fn varint(buf: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in 0..10 {
        let byte = *buf.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << (7 * shift);
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// How deep prost follows nested groups before it refuses the message.
const MAX_GROUP_DEPTH: u32 = 100;

/// Skips the group of field `number` whose start tag was just read, up to
/// and past its end tag, as prost does; `None` where prost refuses it.
fn skip_group(buf: &[u8], at: &mut usize, number: u64, depth: u32) -> Option<()> {
    if depth >= MAX_GROUP_DEPTH {
        return None;
    }
    loop {
        let key = varint(buf, at)?;
        let (inner, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(buf, at)?;
            }
            1 | 5 => {
                let width = if wire == 1 { 8 } else { 4 };
                *at = at.checked_add(width).filter(|&end| end <= buf.len())?;
            }
            2 => {
                let len = usize::try_from(varint(buf, at)?).ok()?;
                *at = at.checked_add(len).filter(|&end| end <= buf.len())?;
            }
            3 => skip_group(buf, at, inner, depth + 1)?,
            4 if inner == number => return Some(()),
            _ => return None,
        }
    }
}

/// The bytes allocated decoding the fields of one message of `schema` (its
/// own struct excluded: the caller counts where it lives).
fn walk(buf: &[u8], schema: &Schema<'_>, depth: u32) -> u64 {
    let mut cost = 0u64;
    let mut at = 0usize;
    // The map fields that have had an entry (field numbers are small).
    let mut maps_begun = 0u64;
    while at < buf.len() {
        let Some(key) = varint(buf, &mut at) else {
            break;
        };
        let (number, wire) = (key >> 3, key & 7);
        // The field's payload: a length-delimited slice, or the scalar's
        // width skipped.
        let payload = match wire {
            0 => {
                if varint(buf, &mut at).is_none() {
                    break;
                }
                None
            }
            1 | 5 => {
                let width = if wire == 1 { 8 } else { 4 };
                if buf.len() - at < width {
                    break;
                }
                at += width;
                None
            }
            2 => {
                let Some(len) = varint(buf, &mut at) else {
                    break;
                };
                let Some(end) = usize::try_from(len)
                    .ok()
                    .and_then(|len| at.checked_add(len))
                    .filter(|&end| end <= buf.len())
                else {
                    break;
                };
                let slice = &buf[at..end];
                at = end;
                Some(slice)
            }
            // A group: prost skips one on a field it does not know (and
            // goes on decoding after it), and refuses one on a field it
            // knows, as it refuses an end-group or invalid wire type.
            3 if !schema.fields.iter().any(|(n, _)| u64::from(*n) == number) => {
                if skip_group(buf, &mut at, number, 0).is_none() {
                    break;
                }
                continue;
            }
            _ => break,
        };
        let Some(&(_, kind)) = schema.fields.iter().find(|(n, _)| u64::from(*n) == number) else {
            continue;
        };
        if let Kind::Map(value) = kind
            && maps_begun & (1 << (number % 64)) == 0
        {
            maps_begun |= 1 << (number % 64);
            cost = cost.saturating_add(MAP_NODE_ENTRIES * map_slot(value));
        }
        cost = cost.saturating_add(field_cost(kind, wire, payload, depth));
    }
    cost
}

/// One entry's room in a map node: key, value and links.
fn map_slot(value: &Schema<'_>) -> u64 {
    (size_of::<String>() + value.size) as u64 + MAP_NODE_SHARE
}

fn field_cost(kind: Kind, wire: u64, payload: Option<&[u8]>, depth: u32) -> u64 {
    let nested = |schema: &Schema<'_>, body: &[u8]| {
        if depth >= MAX_DEPTH {
            0
        } else {
            walk(body, schema, depth + 1)
        }
    };
    match (kind, payload) {
        (Kind::Str, Some([])) => 0,
        (Kind::Str, Some(text)) => (text.len() as u64).max(MIN_STRING),
        (Kind::Bytes, _) => 0,
        (Kind::Message(schema), Some(body)) => {
            // Boxed where prost boxes; counting the struct either way is a
            // bound.
            schema.size as u64 + nested(schema, body)
        }
        (Kind::Repeated(schema), Some(body)) => {
            VEC_GROWTH * schema.size as u64 + nested(schema, body)
        }
        (Kind::RepeatedBytes, _) => VEC_GROWTH * size_of::<Bytes>() as u64,
        (Kind::RepeatedScalar(width, layout), Some(packed)) if wire == 2 => {
            let count = match layout {
                Wire::Varint => packed.iter().filter(|b| **b & 0x80 == 0).count() as u64,
                Wire::Fixed32 => packed.len() as u64 / 4,
                Wire::Fixed64 => packed.len() as u64 / 8,
            };
            VEC_GROWTH * width * count
        }
        (Kind::RepeatedScalar(width, _), _) => VEC_GROWTH * width,
        (Kind::Map(value), Some(body)) => {
            let fields = entry(value);
            let entry_schema = Schema {
                size: 0,
                fields: &fields,
            };
            // Twice a slot for half-full nodes, the value decoded on its
            // own before it is inserted, the copied key and what the value
            // holds.
            2 * map_slot(value) + value.size as u64 + nested(&entry_schema, body)
        }
        // A length-delimited kind sent with another wire type: prost
        // refuses it without allocating.
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::inference::{InferParameter, infer_parameter};
    use prost::Message;

    #[test]
    fn empty_entries_are_counted_at_their_decoded_size() {
        let mut wire = Vec::new();
        for _ in 0..10_000 {
            wire.extend_from_slice(&[0x2a, 0x00]);
        }
        let cost = model_infer_request(&wire);
        let input = size_of::<model_infer_request::InferInputTensor>() as u64;
        assert!(cost >= 10_000 * input, "{cost}");
        let mut ms = Vec::new();
        for _ in 0..10_000 {
            ms.extend_from_slice(&[0x12, 0x00]);
        }
        assert!(predict_request(&ms) >= 10_000 * size_of::<Instance>() as u64);
    }

    #[test]
    fn raw_contents_cost_their_handles_only() {
        let request = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![model_infer_request::InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1 << 20],
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from(vec![0u8; 4 << 20])],
            ..Default::default()
        };
        let wire = request.encode_to_vec();
        assert!(model_infer_request(&wire) < 4096);
    }

    #[test]
    fn maps_and_typed_contents_are_counted() {
        let mut request = ModelInferRequest::default();
        for i in 0..1000 {
            request.parameters.insert(
                format!("p{i}"),
                InferParameter {
                    parameter_choice: Some(infer_parameter::ParameterChoice::StringParam(
                        "v".into(),
                    )),
                },
            );
        }
        request.inputs.push(model_infer_request::InferInputTensor {
            contents: Some(InferTensorContents {
                int64_contents: vec![1; 100_000],
                ..Default::default()
            }),
            ..Default::default()
        });
        let cost = model_infer_request(&request.encode_to_vec());
        assert!(
            cost >= 800_000 + 1000 * size_of::<InferParameter>() as u64,
            "{cost}"
        );
    }

    #[test]
    fn fields_after_an_unknown_group_are_counted() {
        // An empty group on unknown field 100 (`a3 06 a4 06`), nested
        // groups, then empty inputs: prost skips the groups and decodes
        // the inputs.
        let mut wire = vec![
            0xa3, 0x06, 0xa4, 0x06, 0xab, 0x06, 0xb3, 0x06, 0x08, 0x01, 0xb4, 0x06, 0xac, 0x06,
        ];
        for _ in 0..1000 {
            wire.extend_from_slice(&[0x2a, 0x00]);
        }
        let decoded = ModelInferRequest::decode(&wire[..]).unwrap();
        assert_eq!(decoded.inputs.len(), 1000);
        let input = size_of::<model_infer_request::InferInputTensor>() as u64;
        assert!(model_infer_request(&wire) >= 1000 * input);
        // A group on a field the message knows is refused by prost.
        assert!(ModelInferRequest::decode(&[0x2b, 0x2c][..]).is_err());
    }

    #[test]
    fn malformed_bytes_never_panic() {
        for wire in [
            &[0x2a][..],
            &[
                0x2a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
            &[0x2a, 0x05, 0x1a],
            &[0x0b, 0x0c],
            &[0xff; 20],
        ] {
            model_infer_request(wire);
            predict_request(wire);
        }
    }
}
