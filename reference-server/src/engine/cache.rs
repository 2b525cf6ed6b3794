//! The response cache (Triton's `local` cache): the answers of models
//! that enable it, kept under a key of the servable, its version, the
//! method and the job's inputs and parameters, bounded in bytes for the
//! whole server, the least recently used given up first.
//!
//! The key is two 64-bit SipHash digests with keys of their own, drawn at
//! start, and the inputs' byte count: a wrong answer would need two
//! independent 64-bit collisions at once.

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Mutex;

use serving_proto::{NamedTensors, Tensor, TensorData};

use super::scheduler::RequestInfo;

/// What one kept answer is counted as besides its tensors' bytes.
const ENTRY_OVERHEAD: usize = 256;

/// What one tensor of a kept answer is counted as besides its bytes.
const TENSOR_OVERHEAD: usize = 96;

/// The key of a job's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Key(u64, u64, usize);

#[derive(Debug)]
struct Entry {
    outputs: NamedTensors,
    bytes: usize,
    tick: u64,
}

#[derive(Debug, Default)]
struct Inner {
    entries: HashMap<Key, Entry>,
    /// Keys by their last use, oldest first.
    order: BTreeMap<u64, Key>,
    tick: u64,
    used: usize,
}

/// Answers kept for models that enable the cache, at most `capacity` bytes
/// in all.
#[derive(Debug)]
pub struct ResponseCache {
    capacity: usize,
    hashers: (RandomState, RandomState),
    inner: Mutex<Inner>,
}

impl ResponseCache {
    /// An empty cache of `capacity` bytes.
    pub fn new(capacity: usize) -> ResponseCache {
        ResponseCache {
            capacity,
            hashers: (RandomState::new(), RandomState::new()),
            inner: Mutex::default(),
        }
    }

    /// Its bound in bytes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The bytes its answers are counted as now.
    pub fn used(&self) -> usize {
        self.lock().used
    }

    /// How many answers it keeps now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether it keeps no answer.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The key of a job of `method` of `servable` at `version`.
    pub(crate) fn key(
        &self,
        servable: &str,
        version: u64,
        method: &str,
        inputs: &NamedTensors,
        info: Option<&RequestInfo>,
    ) -> Key {
        let mut h = Both(self.hashers.0.build_hasher(), self.hashers.1.build_hasher());
        let mut bytes = 0;
        servable.hash(&mut h);
        version.hash(&mut h);
        method.hash(&mut h);
        for (name, t) in inputs {
            name.hash(&mut h);
            t.dtype().hash(&mut h);
            t.shape().hash(&mut h);
            match t.data() {
                TensorData::Raw(raw) => {
                    bytes += raw.len();
                    raw[..].hash(&mut h);
                }
                TensorData::Elements(elements) => {
                    for e in elements {
                        bytes += e.len();
                        e[..].hash(&mut h);
                    }
                }
            }
        }
        // Parameters meant for the model change its answer; the id (and a
        // sequence's flags) do not.
        if let Some(info) = info.filter(|i| !i.parameters.is_empty()) {
            serde_json::to_string(&info.parameters)
                .unwrap_or_default()
                .hash(&mut h);
        }
        Key(h.0.finish(), h.1.finish(), bytes)
    }

    /// The answer kept under `key`, now the most recently used.
    pub(crate) fn get(&self, key: &Key) -> Option<NamedTensors> {
        let mut inner = self.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let entry = inner.entries.get_mut(key)?;
        let old = std::mem::replace(&mut entry.tick, tick);
        let outputs = entry.outputs.clone();
        inner.order.remove(&old);
        inner.order.insert(tick, *key);
        Some(outputs)
    }

    /// Keeps `outputs` under `key`, giving up the least recently used
    /// answers until it fits; an answer larger than the whole cache is not
    /// kept.
    pub(crate) fn insert(&self, key: Key, outputs: &NamedTensors) {
        let bytes = ENTRY_OVERHEAD
            + outputs
                .iter()
                .map(|(name, t)| {
                    let data = match t.data() {
                        TensorData::Raw(raw) => raw.len(),
                        TensorData::Elements(e) => e.iter().map(|b| b.len() + 16).sum(),
                    };
                    TENSOR_OVERHEAD + name.len() + data
                })
                .sum::<usize>();
        if bytes > self.capacity {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(&key) {
            inner.order.remove(&old.tick);
            inner.used -= old.bytes;
        }
        while inner.used + bytes > self.capacity {
            let Some((_, oldest)) = inner.order.pop_first() else {
                break;
            };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.used -= gone.bytes;
            }
        }
        inner.tick += 1;
        let tick = inner.tick;
        inner.order.insert(tick, key);
        inner.used += bytes;
        inner.entries.insert(
            key,
            Entry {
                outputs: detached(outputs),
                bytes,
                tick,
            },
        );
    }
}

/// The outputs with bytes of their own: an output that is rows of a
/// batch's output shares that whole buffer, which the bound would not
/// count.
fn detached(outputs: &NamedTensors) -> NamedTensors {
    outputs
        .iter()
        .map(|(name, t)| {
            let copy = match t.data() {
                TensorData::Raw(raw) => Tensor::from_raw(
                    t.dtype(),
                    t.shape().to_vec(),
                    bytes::Bytes::copy_from_slice(raw),
                ),
                TensorData::Elements(e) => Tensor::from_elements(
                    t.dtype(),
                    t.shape().to_vec(),
                    e.iter().map(|b| bytes::Bytes::copy_from_slice(b)).collect(),
                ),
            };
            (name.clone(), copy.unwrap_or_else(|_| t.clone()))
        })
        .collect()
}

/// Two hashers fed the same bytes: a key of two independent digests.
struct Both<A, B>(A, B);

impl<A: Hasher, B: Hasher> Hasher for Both<A, B> {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
        self.1.write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(v: f32) -> NamedTensors {
        NamedTensors::from([(
            "x".to_string(),
            Tensor::from_vec(&[1, 256], vec![v; 256]).unwrap(),
        )])
    }

    #[test]
    fn answers_are_kept_by_their_inputs_and_the_oldest_go_first() {
        // Room for two answers of 1 KiB (and their overhead), not three.
        let cache = ResponseCache::new(2 * (1024 + ENTRY_OVERHEAD + TENSOR_OVERHEAD + 1) + 100);
        let key = |v: f32| cache.key("m", 1, "predict", &inputs(v), None);
        assert_eq!(key(1.0), key(1.0));
        assert_ne!(key(1.0), key(2.0));
        assert_ne!(key(1.0), cache.key("m", 2, "predict", &inputs(1.0), None));
        cache.insert(key(1.0), &inputs(10.0));
        cache.insert(key(2.0), &inputs(20.0));
        assert_eq!(cache.get(&key(1.0)), Some(inputs(10.0)));
        // A third answer gives up the least recently used: 2.0.
        cache.insert(key(3.0), &inputs(30.0));
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key(2.0)).is_none());
        assert!(cache.get(&key(1.0)).is_some());
        assert!(cache.used() <= cache.capacity());
        // An answer larger than the cache is not kept.
        let small = ResponseCache::new(100);
        small.insert(key(1.0), &inputs(1.0));
        assert!(small.is_empty());
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    #[test]
    fn the_key_counts_parameters_but_not_the_id() {
        let cache = ResponseCache::new(1 << 20);
        let inputs: NamedTensors = [("x".to_owned(), Tensor::scalar(1.0f32))].into();
        let key = |info: Option<RequestInfo>| cache.key("m", 1, "predict", &inputs, info.as_ref());
        let with_id = RequestInfo {
            id: "r-1".into(),
            flags: 1,
            ..Default::default()
        };
        assert_eq!(key(None), key(Some(with_id.clone())));
        let mut with_parameter = with_id;
        with_parameter
            .parameters
            .insert("custom".into(), serde_json::json!("a"));
        assert_ne!(key(None), key(Some(with_parameter)));
    }
}
