//! The gRPC client's errors as a caller sees them: short, and of the right kind.

use quiver_rpc::pki::{DEV_SERVER_NAME, TlsFiles, ensure_dev_pki};
use quiver_rpc::{AgentClient, ClientError};

/// A loopback port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

#[tokio::test]
async fn a_closed_port_is_unreachable_in_one_short_line() {
    let endpoint = format!("http://127.0.0.1:{}", closed_port());
    let Err(err) = AgentClient::connect(endpoint.clone()).await else {
        panic!("nothing listens on {endpoint}");
    };
    assert!(
        matches!(err, ClientError::Unreachable { .. }),
        "expected Unreachable, got {err:?}"
    );
    let message = err.to_string();
    assert!(message.starts_with(&endpoint), "{message}");
    assert!(message.to_lowercase().contains("refused"), "{message}");
    assert!(
        message.len() < 120 && !message.contains('{'),
        "no debug dump: {message}"
    );
    assert_eq!(err.metric_label(), "unreachable");
}

#[tokio::test]
async fn missing_client_certificates_are_a_credentials_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = TlsFiles::dev_client(dir.path());
    let endpoint = format!("https://127.0.0.1:{}", closed_port());
    let err = AgentClient::connect_tls(endpoint, &files, DEV_SERVER_NAME)
        .await
        .expect_err("no certificate files");
    assert!(matches!(err, ClientError::Credentials(_)), "{err:?}");

    ensure_dev_pki(dir.path(), &[]).expect("dev pki");
    let endpoint = format!("https://127.0.0.1:{}", closed_port());
    let err = AgentClient::connect_tls(endpoint, &files, DEV_SERVER_NAME)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
}
