//! Where a credential the hub sent may go: under one of the URL prefixes of its entry, and
//! only over https or ssh. Pure.
//!
//! The same rule as the hub's (`hub/src/credentials/urls.rs`, which also says why each part of
//! it is there); keep the two in step. The spoke applies it itself, whatever the hub checked, at
//! the moment a server asks for the credential: after any redirect, and for the URL libgit2 is
//! really talking to.

/// A URL taken apart as far as deciding where it leads needs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Place {
    /// `https`, `ssh`, or `scp` for `user@host:path`.
    scheme: &'static str,
    /// Lower-cased.
    host: String,
    /// Absent for the scheme's default port.
    port: Option<String>,
    path: String,
}

/// Whether a credential bound to `prefixes` may be sent to `url`.
pub fn allows(prefixes: &[String], url: &str) -> bool {
    let Some(target) = place(url) else {
        return false;
    };
    prefixes
        .iter()
        .filter_map(|p| place(p))
        .any(|p| covers(&p, &target))
}

/// `url` without its user information (a password may sit there), for messages.
pub fn redacted(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        return format!("{scheme}://{host}{path}");
    }
    url.to_owned()
}

fn covers(prefix: &Place, target: &Place) -> bool {
    if prefix.scheme != target.scheme || prefix.host != target.host || prefix.port != target.port {
        return false;
    }
    let (p, t) = (prefix.path.as_str(), target.path.as_str());
    match t.strip_prefix(p) {
        Some(rest) => rest.is_empty() || p.is_empty() || p.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

fn place(url: &str) -> Option<Place> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return None;
    }
    let (scheme, host, port, path) = match url.split_once("://") {
        Some((scheme, rest)) => {
            let scheme = match scheme.to_ascii_lowercase().as_str() {
                "https" => "https",
                "ssh" => "ssh",
                _ => return None,
            };
            let end = rest.find('/').unwrap_or(rest.len());
            let (authority, path) = rest.split_at(end);
            let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            let (host, port) = split_port(hostport)?;
            let default = if scheme == "https" { "443" } else { "22" };
            let port = port.filter(|p| *p != default).map(str::to_owned);
            (scheme, host, port, path)
        }
        None => {
            // scp-like: `[user@]host:path`, with no '/' before the ':' (else it is a local path).
            let (head, path) = url.split_once(':')?;
            if head.contains('/') {
                return None;
            }
            let host = head.rsplit_once('@').map_or(head, |(_, h)| h);
            ("scp", host, None, path)
        }
    };
    let valid_host = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '[' | ']' | ':'));
    if !valid_host || !safe_path(path) {
        return None;
    }
    Some(Place {
        scheme,
        host: host.to_ascii_lowercase(),
        port,
        path: path.to_owned(),
    })
}

/// `host[:port]` or `[v6]:port`; the port, if any, all digits.
fn split_port(hostport: &str) -> Option<(&str, Option<&str>)> {
    let (host, port) = if hostport.starts_with('[') {
        let close = hostport.find(']')?;
        let (host, rest) = hostport.split_at(close + 1);
        match rest.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if rest.is_empty() => (host, None),
            None => return None,
        }
    } else {
        match hostport.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (hostport, None),
        }
    };
    if port.is_some_and(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    Some((host, port))
}

fn safe_path(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let encoded_or_odd = ["\\", "%2e", "%2f", "%5c", "?", "#"]
        .iter()
        .any(|bad| lower.contains(bad));
    !encoded_or_odd && !path.split('/').any(|s| s == "." || s == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(prefixes: &[&str]) -> Vec<String> {
        prefixes.iter().map(|p| (*p).to_owned()).collect()
    }

    #[test]
    fn only_https_and_ssh_urls_under_a_prefix_on_a_segment_boundary() {
        let acme = bound(&["https://github.com/acme", "git@github.com:acme/"]);
        assert!(allows(&acme, "https://github.com/acme/x.git"));
        assert!(allows(&acme, "https://GITHUB.com:443/acme/x.git"));
        assert!(allows(&acme, "git@github.com:acme/x.git"));
        for url in [
            "https://github.com/acmevil/x.git",
            "https://github.com.evil.net/acme/x.git",
            "https://github.com/acme/../evil/x.git",
            "https://github.com/acme/%2e%2e/evil/x.git",
            "http://github.com/acme/x.git",
            "git://github.com/acme/x.git",
            "ssh://git@github.com/acme/x.git",
            "file:///github.com/acme/x.git",
        ] {
            assert!(!allows(&acme, url), "{url}");
        }
        // Prefixes that are not https or ssh cover nothing, even if the hub sent them.
        assert!(!allows(&bound(&["http://h/"]), "http://h/x.git"));
        assert!(!allows(&bound(&["git://h/"]), "git://h/x.git"));
    }

    #[test]
    fn messages_leave_out_user_information() {
        assert_eq!(redacted("https://u:pw@h/x.git"), "https://h/x.git");
    }
}
