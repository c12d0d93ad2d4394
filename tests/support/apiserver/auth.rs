//! Authentication: TLS client certificates signed by the server's CA (CN = user, O = groups)
//! and bearer tokens it issued (static tokens, ServiceAccount tokens). Authorization is
//! "allow every authenticated user", like an RBAC-free cluster.

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Every authenticated user is also in `system:authenticated`, as the real server adds it.
    pub fn new(name: &str, uid: &str, groups: impl IntoIterator<Item = String>) -> UserInfo {
        let mut groups: Vec<String> = groups.into_iter().collect();
        if !groups.iter().any(|g| g == "system:authenticated") {
            groups.push("system:authenticated".into());
        }
        UserInfo {
            name: name.to_string(),
            uid: uid.to_string(),
            groups,
        }
    }

    pub fn to_json(&self) -> Value {
        let mut v = json!({"username": self.name, "groups": self.groups});
        if !self.uid.is_empty() {
            v["uid"] = json!(self.uid);
        }
        v
    }
}

/// The user a verified client certificate names; None when it has no CN.
pub fn user_from_cert(der: &[u8]) -> Option<UserInfo> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups: Vec<String> = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    Some(UserInfo::new(&cn, "", groups))
}

/// Issued bearer tokens and whom they authenticate (with an optional expiry).
#[derive(Default)]
pub struct Tokens {
    map: Mutex<HashMap<String, (UserInfo, Option<jiff::Timestamp>)>>,
}

impl Tokens {
    pub fn insert(&self, token: String, user: UserInfo, expires: Option<jiff::Timestamp>) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, (user, expires));
    }

    pub fn authenticate(&self, token: &str) -> Option<UserInfo> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let (user, exp) = map.get(token)?;
        if exp.is_some_and(|e| e <= jiff::Timestamp::now()) {
            return None;
        }
        Some(user.clone())
    }
}

/// The bearer token of an `Authorization: Bearer …` header.
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let h = header?.trim();
    let (scheme, token) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_expire_and_bearer_parses() {
        let t = Tokens::default();
        t.insert("a".into(), UserInfo::new("u", "", Vec::new()), None);
        t.insert(
            "b".into(),
            UserInfo::new("v", "", Vec::new()),
            Some(jiff::Timestamp::UNIX_EPOCH),
        );
        assert_eq!(
            t.authenticate("a").unwrap().groups,
            vec!["system:authenticated".to_string()]
        );
        assert!(t.authenticate("b").is_none());
        assert_eq!(bearer(Some("Bearer xyz")), Some("xyz"));
        assert_eq!(bearer(Some("Basic xyz")), None);
    }
}
