//! Watch streams: resume from a resourceVersion, selector transitions, bookmarks,
//! `sendInitialEvents`, and `410 Gone` (as an ERROR event) for versions outside the window.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};

use crate::api::{Api, ListOptions, Scope};
use crate::error::{ApiError, Result};
use crate::registry::Column;
use crate::store::{Event, EventType, rv_of};
use crate::table::{self, IncludeObject};

#[derive(Debug, Clone)]
pub struct WatchParams {
    pub resource_version: Option<String>,
    pub send_initial_events: bool,
    pub bookmarks: bool,
    pub timeout: Duration,
    pub bookmark_interval: Duration,
    /// Render each event's object as a one-row Table (`kubectl get -w`).
    pub table: Option<(Vec<Column>, IncludeObject)>,
}

/// Rewrites a change as this watcher sees it (selectors can turn MODIFIED into ADDED/DELETED).
fn translate(ev: &Event, scope: &Scope, opts: &ListOptions) -> Option<EventType> {
    if ev.resource != scope.rt.key() {
        return None;
    }
    if let Some(ns) = &scope.namespace
        && crate::store::key_of(&ev.object).0 != *ns
    {
        return None;
    }
    let now = opts.matches(&ev.object);
    let before = ev.prev.as_ref().is_some_and(|p| opts.matches(p));
    match (ev.type_, before, now) {
        (EventType::Added, _, true) => Some(EventType::Added),
        (EventType::Deleted, true, _) => Some(EventType::Deleted),
        (EventType::Modified, true, true) => Some(EventType::Modified),
        (EventType::Modified, false, true) => Some(EventType::Added),
        (EventType::Modified, true, false) => Some(EventType::Deleted),
        _ => None,
    }
}

struct Encoder {
    scope: Scope,
    table: Option<(Vec<Column>, IncludeObject)>,
    sent_columns: bool,
}

impl Encoder {
    fn line(&mut self, type_: &str, obj: &Value) -> Bytes {
        let object = match &self.table {
            Some((cols, include)) if type_ != "BOOKMARK" && type_ != "ERROR" => {
                let mut t = table::table(
                    cols,
                    &[Arc::new(self.scope.present(obj))],
                    *include,
                    &json!({"resourceVersion": rv_of(obj).to_string()}),
                );
                if self.sent_columns {
                    t["columnDefinitions"] = json!([]);
                }
                self.sent_columns = true;
                t
            }
            _ if type_ == "ERROR" => obj.clone(),
            _ => self.scope.present(obj),
        };
        let mut out =
            serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
        out.push(b'\n');
        Bytes::from(out)
    }

    fn bookmark(&mut self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj = json!({"kind": self.scope.rt.kind, "apiVersion": self.scope.rt.api_version(&self.scope.version), "metadata": meta});
        self.line("BOOKMARK", &obj)
    }
}

impl Api {
    /// Starts a watch; the returned channel yields newline-delimited JSON events and closes
    /// when the watch ends (timeout, slow consumer, or client gone).
    pub fn watch(
        self: &Arc<Self>,
        scope: Scope,
        opts: ListOptions,
        params: WatchParams,
    ) -> Result<mpsc::Receiver<Bytes>> {
        let requested =
            match params.resource_version.as_deref() {
                None | Some("") | Some("0") => None,
                Some(rv) => Some(rv.parse::<u64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?),
            };
        let (tx, out) = mpsc::channel(256);
        let api = self.clone();
        tokio::spawn(async move {
            let mut interrupted = api.watch_epoch.subscribe();
            drop(api.watch_gate.read().await);
            let mut enc = Encoder {
                scope: scope.clone(),
                table: params.table.clone(),
                sent_columns: false,
            };
            let (first, rx, mut last_rv, expired) =
                api.start_watch(&scope, &opts, &params, requested, &mut enc);
            for line in first {
                if tx.send(line).await.is_err() {
                    return;
                }
            }
            if expired {
                return;
            }
            tokio::select! {
                () = stream_changes(rx, &tx, enc, &scope, &opts, &params, &mut last_rv) => {}
                _ = interrupted.changed() => {}
            }
        });
        Ok(out)
    }

    /// Under the lock: the initial events and a subscription with no gap between them.
    fn start_watch(
        &self,
        scope: &Scope,
        opts: &ListOptions,
        params: &WatchParams,
        requested: Option<u64>,
        enc: &mut Encoder,
    ) -> (Vec<Bytes>, broadcast::Receiver<Arc<Event>>, u64, bool) {
        let inner = self.lock();
        let rx = inner.store.subscribe();
        let current = inner.store.current_rv();
        let mut first = Vec::new();
        match requested {
            Some(rv) if !params.send_initial_events => match inner.store.since(rv) {
                Some(events) => {
                    for ev in events {
                        if let Some(t) = translate(&ev, scope, opts) {
                            first.push(enc.line(t.as_str(), &ev.object));
                        }
                    }
                    (first, rx, current.max(rv), false)
                }
                None => {
                    let status = ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        inner.store.compacted_rv()
                    ))
                    .to_status();
                    first.push(enc.line("ERROR", &status));
                    (first, rx, current, true)
                }
            },
            _ => {
                for obj in inner
                    .store
                    .list(&scope.rt.key(), scope.namespace.as_deref())
                {
                    if opts.matches(&obj) {
                        first.push(enc.line("ADDED", &obj));
                    }
                }
                if params.send_initial_events && params.bookmarks {
                    first.push(enc.bookmark(current, true));
                }
                (first, rx, current, false)
            }
        }
    }
}

async fn stream_changes(
    mut rx: broadcast::Receiver<Arc<Event>>,
    tx: &mpsc::Sender<Bytes>,
    mut enc: Encoder,
    scope: &Scope,
    opts: &ListOptions,
    params: &WatchParams,
    last_rv: &mut u64,
) {
    let deadline = tokio::time::sleep(params.timeout);
    tokio::pin!(deadline);
    let mut ticker = tokio::time::interval(params.bookmark_interval);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = &mut deadline => return,
            () = tx.closed() => return,
            _ = ticker.tick(), if params.bookmarks => {
                if tx.send(enc.bookmark(*last_rv, false)).await.is_err() {
                    return;
                }
            }
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if ev.rv <= *last_rv {
                        continue;
                    }
                    *last_rv = ev.rv;
                    if let Some(t) = translate(&ev, scope, opts)
                        && tx.send(enc.line(t.as_str(), &ev.object)).await.is_err() {
                            return;
                        }
                }
                // A watcher too slow to keep up is closed; it resumes from its last version.
                Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}
