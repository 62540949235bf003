//! Decoy flows: what an unknown, disabled, unregistered, out-of-scope or reported login is shown
//! instead of a real flow, and the work a proof on one costs.
//!
//! A decoy must not stand out from the real flows of the same deployment, so its methods are drawn
//! from the population: the store counts how many users have registered each combination of verified
//! methods (kinds in registration order, and how many security questions), and a login's decoy takes
//! the combination found at the point of the cumulative distribution its keyed hash falls on. The same
//! login always gets the same combination while the population stays put (a new registration only
//! moves the boundaries a little, so few decoys change, as few real users' methods change); over many
//! logins the decoys are spread like the real users. Proving a decoy method costs what a wrong proof of
//! a real one does: the same store read, an authenticator check against a key nobody has, argon2id
//! checks of typed answers against a hash of nothing anyone knows.
use super::Gatehouse;
use super::Proof;
use crate::error::ServiceError;
use crate::flow::{Flow, FlowError, FlowMethod, FlowTarget};
use crate::policy::Policy;
use crate::ports::MethodShape;
use crate::questions;
use crate::totp;
use crate::types::{Email, Login, MethodId, MethodKind};
use std::sync::{Arc, PoisonError};
use time::OffsetDateTime;

/// Consumer mail providers for decoy email hints, with their top-level domains.
const DECOY_PROVIDERS: [(&str, &str); 8] = [
    ("gmail", "com"),
    ("outlook", "com"),
    ("yahoo", "com"),
    ("proton", "me"),
    ("icloud", "com"),
    ("gmx", "net"),
    ("hotmail", "com"),
    ("web", "de"),
];

/// The population's combinations of methods, as last read from the store.
#[derive(Debug, Default)]
pub(super) struct DecoyShapes {
    shapes: Vec<MethodShape>,
    total: u64,
}

impl DecoyShapes {
    /// The combination at the fraction `u / 2^64` of the cumulative distribution.
    fn at(&self, u: u64) -> Option<&[(MethodKind, u8)]> {
        let point = u64::try_from((u128::from(u) * u128::from(self.total)) >> 64).ok()?;
        let mut below = 0u64;
        self.shapes.iter().find_map(|s| {
            below += s.users;
            (point < below).then_some(s.kinds.as_slice())
        })
    }
}

impl Gatehouse {
    /// Re-reads which combinations of methods users have registered (at start, then with the
    /// housekeeping every ten minutes).
    pub async fn refresh_decoy_shapes(&self) -> Result<(), ServiceError> {
        let shapes = self.store.method_shapes().await?;
        let total = shapes.iter().map(|s| s.users).sum();
        *self.shapes.write().unwrap_or_else(PoisonError::into_inner) =
            Arc::new(DecoyShapes { shapes, total });
        Ok(())
    }

    /// The decoy's methods: the population's combination for this login, as the policy would offer
    /// it; or, when there is none that the policy would show (nobody registered yet), as many
    /// methods as it requires of the kind most of its users have.
    pub(super) fn decoy_methods(&self, login: &Login, policy: &Policy) -> Vec<FlowMethod> {
        let shapes = Arc::clone(&self.shapes.read().unwrap_or_else(PoisonError::into_inner));
        let point = self.key.derive("decoy-shape", login.as_str());
        let mut u = [0u8; 8];
        u.copy_from_slice(&point[..8]);
        let offered = |k: MethodKind| policy.allows_method(k) && self.can_deliver(k);
        let mut kinds: Vec<(MethodKind, u8)> = shapes
            .at(u64::from_be_bytes(u))
            .unwrap_or_default()
            .iter()
            .copied()
            .filter(|(k, _)| offered(*k))
            .collect();
        let required = usize::from(policy.reset_required.max(1));
        if kinds.len() < required {
            let usual = policy
                .methods
                .iter()
                .copied()
                .find(|k| k.sends_code() && self.can_deliver(*k))
                .unwrap_or(MethodKind::Email);
            kinds = vec![(usual, 0); required];
        }
        kinds
            .iter()
            .enumerate()
            .map(|(i, &(kind, answers))| self.decoy_method(login, i, kind, answers, policy))
            .collect()
    }

    fn decoy_method(
        &self,
        login: &Login,
        i: usize,
        kind: MethodKind,
        answers: u8,
        policy: &Policy,
    ) -> FlowMethod {
        let b = self.key.derive("decoy-method", &format!("{i}:{login}"));
        let (hint, target) = match kind {
            MethodKind::Email => {
                let (provider, tld) = DECOY_PROVIDERS[usize::from(b[11]) % DECOY_PROVIDERS.len()];
                let letter = char::from(b'a' + b[10] % 26);
                let first = provider.chars().next().unwrap_or('m');
                // A made-up address in a reserved domain that never receives mail (RFC 2606), so a
                // decoy flow is stored and read like a genuine one; `genuine` keeps it from use.
                let nowhere = format!("{letter}{}@{provider}.invalid", hex::encode(&b[12..16]));
                (
                    format!("{letter}•••@{first}•••.{tld}"),
                    Email::parse(&nowhere).ok().map(FlowTarget::Email),
                )
            }
            MethodKind::Sms | MethodKind::Voice => (
                crate::phone::decoy_hint(&self.settings.default_region, b[13]),
                None,
            ),
            MethodKind::Totp => (kind.label().to_owned(), Some(FlowTarget::Totp)),
            MethodKind::Questions => {
                // The questions this login "registered": a fixed choice among the catalogue, of
                // which each flow asks a random few, as for a real user.
                let mut all: Vec<(&str, [u8; 32])> = self
                    .settings
                    .questions
                    .all()
                    .iter()
                    .map(|q| {
                        (
                            q.id.as_str(),
                            self.key.derive("decoy-question", &format!("{login}:{}", q.id)),
                        )
                    })
                    .collect();
                all.sort_by_key(|(_, rank)| *rank);
                let registered: Vec<String> = all
                    .iter()
                    .take(usize::from(answers).clamp(questions::REGISTER_MIN, questions::REGISTER_MAX))
                    .map(|(id, _)| (*id).to_owned())
                    .collect();
                (
                    format!("{} ({})", kind.label(), registered.len()),
                    Some(FlowTarget::Questions(questions::pick(
                        self.rng.as_ref(),
                        &registered,
                        usize::from(policy.questions_asked),
                    ))),
                )
            }
        };
        FlowMethod {
            id: MethodId::from_bytes(&b[..10]),
            kind,
            hint,
            target,
        }
    }

    /// A proof on a decoy's authenticator app or security questions: the steps of a wrong proof of a
    /// real one (the same store read; a code checked against a key nobody has; every typed answer
    /// checked with argon2id against the hash of a random string), and never a success.
    pub(super) async fn prove_decoy(
        &self,
        flow: &Flow,
        method: &MethodId,
        target: &FlowTarget,
        proof: Proof<'_>,
        now: OffsetDateTime,
    ) -> Result<Result<(), FlowError>, ServiceError> {
        if let Err(e) = flow.can_prove(method, now) {
            return Ok(Err(e));
        }
        let stored = self.stored_method(&flow.login, method).await?;
        match (target, proof) {
            (FlowTarget::Totp, Proof::Code(code)) => {
                let key = self.key.derive("decoy-totp", flow.login.as_str());
                if let Ok(secret) = totp::TotpSecret::from_bytes(&key[..totp::TotpSecret::BYTES]) {
                    std::hint::black_box(totp::verify(&secret, code, now, None));
                }
            }
            (FlowTarget::Questions(asked), Proof::Answers(given)) => {
                let nothing = self.dummy_answer_hash();
                for q in asked {
                    if let Some((_, typed)) = given.iter().find(|(id, _)| id == q) {
                        let typed = questions::normalise_answer(typed);
                        std::hint::black_box(questions::verify_answer(&typed, &nothing));
                    }
                }
            }
            _ => {}
        }
        std::hint::black_box(stored);
        Ok(Err(FlowError::InvalidCode))
    }

    /// An argon2id hash, with the answers' parameters, of a random string nobody knows.
    fn dummy_answer_hash(&self) -> String {
        self.dummy_answer
            .get_or_init(|| {
                let mut raw = [0u8; 16];
                self.rng.fill(&mut raw);
                questions::hash_answer(&hex::encode(raw), self.rng.as_ref()).unwrap_or_default()
            })
            .clone()
    }
}
