//! The JSON form of the `k8s-pb` messages the server accepts, as Kubernetes serializes them:
//! camelCase names, empty strings, lists and maps left out, times as RFC 3339 strings,
//! bytes as base64, and embedded JSON (`FieldsV1`, schema defaults) parsed.
//!
//! Each message lists its fields once in [`message!`]; a field's JSON name is its Rust name in
//! camelCase unless given after `as`.

use std::collections::BTreeMap;

use base64::Engine as _;
use k8s_pb::api::authentication::v1 as authn;
use k8s_pb::api::authorization::v1 as authz;
use k8s_pb::api::coordination::v1 as coordination;
use k8s_pb::api::core::v1 as core;
use k8s_pb::api::events::v1 as events;
use k8s_pb::api::rbac::v1 as rbac;
use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use serde_json::{Map, Value};

use crate::error::{ApiError, Result};

/// A value's JSON form; `None` when Kubernetes leaves it out.
pub trait ToJson {
    fn to_json(&self) -> Result<Option<Value>>;
}

/// Marks the types a repeated field may hold (every message and `String`), so that bytes
/// (`Vec<u8>`) keep their own base64 form.
trait Item: ToJson {}

impl ToJson for String {
    fn to_json(&self) -> Result<Option<Value>> {
        Ok((!self.is_empty()).then(|| Value::String(self.clone())))
    }
}
impl Item for String {}

impl ToJson for bool {
    fn to_json(&self) -> Result<Option<Value>> {
        Ok(Some(Value::Bool(*self)))
    }
}

macro_rules! number {
    ($($t:ty),*) => {$(
        impl ToJson for $t {
            fn to_json(&self) -> Result<Option<Value>> {
                Ok(Some(serde_json::json!(*self)))
            }
        }
    )*};
}
number!(i32, i64);
impl Item for i32 {}
impl Item for i64 {}

impl ToJson for f64 {
    fn to_json(&self) -> Result<Option<Value>> {
        Ok(serde_json::Number::from_f64(*self).map(Value::Number))
    }
}

impl ToJson for Vec<u8> {
    fn to_json(&self) -> Result<Option<Value>> {
        let text = base64::engine::general_purpose::STANDARD.encode(self);
        Ok(Some(Value::String(text)))
    }
}

impl<T: ToJson> ToJson for Option<T> {
    fn to_json(&self) -> Result<Option<Value>> {
        self.as_ref().map_or(Ok(None), ToJson::to_json)
    }
}

impl<T: ToJson> ToJson for Box<T> {
    fn to_json(&self) -> Result<Option<Value>> {
        (**self).to_json()
    }
}

impl<T: Item> ToJson for Vec<T> {
    fn to_json(&self) -> Result<Option<Value>> {
        if self.is_empty() {
            return Ok(None);
        }
        let items = self
            .iter()
            .map(|i| Ok(i.to_json()?.unwrap_or(Value::Null)))
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(Value::Array(items)))
    }
}

impl<T: ToJson> ToJson for BTreeMap<String, T> {
    fn to_json(&self) -> Result<Option<Value>> {
        if self.is_empty() {
            return Ok(None);
        }
        let mut out = Map::new();
        for (k, v) in self {
            out.insert(k.clone(), v.to_json()?.unwrap_or(Value::Null));
        }
        Ok(Some(Value::Object(out)))
    }
}

/// `binary_data` → `binaryData`; a raw identifier loses its `r#`.
fn camel(rust: &str) -> String {
    let mut out = String::with_capacity(rust.len());
    let mut upper = false;
    for c in rust.trim_start_matches("r#").chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

fn put(out: &mut Map<String, Value>, name: String, field: &impl ToJson) -> Result<()> {
    if let Some(v) = field.to_json()? {
        out.insert(name, v);
    }
    Ok(())
}

/// Go's embedded structs (`LocalObjectReference` in a `SecretKeySelector`...) are fields of
/// their own in protobuf but inline in JSON.
fn flatten(out: &mut Map<String, Value>, embedded: &impl ToJson) -> Result<()> {
    if let Some(Value::Object(fields)) = embedded.to_json()? {
        out.extend(fields);
    }
    Ok(())
}

/// `Type { field, field as "jsonName"; embeds embedded }`: the JSON form of a message.
macro_rules! message {
    (@name $field:ident) => { camel(stringify!($field)) };
    (@name $field:ident $json:literal) => { String::from($json) };
    ($($ty:ty { $($field:ident $(as $json:literal)?),* $(,)? $(; embeds $($embedded:ident),*)? })*) => {$(
        impl ToJson for $ty {
            fn to_json(&self) -> Result<Option<Value>> {
                let mut out = Map::new();
                $(put(&mut out, message!(@name $field $($json)?), &self.$field)?;)*
                $($(flatten(&mut out, &self.$embedded)?;)*)?
                Ok(Some(Value::Object(out)))
            }
        }
        impl Item for $ty {}
    )*};
}

mod workloads;

message! {
    meta::ObjectMeta { name, generate_name, namespace, self_link, uid, resource_version, generation,
        creation_timestamp, deletion_timestamp, deletion_grace_period_seconds, labels, annotations,
        owner_references, finalizers, managed_fields }
    meta::OwnerReference { api_version, kind, name, uid, controller, block_owner_deletion }
    meta::ManagedFieldsEntry { manager, operation, api_version, time, fields_type, fields_v1 as "fieldsV1",
        subresource }
    meta::DeleteOptions { grace_period_seconds, preconditions, orphan_dependents, propagation_policy,
        dry_run, ignore_store_read_error_with_cluster_breaking_potential }
    meta::Preconditions { uid, resource_version }

    core::Namespace { metadata, spec, status }
    core::NamespaceSpec { finalizers }
    core::NamespaceStatus { phase, conditions }
    core::NamespaceCondition { r#type, status, last_transition_time, reason, message }
    core::ConfigMap { metadata, immutable, data, binary_data }
    core::Secret { metadata, immutable, data, string_data, r#type }
    core::ServiceAccount { metadata, secrets, image_pull_secrets, automount_service_account_token }
    core::ObjectReference { kind, namespace, name, uid, api_version, resource_version, field_path }
    core::LocalObjectReference { name }
    core::Event { metadata, involved_object, reason, message, source, first_timestamp, last_timestamp,
        count, r#type, event_time, series, action, related, reporting_component, reporting_instance }
    core::EventSource { component, host }
    core::EventSeries { count, last_observed_time }

    events::Event { metadata, event_time, series, reporting_controller, reporting_instance, action,
        reason, regarding, related, note, r#type, deprecated_source, deprecated_first_timestamp,
        deprecated_last_timestamp, deprecated_count }
    events::EventSeries { count, last_observed_time }

    rbac::Role { metadata, rules }
    rbac::ClusterRole { metadata, rules }
    rbac::PolicyRule { verbs, api_groups, resources, resource_names, non_resource_ur_ls as "nonResourceURLs" }
    rbac::RoleBinding { metadata, subjects, role_ref }
    rbac::ClusterRoleBinding { metadata, subjects, role_ref }
    rbac::Subject { kind, api_group, name, namespace }
    rbac::RoleRef { api_group, kind, name }

    authn::TokenRequest { metadata, spec }
    authn::TokenRequestSpec { audiences, expiration_seconds, bound_object_ref }
    authn::BoundObjectReference { kind, api_version, name, u_id as "uid" }
    authn::TokenReview { metadata, spec }
    authn::TokenReviewSpec { token, audiences }
    authn::SelfSubjectReview { metadata }

    authz::SelfSubjectAccessReview { metadata, spec }
    authz::SelfSubjectAccessReviewSpec { resource_attributes, non_resource_attributes }
    authz::SubjectAccessReview { metadata, spec }
    authz::SubjectAccessReviewSpec { resource_attributes, non_resource_attributes, user, groups, uid }
    authz::ResourceAttributes { namespace, verb, group, version, resource, subresource, name }
    authz::NonResourceAttributes { path, verb }
    authz::SelfSubjectRulesReview { metadata, spec }
    authz::SelfSubjectRulesReviewSpec { namespace }

    coordination::Lease { metadata, spec }
    coordination::LeaseSpec { holder_identity, lease_duration_seconds, acquire_time, renew_time,
        lease_transitions, strategy, preferred_holder }

    ext::CustomResourceDefinition { metadata, spec, status }
    ext::CustomResourceDefinitionSpec { group, names, scope, versions, conversion, preserve_unknown_fields }
    ext::CustomResourceDefinitionNames { plural, singular, short_names, kind, list_kind, categories }
    ext::CustomResourceDefinitionVersion { name, served, storage, deprecated, deprecation_warning, schema,
        subresources, additional_printer_columns, selectable_fields }
    ext::CustomResourceValidation { open_apiv3_schema as "openAPIV3Schema" }
    ext::CustomResourceSubresources { status, scale }
    ext::CustomResourceSubresourceScale { spec_replicas_path, status_replicas_path, label_selector_path }
    ext::CustomResourceColumnDefinition { name, r#type, format, description, priority, json_path }
    ext::CustomResourceConversion { strategy, webhook }
    ext::WebhookConversion { client_config, conversion_review_versions }
    ext::WebhookClientConfig { url, service, ca_bundle }
    ext::ServiceReference { namespace, name, path, port }
    ext::CustomResourceDefinitionStatus { conditions, accepted_names, stored_versions, observed_generation }
    ext::CustomResourceDefinitionCondition { r#type, status, last_transition_time, reason, message,
        observed_generation }
    ext::SelectableField { json_path }
    ext::ValidationRule { rule, message, message_expression, reason, field_path, optional_old_self }
    ext::ExternalDocumentation { description, url }
    ext::JsonSchemaProps { id, schema as "$schema", r#ref as "$ref", description, r#type, format, title,
        default, maximum, exclusive_maximum, minimum, exclusive_minimum, max_length, min_length, pattern,
        max_items, min_items, unique_items, multiple_of, r#enum, max_properties, min_properties, required,
        items, all_of, one_of, any_of, not, properties, additional_properties, pattern_properties,
        dependencies, additional_items, definitions, external_docs, example, nullable,
        x_kubernetes_preserve_unknown_fields as "x-kubernetes-preserve-unknown-fields",
        x_kubernetes_embedded_resource as "x-kubernetes-embedded-resource",
        x_kubernetes_int_or_string as "x-kubernetes-int-or-string",
        x_kubernetes_list_map_keys as "x-kubernetes-list-map-keys",
        x_kubernetes_list_type as "x-kubernetes-list-type",
        x_kubernetes_map_type as "x-kubernetes-map-type",
        x_kubernetes_validations as "x-kubernetes-validations" }
}

/// Go's zero `time.Time`, which Kubernetes writes for unset non-pointer times.
const GO_ZERO_TIME: i64 = -62_135_596_800;

fn timestamp(seconds: Option<i64>, nanos: Option<i32>, format: &str) -> Result<Option<Value>> {
    let secs = match seconds {
        None | Some(GO_ZERO_TIME) => return Ok(None),
        Some(s) => s,
    };
    let nanos = u32::try_from(nanos.unwrap_or(0)).unwrap_or(0);
    let t = chrono::DateTime::from_timestamp(secs, nanos).ok_or_else(|| {
        ApiError::bad_request(format!("invalid protobuf body: time {secs} out of range"))
    })?;
    Ok(Some(Value::String(t.format(format).to_string())))
}

impl ToJson for meta::Time {
    fn to_json(&self) -> Result<Option<Value>> {
        timestamp(self.seconds, self.nanos, "%Y-%m-%dT%H:%M:%SZ")
    }
}

impl ToJson for meta::MicroTime {
    fn to_json(&self) -> Result<Option<Value>> {
        timestamp(self.seconds, self.nanos, "%Y-%m-%dT%H:%M:%S%.6fZ")
    }
}

/// Embedded JSON, as `FieldsV1` and schema `default`/`enum`/`example` values carry it.
fn embedded(raw: Option<&Vec<u8>>) -> Result<Option<Value>> {
    raw.map(|bytes| {
        serde_json::from_slice(bytes).map_err(|e| {
            ApiError::bad_request(format!("invalid protobuf body: embedded JSON: {e}"))
        })
    })
    .transpose()
}

impl ToJson for meta::FieldsV1 {
    fn to_json(&self) -> Result<Option<Value>> {
        embedded(self.raw.as_ref())
    }
}

impl ToJson for ext::Json {
    fn to_json(&self) -> Result<Option<Value>> {
        embedded(self.raw.as_ref())
    }
}
impl Item for ext::Json {}

/// An empty message: `status: {}` turns the status subresource on.
impl ToJson for ext::CustomResourceSubresourceStatus {
    fn to_json(&self) -> Result<Option<Value>> {
        Ok(Some(Value::Object(Map::new())))
    }
}

impl ToJson for ext::JsonSchemaPropsOrArray {
    fn to_json(&self) -> Result<Option<Value>> {
        match &self.schema {
            Some(s) => s.to_json(),
            None => self.j_son_schemas.to_json(),
        }
    }
}

impl ToJson for ext::JsonSchemaPropsOrBool {
    fn to_json(&self) -> Result<Option<Value>> {
        match &self.schema {
            Some(s) => s.to_json(),
            None => self.allows.to_json(),
        }
    }
}

impl ToJson for ext::JsonSchemaPropsOrStringArray {
    fn to_json(&self) -> Result<Option<Value>> {
        match &self.schema {
            Some(s) => s.to_json(),
            None => self.property.to_json(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_camel_case() {
        assert_eq!(camel("binary_data"), "binaryData");
        assert_eq!(camel("r#type"), "type");
        assert_eq!(camel("uid"), "uid");
    }

    #[test]
    fn go_zero_times_are_left_out_and_others_are_rfc3339() {
        let zero = meta::Time {
            seconds: Some(GO_ZERO_TIME),
            nanos: Some(0),
        };
        assert_eq!(zero.to_json().expect("converts"), None);
        let t = meta::MicroTime {
            seconds: Some(0),
            nanos: Some(1000),
        };
        assert_eq!(
            t.to_json().expect("converts"),
            Some(Value::String("1970-01-01T00:00:00.000001Z".into()))
        );
    }
}
