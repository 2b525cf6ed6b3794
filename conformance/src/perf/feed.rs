//! What the load generator sends: a prepared request per client, and, with
//! `--shared-memory system` (perf_analyzer's flag), the system shared-memory
//! regions that carry the tensors instead of the messages.
//!
//! As perf_analyzer does, the inputs are written into their region once,
//! before the measurement, and every request names them; each concurrent
//! client has an output region of its own, which the server writes and
//! nobody reads. A request then carries names, offsets and sizes only.

use serving_client::Client;

use super::load::{Prepared, Workload, prepare};
use crate::target::Family;

/// The requests of one measurement.
#[derive(Debug)]
pub struct Feed {
    requests: Vec<Prepared>,
    workload: Workload,
    #[cfg(unix)]
    regions: Vec<serving_client::shared_memory::SharedMemoryRegion>,
}

impl Feed {
    /// The tensors in the messages; every client sends the same request.
    pub fn plain(family: Family, workload: Workload) -> Feed {
        Feed {
            requests: vec![prepare(family, workload)],
            workload,
            #[cfg(unix)]
            regions: Vec::new(),
        }
    }

    /// The request client `i` sends.
    pub fn request(&self, i: usize) -> &Prepared {
        &self.requests[i % self.requests.len()]
    }

    /// What each request carries.
    pub fn workload(&self) -> Workload {
        self.workload
    }

    /// Whether the tensors travel through shared memory.
    pub fn placed(&self) -> bool {
        #[cfg(unix)]
        return !self.regions.is_empty();
        #[cfg(not(unix))]
        false
    }
}

#[cfg(unix)]
impl Feed {
    /// The tensors in system shared memory (Open Inference only): one
    /// input region written now, and an output region for each of
    /// `clients`, all registered with the server behind `client`.
    pub async fn shared_memory(
        client: &Client,
        family: Family,
        workload: Workload,
        clients: usize,
    ) -> Result<Feed, String> {
        use serving_client::shared_memory::SharedMemoryRegion;
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let Prepared::OpenInference(plain) = prepare(family, workload) else {
            return Err(
                "--shared-memory system: the shared-memory extension is Open Inference's; \
                 MindSpore targets have none"
                    .into(),
            );
        };
        let key = |what: &str| {
            format!(
                "/conformance-perf-{}-{}-{what}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            )
        };
        let fail = |e: serving_client::Error| format!("--shared-memory system: {e}");
        // Inputs one after another, each at a 64-byte boundary.
        let align = |n: usize| n.div_ceil(64) * 64;
        let total: usize = plain
            .inputs
            .iter()
            .map(|i| align(i.tensor.payload_len()))
            .sum();
        let input = SharedMemoryRegion::create(&key("in"), total.max(1)).map_err(fail)?;
        let mut placed_inputs = Vec::new();
        let mut offset = 0;
        for i in &plain.inputs {
            let written = input.write_tensor(offset, &i.tensor).map_err(fail)?;
            placed_inputs.push((
                i.name.clone(),
                i.tensor.dtype(),
                i.tensor.shape().to_vec(),
                offset,
            ));
            offset += align(written);
        }
        client.register_region(&input).await.map_err(fail)?;
        let outputs: Vec<(&str, usize)> = match workload {
            Workload::Add => vec![("y", 16)],
            Workload::Identity(bytes) => vec![("y1", bytes)],
        };
        let per_client: usize = outputs.iter().map(|(_, n)| align(*n)).sum();
        let mut regions = vec![input.clone()];
        let mut requests = Vec::new();
        for _ in 0..clients.max(1) {
            let out = SharedMemoryRegion::create(&key("out"), per_client).map_err(fail)?;
            client.register_region(&out).await.map_err(fail)?;
            let mut builder = client.infer(&plain.model_name);
            for (name, dtype, shape, offset) in &placed_inputs {
                builder = builder
                    .input_in_region(name.clone(), *dtype, shape, &input, *offset)
                    .map_err(fail)?;
            }
            let mut offset = 0;
            for (name, size) in &outputs {
                builder = builder
                    .output_in_region(*name, &out, offset, *size)
                    .map_err(fail)?;
                offset += align(*size);
            }
            requests.push(Prepared::Placed(
                builder.request().clone(),
                vec![out.clone()],
            ));
            regions.push(out);
        }
        Ok(Feed {
            requests,
            workload,
            regions,
        })
    }

    /// Unregisters the regions (they are unlinked when the feed drops).
    pub async fn release(&self, client: &Client) {
        for r in &self.regions {
            let _ = client.unregister_system_shared_memory(Some(r.name())).await;
        }
    }
}

#[cfg(not(unix))]
impl Feed {
    /// System shared memory is a Unix facility here.
    pub async fn shared_memory(
        _client: &Client,
        _family: Family,
        _workload: Workload,
        _clients: usize,
    ) -> Result<Feed, String> {
        Err("--shared-memory system needs a Unix system".into())
    }

    /// Nothing to release.
    pub async fn release(&self, _client: &Client) {}
}
