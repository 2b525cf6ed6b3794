//! Triton's shared-memory parameters on inputs of OIP REST and gRPC
//! requests: placements read from any parameters, checked against a region
//! of a size the input chooses, and the data the region would give decoded
//! as the input. Properties: never a panic; a placement's range always lies
//! inside its region; an input decoded from shared memory has exactly the
//! placed bytes; allocations bounded.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use prost::Message;
use serving_fuzz::{assert_bounded, check_tensor, reset};
use serving_proto::oip::shared_memory::Placement;
use serving_proto::oip::{grpc, rest};
use serving_proto::pb::inference::ModelInferRequest;

fuzz_target!(|data: &[u8]| {
    let Some((&size, body)) = data.split_first() else {
        return;
    };
    // A region of up to 16 KiB of zeros.
    let region_size = u64::from(size) * 64;
    let region = Bytes::from(vec![0u8; region_size as usize]);
    let mut external = |_: &str, p: &Placement| -> Result<Bytes, String> {
        let range = p.range(region_size).map_err(|e| e.to_string())?;
        assert!(range.end as u64 <= region_size && range.start <= range.end);
        assert_eq!((range.end - range.start) as u64, p.byte_size);
        Ok(region.slice(range))
    };
    reset();
    if let Ok(r) = rest::decode_request_with(Bytes::copy_from_slice(body), None, &mut external) {
        for input in &r.inputs {
            check_tensor(&input.tensor);
        }
    }
    if let Ok(m) = ModelInferRequest::decode(body)
        && let Ok(r) = grpc::decode_request_with(m, &mut external)
    {
        for input in &r.inputs {
            check_tensor(&input.tensor);
        }
    }
    assert_bounded(body.len(), "shared memory parameters");
});
