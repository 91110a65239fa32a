//! Who asks and what for: the user a request authenticated as, and the request's
//! attributes read from its method and path alone, as Kubernetes' `RequestInfoFactory` does
//! (no registry lookup, so it is cheap enough to run on every request).

/// Group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";
/// Group Kubernetes puts the admin credential in; its members pass every check.
pub const MASTERS: &str = "system:masters";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl User {
    /// The holder of the admin bearer token.
    pub fn admin() -> Self {
        Self {
            name: "quiver-admin".into(),
            uid: String::new(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        }
    }

    /// A ServiceAccount, named and grouped as Kubernetes names them.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        Self {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.into(),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }

    /// A request without credentials, on the paths that allow them.
    pub fn anonymous() -> Self {
        Self {
            name: "system:anonymous".into(),
            uid: String::new(),
            groups: vec!["system:unauthenticated".into()],
        }
    }

    pub fn is_admin(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

/// What a request asks to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attributes {
    Resource(ResourceAttributes),
    NonResource { verb: String, path: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResourceAttributes {
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    pub fn verb(&self) -> &str {
        match self {
            Self::Resource(r) => &r.verb,
            Self::NonResource { verb, .. } => verb,
        }
    }
}

/// Subresources of a namespace, which stay on the namespace itself.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// The attributes of `method path?query`.
pub fn of_request(method: &http::Method, path: &str, watch: bool) -> Attributes {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let non_resource = || Attributes::NonResource {
        verb: method.as_str().to_ascii_lowercase(),
        path: path.to_string(),
    };
    let (group, version, mut rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return non_resource(),
    };
    let mut attrs = ResourceAttributes {
        group: group.into(),
        version: version.into(),
        ..ResourceAttributes::default()
    };
    if let ["namespaces", ns, tail @ ..] = rest {
        attrs.namespace = (*ns).to_string();
        if !tail.is_empty() && !NAMESPACE_SUBRESOURCES.contains(&tail[0]) {
            rest = tail;
        }
    }
    attrs.resource = rest.first().copied().unwrap_or_default().to_string();
    attrs.name = rest.get(1).copied().unwrap_or_default().to_string();
    attrs.subresource = rest.get(2).copied().unwrap_or_default().to_string();
    attrs.verb = match (method.as_str(), attrs.name.is_empty()) {
        ("GET" | "HEAD", true) if watch => "watch",
        ("GET" | "HEAD", true) => "list",
        ("GET" | "HEAD", false) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", true) => "deletecollection",
        ("DELETE", false) => "delete",
        (other, _) => return non_resource_with(other, path),
    }
    .to_string();
    Attributes::Resource(attrs)
}

/// A list or watch whose field selector requires one `metadata.name` is authorized as a request
/// for that name, as Kubernetes does: a rule with `resourceNames` then grants watching one
/// object.
#[must_use]
pub fn with_selected_name(mut attrs: Attributes, field_selector: Option<&str>) -> Attributes {
    if let Attributes::Resource(r) = &mut attrs
        && (r.verb == "list" || r.verb == "watch")
        && r.name.is_empty()
        && let Some(name) = field_selector.and_then(selected_name)
    {
        r.name = name.to_owned();
    }
    attrs
}

/// The name a field selector requires exactly (`metadata.name=x` or `==x` among its terms).
fn selected_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let value = term.trim().strip_prefix("metadata.name")?;
        let value = value
            .strip_prefix("==")
            .or_else(|| value.strip_prefix('='))?;
        (!value.is_empty()).then_some(value)
    })
}

fn non_resource_with(method: &str, path: &str) -> Attributes {
    Attributes::NonResource {
        verb: method.to_ascii_lowercase(),
        path: path.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Method;

    fn resource(method: &Method, path: &str, watch: bool) -> ResourceAttributes {
        match of_request(method, path, watch) {
            Attributes::Resource(r) => r,
            other => panic!("{path} is a resource request, got {other:?}"),
        }
    }

    #[test]
    fn verbs_follow_method_and_name() {
        let list = resource(
            &Method::GET,
            "/apis/quiver.dev/v1alpha1/namespaces/d/microvms",
            false,
        );
        assert_eq!((list.verb.as_str(), list.namespace.as_str()), ("list", "d"));
        let watch = resource(&Method::GET, "/apis/quiver.dev/v1alpha1/microvms", true);
        assert_eq!(
            (watch.verb.as_str(), watch.namespace.as_str()),
            ("watch", "")
        );
        let get = resource(&Method::GET, "/api/v1/namespaces/d/configmaps/c", false);
        assert_eq!((get.verb.as_str(), get.name.as_str()), ("get", "c"));
        let dc = resource(&Method::DELETE, "/api/v1/namespaces/d/configmaps", false);
        assert_eq!(dc.verb, "deletecollection");
    }

    #[test]
    fn a_list_or_watch_selecting_one_name_is_a_request_for_that_name() {
        let path = "/api/v1/namespaces/default/configmaps";
        let name = |watch, selector| match with_selected_name(
            of_request(&Method::GET, path, watch),
            selector,
        ) {
            Attributes::Resource(r) => r.name,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            name(true, Some("metadata.name=quiver-operator")),
            "quiver-operator"
        );
        assert_eq!(name(false, Some("a=b,metadata.name==x")), "x");
        assert_eq!(name(true, Some("metadata.name!=x")), "");
        assert_eq!(name(true, Some("metadata.namespace=x")), "");
        assert_eq!(name(true, None), "");
        let get = with_selected_name(
            of_request(&Method::GET, "/api/v1/namespaces/d/configmaps/c", false),
            Some("metadata.name=other"),
        );
        assert!(matches!(get, Attributes::Resource(r) if r.name == "c"));
    }

    #[test]
    fn subresources_and_namespaces_themselves() {
        let status = resource(
            &Method::PATCH,
            "/apis/quiver.dev/v1alpha1/namespaces/d/microvms/vm/status",
            false,
        );
        assert_eq!(
            (
                status.resource.as_str(),
                status.name.as_str(),
                status.subresource.as_str()
            ),
            ("microvms", "vm", "status")
        );
        let ns = resource(&Method::GET, "/api/v1/namespaces/d", false);
        assert_eq!(
            (
                ns.resource.as_str(),
                ns.name.as_str(),
                ns.namespace.as_str()
            ),
            ("namespaces", "d", "d")
        );
        let finalize = resource(&Method::PUT, "/api/v1/namespaces/d/finalize", false);
        assert_eq!(
            (finalize.resource.as_str(), finalize.name.as_str()),
            ("namespaces", "d")
        );
    }

    #[test]
    fn discovery_and_health_are_paths() {
        for path in [
            "/api",
            "/apis",
            "/apis/quiver.dev",
            "/version",
            "/healthz",
            "/openapi/v3",
        ] {
            assert!(
                matches!(
                    of_request(&Method::GET, path, false),
                    Attributes::NonResource { .. }
                ),
                "{path}"
            );
        }
    }

    #[test]
    fn service_accounts_carry_their_groups() {
        let sa = User::service_account("ns", "op", "u");
        assert_eq!(sa.name, "system:serviceaccount:ns:op");
        assert!(sa.groups.contains(&"system:serviceaccounts:ns".to_string()));
        assert!(!sa.is_admin());
        assert!(User::admin().is_admin());
    }
}
