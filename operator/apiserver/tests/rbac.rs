//! ServiceAccount identities and RBAC, driven by kube-rs and the real kubectl: tokens from
//! the TokenRequest API authenticate as their ServiceAccount (TokenReview and
//! SelfSubjectReview say who), Roles, ClusterRoles and their bindings decide what the
//! account may do, denials are 403 Statuses worded as Kubernetes words them, and
//! `kubectl auth can-i` / `auth whoami` answer from the same policy.

mod kube_common;

use k8s_openapi::api::authentication::v1::{
    SelfSubjectReview, TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchParams};
use kube::discovery::Discovery;
use kube_common::{client_for, kubectl_as, start, widgets};
use quiver_apiserver::DevApiServer;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

const SA_USER: &str = "system:serviceaccount:default:op";

fn typed<T: DeserializeOwned>(v: Value) -> anyhow::Result<T> {
    Ok(serde_json::from_value(v)?)
}

/// Creates ServiceAccount `default/op` and returns a token for it.
async fn service_account_token(admin: &kube::Client) -> anyhow::Result<String> {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
    sas.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "op"}}))?,
    )
    .await?;
    let request = TokenRequest {
        spec: TokenRequestSpec::default(),
        ..TokenRequest::default()
    };
    let answer = sas
        .create_token_request("op", &PostParams::default(), &request)
        .await?;
    assert_eq!(answer.spec.expiration_seconds, Some(3600));
    assert_eq!(
        answer.spec.audiences,
        ["https://kubernetes.default.svc.cluster.local"]
    );
    answer
        .status
        .map(|s| s.token)
        .ok_or_else(|| anyhow::anyhow!("no token"))
}

fn api_status(
    result: Result<impl std::fmt::Debug, kube::Error>,
) -> anyhow::Result<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => Ok(*status),
        other => anyhow::bail!("expected an API error, got {other:?}"),
    }
}

async fn grant(admin: &kube::Client, rules: Value) -> anyhow::Result<()> {
    let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
    roles
        .patch(
            "op",
            &PatchParams::apply("test").force(),
            &Patch::Apply(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                "metadata": {"name": "op"}, "rules": rules}),
            ),
        )
        .await?;
    let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
    bindings
        .patch(
            "op",
            &PatchParams::apply("test").force(),
            &Patch::Apply(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": "op"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "op"},
                "subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "default"}]}),
            ),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn token_request_token_authenticates_as_the_service_account() -> anyhow::Result<()> {
    let (server, admin) = start().await?;
    let token = service_account_token(&admin).await?;
    let reviews: Api<TokenReview> = Api::all(admin.clone());
    let review = reviews
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.clone()),
                    audiences: None,
                },
                ..TokenReview::default()
            },
        )
        .await?;
    let status = review.status.ok_or_else(|| anyhow::anyhow!("status"))?;
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.ok_or_else(|| anyhow::anyhow!("user"))?;
    assert_eq!(user.username.as_deref(), Some(SA_USER));
    assert_eq!(
        user.groups,
        Some(vec![
            "system:serviceaccounts".to_string(),
            "system:serviceaccounts:default".to_string(),
            "system:authenticated".to_string()
        ])
    );
    let account = Api::<ServiceAccount>::default_namespaced(admin.clone())
        .get("op")
        .await?;
    assert_eq!(user.uid, account.metadata.uid, "the account's uid");
    assert_eq!(
        status.audiences,
        Some(vec![
            "https://kubernetes.default.svc.cluster.local".to_string()
        ])
    );
    let extra = user.extra.unwrap_or_default();
    let credential = extra
        .get("authentication.kubernetes.io/credential-id")
        .and_then(|ids| ids.first())
        .cloned()
        .unwrap_or_default();
    assert!(credential.starts_with("JTI="), "{credential}");
    assert_eq!(status.error, None);

    let op = client_for(&server, &token).await?;
    let me = Api::<SelfSubjectReview>::all(op.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await?;
    let info = me.status.and_then(|s| s.user_info).unwrap_or_default();
    assert_eq!(info.username.as_deref(), Some(SA_USER));
    let out = kubectl_as(
        &server,
        &token,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )
    .await?;
    assert_eq!(out, SA_USER);

    // A forged token and one for a deleted account are refused with 401.
    let forged = client_for(&server, &format!("{token}x")).await?;
    let refused = api_status(
        Api::<ConfigMap>::default_namespaced(forged)
            .list(&ListParams::default())
            .await,
    )?;
    assert_eq!(refused.code, 401);
    let bad_review = reviews
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some("not-a-token".into()),
                    audiences: None,
                },
                ..TokenReview::default()
            },
        )
        .await?;
    // Not authenticated: `authenticated` is left out (false) and the user is empty.
    let bad = bad_review.status.unwrap_or_default();
    assert_eq!(bad.authenticated, None);
    assert_eq!(bad.user, Some(Default::default()));
    assert_eq!(bad.audiences, None);
    assert_eq!(bad.error, None, "what is not a JWT is passed over");
    let forged_review = reviews
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(format!("{token}x")),
                    audiences: None,
                },
                ..TokenReview::default()
            },
        )
        .await?;
    let forged_status = forged_review.status.unwrap_or_default();
    assert_eq!(forged_status.authenticated, None);
    assert!(forged_status.error.is_some(), "a bad signature is an error");
    let sas: Api<ServiceAccount> = Api::default_namespaced(admin.clone());
    let short_lived = TokenRequest {
        spec: TokenRequestSpec {
            expiration_seconds: Some(10),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let refused = api_status(
        sas.create_token_request("op", &PostParams::default(), &short_lived)
            .await,
    )?;
    assert_eq!(
        (refused.code, refused.message.as_str()),
        (
            422,
            "TokenRequest.authentication.k8s.io \"\" is invalid: spec.expirationSeconds: Invalid value: 10: may not specify a duration less than 10 minutes"
        )
    );
    sas.delete("op", &DeleteParams::default()).await?;
    let gone = api_status(
        Api::<ConfigMap>::default_namespaced(op)
            .list(&ListParams::default())
            .await,
    )?;
    assert_eq!(gone.code, 401);

    let gone = sas
        .create_token_request("op", &PostParams::default(), &short_lived)
        .await;
    assert_eq!(api_status(gone)?.code, 404, "the account is gone");
    Ok(())
}

#[tokio::test]
async fn rbac_denies_with_kubernetes_wording_until_a_role_grants() -> anyhow::Result<()> {
    let (server, admin) = start().await?;
    let token = service_account_token(&admin).await?;
    let op = client_for(&server, &token).await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(op.clone());

    let denied = api_status(cms.get("c").await)?;
    assert_eq!((denied.code, denied.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        denied.message,
        format!(
            "configmaps \"c\" is forbidden: User \"{SA_USER}\" cannot get resource \"configmaps\" in API group \"\" in the namespace \"default\""
        )
    );
    // The exact body a real API server sends.
    let request = http::Request::get("/api/v1/namespaces/default/configmaps/c").body(Vec::new())?;
    let answer = kube_common::raw(&op, request).await?;
    assert_eq!(answer.code, 403);
    assert_eq!(
        answer.body,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": denied.message, "reason": "Forbidden",
            "details": {"name": "c", "kind": "configmaps"}, "code": 403})
    );
    let ws = widgets(&op, "v2");
    let denied = api_status(ws.list(&ListParams::default()).await)?;
    assert_eq!(
        denied.message,
        format!(
            "widgets.example.dev is forbidden: User \"{SA_USER}\" cannot list resource \"widgets\" in API group \"example.dev\" in the namespace \"default\""
        )
    );
    let details = denied.details.ok_or_else(|| anyhow::anyhow!("details"))?;
    assert_eq!(
        (details.group.as_str(), details.kind.as_str()),
        ("example.dev", "widgets")
    );

    // Discovery needs no grant: the defaults give it to every authenticated user.
    let discovery = Discovery::new(op.clone()).run_aggregated().await?;
    assert!(discovery.has_group("example.dev"));

    grant(
        &admin,
        json!([
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "create"]},
            {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["mine"], "verbs": ["delete", "patch"]},
            {"apiGroups": ["example.dev"], "resources": ["widgets/status"], "verbs": ["patch"]},
            {"apiGroups": ["example.dev"], "resources": ["widgets"], "verbs": ["*"]},
        ]),
    )
    .await?;
    cms.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "mine"}}))?,
    )
    .await?;
    cms.create(
        &PostParams::default(),
        &typed(json!({"metadata": {"name": "theirs"}}))?,
    )
    .await?;
    assert_eq!(cms.list(&ListParams::default()).await?.items.len(), 2);
    let watch = api_status(cms.watch(&WatchParams::default(), "0").await.map(|_| ()))?;
    assert_eq!(watch.code, 403, "list does not grant watch");
    let other_ns = api_status(
        Api::<ConfigMap>::namespaced(op.clone(), "kube-system")
            .list(&ListParams::default())
            .await,
    )?;
    assert!(
        other_ns
            .message
            .ends_with("in the namespace \"kube-system\""),
        "{}",
        other_ns.message
    );
    let theirs = api_status(cms.delete("theirs", &DeleteParams::default()).await)?;
    assert_eq!(theirs.code, 403);
    cms.delete("mine", &DeleteParams::default()).await?;
    let collection = api_status(
        cms.delete_collection(&DeleteParams::default(), &ListParams::default())
            .await,
    )?;
    assert!(
        collection
            .message
            .contains("cannot deletecollection resource \"configmaps\""),
        "{}",
        collection.message
    );

    let mut w = kube::api::DynamicObject::new("w", &kube_common::widget_resource("v2"));
    w.data = json!({"spec": {"replicas": 1}});
    ws.create(&PostParams::default(), &w).await?;
    ws.patch_status(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"replicas": 1}})),
    )
    .await?;
    let scale = api_status(ws.get_scale("w").await)?;
    assert_eq!(
        scale.message,
        format!(
            "widgets.example.dev \"w\" is forbidden: User \"{SA_USER}\" cannot get resource \"widgets/scale\" in API group \"example.dev\" in the namespace \"default\""
        )
    );
    let cluster = api_status(
        Api::<ClusterRole>::all(op.clone())
            .list(&ListParams::default())
            .await,
    )?;
    assert!(
        cluster.message.ends_with("at the cluster scope"),
        "{}",
        cluster.message
    );

    // A ClusterRoleBinding grants cluster-scoped reads, and a non-resource URL.
    Api::<ClusterRole>::all(admin.clone())
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": "reader"}, "rules": [
                {"apiGroups": ["rbac.authorization.k8s.io"], "resources": ["clusterroles"], "verbs": ["list"]},
                {"nonResourceURLs": ["/openapi/*"], "verbs": ["get"]}]}))?,
        )
        .await?;
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &PostParams::default(),
            &typed(json!({"metadata": {"name": "reader"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "reader"},
                "subjects": [{"kind": "Group", "name": "system:serviceaccounts:default"}]}))?,
        )
        .await?;
    assert!(
        !Api::<ClusterRole>::all(op.clone())
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn kubectl_auth_can_i_answers_from_the_policy() -> anyhow::Result<()> {
    let (server, admin) = start().await?;
    let token = service_account_token(&admin).await?;
    let can_i = |args: &'static [&'static str]| {
        let server: &DevApiServer = &server;
        let token = token.clone();
        async move {
            let mut all = vec!["auth", "can-i"];
            all.extend_from_slice(args);
            match kubectl_as(server, &token, &all).await {
                Ok(out) => anyhow::Ok(out.trim().to_string()),
                // `can-i` exits 1 when the answer is no, with "no" on stdout.
                Err(e) if e.to_string().contains("exited exit status: 1: no") => Ok("no".into()),
                Err(e) => Err(e),
            }
        }
    };
    assert_eq!(can_i(&["list", "configmaps"]).await?, "no");
    grant(
        &admin,
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]},
               {"apiGroups": ["example.dev"], "resources": ["widgets/scale"], "verbs": ["update"]}]),
    )
    .await?;
    assert_eq!(can_i(&["list", "configmaps"]).await?, "yes");
    assert_eq!(
        can_i(&["list", "configmaps", "-n", "kube-system"]).await?,
        "no"
    );
    assert_eq!(can_i(&["watch", "configmaps"]).await?, "no");
    assert_eq!(
        can_i(&["update", "widgets.example.dev", "--subresource=scale"]).await?,
        "yes"
    );
    assert_eq!(can_i(&["get", "/version"]).await?, "yes");
    let list = can_i(&["--list"]).await?;
    assert!(
        list.lines()
            .any(|l| l.starts_with("configmaps ") && l.contains("[list]")),
        "{list}"
    );
    // `kubectl create token` (a protobuf TokenRequest) gives a token that works the same.
    let minted = kubectl_as(
        &server,
        server.token(),
        &["create", "token", "op", "--duration=20m"],
    )
    .await?;
    let out = kubectl_as(
        &server,
        minted.trim(),
        &["auth", "can-i", "list", "configmaps"],
    )
    .await?;
    assert_eq!(out.trim(), "yes");

    // The admin may do anything.
    let admin_says = kubectl_as(
        &server,
        server.token(),
        &["auth", "can-i", "delete", "widgets.example.dev"],
    )
    .await?;
    assert_eq!(admin_says.trim(), "yes");
    Ok(())
}

#[tokio::test]
async fn tokens_and_grants_survive_a_restart_that_keeps_the_admin_token() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = quiver_apiserver::Config {
        token: Some("fixed-admin-token".into()),
        data_file: Some(dir.path().join("state.jsonl")),
        ..quiver_apiserver::Config::default()
    };
    let server = DevApiServer::start(config.clone()).await?;
    let admin = client_for(&server, server.token()).await?;
    let token = service_account_token(&admin).await?;
    grant(
        &admin,
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]),
    )
    .await?;
    server.shutdown().await;

    let server = DevApiServer::start(config).await?;
    let op = client_for(&server, &token).await?;
    let cms: Api<ConfigMap> = Api::default_namespaced(op);
    cms.list(&ListParams::default()).await?;
    assert_eq!(api_status(cms.get("c").await)?.code, 403);
    Ok(())
}
