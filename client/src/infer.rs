//! [`InferBuilder`]: an Open Inference request built step by step, with
//! inputs and outputs in shared memory where the `shared-memory` feature
//! is on.

use serving_proto::Tensor;
use serving_proto::oip::{
    InferRequest, InferResponse, NamedTensor, Parameter, RequestedOutput, SequenceId,
};

use crate::{Client, Error};

/// Builds an Open Inference request: [`Client::infer`].
#[derive(Debug)]
pub struct InferBuilder<'a> {
    client: &'a Client,
    request: InferRequest,
    #[cfg(all(unix, feature = "shared-memory"))]
    regions: std::collections::BTreeMap<String, crate::shared_memory::SharedMemoryRegion>,
}

impl<'a> InferBuilder<'a> {
    pub(crate) fn new(client: &'a Client, model: &str) -> InferBuilder<'a> {
        InferBuilder {
            client,
            request: InferRequest {
                model_name: model.to_owned(),
                ..Default::default()
            },
            #[cfg(all(unix, feature = "shared-memory"))]
            regions: Default::default(),
        }
    }

    /// The model version (default: the server's choice, usually the newest).
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.request.model_version = version.into();
        self
    }

    /// The request id, echoed in the response.
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.request.id = id.into();
        self
    }

    /// A named input.
    pub fn input(mut self, name: impl Into<String>, tensor: Tensor) -> Self {
        self.request.inputs.push(NamedTensor::new(name, tensor));
        self
    }

    /// An output to return (default: all).
    pub fn output(mut self, name: impl Into<String>) -> Self {
        self.request.outputs.push(RequestedOutput {
            name: name.into(),
            parameters: Default::default(),
        });
        self
    }

    /// A request parameter.
    pub fn parameter(mut self, name: impl Into<String>, value: Parameter) -> Self {
        self.request.parameters.insert(name.into(), value);
        self
    }

    /// Puts the request in a sequence, for a model with sequence batching
    /// (Triton's `sequence_batching`): its correlation ID (an integer or a
    /// text), and whether this request starts or ends the sequence. The
    /// server keeps the sequence's slot and state between its requests;
    /// send them one after another (or on one stream, [`Client::stream`]).
    pub fn sequence(mut self, id: impl Into<SequenceId>, start: bool, end: bool) -> Self {
        self.request.set_sequence(id, start, end);
        self
    }

    /// The request built so far.
    pub fn request(&self) -> &InferRequest {
        &self.request
    }

    /// Sends it.
    pub async fn send(self) -> Result<InferResponse, Error> {
        #[cfg(all(unix, feature = "shared-memory"))]
        if !self.regions.is_empty() {
            // The output placements are claimed until the call returns,
            // cancelled or not.
            let outputs = crate::shared_memory::outputs_in_flight(
                &self.request,
                std::sync::Arc::new(self.regions),
            )?;
            return self
                .client
                .infer_placed(&self.request, Some(&outputs.read))
                .await;
        }
        self.client.infer_request(&self.request).await
    }
}

#[cfg(all(unix, feature = "shared-memory"))]
impl InferBuilder<'_> {
    /// An input whose data is in `region` at `offset` (written with
    /// [`crate::shared_memory::SharedMemoryRegion::write`]): the request
    /// carries the region's name, the offset and the size, not the bytes.
    /// The region must be registered with the server
    /// ([`Client::register_region`]) the request is sent to: on a client of
    /// several endpoints, send it through [`Client::endpoint`].
    ///
    /// The server reads the region when the request is sent, so the region
    /// may be rewritten between sends of the same request; the request's
    /// tensor for this input holds no view of the region, only a stand-in
    /// of its type and shape (zeros).
    pub fn input_in_region(
        mut self,
        name: impl Into<String>,
        dtype: serving_proto::DataType,
        shape: &[i64],
        region: &crate::shared_memory::SharedMemoryRegion,
        offset: usize,
    ) -> Result<Self, Error> {
        use serving_proto::oip::shared_memory::{BYTE_SIZE, OFFSET, REGION};
        // The size and bounds are checked here; the encoders leave placed
        // data out of the message, so the tensor is a stand-in.
        let tensor = region.placed_input(dtype, shape, offset)?;
        let mut input = NamedTensor::new(name, tensor);
        let size = input.tensor.payload_len();
        input
            .parameters
            .insert(REGION.into(), Parameter::String(region.name().into()));
        input.parameters.insert(OFFSET.into(), int64(offset));
        input.parameters.insert(BYTE_SIZE.into(), int64(size));
        self.request.inputs.push(input);
        Ok(self)
    }

    /// Has the server write output `name` to `region` at `offset`, in at
    /// most `byte_size` bytes; the response's tensor views the region.
    /// Sending claims those bytes until the call returns: it is refused
    /// while a view of them lives (an earlier response's output: drop it
    /// first), and views and writes of them are refused meanwhile (see
    /// [`crate::shared_memory`]).
    pub fn output_in_region(
        mut self,
        name: impl Into<String>,
        region: &crate::shared_memory::SharedMemoryRegion,
        offset: usize,
        byte_size: usize,
    ) -> Result<Self, Error> {
        use serving_proto::oip::shared_memory::{BYTE_SIZE, OFFSET, REGION};
        region.range(offset, byte_size)?;
        let mut parameters = serving_proto::oip::Parameters::new();
        parameters.insert(REGION.into(), Parameter::String(region.name().into()));
        parameters.insert(OFFSET.into(), int64(offset));
        parameters.insert(BYTE_SIZE.into(), int64(byte_size));
        self.request.outputs.push(RequestedOutput {
            name: name.into(),
            parameters,
        });
        self.regions
            .insert(region.name().to_owned(), region.clone());
        Ok(self)
    }
}

/// A placement's offset or size as Triton takes it: `int64_param` (what
/// tritonclient sends; Triton refuses `uint64_param` there). A region is
/// mapped, so its offsets and sizes are below `isize::MAX`.
#[cfg(all(unix, feature = "shared-memory"))]
fn int64(n: usize) -> Parameter {
    Parameter::Int64(i64::try_from(n).unwrap_or(i64::MAX))
}
