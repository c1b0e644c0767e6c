//! The committed seed corpora of `cot/fuzz`, through the same harnesses, on every test run.

use std::path::Path;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    super::seeds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz"), target).unwrap()
}

#[test]
fn framer_seeds_hold_the_invariants() {
    let seeds = seeds("framer");
    assert!(seeds.len() >= 15, "{} seeds", seeds.len());
    for (_, data) in seeds {
        super::framer(&data);
    }
}

#[test]
fn framer_differential_seeds_hold_the_invariants() {
    let seeds = seeds("framer_differential");
    assert!(seeds.len() >= 10, "{} seeds", seeds.len());
    for (_, data) in seeds {
        super::framer_differential(&data);
    }
}
