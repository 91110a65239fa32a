use super::*;

#[test]
fn parses_greeting() {
    let line = r#"{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian"}, "capabilities": ["oob"]}}"#;
    assert_eq!(
        parse_message(line).ok(),
        Some(Message::Greeting {
            version: "7.2.22".into()
        })
    );
}

#[test]
fn parses_return_and_status() {
    let line = r#"{"return": {"status": "running", "singlestep": false, "running": true}}"#;
    let Ok(Message::Return(v)) = parse_message(line) else {
        panic!("not a return")
    };
    let status = parse_run_status(&v).expect("status");
    assert_eq!(
        status,
        RunStatus {
            running: true,
            status: "running".into()
        }
    );
}

#[test]
fn parses_error() {
    let line =
        r#"{"error": {"class": "CommandNotFound", "desc": "The command foo has not been found"}}"#;
    assert_eq!(
        parse_message(line).ok(),
        Some(Message::Error {
            class: "CommandNotFound".into(),
            desc: "The command foo has not been found".into()
        })
    );
}

#[test]
fn parses_guest_shutdown_event() {
    let line = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": true, "reason": "guest-shutdown"}}"#;
    let Ok(Message::Event(ev)) = parse_message(line) else {
        panic!("not an event")
    };
    assert!(ev.is_guest_shutdown());
    let host = r#"{"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#;
    let Ok(Message::Event(ev)) = parse_message(host) else {
        panic!("not an event")
    };
    assert!(!ev.is_guest_shutdown());
}

#[test]
fn rejects_garbage() {
    assert!(parse_message("not json").is_err());
    assert!(parse_message(r#"{"something": 1}"#).is_err());
    assert!(parse_run_status(&serde_json::json!({"status": "x"})).is_err());
}

#[tokio::test]
async fn client_talks_to_a_fake_qemu() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qmp.sock");
    let listener = tokio::net::UnixListener::bind(&path).expect("bind");
    let server = tokio::spawn(async move {
        let (s, _) = listener.accept().await.expect("accept");
        let (r, mut w) = s.into_split();
        let mut lines = BufReader::new(r).lines();
        let greeting = r#"{"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}}, "capabilities": []}}"#;
        w.write_all(format!("{greeting}\n").as_bytes())
            .await
            .expect("greet");
        while let Ok(Some(line)) = lines.next_line().await {
            let reply = if line.contains("query-status") {
                concat!(
                    r#"{"event": "RESUME", "data": {}}"#,
                    "\n",
                    r#"{"return": {"status": "running", "running": true}}"#
                )
            } else if line.contains("nope") {
                r#"{"error": {"class": "CommandNotFound", "desc": "nope"}}"#
            } else {
                r#"{"return": {}}"#
            };
            w.write_all(format!("{reply}\n").as_bytes())
                .await
                .expect("reply");
        }
    });
    let mut client = QmpClient::connect(&path).await.expect("connect");
    assert_eq!(client.version, "7.2.0");
    assert!(client.query_status().await.expect("status").running);
    assert!(client.execute("nope", None).await.is_err());
    let ev = client
        .next_event()
        .await
        .expect("event")
        .expect("some event");
    assert_eq!(ev.name, "RESUME");
    client.system_powerdown().await.expect("powerdown");
    drop(client);
    server.await.expect("server");
}
