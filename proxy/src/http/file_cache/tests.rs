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
