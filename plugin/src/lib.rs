//! `kubectl-quiver`: a kubectl plugin for Quiver, in the manner of `virtctl` and `kubectl argo
//! rollouts`.
//!
//! # Layout
//! - [`cli`]: the command line (clap); [`context`]: kubeconfig, context and namespace.
//! - [`vm`], [`host`], [`rollout`]: one module per resource, each command a documented field
//!   change written as a JSON merge patch under [`FIELD_MANAGER`].
//! - [`console`], [`term`]: the serial console from the agent, and raw terminal mode.
//! - [`table`]: kubectl-style tables and ages.
//!
//! # Goals
//! - Nothing the plugin does needs the plugin: every change is a CRD field that `kubectl
//!   patch` can set, and the help says which.
//! - One clear line and exit code 1 for every failure (missing object, kubeconfig, agent).
//!
//! # Non-goals
//! - Fields the operator does not honour (there is no restart field: `vm restart` goes
//!   through `spec.runStrategy`), console input (the agent has no such API yet), Iroh (the
//!   console is reached over gRPC only).

pub mod cli;
pub mod console;
pub mod context;
pub mod error;
pub mod host;
pub mod rollout;
pub mod table;
pub mod term;
pub mod vm;

use std::time::Duration;

use clap::CommandFactory as _;
use quiver_crds::RunStrategy;
use serde_json::json;

pub use error::{Error, Result};

use crate::cli::{Cli, Command, HostCommand, RolloutCommand, VmCommand};
use crate::context::Target;

/// The field manager of every write, distinct from the agent's (`quiver-agent`) and the
/// operator's, so that their server-side applies never take these fields over.
pub const FIELD_MANAGER: &str = "kubectl-quiver";

/// Runs one command.
///
/// # Errors
/// Whatever the command failed with, as one line.
pub async fn run(cli: Cli) -> Result<()> {
    if let Command::Completion { shell } = cli.command {
        let mut command = Cli::command().bin_name("kubectl-quiver");
        clap_complete::generate(
            shell,
            &mut command,
            "kubectl-quiver",
            &mut std::io::stdout(),
        );
        return Ok(());
    }
    let target = Target {
        kubeconfig: cli.global.kubeconfig,
        context: cli.global.context,
        namespace: cli.global.namespace,
    };
    let session = target.connect().await?;
    let s = &session;
    match cli.command {
        Command::Completion { .. } => Ok(()),
        Command::Vm(command) => match command {
            VmCommand::List {
                all_namespaces,
                watch,
            } => vm::list(s, all_namespaces, watch).await,
            VmCommand::Start { name } => {
                vm::set_run_strategy(s, &name, RunStrategy::Always).await?;
                println!("microvm.quiver.dev/{name} started (spec.runStrategy: Always)");
                Ok(())
            }
            VmCommand::Stop { name } => {
                vm::set_run_strategy(s, &name, RunStrategy::Halted).await?;
                println!("microvm.quiver.dev/{name} stopped (spec.runStrategy: Halted)");
                Ok(())
            }
            VmCommand::Restart { name, timeout } => {
                vm::restart(s, &name, Duration::from_secs(timeout)).await
            }
            VmCommand::Console {
                name,
                pki_dir,
                no_follow,
            } => {
                let tls = console::client_files(&pki_dir)?;
                let source = console::locate(s, &name).await?;
                let agent = console::connect(&source, &tls).await?;
                console::run(&name, &source, &agent, !no_follow).await?;
                Ok(())
            }
        },
        Command::Host(command) => match command {
            HostCommand::List => host::list(s).await,
            HostCommand::Cordon { name } => {
                host::patch_spec(s, &name, json!({ "unschedulable": true })).await?;
                println!("host.quiver.dev/{name} cordoned");
                Ok(())
            }
            HostCommand::Uncordon { name } => {
                let fields = json!({ "unschedulable": false, "drain": false });
                host::patch_spec(s, &name, fields).await?;
                println!("host.quiver.dev/{name} uncordoned");
                Ok(())
            }
            HostCommand::Drain {
                name,
                no_wait,
                timeout,
            } => {
                host::patch_spec(s, &name, json!({ "drain": true })).await?;
                println!("host.quiver.dev/{name} draining");
                if no_wait {
                    return Ok(());
                }
                host::wait_drained(s, &name, timeout.map(Duration::from_secs)).await
            }
        },
        Command::Rollout(command) => rollout_command(s, command).await,
    }
}

async fn rollout_command(s: &context::Session, command: RolloutCommand) -> Result<()> {
    let (name, fields, done) = match command {
        RolloutCommand::Get { name, watch } => return rollout::get(s, &name, watch).await,
        RolloutCommand::Retry { name } => {
            let retry = rollout::raise(s, &name, "retry", json!({ "abort": false })).await?;
            println!(
                "rollout.quiver.dev/{name} retry requested (spec.retry: {retry}, spec.abort: false)"
            );
            return Ok(());
        }
        RolloutCommand::Promote { name, full: false } => {
            let step = rollout::raise(s, &name, "promoteStep", json!({})).await?;
            println!("rollout.quiver.dev/{name} current step promoted (spec.promoteStep: {step})");
            return Ok(());
        }
        RolloutCommand::Promote { name, full: true } => (
            name,
            json!({ "promote": true }),
            "promoted (spec.promote: true)",
        ),
        RolloutCommand::Pause { name } => (
            name,
            json!({ "paused": true }),
            "paused (spec.paused: true)",
        ),
        RolloutCommand::Resume { name } => (
            name,
            json!({ "paused": false }),
            "resumed (spec.paused: false)",
        ),
        RolloutCommand::Abort { name } => {
            (name, json!({ "abort": true }), "aborted (spec.abort: true)")
        }
    };
    rollout::patch_spec(s, &name, fields).await?;
    println!("rollout.quiver.dev/{name} {done}");
    Ok(())
}
