//! Decides which IP a request comes from, once, for rate limits and the
//! records kept with sessions.
//!
//! The socket peer, unless the peer is one of TRUSTED_PROXIES: then the
//! X-Forwarded-For chain is walked from the right (the entries our own
//! proxies appended) to the first address that is not a trusted proxy.
//! Anything a client writes at the left of the header is never believed.
//!
//! Every address is made canonical here, once: an IPv4-mapped IPv6 address
//! (`::ffff:a.b.c.d`, what an IPv4 client looks like on a socket bound to
//! `::`) becomes the IPv4 address, so proxy matching, rate limits, audit
//! records, session lists and logs all see the same client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use ipnet::{IpNet, Ipv4Net};

use crate::http::extract::ClientIp;
use crate::http::middleware::rate_limit::{self, RateLimitKey};

/// How the client's address is settled: whose X-Forwarded-For is believed
/// (TRUSTED_PROXIES) and how much of an IPv6 address the rate limits key
/// on (RATE_LIMIT_IPV6_PREFIX).
#[derive(Debug, Clone)]
pub struct ClientIpPolicy {
    trusted_proxies: Arc<Vec<IpNet>>,
    ipv6_prefix: u8,
}

impl ClientIpPolicy {
    pub fn new(trusted_proxies: &[IpNet], ipv6_prefix: u8) -> Self {
        Self {
            trusted_proxies: Arc::new(trusted_proxies.iter().map(|n| canonical_net(*n)).collect()),
            ipv6_prefix,
        }
    }

    fn trusts(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The (canonical) client address for a request from `peer` carrying
    /// these X-Forwarded-For values.
    pub fn client(&self, peer: IpAddr, forwarded_for: &[&str]) -> IpAddr {
        let peer = peer.to_canonical();
        if !self.trusts(peer) {
            return peer;
        }
        let mut client = peer;
        for entry in forwarded_for.iter().flat_map(|v| v.split(',')).rev() {
            let Ok(ip) = entry.trim().parse::<IpAddr>().map(|ip| ip.to_canonical()) else {
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

/// A TRUSTED_PROXIES entry written as IPv4-mapped IPv6
/// (`::ffff:10.0.0.0/104`) is the IPv4 network it maps, since the addresses
/// it is matched against are canonical.
fn canonical_net(net: IpNet) -> IpNet {
    match net {
        IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.network().to_ipv4_mapped() {
            Some(v4) => Ipv4Net::new(v4, v6.prefix_len() - 96)
                .map(IpNet::V4)
                .unwrap_or(net),
            None => net,
        },
        _ => net,
    }
}

pub async fn client_ip(
    State(policy): State<ClientIpPolicy>,
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
        let ip = policy.client(peer, &forwarded);
        // Records keep the full address; only the limiters' key is widened.
        req.extensions_mut()
            .insert(RateLimitKey(rate_limit::key_for(ip, policy.ipv6_prefix)));
        req.extensions_mut().insert(ClientIp(ip));
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trusted(nets: &[&str]) -> ClientIpPolicy {
        let nets: Vec<IpNet> = nets
            .iter()
            .map(|n| {
                n.parse()
                    .unwrap_or_else(|_| IpNet::from(n.parse::<IpAddr>().unwrap()))
            })
            .collect();
        ClientIpPolicy::new(&nets, 64)
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

    #[test]
    fn ipv4_mapped_addresses_are_their_ipv4_address() {
        // HOST=:: hands an IPv4 client over as ::ffff:a.b.c.d; an IPv4
        // proxy entry must still match it, and what it forwards counts.
        let t = trusted(&["127.0.0.1"]);
        assert_eq!(
            t.client(ip("::ffff:127.0.0.1"), &["198.51.100.7"]),
            ip("198.51.100.7")
        );
        assert_eq!(t.client(ip("::ffff:127.0.0.1"), &[]), ip("127.0.0.1"));
        // Mapped entries in the chain are canonical too, and skipped as
        // proxies when they are ours.
        assert_eq!(
            t.client(ip("127.0.0.1"), &["::ffff:198.51.100.7, ::ffff:127.0.0.1"]),
            ip("198.51.100.7")
        );
        // Untrusted mapped peers are still reported as IPv4.
        let none = trusted(&[]);
        assert_eq!(
            none.client(ip("::ffff:203.0.113.9"), &["1.2.3.4"]),
            ip("203.0.113.9")
        );
        // A proxy range written in the mapped form matches IPv4 peers.
        let mapped = trusted(&["::ffff:10.0.0.0/104"]);
        assert_eq!(
            mapped.client(ip("10.1.2.3"), &["198.51.100.7"]),
            ip("198.51.100.7")
        );
        // Real IPv6 is left alone.
        assert_eq!(none.client(ip("2001:db8::1"), &[]), ip("2001:db8::1"));
    }
}
