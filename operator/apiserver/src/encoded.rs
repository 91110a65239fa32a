//! Stored objects' JSON, kept for list responses. A stored object never changes (a write
//! stores a new one), so its serialized form is computed once, on the first list that returns
//! it, and reused until the store lets go of the object.
//!
//! Entries are keyed by the object's address and hold the object itself, so an address is
//! never reused while its entry lives. An entry whose object nothing else holds any more
//! (replaced or deleted, and out of the watch history) is dropped on the next sweep; sweeps
//! run when the cache has doubled since the last one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use serde_json::Value;

/// Sweeps never start below this many entries.
const FIRST_SWEEP: usize = 4096;

#[derive(Default)]
pub struct EncodedObjects {
    inner: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    by_address: HashMap<usize, (Arc<Value>, Box<[u8]>)>,
    sweep_at: usize,
}

impl EncodedObjects {
    /// Appends the JSON of each object to `out`, separated by commas.
    pub fn write_list(&self, out: &mut Vec<u8>, objects: &[Arc<Value>]) {
        let mut cache = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for (i, obj) in objects.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let address = Arc::as_ptr(obj) as usize;
            let (_, json) = cache
                .by_address
                .entry(address)
                .or_insert_with(|| (obj.clone(), encode(obj)));
            out.extend_from_slice(json);
        }
        if cache.by_address.len() >= cache.sweep_at.max(FIRST_SWEEP) {
            cache
                .by_address
                .retain(|_, (obj, _)| Arc::strong_count(obj) > 1);
            cache.sweep_at = cache.by_address.len() * 2;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .by_address
            .len()
    }
}

fn encode(obj: &Value) -> Box<[u8]> {
    serde_json::to_vec(obj)
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "serializing a stored object failed");
            b"{}".to_vec()
        })
        .into()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn list(cache: &EncodedObjects, objects: &[Arc<Value>]) -> Value {
        let mut out = b"[".to_vec();
        cache.write_list(&mut out, objects);
        out.push(b']');
        serde_json::from_slice(&out).expect("valid JSON")
    }

    #[test]
    fn a_new_object_at_the_same_key_is_encoded_anew_and_dropped_objects_are_swept() {
        let cache = EncodedObjects::default();
        let first = Arc::new(json!({"v": 1}));
        assert_eq!(
            list(&cache, std::slice::from_ref(&first)),
            json!([{"v": 1}])
        );
        let second = Arc::new(json!({"v": 2}));
        assert_eq!(
            list(&cache, &[second.clone(), first.clone()]),
            json!([{"v": 2}, {"v": 1}])
        );
        drop(first);
        let many: Vec<Arc<Value>> = (0..FIRST_SWEEP).map(|i| Arc::new(json!(i))).collect();
        list(&cache, &many);
        // The sweep kept what is still held elsewhere and dropped `first`.
        assert_eq!(cache.len(), FIRST_SWEEP + 1);
        assert_eq!(list(&cache, &[second]), json!([{"v": 2}]));
    }
}
