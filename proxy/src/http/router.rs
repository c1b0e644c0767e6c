//! Maps a request path to what a listener does with it, reproducing the `location` blocks of the
//! nginx server block that the listener's profile stands for (`ots-contract.md` §1.8).

use std::fmt;
use std::sync::Arc;

use http::Uri;

use crate::config::{HttpListenerConfig, Profile, RouteConfig};

/// A bounded label for what kind of traffic a request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RouteClass {
    Static,
    Api,
    Marti,
    SocketIo,
    WebSocket,
    Other,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Static => "static",
            RouteClass::Api => "api",
            RouteClass::Marti => "marti",
            RouteClass::SocketIo => "socketio",
            RouteClass::WebSocket => "websocket",
            RouteClass::Other => "other",
        }
    }
}

/// The `Host` header sent upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostHeader {
    /// The client's Host, port included, as engine.io's same-origin check needs.
    Verbatim,
    /// nginx's `$host:PORT`: OTS builds URLs (data packages, video links) from it and expects a
    /// port. A client Host that already names a port (a NodePort, say) is kept as it is, since
    /// that port is the one the client can reach.
    DefaultPort(u16),
}

/// A proxied upstream: scheme, authority and an optional base path.
#[derive(Debug)]
pub struct Upstream {
    pub uri: Uri,
    pub tls_verify: bool,
}

#[derive(Debug)]
pub struct ProxyRoute {
    pub class: RouteClass,
    pub upstream: Arc<Upstream>,
    /// The prefix to remove from the path before forwarding.
    pub strip: Option<String>,
    pub host: HostHeader,
}

#[derive(Clone, Debug)]
pub enum Action {
    Proxy(Arc<ProxyRoute>),
    /// Serve from `ui_root`, with or without the single-page-app fallback to index.html.
    Static {
        spa: bool,
    },
    NotFound,
    /// 301 to the same host and path on https.
    Redirect {
        https_port: u16,
    },
}

#[derive(Debug)]
pub struct Router {
    /// Longest prefix first.
    routes: Vec<(String, Action)>,
    fallback: Action,
}

/// MediaMTX's WebRTC and HLS servers, as OTS's nginx proxies them.
const MEDIA_ROUTES: [(&str, &str); 2] = [
    ("/webrtc", "https://127.0.0.1:8889"),
    ("/hls", "https://127.0.0.1:8888"),
];

// === impl Router ===

impl Router {
    pub fn new(listener: &HttpListenerConfig, api: &Uri) -> Self {
        let api = Arc::new(Upstream {
            uri: api.clone(),
            tls_verify: true,
        });
        let proxy = |class, host| {
            Action::Proxy(Arc::new(ProxyRoute {
                class,
                upstream: api.clone(),
                strip: None,
                host,
            }))
        };
        let tls = listener.tls.is_some();
        let (profile_routes, fallback): (Vec<(&str, Action)>, Action) = match listener.profile {
            Profile::Web => {
                let mut routes = vec![(
                    "/socket.io",
                    proxy(RouteClass::SocketIo, HostHeader::Verbatim),
                )];
                if tls {
                    // ots_https 443: the Marti API is only for 8443, where certificates are checked.
                    routes.push(("/api", proxy(RouteClass::Api, HostHeader::DefaultPort(443))));
                    routes.push(("/Marti", Action::NotFound));
                } else {
                    routes.push(("/api", proxy(RouteClass::Api, HostHeader::Verbatim)));
                    routes.push(("/Marti", proxy(RouteClass::Marti, HostHeader::Verbatim)));
                }
                (routes, Action::Static { spa: true })
            }
            Profile::Marti => (
                vec![
                    // Enrollment belongs to 8446, which needs no client certificate.
                    ("/Marti/api/tls", Action::NotFound),
                    ("/Marti", proxy(RouteClass::Marti, HostHeader::Verbatim)),
                    (
                        "/api",
                        proxy(RouteClass::Api, HostHeader::DefaultPort(8443)),
                    ),
                    // CloudTAK reads /files/api/config.
                    (
                        "/files",
                        proxy(RouteClass::Api, HostHeader::DefaultPort(443)),
                    ),
                ],
                Action::Static { spa: false },
            ),
            Profile::Enroll => (
                vec![
                    (
                        "/Marti/api/tls",
                        proxy(RouteClass::Marti, HostHeader::Verbatim),
                    ),
                    // TAKX and CloudTAK fetch tokens from /oauth/token (OTS issue #115).
                    (
                        "/oauth",
                        proxy(RouteClass::Api, HostHeader::DefaultPort(443)),
                    ),
                ],
                Action::Static { spa: false },
            ),
            Profile::Redirect => (
                Vec::new(),
                Action::Redirect {
                    https_port: listener.https_port,
                },
            ),
        };

        let mut routes: Vec<(String, Action)> = listener
            .routes
            .iter()
            .map(|r| (r.prefix.clone(), custom_route(r)))
            .collect();
        let defaults = profile_routes
            .into_iter()
            .map(|(p, a)| (p.to_owned(), a))
            .chain(media_routes(listener.profile));
        for (prefix, action) in defaults {
            // A custom route replaces the profile's route for the same prefix.
            if !routes.iter().any(|(p, _)| *p == prefix) {
                routes.push((prefix, action));
            }
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.0.len()));
        Self { routes, fallback }
    }

    pub fn route(&self, path: &str) -> &Action {
        self.routes
            .iter()
            .find(|(prefix, _)| segment_prefix(path, prefix))
            .map_or(&self.fallback, |(_, a)| a)
    }

    /// Every upstream this router can send to, for connection pools and checks.
    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.routes.iter().filter_map(|(_, a)| match a {
            Action::Proxy(r) => Some(&r.upstream),
            _ => None,
        })
    }
}

fn media_routes(profile: Profile) -> Vec<(String, Action)> {
    if profile != Profile::Web {
        return Vec::new();
    }
    MEDIA_ROUTES
        .iter()
        .map(|(prefix, upstream)| {
            let route = RouteConfig {
                prefix: (*prefix).to_owned(),
                upstream: Uri::from_static(upstream),
                strip_prefix: true,
                // MediaMTX serves OTS's self-signed certificate on loopback.
                tls_verify: false,
            };
            ((*prefix).to_owned(), custom_route(&route))
        })
        .collect()
}

fn custom_route(r: &RouteConfig) -> Action {
    Action::Proxy(Arc::new(ProxyRoute {
        class: RouteClass::Other,
        upstream: Arc::new(Upstream {
            uri: r.upstream.clone(),
            tls_verify: r.tls_verify,
        }),
        strip: r.strip_prefix.then(|| r.prefix.clone()),
        host: HostHeader::Verbatim,
    }))
}

/// `/api` matches `/api` and `/api/x` but not `/apix`.
pub(crate) fn segment_prefix(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

impl fmt::Display for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (prefix, action) in &self.routes {
            writeln!(f, "    {prefix:<16} {action}")?;
        }
        write!(f, "    {:<16} {}", "(other)", self.fallback)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Proxy(r) => {
                write!(f, "proxy {} -> {}", r.class.as_str(), r.upstream.uri)?;
                if r.strip.is_some() {
                    f.write_str(" (prefix stripped)")?;
                }
                if !r.upstream.tls_verify {
                    f.write_str(" (upstream certificate not verified)")?;
                }
                if let HostHeader::DefaultPort(p) = r.host {
                    write!(f, " (Host with default port {p})")?;
                }
                Ok(())
            }
            Action::Static { spa: true } => f.write_str("static UI, index.html fallback"),
            Action::Static { spa: false } => f.write_str("static files"),
            Action::NotFound => f.write_str("404"),
            Action::Redirect { https_port } => write!(f, "301 to https (port {https_port})"),
        }
    }
}

#[cfg(test)]
mod tests;
