//! `vm list|start|stop|restart`: MicroVMs as a table, and run-strategy changes that plain
//! `kubectl patch` would make too.

use std::time::Duration;

use futures::StreamExt as _;
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use quiver_crds::condition::GUEST_READY;
use quiver_crds::{MicroVM, MicroVMPhase, RunStrategy};

use crate::context::Session;
use crate::table::{Table, age, or_none};
use crate::{Error, FIELD_MANAGER, Result};

const HEADER: [&str; 6] = ["NAME", "PHASE", "HOST", "READY", "EPOCH", "AGE"];

/// `kind namespace/name`, how errors name a VM.
#[must_use]
pub fn describe(namespace: &str, name: &str) -> String {
    format!("MicroVM {namespace}/{name}")
}

/// One table row; with `-A` the namespace comes first.
#[must_use]
pub fn row(vm: &MicroVM, all_namespaces: bool) -> Vec<String> {
    let status = vm.status.clone().unwrap_or_default();
    let ready = status.condition(GUEST_READY).map(|c| c.status.clone());
    let mut row = Vec::with_capacity(7);
    if all_namespaces {
        row.push(vm.metadata.namespace.clone().unwrap_or_default());
    }
    row.extend([
        vm.metadata.name.clone().unwrap_or_default(),
        or_none(status.phase.map(|p| format!("{p:?}"))),
        or_none(status.host),
        or_none(ready),
        status.epoch.to_string(),
        age(
            vm.metadata.creation_timestamp.as_ref(),
            k8s_openapi::jiff::Timestamp::now(),
        ),
    ]);
    row
}

fn table(all_namespaces: bool) -> Table {
    if all_namespaces {
        let mut header = vec!["NAMESPACE"];
        header.extend(HEADER);
        Table::new(&header)
    } else {
        Table::new(&HEADER)
    }
}

fn api(session: &Session, all_namespaces: bool) -> Api<MicroVM> {
    if all_namespaces {
        Api::all(session.client.clone())
    } else {
        Api::namespaced(session.client.clone(), &session.namespace)
    }
}

/// Prints the VMs of the namespace (or all), then with `watch` a row per change until
/// interrupted.
///
/// # Errors
/// The API server refused the list or the watch.
pub async fn list(session: &Session, all_namespaces: bool, watch: bool) -> Result<()> {
    let api = api(session, all_namespaces);
    let scope = if all_namespaces {
        "MicroVMs in all namespaces".to_owned()
    } else {
        format!("MicroVMs in namespace {}", session.namespace)
    };
    let mut vms = api
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::api(&scope, e))?
        .items;
    vms.sort_by_key(|vm| (vm.metadata.namespace.clone(), vm.metadata.name.clone()));
    let rows: Vec<Vec<String>> = vms.iter().map(|vm| row(vm, all_namespaces)).collect();
    let mut table = table(all_namespaces);
    if rows.is_empty() && !watch {
        println!("No resources found.");
        return Ok(());
    }
    table.fit(&rows);
    println!("{}", table.header());
    for r in &rows {
        println!("{}", table.line(r));
    }
    if !watch {
        return Ok(());
    }
    // The watcher lists again and then follows; a VM already shown is printed again only if
    // it changed since.
    let key = |vm: &MicroVM| (vm.metadata.namespace.clone(), vm.metadata.name.clone());
    let mut shown: std::collections::HashMap<_, _> = vms
        .iter()
        .map(|vm| (key(vm), vm.metadata.resource_version.clone()))
        .collect();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    while let Some(event) = stream.next().await {
        match event {
            Ok(
                watcher::Event::Apply(vm)
                | watcher::Event::InitApply(vm)
                | watcher::Event::Delete(vm),
            ) => {
                if shown.insert(key(&vm), vm.metadata.resource_version.clone())
                    != Some(vm.metadata.resource_version.clone())
                {
                    println!("{}", table.line(&row(&vm, all_namespaces)));
                }
            }
            Ok(_) => {}
            Err(e) => eprintln!("watch of {scope}: {e}; retrying"),
        }
    }
    Ok(())
}

/// Sets `spec.runStrategy` with a merge patch, as `kubectl patch mvm NAME --type merge -p
/// '{"spec":{"runStrategy":"..."}}'` does. Returns the VM as patched.
///
/// # Errors
/// The VM does not exist or the API server refused the patch.
pub async fn set_run_strategy(
    session: &Session,
    name: &str,
    strategy: RunStrategy,
) -> Result<MicroVM> {
    let api: Api<MicroVM> = Api::namespaced(session.client.clone(), &session.namespace);
    let patch = serde_json::json!({ "spec": { "runStrategy": strategy } });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::api(describe(&session.namespace, name), e))
}

/// Restart through the fields that exist: `Halted`, wait until the agent reports the VM
/// Stopped for that spec, then the run strategy it had before.
///
/// # Errors
/// The VM does not exist, is Halted already (use `start`), or did not stop within `timeout`
/// (its run strategy is then put back).
pub async fn restart(session: &Session, name: &str, timeout: Duration) -> Result<()> {
    let what = describe(&session.namespace, name);
    let api: Api<MicroVM> = Api::namespaced(session.client.clone(), &session.namespace);
    let vm = api.get(name).await.map_err(|e| Error::api(&what, e))?;
    let before = vm.spec.run_strategy;
    if before == RunStrategy::Halted {
        return Err(Error::Invalid(format!(
            "{what} is Halted (spec.runStrategy); use `vm start` to start it"
        )));
    }
    let halted = set_run_strategy(session, name, RunStrategy::Halted).await?;
    let generation = halted.metadata.generation.unwrap_or_default();
    println!("microvm.quiver.dev/{name} stopping (spec.runStrategy: Halted)");
    let stopped = tokio::time::timeout(timeout, wait_stopped(&api, name, generation, &what)).await;
    if !matches!(stopped, Ok(Ok(()))) {
        set_run_strategy(session, name, before).await?;
    }
    match stopped {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(Error::Timeout(format!(
                "{what} did not stop within {}s; spec.runStrategy is {before:?} again",
                timeout.as_secs()
            )));
        }
    }
    set_run_strategy(session, name, before).await?;
    println!("microvm.quiver.dev/{name} starting (spec.runStrategy: {before:?})");
    Ok(())
}

/// Waits until the status describes generation `generation` (or later) and says Stopped.
async fn wait_stopped(api: &Api<MicroVM>, name: &str, generation: i64, what: &str) -> Result<()> {
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api.clone(), config).default_backoff().boxed();
    while let Some(event) = stream.next().await {
        let vm = match event {
            Ok(watcher::Event::Apply(vm) | watcher::Event::InitApply(vm)) => vm,
            Ok(watcher::Event::Delete(_)) => return Err(Error::NotFound(what.to_owned())),
            Ok(_) => continue,
            Err(e) => {
                eprintln!("watch of {what}: {e}; retrying");
                continue;
            }
        };
        let status = vm.status.unwrap_or_default();
        let current = status.observed_generation.unwrap_or_default() >= generation;
        if current && status.phase == Some(MicroVMPhase::Stopped) {
            return Ok(());
        }
    }
    Err(Error::Unreachable(format!("watch of {what} ended")))
}
