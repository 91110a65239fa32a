//! The Kubernetes client and namespace, from the flags kubectl users expect.

use std::path::PathBuf;

use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::{Error, Result};

/// `--kubeconfig`, `--context`, `-n`: where to connect and which namespace to use.
#[derive(Clone, Debug, Default)]
pub struct Target {
    pub kubeconfig: Option<PathBuf>,
    pub context: Option<String>,
    pub namespace: Option<String>,
}

/// A connected client and the namespace commands act in.
#[derive(Clone)]
pub struct Session {
    pub client: Client,
    /// `-n`, else the context's namespace, else `default`.
    pub namespace: String,
}

impl Target {
    /// Connects as kubectl would: `--kubeconfig`, else `$KUBECONFIG`, else `~/.kube/config`.
    ///
    /// # Errors
    /// The kubeconfig is missing or unreadable, or names no usable context.
    pub async fn connect(&self) -> Result<Session> {
        let (kubeconfig, path) = self.read_kubeconfig()?;
        let options = KubeConfigOptions {
            context: self.context.clone(),
            ..KubeConfigOptions::default()
        };
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|source| Error::Kubeconfig {
                path: path.clone(),
                source,
            })?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|source| Error::Api {
            what: format!("client for kubeconfig {}", path.display()),
            source,
        })?;
        Ok(Session { client, namespace })
    }

    fn read_kubeconfig(&self) -> Result<(Kubeconfig, PathBuf)> {
        let read = |path: PathBuf| {
            if !path.exists() {
                return Err(Error::NoKubeconfig(path.display().to_string()));
            }
            Kubeconfig::read_from(&path)
                .map(|k| (k, path.clone()))
                .map_err(|source| Error::Kubeconfig { path, source })
        };
        if let Some(path) = &self.kubeconfig {
            return read(path.clone());
        }
        if let Some(env) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            let paths: Vec<PathBuf> = std::env::split_paths(&env).collect();
            let Some(first) = paths.iter().find(|p| p.exists()) else {
                return Err(Error::NoKubeconfig(format!(
                    "KUBECONFIG={}",
                    env.to_string_lossy()
                )));
            };
            // Several files merge in order, as kubectl merges them.
            let kubeconfig = Kubeconfig::read().map_err(|source| Error::Kubeconfig {
                path: first.clone(),
                source,
            })?;
            return Ok((kubeconfig, first.clone()));
        }
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        read(home.join(".kube").join("config"))
    }
}
