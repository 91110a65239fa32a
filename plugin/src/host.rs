//! `host list|cordon|uncordon|drain`: Hosts as a table, and the two fields people set on
//! them (`spec.unschedulable`, `spec.drain`).
//!
//! The patches are JSON merge patches under the field manager [`FIELD_MANAGER`], so the
//! agent's own server-side apply of its Host spec never takes these fields over.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use quiver_crds::condition::READY;
use quiver_crds::{Host, MicroVM};

use crate::context::Session;
use crate::table::{Table, age, or_none};
use crate::{Error, FIELD_MANAGER, Result};

const HEADER: [&str; 6] = ["NAME", "READY", "ROLE", "VMS", "SCHEDULING", "AGE"];

/// Schedulable, Cordoned (`spec.unschedulable`) or Draining (`spec.drain`, which implies no
/// new VMs either).
#[must_use]
pub fn scheduling(host: &Host) -> &'static str {
    if host.spec.drain {
        "Draining"
    } else if host.spec.unschedulable {
        "Cordoned"
    } else {
        "Schedulable"
    }
}

#[must_use]
pub fn row(host: &Host) -> Vec<String> {
    let status = host.status.clone().unwrap_or_default();
    let ready = status
        .conditions
        .iter()
        .find(|c| c.type_ == READY)
        .map(|c| c.status.clone());
    vec![
        host.metadata.name.clone().unwrap_or_default(),
        or_none(ready),
        or_none(status.raft.map(|r| format!("{:?}", r.role))),
        status.vms.to_string(),
        scheduling(host).to_owned(),
        age(
            host.metadata.creation_timestamp.as_ref(),
            k8s_openapi::jiff::Timestamp::now(),
        ),
    ]
}

/// Prints every Host.
///
/// # Errors
/// The API server refused the list.
pub async fn list(session: &Session) -> Result<()> {
    let api: Api<Host> = Api::all(session.client.clone());
    let mut hosts = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::api("Hosts", e))?
        .items;
    if hosts.is_empty() {
        println!("No resources found.");
        return Ok(());
    }
    hosts.sort_by_key(|h| h.metadata.name.clone());
    let rows: Vec<Vec<String>> = hosts.iter().map(row).collect();
    print!("{}", Table::new(&HEADER).render(&rows));
    Ok(())
}

/// Merge-patches `spec` of Host `name` with `fields`.
///
/// # Errors
/// The Host does not exist or the API server refused the patch.
pub async fn patch_spec(session: &Session, name: &str, fields: serde_json::Value) -> Result<Host> {
    let api: Api<Host> = Api::all(session.client.clone());
    let patch = serde_json::json!({ "spec": fields });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::api(format!("Host {name}"), e))
}

/// The MicroVMs (`namespace/name`) whose status names `host`.
fn vms_on(vms: &[MicroVM], host: &str) -> BTreeSet<String> {
    vms.iter()
        .filter(|vm| vm.status.as_ref().and_then(|s| s.host.as_deref()) == Some(host))
        .map(|vm| {
            format!(
                "{}/{}",
                vm.metadata.namespace.as_deref().unwrap_or_default(),
                vm.metadata.name.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

/// Waits until no MicroVM's `status.host` names `host`, printing each change of the set
/// still there. `timeout` of `None` waits as long as it takes.
///
/// # Errors
/// The watch failed to start, or `timeout` passed first.
pub async fn wait_drained(session: &Session, host: &str, timeout: Option<Duration>) -> Result<()> {
    let wait = wait_empty(session, host);
    match timeout {
        None => wait.await,
        Some(limit) => tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
            Err(Error::Timeout(format!(
                "Host {host} still has VMs after {}s; it stays draining",
                limit.as_secs()
            )))
        }),
    }
}

async fn wait_empty(session: &Session, host: &str) -> Result<()> {
    let api: Api<MicroVM> = Api::all(session.client.clone());
    let mut store: std::collections::BTreeMap<String, MicroVM> = Default::default();
    let mut last: Option<BTreeSet<String>> = None;
    let mut ready = false;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        let key = |vm: &MicroVM| {
            format!(
                "{}/{}",
                vm.metadata.namespace.clone().unwrap_or_default(),
                vm.metadata.name.clone().unwrap_or_default()
            )
        };
        match event {
            Ok(watcher::Event::Init) => store.clear(),
            Ok(watcher::Event::InitApply(vm) | watcher::Event::Apply(vm)) => {
                store.insert(key(&vm), vm);
            }
            Ok(watcher::Event::Delete(vm)) => {
                store.remove(&key(&vm));
            }
            Ok(watcher::Event::InitDone) => ready = true,
            Err(e) => {
                eprintln!("watch of MicroVMs: {e}; retrying");
                continue;
            }
        }
        if !ready {
            continue;
        }
        let vms: Vec<MicroVM> = store.values().cloned().collect();
        let left = vms_on(&vms, host);
        if last.as_ref() != Some(&left) {
            if left.is_empty() {
                println!("host {host} drained: no VMs left on it");
                return Ok(());
            }
            let names: Vec<&str> = left.iter().map(String::as_str).collect();
            println!(
                "waiting for {} VM(s) to leave host {host}: {}",
                left.len(),
                names.join(", ")
            );
            last = Some(left);
        }
    }
    Err(Error::Unreachable("watch of MicroVMs ended".to_owned()))
}
