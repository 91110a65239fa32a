//! The command line, kubectl style: `kubectl quiver <group> <verb> NAME [flags]`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use clap_complete::Shell;

/// Quiver from kubectl: MicroVMs, Hosts and Rollouts.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-quiver",
    bin_name = "kubectl quiver",
    version,
    about = "Manage Quiver MicroVMs, Hosts and Rollouts.",
    long_about = "Manage Quiver MicroVMs, Hosts and Rollouts.\n\n\
        Every change is a documented field of a Quiver custom resource, written with a JSON merge \
        patch (field manager kubectl-quiver): plain `kubectl patch` does the same.",
    after_help = "Examples:\n  \
        # List the MicroVMs of the current namespace, then follow changes\n  \
        kubectl quiver vm list -w\n\n  \
        # Stop and start a VM (spec.runStrategy Halted / Always)\n  \
        kubectl quiver vm stop demo\n  \
        kubectl quiver vm start demo\n\n  \
        # Attach to a VM's serial console (Ctrl-] ends it)\n  \
        kubectl quiver vm console demo\n\n  \
        # Move every VM off a host and wait until it is empty\n  \
        kubectl quiver host drain agent-1\n\n  \
        # Shell completion\n  \
        source <(kubectl-quiver completion bash)"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes, as kubectl spells them.
#[derive(Debug, Args)]
pub struct Global {
    /// Path to the kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).
    #[arg(long, global = true, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// MicroVMs: list, start, stop, restart, console.
    #[command(subcommand, alias = "vms", alias = "mvm")]
    Vm(VmCommand),
    /// Hosts (one per agent): list, cordon, uncordon, drain.
    #[command(subcommand, alias = "hosts", alias = "qh")]
    Host(HostCommand),
    /// Rollouts: show progress, promote, pause, resume, abort, retry.
    ///
    /// Each command that changes something writes a documented spec field (what `kubectl
    /// patch` would); the operator's Rollout controller acts on it.
    #[command(subcommand, alias = "rollouts", alias = "qro")]
    Rollout(RolloutCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = "Examples:\n  \
        source <(kubectl-quiver completion bash)\n  \
        kubectl-quiver completion zsh > \"${fpath[1]}/_kubectl-quiver\"\n  \
        kubectl-quiver completion fish > ~/.config/fish/completions/kubectl-quiver.fish")]
    Completion {
        /// The shell.
        shell: Shell,
    },
}

#[derive(Debug, Subcommand)]
pub enum VmCommand {
    /// List MicroVMs: NAME, PHASE, HOST, READY (GuestReady), EPOCH, AGE.
    #[command(
        alias = "ls",
        after_help = "Examples:\n  kubectl quiver vm list\n  kubectl quiver vm list -A -w"
    )]
    List {
        /// List the VMs of every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// After listing, print a row for every change until interrupted.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Start a VM: set spec.runStrategy to Always.
    ///
    /// A VM with runStrategy Once or RerunOnFailure becomes Always too. Same as
    /// kubectl patch mvm NAME --type merge -p '{"spec":{"runStrategy":"Always"}}'.
    #[command(after_help = "Examples:\n  kubectl quiver vm start demo")]
    Start { name: String },
    /// Stop a VM: set spec.runStrategy to Halted (QEMU is stopped; the VM keeps its host).
    ///
    /// Same as kubectl patch mvm NAME --type merge -p '{"spec":{"runStrategy":"Halted"}}'.
    #[command(after_help = "Examples:\n  kubectl quiver vm stop demo")]
    Stop { name: String },
    /// Restart a VM: Halted, wait until it is Stopped, then its run strategy again.
    ///
    /// The MicroVM has no restart field or annotation, so this goes through spec.runStrategy:
    /// it sets Halted, waits until the agent reports the VM Stopped, then sets back the run
    /// strategy the VM had. If interrupted while waiting, the VM stays Halted (`vm start`
    /// starts it). A Halted VM is refused: use `vm start`.
    #[command(after_help = "Examples:\n  kubectl quiver vm restart demo --timeout 60")]
    Restart {
        name: String,
        /// Seconds to wait for the VM to stop; then its run strategy is put back.
        #[arg(long, default_value_t = 120, value_name = "SECONDS")]
        timeout: u64,
    },
    /// Attach to a VM's serial console, through the agent of its host (Ctrl-] ends it).
    ///
    /// Shows the console from the VM's start, then follows it until the VM is deleted or
    /// leaves the host, and types what you type into the guest's serial port while the VM
    /// runs. On a terminal it runs in raw mode: every key, Ctrl-C included, goes to the guest,
    /// and Ctrl-] ends the console, restoring the terminal. stdin may also be a pipe: its
    /// bytes are typed, and the console stays open after it ends.
    ///
    /// The agent is reached over gRPC with mutual TLS at its Host's spec.grpcAddress, with a
    /// client certificate of the cluster CA from --pki-dir: `operator/ca.pem`,
    /// `operator/client.pem` and `operator/client-key.pem` (the operator's client certificate;
    /// `quiver-operator dev` writes them under `.quiver/pki`, `quiver-operator run` under its
    /// --pki-dir).
    #[command(after_help = "Examples:\n  \
        kubectl quiver vm console demo\n  \
        kubectl quiver vm console demo --no-follow | grep QUIVER_GUEST_READY\n  \
        kubectl quiver vm console demo --pki-dir /tmp/quiver-operator/pki")]
    Console {
        name: String,
        /// Directory with the client certificate (see above).
        #[arg(long, value_name = "DIR", default_value = ".quiver/pki")]
        pki_dir: PathBuf,
        /// Print what the console holds now and exit.
        #[arg(long)]
        no_follow: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum HostCommand {
    /// List Hosts: NAME, READY, ROLE (Raft), VMS, SCHEDULING (Schedulable, Cordoned,
    /// Draining), AGE.
    #[command(alias = "ls", after_help = "Examples:\n  kubectl quiver host list")]
    List,
    /// Cordon a host: set spec.unschedulable (no new VMs; those there stay).
    #[command(after_help = "Examples:\n  kubectl quiver host cordon agent-1")]
    Cordon { name: String },
    /// Put a host back in service: clear spec.unschedulable and spec.drain.
    #[command(after_help = "Examples:\n  kubectl quiver host uncordon agent-1")]
    Uncordon { name: String },
    /// Drain a host: set spec.drain (no new VMs, and its VMs move to other hosts), then wait
    /// until no MicroVM's status.host names it.
    ///
    /// Each VM is stopped on the host before its new copy starts elsewhere; a VM with no
    /// other host to go to waits unplaced (and the wait goes on). `host uncordon` ends the drain.
    #[command(after_help = "Examples:\n  \
        kubectl quiver host drain agent-1\n  \
        kubectl quiver host drain agent-1 --no-wait\n  \
        kubectl quiver host drain agent-1 --timeout 300")]
    Drain {
        name: String,
        /// Set the field and return without waiting.
        #[arg(long)]
        no_wait: bool,
        /// Give up waiting after this many seconds (the host stays draining).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
    },
}

#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Show a rollout: phase, step i/n, weight with a bar, canary hosts, conditions.
    #[command(after_help = "Examples:\n  kubectl quiver rollout get to-iroh -w")]
    Get {
        name: String,
        /// Print again on every change until interrupted.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Promote: end the current step now (raise spec.promoteStep); with --full, skip every
    /// remaining step, pause and analysis (spec.promote: true).
    ///
    /// A promoted step still waits for its hosts to serve the target; only the pause or the
    /// analysis is skipped.
    #[command(after_help = "Examples:\n  kubectl quiver rollout promote to-iroh\n  \
        kubectl quiver rollout promote to-iroh --full")]
    Promote {
        name: String,
        /// Move every selected host to the target now.
        #[arg(long)]
        full: bool,
    },
    /// Pause: set spec.paused (no host moves, no analysis counts).
    #[command(after_help = "Examples:\n  kubectl quiver rollout pause to-iroh")]
    Pause { name: String },
    /// Resume: clear spec.paused.
    #[command(after_help = "Examples:\n  kubectl quiver rollout resume to-iroh")]
    Resume { name: String },
    /// Abort: set spec.abort (canary hosts move back to their previous transports).
    #[command(after_help = "Examples:\n  kubectl quiver rollout abort to-iroh")]
    Abort { name: String },
    /// Retry an aborted, rolled-back or failed rollout: raise spec.retry by one and clear
    /// spec.abort.
    #[command(after_help = "Examples:\n  kubectl quiver rollout retry to-iroh")]
    Retry { name: String },
}
