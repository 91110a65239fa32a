//! Whether the generator reaches everything the server serves: every resource and
//! subresource that discovery lists must be one the run writes to, so a kind added to the
//! server without being added to the generator fails the test instead of going unfuzzed.

use std::collections::BTreeSet;

use super::fixtures::{Endpoint, Resource};
use crate::common::Client;

/// Kinds (and their subresources) that only the fixtures' own CRDs define.
const FIXTURE_KINDS: &[&str] = &[
    "/apis/fuzz.example/v1/targets",
    "/apis/fuzz.example/v1/bystanders",
];

/// Every `prefix/resource[/subresource]` that discovery lists.
async fn served(client: &mut Client) -> anyhow::Result<BTreeSet<String>> {
    let mut prefixes = vec!["/api/v1".to_string()];
    let groups = client.get("/apis").await?;
    for group in groups["groups"].as_array().into_iter().flatten() {
        for version in group["versions"].as_array().into_iter().flatten() {
            if let Some(gv) = version["groupVersion"].as_str() {
                prefixes.push(format!("/apis/{gv}"));
            }
        }
    }
    let mut out = BTreeSet::new();
    for prefix in prefixes {
        let list = client.get(&prefix).await?;
        for r in list["resources"].as_array().into_iter().flatten() {
            if let Some(name) = r["name"].as_str() {
                out.insert(format!("{prefix}/{name}"));
            }
        }
    }
    Ok(out)
}

/// What the generator writes to, in the same form.
fn reached(resources: &[Resource], endpoints: &[Endpoint]) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for r in resources {
        let main = format!("{}/{}", r.prefix, r.plural);
        if r.status {
            out.insert(format!("{main}/status"));
        }
        if r.scale {
            out.insert(format!("{main}/scale"));
        }
        out.insert(main);
    }
    for e in endpoints {
        // `/api/v1/namespaces/<ns>/serviceaccounts/<name>/token` → `/api/v1/serviceaccounts/token`.
        let parts: Vec<&str> = e.path.split('/').collect();
        let path = match parts.as_slice() {
            ["", "api", v, "namespaces", _, resource, _, sub] => {
                format!("/api/{v}/{resource}/{sub}")
            }
            _ => e.path.clone(),
        };
        out.insert(path);
    }
    out
}

/// What discovery lists that the generator never reaches.
pub async fn unreached(
    client: &mut Client,
    resources: &[Resource],
    endpoints: &[Endpoint],
) -> anyhow::Result<Vec<String>> {
    let reached = reached(resources, endpoints);
    Ok(served(client)
        .await?
        .into_iter()
        .filter(|s| !reached.contains(s) && !FIXTURE_KINDS.iter().any(|k| s.starts_with(k)))
        .collect())
}
