//! Security questions: the catalogue, the rules a set of answers must follow, and answer hashing.
//!
//! Answers are compared in a normalised form ([`normalise_answer`]) and stored only as argon2id
//! hashes. Messages about answers name the question, never the answer.
use crate::ports::SecureRng;
use crate::types::ParseError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use std::collections::HashSet;
use unicode_normalization::UnicodeNormalization;

/// A question shipped with Gatehouse. The id is stable (answers are registered against it); the
/// text is English and may later be looked up per language by id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BuiltinQuestion {
    pub id: &'static str,
    pub text: &'static str,
}

const fn q(id: &'static str, text: &'static str) -> BuiltinQuestion {
    BuiltinQuestion { id, text }
}

/// Questions whose answers do not change over a life, are not on a public record or a social
/// profile, and have more than a handful of likely answers (so no mother's maiden name, place of
/// birth, favourite colour or first school).
pub const BUILTIN: &[BuiltinQuestion] = &[
    q(
        "q-first-street",
        "What was the name of the first street you lived on as a child?",
    ),
    q(
        "q-childhood-friend",
        "What was the first name of your best friend as a child?",
    ),
    q("q-first-teacher", "What was the surname of your first teacher?"),
    q(
        "q-first-concert",
        "Which band or singer did you see at your first concert?",
    ),
    q("q-first-album", "What was the first album you bought?"),
    q(
        "q-first-film-cinema",
        "What was the first film you saw at the cinema?",
    ),
    q("q-first-book", "What was the first book you read on your own?"),
    q("q-childhood-hero", "Who was your hero as a child?"),
    q(
        "q-childhood-dream-job",
        "What job did you want to do when you were a child?",
    ),
    q("q-childhood-toy", "What was your favourite toy as a child?"),
    q(
        "q-childhood-nickname",
        "What nickname did your family give you as a child?",
    ),
    q("q-first-boss", "What was the surname of your first boss?"),
    q(
        "q-first-job-town",
        "In which town or city did you have your first job?",
    ),
    q(
        "q-parents-meet-town",
        "In which town or city did your parents meet?",
    ),
    q("q-oldest-cousin", "What is the first name of your oldest cousin?"),
    q(
        "q-first-holiday-alone",
        "Where did you go on your first holiday without your parents?",
    ),
    q(
        "q-first-car-model",
        "What was the make and model of the first car you drove?",
    ),
    q(
        "q-first-sports-club",
        "What was the first sports club or team you joined?",
    ),
    q(
        "q-grandparents-street",
        "On which street did one of your grandparents live?",
    ),
    q(
        "q-first-cooked-meal",
        "What was the first meal you cooked for someone else?",
    ),
    q(
        "q-first-game",
        "What was the first video or board game you played a lot?",
    ),
];

/// The fewest and most answers a person registers.
pub const REGISTER_MIN: usize = 3;
pub const REGISTER_MAX: usize = 5;
/// Limits of a normalised answer, in characters.
pub const ANSWER_MIN: usize = 3;
pub const ANSWER_MAX: usize = 40;
const ID_MAX: usize = 64;
const TEXT_MAX: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Question {
    pub id: String,
    pub text: String,
}

/// The questions offered: the built-in ones (when enabled) and those the configuration adds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QuestionSet {
    questions: Vec<Question>,
}

impl QuestionSet {
    /// Checks the custom questions: ids of 1–64 characters `a-z`, `0-9`, `-`, unique (also against
    /// the built-in ids); texts non-empty, at most 200 characters, no control characters.
    pub fn new(builtin: bool, custom: Vec<(String, String)>) -> Result<Self, ParseError> {
        let err = |m: String| Err(ParseError::new("questions", m));
        let mut questions: Vec<Question> = Vec::new();
        if builtin {
            questions.extend(BUILTIN.iter().map(|b| Question {
                id: b.id.to_owned(),
                text: b.text.to_owned(),
            }));
        }
        for (id, text) in custom {
            let id = id.trim().to_owned();
            let text = text.trim().to_owned();
            let id_ok = !id.is_empty()
                && id.len() <= ID_MAX
                && id
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !id_ok {
                return err(format!(
                    "the question id \"{}\" must have 1 to {ID_MAX} characters among a-z, 0-9 and -",
                    id.chars().take(ID_MAX + 1).collect::<String>()
                ));
            }
            if questions.iter().any(|q| q.id == id) {
                return err(format!("the question id \"{id}\" is used twice"));
            }
            if text.is_empty() {
                return err(format!("the question \"{id}\" has no text"));
            }
            if text.chars().count() > TEXT_MAX {
                return err(format!(
                    "the question \"{id}\" has more than {TEXT_MAX} characters"
                ));
            }
            if text.chars().any(char::is_control) {
                return err(format!("the question \"{id}\" contains control characters"));
            }
            questions.push(Question { id, text });
        }
        if questions.is_empty() {
            return err("there are no security questions: enable the built-in ones or add some".into());
        }
        Ok(Self { questions })
    }

    pub fn get(&self, id: &str) -> Option<&Question> {
        self.questions.iter().find(|q| q.id == id)
    }

    pub fn all(&self) -> &[Question] {
        &self.questions
    }

    pub fn len(&self) -> usize {
        self.questions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }
}

/// The form answers are compared in: NFKC, lower case, trimmed, inner runs of white space made one
/// space. `"  Ｐａｒｉｓ   Nord "` becomes `"paris nord"`.
pub fn normalise_answer(raw: &str) -> String {
    // NFKC again after case folding: lower-casing can undo the normal form (İ → i + U+0307), and
    // a normalised answer must normalise to itself (found by fuzzing).
    let folded: String = raw.nfkc().collect::<String>().to_lowercase().nfkc().collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The words of 4 letters or more of a text, normalised.
fn long_words(text: &str) -> HashSet<String> {
    normalise_answer(text)
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().filter(|c| c.is_alphabetic()).count() >= 4)
        .map(str::to_owned)
        .collect()
}

/// Checks the answers a person registers and returns them normalised, as `(question id, answer)`
/// in the order given. Rules: exactly `register` answers (3 to 5), to known and different
/// questions; each answer 3–40 characters once normalised; no two answers alike; no answer uses a
/// word of 4 letters or more of its question, nor contains the login (when it has 3 characters or
/// more).
pub fn check_answers(
    set: &QuestionSet,
    answers: &[(String, String)],
    login: &str,
    register: usize,
) -> Result<Vec<(String, String)>, ParseError> {
    let err = |m: String| Err(ParseError::new("answers", m));
    if !(REGISTER_MIN..=REGISTER_MAX).contains(&register) {
        return err(format!(
            "the number of answers to register is {REGISTER_MIN} to {REGISTER_MAX}, not {register}"
        ));
    }
    if set.len() < register {
        return err(format!(
            "{register} answers are asked for but only {} questions exist",
            set.len()
        ));
    }
    if answers.len() != register {
        return err(format!("answer exactly {register} questions"));
    }
    let login = normalise_answer(login);
    let mut out: Vec<(String, String, &Question)> = Vec::with_capacity(answers.len());
    for (id, raw) in answers {
        let Some(question) = set.get(id.trim()) else {
            return err("one of the questions is not offered here; choose again".into());
        };
        if out.iter().any(|(other, _, _)| *other == question.id) {
            return err(format!("choose {register} different questions"));
        }
        let text = &question.text;
        // Bound the work before normalising (NFKC can only grow a string by a small factor).
        let answer = if raw.len() > ANSWER_MAX * 8 {
            None
        } else {
            Some(normalise_answer(raw))
        };
        let len = answer.as_ref().map_or(usize::MAX, |a| a.chars().count());
        let answer = match answer {
            Some(a) if (ANSWER_MIN..=ANSWER_MAX).contains(&len) => a,
            _ if len < ANSWER_MIN => {
                return err(format!(
                    "the answer to \"{text}\" is too short: it needs at least {ANSWER_MIN} characters"
                ))
            }
            _ => {
                return err(format!(
                    "the answer to \"{text}\" is too long: it has at most {ANSWER_MAX} characters"
                ))
            }
        };
        let question_words = long_words(text);
        if answer
            .split(|c: char| !c.is_alphanumeric())
            .any(|w| question_words.contains(w))
        {
            return err(format!("the answer to \"{text}\" repeats a word of the question"));
        }
        if login.chars().count() >= 3 && answer.contains(&login) {
            return err(format!("the answer to \"{text}\" contains your user name"));
        }
        if let Some((_, _, first)) = out.iter().find(|(_, a, _)| *a == answer) {
            return err(format!(
                "the answers to \"{}\" and \"{text}\" are the same; give each question its own answer",
                first.text
            ));
        }
        out.push((question.id.clone(), answer, question));
    }
    Ok(out.into_iter().map(|(id, answer, _)| (id, answer)).collect())
}

/// Hashing an answer failed: a fault of the program, not of the person.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("hashing a security answer failed: {0}")]
pub struct HashError(String);

/// argon2id at OWASP's minimum: 19 MiB, 2 passes, 1 lane.
fn argon2() -> Result<Argon2<'static>, HashError> {
    let params = Params::new(19 * 1024, 2, 1, None).map_err(|e| HashError(e.to_string()))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// The PHC string (`$argon2id$v=19$m=19456,t=2,p=1$…`) of a normalised answer, with a random
/// 16-byte salt.
pub fn hash_answer(normalised: &str, rng: &dyn SecureRng) -> Result<String, HashError> {
    let mut salt = [0u8; 16];
    rng.fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| HashError(e.to_string()))?;
    argon2()?
        .hash_password(normalised.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// True when `normalised` is the answer hashed in `phc` (parameters are read from the string).
/// A malformed string is a mismatch.
pub fn verify_answer(normalised: &str, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    Argon2::default()
        .verify_password(normalised.as_bytes(), &parsed)
        .is_ok()
}

/// `m` of the registered question ids, chosen at random and in random order; all of them (in
/// random order) when there are no more than `m`.
pub fn pick(rng: &dyn SecureRng, registered: &[String], m: usize) -> Vec<String> {
    let mut ids = registered.to_vec();
    let take = m.min(ids.len());
    // The first `take` steps of a Fisher–Yates shuffle.
    for i in 0..take {
        let left = u32::try_from(ids.len() - i).unwrap_or(u32::MAX);
        let j = i + rng.below(left) as usize;
        ids.swap(i, j);
    }
    ids.truncate(take);
    ids
}

impl QuestionSet {
    /// The built-in questions only (the default).
    pub fn builtin() -> Self {
        Self {
            questions: BUILTIN
                .iter()
                .map(|q| Question {
                    id: q.id.into(),
                    text: q.text.into(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SeededRng;
    use proptest::prelude::*;

    fn set() -> QuestionSet {
        QuestionSet::new(true, vec![]).unwrap()
    }

    fn answers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(q, a)| (q.to_string(), a.to_string()))
            .collect()
    }

    fn good() -> Vec<(String, String)> {
        answers(&[
            ("q-first-street", "Rue des Lilas"),
            ("q-childhood-friend", "Bérénice"),
            ("q-first-teacher", "Madame Rousseau"),
        ])
    }

    #[test]
    fn the_builtin_catalogue_is_well_formed() {
        assert!(BUILTIN.len() >= 20);
        let s = set();
        assert_eq!(s.len(), BUILTIN.len());
        let mut ids = HashSet::new();
        for b in BUILTIN {
            assert!(ids.insert(b.id), "{} twice", b.id);
            assert!(b.id.starts_with("q-"));
            assert!(b
                .id
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'));
            assert!(b.text.ends_with('?'));
            assert_eq!(s.get(b.id).map(|q| q.text.as_str()), Some(b.text));
        }
        assert!(!BUILTIN.iter().any(|b| b.text.to_lowercase().contains("maiden")));
    }

    #[test]
    fn custom_questions_are_validated() {
        let c = |id: &str, text: &str| vec![(id.to_string(), text.to_string())];
        let s = QuestionSet::new(false, c("pet-2", "What was your second pet called?")).unwrap();
        assert_eq!(s.all().len(), 1);
        assert_eq!(s.get("pet-2").unwrap().text, "What was your second pet called?");
        assert!(s.get("q-first-street").is_none());
        let both = QuestionSet::new(true, c(" house ", " Which house? ")).unwrap();
        assert_eq!(both.len(), BUILTIN.len() + 1);
        assert_eq!(both.get("house").unwrap().text, "Which house?");

        for (id, text, needle) in [
            ("", "Text?", "1 to 64"),
            ("Pet", "Text?", "1 to 64"),
            ("pet_2", "Text?", "1 to 64"),
            ("péché", "Text?", "1 to 64"),
            (&"a".repeat(65), "Text?", "1 to 64"),
            ("q-first-street", "Text?", "used twice"),
            ("pet", "   ", "no text"),
            ("pet", &"x".repeat(201), "more than 200"),
            ("pet", "What\u{7}?", "control"),
        ] {
            let e = QuestionSet::new(true, c(id, text)).unwrap_err();
            assert_eq!(e.field, "questions");
            assert!(e.message.contains(needle), "{id:?}: {e}");
        }
        assert!(QuestionSet::new(false, c(&"a".repeat(64), &"x".repeat(200))).is_ok());
        let twice = vec![
            ("a".to_string(), "A?".to_string()),
            ("a".to_string(), "B?".to_string()),
        ];
        assert!(QuestionSet::new(false, twice)
            .unwrap_err()
            .message
            .contains("twice"));
        assert!(QuestionSet::new(false, vec![]).is_err());
    }

    #[test]
    fn answers_are_normalised() {
        assert_eq!(normalise_answer("  Ｐａｒｉｓ   Nord "), "paris nord");
        assert_eq!(normalise_answer("Rue\tdes\n\u{3000}LILAS"), "rue des lilas");
        assert_eq!(normalise_answer("ÉCOLE"), "école");
        // Composed and decomposed accents are one answer.
        assert_eq!(normalise_answer("e\u{301}cole"), normalise_answer("\u{e9}cole"));
        assert_eq!(normalise_answer("ﬁsh"), "fish");
        assert_eq!(normalise_answer("   "), "");
    }

    #[test]
    fn good_answers_come_back_normalised_in_order() {
        let out = check_answers(&set(), &good(), "alice", 3).unwrap();
        assert_eq!(
            out,
            answers(&[
                ("q-first-street", "rue des lilas"),
                ("q-childhood-friend", "bérénice"),
                ("q-first-teacher", "madame rousseau"),
            ])
        );
    }

    #[test]
    fn the_number_of_answers_is_enforced() {
        let s = set();
        let mut four = good();
        four.push(("q-first-concert".into(), "Noir Désir".into()));
        assert!(check_answers(&s, &four, "alice", 4).is_ok());
        let e = check_answers(&s, &four, "alice", 3).unwrap_err();
        assert!(e.message.contains("exactly 3"), "{e}");
        let e = check_answers(&s, &good()[..2], "alice", 3).unwrap_err();
        assert!(e.message.contains("exactly 3"), "{e}");
        assert!(check_answers(&s, &good()[..2], "alice", 2).is_err());
        assert!(check_answers(&s, &[], "alice", 6).is_err());
        let small =
            QuestionSet::new(false, vec![("a".into(), "A?".into()), ("b".into(), "B?".into())]).unwrap();
        assert!(check_answers(&small, &good(), "alice", 3)
            .unwrap_err()
            .message
            .contains("only 2 questions"));
    }

    #[test]
    fn questions_must_be_known_and_different() {
        let s = set();
        let mut a = good();
        a[2].0 = "q-nope".into();
        assert!(check_answers(&s, &a, "alice", 3)
            .unwrap_err()
            .message
            .contains("not offered"));
        let mut a = good();
        a[2].0 = "q-first-street".into();
        assert!(check_answers(&s, &a, "alice", 3)
            .unwrap_err()
            .message
            .contains("different"));
    }

    #[test]
    fn answer_length_is_counted_after_normalising() {
        let s = set();
        let street = "What was the name of the first street you lived on as a child?";
        for (raw, ok) in [
            ("ab", false),
            ("  a   b  ", true),
            ("Ｌｙｏ", true),
            (&"z".repeat(40), true),
            (&"z".repeat(41), false),
            (&format!("   {}   ", "z".repeat(40)), true),
            (&"z".repeat(10_000), false),
        ] {
            let mut a = good();
            a[0].1 = raw.to_string();
            let r = check_answers(&s, &a, "alice", 3);
            assert_eq!(r.is_ok(), ok, "{raw:?}: {r:?}");
            if let Err(e) = r {
                assert!(e.message.contains(street), "{e}");
                assert!(!e.message.contains("zzz"));
            }
        }
    }

    #[test]
    fn answers_must_differ() {
        let mut a = good();
        a[2].1 = "  BÉRÉNICE ".into();
        let e = check_answers(&set(), &a, "alice", 3).unwrap_err();
        assert!(e.message.contains("first name of your best friend"), "{e}");
        assert!(e.message.contains("surname of your first teacher"), "{e}");
        assert!(!e.message.to_lowercase().contains("bérénice"));
    }

    #[test]
    fn answers_must_not_repeat_the_question() {
        let s = set();
        for (answer, refused) in [
            ("Main Street", true),
            ("my first one", true),
            ("STREET", true),
            ("street-42", true),
            ("Rue de la Paix", false),
            // Short question words ("the", "was", "you") and parts of words are allowed.
            ("the mainstreet", false),
        ] {
            let mut a = good();
            a[0].1 = answer.into();
            let r = check_answers(&s, &a, "alice", 3);
            assert_eq!(r.is_err(), refused, "{answer:?}: {r:?}");
            if let Err(e) = r {
                assert!(e.message.contains("repeats a word of the question"), "{e}");
                assert!(!e.message.contains(answer));
            }
        }
    }

    #[test]
    fn answers_must_not_contain_the_login() {
        let s = set();
        let mut a = good();
        a[1].1 = "Alice Martin".into();
        let e = check_answers(&s, &a, "  ALICE ", 3).unwrap_err();
        assert!(e.message.contains("user name"), "{e}");
        assert!(e.message.contains("best friend"), "{e}");
        // Logins under 3 characters are not looked for.
        a[1].1 = "Joel".into();
        assert!(check_answers(&s, &a, "jo", 3).is_ok());
        assert!(check_answers(&s, &a, "joe", 3).is_err());
    }

    #[test]
    fn answers_hash_and_verify() {
        let rng = SeededRng::new(3);
        let phc = hash_answer("rue des lilas", &rng).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_answer("rue des lilas", &phc));
        assert!(!verify_answer("rue des lilas ", &phc));
        assert!(!verify_answer("", &phc));
        assert!(!verify_answer("rue des lilas", "not a phc string"));
        assert!(!verify_answer("rue des lilas", ""));
        // Another salt, another string.
        assert_ne!(hash_answer("rue des lilas", &rng).unwrap(), phc);
    }

    #[test]
    fn pick_chooses_distinct_registered_ids() {
        let rng = SeededRng::new(11);
        let reg: Vec<String> = (0..5).map(|i| format!("q{i}")).collect();
        let mut seen = HashSet::new();
        for _ in 0..200 {
            let p = pick(&rng, &reg, 2);
            assert_eq!(p.len(), 2);
            assert_ne!(p[0], p[1]);
            assert!(p.iter().all(|id| reg.contains(id)));
            seen.insert(p[0].clone());
        }
        assert_eq!(seen.len(), 5, "every id gets picked first sometimes");
        let mut all = pick(&rng, &reg[..3], 5);
        all.sort();
        assert_eq!(all, reg[..3].to_vec());
        assert!(pick(&rng, &reg, 0).is_empty());
        assert!(pick(&rng, &[], 3).is_empty());
    }

    proptest! {
        #[test]
        fn checking_never_panics(
            raws in proptest::collection::vec("\\PC{0,60}", 0..6),
            ids in proptest::collection::vec(0usize..25, 0..6),
            login in "\\PC{0,10}",
            register in 0usize..8,
        ) {
            let s = set();
            let given: Vec<(String, String)> = raws
                .iter()
                .zip(ids.iter().chain(std::iter::repeat(&0)))
                .map(|(a, i)| (BUILTIN.get(*i).map_or("q-unknown", |b| b.id).to_string(), a.clone()))
                .collect();
            if let Ok(out) = check_answers(&s, &given, &login, register) {
                prop_assert_eq!(out.len(), register);
                for (_, a) in &out {
                    prop_assert_eq!(normalise_answer(a), a.clone());
                }
            }
        }

        #[test]
        fn normalising_is_idempotent_and_never_panics(s in "\\PC{0,80}") {
            let n = normalise_answer(&s);
            prop_assert_eq!(normalise_answer(&n), n.clone());
            prop_assert_eq!(n.trim(), n.as_str());
            prop_assert!(!n.contains("  "));
        }

        #[test]
        fn custom_sets_and_pick_never_panic(id in "\\PC{0,70}", text in "\\PC{0,210}", m in 0usize..8, seed in any::<u64>()) {
            let _ = QuestionSet::new(false, vec![(id, text)]);
            let reg: Vec<String> = (0..4).map(|i| format!("q{i}")).collect();
            let p = pick(&SeededRng::new(seed), &reg, m);
            prop_assert_eq!(p.len(), m.min(4));
        }
    }
}
