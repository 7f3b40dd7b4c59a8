//! The listener and how the service is reached: its name and public URL,
//! the address it binds, which browser origins and proxies it believes, and
//! the deadlines and cap that protect its connections.

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use super::{err, values, ConfigError, Vars};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Shown in emails and pages; the JWT audience (APP_NAME).
    pub app_name: String,
    /// Public base URL without a trailing slash; links in emails and the JWT
    /// issuer are built from it (APP_URL).
    pub app_url: String,
    pub host: IpAddr,
    pub port: u16,
    /// Origins allowed to call with credentials (CORS_ORIGINS).
    pub cors_origins: Vec<String>,
    /// Whether browsers send the API refresh cookie on cross-site requests
    /// (REFRESH_COOKIE_SAMESITE): an SPA on another site needs `none`.
    pub refresh_cookie_same_site: RefreshSameSite,
    /// Reverse proxies whose X-Forwarded-For is believed (TRUSTED_PROXIES).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long a client has to send a request's headers, counted from the
    /// connection's start or the end of its previous response, so it also
    /// ends idle keep-alive connections (HTTP_HEADER_TIMEOUT; slowloris).
    pub http_header_timeout: Duration,
    /// How long a client has to send a whole request body once its headers
    /// are in (HTTP_BODY_TIMEOUT): a total, so trickling bytes does not
    /// extend it.
    pub http_body_timeout: Duration,
    /// Most client connections open at once on the main listener
    /// (MAX_CONNECTIONS); `None`: derived from the descriptor limit at start
    /// (`server::default_max_connections`).
    pub max_connections: Option<usize>,
}

/// The SameSite attribute of the API refresh cookie.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefreshSameSite {
    /// Sent only on requests from this site (the default): an SPA on the
    /// same site (another port or subdomain of it) refreshes, a
    /// cross-site page cannot make the browser use the cookie.
    #[default]
    Strict,
    /// Also sent on top-level navigations from other sites (never on their
    /// fetches): no use to an SPA, allowed for deployments that need it.
    Lax,
    /// Sent cross-site too, for an SPA on another site. Needs https (a
    /// SameSite=None cookie must be Secure) and makes refresh and logout
    /// demand an allowed Origin.
    None,
}

impl RefreshSameSite {
    fn parse(value: &str) -> Option<Self> {
        match value.trim().to_ascii_lowercase().as_str() {
            "strict" => Some(Self::Strict),
            "lax" => Some(Self::Lax),
            "none" => Some(Self::None),
            _ => None,
        }
    }
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "SCREAMING_SNAKE_CASE")]
struct ServerVars {
    app_name: Option<String>,
    app_url: Option<String>,
    host: Option<String>,
    #[serde(deserialize_with = "values::number")]
    port: Option<u16>,
    cors_origins: Option<String>,
    refresh_cookie_samesite: Option<String>,
    trusted_proxies: Option<String>,
    #[serde(deserialize_with = "values::timeout")]
    http_header_timeout: Option<Duration>,
    #[serde(deserialize_with = "values::timeout")]
    http_body_timeout: Option<Duration>,
    max_connections: Option<String>,
}

impl ServerConfig {
    pub(super) fn read(vars: &Vars) -> Result<Self, ConfigError> {
        let v: ServerVars = vars.read()?;
        let port = v.port.unwrap_or(8000);
        let host = match v.host {
            None => IpAddr::from([127, 0, 0, 1]),
            Some(h) => h
                .parse()
                .map_err(|_| err("HOST", format!("expected an IP address, got {h:?}")))?,
        };
        let app_url = match v.app_url {
            None => format!("http://localhost:{port}"),
            Some(u) => base_url(&u).map_err(|m| err("APP_URL", m))?,
        };
        let cors_origins = match v.cors_origins {
            None => Vec::new(),
            Some(list) => values::list(&list)
                .map(|o| origin(o).map_err(|m| err("CORS_ORIGINS", m)))
                .collect::<Result<_, _>>()?,
        };
        let refresh_cookie_same_site = match v.refresh_cookie_samesite {
            None => RefreshSameSite::default(),
            Some(value) => RefreshSameSite::parse(&value).ok_or_else(|| {
                err(
                    "REFRESH_COOKIE_SAMESITE",
                    format!("expected strict, lax or none, got {value:?}"),
                )
            })?,
        };
        if refresh_cookie_same_site == RefreshSameSite::None && !app_url.starts_with("https://") {
            return Err(err(
                "REFRESH_COOKIE_SAMESITE",
                "none needs an https APP_URL: browsers drop a SameSite=None cookie that is not Secure",
            ));
        }
        let trusted_proxies = match v.trusted_proxies {
            None => Vec::new(),
            Some(list) => values::list(&list)
                .map(|c| {
                    c.parse::<ipnet::IpNet>()
                        .or_else(|_| c.parse::<IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            err(
                                "TRUSTED_PROXIES",
                                format!("{c:?} is not an IP address or CIDR"),
                            )
                        })
                })
                .collect::<Result<_, _>>()?,
        };
        let max_connections = match v.max_connections {
            None => None,
            Some(n) => match n.parse::<usize>() {
                Ok(n) if (1..=1_000_000).contains(&n) => Some(n),
                _ => {
                    return Err(err(
                        "MAX_CONNECTIONS",
                        format!("expected a whole number from 1 to 1000000, got {n:?}"),
                    ))
                }
            },
        };
        Ok(Self {
            app_name: v.app_name.unwrap_or_else(|| "Clinic Auth".into()),
            app_url,
            host,
            port,
            cors_origins,
            refresh_cookie_same_site,
            trusted_proxies,
            http_header_timeout: v.http_header_timeout.unwrap_or(Duration::from_secs(10)),
            http_body_timeout: v.http_body_timeout.unwrap_or(Duration::from_secs(10)),
            max_connections,
        })
    }

    /// True when the public URL is https: cookies get `Secure` and a prefix,
    /// responses get HSTS.
    pub fn is_https(&self) -> bool {
        self.app_url.starts_with("https://")
    }
}

/// An http(s) URL parsed by the `url` crate (the WHATWG rules browsers
/// use), written in lower case as `scheme://` since the is-https test and
/// the JWT issuer compare the text as given.
fn web_url(raw: &str) -> Result<Option<Url>, ()> {
    if !(raw.starts_with("https://") || raw.starts_with("http://")) {
        return Err(());
    }
    Ok(Url::parse(raw).ok().filter(|u| u.has_host()))
}

/// APP_URL: kept as written (links and the JWT issuer are made from it),
/// less trailing slashes. A query or fragment would end up inside every
/// link, and blanks are never part of a URL.
fn base_url(raw: &str) -> Result<String, String> {
    let trimmed = raw.trim_end_matches('/');
    let url = web_url(trimmed)
        .map_err(|()| format!("must start with http:// or https://, got {raw:?}"))?;
    match url {
        Some(url)
            if url.query().is_none()
                && url.fragment().is_none()
                && !trimmed.contains(char::is_whitespace)
                && !trimmed.contains(['?', '#']) =>
        {
            Ok(trimmed.to_owned())
        }
        _ => Err(format!("not a valid base URL: {raw:?}")),
    }
}

/// An origin is scheme://host[:port] with nothing after it; browsers send
/// exactly that in the Origin header, so anything else could never match.
fn origin(raw: &str) -> Result<String, String> {
    let url =
        web_url(raw).map_err(|()| format!("origin {raw:?} must start with http:// or https://"))?;
    let authority = raw.split_once("://").map_or("", |(_, rest)| rest);
    match url {
        Some(url)
            if url.path() == "/"
                && url.query().is_none()
                && url.fragment().is_none()
                && !authority.contains(['/', '?', '#', ' ', '*']) =>
        {
            Ok(raw.to_owned())
        }
        _ => Err(format!(
            "{raw:?} is not an origin (scheme://host[:port], no path, no wildcard)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_keep_their_path_and_lose_trailing_slashes() {
        assert_eq!(
            base_url("https://clinic.example/auth/").as_deref(),
            Ok("https://clinic.example/auth")
        );
        assert_eq!(
            base_url("http://127.0.0.1:8000").as_deref(),
            Ok("http://127.0.0.1:8000")
        );
        for bad in [
            "ftp://x",
            "//x",
            "https://",
            "https://a b",
            "https://x/#top",
        ] {
            assert!(base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn origins_are_scheme_host_and_port_only() {
        for good in [
            "http://localhost:3000",
            "https://app.clinic.example",
            "http://[::1]:8080",
        ] {
            assert_eq!(origin(good).as_deref(), Ok(good));
        }
        for bad in [
            "app.clinic.example",
            "https://app.clinic.example/",
            "https://*.clinic.example",
            "https://app.clinic.example?x",
            "https://:443",
            "https://app.clinic.example:99999",
        ] {
            assert!(origin(bad).is_err(), "{bad}");
        }
    }
}
