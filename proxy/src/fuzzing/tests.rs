//! The committed seed corpus of `proxy/fuzz`, through the same harnesses, on every test run.

use std::path::Path;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    cot::fuzzing::seeds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz"), target).unwrap()
}

#[test]
fn http_head_seeds_hold_the_invariants() {
    let seeds = seeds("http_head");
    assert!(seeds.len() >= 10, "{} seeds", seeds.len());
    for (name, data) in seeds {
        assert!(
            super::parse_head(&data[2..]).is_some(),
            "{name} is not a request head"
        );
        super::http_head(&data);
    }
}

#[test]
fn http_head_seeds_are_refused_answered_and_forwarded() {
    use super::Outcome;
    let outcomes: Vec<_> = seeds("http_head")
        .iter()
        .filter_map(|(_, data)| super::http_head_outcome(data))
        .collect();
    let count = |o| outcomes.iter().filter(|&&x| x == o).count();
    // The harness drives the whole service: most seeds reach the stand-in upstream, whose
    // record the forwarding invariants are checked on.
    assert!(count(Outcome::Forwarded) >= 5, "{outcomes:?}");
    assert!(count(Outcome::Answered) >= 1, "{outcomes:?}");
}

#[test]
fn config_seeds_hold_the_invariants() {
    let seeds = seeds("config");
    assert!(seeds.len() >= 5, "{} seeds", seeds.len());
    let mut valid = 0;
    for (_, data) in seeds {
        super::config(&data);
        valid +=
            usize::from(crate::config::Config::parse(std::str::from_utf8(&data).unwrap()).is_ok());
    }
    assert!(valid >= 4, "only {valid} seeds are valid configs");
}
