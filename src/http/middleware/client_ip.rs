//! Decides which IP a request comes from, once, for rate limits and the
//! records kept with sessions: the socket peer.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::middleware::Next;
use axum::response::Response;

use crate::http::extract::ClientIp;

pub async fn client_ip(mut req: Request, next: Next) -> Response {
    if let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    {
        req.extensions_mut().insert(ClientIp(peer));
    }
    next.run(req).await
}
