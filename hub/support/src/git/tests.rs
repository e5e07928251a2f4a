use super::*;

const KEY: &[u8] = b"\x00\x00\x00\x0bssh-ed25519\x00\x00\x00\x20abcdefghijklmnopqrstuvwxyz012345";

fn b64(k: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(k)
}

fn https() -> CredentialKind {
    CredentialKind::Https {
        username: "deploy".into(),
        password: "s3cret".into(),
    }
}

fn ssh() -> CredentialKind {
    CredentialKind::Ssh {
        username: "git".into(),
        private_key_pem: "PEM".into(),
        known_hosts: String::new(),
    }
}

/// Asks as libgit2 does, one request after another, for one fetch.
struct Server<'c> {
    credential: Credential<'c>,
    answered: Answered,
}

impl<'c> Server<'c> {
    fn new(kind: &'c CredentialKind, urls: &'c [String]) -> Self {
        Self {
            credential: Credential { kind, urls },
            answered: Answered::default(),
        }
    }

    fn asks(
        &mut self,
        url: &str,
        url_user: Option<&'c str>,
        allowed: CredentialType,
    ) -> Result<Answer<'c>, git2::Error> {
        answer(self.credential, url, url_user, allowed, &mut self.answered)
    }
}

#[test]
fn a_credential_goes_only_where_its_urls_say_and_never_over_http() {
    let kind = https();
    let urls = ["https://git.example.com/acme/".to_owned()];
    for url in [
        "https://evil.example.com/acme/x.git",
        "https://git.example.com/acme-other/x.git",
        "http://git.example.com/acme/x.git",
        "git://git.example.com/acme/x.git",
    ] {
        let refused = Server::new(&kind, &urls)
            .asks(url, None, CredentialType::USER_PASS_PLAINTEXT)
            .unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Auth, "{url}");
        assert_eq!(
            refused.message(),
            format!(
                "refusing to send the credential to {url}: it may be sent only over https or ssh, to https://git.example.com/acme/"
            )
        );
    }
    assert_eq!(
        Server::new(&kind, &urls)
            .asks(
                "https://git.example.com/acme/x.git",
                None,
                CredentialType::USER_PASS_PLAINTEXT
            )
            .unwrap(),
        Answer::UserPass {
            username: "deploy",
            password: "s3cret"
        }
    );
    // No prefixes: nowhere.
    assert!(
        Server::new(&kind, &[])
            .asks(
                "https://git.example.com/acme/x.git",
                None,
                CredentialType::USER_PASS_PLAINTEXT
            )
            .is_err()
    );
}

#[test]
fn a_credential_is_tried_once() {
    let kind = https();
    let urls = ["https://git.example.com/".to_owned()];
    let mut server = Server::new(&kind, &urls);
    let url = "https://git.example.com/x.git";
    assert!(
        server
            .asks(url, None, CredentialType::USER_PASS_PLAINTEXT)
            .is_ok()
    );
    let again = server
        .asks(url, None, CredentialType::USER_PASS_PLAINTEXT)
        .unwrap_err();
    assert_eq!(again.code(), ErrorCode::Auth);
    assert_eq!(again.message(), "the repository rejected the credential");
}

/// libgit2 asks for a username before the key when an SSH URL names no user. The hub counted
/// that answer as the credential's one try and refused the key that followed; the spoke did
/// not answer it at all: neither could fetch `ssh://host/repo`.
#[test]
fn an_ssh_url_without_a_user_gets_the_username_then_the_key_once() {
    let kind = ssh();
    let urls = ["ssh://git.example.com/infra/".to_owned()];
    let mut server = Server::new(&kind, &urls);
    let url = "ssh://git.example.com/infra/x.git";
    assert_eq!(
        server.asks(url, None, CredentialType::USERNAME).unwrap(),
        Answer::Username("git")
    );
    assert_eq!(
        server
            .asks(
                url,
                None,
                CredentialType::SSH_KEY | CredentialType::SSH_MEMORY
            )
            .unwrap(),
        Answer::SshKey {
            username: "git",
            private_key_pem: "PEM"
        }
    );
    for again in [CredentialType::SSH_KEY, CredentialType::USERNAME] {
        let refused = server.asks(url, None, again).unwrap_err();
        assert_eq!(refused.code(), ErrorCode::Auth);
        assert_eq!(refused.message(), "the repository rejected the credential");
    }
}

#[test]
fn the_user_an_ssh_url_names_is_the_one_logged_in_as() {
    let kind = ssh();
    let urls = ["deploy@git.example.com:infra/".to_owned()];
    assert_eq!(
        Server::new(&kind, &urls)
            .asks(
                "deploy@git.example.com:infra/x.git",
                Some("deploy"),
                CredentialType::SSH_KEY
            )
            .unwrap(),
        Answer::SshKey {
            username: "deploy",
            private_key_pem: "PEM"
        }
    );
}

#[test]
fn a_credential_that_does_not_fit_says_what_was_asked_and_what_it_holds() {
    let (https, ssh) = (https(), ssh());
    let urls = [
        "https://git.example.com/".to_owned(),
        "ssh://git.example.com/".to_owned(),
    ];
    let refused = Server::new(&https, &urls)
        .asks(
            "https://git.example.com/x.git",
            None,
            CredentialType::SSH_KEY,
        )
        .unwrap_err();
    assert_eq!(refused.code(), ErrorCode::Auth);
    assert_eq!(
        refused.message(),
        "the credential does not fit what the repository asks for: it asks for an SSH key, the credential holds a username and password"
    );
    let refused = Server::new(&ssh, &urls)
        .asks(
            "ssh://git.example.com/x.git",
            None,
            CredentialType::USER_PASS_PLAINTEXT | CredentialType::DEFAULT,
        )
        .unwrap_err();
    assert_eq!(
        refused.message(),
        "the credential does not fit what the repository asks for: it asks for a username and password or the system's default credentials, the credential holds an SSH key"
    );
    // An https credential never answers a username request.
    assert!(
        Server::new(&https, &urls)
            .asks(
                "https://git.example.com/x.git",
                None,
                CredentialType::USERNAME
            )
            .is_err()
    );
}

#[test]
fn host_keys_must_be_listed() {
    let kh = format!(
        "# comment\ngithub.com,140.82.121.4 ssh-ed25519 {k}\n[git.example.com]:2222 ssh-ed25519 {k}\n|1|c2FsdA==|aGFzaA== ssh-ed25519 {k}\n@revoked evil.com ssh-ed25519 {k}\n@cert-authority ca.example.com ssh-ed25519 {k}\n",
        k = b64(KEY)
    );
    assert!(known_hosts_accepts(&kh, "github.com", KEY));
    assert!(known_hosts_accepts(&kh, "140.82.121.4", KEY));
    assert!(known_hosts_accepts(&kh, "git.example.com", KEY));
    assert!(!known_hosts_accepts(&kh, "gitlab.com", KEY), "unknown host");
    assert!(
        !known_hosts_accepts(&kh, "github.com", b"other key"),
        "wrong key"
    );
    assert!(
        !known_hosts_accepts(&kh, "evil.com", KEY),
        "markers never match"
    );
    assert!(!known_hosts_accepts(&kh, "ca.example.com", KEY));
    assert!(
        !known_hosts_accepts(&kh, "git.example", KEY),
        "a prefix of a listed host is another host"
    );
    assert!(!known_hosts_accepts("", "github.com", KEY));
}

#[test]
fn refusals_carry_the_codes_libgit2_passes_on() {
    assert_eq!(
        callback_error(ErrorCode::Certificate, "x").code(),
        ErrorCode::Certificate
    );
    assert_eq!(
        callback_error(ErrorCode::Auth, "x").class(),
        ErrorClass::Callback
    );
}
