//! Restarting a MicroVM on its new template, for MicroVM rollouts: a running VM keeps its
//! QEMU until restarted (the RestartRequired condition), so the controller stops it
//! (`runStrategy: Halted`, remembering the strategy it had in an annotation) and, once it is
//! Stopped on the current generation, puts the strategy back. Each step is one merge patch
//! computed from the VM alone, so an operator restart in between picks up where it was.

use kube::ResourceExt as _;
use quiver_crds::condition::RESTART_REQUIRED;
use quiver_crds::{MicroVM, MicroVMPhase, RunStrategy, VmTemplate};
use serde_json::{Value, json};

/// The annotation holding the run strategy a VM had before the rollout stopped it.
pub const RESTART_ANNOTATION: &str = "quiver.dev/rollout-restart";

/// The VM's kernel, initrd and command line.
#[must_use]
pub fn template(vm: &MicroVM) -> VmTemplate {
    VmTemplate {
        kernel: Some(vm.spec.kernel.clone()),
        initrd: vm.spec.initrd.clone(),
        cmdline: vm.spec.cmdline.clone(),
    }
}

fn settled(vm: &MicroVM) -> bool {
    let status = vm.status.as_ref();
    status.and_then(|s| s.observed_generation) == vm.metadata.generation
        && status
            .and_then(|s| s.condition(RESTART_REQUIRED))
            .is_none_or(|c| c.status != "True")
}

/// The template the VM runs, once it has acted on its current spec: Running (or Failed) on
/// the current generation with no restart pending and no restart of the rollout under way.
#[must_use]
pub fn running(vm: &MicroVM) -> Option<VmTemplate> {
    let phase = vm.status.as_ref().and_then(|s| s.phase);
    let acted = matches!(phase, Some(MicroVMPhase::Running | MicroVMPhase::Failed));
    let restarting = vm.annotations().contains_key(RESTART_ANNOTATION);
    (acted && settled(vm) && !restarting).then(|| template(vm))
}

/// The next patch of the restart, if one is due.
#[must_use]
pub fn next_patch(vm: &MicroVM) -> Option<Value> {
    if let Some(before) = vm.annotations().get(RESTART_ANNOTATION) {
        let stopped = vm.status.as_ref().and_then(|s| s.phase) == Some(MicroVMPhase::Stopped);
        let current =
            vm.status.as_ref().and_then(|s| s.observed_generation) == vm.metadata.generation;
        return (stopped && current).then(|| {
            json!({
                "metadata": {"annotations": {RESTART_ANNOTATION: null}},
                "spec": {"runStrategy": before},
            })
        });
    }
    let required = vm
        .status
        .as_ref()
        .and_then(|s| s.condition(RESTART_REQUIRED))
        .is_some_and(|c| c.status == "True");
    if !required || vm.spec.run_strategy == RunStrategy::Halted {
        return None;
    }
    let before = serde_json::to_value(vm.spec.run_strategy).ok()?;
    Some(json!({
        "metadata": {"annotations": {RESTART_ANNOTATION: before}},
        "spec": {"runStrategy": "Halted"},
    }))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
    use quiver_crds::MicroVMStatus;

    use super::*;

    fn vm(phase: MicroVMPhase, restart_required: bool) -> MicroVM {
        let mut vm = MicroVM::test("web-0");
        vm.metadata.generation = Some(2);
        vm.status = Some(MicroVMStatus {
            phase: Some(phase),
            observed_generation: Some(2),
            conditions: vec![Condition {
                type_: RESTART_REQUIRED.to_owned(),
                status: if restart_required { "True" } else { "False" }.to_owned(),
                reason: "Test".to_owned(),
                message: String::new(),
                last_transition_time: crate::status::now(),
                observed_generation: None,
            }],
            ..MicroVMStatus::default()
        });
        vm
    }

    #[test]
    fn a_vm_needing_a_restart_is_halted_remembering_its_strategy() {
        let patch = next_patch(&vm(MicroVMPhase::Running, true)).unwrap();
        assert_eq!(patch["spec"]["runStrategy"], "Halted");
        assert_eq!(
            patch["metadata"]["annotations"][RESTART_ANNOTATION],
            "Always"
        );
        assert_eq!(next_patch(&vm(MicroVMPhase::Running, false)), None);
    }

    #[test]
    fn a_stopped_vm_gets_its_strategy_back_and_then_runs_the_new_template() {
        let mut halted = vm(MicroVMPhase::Stopping, false);
        halted.spec.run_strategy = RunStrategy::Halted;
        halted
            .annotations_mut()
            .insert(RESTART_ANNOTATION.to_owned(), "RerunOnFailure".to_owned());
        assert_eq!(next_patch(&halted), None, "still stopping");
        assert_eq!(running(&halted), None);
        halted.status.as_mut().unwrap().phase = Some(MicroVMPhase::Stopped);
        let patch = next_patch(&halted).unwrap();
        assert_eq!(patch["spec"]["runStrategy"], "RerunOnFailure");
        assert!(patch["metadata"]["annotations"][RESTART_ANNOTATION].is_null());
        let done = vm(MicroVMPhase::Running, false);
        assert_eq!(running(&done), Some(template(&done)));
    }

    #[test]
    fn a_vm_behind_its_generation_does_not_run_its_template_yet() {
        let mut behind = vm(MicroVMPhase::Running, false);
        behind.metadata.generation = Some(3);
        assert_eq!(running(&behind), None);
    }
}
