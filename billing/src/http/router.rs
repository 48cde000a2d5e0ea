//! Each route of the table (routes.rs) with its handler, and the JSON 404/405 for everything else. Request ids,
//! metrics and the access log are `server.rs`'s.
//!
//! Each route matches its path before its method, so a known path with the wrong method is told which methods it
//! has (405 with `Allow`), and only an unknown path is a 404.

use std::convert::Infallible;

use warp::filters::path::FullPath;
use warp::http::{Method, header};
use warp::reply::{Reply, Response};
use warp::{Filter, Rejection};

use crate::app::App;
use crate::error::ApiError;
use crate::http::routes::{self, Route};
use crate::http::{handlers, listings, openapi};

/// The API as the 404 lists it (a test checks that it names every route of the table).
const API: &str = "GET /ping, GET /getall, GET /get/<id>, POST /add, GET /healthz, GET /readyz, GET /metrics, \
                   GET /openapi.json";

pub fn routes(app: App) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone + Send + Sync + 'static {
    let with_app = warp::any().map(move || app.clone());
    // The raw query string, or "" when there is none (warp rejects a missing one).
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();

    // HEAD answers wherever GET does: the same status and headers, and hyper sends no body.
    let get = || warp::get().or(warp::head()).unify();
    let ping = on(&routes::PING).and(get()).then(handlers::ping);
    let healthz = on(&routes::HEALTHZ).and(get()).then(handlers::healthz);
    let readyz = on(&routes::READYZ).and(get()).and(with_app.clone()).then(handlers::readyz);
    let metrics = on(&routes::METRICS).and(get()).and(with_app.clone()).then(handlers::metrics);
    let document = on(&routes::OPENAPI).and(get()).map(openapi::document);
    let get_all = on(&routes::GET_ALL).and(get()).and(with_app.clone()).and(raw_query).then(listings::getall);
    let get_one = with_id(&routes::GET_ONE).and(get()).and(with_app.clone()).then(handlers::get);
    let add = on(&routes::ADD)
        .and(warp::post())
        .and(with_app)
        .and(raw_query)
        // The headers as a whole: Idempotency-Key must be seen however often it was sent, and in any bytes.
        .and(warp::header::headers_cloned())
        .and(warp::body::stream())
        .then(|app, query, headers, body| handlers::add(app, query, headers, Box::pin(body)));

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
        .or(document)
        .unify()
        .or(fallback)
        .unify()
}

/// Requests whose path is `route`'s.
fn on(route: &'static Route) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    with_id(route).map(|_id: String| ()).untuple_one()
}

/// Requests whose path is `route`'s, with its `{id}` segment.
fn with_id(route: &'static Route) -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::path::full().and_then(move |path: FullPath| {
        let id = route.matches(path.as_str()).map(str::to_owned).ok_or_else(warp::reject::not_found);
        std::future::ready(id)
    })
}

fn fallback(method: Method, path: FullPath) -> Response {
    let path = path.as_str();
    match routes::find(path).map(|route| route.allow) {
        Some(allowed) => warp::reply::with_header(
            ApiError::method_not_allowed(format!("{path} does not accept {method}; use {allowed}")),
            header::ALLOW,
            allowed,
        )
        .into_response(),
        None => ApiError::not_found(format!("no route for {method} {path}; the API is {API}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The 404's list of the API names every route of the table with its methods.
    #[test]
    fn the_not_found_message_names_every_route() {
        for route in routes::ROUTES {
            let method = route.allow.split(", ").next().unwrap_or_default();
            let listed = format!("{method} {}", route.template.replace("{id}", "<id>"));
            assert!(API.contains(&listed), "{listed} is missing from {API:?}");
        }
    }
}
