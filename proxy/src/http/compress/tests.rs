use std::io::Read;

use http::header::{HeaderMap, HeaderValue, ACCEPT_ENCODING};
use http_body_util::BodyExt;

use super::encoder::{compress_all, Compressed};
use super::*;

fn accept(values: &[&str]) -> Option<Coding> {
    let mut headers = HeaderMap::new();
    for v in values {
        headers.append(ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
    }
    negotiate(&headers)
}

#[test]
fn negotiation_follows_weights() {
    assert_eq!(accept(&[]), None, "no header: identity");
    assert_eq!(accept(&[""]), None);
    assert_eq!(accept(&["gzip, deflate, br"]), Some(Coding::Br));
    assert_eq!(accept(&["gzip"]), Some(Coding::Gzip));
    assert_eq!(accept(&["GZIP;Q=0.5"]), Some(Coding::Gzip));
    assert_eq!(
        accept(&["br;q=0.9", "gzip"]),
        Some(Coding::Gzip),
        "across header lines"
    );
    assert_eq!(
        accept(&["br;q=0", "*"]),
        Some(Coding::Gzip),
        "q=0 refuses, * allows the rest"
    );
    assert_eq!(accept(&["*;q=0"]), None);
    assert_eq!(accept(&["identity, *;q=0"]), None);
    assert_eq!(
        accept(&["identity;q=0.9, br;q=0.8"]),
        None,
        "identity weighed higher"
    );
    assert_eq!(accept(&["identity;q=0.5, br;q=0.8"]), Some(Coding::Br));
    assert_eq!(accept(&["br;q=1.0"]), Some(Coding::Br));
    assert_eq!(accept(&["br;q=0.001"]), Some(Coding::Br));
    // Malformed weights are ignored, not read as 1.
    assert_eq!(accept(&["br;q=1.5"]), None);
    assert_eq!(accept(&["br;q=0.0001"]), None);
    assert_eq!(accept(&["br;q=x"]), None);
    assert_eq!(accept(&["br;q=", "gzip;q=0.1"]), Some(Coding::Gzip));
    assert_eq!(
        accept(&["deflate, zstd"]),
        None,
        "codings takgate does not make"
    );
}

#[test]
fn only_text_like_types_are_compressible() {
    for t in [
        "application/json",
        "application/javascript",
        "text/javascript; charset=utf-8",
        "text/html",
        "text/css",
        "TEXT/PLAIN; charset=UTF-8",
        "image/svg+xml",
        "application/xml",
        "application/vnd.google-earth.kml+xml",
        "application/geo+json",
        "application/manifest+json",
    ] {
        assert!(compressible(&HeaderValue::from_static(t)), "{t}");
    }
    for t in [
        "image/png",
        "application/zip",
        "application/octet-stream",
        "application/x-pkcs12",
        "text/event-stream",
        "font/woff2",
        "video/mp4",
        "nonsense",
    ] {
        assert!(!compressible(&HeaderValue::from_static(t)), "{t}");
    }
}

#[test]
fn encoded_headers_drop_length_and_ranges_and_weaken_the_etag() {
    let mut h = HeaderMap::new();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("123"));
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    h.insert(header::ETAG, HeaderValue::from_static("\"abc\""));
    h.insert(header::VARY, HeaderValue::from_static("Origin"));
    mark_encoded(&mut h, Coding::Br, None);
    assert_eq!(h[header::CONTENT_ENCODING], "br");
    assert!(!h.contains_key(header::CONTENT_LENGTH));
    assert!(!h.contains_key(header::ACCEPT_RANGES));
    assert_eq!(h[header::ETAG], "W/\"abc\"");
    let vary: Vec<_> = h.get_all(header::VARY).iter().collect();
    assert_eq!(vary, ["Origin", "accept-encoding"]);
    // Idempotent on what is already there; a known length is set.
    mark_encoded(&mut h, Coding::Br, Some(7));
    assert_eq!(h[header::ETAG], "W/\"abc\"");
    assert_eq!(h.get_all(header::VARY).iter().count(), 2);
    assert_eq!(h[header::CONTENT_LENGTH], "7");
}

fn decode(coding: Coding, wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        Coding::Br => brotli::Decompressor::new(wire, 4096)
            .read_to_end(&mut out)
            .unwrap(),
        Coding::Gzip => flate2::read::GzDecoder::new(wire)
            .read_to_end(&mut out)
            .unwrap(),
    };
    out
}

/// Each chunk in yields a frame out that decodes to everything so far: nothing is held back.
#[tokio::test]
async fn every_chunk_is_flushed() {
    for coding in [Coding::Br, Coding::Gzip] {
        let (tx, rx) = tokio::sync::mpsc::channel::<
            Result<http_body::Frame<bytes::Bytes>, crate::http::body::BoxError>,
        >(1);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        let inner = http_body_util::StreamBody::new(stream).boxed_unsync();
        let permit = Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap();
        let mut body = Compressed::new(inner, coding, permit);
        let mut wire = Vec::new();
        let mut sent = Vec::new();
        for chunk in [&b"{\"a\":1}"[..], &[b'x'; 5000][..], b"tail"] {
            tx.send(Ok(http_body::Frame::data(bytes::Bytes::copy_from_slice(
                chunk,
            ))))
            .await
            .unwrap();
            sent.extend_from_slice(chunk);
            let frame = body.frame().await.unwrap().unwrap();
            wire.extend_from_slice(frame.data_ref().unwrap());
            let mut so_far = Vec::new();
            let _ = match coding {
                Coding::Br => brotli::Decompressor::new(&wire[..], 4096).read_to_end(&mut so_far),
                Coding::Gzip => flate2::read::GzDecoder::new(&wire[..]).read_to_end(&mut so_far),
            };
            assert_eq!(so_far, sent, "{coding:?}");
        }
        drop(tx);
        while let Some(frame) = body.frame().await {
            wire.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        assert_eq!(decode(coding, &wire), sent);
        assert_eq!(decode(coding, &compress_all(coding, &sent).unwrap()), sent);
    }
}

fn response(content_type: &str, len: usize) -> Response<Body> {
    let mut res = Response::new(body::full(vec![b'a'; len]));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(content_type).unwrap(),
    );
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    res
}

fn compression(tls: bool, max_streams: usize) -> Compression {
    let config = CompressionConfig {
        max_streams,
        ..CompressionConfig::default()
    };
    Compression::new(&config, tls).unwrap()
}

fn wanted(c: &Compression, path: &str, accept: &str) -> Wanted {
    c.wanted(
        &Request::get(path)
            .header(ACCEPT_ENCODING, accept)
            .body(())
            .unwrap(),
    )
}

#[test]
fn what_qualifies() {
    let c = compression(true, 8);
    let w = wanted(&c, "/api/eud", "br");
    let mut ok = response("application/json", 5000);
    c.apply(&w, &mut ok);
    assert_eq!(ok.headers()[header::CONTENT_ENCODING], "br");
    for (mut res, why) in [
        (response("application/json", 100), "under min_size"),
        (response("image/png", 5000), "not compressible"),
        (
            {
                let mut r = response("application/json", 5000);
                *r.status_mut() = StatusCode::PARTIAL_CONTENT;
                r
            },
            "206",
        ),
        (
            {
                let mut r = response("application/json", 5000);
                *r.status_mut() = StatusCode::NOT_FOUND;
                r
            },
            "404",
        ),
        (
            {
                let mut r = response("application/json", 5000);
                r.headers_mut()
                    .insert(header::SET_COOKIE, HeaderValue::from_static("s=1"));
                r
            },
            "sets a cookie on TLS",
        ),
    ] {
        c.apply(&w, &mut res);
        assert!(
            !res.headers().contains_key(header::CONTENT_ENCODING),
            "{why}"
        );
    }
    let mut me = response("application/json", 5000);
    c.apply(&wanted(&c, "/api/me", "br"), &mut me);
    assert!(!me.headers().contains_key(header::CONTENT_ENCODING));
    let mut mediamtx = response("application/json", 5000);
    c.apply(&wanted(&c, "/api/mediamtx", "br"), &mut mediamtx);
    assert!(
        mediamtx.headers().contains_key(header::CONTENT_ENCODING),
        "whole segments only"
    );
}

/// Past `max_streams` encoders at once, answers go out identity-encoded; one ending frees a slot.
#[test]
fn encoders_are_bounded() {
    let c = compression(false, 1);
    let w = wanted(&c, "/api/eud", "gzip");
    let mut first = response("application/json", 5000);
    c.apply(&w, &mut first);
    assert_eq!(first.headers()[header::CONTENT_ENCODING], "gzip");
    let mut second = response("application/json", 5000);
    c.apply(&w, &mut second);
    assert!(!second.headers().contains_key(header::CONTENT_ENCODING));
    drop(first);
    let mut third = response("application/json", 5000);
    c.apply(&w, &mut third);
    assert_eq!(third.headers()[header::CONTENT_ENCODING], "gzip");
}
