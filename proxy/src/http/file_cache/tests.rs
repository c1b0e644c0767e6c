use http::HeaderValue;

use super::none_match_fails;

#[test]
fn if_none_match_uses_weak_comparison_over_a_list() {
    let etag = HeaderValue::from_static("\"abc.0-1\"");
    let fails = |h: &'static str| none_match_fails(&HeaderValue::from_static(h), &etag);
    assert!(fails("\"abc.0-1\""));
    assert!(fails("W/\"abc.0-1\""));
    assert!(fails("\"x\", \"abc.0-1\""));
    assert!(fails(" * "));
    assert!(fails("\"a,b\",\"abc.0-1\""));
    assert!(!fails("\"abc.0-2\""));
    assert!(!fails("\"abc.0-1,\""));
    assert!(!fails(""));
    assert!(!fails("abc.0-1"));
}

/// A file's compressed copy is made once, counted against the budget, and made anew when the
/// file changes.
#[tokio::test]
async fn compressed_copies_are_kept_until_the_file_changes() {
    use super::FileCache;
    use crate::http::compress::Coding;
    use std::time::Duration;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.js");
    std::fs::write(&path, "console.log('a');\n".repeat(500)).unwrap();
    let cache = FileCache::with_revalidate(1 << 20, 1 << 20, Duration::ZERO);
    let entry = cache.get(&path).await.unwrap();
    let before = cache.bytes();
    let br = cache.variant(&path, &entry, Coding::Br).await.unwrap();
    assert!(br.len() < entry.body.len() / 10);
    assert_eq!(cache.bytes(), before + br.len() as u64);
    let again = cache.variant(&path, &entry, Coding::Br).await.unwrap();
    assert_eq!(
        again.as_ptr(),
        br.as_ptr(),
        "the same copy, not compressed again"
    );
    let gz = cache.variant(&path, &entry, Coding::Gzip).await.unwrap();
    assert_eq!(cache.bytes(), before + (br.len() + gz.len()) as u64);

    // A new version of the file: a new entry, whose copy is of the new content.
    std::fs::write(&path, "console.log('b');\n".repeat(600)).unwrap();
    let fresh = cache.get(&path).await.unwrap();
    assert!(!std::sync::Arc::ptr_eq(&fresh, &entry));
    assert_eq!(
        cache.bytes(),
        fresh.body.len() as u64,
        "the old copies left with the old entry"
    );
    let br2 = cache.variant(&path, &fresh, Coding::Br).await.unwrap();
    assert_ne!(br2, br);
}
