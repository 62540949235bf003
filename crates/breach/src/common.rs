//! The built-in list of the most common passwords (`data/common-passwords.txt`, compiled in), so
//! that a default install rejects the worst passwords without downloading any corpus.

use std::collections::HashSet;
use std::sync::OnceLock;

/// The list as shipped: one lower-case password per line, most common first.
pub const COMMON_PASSWORDS: &str = include_str!("../data/common-passwords.txt");

fn set() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        COMMON_PASSWORDS
            .lines()
            .map(str::trim_end)
            .filter(|l| !l.is_empty())
            .collect()
    })
}

/// True if `password` is on the built-in common-password list, ignoring case
/// ("Password" and "PASSWORD" match "password"); otherwise an exact match (no trimming).
pub fn builtin_common_contains(password: &str) -> bool {
    let set = set();
    if set.contains(password) {
        return true;
    }
    if !password.chars().any(char::is_uppercase) {
        return false;
    }
    set.contains(password.to_lowercase().as_str())
}

/// Number of passwords on the built-in list.
pub fn builtin_common_len() -> usize {
    set().len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_is_lower_case_unique_and_large() {
        let lines: Vec<&str> = COMMON_PASSWORDS.lines().collect();
        assert!(lines.len() >= 1_000, "{} entries", lines.len());
        assert_eq!(builtin_common_len(), lines.len(), "duplicates in the list");
        for l in &lines {
            assert_eq!(*l, l.to_lowercase());
            assert!(!l.is_empty() && !l.contains(char::is_whitespace), "{l:?}");
        }
    }
}
