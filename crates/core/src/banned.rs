//! Banned passwords, matched the way Microsoft Entra Password Protection documents it:
//!
//! 1. Normalise: lower-case, then common substitutions (`0→o`, `1→l`, `$→s`, `@→a`, …).
//! 2. Fuzzy match: a password within edit distance 1 of a banned term is refused outright.
//! 3. Substring match of the user's own names (login, first, last and display name, email local
//!    part): found names count like banned terms.
//! 4. Score: each banned term (or name) found counts 1 point, each remaining character 1 point; a
//!    password needs 5 points.
use std::collections::HashMap;

/// Points a password needs to pass the banned-term score.
pub const DEFAULT_MIN_SCORE: u32 = 5;

/// The list shipped with the binary: common base words of weak passwords.
const GLOBAL: &str = include_str!("../data/banned-terms.txt");

/// Entra's substitutions (and the usual leetspeak beyond them).
fn substitute(c: char) -> char {
    match c {
        '0' => 'o',
        '1' | '!' | '|' => 'l',
        '$' | '5' => 's',
        '@' | '4' => 'a',
        '3' => 'e',
        '7' | '+' => 't',
        '8' => 'b',
        '9' | '6' => 'g',
        '2' => 'z',
        other => other,
    }
}

/// Lower-case with the substitutions applied.
pub fn normalize(password: &str) -> String {
    password.to_lowercase().chars().map(substitute).collect()
}

/// Is `a` within one insertion, deletion or substitution of `b`?
pub fn within_one_edit(a: &[char], b: &[char]) -> bool {
    let (short, long) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    match long.len() - short.len() {
        0 => short.iter().zip(long).filter(|(x, y)| x != y).count() <= 1,
        1 => {
            let i = short.iter().zip(long).take_while(|(x, y)| x == y).count();
            short[i..] == long[i + 1..]
        }
        _ => false,
    }
}

/// A list of banned terms, normalised like passwords.
#[derive(Clone, Debug, Default)]
pub struct BannedList {
    /// Terms by length in characters, for the fuzzy match.
    by_len: HashMap<usize, Vec<Vec<char>>>,
    /// Terms, longest first, for the substring score.
    terms: Vec<String>,
}

impl BannedList {
    /// From lines of text: one term per line, `#` comments and blank lines skipped, terms shorter than
    /// 4 characters ignored (Entra's minimum; shorter ones would ban half of every password).
    pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let mut terms: Vec<String> = lines
            .into_iter()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(normalize)
            .filter(|t| t.chars().count() >= 4)
            .collect();
        terms.sort_by(|a, b| b.chars().count().cmp(&a.chars().count()).then(a.cmp(b)));
        terms.dedup();
        let mut by_len: HashMap<usize, Vec<Vec<char>>> = HashMap::new();
        for t in &terms {
            let chars: Vec<char> = t.chars().collect();
            by_len.entry(chars.len()).or_default().push(chars);
        }
        Self { by_len, terms }
    }

    /// The list shipped with the binary.
    pub fn global() -> Self {
        Self::from_lines(GLOBAL.lines())
    }

    /// This list plus `other`'s terms.
    pub fn merged(&self, other: &BannedList) -> Self {
        Self::from_lines(self.terms.iter().chain(&other.terms).map(String::as_str))
    }

    pub fn len(&self) -> usize {
        self.terms.len()
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The banned term the whole (normalised) password is within one edit of, if any.
    pub fn fuzzy_match(&self, normalized: &str) -> Option<String> {
        let p: Vec<char> = normalized.chars().collect();
        let lens = [p.len().saturating_sub(1), p.len(), p.len() + 1];
        lens.iter()
            .filter_map(|l| self.by_len.get(l))
            .flatten()
            .find(|t| within_one_edit(&p, t))
            .map(|t| t.iter().collect())
    }

    /// Entra's score of a normalised password: banned terms and `names` found count one point each,
    /// every other character one point. Returns the score and the terms found.
    pub fn score(&self, normalized: &str, names: &[String]) -> (u32, Vec<String>) {
        let chars: Vec<char> = normalized.chars().collect();
        let mut covered = vec![false; chars.len()];
        let mut found = Vec::new();
        let mut names: Vec<&String> = names.iter().filter(|n| n.chars().count() >= 3).collect();
        names.sort_by_key(|n| std::cmp::Reverse(n.chars().count()));
        let candidates = names.into_iter().chain(self.terms.iter());
        for term in candidates {
            let t: Vec<char> = term.chars().collect();
            if t.is_empty() || t.len() > chars.len() {
                continue;
            }
            let mut i = 0;
            let mut hit = false;
            while i + t.len() <= chars.len() {
                if chars[i..i + t.len()] == t[..] && covered[i..i + t.len()].iter().all(|c| !c) {
                    covered[i..i + t.len()].iter_mut().for_each(|c| *c = true);
                    hit = true;
                    i += t.len();
                } else {
                    i += 1;
                }
            }
            if hit {
                found.push(term.clone());
            }
        }
        let rest = covered.iter().filter(|c| !**c).count();
        (u32::try_from(found.len() + rest).unwrap_or(u32::MAX), found)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    fn list(terms: &[&str]) -> BannedList {
        BannedList::from_lines(terms.iter().copied())
    }

    #[test]
    fn microsofts_published_examples() {
        // learn.microsoft.com, "Eliminate bad passwords using Microsoft Entra Password Protection":
        // custom banned "contoso", global "blank".
        let l = list(&["contoso", "blank"]);
        // "C0ntos0Blank12" → [contoso] + [blank] + [1] + [2] = 4 points: rejected.
        let (score, found) = l.score(&normalize("C0ntos0Blank12"), &[]);
        assert_eq!((score, found.len()), (4, 2));
        assert!(score < DEFAULT_MIN_SCORE);
        // "ContoS0Bl@nkf9!" → [contoso] + [blank] + [f] + [9] + [!] = 5 points: accepted.
        let (score, _) = l.score(&normalize("ContoS0Bl@nkf9!"), &[]);
        assert_eq!(score, 5);
        // Fuzzy: within one edit of a banned term.
        let l = list(&["abcdef"]);
        for p in ["abcdeg", "abcdefg", "abcde"] {
            assert!(l.fuzzy_match(p).is_some(), "{p}");
        }
        assert!(l.fuzzy_match("abcdxyz").is_none());
    }

    #[test]
    fn names_count_like_banned_terms() {
        let l = list(&[]);
        let (score, found) = l.score(&normalize("PollyPa55"), &["polly".into()]);
        assert_eq!(found, vec!["polly".to_owned()]);
        assert_eq!(score, 1 + 4);
    }

    #[test]
    fn edit_distance_one() {
        let c = |s: &str| s.chars().collect::<Vec<_>>();
        assert!(within_one_edit(&c("password"), &c("passw0rd")));
        assert!(within_one_edit(&c("password"), &c("passwords")));
        assert!(within_one_edit(&c("password"), &c("pasword")));
        assert!(!within_one_edit(&c("password"), &c("drowssap")));
        assert!(within_one_edit(&c(""), &c("a")));
    }

    #[test]
    fn the_global_list_is_loaded() {
        let g = BannedList::global();
        assert!(g.len() > 200, "{}", g.len());
        assert!(g.fuzzy_match(&normalize("P@ssw0rd")).is_some());
    }

    proptest! {
        #[test]
        fn never_panics(pw in "\\PC{0,80}", name in "\\PC{0,20}") {
            let g = BannedList::global();
            let n = normalize(&pw);
            let _ = g.fuzzy_match(&n);
            let _ = g.score(&n, &[normalize(&name)]);
        }

        /// A banned term written with any substitutions scores 1 point for itself.
        #[test]
        fn substitutions_do_not_hide_a_banned_term(mask in proptest::collection::vec(any::<bool>(), 8)) {
            let l = list(&["password"]);
            let leet: String = "password".chars().zip(mask).map(|(c, m)| match (c, m) {
                ('a', true) => '@', ('s', true) => '$', ('o', true) => '0', (c, true) => c.to_ascii_uppercase(), (c, false) => c,
            }).collect();
            let n = normalize(&leet);
            prop_assert!(l.fuzzy_match(&n).is_some());
            let (score, found) = l.score(&n, &[]);
            prop_assert_eq!(found.len(), 1);
            prop_assert_eq!(score, 1);
        }
    }
}
