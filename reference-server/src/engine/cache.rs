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

use serving_proto::{NamedTensors, TensorData};

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
        let mut a = self.hashers.0.build_hasher();
        let mut b = self.hashers.1.build_hasher();
        let mut bytes = 0;
        let mut both = |f: &dyn Fn(&mut dyn Hasher)| {
            f(&mut a);
            f(&mut b);
        };
        both(&|h| {
            servable.hash(&mut HasherRef(h));
            version.hash(&mut HasherRef(h));
            method.hash(&mut HasherRef(h));
        });
        for (name, t) in inputs {
            both(&|h| {
                name.hash(&mut HasherRef(h));
                format!("{:?}", t.dtype()).hash(&mut HasherRef(h));
                t.shape().hash(&mut HasherRef(h));
            });
            match t.data() {
                TensorData::Raw(raw) => {
                    bytes += raw.len();
                    both(&|h| raw[..].hash(&mut HasherRef(h)));
                }
                TensorData::Elements(elements) => {
                    for e in elements {
                        bytes += e.len();
                        both(&|h| e[..].hash(&mut HasherRef(h)));
                    }
                }
            }
        }
        // Parameters meant for the model change its answer; the id does not.
        if let Some(info) = info {
            let parameters = serde_json::Value::Object(info.parameters.clone()).to_string();
            both(&|h| parameters.hash(&mut HasherRef(h)));
        }
        Key(a.finish(), b.finish(), bytes)
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
                outputs: outputs.clone(),
                bytes,
                tick,
            },
        );
    }
}

/// A `&mut dyn Hasher` as a `Hasher`, so that `Hash::hash` takes it.
struct HasherRef<'a>(&'a mut dyn Hasher);

impl Hasher for HasherRef<'_> {
    fn finish(&self) -> u64 {
        self.0.finish()
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serving_proto::Tensor;

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
