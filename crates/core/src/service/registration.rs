//! Registration of verification methods (by the signed-in user) and the helpdesk's tools: contact
//! data, clearing methods, registration state, recovery and onboarding links.
use super::*;

/// A method the user asks to register.
#[derive(Clone, Copy, Debug)]
pub enum NewMethod<'a> {
    Email(&'a str),
    /// A phone number for SMS or voice codes (`kind` is Sms or Voice).
    Phone {
        kind: MethodKind,
        number: &'a str,
    },
    Totp,
    /// (question id, answer as typed).
    Questions(&'a [(String, String)]),
}

/// A method just registered: authenticator apps come with their enrolment URI and QR code.
#[derive(Clone, Debug)]
pub struct Registered {
    pub method: Method,
    pub otpauth_uri: Option<String>,
    pub qr_svg: Option<String>,
}

/// A user's registration state under their policy.
#[derive(Clone, Debug)]
pub struct Registration {
    pub login: Login,
    pub policy: String,
    pub methods: Vec<Method>,
    pub allowed: Vec<MethodKind>,
    pub flows: Vec<SelfService>,
    pub reset_required: u8,
    pub register_required: u8,
    pub verified: usize,
    /// Fewer verified methods than the policy asks for, and the policy sends such users to register.
    pub registration_required: bool,
    /// The methods were last confirmed longer ago than the policy's re-confirmation interval.
    pub reconfirm_due: bool,
    pub questions_register: u8,
    /// Flagged for the helpdesk ("this wasn't me"): self-service is off until cleared.
    pub flagged: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkKind {
    /// A new hire's first password.
    Onboarding,
    /// The helpdesk sends a reset link instead of handing out a password.
    Recovery,
}

impl Gatehouse {
    /// Whether codes for `kind` can be delivered (texts and calls need a provider offering them).
    pub(super) fn can_deliver(&self, kind: MethodKind) -> bool {
        let channel = match kind {
            MethodKind::Sms => PhoneChannel::Sms,
            MethodKind::Voice => PhoneChannel::Voice,
            _ => return true,
        };
        self.phone
            .as_ref()
            .is_some_and(|p| p.channels().contains(&channel))
    }

    /// The policy of a login as the directory knows it now (the default for an unknown one).
    async fn policy_of(&self, login: &Login) -> Result<Policy, ServiceError> {
        Ok(match self.directory.find_account(login).await? {
            Some(a) => self.policy_for(&a),
            None => self.settings.policies.default.clone(),
        })
    }

    pub fn question_set(&self) -> &QuestionSet {
        &self.settings.questions
    }

    /// How many security questions the user (or, signed out, the default policy) registers.
    pub async fn questions_to_register(&self, ctx: Option<&SessionCtx>) -> Result<u8, ServiceError> {
        Ok(match ctx {
            Some(c) => self.policy_of(&c.login).await?.questions_registered,
            None => self.settings.policies.default.questions_registered,
        })
    }

    pub async fn registration(&self, ctx: &SessionCtx) -> Result<Registration, ServiceError> {
        self.registration_of(&ctx.login).await
    }

    /// The canonical login of an account the helpdesk names (any login attribute); unknown: 404.
    async fn resolve(&self, login: &Login) -> Result<Login, ServiceError> {
        match self.directory.find_account(login).await? {
            Some(a) => Ok(a.login),
            None => Err(ServiceError::NotFound),
        }
    }

    /// Registration state of any user (helpdesk).
    pub async fn registration_of(&self, login: &Login) -> Result<Registration, ServiceError> {
        let login = &self.resolve(login).await?;
        let policy = self.policy_of(login).await?;
        let methods = self.store.methods(login).await?;
        let counted: Vec<&Method> = methods
            .iter()
            .filter(|m| m.verified && policy.allows_method(m.kind))
            .collect();
        let now = self.clock.now();
        let reconfirm_due = policy.reconfirm_days > 0
            && counted.iter().any(|m| {
                m.confirmed_at
                    .is_none_or(|at| now - at >= Duration::days(i64::from(policy.reconfirm_days)))
            });
        let mut allowed = policy.methods.clone();
        allowed.retain(|k| self.can_deliver(*k));
        Ok(Registration {
            login: login.clone(),
            policy: policy.name.clone(),
            verified: counted.len(),
            registration_required: policy.registration_required
                && policy.allows(SelfService::Reset)
                && counted.len() < usize::from(policy.register_required),
            reconfirm_due,
            methods,
            allowed,
            flows: SelfService::ALL
                .into_iter()
                .filter(|f| policy.allows(*f))
                .collect(),
            reset_required: policy.reset_required,
            register_required: policy.register_required,
            questions_register: policy.questions_registered,
            flagged: self.store.flag(login).await?,
        })
    }

    /// The user confirms their methods are still current (re-confirmation).
    pub async fn reconfirm(&self, ctx: &SessionCtx, meta: &RequestMeta) -> Result<(), ServiceError> {
        let e = self.event(Activity::MethodsReconfirmed, Some(&ctx.login), meta);
        self.store
            .reconfirm_methods(&ctx.login, self.clock.now(), Changes::audit(e))
            .await?;
        Ok(())
    }

    /// Registers a method. Email and phone get a code and count once verified; an authenticator app
    /// counts once a first code from it is verified; security questions count at once.
    pub async fn add_method(
        &self,
        ctx: &SessionCtx,
        new: NewMethod<'_>,
        meta: &RequestMeta,
    ) -> Result<Registered, ServiceError> {
        let policy = self.policy_of(&ctx.login).await?;
        let kind = match new {
            NewMethod::Email(_) => MethodKind::Email,
            NewMethod::Phone { kind, .. } if kind.is_phone() => kind,
            NewMethod::Phone { .. } => {
                return Err(ParseError::new("type", "a phone is \"sms\" or \"voice\"").into())
            }
            NewMethod::Totp => MethodKind::Totp,
            NewMethod::Questions(_) => MethodKind::Questions,
        };
        if !policy.allows_method(kind) {
            return Err(ServiceError::NotAllowed("this kind of method for your account"));
        }
        if !self.can_deliver(kind) {
            return Err(ServiceError::NotAllowed(
                "this kind of method here: the text-message provider cannot deliver it",
            ));
        }
        let target = match new {
            NewMethod::Email(raw) => Target::Email(Email::parse(raw)?),
            NewMethod::Phone { number, .. } => {
                Target::Phone(Phone::parse(number, &self.settings.default_region)?)
            }
            NewMethod::Totp => Target::Totp {
                secret: totp::TotpSecret::generate(self.rng.as_ref()).as_bytes().to_vec(),
                last_step: None,
            },
            NewMethod::Questions(answers) => {
                let checked = questions::check_answers(
                    &self.settings.questions,
                    answers,
                    ctx.login.as_str(),
                    usize::from(policy.questions_registered),
                )?;
                let mut stored = Vec::with_capacity(checked.len());
                for (question, normalised) in checked {
                    let hash = questions::hash_answer(&normalised, self.rng.as_ref())
                        .map_err(|e| ServiceError::Internal(e.to_string()))?;
                    stored.push(StoredAnswer { question, hash });
                }
                Target::Questions(stored)
            }
        };
        let mut existing = self.store.methods(&ctx.login).await?;
        // The same address or number again, or a second app / question set: an unverified one is
        // started over; a verified one must be removed first (questions are simply replaced).
        let same: Vec<Method> = existing
            .iter()
            .filter(|m| {
                m.kind == kind
                    && match (m.target.address(), target.address()) {
                        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
                        _ => true,
                    }
            })
            .cloned()
            .collect();
        for m in same {
            if m.verified && kind != MethodKind::Questions {
                let what = match kind {
                    MethodKind::Totp => "an authenticator app is already registered; remove it first",
                    _ => "this address or number is already registered",
                };
                return Err(ParseError::new("type", what).into());
            }
            self.store
                .remove_method(&ctx.login, &m.id, Changes::default())
                .await?;
            existing.retain(|x| x.id != m.id);
        }
        if existing.len() >= self.settings.max_methods {
            return Err(ParseError::new(
                "type",
                format!(
                    "at most {} methods can be registered; remove one first",
                    self.settings.max_methods
                ),
            )
            .into());
        }
        let now = self.clock.now();
        let instant = kind == MethodKind::Questions;
        let method = Method {
            id: self.new_method_id(),
            login: ctx.login.clone(),
            kind,
            target,
            verified: instant,
            source: "user".into(),
            created_at: now,
            confirmed_at: instant.then_some(now),
        };
        let mut e = self.event(Activity::MethodRegistered, Some(&ctx.login), meta);
        e.method = Some(kind);
        let mut changes = Changes::audit(e);
        if let Some(address) = method.target.address() {
            if let Some(reason) = self.destination_full(address, now).await? {
                return Err(self.blocked(Some(&ctx.login), reason, meta).await);
            }
            changes.hits.push((throttle::destination_key(address), now));
        }
        let code = OtpCode::generate(self.rng.as_ref(), policy.code_digits);
        let pending = kind.sends_code().then(|| MethodCode {
            hash: self.key.code_hash(method.id.as_str(), &code),
            expires_at: now + policy.code_lifetime,
        });
        let minutes = policy.code_lifetime.whole_minutes();
        let mut phone_out = None;
        match &method.target {
            Target::Email(to) => changes.mail.push(messages::code(
                &self.settings.branding,
                to,
                code.expose_secret(),
                minutes,
                "confirm this address for password reset",
            )),
            Target::Phone(number) => {
                phone_out = Some(self.phone_message(kind, number, &code, minutes));
            }
            _ => {}
        }
        self.store
            .insert_method(&method, pending.as_ref(), changes)
            .await?;
        if let Some(message) = phone_out {
            if let Err(e) = self.send_phone(&message, meta).await {
                self.store
                    .remove_method(&ctx.login, &method.id, Changes::default())
                    .await?;
                return Err(e);
            }
        }
        let (otpauth_uri, qr_svg) = match &method.target {
            Target::Totp { secret, .. } => {
                let secret = totp::TotpSecret::from_bytes(secret)?;
                let uri =
                    totp::otpauth_uri(&secret, &self.settings.branding.organisation, ctx.login.as_str());
                let svg = totp::qr_svg(&uri);
                (Some(uri), svg)
            }
            _ => (None, None),
        };
        Ok(Registered {
            method,
            otpauth_uri,
            qr_svg,
        })
    }

    /// Verifies a newly registered method with the code it received (or, for an authenticator
    /// app, a first code it shows).
    pub async fn verify_method(
        &self,
        ctx: &SessionCtx,
        id: &str,
        code: &str,
        meta: &RequestMeta,
    ) -> Result<(), ServiceError> {
        let id = MethodId::parse(id).map_err(|_| ServiceError::NotFound)?;
        let policy = self.policy_of(&ctx.login).await?;
        let Some(method) = self
            .store
            .methods(&ctx.login)
            .await?
            .into_iter()
            .find(|m| m.id == id)
        else {
            return Err(ServiceError::NotFound);
        };
        let mut ok = self.event(Activity::MethodVerified, Some(&ctx.login), meta);
        ok.method = Some(method.kind);
        let mut failed = ok.clone();
        let now = self.clock.now();
        let mut on_success = Changes::audit(ok.clone());
        if method.kind.is_phone() {
            on_success.hits.push((throttle::PHONE_VERIFIED.to_owned(), now));
        }
        failed.result = Outcome::Failure;
        failed.reason = Some("invalid_code".into());
        if let Target::Totp { secret, .. } = &method.target {
            let key = format!("register:{}", method.id);
            let failures = self
                .store
                .failures(&key, now - self.settings.attempt_window)
                .await?;
            if failures >= policy.code_attempts {
                return Err(ServiceError::TooManyAttempts);
            }
            let secret = totp::TotpSecret::from_bytes(secret)?;
            let verified = match totp::verify(&secret, code, now, None) {
                Some(step) => {
                    self.store
                        .mark_verified(&ctx.login, &id, now, Some(step), Changes::audit(ok))
                        .await?
                }
                None => false,
            };
            if verified {
                return Ok(());
            }
            let mut changes = Changes::audit(failed);
            changes.failure = Some(FailureOp::Increment { key, at: now });
            self.store.record(changes).await?;
            return Err(FlowError::InvalidCode.into());
        }
        let typed = match OtpCode::parse(code) {
            Ok(c) => self.key.code_hash(id.as_str(), &c),
            Err(_) => TokenHash([0; 32]),
        };
        match self
            .store
            .verify_method(
                MethodCheck {
                    login: &ctx.login,
                    id: &id,
                    code: &typed,
                    now,
                    max_attempts: policy.code_attempts,
                },
                on_success,
                Changes::audit(failed),
            )
            .await?
        {
            MethodVerification::Verified => Ok(()),
            MethodVerification::WrongCode => Err(FlowError::InvalidCode.into()),
            MethodVerification::Expired => Err(FlowError::CodeExpired.into()),
            MethodVerification::TooManyAttempts => Err(ServiceError::TooManyAttempts),
            MethodVerification::NotFound => Err(ServiceError::NotFound),
        }
    }

    pub async fn remove_method(
        &self,
        ctx: &SessionCtx,
        id: &str,
        meta: &RequestMeta,
    ) -> Result<(), ServiceError> {
        let id = MethodId::parse(id).map_err(|_| ServiceError::NotFound)?;
        let methods = self.store.methods(&ctx.login).await?;
        let Some(m) = methods.into_iter().find(|m| m.id == id) else {
            return Err(ServiceError::NotFound);
        };
        let mut e = self.event(Activity::MethodRemoved, Some(&ctx.login), meta);
        e.method = Some(m.kind);
        let mut changes = Changes::audit(e);
        if let (true, Some(address)) = (m.verified, m.email()) {
            changes.mail.push(messages::notification(
                &self.settings.branding,
                address,
                ctx.login.as_str(),
                "this address was removed from your password reset methods",
            ));
        }
        if self.store.remove_method(&ctx.login, &id, changes).await? {
            Ok(())
        } else {
            Err(ServiceError::NotFound)
        }
    }

    /// Helpdesk: sets a user's personal email and/or mobile number as verified methods (the helpdesk
    /// vouches for them; the user is told at the address).
    pub async fn admin_set_contact(
        &self,
        login: &Login,
        email: Option<&str>,
        phone: Option<&str>,
        actor: &str,
    ) -> Result<Registration, ServiceError> {
        let login = &self.resolve(login).await?;
        let mut targets = vec![];
        if let Some(e) = email {
            targets.push((MethodKind::Email, Target::Email(Email::parse(e)?)));
        }
        if let Some(p) = phone {
            targets.push((
                MethodKind::Sms,
                Target::Phone(Phone::parse(p, &self.settings.default_region)?),
            ));
        }
        if targets.is_empty() {
            return Err(ParseError::new("email", "give an email address, a phone number or both").into());
        }
        let existing = self.store.methods(login).await?;
        let now = self.clock.now();
        for (kind, target) in targets {
            for m in existing
                .iter()
                .filter(|m| m.kind == kind && m.source == "helpdesk")
            {
                self.store.remove_method(login, &m.id, Changes::default()).await?;
            }
            let mut e = self.event(Activity::MethodRegistered, Some(login), &RequestMeta::default());
            e.actor = actor.to_owned();
            e.method = Some(kind);
            let mut changes = Changes::audit(e);
            if let Target::Email(to) = &target {
                changes.mail.push(messages::notification(
                    &self.settings.branding,
                    to,
                    login.as_str(),
                    "the helpdesk registered this address for your password resets",
                ));
            }
            let method = Method {
                id: self.new_method_id(),
                login: login.clone(),
                kind,
                target,
                verified: true,
                source: "helpdesk".into(),
                created_at: now,
                confirmed_at: Some(now),
            };
            self.store.insert_method(&method, None, changes).await?;
        }
        self.registration_of(login).await
    }

    /// Helpdesk: removes every method of a user (lost phone, left the company…).
    pub async fn admin_clear_methods(&self, login: &Login, actor: &str) -> Result<u64, ServiceError> {
        let login = &self.resolve(login).await?;
        let mut e = self.event(Activity::MethodsCleared, Some(login), &RequestMeta::default());
        e.actor = actor.to_owned();
        Ok(self.store.clear_methods(login, Changes::audit(e)).await?)
    }

    /// Helpdesk: mails a one-time link to the user's verified personal email. Opening it proves that
    /// address; the user then proves any further methods the policy asks for and chooses the password
    /// themselves. Returns where it went (masked).
    pub async fn send_link(
        &self,
        login: &Login,
        kind: LinkKind,
        actor: &str,
    ) -> Result<String, ServiceError> {
        let Some(account) = self.directory.find_account(login).await? else {
            return Err(ServiceError::NotFound);
        };
        let left_scope = self
            .store
            .profile(&account.login)
            .await?
            .is_some_and(|p| p.disabled);
        if account.disabled || left_scope {
            return Err(ParseError::new("login", "this account is disabled").into());
        }
        if self.store.flag(&account.login).await?.is_some() {
            return Err(ParseError::new(
                "login",
                "this account was reported by its user (\"this wasn't me\"); clear the flag first",
            )
            .into());
        }
        let policy = self.policy_for(&account);
        if !policy.allows(SelfService::Reset) {
            return Err(ServiceError::NotAllowed("self-service reset for this account"));
        }
        let mut methods: Vec<Method> = self
            .store
            .methods(&account.login)
            .await?
            .into_iter()
            .filter(|m| m.verified && policy.allows_method(m.kind))
            .collect();
        // Addresses from HR or the helpdesk first: that is where a new hire's link belongs.
        methods.sort_by_key(|m| m.source == "user");
        let Some(email) = methods.iter().find(|m| m.kind == MethodKind::Email) else {
            return Err(ParseError::new(
                "login",
                "this user has no verified personal email; set one with the contact command first",
            )
            .into());
        };
        let Some(to) = email.email().cloned() else {
            return Err(ServiceError::Internal("email method without an address".into()));
        };
        let now = self.clock.now();
        let token = Token::generate(self.rng.as_ref());
        let mut flow = Flow {
            id: FlowId(self.random_hex(16)),
            token_hash: token.hash(),
            kind: FlowKind::Reset,
            login: account.login.clone(),
            genuine: true,
            methods: methods.iter().map(|m| self.flow_method(m, &policy)).collect(),
            required: policy.reset_required,
            verified: vec![],
            code: None,
            step: FlowStep::Verify,
            created_at: now,
            expires_at: now + self.settings.link_lifetime,
            version: 0,
            offer_unlock: false,
            codes: Self::code_rules(&policy),
        };
        flow.accept(&email.id, now)?;
        let url = format!(
            "{}/link/{}",
            self.settings.branding.public_url.trim_end_matches('/'),
            token.expose_secret()
        );
        let mut e = self.flow_event(Activity::LinkSent, &flow, &RequestMeta::default());
        e.actor = actor.to_owned();
        e.method = Some(MethodKind::Email);
        e.reason = Some(
            match kind {
                LinkKind::Onboarding => "onboarding",
                LinkKind::Recovery => "recovery",
            }
            .into(),
        );
        let mut changes = Changes::audit(e);
        changes.mail.push(messages::link(
            &self.settings.branding,
            &to,
            &account.display_name,
            &url,
            self.settings.link_lifetime.whole_hours(),
            kind == LinkKind::Onboarding,
        ));
        self.store.insert_flow(&flow, changes).await?;
        Ok(to.masked())
    }
}
