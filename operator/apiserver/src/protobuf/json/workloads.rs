//! The JSON form of Deployments, DaemonSets and Services and every message inside them (the
//! pod template above all), listed from the `k8s-pb` types; a field's JSON name is taken from
//! the Kubernetes OpenAPI definitions where camelCase would get it wrong (`clusterIP`).

use k8s_pb::api::apps::v1 as apps;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::util::intstr;
use serde_json::{Map, Value};

use super::{Item, ToJson, camel, flatten, put};
use crate::error::Result;

/// `type` 0 holds an int32, 1 a string, as the Go type marshals them.
impl ToJson for intstr::IntOrString {
    fn to_json(&self) -> Result<Option<Value>> {
        Ok(match self.r#type {
            Some(1) => self.str_val.clone().map(Value::String),
            _ => self.int_val.map(Value::from),
        })
    }
}

impl ToJson for resource::Quantity {
    fn to_json(&self) -> Result<Option<Value>> {
        self.string.to_json()
    }
}

message! {
    apps::DaemonSet { metadata, spec, status }
    apps::DaemonSetCondition { r#type, status, last_transition_time, reason, message }
    apps::DaemonSetSpec { selector, template, update_strategy, min_ready_seconds, revision_history_limit }
    apps::DaemonSetStatus { current_number_scheduled, number_misscheduled, desired_number_scheduled, number_ready, observed_generation, updated_number_scheduled, number_available, number_unavailable, collision_count, conditions }
    apps::DaemonSetUpdateStrategy { r#type, rolling_update }
    apps::Deployment { metadata, spec, status }
    apps::DeploymentCondition { r#type, status, last_update_time, last_transition_time, reason, message }
    apps::DeploymentSpec { replicas, selector, template, strategy, min_ready_seconds, revision_history_limit, paused, progress_deadline_seconds }
    apps::DeploymentStatus { observed_generation, replicas, updated_replicas, ready_replicas, available_replicas, unavailable_replicas, terminating_replicas, conditions, collision_count }
    apps::DeploymentStrategy { r#type, rolling_update }
    apps::RollingUpdateDaemonSet { max_unavailable, max_surge }
    apps::RollingUpdateDeployment { max_unavailable, max_surge }
    core::Affinity { node_affinity, pod_affinity, pod_anti_affinity }
    core::AppArmorProfile { r#type, localhost_profile }
    core::AwsElasticBlockStoreVolumeSource { volume_id as "volumeID", fs_type, partition, read_only }
    core::AzureDiskVolumeSource { disk_name, disk_uri as "diskURI", caching_mode, fs_type, read_only, kind }
    core::AzureFileVolumeSource { secret_name, share_name, read_only }
    core::CSIVolumeSource { driver, read_only, fs_type, volume_attributes, node_publish_secret_ref }
    core::Capabilities { add, drop }
    core::CephFsVolumeSource { monitors, path, user, secret_file, secret_ref, read_only }
    core::CinderVolumeSource { volume_id as "volumeID", fs_type, read_only, secret_ref }
    core::ClientIpConfig { timeout_seconds }
    core::ClusterTrustBundleProjection { name, signer_name, label_selector, optional, path }
    core::ConfigMapEnvSource { optional; embeds local_object_reference }
    core::ConfigMapKeySelector { key, optional; embeds local_object_reference }
    core::ConfigMapProjection { items, optional; embeds local_object_reference }
    core::ConfigMapVolumeSource { items, default_mode, optional; embeds local_object_reference }
    core::Container { name, image, command, args, working_dir, ports, env_from, env, resources, resize_policy, restart_policy, restart_policy_rules, volume_mounts, volume_devices, liveness_probe, readiness_probe, startup_probe, lifecycle, termination_message_path, termination_message_policy, image_pull_policy, security_context, stdin, stdin_once, tty }
    core::ContainerPort { name, host_port, container_port, protocol, host_ip as "hostIP" }
    core::ContainerResizePolicy { resource_name, restart_policy }
    core::ContainerRestartRule { action, exit_codes }
    core::ContainerRestartRuleOnExitCodes { operator, values }
    core::DownwardAPIProjection { items }
    core::DownwardAPIVolumeFile { path, field_ref, resource_field_ref, mode }
    core::DownwardAPIVolumeSource { items, default_mode }
    core::EmptyDirVolumeSource { medium, size_limit }
    core::EnvFromSource { prefix, config_map_ref, secret_ref }
    core::EnvVar { name, value, value_from }
    core::EnvVarSource { field_ref, resource_field_ref, config_map_key_ref, secret_key_ref, file_key_ref }
    core::EphemeralContainer { target_container_name; embeds ephemeral_container_common }
    core::EphemeralContainerCommon { name, image, command, args, working_dir, ports, env_from, env, resources, resize_policy, restart_policy, restart_policy_rules, volume_mounts, volume_devices, liveness_probe, readiness_probe, startup_probe, lifecycle, termination_message_path, termination_message_policy, image_pull_policy, security_context, stdin, stdin_once, tty }
    core::EphemeralVolumeSource { volume_claim_template }
    core::ExecAction { command }
    core::FcVolumeSource { target_ww_ns as "targetWWNs", lun, fs_type, read_only, wwids }
    core::FileKeySelector { volume_name, path, key, optional }
    core::FlexVolumeSource { driver, fs_type, secret_ref, read_only, options }
    core::FlockerVolumeSource { dataset_name, dataset_uuid as "datasetUUID" }
    core::GcePersistentDiskVolumeSource { pd_name, fs_type, partition, read_only }
    core::GitRepoVolumeSource { repository, revision, directory }
    core::GlusterfsVolumeSource { endpoints, path, read_only }
    core::GrpcAction { port, service }
    core::HostAlias { ip, hostnames }
    core::HostPathVolumeSource { path, r#type }
    core::HttpGetAction { path, port, host, scheme, http_headers }
    core::HttpHeader { name, value }
    core::ImageVolumeSource { reference, pull_policy }
    core::IscsiVolumeSource { target_portal, iqn, lun, iscsi_interface, fs_type, read_only, portals, chap_auth_discovery, chap_auth_session, secret_ref, initiator_name }
    core::KeyToPath { key, path, mode }
    core::Lifecycle { post_start, pre_stop, stop_signal }
    core::LifecycleHandler { exec, http_get, tcp_socket, sleep }
    core::LoadBalancerIngress { ip, hostname, ip_mode, ports }
    core::LoadBalancerStatus { ingress }
    core::NfsVolumeSource { server, path, read_only }
    core::NodeAffinity { required_during_scheduling_ignored_during_execution, preferred_during_scheduling_ignored_during_execution }
    core::NodeSelector { node_selector_terms }
    core::NodeSelectorRequirement { key, operator, values }
    core::NodeSelectorTerm { match_expressions, match_fields }
    core::ObjectFieldSelector { api_version, field_path }
    core::PersistentVolumeClaimSpec { access_modes, selector, resources, volume_name, storage_class_name, volume_mode, data_source, data_source_ref, volume_attributes_class_name }
    core::PersistentVolumeClaimTemplate { metadata, spec }
    core::PersistentVolumeClaimVolumeSource { claim_name, read_only }
    core::PhotonPersistentDiskVolumeSource { pd_id as "pdID", fs_type }
    core::PodAffinity { required_during_scheduling_ignored_during_execution, preferred_during_scheduling_ignored_during_execution }
    core::PodAffinityTerm { label_selector, namespaces, topology_key, namespace_selector, match_label_keys, mismatch_label_keys }
    core::PodAntiAffinity { required_during_scheduling_ignored_during_execution, preferred_during_scheduling_ignored_during_execution }
    core::PodCertificateProjection { signer_name, key_type, max_expiration_seconds, credential_bundle_path, key_path, certificate_chain_path, user_annotations }
    core::PodDnsConfig { nameservers, searches, options }
    core::PodDnsConfigOption { name, value }
    core::PodOs { name }
    core::PodReadinessGate { condition_type }
    core::PodResourceClaim { name, resource_claim_name, resource_claim_template_name }
    core::PodSchedulingGate { name }
    core::PodSecurityContext { se_linux_options, windows_options, run_as_user, run_as_group, run_as_non_root, supplemental_groups, supplemental_groups_policy, fs_group, sysctls, fs_group_change_policy, seccomp_profile, app_armor_profile, se_linux_change_policy }
    core::PodSpec { volumes, init_containers, containers, ephemeral_containers, restart_policy, termination_grace_period_seconds, active_deadline_seconds, dns_policy, node_selector, service_account_name, service_account, automount_service_account_token, node_name, host_network, host_pid as "hostPID", host_ipc as "hostIPC", share_process_namespace, security_context, image_pull_secrets, hostname, subdomain, affinity, scheduler_name, tolerations, host_aliases, priority_class_name, priority, dns_config, readiness_gates, runtime_class_name, enable_service_links, preemption_policy, overhead, topology_spread_constraints, set_hostname_as_fqdn as "setHostnameAsFQDN", os, host_users, scheduling_gates, resource_claims, resources, hostname_override, workload_ref }
    core::PodTemplateSpec { metadata, spec }
    core::PortStatus { port, protocol, error }
    core::PortworxVolumeSource { volume_id as "volumeID", fs_type, read_only }
    core::PreferredSchedulingTerm { weight, preference }
    core::Probe { initial_delay_seconds, timeout_seconds, period_seconds, success_threshold, failure_threshold, termination_grace_period_seconds; embeds handler }
    core::ProbeHandler { exec, http_get, tcp_socket, grpc }
    core::ProjectedVolumeSource { sources, default_mode }
    core::QuobyteVolumeSource { registry, volume, read_only, user, group, tenant }
    core::RbdVolumeSource { monitors, image, fs_type, pool, user, keyring, secret_ref, read_only }
    core::ResourceClaim { name, request }
    core::ResourceFieldSelector { container_name, resource, divisor }
    core::ResourceRequirements { limits, requests, claims }
    core::ScaleIoVolumeSource { gateway, system, secret_ref, ssl_enabled, protection_domain, storage_pool, storage_mode, volume_name, fs_type, read_only }
    core::SeLinuxOptions { user, role, r#type, level }
    core::SeccompProfile { r#type, localhost_profile }
    core::SecretEnvSource { optional; embeds local_object_reference }
    core::SecretKeySelector { key, optional; embeds local_object_reference }
    core::SecretProjection { items, optional; embeds local_object_reference }
    core::SecretVolumeSource { secret_name, items, default_mode, optional }
    core::SecurityContext { capabilities, privileged, se_linux_options, windows_options, run_as_user, run_as_group, run_as_non_root, read_only_root_filesystem, allow_privilege_escalation, proc_mount, seccomp_profile, app_armor_profile }
    core::Service { metadata, spec, status }
    core::ServiceAccountTokenProjection { audience, expiration_seconds, path }
    core::ServicePort { name, protocol, app_protocol, port, target_port, node_port }
    core::ServiceSpec { ports, selector, cluster_ip as "clusterIP", cluster_ips as "clusterIPs", r#type, external_ips as "externalIPs", session_affinity, load_balancer_ip as "loadBalancerIP", load_balancer_source_ranges, external_name, external_traffic_policy, health_check_node_port, publish_not_ready_addresses, session_affinity_config, ip_families, ip_family_policy, allocate_load_balancer_node_ports, load_balancer_class, internal_traffic_policy, traffic_distribution }
    core::ServiceStatus { load_balancer, conditions }
    core::SessionAffinityConfig { client_ip as "clientIP" }
    core::SleepAction { seconds }
    core::StorageOsVolumeSource { volume_name, volume_namespace, fs_type, read_only, secret_ref }
    core::Sysctl { name, value }
    core::TcpSocketAction { port, host }
    core::Toleration { key, operator, value, effect, toleration_seconds }
    core::TopologySpreadConstraint { max_skew, topology_key, when_unsatisfiable, label_selector, min_domains, node_affinity_policy, node_taints_policy, match_label_keys }
    core::TypedLocalObjectReference { api_group, kind, name }
    core::TypedObjectReference { api_group, kind, name, namespace }
    core::Volume { name; embeds volume_source }
    core::VolumeDevice { name, device_path }
    core::VolumeMount { name, read_only, recursive_read_only, mount_path, sub_path, mount_propagation, sub_path_expr }
    core::VolumeProjection { secret, downward_api as "downwardAPI", config_map, service_account_token, cluster_trust_bundle, pod_certificate }
    core::VolumeResourceRequirements { limits, requests }
    core::VolumeSource { host_path, empty_dir, gce_persistent_disk, aws_elastic_block_store, git_repo, secret, nfs, iscsi, glusterfs, persistent_volume_claim, rbd, flex_volume, cinder, cephfs, flocker, downward_api as "downwardAPI", fc, azure_file, config_map, vsphere_volume, quobyte, azure_disk, photon_persistent_disk, projected, portworx_volume, scale_io as "scaleIO", storageos, csi, ephemeral, image }
    core::VsphereVirtualDiskVolumeSource { volume_path, fs_type, storage_policy_name, storage_policy_id as "storagePolicyID" }
    core::WeightedPodAffinityTerm { weight, pod_affinity_term }
    core::WindowsSecurityContextOptions { gmsa_credential_spec_name, gmsa_credential_spec, run_as_user_name, host_process }
    core::WorkloadReference { name, pod_group, pod_group_replica_key }
    meta::Condition { r#type, status, observed_generation, last_transition_time, reason, message }
    meta::LabelSelector { match_labels, match_expressions }
    meta::LabelSelectorRequirement { key, operator, values }
}
