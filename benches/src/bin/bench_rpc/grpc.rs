//! (b) tonic over TCP with mutual TLS: a one-method echo service, certificates from a CA made
//! for the run (the same shape as the agent's gRPC PKI).

use bytes::Bytes;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};

use crate::load::Echo;

mod proto {
    tonic::include_proto!("bench.v1");
}

use proto::Blob;
use proto::echo_client::EchoClient;
use proto::echo_server::EchoServer;

#[derive(Debug, Default)]
struct EchoService;

#[tonic::async_trait]
impl proto::echo_server::Echo for EchoService {
    async fn echo(
        &self,
        request: tonic::Request<Blob>,
    ) -> Result<tonic::Response<Blob>, tonic::Status> {
        Ok(tonic::Response::new(request.into_inner()))
    }
}

struct Pem {
    cert: String,
    key: String,
}

struct Pki {
    ca: String,
    server: Pem,
    client: Pem,
}

fn pki() -> anyhow::Result<Pki> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "bench CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_pem = ca.self_signed(&ca_key)?.pem();
    let issuer = Issuer::new(ca, ca_key);
    let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| -> anyhow::Result<Pem> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec![name.to_owned()])?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![usage];
        Ok(Pem {
            cert: params.signed_by(&key, &issuer)?.pem(),
            key: key.serialize_pem(),
        })
    };
    Ok(Pki {
        server: leaf("localhost", ExtendedKeyUsagePurpose::ServerAuth)?,
        client: leaf("bench-client", ExtendedKeyUsagePurpose::ClientAuth)?,
        ca: ca_pem,
    })
}

/// A running echo server and a client channel (one HTTP/2 connection) to it.
pub struct Grpc {
    pub client: EchoClient<Channel>,
    server: tokio::task::JoinHandle<()>,
}

impl Grpc {
    pub async fn start() -> anyhow::Result<Self> {
        let pki = pki()?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tls = ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server.cert, &pki.server.key))
            .client_ca_root(Certificate::from_pem(&pki.ca));
        let router = tonic::transport::Server::builder()
            .tls_config(tls)?
            .add_service(EchoServer::new(EchoService));
        // As the agent serves gRPC: no Nagle on accepted connections.
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tokio::spawn(async move {
            if let Err(error) = router.serve_with_incoming(incoming).await {
                eprintln!("gRPC echo server: {error}");
            }
        });
        let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))?
            .tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(&pki.ca))
                    .identity(Identity::from_pem(&pki.client.cert, &pki.client.key))
                    .domain_name("localhost"),
            )?
            .connect()
            .await?;
        Ok(Self {
            client: EchoClient::new(channel),
            server,
        })
    }
}

impl Drop for Grpc {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Echo for Grpc {
    async fn echo(&self, payload: Bytes) -> anyhow::Result<Bytes> {
        let reply = self
            .client
            .clone()
            .echo(Blob {
                data: payload.to_vec(),
            })
            .await?;
        Ok(Bytes::from(reply.into_inner().data))
    }
}
