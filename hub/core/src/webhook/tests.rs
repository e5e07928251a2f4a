use std::collections::HashMap;

use super::*;

const SECRET: &[u8] = b"It's a Secret to Everybody";

/// Trimmed from real push deliveries: the fields gitfleet reads, in their real places.
const GITHUB: &str = r#"{"ref":"refs/heads/main","before":"6113728f27ae82c7b1a177c8d03f9e96e0adf246","after":"59b20b8d5c6ff8d09518454d4dd8b7b30f095ab5","repository":{"id":35129377,"name":"public-repo","full_name":"baxterthehacker/public-repo","html_url":"https://github.com/baxterthehacker/public-repo","git_url":"git://github.com/baxterthehacker/public-repo.git","ssh_url":"git@github.com:baxterthehacker/public-repo.git","clone_url":"https://github.com/baxterthehacker/public-repo.git"},"pusher":{"name":"baxterthehacker"}}"#;
const GITLAB: &str = r#"{"object_kind":"push","event_name":"push","ref":"refs/heads/master","checkout_sha":"da1560886d4f094c3e6c9ef40349f7d38b5d27d7","project":{"id":15,"name":"Diaspora","web_url":"http://example.com/mike/diaspora","git_ssh_url":"git@example.com:mike/diaspora.git","git_http_url":"http://example.com/mike/diaspora.git","path_with_namespace":"mike/diaspora"},"repository":{"name":"Diaspora","url":"git@example.com:mike/diaspora.git","homepage":"http://example.com/mike/diaspora"}}"#;
const GITEA: &str = r#"{"ref":"refs/heads/develop","before":"28e1879d029cb852e4844d9c718537df08844e03","after":"bffeb74224043ba2feb48d137756c8a9331c449a","repository":{"id":140,"name":"webhooks","full_name":"gitea/webhooks","html_url":"http://localhost:3000/gitea/webhooks","ssh_url":"ssh://gitea@localhost:2222/gitea/webhooks.git","clone_url":"http://localhost:3000/gitea/webhooks.git"}}"#;
const BITBUCKET: &str = r#"{"push":{"changes":[{"new":{"type":"branch","name":"main"}}]},"repository":{"type":"repository","full_name":"team/repo","name":"repo","links":{"html":{"href":"https://bitbucket.org/team/repo"}}},"actor":{"display_name":"Someone"}}"#;

fn sign(body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).unwrap();
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn headers(pairs: &[(&str, String)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
        .collect();
    move |name: &str| map.get(&name.to_ascii_lowercase()).cloned()
}

#[test]
fn github_signature() {
    let good = headers(&[("X-Hub-Signature-256", format!("sha256={}", sign(GITHUB)))]);
    assert_eq!(
        verify(Provider::GitHub, good, GITHUB.as_bytes(), SECRET),
        Ok(())
    );
    let wrong_secret = headers(&[("X-Hub-Signature-256", format!("sha256={}", sign(GITHUB)))]);
    assert_eq!(
        verify(Provider::GitHub, wrong_secret, GITHUB.as_bytes(), b"other"),
        Err(WebhookError::BadSignature)
    );
    let tampered = headers(&[("X-Hub-Signature-256", format!("sha256={}", sign(GITHUB)))]);
    let body = GITHUB.replace("main", "evil");
    assert_eq!(
        verify(Provider::GitHub, tampered, body.as_bytes(), SECRET),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        verify(Provider::GitHub, headers(&[]), GITHUB.as_bytes(), SECRET),
        Err(WebhookError::MissingSignature("X-Hub-Signature-256"))
    );
    let no_prefix = headers(&[("X-Hub-Signature-256", sign(GITHUB))]);
    assert_eq!(
        verify(Provider::GitHub, no_prefix, GITHUB.as_bytes(), SECRET),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn gitlab_token() {
    let good = headers(&[(
        "X-Gitlab-Token",
        String::from_utf8(SECRET.to_vec()).unwrap(),
    )]);
    assert_eq!(
        verify(Provider::GitLab, good, GITLAB.as_bytes(), SECRET),
        Ok(())
    );
    let bad = headers(&[("X-Gitlab-Token", "guess".to_owned())]);
    assert_eq!(
        verify(Provider::GitLab, bad, GITLAB.as_bytes(), SECRET),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn gitea_forgejo_and_bitbucket_signatures() {
    let gitea = headers(&[("X-Gitea-Signature", sign(GITEA))]);
    assert_eq!(
        verify(Provider::Gitea, gitea, GITEA.as_bytes(), SECRET),
        Ok(())
    );
    let forgejo = headers(&[("X-Forgejo-Signature", sign(GITEA))]);
    assert_eq!(
        verify(Provider::Forgejo, forgejo, GITEA.as_bytes(), SECRET),
        Ok(())
    );
    let bad = headers(&[("X-Gitea-Signature", sign("other"))]);
    assert_eq!(
        verify(Provider::Gitea, bad, GITEA.as_bytes(), SECRET),
        Err(WebhookError::BadSignature)
    );
    let bb = headers(&[("X-Hub-Signature", format!("sha256={}", sign(BITBUCKET)))]);
    assert_eq!(
        verify(Provider::Bitbucket, bb, BITBUCKET.as_bytes(), SECRET),
        Ok(())
    );
    let bad = headers(&[("X-Hub-Signature", "sha256=zz".to_owned())]);
    assert_eq!(
        verify(Provider::Bitbucket, bad, BITBUCKET.as_bytes(), SECRET),
        Err(WebhookError::BadSignature)
    );
}

#[test]
fn payloads_name_their_repository() {
    let cases = [
        (
            Provider::GitHub,
            GITHUB,
            "github.com/baxterthehacker/public-repo",
        ),
        (Provider::GitLab, GITLAB, "example.com/mike/diaspora"),
        (Provider::Gitea, GITEA, "localhost/gitea/webhooks"),
        (Provider::Bitbucket, BITBUCKET, "bitbucket.org/team/repo"),
    ];
    for (provider, body, want) in cases {
        let urls = repository_urls(provider, body.as_bytes()).unwrap();
        assert!(
            urls.iter().all(|u| normalize_url(u) == want),
            "{provider:?}: {urls:?}"
        );
    }
    assert!(matches!(
        repository_urls(Provider::GitHub, b"{not json"),
        Err(WebhookError::Malformed(_))
    ));
    assert_eq!(
        repository_urls(Provider::GitHub, b"{\"zen\":\"ping\"}"),
        Err(WebhookError::NoRepository)
    );
}

#[test]
fn urls_normalise_across_schemes() {
    for u in [
        "https://GitHub.com/org/repo.git",
        "https://github.com/org/repo/",
        "git@github.com:org/repo.git",
        "ssh://git@github.com:22/org/repo",
        "git://github.com/org/repo.git",
    ] {
        assert_eq!(normalize_url(u), "github.com/org/repo", "{u}");
    }
    assert_ne!(
        normalize_url("https://github.com/org/repo"),
        normalize_url("https://github.com/org/repo2")
    );
    assert_eq!(normalize_url("file:///srv/git/repo.git"), "/srv/git/repo");
}

#[test]
fn providers_parse() {
    assert_eq!(Provider::parse("GitHub"), Some(Provider::GitHub));
    assert_eq!(Provider::parse("forgejo"), Some(Provider::Forgejo));
    assert_eq!(Provider::parse("svn"), None);
}

fn signed_with(secret: &str, body: &str) -> impl Fn(&str) -> Option<String> + use<> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    headers(&[(
        "X-Hub-Signature-256",
        format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
    )])
}

fn candidate(repo: &str, secret: Option<&str>) -> Candidate {
    Candidate {
        repo: repo.into(),
        secret: secret.map(Into::into),
    }
}

#[test]
fn a_delivery_fetches_only_the_repos_whose_own_secret_signed_it() {
    let body = GITHUB.as_bytes();
    let repos = [
        candidate("a", Some("secret-a")),
        candidate("a-mirror", Some("secret-a")),
        candidate("b", Some("secret-b")),
        candidate("unset", None),
    ];
    assert_eq!(
        decide(
            Provider::GitHub,
            signed_with("secret-a", GITHUB),
            body,
            &repos,
            Some("hub")
        ),
        Decision::Fetch(vec!["a".into(), "a-mirror".into()])
    );
    assert_eq!(
        decide(
            Provider::GitHub,
            signed_with("secret-b", GITHUB),
            body,
            &repos,
            None
        ),
        Decision::Fetch(vec!["b".into()])
    );
    // Another Repo's secret, the hub-wide one, or none: refused.
    assert_eq!(
        decide(
            Provider::GitHub,
            signed_with("secret-a", GITHUB),
            body,
            &repos[2..],
            Some("secret-a")
        ),
        Decision::Refused(WebhookError::BadSignature)
    );
    assert_eq!(
        decide(Provider::GitHub, headers(&[]), body, &repos, None),
        Decision::Refused(WebhookError::MissingSignature("X-Hub-Signature-256"))
    );
}

#[test]
fn unknown_repositories_are_told_apart_only_for_genuine_senders() {
    let body = GITHUB.as_bytes();
    let no_secret = [candidate("unset", None)];
    // Nothing can verify it: the same answer as for a repository nobody follows.
    assert_eq!(
        decide(
            Provider::GitHub,
            signed_with("x", GITHUB),
            body,
            &no_secret,
            None
        ),
        Decision::NotFollowed
    );
    assert_eq!(
        decide(Provider::GitHub, signed_with("x", GITHUB), body, &[], None),
        Decision::NotFollowed
    );
    // With a hub-wide secret, only a correctly signed delivery learns that no Repo follows it.
    assert_eq!(
        decide(
            Provider::GitHub,
            signed_with("hub", GITHUB),
            body,
            &[],
            Some("hub")
        ),
        Decision::NotFollowed
    );
    assert_eq!(
        decide(
            Provider::GitHub,
            signed_with("x", GITHUB),
            body,
            &[],
            Some("hub")
        ),
        Decision::Refused(WebhookError::BadSignature)
    );
}

#[test]
fn unreadable_payloads_tell_unsigned_senders_nothing() {
    let junk = b"{not json";
    let malformed = WebhookError::Malformed("x".into());
    // The hub-wide secret does not sign it: refused as unauthorised, whatever the payload.
    assert_eq!(
        unreadable(
            Provider::GitHub,
            headers(&[]),
            junk,
            Some("hub"),
            malformed.clone()
        ),
        WebhookError::MissingSignature("X-Hub-Signature-256")
    );
    // Signed, or nothing to check it with: the payload's own problem.
    let signed = signed_with("hub", "{not json");
    assert_eq!(
        unreadable(
            Provider::GitHub,
            signed,
            junk,
            Some("hub"),
            malformed.clone()
        ),
        malformed
    );
    assert_eq!(
        unreadable(
            Provider::GitHub,
            headers(&[]),
            junk,
            None,
            WebhookError::NoRepository
        ),
        WebhookError::NoRepository
    );
}

#[test]
fn the_repo_index_finds_repos_by_any_form_of_their_url() {
    let mut index = RepoIndex::default();
    index.put("web", &RepoSpec::new("https://github.com/Org/web.git"));
    index.put("web-too", &RepoSpec::new("git@github.com:Org/web"));
    index.put("api", &RepoSpec::new("https://github.com/org/api"));
    let names = |index: &RepoIndex, urls: &[&str]| -> Vec<String> {
        let urls: Vec<String> = urls.iter().map(|u| (*u).to_owned()).collect();
        index
            .find(&urls)
            .into_iter()
            .map(|(name, _)| name.to_owned())
            .collect()
    };
    assert_eq!(
        names(
            &index,
            &[
                "https://GITHUB.com/Org/web",
                "ssh://git@github.com/Org/web.git"
            ]
        ),
        ["web", "web-too"],
        "every Repo of the repository, each once"
    );
    assert!(names(&index, &["https://github.com/org/other"]).is_empty());

    // A Repo that moves to another URL is filed under the new one only.
    index.put("web-too", &RepoSpec::new("https://github.com/org/api.git"));
    assert_eq!(names(&index, &["https://github.com/Org/web"]), ["web"]);
    assert_eq!(
        names(&index, &["https://github.com/org/api"]),
        ["api", "web-too"]
    );
    index.remove("api");
    index.remove("api");
    assert_eq!(names(&index, &["https://github.com/org/api"]), ["web-too"]);
}
