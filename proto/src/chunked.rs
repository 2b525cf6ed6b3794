//! gRPC messages encoded as a list of chunks that share the tensors' bytes.
//!
//! prost encodes a message into one buffer, copying every `bytes` field into
//! it: for a 256 MiB tensor, a second 256 MiB buffer and a full copy before
//! the first byte is sent. The encoders here write the small fields into
//! one buffer and put each large `bytes` field (tensor data: OIP raw
//! contents, MindSpore `Tensor.data`) into the list as the tensor's own
//! [`Bytes`], so the HTTP/2 layer sends the tensor from where it lies.
//!
//! The output is a gRPC length-prefixed message (5-byte header, then the
//! message), byte-for-byte as long as prost's encoding of the same message
//! (`Message::encoded_len`), so size limits checked against prost's length
//! hold. Fields are written in a different order (the large fields last),
//! which protobuf decoders accept (a message is a set of fields; prost,
//! protobuf-go and the C++ runtime all decode it to the same message).

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::frame::{self, Direction, TooLarge};
use crate::pb::inference::{ModelInferRequest, ModelInferResponse};
use crate::pb::mindspore::{Instance, PredictReply, PredictRequest, Tensor, tensor::TensorData};

/// `bytes` fields at least this long are shared; shorter ones are copied
/// (a chunk of their own would cost more than the copy).
pub const SHARE_AT: usize = 32 << 10;

/// A message being written as chunks.
#[derive(Debug, Default)]
pub struct Chunks {
    done: Vec<Bytes>,
    open: BytesMut,
}

impl Chunks {
    /// Starts a gRPC frame for an uncompressed message of `len` bytes, of
    /// which `shared` will be shared rather than copied.
    fn framed(len: usize, shared: usize) -> Chunks {
        let mut c = Chunks {
            done: Vec::new(),
            open: BytesMut::with_capacity(frame::HEADER_LEN + len.saturating_sub(shared)),
        };
        c.open.put_u8(0);
        // Callers check the length against a limit far below 4 GiB first;
        // a longer message saturates and the peer refuses it.
        c.open.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
        c
    }

    /// Appends a whole small message (its fields, no length prefix).
    fn put_message(&mut self, m: &impl Message) {
        m.encode_raw(&mut self.open);
    }

    /// Appends a length-delimited field header: key and length.
    fn put_len_field(&mut self, tag: u32, len: usize) {
        encode_key(tag, WireType::LengthDelimited, &mut self.open);
        encode_varint(len as u64, &mut self.open);
    }

    /// Appends a `bytes` field, sharing its contents if large.
    fn put_bytes_field(&mut self, tag: u32, b: &Bytes) {
        self.put_len_field(tag, b.len());
        if b.len() >= SHARE_AT {
            self.flush();
            self.done.push(b.clone());
        } else {
            self.open.put_slice(b);
        }
    }

    fn flush(&mut self) {
        if !self.open.is_empty() {
            self.done.push(self.open.split().freeze());
        }
    }

    /// The chunks, in order.
    fn finish(mut self) -> Vec<Bytes> {
        self.flush();
        self.done
    }
}

/// How many of `b`'s bytes a `bytes` field would share.
fn shared(b: &Bytes) -> usize {
    if b.len() >= SHARE_AT { b.len() } else { 0 }
}

/// How many tensor bytes of `instances` are shared.
fn shared_in(instances: &[Instance]) -> usize {
    instances
        .iter()
        .flat_map(|i| i.items.values())
        .map(|t| match &t.tensor_data {
            Some(TensorData::Data(d)) => shared(d),
            _ => 0,
        })
        .sum()
}

/// The length of a length-delimited field with `len` bytes of payload.
fn len_field(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// `inference.ModelInferRequest`, `raw_input_contents` (field 7) shared;
/// refused before anything is built if longer than `limit` bytes.
pub fn model_infer_request(mut m: ModelInferRequest, limit: u64) -> Result<Vec<Bytes>, TooLarge> {
    let raw = std::mem::take(&mut m.raw_input_contents);
    with_raw(&m, 7, &raw, limit)
}

/// `inference.ModelInferResponse`, `raw_output_contents` (field 6) shared;
/// refused before anything is built if longer than `limit` bytes.
pub fn model_infer_response(mut m: ModelInferResponse, limit: u64) -> Result<Vec<Bytes>, TooLarge> {
    let raw = std::mem::take(&mut m.raw_output_contents);
    with_raw(&m, 6, &raw, limit)
}

/// `rest` (a message without its raw contents), then `raw` as field `tag`.
fn with_raw(
    rest: &impl Message,
    tag: u32,
    raw: &[Bytes],
    limit: u64,
) -> Result<Vec<Bytes>, TooLarge> {
    let len = rest.encoded_len() + raw.iter().map(|r| len_field(tag, r.len())).sum::<usize>();
    frame::check_size(Direction::Sent, len as u64, limit)?;
    let mut c = Chunks::framed(len, raw.iter().map(shared).sum());
    c.put_message(rest);
    for r in raw {
        c.put_bytes_field(tag, r);
    }
    Ok(c.finish())
}

/// `mindspore.serving.proto.PredictRequest`, every `Tensor.data` shared;
/// refused before anything is built if longer than `limit` bytes.
pub fn predict_request(mut m: PredictRequest, limit: u64) -> Result<Vec<Bytes>, TooLarge> {
    let instances = std::mem::take(&mut m.instances);
    with_instances(&m, 2, &instances, limit)
}

/// `mindspore.serving.proto.PredictReply`, every `Tensor.data` shared;
/// refused before anything is built if longer than `limit` bytes.
pub fn predict_reply(mut m: PredictReply, limit: u64) -> Result<Vec<Bytes>, TooLarge> {
    let instances = std::mem::take(&mut m.instances);
    with_instances(&m, 3, &instances, limit)
}

/// `rest` (a message without its instances), then `instances` as field `tag`.
fn with_instances(
    rest: &impl Message,
    tag: u32,
    instances: &[Instance],
    limit: u64,
) -> Result<Vec<Bytes>, TooLarge> {
    let lens: Vec<usize> = instances.iter().map(Message::encoded_len).collect();
    let len = rest.encoded_len() + lens.iter().map(|&l| len_field(tag, l)).sum::<usize>();
    frame::check_size(Direction::Sent, len as u64, limit)?;
    let mut c = Chunks::framed(len, shared_in(instances));
    c.put_message(rest);
    for (i, len) in instances.iter().zip(lens) {
        c.put_len_field(tag, len);
        put_instance(&mut c, i);
    }
    Ok(c.finish())
}

/// An `Instance`'s fields: its `items` map written entry by entry (as prost
/// does: key 1, value 2, each left out when default).
fn put_instance(c: &mut Chunks, i: &Instance) {
    if !i.output_buffers.is_empty() {
        prost::encoding::btree_map::encode(
            prost::encoding::string::encode,
            prost::encoding::string::encoded_len,
            prost::encoding::message::encode,
            prost::encoding::message::encoded_len,
            2,
            &i.output_buffers,
            &mut c.open,
        );
    }
    let default = Tensor::default();
    for (key, value) in &i.items {
        let key_part = if key.is_empty() {
            0
        } else {
            len_field(1, key.len())
        };
        // prost leaves a default value out of the entry.
        let value_len = (*value != default).then(|| value.encoded_len());
        let value_part = value_len.map_or(0, |l| len_field(2, l));
        c.put_len_field(1, key_part + value_part);
        if !key.is_empty() {
            c.put_len_field(1, key.len());
            c.open.put_slice(key.as_bytes());
        }
        if let Some(l) = value_len {
            c.put_len_field(2, l);
            put_tensor(c, value);
        }
    }
}

/// A `Tensor`'s fields, `data` (field 3) shared.
fn put_tensor(c: &mut Chunks, t: &Tensor) {
    let Some(TensorData::Data(data)) = &t.tensor_data else {
        c.put_message(t);
        return;
    };
    // The other fields as prost writes them (each left out when default).
    if let Some(shape) = &t.shape {
        prost::encoding::message::encode(1, shape, &mut c.open);
    }
    if t.dtype != 0 {
        prost::encoding::int32::encode(2, &t.dtype, &mut c.open);
    }
    prost::encoding::bytes::encode_repeated(4, &t.bytes_val, &mut c.open);
    c.put_bytes_field(3, data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::inference::model_infer_request::InferInputTensor;
    use crate::pb::mindspore::{ServableSpec, TensorShape};

    /// The message part of the chunks, after checking the frame header.
    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.iter().copied()).collect();
        let header = frame::check_header(&all, u64::MAX).unwrap();
        assert!(!header.compressed);
        assert_eq!(header.len as usize, all.len() - frame::HEADER_LEN);
        all[frame::HEADER_LEN..].to_vec()
    }

    fn big(n: usize, seed: u8) -> Bytes {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    fn shares(chunks: &[Bytes], b: &Bytes) -> bool {
        chunks
            .iter()
            .any(|c| c.as_ptr() == b.as_ptr() && c.len() == b.len())
    }

    #[test]
    fn infer_request_shares_large_raw_contents() {
        let large = big(SHARE_AT, 1);
        let small = big(SHARE_AT - 1, 2);
        let m = ModelInferRequest {
            model_name: "identity_fp32".into(),
            id: "7".into(),
            inputs: vec![InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![8192],
                ..Default::default()
            }],
            raw_input_contents: vec![large.clone(), small.clone(), Bytes::new()],
            ..Default::default()
        };
        let chunks = model_infer_request(m.clone(), u64::MAX).unwrap();
        assert!(shares(&chunks, &large));
        assert!(!shares(&chunks, &small));
        let bytes = joined(&chunks);
        assert_eq!(bytes.len(), m.encoded_len());
        assert_eq!(ModelInferRequest::decode(bytes.as_slice()).unwrap(), m);
    }

    #[test]
    fn infer_response_shares_large_raw_contents() {
        let large = big(1 << 20, 3);
        let m = ModelInferResponse {
            model_name: "m".into(),
            raw_output_contents: vec![Bytes::from_static(b"abc"), large.clone()],
            ..Default::default()
        };
        let chunks = model_infer_response(m.clone(), u64::MAX).unwrap();
        assert!(shares(&chunks, &large));
        let bytes = joined(&chunks);
        assert_eq!(bytes.len(), m.encoded_len());
        assert_eq!(ModelInferResponse::decode(bytes.as_slice()).unwrap(), m);
    }

    fn tensor(data: Option<Bytes>) -> Tensor {
        Tensor {
            shape: Some(TensorShape {
                dims: vec![data.as_ref().map_or(0, |d| d.len() as i64 / 4)],
            }),
            dtype: 11,
            bytes_val: vec![],
            tensor_data: data.map(TensorData::Data),
        }
    }

    fn instances(large: &Bytes) -> Vec<Instance> {
        let mut a = Instance::default();
        a.items.insert("x".into(), tensor(Some(large.clone())));
        a.items.insert("y".into(), tensor(Some(big(16, 4))));
        // Default key and default value: prost leaves both out of the entry.
        a.items.insert(String::new(), Tensor::default());
        let mut strings = tensor(None);
        strings.dtype = 14;
        strings.bytes_val = vec![Bytes::from_static(b"a"), big(SHARE_AT * 2, 5)];
        a.items.insert("s".into(), strings);
        vec![a, Instance::default()]
    }

    #[test]
    fn predict_request_and_reply_share_tensor_data() {
        let large = big(SHARE_AT * 3, 6);
        let spec = Some(ServableSpec {
            name: "add".into(),
            method_name: "predict".into(),
            version_number: 2,
        });
        let req = PredictRequest {
            servable_spec: spec.clone(),
            instances: instances(&large),
        };
        let chunks = predict_request(req.clone(), u64::MAX).unwrap();
        assert!(shares(&chunks, &large));
        let bytes = joined(&chunks);
        assert_eq!(bytes.len(), req.encoded_len());
        assert_eq!(PredictRequest::decode(bytes.as_slice()).unwrap(), req);

        let reply = PredictReply {
            servable_spec: spec,
            instances: instances(&large),
            error_msg: vec![crate::pb::mindspore::ErrorMsg {
                error_code: 1,
                error_msg: Bytes::from_static(b"bad"),
            }],
        };
        let chunks = predict_reply(reply.clone(), u64::MAX).unwrap();
        assert!(shares(&chunks, &large));
        let bytes = joined(&chunks);
        assert_eq!(bytes.len(), reply.encoded_len());
        assert_eq!(PredictReply::decode(bytes.as_slice()).unwrap(), reply);
    }

    #[test]
    fn messages_over_the_limit_are_refused_with_their_length() {
        let m = ModelInferResponse {
            raw_output_contents: vec![big(SHARE_AT, 7)],
            ..Default::default()
        };
        let len = m.encoded_len() as u64;
        let e = model_infer_response(m.clone(), len - 1).unwrap_err();
        assert_eq!(
            (e.size, e.limit, e.direction),
            (len, len - 1, Direction::Sent)
        );
        assert!(model_infer_response(m, len).is_ok());
        let reply = PredictReply {
            instances: instances(&big(SHARE_AT, 8)),
            ..Default::default()
        };
        let len = reply.encoded_len() as u64;
        assert_eq!(predict_reply(reply.clone(), len - 1).unwrap_err().size, len);
        assert!(predict_reply(reply, len).is_ok());
    }

    #[test]
    fn empty_messages_are_a_bare_frame_header() {
        let chunks = predict_reply(PredictReply::default(), 0).unwrap();
        assert_eq!(joined(&chunks), Vec::<u8>::new());
        let chunks = model_infer_request(ModelInferRequest::default(), 0).unwrap();
        assert_eq!(joined(&chunks), Vec::<u8>::new());
    }
}
