//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`), as kubectl's
//! typed clients send them (`kubectl create namespace|configmap|secret|...`).
//!
//! A body is the magic `k8s\0` and a `runtime.Unknown` {typeMeta, raw}; `raw` is the object's
//! own message. Both are decoded with the `k8s-pb` generated types (prost checks every length
//! against the input and bounds nesting), then turned into the JSON object they encode, which
//! goes through the same checks as a JSON body. Every built-in kind the server serves decodes;
//! custom resources have no protobuf form (as in Kubernetes) and get `415`. Responses are
//! always JSON.

mod json;

use k8s_pb::Resource;
use k8s_pb::api::apps::v1::{DaemonSet, Deployment};
use k8s_pb::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenReview};
use k8s_pb::api::authorization::v1::{
    SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview,
};
use k8s_pb::api::coordination::v1::Lease;
use k8s_pb::api::core::v1::{ConfigMap, Event, Namespace, Secret, Service, ServiceAccount};
use k8s_pb::api::events::v1::Event as EventV1;
use k8s_pb::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_pb::apimachinery::pkg::apis::meta::v1::DeleteOptions;
use k8s_pb::apimachinery::pkg::runtime::Unknown;
use prost::Message;
use serde_json::Value;

use self::json::ToJson;
use crate::error::{ApiError, Result};

pub const CONTENT_TYPE: &str = "application/vnd.kubernetes.protobuf";
const MAGIC: &[u8] = b"k8s\0";

fn bad(what: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("invalid protobuf body: {what}"))
}

/// Decodes a protobuf request body into the JSON object it encodes.
pub fn decode(body: &[u8]) -> Result<Value> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or_else(|| bad("missing the k8s magic prefix"))?;
    let unknown = Unknown::decode(envelope).map_err(bad)?;
    let type_meta = unknown.type_meta.unwrap_or_default();
    let api_version = type_meta.api_version.unwrap_or_default();
    let kind = type_meta.kind.unwrap_or_default();
    let raw = unknown.raw.unwrap_or_default();
    match (api_version.as_str(), kind.as_str()) {
        ("v1", "Namespace") => object::<Namespace>(&raw),
        ("v1", "ConfigMap") => object::<ConfigMap>(&raw),
        ("v1", "Secret") => object::<Secret>(&raw),
        ("v1", "ServiceAccount") => object::<ServiceAccount>(&raw),
        ("v1", "Service") => object::<Service>(&raw),
        ("apps/v1", "Deployment") => object::<Deployment>(&raw),
        ("apps/v1", "DaemonSet") => object::<DaemonSet>(&raw),
        ("v1", "Event") => object::<Event>(&raw),
        ("events.k8s.io/v1", "Event") => object::<EventV1>(&raw),
        ("coordination.k8s.io/v1", "Lease") => object::<Lease>(&raw),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => {
            object::<CustomResourceDefinition>(&raw)
        }
        ("rbac.authorization.k8s.io/v1", "Role") => object::<Role>(&raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => object::<ClusterRole>(&raw),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => object::<RoleBinding>(&raw),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => {
            object::<ClusterRoleBinding>(&raw)
        }
        // Typed clients (helm's release storage among them) send DELETE bodies as protobuf.
        ("v1" | "meta.k8s.io/v1", "DeleteOptions") => {
            object_as::<DeleteOptions>(&raw, &api_version, "DeleteOptions")
        }
        ("authentication.k8s.io/v1", "TokenRequest") => {
            object_as::<TokenRequest>(&raw, "authentication.k8s.io/v1", "TokenRequest")
        }
        ("authentication.k8s.io/v1", "TokenReview") => object::<TokenReview>(&raw),
        ("authentication.k8s.io/v1", "SelfSubjectReview") => object::<SelfSubjectReview>(&raw),
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => {
            object::<SelfSubjectAccessReview>(&raw)
        }
        ("authorization.k8s.io/v1", "SubjectAccessReview") => object::<SubjectAccessReview>(&raw),
        ("authorization.k8s.io/v1", "SelfSubjectRulesReview") => {
            object::<SelfSubjectRulesReview>(&raw)
        }
        _ => Err(ApiError::unsupported_media_type(format!(
            "no protobuf form for {api_version:?} {kind:?}: the dev control plane decodes protobuf for its built-in kinds only; send JSON"
        ))),
    }
}

fn object<T: Message + Default + Resource + ToJson>(raw: &[u8]) -> Result<Value> {
    object_as::<T>(raw, T::API_VERSION, T::KIND)
}

/// For messages that are not resources of their own (a TokenRequest is a subresource).
fn object_as<T: Message + Default + ToJson>(
    raw: &[u8],
    api_version: &str,
    kind: &str,
) -> Result<Value> {
    let message = T::decode(raw).map_err(bad)?;
    let mut obj = match message.to_json()? {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    obj.insert("apiVersion".into(), Value::String(api_version.into()));
    obj.insert("kind".into(), Value::String(kind.into()));
    Ok(Value::Object(obj))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use k8s_pb::apimachinery::pkg::runtime::TypeMeta;
    use serde_json::json;

    fn body<T: Message + Resource>(message: &T) -> Vec<u8> {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some(T::API_VERSION.into()),
                kind: Some(T::KIND.into()),
            }),
            raw: Some(message.encode_to_vec()),
            content_encoding: Some(String::new()),
            content_type: Some(String::new()),
        };
        [MAGIC.to_vec(), unknown.encode_to_vec()].concat()
    }

    /// As Go's marshaller writes it: every non-pointer field, empty or not.
    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            generate_name: Some(String::new()),
            namespace: Some(String::new()),
            uid: Some(String::new()),
            resource_version: Some(String::new()),
            generation: Some(0),
            creation_timestamp: Some(Time {
                seconds: Some(-62_135_596_800),
                nanos: Some(0),
            }),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn decodes_a_config_map() {
        let cm = ConfigMap {
            metadata: Some(meta("settings")),
            data: [("mode".to_string(), "fast".to_string())].into(),
            binary_data: [("blob".to_string(), vec![0, 1, 2])].into(),
            ..ConfigMap::default()
        };
        let obj = decode(&body(&cm)).expect("valid body");
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "settings", "generation": 0, "labels": {"app": "web"}},
                "data": {"mode": "fast"}, "binaryData": {"blob": "AAEC"}})
        );
    }

    #[test]
    fn decodes_kinds_the_old_decoder_did_not_know() {
        let lease = k8s_pb::api::coordination::v1::Lease {
            metadata: Some(meta("leader")),
            spec: Some(k8s_pb::api::coordination::v1::LeaseSpec {
                holder_identity: Some("a".into()),
                lease_duration_seconds: Some(15),
                ..Default::default()
            }),
        };
        let obj = decode(&body(&lease)).expect("valid lease");
        assert_eq!(obj["kind"], "Lease");
        assert_eq!(
            obj["spec"],
            json!({"holderIdentity": "a", "leaseDurationSeconds": 15})
        );
    }

    #[test]
    fn decodes_a_service_with_go_names_and_int_or_string_ports() {
        use k8s_pb::api::core::v1::{ServicePort, ServiceSpec};
        use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
        let port = |port: i32, target: IntOrString| ServicePort {
            port: Some(port),
            target_port: Some(target),
            ..ServicePort::default()
        };
        let svc = Service {
            metadata: Some(meta("web")),
            spec: Some(ServiceSpec {
                cluster_ip: Some("None".into()),
                ports: vec![
                    port(
                        80,
                        IntOrString {
                            r#type: Some(1),
                            int_val: Some(0),
                            str_val: Some("http".into()),
                        },
                    ),
                    port(
                        9090,
                        IntOrString {
                            r#type: Some(0),
                            int_val: Some(9091),
                            str_val: Some(String::new()),
                        },
                    ),
                ],
                ..ServiceSpec::default()
            }),
            status: None,
        };
        let obj = decode(&body(&svc)).expect("valid service");
        assert_eq!(
            obj["spec"],
            json!({"clusterIP": "None", "ports": [{"port": 80, "targetPort": "http"}, {"port": 9090, "targetPort": 9091}]})
        );
    }

    #[test]
    fn decodes_a_deployment_with_embedded_go_structs_and_quantities() {
        use k8s_pb::api::apps::v1::DeploymentSpec;
        use k8s_pb::api::core::v1::{
            Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, LocalObjectReference, PodSpec,
            PodTemplateSpec, ResourceRequirements, SecretKeySelector, Volume, VolumeSource,
        };
        use k8s_pb::apimachinery::pkg::api::resource::Quantity;
        let secret_ref = SecretKeySelector {
            local_object_reference: Some(LocalObjectReference {
                name: Some("creds".into()),
            }),
            key: Some("token".into()),
            optional: None,
        };
        let container = Container {
            name: Some("web".into()),
            image: Some("nginx".into()),
            env: vec![EnvVar {
                name: Some("TOKEN".into()),
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(secret_ref),
                    ..Default::default()
                }),
                ..EnvVar::default()
            }],
            resources: Some(ResourceRequirements {
                requests: [(
                    "cpu".to_string(),
                    Quantity {
                        string: Some("50m".into()),
                    },
                )]
                .into(),
                ..ResourceRequirements::default()
            }),
            ..Container::default()
        };
        let volume = Volume {
            name: Some("scratch".into()),
            volume_source: Some(VolumeSource {
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..VolumeSource::default()
            }),
        };
        let deployment = Deployment {
            metadata: Some(meta("web")),
            spec: Some(DeploymentSpec {
                replicas: Some(0),
                template: Some(PodTemplateSpec {
                    metadata: None,
                    spec: Some(PodSpec {
                        containers: vec![container],
                        volumes: vec![volume],
                        ..PodSpec::default()
                    }),
                }),
                ..DeploymentSpec::default()
            }),
            status: None,
        };
        let obj = decode(&body(&deployment)).expect("valid deployment");
        assert_eq!(obj["apiVersion"], "apps/v1");
        assert_eq!(
            obj["spec"],
            json!({"replicas": 0, "template": {"spec": {
                "containers": [{"name": "web", "image": "nginx",
                    "env": [{"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}],
                    "resources": {"requests": {"cpu": "50m"}}}],
                "volumes": [{"name": "scratch", "emptyDir": {}}]}}})
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let cm = ConfigMap {
            metadata: Some(meta("settings")),
            ..ConfigMap::default()
        };
        let body = body(&cm);
        for cut in 0..body.len() {
            let _ = decode(&body[..cut]);
        }
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(decode(&huge).expect_err("length beyond end").code, 400);
    }

    #[test]
    fn custom_resources_are_415() {
        let unknown = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("quiver.dev/v1alpha1".into()),
                kind: Some("MicroVM".into()),
            }),
            ..Unknown::default()
        };
        let body = [MAGIC.to_vec(), unknown.encode_to_vec()].concat();
        assert_eq!(decode(&body).expect_err("unsupported").code, 415);
    }
}
