//! Routes, and the JSON 404/405 for everything else. Request ids, metrics and the access log are `server.rs`'s.
//!
//! Each route matches its path before its method, so a known path with the wrong method is told which methods it
//! has (405 with `Allow`), and only an unknown path is a 404.

use std::convert::Infallible;

use warp::Filter;
use warp::filters::path::FullPath;
use warp::http::{Method, header};
use warp::reply::{Reply, Response};

use crate::app::App;
use crate::error::ApiError;
use crate::{getall, handlers};

pub fn routes(app: App) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_app = warp::any().map(move || app.clone());
    // The raw query string, or "" when there is none (warp rejects a missing one).
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();

    // HEAD answers wherever GET does: the same status and headers, and hyper sends no body.
    let get = || warp::get().or(warp::head()).unify();
    let ping = warp::path!("ping").and(get()).then(handlers::ping);
    let healthz = warp::path!("healthz").and(get()).then(handlers::healthz);
    let readyz = warp::path!("readyz").and(get()).and(with_app.clone()).then(handlers::readyz);
    let metrics = warp::path!("metrics").and(get()).and(with_app.clone()).then(handlers::metrics);
    let get_all = warp::path!("getall").and(get()).and(with_app.clone()).and(raw_query).then(getall::getall);
    let get_one = warp::path!("get" / String).and(get()).and(with_app.clone()).then(handlers::get);
    let add = warp::path!("add")
        .and(warp::post())
        .and(with_app)
        .and(raw_query)
        .and(warp::header::optional::<String>("content-type"))
        .and(warp::header::optional::<String>("accept"))
        .and(warp::header::optional::<u64>("content-length"))
        .and(warp::body::stream())
        .then(|app, query, content_type, accept, length, body| {
            handlers::add(app, query, content_type, accept, length, Box::pin(body))
        });

    let fallback = warp::method().and(warp::path::full()).map(fallback);

    ping.or(healthz)
        .unify()
        .or(readyz)
        .unify()
        .or(metrics)
        .unify()
        .or(get_all)
        .unify()
        .or(get_one)
        .unify()
        .or(add)
        .unify()
        .or(fallback)
        .unify()
}

/// The methods each known path answers to.
fn allowed_methods(path: &str) -> Option<&'static str> {
    match path {
        "/ping" | "/healthz" | "/readyz" | "/metrics" | "/getall" => Some("GET, HEAD"),
        "/add" => Some("POST"),
        p if p.strip_prefix("/get/").is_some_and(|id| !id.is_empty() && !id.contains('/')) => Some("GET, HEAD"),
        _ => None,
    }
}

fn fallback(method: Method, path: FullPath) -> Response {
    let path = path.as_str();
    match allowed_methods(path) {
        Some(allowed) => warp::reply::with_header(
            ApiError::method_not_allowed(format!("{path} does not accept {method}; use {allowed}")),
            header::ALLOW,
            allowed,
        )
        .into_response(),
        None => ApiError::not_found(format!(
            "no route for {method} {path}; the API is GET /ping, GET /getall, GET /get/<id>, POST /add, \
             GET /healthz, GET /readyz, GET /metrics"
        ))
        .into_response(),
    }
}
