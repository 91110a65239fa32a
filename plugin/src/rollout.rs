//! `rollout get|promote|pause|resume|abort|retry`: a Rollout's progress, and the spec fields
//! its controller acts on (`spec.paused`, `spec.promote`, `spec.promoteStep`, `spec.abort`,
//! `spec.retry`). Each command writes only those documented fields, exactly what
//! `kubectl patch` would.

use std::fmt::Write as _;

use futures::StreamExt as _;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt as _, watcher};
use quiver_crds::Rollout;

use crate::context::Session;
use crate::table::age;
use crate::{Error, FIELD_MANAGER, Result};

const BAR_WIDTH: usize = 30;

#[must_use]
pub fn describe(namespace: &str, name: &str) -> String {
    format!("Rollout {namespace}/{name}")
}

/// `[#########.....................]  30%`
#[must_use]
pub fn progress_bar(percent: u32) -> String {
    let percent = percent.min(100);
    let filled = BAR_WIDTH * percent as usize / 100;
    format!(
        "[{}{}] {percent:>3}%",
        "#".repeat(filled),
        ".".repeat(BAR_WIDTH - filled)
    )
}

/// The live view `rollout get` prints.
#[must_use]
pub fn render(rollout: &Rollout) -> String {
    let status = rollout.status.clone().unwrap_or_default();
    let spec = &rollout.spec;
    let steps = spec.steps.len();
    let mut out = String::new();
    let field = |out: &mut String, name: &str, value: &str| {
        let _ = writeln!(out, "{name:<14}{value}");
    };
    field(
        &mut out,
        "Name:",
        rollout.metadata.name.as_deref().unwrap_or_default(),
    );
    field(
        &mut out,
        "Namespace:",
        rollout.metadata.namespace.as_deref().unwrap_or_default(),
    );
    let phase = status.phase.map_or_else(
        || "<none> (no controller has acted on it)".to_owned(),
        |p| format!("{p:?}"),
    );
    field(&mut out, "Phase:", &phase);
    let step = status.current_step_index.map_or_else(
        || format!("-/{steps}"),
        |i| format!("{}/{steps}", (i as usize).min(steps)),
    );
    field(&mut out, "Step:", &step);
    field(&mut out, "Weight:", &progress_bar(status.current_weight));
    field(
        &mut out,
        "Selected:",
        &format!(
            "{} {}",
            status.selected,
            if spec.micro_vms.is_some() {
                "MicroVMs"
            } else {
                "hosts"
            }
        ),
    );
    let canaries = if status.canaries.is_empty() {
        "<none>".to_owned()
    } else {
        status.canaries.join(", ")
    };
    field(&mut out, "Canaries:", &canaries);
    field(
        &mut out,
        "Failures:",
        &format!("{} of {}", status.failures, spec.analysis.failure_limit),
    );
    let mut flags = Vec::new();
    if spec.paused {
        flags.push("paused".to_owned());
    }
    if spec.promote {
        flags.push("promote".to_owned());
    }
    if spec.abort {
        flags.push("abort".to_owned());
    }
    flags.push(format!(
        "retry={} (observed {})",
        spec.retry, status.observed_retry
    ));
    flags.push(format!(
        "promoteStep={} (observed {})",
        spec.promote_step, status.observed_promote_step
    ));
    field(&mut out, "Spec:", &flags.join(", "));
    if let Some(message) = &status.message {
        field(&mut out, "Message:", message);
    }
    field(
        &mut out,
        "Age:",
        &age(
            rollout.metadata.creation_timestamp.as_ref(),
            k8s_openapi::jiff::Timestamp::now(),
        ),
    );
    if !status.conditions.is_empty() {
        out.push_str("Conditions:\n");
        for c in &status.conditions {
            let _ = writeln!(
                out,
                "  {:<16}{:<8}{:<20}{}",
                c.type_, c.status, c.reason, c.message
            );
        }
    }
    out
}

/// Prints the rollout, and with `watch` again on every change until interrupted.
///
/// # Errors
/// The rollout does not exist or the API server refused the read.
pub async fn get(session: &Session, name: &str, watch: bool) -> Result<()> {
    let what = describe(&session.namespace, name);
    let api: Api<Rollout> = Api::namespaced(session.client.clone(), &session.namespace);
    let rollout = api.get(name).await.map_err(|e| Error::api(&what, e))?;
    print!("{}", render(&rollout));
    if !watch {
        return Ok(());
    }
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).default_backoff().boxed();
    let mut last = rollout.metadata.resource_version.clone();
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::Apply(r) | watcher::Event::InitApply(r)) => {
                if r.metadata.resource_version != last {
                    last.clone_from(&r.metadata.resource_version);
                    println!();
                    print!("{}", render(&r));
                }
            }
            Ok(watcher::Event::Delete(_)) => {
                println!("\n{what} deleted");
                return Ok(());
            }
            Ok(_) => {}
            Err(e) => eprintln!("watch of {what}: {e}; retrying"),
        }
    }
    Ok(())
}

/// Merge-patches `spec` of the rollout with `fields`.
///
/// # Errors
/// The rollout does not exist or the API server refused the patch.
pub async fn patch_spec(
    session: &Session,
    name: &str,
    fields: serde_json::Value,
) -> Result<Rollout> {
    let api: Api<Rollout> = Api::namespaced(session.client.clone(), &session.namespace);
    let patch = serde_json::json!({ "spec": fields });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(|e| Error::api(describe(&session.namespace, name), e))
}

/// Raises the counter `spec.<counter>` (`retry`, `promoteStep`) by one, merging `also` into
/// the same patch. The patch carries the resourceVersion it read, so two raises at once cannot
/// both write the same value (a conflict is read again and retried).
///
/// # Errors
/// The rollout does not exist, or the API server refused the patch.
pub async fn raise(
    session: &Session,
    name: &str,
    counter: &str,
    also: serde_json::Value,
) -> Result<u64> {
    let what = describe(&session.namespace, name);
    let api: Api<Rollout> = Api::namespaced(session.client.clone(), &session.namespace);
    for _ in 0..5 {
        let current = api.get(name).await.map_err(|e| Error::api(&what, e))?;
        let spec = serde_json::to_value(&current.spec).unwrap_or_default();
        let next = spec[counter].as_u64().unwrap_or(0).saturating_add(1);
        let mut fields = also.clone();
        fields[counter] = next.into();
        let patch = serde_json::json!({
            "metadata": { "resourceVersion": current.metadata.resource_version },
            "spec": fields,
        });
        match api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => return Ok(next),
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(Error::api(&what, e)),
        }
    }
    Err(Error::Invalid(format!(
        "{what} kept changing; {counter} not raised, try again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bar_fills_in_proportion_to_the_weight() {
        assert_eq!(progress_bar(0), format!("[{}]   0%", ".".repeat(30)));
        assert_eq!(
            progress_bar(50),
            format!("[{}{}]  50%", "#".repeat(15), ".".repeat(15))
        );
        assert_eq!(progress_bar(250), format!("[{}] 100%", "#".repeat(30)));
    }
}
