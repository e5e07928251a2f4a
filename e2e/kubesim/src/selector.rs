//! Label and field selectors in the API's query syntax (`labelSelector=app=web,tier notin (db)`).

use std::collections::BTreeMap;

/// One label requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

/// A conjunction of label requirements; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Splits on commas that are not inside a parenthesised value list.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
}

fn parse_set(rest: &str, whole: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found '{whole}', expected: '('"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement::DoesNotExist(key.trim().to_string())
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEquals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==") {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once('=') {
                Requirement::Equals(k.trim().into(), v.trim().into())
            } else if let Some((k, rest)) = split_word(part, "notin") {
                Requirement::NotIn(k.into(), parse_set(rest, part)?)
            } else if let Some((k, rest)) = split_word(part, "in") {
                Requirement::In(k.into(), parse_set(rest, part)?)
            } else {
                Requirement::Exists(part.to_string())
            };
            let key = match &req {
                Requirement::Equals(k, _)
                | Requirement::NotEquals(k, _)
                | Requirement::In(k, _)
                | Requirement::NotIn(k, _)
                | Requirement::Exists(k)
                | Requirement::DoesNotExist(k) => k,
            };
            if !valid_key(key) {
                return Err(format!(
                    "unable to parse requirement: invalid label key \"{key}\""
                ));
            }
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => labels.get(k) == Some(v),
            Requirement::NotEquals(k, v) => labels.get(k) != Some(v),
            Requirement::In(k, vs) => labels.get(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => labels.get(k).is_none_or(|l| !vs.contains(l)),
            Requirement::Exists(k) => labels.contains_key(k),
            Requirement::DoesNotExist(k) => !labels.contains_key(k),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// `key in (..)`: the key, then the rest after the operator word.
fn split_word<'a>(part: &'a str, word: &str) -> Option<(&'a str, &'a str)> {
    let needle = format!(" {word} ");
    if let Some(i) = part.find(&needle) {
        return Some((part[..i].trim(), &part[i + needle.len()..]));
    }
    let needle = format!(" {word}(");
    part.find(&needle)
        .map(|i| (part[..i].trim(), &part[i + needle.len() - 1..]))
}

/// The field selectors every resource supports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    /// (field, value, equal?)
    pub terms: Vec<(FieldName, String, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldName {
    Name,
    Namespace,
}

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (field, value, eq) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{part}'; can't understand '{part}'"
                ));
            };
            let name = match field.trim() {
                "metadata.name" => FieldName::Name,
                "metadata.namespace" => FieldName::Namespace,
                other => return Err(format!("field label not supported: {other}")),
            };
            terms.push((name, value.trim().to_string(), eq));
        }
        Ok(Self { terms })
    }

    pub fn matches(&self, name: &str, namespace: &str) -> bool {
        self.terms.iter().all(|(f, v, eq)| {
            let actual = match f {
                FieldName::Name => name,
                FieldName::Namespace => namespace,
            };
            (actual == v) == *eq
        })
    }

    /// The single name this selector pins, if any (lets a lookup skip scanning).
    pub fn exact_name(&self) -> Option<&str> {
        self.terms
            .iter()
            .find(|(f, _, eq)| *f == FieldName::Name && *eq)
            .map(|(_, v, _)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_every_operator() {
        let s = LabelSelector::parse(
            "app=web,tier==front, env!=prod,zone in (a, b),ring notin (canary),team,!legacy",
        )
        .unwrap();
        assert_eq!(
            s.0,
            vec![
                Requirement::Equals("app".into(), "web".into()),
                Requirement::Equals("tier".into(), "front".into()),
                Requirement::NotEquals("env".into(), "prod".into()),
                Requirement::In("zone".into(), vec!["a".into(), "b".into()]),
                Requirement::NotIn("ring".into(), vec!["canary".into()]),
                Requirement::Exists("team".into()),
                Requirement::DoesNotExist("legacy".into()),
            ]
        );
    }

    #[test]
    fn matching() {
        let l = labels(&[("app", "web"), ("zone", "a"), ("team", "x")]);
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(m("env!=prod"), "!= matches when the label is absent");
        assert!(m("zone in (a,b)"));
        assert!(!m("zone in (b)"));
        assert!(!m("env in (prod)"));
        assert!(m("zone notin (b)"));
        assert!(
            m("env notin (prod)"),
            "notin matches when the label is absent"
        );
        assert!(!m("zone notin (a)"));
        assert!(m("team"));
        assert!(!m("env"));
        assert!(m("!env"));
        assert!(!m("!team"));
        assert!(!m("app=web,env"));
    }

    #[test]
    fn bad_label_selectors() {
        assert!(LabelSelector::parse("zone in a,b").is_err());
        assert!(LabelSelector::parse("a b=c").is_err());
    }

    #[test]
    fn field_selectors() {
        let f = FieldSelector::parse("metadata.name=web,metadata.namespace!=kube-system").unwrap();
        assert!(f.matches("web", "default"));
        assert!(!f.matches("web", "kube-system"));
        assert!(!f.matches("db", "default"));
        assert_eq!(f.exact_name(), Some("web"));
        assert!(
            FieldSelector::parse("metadata.name==x")
                .unwrap()
                .matches("x", "")
        );
        assert_eq!(
            FieldSelector::parse("spec.nodeName=x").unwrap_err(),
            "field label not supported: spec.nodeName"
        );
        assert!(FieldSelector::parse("").unwrap().matches("a", "b"));
    }
}
