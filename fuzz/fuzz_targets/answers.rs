//! Security answers: normalisation and the registration rules, against the built-in questions.
//!
//! Properties: no panic; `normalise_answer` is idempotent, trimmed, lower-case, single-spaced;
//! `check_answers` returns exactly `register` answers, to distinct offered questions, in order,
//! each normalised and 3–40 characters, all different, none containing the login; re-checking what
//! it returned accepts it unchanged; a refusal never quotes an answer back.
#![no_main]

use gatehouse_core::questions::{
    check_answers, normalise_answer, QuestionSet, ANSWER_MAX, ANSWER_MIN, BUILTIN, REGISTER_MAX, REGISTER_MIN,
};
use libfuzzer_sys::fuzz_target;

/// The input, one field a line (so seeds are written by hand): how many answers to register (its
/// first byte, folded into 3..=5), the login, then one `question=answer` a line. A question given
/// as a number is that built-in question, with `+` before it the same with white space around its
/// id; anything else is taken as the id.
struct Input {
    register: usize,
    login: String,
    answers: Vec<(String, String)>,
}

impl Input {
    fn read(s: &str) -> Self {
        let mut lines = s.split('\n');
        let register = lines.next().and_then(|l| l.bytes().next()).unwrap_or(0);
        let register = REGISTER_MIN + usize::from(register) % (REGISTER_MAX - REGISTER_MIN + 1);
        let login = lines.next().unwrap_or("").to_owned();
        let builtin = |n: &str| n.parse::<usize>().ok().map(|i| BUILTIN[i % BUILTIN.len()].id);
        let answers = lines
            .take(8)
            .map(|l| {
                let (q, a) = l.split_once('=').unwrap_or((l, ""));
                let id = match (builtin(q), q.strip_prefix('+').and_then(builtin)) {
                    (Some(id), _) => id.to_owned(),
                    (None, Some(id)) => format!(" \t{id} "),
                    (None, None) => q.to_owned(),
                };
                (id, a.to_owned())
            })
            .collect();
        Self {
            register,
            login,
            answers,
        }
    }
}

fn normalise_checks(raw: &str) -> String {
    let n = normalise_answer(raw);
    assert_eq!(normalise_answer(&n), n, "normalise is not idempotent on {raw:?}");
    assert_eq!(n.trim(), n);
    assert!(!n.contains("  "));
    assert!(!n.chars().any(|c| c.is_whitespace() && c != ' '), "{n:?}");
    assert_eq!(n.to_lowercase(), n, "{n:?}");
    n
}

/// Characters that the fixed parts of the error messages are made of. An answer with any other
/// character must not appear in a message once the question texts are taken out of it.
fn only_template_chars(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || " \"'.,:;?-".contains(c))
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    normalise_checks(&text);
    let input = Input::read(&text);
    let set = QuestionSet::builtin();
    let register = input.register;
    let answers = input.answers;
    for (_, a) in &answers {
        normalise_checks(a);
    }

    let result = check_answers(&set, &answers, &input.login, register);
    match &result {
        Ok(out) => {
            assert_eq!(out.len(), register);
            assert_eq!(answers.len(), register);
            let login = normalise_answer(&input.login);
            for (i, (id, answer)) in out.iter().enumerate() {
                assert_eq!(id, answers[i].0.trim(), "order and ids are kept");
                assert!(set.get(id).is_some());
                assert!(
                    out[..i].iter().all(|(other, _)| other != id),
                    "questions are distinct"
                );
                assert!(
                    out[..i].iter().all(|(_, other)| other != answer),
                    "answers are distinct"
                );
                assert_eq!(&normalise_answer(&answers[i].1), answer);
                let len = answer.chars().count();
                assert!((ANSWER_MIN..=ANSWER_MAX).contains(&len), "{len} chars");
                if login.chars().count() >= 3 {
                    assert!(!answer.contains(&login));
                }
            }
            // What was accepted, once normalised, is accepted again unchanged.
            let again = check_answers(&set, out, &input.login, register);
            assert_eq!(again.as_ref(), Ok(out));
        }
        Err(e) => {
            assert_eq!(e.field, "answers");
            assert!(!e.message.is_empty());
            let mut rest = e.message.clone();
            for q in set.all() {
                rest = rest.replace(&q.text, "");
            }
            for (_, a) in &answers {
                let n = normalise_answer(a);
                for shown in [a.trim(), n.as_str()] {
                    if shown.chars().count() >= 3 && !only_template_chars(shown) {
                        assert!(
                            !rest.contains(shown),
                            "the message quotes an answer: {}",
                            e.message
                        );
                    }
                }
            }
        }
    }

    // Out-of-range `register` values are refused, never a panic.
    for bad in [0, REGISTER_MIN - 1, REGISTER_MAX + 1, usize::MAX] {
        assert!(check_answers(&set, &answers, &input.login, bad).is_err());
    }
});
