//! The committed seed corpora of `cot/fuzz`, through the same harnesses, on every test run.

use std::path::Path;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("seed-"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    out.sort();
    out
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
