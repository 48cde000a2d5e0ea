//! The HTTP layer: what a client sees. server.rs accepts connections and wraps every request (request id, metrics,
//! access log); router.rs matches it against the route table (routes.rs) and calls its handler (handlers.rs,
//! listings.rs, openapi.rs), which checks the input (validation.rs) and asks the shared state (app.rs) for the rest.

pub mod handlers;
pub mod listings;
pub mod openapi;
pub mod router;
pub mod routes;
pub mod server;
pub mod validation;
