//! CoT type classes: a closed label set for metrics.

use std::fmt;

const CLASS_FIRST: &[u8; 6] = b"abctuy";
const CLASS_COUNT: usize = CLASS_FIRST.len() * 26;
const CLASS_LABEL_BYTES: [u8; CLASS_COUNT * 3] = {
    let mut out = [0u8; CLASS_COUNT * 3];
    let mut i = 0;
    while i < CLASS_COUNT {
        out[i * 3] = CLASS_FIRST[i / 26];
        out[i * 3 + 1] = b'-';
        out[i * 3 + 2] = b'a' + (i % 26) as u8;
        i += 1;
    }
    out
};
// Labels are sliced out of one static string so that `as_str` hands out `&'static str`
// without a hand-written table of 156 literals.
const CLASS_LABELS: &str = match std::str::from_utf8(&CLASS_LABEL_BYTES) {
    Ok(labels) => labels,
    Err(_) => "",
};

/// The first two atoms of a CoT `type` (`a-f-G-U-C` → `a-f`), from a closed set of 157 values
/// so it can be a Prometheus label: the first atom is one of `a b c t u y` and the second a
/// single lowercase ASCII letter, anything else is `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CotClass(u8);

impl CotClass {
    pub const OTHER: Self = Self(0);

    pub fn from_type(cot_type: &str) -> Self {
        let t = cot_type.as_bytes();
        let (Some(&first), Some(&b'-'), Some(&second)) = (t.first(), t.get(1), t.get(2)) else {
            return Self::OTHER;
        };
        if !matches!(t.get(3), None | Some(b'-')) || !second.is_ascii_lowercase() {
            return Self::OTHER;
        }
        let Some(row) = CLASS_FIRST.iter().position(|&f| f == first) else {
            return Self::OTHER;
        };
        let index = row * 26 + usize::from(second - b'a');
        u8::try_from(index + 1).map_or(Self::OTHER, Self)
    }

    pub fn as_str(self) -> &'static str {
        match usize::from(self.0).checked_sub(1) {
            Some(i) => CLASS_LABELS.get(i * 3..i * 3 + 3).unwrap_or("other"),
            None => "other",
        }
    }

    /// An atom (`a-…`): a thing on the map and where it is. Most of CoT, and each report
    /// superseded by the same device's next one.
    pub fn is_atom(self) -> bool {
        // Row 0 of `CLASS_FIRST` is `a`; index 0 is `other`.
        (1..=26).contains(&self.0)
    }

    /// Every class, `other` first: for registering metric series up front.
    pub fn all() -> impl Iterator<Item = Self> {
        (0..=CLASS_COUNT as u8).map(Self)
    }
}

impl fmt::Display for CotClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::CotClass;

    #[test]
    fn atoms_are_the_a_types_and_nothing_else() {
        for t in ["a-f-G-U-C", "a-h-A", "a-z"] {
            assert!(CotClass::from_type(t).is_atom(), "{t}");
        }
        for t in ["b-t-f", "t-x-c-t", "y-a", "u-d-p"] {
            assert!(!CotClass::from_type(t).is_atom(), "{t}");
        }
        assert!(!CotClass::OTHER.is_atom());
    }
}
