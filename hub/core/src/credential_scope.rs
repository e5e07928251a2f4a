//! Where a credential may be sent: the URL prefixes of its entry (`urls:`). Pure.
//!
//! A prefix is an `https://` or `ssh://` URL, or an scp-like `user@host:path`; a credential is
//! never sent over `http://`, `git://` or anything else, whatever the prefixes say. URLs are
//! compared by parts (scheme, host without case, port without the default one, user left out)
//! and paths on a whole segment: `https://github.com/acme` covers `https://github.com/acme/x`
//! but not `https://github.com/acmevil/x`. A URL whose path could climb out of a prefix once a
//! server decodes it (`..` or `.` segments, `%2e`, `%2f`, `%5c`, backslashes) is covered by
//! nothing.
//!
//! One rule for both sides: the hub checks Repos against their entry's prefixes at apply and
//! in its own fetches; the spoke checks every URL libgit2 asks a credential for against the
//! prefixes the hub sent with it.

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

/// Why a prefix is not one a credential may be bound to.
pub fn check_prefix(prefix: &str) -> Result<(), &'static str> {
    match place(prefix) {
        Some(_) => Ok(()),
        None => Err(
            "must be an https:// or ssh:// URL, or user@host:path, with a host and no '.' or '..' path segments",
        ),
    }
}

/// Whether `prefix` is a place an HTTPS credential (user and password) goes to.
pub fn is_https(prefix: &str) -> bool {
    place(prefix).is_some_and(|p| p.scheme == "https")
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
    fn prefixes_match_on_whole_path_segments() {
        let acme = bound(&["https://github.com/acme"]);
        assert!(allows(&acme, "https://github.com/acme"));
        assert!(allows(&acme, "https://github.com/acme/x.git"));
        assert!(!allows(&acme, "https://github.com/acmevil/x.git"));
        assert!(!allows(&acme, "https://github.com/acme.git"));
        let slash = bound(&["https://github.com/acme/"]);
        assert!(allows(&slash, "https://github.com/acme/x.git"));
        assert!(!allows(&slash, "https://github.com/acme"));
        assert!(!allows(&slash, "https://github.com/acmevil/x.git"));
        // A host alone covers the whole host, and only that host.
        let host = bound(&["https://git.example.com"]);
        assert!(allows(&host, "https://git.example.com/any/repo.git"));
        assert!(!allows(&host, "https://git.example.com.evil.net/x.git"));
        assert!(!allows(&host, "https://git.example.com@evil.net/x.git"));
        assert!(!allows(&host, "https://evil.net/git.example.com/x.git"));
    }

    #[test]
    fn credentials_never_go_over_http_git_or_local_transports() {
        let everything = bound(&["https://h/", "ssh://h/", "git@h:"]);
        for url in [
            "http://h/x.git",
            "git://h/x.git",
            "file:///h/x.git",
            "/h/x.git",
            "HTTP://h/x.git",
            "ssh+git://h/x.git",
            "h/x.git",
        ] {
            assert!(!allows(&everything, url), "{url}");
        }
        assert!(allows(&everything, "https://h/x.git"));
        assert!(allows(&everything, "ssh://git@h/x.git"));
        assert!(allows(&everything, "git@h:x.git"));
        // Prefixes of those schemes cannot be given at all.
        for prefix in [
            "http://h/",
            "git://h/",
            "file:///x",
            "/x",
            "h",
            "https://",
            "ssh:///x",
        ] {
            assert!(check_prefix(prefix).is_err(), "{prefix}");
        }
    }

    #[test]
    fn ssh_and_scp_like_urls_are_kept_apart() {
        let scp = bound(&["git@github.com:acme/"]);
        assert!(allows(&scp, "git@github.com:acme/x.git"));
        assert!(
            allows(&scp, "other@github.com:acme/x.git"),
            "the user is not the place"
        );
        assert!(!allows(&scp, "git@github.com:acmevil/x.git"));
        assert!(!allows(&scp, "ssh://git@github.com/acme/x.git"));
        let ssh = bound(&["ssh://git@github.com/acme"]);
        assert!(allows(&ssh, "ssh://github.com:22/acme/x.git"));
        assert!(!allows(&ssh, "ssh://github.com:2222/acme/x.git"));
        assert!(!allows(&ssh, "https://github.com/acme/x.git"));
    }

    #[test]
    fn hosts_ports_and_users_are_compared_as_places() {
        let acme = bound(&["https://GitHub.com/acme/"]);
        assert!(allows(&acme, "https://github.com:443/acme/x.git"));
        assert!(allows(
            &acme,
            "https://x-access-token@github.com/acme/x.git"
        ));
        assert!(!allows(&acme, "https://github.com:8443/acme/x.git"));
        let v6 = bound(&["https://[::1]:8443/"]);
        assert!(allows(&v6, "https://[::1]:8443/x.git"));
        assert!(!allows(&v6, "https://[::1]/x.git"));
    }

    #[test]
    fn paths_that_could_climb_out_of_a_prefix_are_covered_by_nothing() {
        let acme = bound(&["https://github.com/acme/"]);
        for url in [
            "https://github.com/acme/../evil/x.git",
            "https://github.com/acme/./x.git",
            "https://github.com/acme/%2e%2e/evil/x.git",
            "https://github.com/acme%2F..%2Fevil/x.git",
            "https://github.com/acme/..\\evil/x.git",
            "https://github.com/acme/x.git?u=https://evil",
            "https://github.com/acme/x .git",
        ] {
            assert!(!allows(&acme, url), "{url}");
        }
        assert!(check_prefix("https://github.com/acme/../").is_err());
    }

    #[test]
    fn messages_leave_out_user_information() {
        assert_eq!(
            redacted("https://user:s3cret@github.com/acme/x.git"),
            "https://github.com/acme/x.git"
        );
        assert_eq!(
            redacted("git@github.com:acme/x.git"),
            "git@github.com:acme/x.git"
        );
        assert!(is_https("https://h/"));
        assert!(!is_https("ssh://h/"));
    }
}
