//! Renders the CRD manifests that `crdgen` writes to `charts/quiver/crds/`.

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::{Host, MicroVM, Rollout};

/// Where the manifests live, relative to the workspace root.
pub const CRD_DIR: &str = "charts/quiver/crds";

/// The command that regenerates the checked-in manifests.
pub const REGENERATE_COMMAND: &str = "cargo run -p quiver-crds --bin crdgen";

const HEADER: &str = "# Generated from crds/src by `cargo run -p quiver-crds --bin crdgen`. \
                      Do not edit by hand.\n";

/// One rendered manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CrdFile {
    /// File name inside [`CRD_DIR`]: the CRD's name plus `.yaml`, e.g. `microvms.quiver.dev.yaml`.
    pub file_name: String,
    /// The manifest: a comment header and one CustomResourceDefinition.
    pub yaml: String,
}

/// Every Quiver CRD, in a stable order.
#[must_use]
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![MicroVM::crd(), Rollout::crd(), Host::crd()]
}

/// Renders one YAML manifest per CRD.
///
/// # Errors
/// If a CRD cannot be serialized to YAML, which would be a bug in the types.
pub fn render() -> Result<Vec<CrdFile>, serde_yaml_ng::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            Ok(CrdFile {
                file_name: format!("{name}.yaml"),
                yaml: format!("{HEADER}{}", serde_yaml_ng::to_string(&crd)?),
            })
        })
        .collect()
}

/// The absolute path of [`CRD_DIR`] in this checkout.
#[must_use]
pub fn default_dir() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).join(CRD_DIR)
}
