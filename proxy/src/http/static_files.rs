//! Serves OpenTAK Server's single-page web UI from a folder, replacing nginx's
//! `root /var/www/html/opentakserver; try_files $uri /index.html;`.
//!
//! tower-http's `ServeDir` does all the file work: MIME types, ETag and Last-Modified, 304s,
//! ranges, HEAD, precompressed `.br`/`.gz` siblings and the traversal guard. This module adds only
//! what sits around it:
//! - the SPA fallback to `/index.html`, withheld from `/assets/` so that a stale hashed bundle
//!   gets a 404 rather than HTML the browser would try to run as JavaScript;
//! - Cache-Control: Vite's hashed output never changes under a name, everything else must
//!   revalidate so a new deployment shows up on the next load;
//! - a 400 for paths `ServeDir` would refuse, because with a fallback configured `ServeDir`
//!   answers those with `index.html` and a scanner probing `/../` should see an error;
//! - a 503 page naming the expected folder while the UI is missing, since a bare 404 on `/` sends
//!   operators hunting in the wrong place;
//! - the in-memory [`FileCache`] in front of `ServeDir` for whole files, with their brotli and
//!   gzip copies made once (a file with a precompressed sibling on disk is left to `ServeDir`,
//!   which prefers the sibling).

use std::{
    convert::Infallible,
    ffi::OsStr,
    path::{Component, Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
};

use http::{header, request, HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use percent_encoding::percent_decode_str;
use tower::ServiceExt;
use tower_http::services::{fs::ServeFileSystemResponseBody, ServeDir, ServeFile};

use crate::http::{
    body::{self, Body},
    compress::{self, Coding, Wanted},
    file_cache::{self, CachedFile, FileCache},
};

/// Vite's output folder: every file in it carries a content hash in its name.
const ASSETS_DIR: &str = "assets";
const INDEX_HTML: &str = "index.html";
const CACHE_IMMUTABLE: &str = "public, max-age=31536000, immutable";
const CACHE_REVALIDATE: &str = "no-cache";

/// A folder of static files, optionally served as a single-page app.
#[derive(Clone, Debug)]
pub struct StaticFiles {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    root: PathBuf,
    spa_fallback: bool,
    cache: Arc<FileCache>,
    /// Plain files, no fallback: all of plain mode, and `/assets/` in SPA mode.
    files: ServeDir,
    /// Files with `index.html` as the fallback; `Some` only in SPA mode.
    spa: Option<ServeDir<ServeFile>>,
    /// The fallback alone, for paths no file system could hold; `Some` only in SPA mode.
    index: Option<ServeFile>,
    /// Set once the missing UI folder has been logged, so a browser polling the 503 page does not
    /// flood the log; cleared when files are served again, so a later disappearance is logged too.
    missing_logged: AtomicBool,
}

impl StaticFiles {
    /// `spa_fallback`: nginx `try_files $uri /index.html` semantics. `cache` may be shared by
    /// every `StaticFiles` of the same root.
    pub fn new(root: impl Into<PathBuf>, spa_fallback: bool, cache: Arc<FileCache>) -> Self {
        let root = root.into();
        let files = ServeDir::new(&root).precompressed_br().precompressed_gzip();
        let index = spa_fallback.then(|| {
            ServeFile::new(root.join(INDEX_HTML))
                .precompressed_br()
                .precompressed_gzip()
        });
        let spa = index.clone().map(|index| {
            // nginx's `try_files $uri` never matches a directory, so `/locales` falls through to
            // the app instead of redirecting to `/locales/`; client routes may share such names.
            files
                .clone()
                .redirect_to_trailing_slash(false)
                .fallback(index)
        });
        Self {
            inner: Arc::new(Inner {
                root,
                spa_fallback,
                cache,
                files,
                spa,
                index,
                missing_logged: AtomicBool::new(false),
            }),
        }
    }

    /// The folder files are served from, as configured.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Serve a request. Only GET and HEAD; other methods get 405 with `Allow: GET, HEAD`.
    pub async fn serve<B>(&self, req: Request<B>) -> Response<Body> {
        let method = req.method().clone();
        if method != Method::GET && method != Method::HEAD {
            return method_not_allowed();
        }
        let head = method == Method::HEAD;
        let Some(target) = Target::of(req.uri().path()) else {
            return bad_request(head);
        };
        let under_assets = target.under_assets;

        // The body of a GET or HEAD carries nothing to serve; dropping it here keeps `serve`
        // free of bounds on `B`.
        let (parts, _body) = req.into_parts();
        let uri = parts.uri.clone();

        let inner = &self.inner;
        let cached = match &target.file {
            Some(file) if inner.cache.is_enabled() && cacheable(&parts) => {
                let path = inner.root.join(file);
                inner.cache.get(&path).await.map(|entry| (path, entry))
            }
            _ => None,
        };
        let cached = match cached {
            Some((path, file)) => {
                let coding = parts
                    .extensions
                    .get::<Wanted>()
                    .and_then(|wanted| worth_compressing(&file, wanted));
                let encoded = match coding {
                    Some(c) => inner.cache.variant(&path, &file, c).await.map(|v| (c, v)),
                    None => None,
                };
                Some((file, encoded))
            }
            None => None,
        };
        let mut res = match cached {
            Some((file, encoded)) => from_cache(&file, &parts.headers, head, encoded),
            None => {
                self.serve_from_disk(Request::from_parts(parts, ()), &target)
                    .await
            }
        };
        let status = res.status();

        // Checked only after a 404 so the common path costs no extra syscall, yet a folder that
        // appears later (an init container still copying) is picked up without a restart.
        if status == StatusCode::NOT_FOUND && !self.ui_present().await {
            if !inner.missing_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    root = %inner.root.display(),
                    spa_fallback = inner.spa_fallback,
                    "web UI folder missing; answering 503 until it appears"
                );
            }
            return self.ui_missing(head);
        }
        if status.is_success() && inner.missing_logged.load(Ordering::Relaxed) {
            inner.missing_logged.store(false, Ordering::Relaxed);
            tracing::info!(root = %inner.root.display(), "web UI folder is being served");
        }
        if status.is_server_error() {
            tracing::warn!(%uri, %status, root = %inner.root.display(), "static file error");
        }

        let cacheable = status.is_success() || status == StatusCode::NOT_MODIFIED;
        let cache_control = if under_assets && cacheable {
            CACHE_IMMUTABLE
        } else {
            CACHE_REVALIDATE
        };
        let headers = res.headers_mut();
        headers.insert(
            header::CACHE_CONTROL,
            HeaderValue::from_static(cache_control),
        );
        // RFC 9110 §15.4.5: a 304 repeats the Vary a 200 would carry; ServeDir leaves it out, and
        // a cache without it could pair a 304 for the `br` variant with a stored identity body.
        if status == StatusCode::NOT_MODIFIED && !headers.contains_key(header::VARY) {
            headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        }

        res
    }

    async fn serve_from_disk(&self, req: Request<()>, target: &Target) -> Response<Body> {
        let inner = &self.inner;
        let res = if target.nameable {
            match &inner.spa {
                Some(spa) if !target.under_assets => spa.clone().oneshot(req).await,
                _ => inner.files.clone().oneshot(req).await,
            }
        } else {
            // ServeDir would answer ENAMETOOLONG with a 500; nginx's try_files counts such a
            // name as missing and moves on to the fallback.
            match &inner.index {
                Some(index) if !target.under_assets => index.clone().oneshot(req).await,
                _ => Ok(not_found()),
            }
        };
        res.unwrap_or_else(|never: Infallible| match never {})
            .map(into_body)
    }

    /// Whether the folder holds what this server needs before it can answer anything useful.
    async fn ui_present(&self) -> bool {
        let inner = &self.inner;
        if inner.spa_fallback {
            tokio::fs::metadata(inner.root.join(INDEX_HTML))
                .await
                .is_ok_and(|meta| meta.is_file())
        } else {
            tokio::fs::metadata(&inner.root)
                .await
                .is_ok_and(|meta| meta.is_dir())
        }
    }

    fn ui_missing(&self, head: bool) -> Response<Body> {
        let root = html_escape(&self.inner.root.display().to_string());
        let needs = if self.inner.spa_fallback {
            format!("<code>{root}</code> with an <code>index.html</code> in it")
        } else {
            format!("<code>{root}</code>")
        };
        let page = format!(
            "<!doctype html>\n\
             <html lang=\"en\"><head><meta charset=\"utf-8\">\
             <title>takgate: web UI not found</title></head>\n\
             <body style=\"font-family:sans-serif;max-width:40em;margin:3em auto\">\n\
             <h1>takgate is running</h1>\n\
             <p>but the OpenTAK Server web UI was not found. takgate expected the UI build in \
             the folder {needs}.</p>\n\
             <p>Copy the UI build there, or point takgate at the folder that holds it with the \
             <code>ui_root</code> key of the <code>[[http]]</code> listener in takgate's \
             config:</p>\n\
             <pre>[[http]]\nui_root = \"/var/www/html/opentakserver\"</pre>\n\
             <p>No restart is needed: this page goes away as soon as the folder appears.</p>\n\
             </body></html>\n"
        );
        let mut res = text_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/html; charset=utf-8",
            page,
            head,
        );
        res.headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        res
    }
}

/// What a request path names, decoded and split exactly as `ServeDir` does it, so that
/// `/%61ssets/x.js` and `//assets/x.js` still count as assets and never get HTML.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    /// Under `/assets/`: immutable when found, never the SPA fallback when not.
    under_assets: bool,
    /// Short enough to be a file name at all.
    nameable: bool,
    /// The file `ServeDir` would look for first, relative to the root; `None` when unnameable.
    file: Option<PathBuf>,
}

/// Linux's NAME_MAX; longer segments cannot exist on any common file system.
const MAX_SEGMENT_BYTES: usize = 255;
/// Far beyond any UI build's paths, and short enough that root plus path stays under PATH_MAX.
const MAX_PATH_BYTES: usize = 2048;

impl Target {
    /// `None` for a path `ServeDir` would refuse (see the module docs for why it is caught here).
    fn of(uri_path: &str) -> Option<Self> {
        let decoded = percent_decode_str(uri_path.trim_start_matches('/'))
            .decode_utf8()
            .ok()?;
        // NUL cannot reach a file name; a backslash is a separator on Windows.
        if decoded.contains(['\0', '\\']) {
            return None;
        }
        let mut first = None;
        let mut segments = 0usize;
        let mut nameable = decoded.len() <= MAX_PATH_BYTES;
        let mut file = PathBuf::new();
        for component in Path::new(&*decoded).components() {
            match component {
                Component::Normal(name) => {
                    first.get_or_insert(name);
                    segments += 1;
                    nameable &= name.len() <= MAX_SEGMENT_BYTES;
                    file.push(name);
                }
                Component::CurDir => {}
                Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
            }
        }
        let under_assets =
            first == Some(OsStr::new(ASSETS_DIR)) && (segments > 1 || decoded.ends_with('/'));
        // ServeDir serves a folder named with a trailing slash by its index.html.
        if decoded.is_empty() || decoded.ends_with('/') {
            file.push(INDEX_HTML);
        }
        Some(Self {
            under_assets,
            nameable,
            file: nameable.then_some(file),
        })
    }
}

/// Whether a request is one the cache answers exactly as `ServeDir` would. Ranges and the
/// preconditions that can give 412 or 206 go to `ServeDir`, as does a request that refuses the
/// identity encoding or names it explicitly, since only identity bodies are cached.
fn cacheable(parts: &request::Parts) -> bool {
    let headers = &parts.headers;
    let bypass = [
        header::RANGE,
        header::IF_RANGE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
    ];
    if bypass.iter().any(|name| headers.contains_key(name)) {
        return false;
    }
    !headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .map(|coding| {
            let name = coding.split(|&b| b == b';').next().unwrap_or_default();
            name.trim_ascii()
        })
        .any(|name| name == b"*" || name.eq_ignore_ascii_case(b"identity"))
}

/// The coding a cached file goes out in for a request that `wanted` one (`compress` decides the
/// same for everything else).
fn worth_compressing(file: &CachedFile, wanted: &Wanted) -> Option<Coding> {
    let coding = wanted.coding?;
    (compress::compressible(&file.content_type) && file.body.len() as u64 >= wanted.min_size)
        .then_some(coding)
}

/// A cached file, as `ServeDir` answers it: 304 when the client's copy is current (an
/// `If-None-Match` decides alone when present, RFC 9110 §13.2.2), else the whole file, in
/// `encoded` when that is given (whose validator is weak: a 304 says so too).
fn from_cache(
    file: &CachedFile,
    headers: &HeaderMap,
    head: bool,
    encoded: Option<(Coding, bytes::Bytes)>,
) -> Response<Body> {
    let not_modified = match headers.get(header::IF_NONE_MATCH) {
        Some(tags) => file_cache::none_match_fails(tags, &file.etag),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|since| since.to_str().ok())
            .and_then(|since| since.parse::<httpdate::HttpDate>().ok())
            .is_some_and(|since| file.modified <= since),
    };
    let body = match &encoded {
        Some((_, variant)) => variant.clone(),
        None => file.body.clone(),
    };
    let mut res = Response::new(if head || not_modified {
        body::empty()
    } else {
        body::full(body)
    });
    if not_modified {
        *res.status_mut() = StatusCode::NOT_MODIFIED;
    }
    let out = res.headers_mut();
    out.insert(header::LAST_MODIFIED, file.last_modified.clone());
    out.insert(header::ETAG, file.etag.clone());
    if not_modified {
        if encoded.is_some() {
            compress::weaken_etag(out);
        }
        return res;
    }
    out.insert(header::CONTENT_TYPE, file.content_type.clone());
    out.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    out.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    out.insert(header::CONTENT_LENGTH, HeaderValue::from(file.body.len()));
    if let Some((coding, variant)) = &encoded {
        compress::mark_encoded(out, *coding, Some(variant.len()));
    }
    res
}

fn not_found() -> Response<ServeFileSystemResponseBody> {
    let mut res = Response::new(ServeFileSystemResponseBody::default());
    *res.status_mut() = StatusCode::NOT_FOUND;
    res
}

fn into_body(body: ServeFileSystemResponseBody) -> Body {
    body.map_err(Into::into).boxed_unsync()
}

fn method_not_allowed() -> Response<Body> {
    let mut res = text_response(
        StatusCode::METHOD_NOT_ALLOWED,
        "text/plain; charset=utf-8",
        "method not allowed\n".to_owned(),
        false,
    );
    res.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    res
}

fn bad_request(head: bool) -> Response<Body> {
    text_response(
        StatusCode::BAD_REQUEST,
        "text/plain; charset=utf-8",
        "bad request path\n".to_owned(),
        head,
    )
}

/// A generated response; HEAD gets the same headers without the body.
fn text_response(
    status: StatusCode,
    content_type: &'static str,
    text: String,
    head: bool,
) -> Response<Body> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(text.len()));
    let body = if head {
        body::empty()
    } else {
        body::full(text)
    };
    let mut res = Response::new(body);
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

fn html_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests;
