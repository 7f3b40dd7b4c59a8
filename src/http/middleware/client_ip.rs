//! Decides which IP a request comes from, once, for rate limits and the
//! records kept with sessions.
//!
//! The socket peer, unless the peer is one of TRUSTED_PROXIES: then the
//! X-Forwarded-For chain is walked from the right (the entries our own
//! proxies appended) to the first address that is not a trusted proxy.
//! Anything a client writes at the left of the header is never believed.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::IpNet;

use crate::http::extract::ClientIp;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Arc<Vec<IpNet>>);

impl TrustedProxies {
    fn trusts(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client address for a request from `peer` carrying these
    /// X-Forwarded-For values.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for entry in forwarded_for.iter().flat_map(|v| v.split(',')).rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>() else {
                // Junk in the chain: stop at the last address we could trust.
                break;
            };
            client = ip;
            if !self.trusts(ip) {
                break;
            }
        }
        client
    }
}

pub async fn client_ip(
    State(trusted): State<TrustedProxies>,
    mut req: Request,
    next: Next,
) -> Response {
    if let Some(peer) = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
    {
        let forwarded: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let ip = trusted.client(peer, &forwarded);
        req.extensions_mut().insert(ClientIp(ip));
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> TrustedProxies {
        TrustedProxies(Arc::new(nets.iter().map(|n| n.parse().unwrap()).collect()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn untrusted_peers_are_taken_as_they_are() {
        let none = trusted(&[]);
        assert_eq!(
            none.client(ip("203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_proxies_are_skipped_from_the_right() {
        let t = trusted(&["10.0.0.0/8"]);
        // client 198.51.100.7 -> proxy 10.0.0.2 -> proxy 10.0.0.1 (peer)
        assert_eq!(
            t.client(ip("10.0.0.1"), &["198.51.100.7, 10.0.0.2"]),
            ip("198.51.100.7")
        );
        // A forged left-most entry does not win over what our proxy saw.
        assert_eq!(
            t.client(ip("10.0.0.1"), &["6.6.6.6, 198.51.100.7"]),
            ip("198.51.100.7")
        );
        // Several headers count as one list.
        assert_eq!(
            t.client(ip("10.0.0.1"), &["6.6.6.6", "198.51.100.7"]),
            ip("198.51.100.7")
        );
        // No header: the proxy itself.
        assert_eq!(t.client(ip("10.0.0.1"), &[]), ip("10.0.0.1"));
        // Junk stops the walk at the last trusted hop.
        assert_eq!(
            t.client(ip("10.0.0.1"), &["198.51.100.7, garbage"]),
            ip("10.0.0.1")
        );
    }
}
