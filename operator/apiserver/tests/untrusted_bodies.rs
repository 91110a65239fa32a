//! Malformed request bodies get Kubernetes `Status` errors (never a panic or a reset stream),
//! over HTTP/2 as kubectl speaks it; protobuf bodies decode for every built-in kind.

mod common;

use common::{Answer, Client, Proto, start};
use serde_json::{Value, json};

const NAMESPACES: &str = "/api/v1/namespaces";
const CONFIGMAPS: &str = "/api/v1/namespaces/default/configmaps";

fn assert_status(answer: &Answer, code: u16) {
    assert_eq!(
        answer.code,
        code,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert!(
        answer.status().is_some(),
        "not a Status: {}",
        String::from_utf8_lossy(&answer.body)
    );
}

async fn still_serves(client: &mut Client) -> anyhow::Result<()> {
    client.get("/api/v1/namespaces/default").await?;
    Ok(())
}

#[tokio::test]
async fn namespace_with_string_spec_is_rejected_not_panicking() -> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    for proto in [Proto::Http2, Proto::Http1] {
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}, "spec": "x"});
        let answer = client.json(proto, "POST", NAMESPACES, &body).await?;
        assert_status(&answer, 400);
        assert!(answer.status().is_some_and(|s| {
            s["message"]
                .as_str()
                .is_some_and(|m| m.contains("cannot be handled as a Namespace"))
        }));
    }
    still_serves(&mut client).await
}

#[tokio::test]
async fn namespace_with_string_labels_is_rejected_not_panicking() -> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let body = json!({"metadata": {"name": "x", "labels": "x"}});
    assert_status(
        &client.json(Proto::Http2, "POST", NAMESPACES, &body).await?,
        400,
    );
    still_serves(&mut client).await
}

#[tokio::test]
async fn body_over_the_limit_is_a_413_status_over_http2_and_http1() -> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let big = json!({"metadata": {"name": "big"}, "data": {"k": "x".repeat(4 * 1024 * 1024)}});
    let bytes = serde_json::to_vec(&big)?;
    for proto in [Proto::Http2, Proto::Http1] {
        let declared = client.json(proto, "POST", CONFIGMAPS, &big).await?;
        let chunked = client
            .send_chunked(
                proto,
                "POST",
                CONFIGMAPS,
                Some("application/json"),
                bytes.clone(),
            )
            .await?;
        for answer in [declared, chunked] {
            assert_status(&answer, 413);
            assert_eq!(
                answer.status().map(|s| s["reason"].clone()),
                Some(json!("RequestEntityTooLarge"))
            );
        }
    }
    still_serves(&mut client).await
}

#[tokio::test]
async fn patch_that_changes_the_kind_is_rejected_and_the_object_kept() -> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let cm = json!({"metadata": {"name": "cm"}, "data": {"a": "b"}});
    assert_eq!(
        client
            .json(Proto::Http2, "POST", CONFIGMAPS, &cm)
            .await?
            .code,
        201
    );
    let before = client.get(&format!("{CONFIGMAPS}/cm")).await?;
    for (ct, patch) in [
        ("application/merge-patch+json", json!({"kind": "Secret"})),
        ("application/merge-patch+json", json!({"metadata": "x"})),
        ("application/merge-patch+json", json!({"data": 5})),
        (
            "application/strategic-merge-patch+json",
            json!({"metadata": {"labels": "x"}}),
        ),
        (
            "application/json-patch+json",
            json!([{"op": "replace", "path": "/metadata", "value": []}]),
        ),
        (
            "application/apply-patch+yaml",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"labels": 5}}),
        ),
    ] {
        let answer = client
            .send(
                Proto::Http2,
                "PATCH",
                &format!("{CONFIGMAPS}/cm?fieldManager=t"),
                Some(ct),
                serde_json::to_vec(&patch)?,
            )
            .await?;
        assert_status(&answer, 400);
    }
    assert_eq!(client.get(&format!("{CONFIGMAPS}/cm")).await?, before);
    Ok(())
}

#[tokio::test]
async fn json_patch_copying_a_subtree_over_and_over_is_refused() -> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let cm = json!({"metadata": {"name": "cm"}, "data": {"a": "x".repeat(1000)}});
    assert_eq!(
        client
            .json(Proto::Http2, "POST", CONFIGMAPS, &cm)
            .await?
            .code,
        201
    );
    // Each copy doubles the object: 40 of them would need terabytes.
    let mut ops = vec![json!({"op": "add", "path": "/metadata/annotations", "value": {}})];
    for i in 0..40 {
        ops.push(
            json!({"op": "copy", "from": "/data", "path": format!("/metadata/annotations/c{i}")}),
        );
        ops.push(json!({"op": "copy", "from": "/metadata/annotations", "path": "/data/nested"}));
    }
    let answer = client
        .send(
            Proto::Http2,
            "PATCH",
            &format!("{CONFIGMAPS}/cm"),
            Some("application/json-patch+json"),
            serde_json::to_vec(&ops)?,
        )
        .await?;
    assert!(
        answer.status().is_some() && (400..500).contains(&answer.code),
        "{answer:?}"
    );
    still_serves(&mut client).await
}

#[tokio::test]
async fn patch_nesting_beyond_the_depth_limit_is_refused() -> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.dev"},
        "spec": {"group": "example.dev", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}});
    let crds = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions";
    assert_eq!(
        client.json(Proto::Http2, "POST", crds, &crd).await?.code,
        201
    );
    let things = "/apis/example.dev/v1/namespaces/default/things";
    let mut deep = json!(1);
    for _ in 0..60 {
        deep = json!({"d": deep});
    }
    let thing = json!({"metadata": {"name": "t"}, "spec": deep.clone()});
    assert_eq!(
        client
            .json(Proto::Http2, "POST", things, &thing)
            .await?
            .code,
        201
    );
    // Each body parses; together they would nest 120 levels deep.
    let ops = json!([{"op": "add", "path": format!("/spec{}", "/d".repeat(59)), "value": deep}]);
    let answer = client
        .send(
            Proto::Http2,
            "PATCH",
            &format!("{things}/t"),
            Some("application/json-patch+json"),
            serde_json::to_vec(&ops)?,
        )
        .await?;
    assert_status(&answer, 400);
    assert_eq!(
        client.get(&format!("{things}/t")).await?["spec"],
        thing["spec"]
    );
    Ok(())
}

#[tokio::test]
async fn crd_with_a_string_for_properties_is_rejected_and_openapi_still_serves()
-> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "things.example.dev"},
        "spec": {"group": "example.dev", "scope": "Namespaced", "names": {"plural": "things", "kind": "Thing"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": "x"}}}]}});
    let answer = client
        .json(
            Proto::Http2,
            "POST",
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            &crd,
        )
        .await?;
    assert_status(&answer, 400);
    client.get("/openapi/v3").await?;
    Ok(())
}

#[tokio::test]
async fn status_and_delete_option_bodies_of_the_wrong_type_are_rejected() -> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let ns = json!({"metadata": {"name": "victim"}});
    assert_eq!(
        client
            .json(Proto::Http2, "POST", NAMESPACES, &ns)
            .await?
            .code,
        201
    );
    let status = json!({"metadata": {"name": "victim"}, "status": "x"});
    assert_status(
        &client
            .json(
                Proto::Http2,
                "PUT",
                &format!("{NAMESPACES}/victim/status"),
                &status,
            )
            .await?,
        400,
    );
    for options in [
        json!({"propagationPolicy": 5}),
        json!("x"),
        json!({"preconditions": "x"}),
    ] {
        let answer = client
            .json(
                Proto::Http2,
                "DELETE",
                &format!("{NAMESPACES}/victim"),
                &options,
            )
            .await?;
        assert_status(&answer, 400);
    }
    assert_eq!(
        client.get(&format!("{NAMESPACES}/victim")).await?["status"]["phase"],
        "Active"
    );
    Ok(())
}

/// `k8s\0` + a `runtime.Unknown` wrapping `message`.
fn protobuf_body<T: prost::Message + k8s_pb::Resource>(message: &T) -> Vec<u8> {
    use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
    use prost::Message as _;
    let unknown = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(T::API_VERSION.into()),
            kind: Some(T::KIND.into()),
        }),
        raw: Some(message.encode_to_vec()),
        ..Unknown::default()
    };
    [b"k8s\0".to_vec(), unknown.encode_to_vec()].concat()
}

fn meta(name: &str) -> Option<k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta> {
    Some(k8s_pb::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.into()),
        ..Default::default()
    })
}

#[tokio::test]
async fn protobuf_bodies_of_every_built_in_kind_are_decoded() -> anyhow::Result<()> {
    use k8s_pb::api::coordination::v1 as coordination;
    use k8s_pb::api::core::v1 as core;
    use k8s_pb::api::events::v1 as events;
    use k8s_pb::apiextensions_apiserver::pkg::apis::apiextensions::v1 as ext;
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let reference = Some(core::ObjectReference {
        kind: Some("ConfigMap".into()),
        name: Some("cm".into()),
        namespace: Some("default".into()),
        ..Default::default()
    });
    let schema = ext::JsonSchemaProps {
        r#type: Some("object".into()),
        x_kubernetes_preserve_unknown_fields: Some(true),
        ..Default::default()
    };
    let cases: Vec<(&str, Vec<u8>, &str, Value)> = vec![
        (
            NAMESPACES,
            protobuf_body(&core::Namespace {
                metadata: meta("pb"),
                ..Default::default()
            }),
            "/metadata/name",
            json!("pb"),
        ),
        (
            CONFIGMAPS,
            protobuf_body(&core::ConfigMap {
                metadata: meta("cm"),
                data: [("a".into(), "b".into())].into(),
                ..Default::default()
            }),
            "/data/a",
            json!("b"),
        ),
        (
            "/api/v1/namespaces/default/secrets",
            protobuf_body(&core::Secret {
                metadata: meta("s"),
                data: [("k".into(), b"v".to_vec())].into(),
                ..Default::default()
            }),
            "/data/k",
            json!("dg=="),
        ),
        (
            "/api/v1/namespaces/default/serviceaccounts",
            protobuf_body(&core::ServiceAccount {
                metadata: meta("sa"),
                automount_service_account_token: Some(false),
                ..Default::default()
            }),
            "/automountServiceAccountToken",
            json!(false),
        ),
        (
            "/api/v1/namespaces/default/events",
            protobuf_body(&core::Event {
                metadata: meta("e1"),
                involved_object: reference.clone(),
                reason: Some("Tested".into()),
                ..Default::default()
            }),
            "/reason",
            json!("Tested"),
        ),
        (
            "/apis/events.k8s.io/v1/namespaces/default/events",
            protobuf_body(&events::Event {
                metadata: meta("e2"),
                regarding: reference,
                note: Some("hi".into()),
                ..Default::default()
            }),
            "/note",
            json!("hi"),
        ),
        (
            "/apis/coordination.k8s.io/v1/namespaces/default/leases",
            protobuf_body(&coordination::Lease {
                metadata: meta("l"),
                spec: Some(coordination::LeaseSpec {
                    holder_identity: Some("me".into()),
                    ..Default::default()
                }),
            }),
            "/spec/holderIdentity",
            json!("me"),
        ),
        (
            "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
            protobuf_body(&ext::CustomResourceDefinition {
                metadata: meta("things.example.dev"),
                spec: Some(ext::CustomResourceDefinitionSpec {
                    group: Some("example.dev".into()),
                    scope: Some("Namespaced".into()),
                    names: Some(ext::CustomResourceDefinitionNames {
                        plural: Some("things".into()),
                        kind: Some("Thing".into()),
                        ..Default::default()
                    }),
                    versions: vec![ext::CustomResourceDefinitionVersion {
                        name: Some("v1".into()),
                        served: Some(true),
                        storage: Some(true),
                        schema: Some(ext::CustomResourceValidation {
                            open_apiv3_schema: Some(schema),
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
                status: None,
            }),
            "/spec/versions/0/schema/openAPIV3Schema/x-kubernetes-preserve-unknown-fields",
            json!(true),
        ),
    ];
    for (path, body, pointer, want) in cases {
        let answer = client
            .send(
                Proto::Http2,
                "POST",
                path,
                Some("application/vnd.kubernetes.protobuf"),
                body,
            )
            .await?;
        assert_eq!(
            answer.code,
            201,
            "{path}: {}",
            String::from_utf8_lossy(&answer.body)
        );
        let created = answer.json().unwrap_or_default();
        assert_eq!(created.pointer(pointer), Some(&want), "{path}: {created}");
    }
    // The CRD registered from protobuf serves its kind.
    client
        .get("/apis/example.dev/v1/namespaces/default/things")
        .await?;
    Ok(())
}

/// Lists of thousands of keyed items merge by index: this took minutes under the server's
/// lock when every item was looked up by scanning its list.
#[tokio::test]
async fn thousands_of_list_items_merge_in_one_pass() -> anyhow::Result<()> {
    let server = start().await?;
    let mut client = Client::new(&server)?;
    let ns = json!({"metadata": {"name": "wide"}});
    assert_eq!(
        client
            .json(Proto::Http2, "POST", NAMESPACES, &ns)
            .await?
            .code,
        201
    );
    let patch = |from: usize, to: usize, status: &str| {
        let conditions: Vec<Value> = (from..to)
            .map(|i| json!({"type": format!("T{i}"), "status": status}))
            .collect();
        let finalizers: Vec<String> = (from..to).map(|i| format!("example.dev/f{i}")).collect();
        json!({"metadata": {"finalizers": finalizers}, "status": {"conditions": conditions}})
    };
    for (from, to, status) in [(0, 5000, "True"), (2500, 7500, "False")] {
        for sub in ["/status", ""] {
            let answer = client
                .send(
                    Proto::Http2,
                    "PATCH",
                    &format!("{NAMESPACES}/wide{sub}"),
                    Some("application/strategic-merge-patch+json"),
                    serde_json::to_vec(&patch(from, to, status))?,
                )
                .await?;
            assert_eq!(
                answer.code,
                200,
                "{}",
                String::from_utf8_lossy(&answer.body)
            );
        }
    }
    let wide = client.get(&format!("{NAMESPACES}/wide")).await?;
    let conditions = wide["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(conditions.len(), 7500);
    assert_eq!(conditions[0], json!({"type": "T0", "status": "True"}));
    assert_eq!(
        conditions[2500],
        json!({"type": "T2500", "status": "False"})
    );
    assert_eq!(
        wide["metadata"]["finalizers"].as_array().map(Vec::len),
        Some(7500)
    );
    Ok(())
}
