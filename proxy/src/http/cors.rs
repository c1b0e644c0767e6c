//! Cross-origin policy, answered at the edge.
//!
//! OTS itself runs flask-cors with `origins="*"` and credentials, which echoes any Origin; behind
//! takgate the listener's policy is the only one: takgate removes the upstream's
//! `Access-Control-*` headers and sets its own. The default allows the same origin only.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use crate::config::CorsConfig;
use crate::http::body::{self, Body};

#[derive(Debug)]
enum OriginRule {
    Any,
    Exact(String),
    /// `https://*.example.org` matches `https://a.example.org` and `https://b.a.example.org:8443`
    /// but not `https://example.org`: (scheme, ".example.org").
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

#[derive(Debug)]
pub struct CorsPolicy {
    rules: Vec<OriginRule>,
    credentials: bool,
    methods: HeaderValue,
    headers: HeaderValue,
    allowed_headers: Vec<String>,
    expose: Option<HeaderValue>,
    max_age: HeaderValue,
}

/// What to do with a request before routing it.
#[derive(Debug)]
pub enum Decision {
    /// Answer now (preflight, or a refused cross-origin WebSocket).
    Respond(Response<Body>),
    /// Go on; `allow` is the cross-origin grant to add to the response, if any.
    Proceed { allow: Option<HeaderValue> },
}

static ACRM: HeaderName = header::ACCESS_CONTROL_REQUEST_METHOD;

// === impl CorsPolicy ===

impl CorsPolicy {
    pub fn new(config: &CorsConfig) -> Self {
        let rules = config
            .allowed_origins
            .iter()
            .map(|o| {
                if o == "*" {
                    return OriginRule::Any;
                }
                let lower = o.to_ascii_lowercase();
                match lower.split_once("://*.") {
                    Some((scheme, suffix)) => OriginRule::Subdomains {
                        scheme: scheme.to_owned(),
                        suffix: format!(".{suffix}"),
                    },
                    None => OriginRule::Exact(without_default_port(lower.trim_end_matches('/'))),
                }
            })
            .collect();
        let join = |items: &[String]| HeaderValue::try_from(items.join(", ")).ok();
        Self {
            rules,
            credentials: config.allow_credentials,
            methods: join(&config.allowed_methods)
                .unwrap_or_else(|| HeaderValue::from_static("GET")),
            headers: join(&config.allowed_headers).unwrap_or_else(|| HeaderValue::from_static("")),
            allowed_headers: config
                .allowed_headers
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            expose: if config.expose_headers.is_empty() {
                None
            } else {
                join(&config.expose_headers)
            },
            max_age: HeaderValue::from(config.max_age.as_secs()),
        }
    }

    /// Whether any cross-origin grant is possible; if so, responses vary by Origin.
    fn open(&self) -> bool {
        !self.rules.is_empty()
    }

    fn allows(&self, origin: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        self.rules.iter().any(|r| match r {
            OriginRule::Any => true,
            OriginRule::Exact(o) => *o == origin,
            OriginRule::Subdomains { scheme, suffix } => origin
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_prefix("://"))
                .map(|authority| authority.split(':').next().unwrap_or(authority))
                .is_some_and(|host| host.len() > suffix.len() && host.ends_with(suffix.as_str())),
        })
    }

    /// Decides on a request before it is routed. `scheme` is the listener's.
    pub fn decide(&self, req: &Parts, scheme: &str, upgrade: bool) -> Decision {
        let Some(origin) = req.headers.get(header::ORIGIN) else {
            // Not a browser cross-origin request: nothing to grant or refuse.
            return Decision::Proceed { allow: None };
        };
        let origin_str = origin.to_str().unwrap_or("");
        let same = same_origin(origin_str, scheme, req.headers.get(header::HOST));
        let allowed = !same && self.allows(origin_str);
        if req.method == Method::OPTIONS && req.headers.contains_key(&ACRM) {
            return Decision::Respond(self.preflight(req, origin, same || allowed));
        }
        if upgrade && !same && !allowed {
            return Decision::Respond(forbidden("cross-origin WebSocket refused"));
        }
        Decision::Proceed {
            allow: allowed.then(|| origin.clone()),
        }
    }

    fn preflight(&self, req: &Parts, origin: &HeaderValue, allowed: bool) -> Response<Body> {
        let requested_ok = req
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .and_then(|v| v.to_str().ok())
            .is_none_or(|list| {
                list.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .all(|h| self.allowed_headers.contains(&h))
            });
        let mut resp = if allowed && requested_ok {
            let mut resp = Response::new(body::empty());
            *resp.status_mut() = StatusCode::NO_CONTENT;
            let h = resp.headers_mut();
            self.grant(h, origin);
            h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
            h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, self.headers.clone());
            h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
            resp
        } else {
            forbidden("CORS preflight refused: origin or requested headers not allowed")
        };
        resp.headers_mut().insert(
            header::VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        resp
    }

    fn grant(&self, h: &mut HeaderMap, origin: &HeaderValue) {
        let any = self.rules.iter().any(|r| matches!(r, OriginRule::Any));
        // `*` cannot carry credentials (Fetch standard); config validation keeps them apart.
        if any && !self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
        } else {
            h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        }
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// Replaces the upstream's CORS headers with this policy's answer.
    pub fn apply(&self, headers: &mut HeaderMap, allow: Option<&HeaderValue>) {
        for name in [
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            header::ACCESS_CONTROL_MAX_AGE,
        ] {
            headers.remove(name);
        }
        if let Some(origin) = allow {
            self.grant(headers, origin);
            if let Some(expose) = &self.expose {
                headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        if self.open() && !vary_has_origin(headers) {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// Browsers never write the default port in an Origin, so a configured one must not either.
fn without_default_port(origin: &str) -> String {
    for (scheme, port) in [("https://", ":443"), ("http://", ":80")] {
        if origin.starts_with(scheme) {
            if let Some(stripped) = origin.strip_suffix(port) {
                return stripped.to_owned();
            }
        }
    }
    origin.to_owned()
}

fn vary_has_origin(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("origin") || t.trim() == "*")
}

/// Whether `origin` is `scheme://Host`, treating an omitted default port as written out.
pub fn same_origin(origin: &str, scheme: &str, host: Option<&HeaderValue>) -> bool {
    let Some(host) = host.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some(authority) = origin
        .strip_prefix(scheme)
        .and_then(|r| r.strip_prefix("://"))
    else {
        return false;
    };
    let default = if scheme == "https" { "443" } else { "80" };
    let norm = |a: &str| -> String {
        let a = a.to_ascii_lowercase();
        match a.rsplit_once(':') {
            // An IPv6 literal without port ends in ']'.
            Some((h, p)) if !p.contains(']') && p == default => h.to_owned(),
            _ => a,
        }
    };
    norm(authority) == norm(host)
}

fn forbidden(reason: &'static str) -> Response<Body> {
    let mut resp = Response::new(body::full(reason));
    *resp.status_mut() = StatusCode::FORBIDDEN;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

#[cfg(test)]
mod tests;
