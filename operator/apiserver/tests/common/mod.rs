//! A raw HTTPS client for the dev control plane that speaks HTTP/1.1 or HTTP/2 (ALPN `h2`)
//! on demand, and reports transport failures (resets, closed connections) as errors rather
//! than retrying them: those are what the hostile-input tests look for.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper_util::rt::{TokioExecutor, TokioIo};
use quiver_apiserver::{Config, DevApiServer};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Http1,
    Http2,
}

/// One answer: status code and body bytes.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as a Kubernetes `Status` whose `code` is the HTTP code, if it is one.
    pub fn status(&self) -> Option<Value> {
        self.json()
            .filter(|s| s["kind"] == "Status" && s["apiVersion"] == "v1" && s["code"] == self.code)
    }
}

type ReqBody = BoxBody<Bytes, std::convert::Infallible>;

enum Conn {
    H1(hyper::client::conn::http1::SendRequest<ReqBody>),
    H2(hyper::client::conn::http2::SendRequest<ReqBody>),
}

/// A client bound to one server; each protocol keeps one connection, reopened when the
/// server closed it after a complete answer (HTTP/1.1 does after refusing a body).
pub struct Client {
    addr: std::net::SocketAddr,
    token: String,
    tls: rustls::ClientConfig,
    h1: Option<Conn>,
    h2: Option<Conn>,
}

pub async fn start() -> anyhow::Result<DevApiServer> {
    DevApiServer::start(Config::default()).await
}

impl Client {
    pub fn new(server: &DevApiServer) -> anyhow::Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(server.ca_pem().as_bytes()) {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self {
            addr: server.addr(),
            token: server.token().to_string(),
            tls: config,
            h1: None,
            h2: None,
        })
    }

    /// A client that sends `token` instead of the admin token.
    pub fn with_token(server: &DevApiServer, token: &str) -> anyhow::Result<Self> {
        Ok(Self {
            token: token.to_string(),
            ..Self::new(server)?
        })
    }

    async fn connect(&self, proto: Proto) -> anyhow::Result<Conn> {
        let alpn: &[u8] = match proto {
            Proto::Http1 => b"http/1.1",
            Proto::Http2 => b"h2",
        };
        let tcp = tokio::net::TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let mut config = self.tls.clone();
        config.alpn_protocols = vec![alpn.to_vec()];
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = connector
            .connect(ServerName::try_from("localhost")?.to_owned(), tcp)
            .await?;
        let negotiated = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        if negotiated.as_deref() != Some(alpn) {
            bail!("the server negotiated {negotiated:?}, not {alpn:?}");
        }
        let io = TokioIo::new(tls);
        Ok(match proto {
            Proto::Http1 => {
                let (send, conn) = hyper::client::conn::http1::handshake(io).await?;
                tokio::spawn(conn);
                Conn::H1(send)
            }
            Proto::Http2 => {
                let (send, conn) =
                    hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await?;
                tokio::spawn(conn);
                Conn::H2(send)
            }
        })
    }

    /// Sends one request; any transport failure (a reset stream, a connection closed
    /// before the answer) is an error.
    pub async fn send(
        &mut self,
        proto: Proto,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let body = Full::new(Bytes::from(body)).boxed();
        self.send_body(proto, method, path, content_type, body)
            .await
    }

    /// Sends `body` in 64 KiB chunks with no `Content-Length` (chunked over HTTP/1.1).
    pub async fn send_chunked(
        &mut self,
        proto: Proto,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> anyhow::Result<Answer> {
        let chunks: Vec<Result<hyper::body::Frame<Bytes>, std::convert::Infallible>> = body
            .chunks(64 * 1024)
            .map(|c| Ok(hyper::body::Frame::data(Bytes::copy_from_slice(c))))
            .collect();
        let body = StreamBody::new(futures::stream::iter(chunks)).boxed();
        self.send_body(proto, method, path, content_type, body)
            .await
    }

    async fn send_body(
        &mut self,
        proto: Proto,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: ReqBody,
    ) -> anyhow::Result<Answer> {
        let slot = match proto {
            Proto::Http1 => &self.h1,
            Proto::Http2 => &self.h2,
        };
        let usable = match slot {
            Some(Conn::H1(s)) => !s.is_closed(),
            Some(Conn::H2(s)) => !s.is_closed(),
            None => false,
        };
        if !usable {
            let conn = self.connect(proto).await?;
            match proto {
                Proto::Http1 => self.h1 = Some(conn),
                Proto::Http2 => self.h2 = Some(conn),
            }
        }
        let uri = match proto {
            Proto::Http1 => path.to_string(),
            Proto::Http2 => format!("https://localhost:{}{path}", self.addr.port()),
        };
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", format!("Bearer {}", self.token))
            .header("user-agent", "hostile-test/1.0");
        if proto == Proto::Http1 {
            req = req.header("host", format!("localhost:{}", self.addr.port()));
        }
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        let req = req.body(body)?;
        let conn = match proto {
            Proto::Http1 => self.h1.as_mut(),
            Proto::Http2 => self.h2.as_mut(),
        }
        .context("connection")?;
        let answer = async {
            let resp = match conn {
                Conn::H1(s) => {
                    s.ready().await?;
                    s.send_request(req).await?
                }
                Conn::H2(s) => {
                    s.ready().await?;
                    s.send_request(req).await?
                }
            };
            let code = resp.status().as_u16();
            let body = resp.into_body().collect().await?.to_bytes();
            anyhow::Ok(Answer { code, body })
        };
        tokio::time::timeout(Duration::from_secs(60), answer)
            .await
            .context("no answer within 60 s")?
    }

    pub async fn json(
        &mut self,
        proto: Proto,
        method: &str,
        path: &str,
        body: &Value,
    ) -> anyhow::Result<Answer> {
        self.send(
            proto,
            method,
            path,
            Some("application/json"),
            serde_json::to_vec(body)?,
        )
        .await
    }

    pub async fn get(&mut self, path: &str) -> anyhow::Result<Value> {
        let answer = self
            .send(Proto::Http2, "GET", path, None, Vec::new())
            .await?;
        if answer.code != 200 {
            bail!(
                "GET {path}: {} {}",
                answer.code,
                String::from_utf8_lossy(&answer.body)
            );
        }
        answer.json().context("GET answered no JSON")
    }
}

/// The Quiver CRDs as the chart ships them, as JSON.
pub fn quiver_crds() -> anyhow::Result<Vec<Value>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../charts/quiver/crds");
    let mut out = Vec::new();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| dir.display().to_string())?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
        out.push(serde_yaml_ng::from_str(&text).with_context(|| path.display().to_string())?);
    }
    Ok(out)
}

/// Installs the Quiver CRDs.
pub async fn install_crds(client: &mut Client) -> anyhow::Result<()> {
    for crd in quiver_crds()? {
        let answer = client
            .json(
                Proto::Http2,
                "POST",
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                &crd,
            )
            .await?;
        if answer.code != 201 {
            bail!(
                "installing a CRD: {} {}",
                answer.code,
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    Ok(())
}
