//! Optional on-disk persistence: an append-only journal of JSON lines.
//!
//! Each committed write appends one line before it is acknowledged, so a killed process loses
//! nothing it acknowledged. On open the journal is replayed and rewritten compactly (one line
//! per live object), which also keeps resourceVersions monotonic across restarts.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::store::{ObjKey, key_of};

pub type Objects = BTreeMap<String, BTreeMap<ObjKey, Arc<Value>>>;

pub struct Journal {
    path: PathBuf,
    out: BufWriter<File>,
    failed: bool,
}

/// What a journal held when it was opened.
pub struct Replayed {
    pub rv: u64,
    pub objects: Objects,
    pub journal: Journal,
}

impl Journal {
    /// Replays `path` (if present), compacts it, and opens it for appending.
    pub fn open(path: &Path) -> std::io::Result<Replayed> {
        let mut rv = 1;
        let mut objects: Objects = BTreeMap::new();
        if let Ok(file) = File::open(path) {
            for line in BufReader::new(file).lines() {
                let line = line?;
                // A torn last line (crash mid-write) was never acknowledged: skip it.
                let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                apply(&entry, &mut rv, &mut objects);
            }
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("compact");
        {
            let mut w = BufWriter::new(File::create(&tmp)?);
            writeln!(w, "{}", json!({"rv": rv}))?;
            for (resource, objs) in &objects {
                for obj in objs.values() {
                    writeln!(w, "{}", json!({"rv": rv, "r": resource, "o": **obj}))?;
                }
            }
            w.into_inner()
                .map_err(std::io::IntoInnerError::into_error)?
                .sync_all()?;
        }
        fs::rename(&tmp, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        let journal = Journal {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            failed: false,
        };
        Ok(Replayed {
            rv,
            objects,
            journal,
        })
    }

    pub fn put(&mut self, rv: u64, resource: &str, obj: &Value) {
        self.write(&json!({"rv": rv, "r": resource, "o": obj}));
    }

    pub fn remove(&mut self, rv: u64, resource: &str, ns: &str, name: &str) {
        self.write(&json!({"rv": rv, "r": resource, "d": [ns, name]}));
    }

    fn write(&mut self, entry: &Value) {
        let result = writeln!(self.out, "{entry}").and_then(|()| self.out.flush());
        if let Err(e) = result {
            if !self.failed {
                tracing::error!(path = %self.path.display(), error = %e, "journal write failed; persistence is degraded");
            }
            self.failed = true;
        }
    }

    pub fn flush(&mut self) {
        let _ = self
            .out
            .flush()
            .and_then(|()| self.out.get_ref().sync_data());
    }
}

fn apply(entry: &Value, rv: &mut u64, objects: &mut Objects) {
    if let Some(r) = entry.get("rv").and_then(Value::as_u64) {
        *rv = (*rv).max(r);
    }
    let Some(resource) = entry.get("r").and_then(Value::as_str) else {
        return;
    };
    if let Some(obj) = entry.get("o") {
        objects
            .entry(resource.to_string())
            .or_default()
            .insert(key_of(obj), Arc::new(obj.clone()));
    } else if let Some([ns, name]) = entry.get("d").and_then(Value::as_array).map(Vec::as_slice) {
        let key = (
            ns.as_str().unwrap_or_default().to_string(),
            name.as_str().unwrap_or_default().to_string(),
        );
        if let Some(objs) = objects.get_mut(resource) {
            objs.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, rv_of};

    #[test]
    fn restart_keeps_objects_and_versions_move_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.jsonl");
        let last_rv = {
            let r = Journal::open(&path).expect("open");
            let mut s = Store::new(10);
            s.restore(r.rv, r.objects, r.journal);
            s.put(
                "/configmaps",
                json!({"metadata": {"name": "a", "namespace": "default"}}),
            );
            s.put(
                "/configmaps",
                json!({"metadata": {"name": "b", "namespace": "default"}}),
            );
            s.remove("/configmaps", "default", "b");
            s.current_rv()
        };
        // A torn line from a crash mid-write is ignored.
        OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("append")
            .write_all(b"{\"rv\": 9")
            .expect("write");
        let r = Journal::open(&path).expect("reopen");
        assert_eq!(r.rv, last_rv);
        let mut s = Store::new(10);
        s.restore(r.rv, r.objects, r.journal);
        assert!(s.get("/configmaps", "default", "a").is_some());
        assert!(s.get("/configmaps", "default", "b").is_none());
        let next = s.put(
            "/configmaps",
            json!({"metadata": {"name": "c", "namespace": "default"}}),
        );
        assert!(rv_of(&next) > last_rv);
    }
}
