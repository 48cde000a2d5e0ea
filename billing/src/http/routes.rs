//! The route table: every path billing answers, the methods it answers there and the template that labels its
//! metrics. The router (router.rs) matches requests with it, the 405's `Allow` header is read from it, and so is the
//! `route` label of the request metrics (server.rs). To add a route: add it here, then give it a handler in
//! router.rs (docs/architecture.md, "Adding a route").

/// One route of [`ROUTES`].
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    /// The path, with `{id}` standing for one non-empty segment; also the route's metrics label.
    pub template: &'static str,
    /// The methods answered here, as the `Allow` header lists them. HEAD goes with every GET.
    pub allow: &'static str,
}

pub const PING: Route = Route { template: "/ping", allow: "GET, HEAD" };
pub const HEALTHZ: Route = Route { template: "/healthz", allow: "GET, HEAD" };
pub const READYZ: Route = Route { template: "/readyz", allow: "GET, HEAD" };
pub const METRICS: Route = Route { template: "/metrics", allow: "GET, HEAD" };
pub const GET_ALL: Route = Route { template: "/getall", allow: "GET, HEAD" };
pub const GET_ONE: Route = Route { template: "/get/{id}", allow: "GET, HEAD" };
pub const ADD: Route = Route { template: "/add", allow: "POST" };
pub const OPENAPI: Route = Route { template: "/openapi.json", allow: "GET, HEAD" };

/// Every route, in the order the router tries them. billing/openapi.json documents each with exactly these methods
/// (a test in http/openapi.rs checks it).
pub const ROUTES: [&Route; 8] = [&PING, &HEALTHZ, &READYZ, &METRICS, &GET_ALL, &GET_ONE, &ADD, &OPENAPI];

/// The label of a path no route matches.
pub const UNMATCHED: &str = "unmatched";

impl Route {
    /// The `{id}` segment of `path` if `path` is this route's, `Some("")` for a route without one; `None` if it is
    /// not this route's. As warp's `path!` does, one trailing `/` is allowed.
    pub fn matches<'p>(&self, path: &'p str) -> Option<&'p str> {
        let path = match path.strip_suffix('/') {
            Some(trimmed) if !trimmed.is_empty() => trimmed,
            _ => path,
        };
        match self.template.strip_suffix("{id}") {
            Some(prefix) => path.strip_prefix(prefix).filter(|id| !id.is_empty() && !id.contains('/')),
            None => (path == self.template).then_some(""),
        }
    }
}

/// The route `path` belongs to, if any.
pub fn find(path: &str) -> Option<&'static Route> {
    ROUTES.into_iter().find(|route| route.matches(path).is_some())
}

/// The route template a path belongs to, for the `route` label of the metrics: never the raw path, which holds
/// client data.
pub fn label_of(path: &str) -> &'static str {
    find(path).map_or(UNMATCHED, |route| route.template)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_never_raw_paths() {
        assert_eq!(label_of("/get/17"), "/get/{id}");
        assert_eq!(label_of("/get/abc"), "/get/{id}");
        assert_eq!(label_of("/get/"), "unmatched");
        assert_eq!(label_of("/get/1/2"), "unmatched");
        assert_eq!(label_of("/add"), "/add");
        assert_eq!(label_of("/admin/../etc/passwd"), "unmatched");
    }

    /// A route added to the table gets a label of its own, never "unmatched" or another route's.
    #[test]
    fn every_route_has_its_own_label() {
        let mut labels = Vec::new();
        for route in ROUTES {
            let example = route.template.replace("{id}", "17");
            let label = label_of(&example);
            assert_eq!(label, route.template, "{example} is labelled {label}");
            assert!(!labels.contains(&label), "two routes share the label {label}");
            labels.push(label);
        }
        assert_eq!(labels.len(), ROUTES.len());
    }

    #[test]
    fn the_id_is_one_non_empty_segment_and_one_trailing_slash_is_allowed() {
        assert_eq!(GET_ONE.matches("/get/17"), Some("17"));
        assert_eq!(GET_ONE.matches("/get/17/"), Some("17"));
        assert_eq!(GET_ONE.matches("/get//"), None);
        assert_eq!(PING.matches("/ping/"), Some(""));
        assert_eq!(PING.matches("/ping//"), None);
        assert_eq!(find("/"), None);
    }
}
