//! Reading users for synchronisation: a paged search of everything in scope, or of what changed since
//! the `modifyTimestamp` watermark, plus the list of logins still in scope (to find who left).
use super::{all, first, rdn_value, GroupLookup, LdapDirectory, ADMIN_LOCK};
use gatehouse_core::ports::{DirectoryError, SyncBatch, SyncedUser};
use gatehouse_core::types::{Email, Login};
use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{Scope, SearchEntry};
use std::collections::HashMap;

const PAGE: i32 = 500;

pub(crate) async fn paged_on(
    pool: &super::pool::Pool,
    base: &str,
    filter: String,
    attrs: Vec<String>,
) -> Result<Vec<SearchEntry>, DirectoryError> {
    let base = base.to_owned();
    pool.run(|mut l| {
        let (base, filter, attrs) = (base.clone(), filter.clone(), attrs.clone());
        async move {
            let adapters: Vec<Box<dyn Adapter<_, _>>> =
                vec![Box::new(EntriesOnly::new()), Box::new(PagedResults::new(PAGE))];
            let mut stream = l
                .streaming_search_with(adapters, &base, Scope::Subtree, &filter, attrs)
                .await?;
            let mut out = Vec::new();
            while let Some(entry) = stream.next().await? {
                out.push(SearchEntry::construct(entry));
            }
            stream.finish().await.success()?;
            Ok(out)
        }
    })
    .await
}

async fn paged(
    dir: &LdapDirectory,
    base: &str,
    filter: String,
    attrs: Vec<String>,
) -> Result<Vec<SearchEntry>, DirectoryError> {
    paged_on(&dir.pool, base, filter, attrs).await
}

/// Member DN → group names, from one search of the groups (for `GroupLookup::Search`).
async fn group_index(
    dir: &LdapDirectory,
    base_dn: &str,
    template: &str,
    name_attribute: &str,
) -> Result<HashMap<String, Vec<String>>, DirectoryError> {
    let member_attr = template
        .trim_start_matches('(')
        .split('=')
        .next()
        .unwrap_or("member")
        .to_owned();
    let groups = paged(
        dir,
        base_dn,
        format!("({member_attr}=*)"),
        vec![member_attr.clone(), name_attribute.to_owned()],
    )
    .await?;
    let mut index: HashMap<String, Vec<String>> = HashMap::new();
    for g in &groups {
        let Some(name) = first(g, name_attribute) else {
            continue;
        };
        for member in all(g, &member_attr) {
            index
                .entry(member.to_ascii_lowercase())
                .or_default()
                .push(name.to_owned());
        }
    }
    Ok(index)
}

pub async fn scan(dir: &LdapDirectory, watermark: Option<&str>) -> Result<SyncBatch, DirectoryError> {
    let s = &dir.settings;
    let filter = match watermark {
        Some(mark) => format!(
            "(&{}(modifyTimestamp>={}))",
            s.user_filter,
            ldap3::ldap_escape(mark)
        ),
        None => s.user_filter.clone(),
    };
    let entries = paged(dir, &s.base_dn, filter, dir.user_attributes()).await?;
    let index = match &s.groups {
        GroupLookup::Search {
            base_dn,
            filter,
            name_attribute,
        } if !entries.is_empty() => Some(group_index(dir, base_dn, filter, name_attribute).await?),
        _ => None,
    };
    let mut batch = SyncBatch {
        watermark: watermark.map(str::to_owned),
        ..SyncBatch::default()
    };
    for e in &entries {
        if let Some(ts) = first(e, "modifyTimestamp") {
            if batch.watermark.as_deref().is_none_or(|w| ts > w) {
                batch.watermark = Some(ts.to_owned());
            }
        }
        let Some(login) = dir.login_of(e) else {
            batch.skipped.push(format!("{}: no usable login attribute", e.dn));
            continue;
        };
        let a = &s.attributes;
        let groups = match (&s.groups, &index) {
            (GroupLookup::MemberOf { attribute }, _) => {
                all(e, attribute).iter().map(|dn| rdn_value(dn)).collect()
            }
            (_, Some(index)) => index.get(&e.dn.to_ascii_lowercase()).cloned().unwrap_or_default(),
            _ => vec![],
        };
        batch.users.push(SyncedUser {
            login: login.clone(),
            display_name: first(e, &a.display_name)
                .map(str::to_owned)
                .unwrap_or_else(|| login.to_string()),
            email: first(e, &a.mail).and_then(|m| Email::parse(m).ok()),
            mobile_phone: first(e, &a.mobile).map(str::to_owned),
            personal_email: a
                .personal_email
                .as_deref()
                .and_then(|attr| first(e, attr))
                .and_then(|m| Email::parse(m).ok()),
            groups,
            disabled: first(e, "pwdAccountLockedTime") == Some(ADMIN_LOCK),
        });
    }
    batch.in_scope = match watermark {
        None => batch.users.iter().map(|u| u.login.clone()).collect(),
        Some(_) => {
            let attr = s
                .login_attributes
                .first()
                .cloned()
                .unwrap_or_else(|| "uid".into());
            paged(dir, &s.base_dn, s.user_filter.clone(), vec![attr.clone()])
                .await?
                .iter()
                .filter_map(|e| first(e, &attr).and_then(|v| Login::parse(v).ok()))
                .collect()
        }
    };
    Ok(batch)
}
