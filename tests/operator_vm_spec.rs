//! End to end, as a user sees it with kubectl: a guest service answers through the port forward
//! that `status.portForwards` reports, a marker that never comes shows as GuestReady=False with
//! reason ReadinessTimeout (and a warning Event), and a kernel outside the image roots is
//! refused by the host with the field named.

use std::time::Duration;

use anyhow::Context as _;
use quiver_tests::cluster::{TestCluster, guest_dir, vm_manifest};
use quiver_tests::vm::{BOOT, qemu_lock};
use quiver_tests::{Kubectl, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get(k: &Kubectl, name: &str, jsonpath: &str) -> anyhow::Result<String> {
    k.run(&["get", "mvm", name, "-o", &format!("jsonpath={jsonpath}")])
        .await
}

/// `GET /` on 127.0.0.1:`port`, the whole response.
async fn http_get(port: u16) -> anyhow::Result<String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n").await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    Ok(String::from_utf8_lossy(&out).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_forwards_readiness_timeouts_and_image_roots_show_in_microvm_status()
-> anyhow::Result<()> {
    let _qemu = qemu_lock().await;
    let Some(guest) = guest_dir() else {
        return Ok(());
    };
    let cluster = TestCluster::start(1).await?;
    let k = cluster.kubectl();
    let forward =
        "  network:\n    mode: user\n    portForwards:\n    - name: http\n      guestPort: 80\n";
    cluster.apply_vm(&guest, "web", forward).await?;
    let late = vm_manifest(&guest, "late", "").replace(
        "serialMarker: QUIVER_GUEST_READY",
        "serialMarker: NEVER_PRINTED\n    timeoutSeconds: 2",
    );
    let stray = "apiVersion: quiver.dev/v1alpha1\nkind: MicroVM\nmetadata:\n  name: stray\n  \
                 namespace: default\nspec:\n  kernel: /etc/passwd\n";
    k.apply(&late).await?;
    k.apply(stray).await?;

    k.wait_vm_phase("web", "Running", BOOT).await?;
    let port: u16 = eventually(BOOT, "web's forwarded port in status", || async {
        let port = get(&k, "web", "{.status.portForwards[0].hostPort}").await?;
        Ok(port.parse().ok().filter(|p| *p != 0))
    })
    .await?;
    assert_eq!(
        get(&k, "web", "{.status.portForwards[0].name}/{.status.portForwards[0].hostIP}/{.status.portForwards[0].guestPort}").await?,
        "http/127.0.0.1/80"
    );
    let body = eventually(BOOT, "the guest's HTTP page", || async {
        Ok(http_get(port)
            .await
            .ok()
            .filter(|t| t.contains("QUIVER_GUEST_HTTP")))
    })
    .await?;
    assert!(body.starts_with("HTTP/1."), "{body}");

    let late = k
        .wait_vm("late", "to time out waiting for its marker", BOOT, |v| {
            v.guest_ready.1 == "ReadinessTimeout"
        })
        .await?;
    assert_eq!(
        (late.phase.as_str(), late.guest_ready.0.as_str()),
        ("Running", "False")
    );
    let message = get(
        &k,
        "late",
        r#"{.status.conditions[?(@.type=="GuestReady")].message}"#,
    )
    .await?;
    assert!(message.contains("within 2s"), "{message}");
    let events = k
        .run(&[
            "get",
            "events.v1.events.k8s.io",
            "-o",
            r#"jsonpath={range .items[?(@.regarding.name=="late")]}{.reason}/{.type} {end}"#,
        ])
        .await?;
    assert!(events.contains("ReadinessTimeout/Warning"), "{events}");

    let refused = k.wait_vm_phase("stray", "Failed", BOOT).await?.message;
    assert!(
        refused.contains("spec.kernel") && refused.contains("outside the image roots"),
        "{refused}"
    );

    for name in ["web", "late", "stray"] {
        k.run(&["delete", "mvm", name, "--wait=true"])
            .await
            .with_context(|| format!("deleting {name}"))?;
    }
    assert!(http_get(port).await.is_err(), "the forward outlived its VM");
    cluster.shutdown().await;
    Ok(())
}
