//! Each route of the table (routes.rs) with its handler, and the JSON 404/405 for everything else. Request ids,
//! metrics and the access log are `server.rs`'s.
//!
//! A request's path finds its route in the table before its method is looked at, so a known path with the wrong
//! method is told which methods it has (405 with `Allow`), and only an unknown path is a 404. HEAD is answered
//! wherever GET is: the same status and headers, and hyper sends no body.
//!
//! The dispatch is a `match` on the table's endpoints, not a chain of warp filters: with every route's filter tried
//! in turn (warp's `or`), warp's routing took about 1.3 µs of a `GET /ping`'s 25-29 µs of CPU, and `/ping` stayed
//! under 0.8x a bare hyper server (docs/benchmarks.md, "Routing by the table"). warp still makes the answers
//! (`warp::reply`).

use std::future::{Future, Ready, ready};
use std::pin::Pin;

use futures_util::future::Either;
use hyper::body::Incoming;
use warp::http::{Method, Request, header};
use warp::reply::{Reply, Response};

use crate::app::App;
use crate::error::ApiError;
use crate::http::routes::{self, Endpoint, Route};
use crate::http::{handlers, listings, openapi};

/// The API as the 404 lists it (a test checks that it names every route of the table).
const API: &str = "GET /ping, GET /getall, GET /get/<id>, POST /add, GET /healthz, GET /readyz, GET /metrics, \
                   GET /openapi.json";

/// A route's answer: made at once, or by a handler that waits (for the database, or for the request's body).
pub type Answer = Either<Ready<Response>, Pin<Box<dyn Future<Output = Response> + Send>>>;

/// The routes, with the state their handlers share.
#[derive(Clone)]
pub struct Router {
    app: App,
}

impl Router {
    pub fn new(app: App) -> Self {
        Router { app }
    }

    /// The route the request's path matched, if any (server.rs labels the request's metrics with it, so the path
    /// is matched once), and the answer.
    pub fn answer(&self, request: Request<Incoming>) -> (Option<&'static Route>, Answer) {
        let path = request.uri().path();
        let Some((route, id)) = routes::matching(path) else {
            return (None, now(not_found(request.method(), path)));
        };
        if !route.accepts(request.method()) {
            return (Some(route), now(method_not_allowed(route, request.method(), path)));
        }
        let app = || self.app.clone();
        // The raw query string, or "" when there is none.
        let query = || request.uri().query().unwrap_or_default().to_owned();
        let answer = match route.endpoint {
            Endpoint::Ping => now(handlers::ping()),
            Endpoint::Healthz => now(handlers::healthz()),
            Endpoint::OpenApi => now(openapi::document()),
            Endpoint::Readyz => later(handlers::readyz(app())),
            Endpoint::Metrics => later(handlers::metrics(app())),
            Endpoint::GetAll => later(listings::getall(app(), query())),
            Endpoint::GetOne => later(handlers::get(id.to_owned(), app())),
            Endpoint::Add => {
                let query = query();
                // The headers as a whole: Idempotency-Key must be seen however often it was sent, and in any bytes.
                let (parts, body) = request.into_parts();
                later(handlers::add(app(), query, parts.headers, body))
            }
        };
        (Some(route), answer)
    }
}

fn now(response: Response) -> Answer {
    Either::Left(ready(response))
}

fn later(handler: impl Future<Output = Response> + Send + 'static) -> Answer {
    Either::Right(Box::pin(handler))
}

fn not_found(method: &Method, path: &str) -> Response {
    ApiError::not_found(format!("no route for {method} {path}; the API is {API}")).into_response()
}

fn method_not_allowed(route: &Route, method: &Method, path: &str) -> Response {
    warp::reply::with_header(
        ApiError::method_not_allowed(format!("{path} does not accept {method}; use {}", route.allow)),
        header::ALLOW,
        route.allow,
    )
    .into_response()
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
