//! The route table: every path billing answers, the methods it answers there and the template that labels its
//! metrics. The router (router.rs) matches requests with it, the 405's `Allow` header is read from it, and so is the
//! `route` label of the request metrics (server.rs). To add a route: add it here, then give its endpoint a handler
//! in router.rs (docs/architecture.md, "Adding a route").

use warp::http::Method;

/// What a route does; the router (router.rs) calls its handler.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    Ping,
    Healthz,
    Readyz,
    Metrics,
    GetAll,
    GetOne,
    Add,
    OpenApi,
}

/// One route of [`ROUTES`].
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    pub endpoint: Endpoint,
    /// The path, with `{id}` standing for one non-empty segment; also the route's metrics label.
    pub template: &'static str,
    /// The methods answered here, as the `Allow` header lists them. HEAD goes with every GET.
    pub allow: &'static str,
}

pub const PING: Route = Route { endpoint: Endpoint::Ping, template: "/ping", allow: "GET, HEAD" };
pub const HEALTHZ: Route = Route { endpoint: Endpoint::Healthz, template: "/healthz", allow: "GET, HEAD" };
pub const READYZ: Route = Route { endpoint: Endpoint::Readyz, template: "/readyz", allow: "GET, HEAD" };
pub const METRICS: Route = Route { endpoint: Endpoint::Metrics, template: "/metrics", allow: "GET, HEAD" };
pub const GET_ALL: Route = Route { endpoint: Endpoint::GetAll, template: "/getall", allow: "GET, HEAD" };
pub const GET_ONE: Route = Route { endpoint: Endpoint::GetOne, template: "/get/{id}", allow: "GET, HEAD" };
pub const ADD: Route = Route { endpoint: Endpoint::Add, template: "/add", allow: "POST" };
pub const OPENAPI: Route = Route { endpoint: Endpoint::OpenApi, template: "/openapi.json", allow: "GET, HEAD" };

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

    /// True when `method` is one of [`Route::allow`]'s. Split at the comma, a `char`: splitting at `", "`, a string,
    /// set up a substring search for every request (`StrSearcher` in `perf`).
    pub fn accepts(&self, method: &Method) -> bool {
        self.allow.split(',').any(|allowed| allowed.trim_ascii() == method.as_str())
    }
}

/// The route `path` belongs to, with its `{id}` segment (`""` for a route without one), if any.
pub fn matching(path: &str) -> Option<(&'static Route, &str)> {
    ROUTES.into_iter().find_map(|route| route.matches(path).map(|id| (route, id)))
}

/// The route `path` belongs to, if any.
pub fn find(path: &str) -> Option<&'static Route> {
    matching(path).map(|(route, _)| route)
}

/// The route template a path belongs to, for the `route` label of the metrics: never the raw path, which holds
/// client data.
pub fn label_of(path: &str) -> &'static str {
    label(find(path))
}

/// The `route` label of a request that matched `route` (or none).
pub fn label(route: Option<&'static Route>) -> &'static str {
    route.map_or(UNMATCHED, |route| route.template)
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

    #[test]
    fn a_route_accepts_exactly_the_methods_it_allows() {
        for (route, method, accepted) in [
            (&PING, Method::GET, true),
            (&PING, Method::HEAD, true),
            (&PING, Method::POST, false),
            (&GET_ONE, Method::HEAD, true),
            (&ADD, Method::POST, true),
            (&ADD, Method::GET, false),
            (&ADD, Method::PUT, false),
        ] {
            assert_eq!(route.accepts(&method), accepted, "{} {method}", route.template);
        }
        // Only whole method names: "GET, HEAD" does not allow "GE" or "HEAD, GET".
        assert!(!PING.accepts(&Method::from_bytes(b"GE").expect("a method")));
    }

    #[test]
    fn the_id_comes_with_its_route() {
        assert_eq!(matching("/get/17"), Some((&GET_ONE, "17")));
        assert_eq!(matching("/ping"), Some((&PING, "")));
        assert_eq!(matching("/nope"), None);
    }
}
