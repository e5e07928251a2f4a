//! Users, roles and the audit log through the `gitfleet` CLI against the real hub, in-process:
//! the admin credential the hub wrote creates users whose credentials files the CLI then uses.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::path::{Path, PathBuf};

use gitfleet_cli::cli::rollout::EventsReport;
use gitfleet_cli::cli::users::{AuditReport, UserListReport, WhoamiReport};
use gitfleet_cli::cli::{CliError, run_args};
use gitfleet_cli::client::config::{ClientConfig, ConfigFile as _};
use support::*;

async fn cli(config: &Path, args: &[&str]) -> Result<String, CliError> {
    let config = config.display().to_string();
    let argv: Vec<&str> = ["gitfleet", "--config", &config]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    let mut out = Vec::new();
    run_args(argv, &mut out).await?;
    Ok(String::from_utf8(out).unwrap())
}

/// Creates a user with the admin's credential; returns its credentials file.
async fn create_user(admin: &Path, dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let file = dir.join(format!("{name}.gitfleetconfig"));
    let file_arg = file.display().to_string();
    let args: Vec<&str> = ["user", "create", name, "-f", &file_arg]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let out = cli(admin, &args).await.unwrap();
    assert!(out.contains(&format!("user {name} created")), "{out}");
    file
}

fn app_yaml(name: &str, path: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: {name} }}
spec:
  repo: platform
  path: {path}
  namespace: web
  targets:
    - clusterSelector: {{ matchLabels: {{ env: dev }} }}
"
    )
}

const REPO_YAML: &str = "apiVersion: gitfleet.dev/v1
kind: Repo
metadata: { name: platform }
spec:
  url: https://git.example.com/platform.git
";

/// `get -o json`'s resources without their status: what an apply changes. (The status moves on
/// its own: the hub fetches the Repo in the background, and that fetch fails at its own time.)
fn specs(json: &str) -> serde_json::Value {
    let mut list: serde_json::Value = serde_json::from_str(json).unwrap();
    for item in list["items"].as_array_mut().unwrap() {
        item.as_object_mut().unwrap().remove("status");
    }
    list
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

async fn audit(admin: &Path, extra: &[&str]) -> AuditReport {
    let args: Vec<&str> = ["audit", "-o", "json"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    serde_json::from_str(&cli(admin, &args).await.unwrap()).unwrap()
}

#[tokio::test]
async fn roles_decide_what_each_user_may_do_and_the_audit_log_says_who_did_what() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let files = write(
        &data,
        "fleet.yaml",
        &format!("{REPO_YAML}---\n{}", app_yaml("web", "apps/web")),
    );
    cli(&admin, &["apply", "-f", &files]).await.unwrap();

    let viewer = create_user(&admin, &data, "vera", &["--role", "viewer"]).await;
    let operator = create_user(&admin, &data, "otto", &["--role", "operator"]).await;
    // The file is the user's key: owner-only.
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&viewer).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "credentials file mode {mode:o}");
    // Ready for `config import`: one context, current.
    let imported = ClientConfig::load(&viewer).unwrap();
    assert!(imported.context(None).is_ok());

    // A viewer reads, and its apply is refused, saying which role would do; nothing changes.
    let before = specs(&cli(&viewer, &["get", "all", "-o", "json"]).await.unwrap());
    let changed = write(&data, "changed.yaml", &app_yaml("web", "apps/changed"));
    let err = cli(&viewer, &["apply", "-f", &changed]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied: viewer vera cannot apply (operator or admin required)"
    );
    assert_eq!(err.exit_code(), 1);
    assert_eq!(
        specs(&cli(&admin, &["get", "all", "-o", "json"]).await.unwrap()),
        before
    );
    let err = cli(&viewer, &["app", "suspend", "web"]).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("permission denied: viewer vera cannot suspend apps"),
        "{err}"
    );

    // An operator of `default` changes the App; not the Repo, not users.
    let out = cli(&operator, &["apply", "-f", &changed]).await.unwrap();
    assert_eq!(out, "app/web configured\n");
    let mixed = write(
        &data,
        "mixed.yaml",
        &format!("{}---\n{REPO_YAML}", app_yaml("web", "apps/third")),
    );
    let err = cli(&operator, &["apply", "-f", &mixed]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "permission denied: operator otto cannot apply Repo \"platform\" ({mixed}#1) (admin required)"
        )
    );
    let get = cli(&admin, &["get", "app", "web", "-o", "json"])
        .await
        .unwrap();
    assert!(
        get.contains("apps/changed") && !get.contains("apps/third"),
        "the whole apply was refused: {get}"
    );
    let err = cli(&operator, &["user", "create", "eve", "--role", "admin"])
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied: operator otto cannot create users (admin required)"
    );
    cli(&operator, &["app", "suspend", "web"]).await.unwrap();

    // Events carry the user who acted.
    let events: EventsReport =
        serde_json::from_str(&cli(&admin, &["events", "web", "-o", "json"]).await.unwrap())
            .unwrap();
    let by = |kind: &str| {
        events
            .events
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.by.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(by("Created"), ["admin"]);
    assert_eq!(by("Configured"), ["otto"]);
    assert_eq!(by("Suspended"), ["otto"]);

    // whoami.
    let me: WhoamiReport =
        serde_json::from_str(&cli(&operator, &["whoami", "-o", "json"]).await.unwrap()).unwrap();
    assert_eq!(
        (me.name.as_str(), me.role.as_str(), me.projects.clone()),
        ("otto", "operator", vec!["default".to_owned()])
    );
    assert!(me.certificate_expires.is_some());
    let text = cli(&viewer, &["whoami"]).await.unwrap();
    assert!(text.contains("user:         vera"), "{text}");
    assert!(text.contains("role:         viewer"), "{text}");

    // The audit log: who, what and how it ended, the allowed and the refused; admins only.
    let log = audit(&admin, &[]).await;
    let line = |user: &str, action: &str, outcome: &str| {
        log.entries
            .iter()
            .any(|e| e.user == user && e.action == action && e.outcome == outcome)
    };
    assert!(line("admin", "apply", "ok"), "{log:?}");
    assert!(line("admin", "user create", "ok"), "{log:?}");
    assert!(line("vera", "apply", "denied"), "{log:?}");
    assert!(line("vera", "app suspend", "denied"), "{log:?}");
    assert!(line("otto", "apply", "ok"), "{log:?}");
    assert!(line("otto", "apply", "denied"), "{log:?}");
    assert!(line("otto", "user create", "denied"), "{log:?}");
    assert!(line("otto", "app suspend", "ok"), "{log:?}");
    let denied = log
        .entries
        .iter()
        .find(|e| e.user == "vera" && e.action == "apply")
        .unwrap();
    assert_eq!(
        denied.message,
        "permission denied: viewer vera cannot apply (operator or admin required)"
    );
    let ok = log
        .entries
        .iter()
        .find(|e| e.user == "otto" && e.outcome == "ok" && e.action == "apply")
        .unwrap();
    assert_eq!(ok.target, "App/web");
    // Reads are not audited.
    assert!(!log.entries.iter().any(|e| e.action == "get"), "{log:?}");
    let only_otto = audit(&admin, &["--user", "otto"]).await;
    assert!(only_otto.entries.iter().all(|e| e.user == "otto"));
    assert_eq!(only_otto.entries.len(), 4, "{only_otto:?}");
    let table = cli(&admin, &["audit", "--user", "vera"]).await.unwrap();
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.contains("denied: permission denied"), "{table}");
    let err = cli(&viewer, &["audit"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "permission denied: viewer vera cannot read the audit log (admin required)"
    );

    // `user list`.
    let list: UserListReport =
        serde_json::from_str(&cli(&admin, &["user", "list", "-o", "json"]).await.unwrap()).unwrap();
    let names: Vec<(&str, &str, &str)> = list
        .users
        .iter()
        .map(|u| (u.name.as_str(), u.role.as_str(), u.created_by.as_str()))
        .collect();
    assert_eq!(
        names,
        [
            ("admin", "admin", "hub"),
            ("otto", "operator", "admin"),
            ("vera", "viewer", "admin"),
        ]
    );
    let table = cli(&admin, &["user", "list"]).await.unwrap();
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "ROLE",
            "PROJECTS",
            "EXPIRES",
            "STATUS",
            "CREATED-BY"
        ]
    );
    hub.shutdown().await;
}

#[tokio::test]
async fn a_revoked_user_is_refused_on_its_next_call_and_its_old_certificate_stays_refused() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let first = create_user(&admin, &data, "alice", &["--role", "admin"]).await;
    cli(&first, &["get", "all"]).await.unwrap();

    // Creating an active user's name again is refused.
    let err = cli(&admin, &["user", "create", "alice", "--role", "viewer"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("user \"alice\" exists"), "{err}");

    let out = cli(&admin, &["user", "revoke", "alice"]).await.unwrap();
    assert!(out.contains("user alice revoked"), "{out}");
    let err = cli(&first, &["get", "all"]).await.unwrap_err();
    assert_eq!(err.to_string(), "user \"alice\" was revoked");
    let err = cli(&first, &["apply", "-f", "/nonexistent"])
        .await
        .unwrap_err();
    assert!(err.to_string().contains("nonexistent"), "{err}");

    // The name again: a new certificate; the old one is still refused.
    let dir = data.join("second");
    std::fs::create_dir_all(&dir).unwrap();
    let second = create_user(&admin, &dir, "alice", &["--role", "viewer"]).await;
    let me: WhoamiReport =
        serde_json::from_str(&cli(&second, &["whoami", "-o", "json"]).await.unwrap()).unwrap();
    assert_eq!((me.name.as_str(), me.role.as_str()), ("alice", "viewer"));
    let err = cli(&first, &["whoami"]).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("this certificate of user \"alice\" is not the user's current one"),
        "{err}"
    );

    // A refused certificate's mutating calls are audited as denied.
    let err = cli(&first, &["token", "create"]).await.unwrap_err();
    assert!(
        err.to_string().contains("not the user's current one"),
        "{err}"
    );
    let log = audit(&admin, &["--user", "alice"]).await;
    assert!(
        log.entries
            .iter()
            .any(|e| e.action == "token create" && e.outcome == "denied"),
        "{log:?}"
    );

    // The last admin cannot be revoked; with another admin it can.
    let err = cli(&admin, &["user", "revoke", "admin"]).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "user \"admin\" is the last active admin; create another admin before revoking it"
    );
    let root = create_user(&admin, &data, "root", &["--role", "admin"]).await;
    cli(&root, &["user", "revoke", "admin"]).await.unwrap();
    let err = cli(&admin, &["get", "all"]).await.unwrap_err();
    assert_eq!(err.to_string(), "user \"admin\" was revoked");
    let err = cli(&root, &["user", "revoke", "nobody"]).await.unwrap_err();
    assert!(
        err.to_string().contains("no active user named \"nobody\""),
        "{err}"
    );

    // Revocation is durable: still refused after a restart, and `admin` is not re-created.
    hub.shutdown().await;
    let hub = start_hub(&data).await;
    let err = cli(hub.admin_config_path(), &["get", "all"])
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "user \"admin\" was revoked");
    // The restarted hub listens on another port.
    let mut config = ClientConfig::load(&root).unwrap();
    config.contexts[0].server = hub.grpc_url();
    config.save(&root).unwrap();
    cli(&root, &["get", "all"]).await.unwrap();
    hub.shutdown().await;
}

#[tokio::test]
async fn bad_user_requests_are_refused_with_the_field() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let err = cli(&admin, &["user", "create", "Alice", "--role", "viewer"])
        .await
        .unwrap_err();
    assert!(err.to_string().starts_with("user name \"Alice\""), "{err}");
    let err = cli(
        &admin,
        &[
            "user",
            "create",
            "bob",
            "--role",
            "viewer",
            "--project",
            "a",
        ],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("projects: only operators"),
        "{err}"
    );
    let err = cli(
        &admin,
        &["user", "create", "bob", "--role", "viewer", "--ttl", "400d"],
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().starts_with("ttl 400d is out of range"),
        "{err}"
    );
    let err = cli(
        &admin,
        &["user", "create", "bob", "--role", "viewer", "--ttl", "soon"],
    )
    .await
    .unwrap_err();
    assert_eq!(err.exit_code(), 2, "{err}");
    assert!(err.to_string().contains("--ttl"), "{err}");
    // Without -f the credentials file is the output.
    let out = cli(&admin, &["user", "create", "bob", "--role", "viewer"])
        .await
        .unwrap();
    let config = ClientConfig::from_yaml(&out).unwrap();
    assert!(config.context(Some("bob@gitfleet")).is_ok(), "{out}");
    hub.shutdown().await;
}

/// A hub from before users existed: its store has no users, its admin credential is on disk.
/// The credential keeps working, as the user `admin`.
#[tokio::test]
async fn an_upgraded_hub_makes_its_existing_admin_credential_the_user_admin() {
    let (_tmp, data) = data_dir();
    let pki = gitfleet_hub::pki::Pki::load_or_create(&data.join("pki"), &[]).unwrap();
    let old_cert = pki.admin().cert_pem.clone();
    {
        let store = gitfleet_hub::store::Store::open(&data.join("store"))
            .await
            .unwrap();
        assert!(store.users().is_empty());
        store.flush().await.unwrap();
    }
    let hub = start_hub(&data).await;
    let config = admin_config(&hub);
    assert_eq!(
        config.context(None).unwrap().client_certificate_data,
        old_cert,
        "the existing credential, not a new one"
    );
    let me: WhoamiReport = serde_json::from_str(
        &cli(hub.admin_config_path(), &["whoami", "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!((me.name.as_str(), me.role.as_str()), ("admin", "admin"));
    hub.shutdown().await;
}

/// The hub renews its own admin certificate (here: the files are gone, so it issues a new one
/// at start): the user `admin` moves to it, unless `admin` was revoked.
#[tokio::test]
async fn the_hubs_renewed_admin_credential_stays_the_user_admin_unless_revoked() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let old = admin_config(&hub);
    hub.shutdown().await;
    let renew = |data: &Path| {
        std::fs::remove_file(data.join("pki/admin.crt")).unwrap();
        std::fs::remove_file(data.join("pki/admin.key")).unwrap();
    };
    renew(&data);
    let hub = start_hub(&data).await;
    let new = admin_config(&hub);
    assert_ne!(
        new.contexts[0].client_certificate_data,
        old.contexts[0].client_certificate_data
    );
    let me: WhoamiReport = serde_json::from_str(
        &cli(hub.admin_config_path(), &["whoami", "-o", "json"])
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(me.name, "admin");

    // Revoked (another admin exists), then renewed again: it stays revoked.
    let root = create_user(hub.admin_config_path(), &data, "root", &["--role", "admin"]).await;
    cli(&root, &["user", "revoke", "admin"]).await.unwrap();
    hub.shutdown().await;
    renew(&data);
    let hub = start_hub(&data).await;
    let err = cli(hub.admin_config_path(), &["whoami"]).await.unwrap_err();
    assert_eq!(err.to_string(), "user \"admin\" was revoked");
    hub.shutdown().await;
}

fn project_yaml(name: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: Project
metadata: {{ name: {name} }}
spec:
  sourceRepos: [platform]
  destinations:
    - name: \"*\"
      namespaces: [{name}]
"
    )
}

fn team_app_yaml(name: &str, project: &str) -> String {
    format!(
        "apiVersion: gitfleet.dev/v1
kind: App
metadata: {{ name: {name} }}
spec:
  project: {project}
  repo: platform
  path: apps/{name}
  namespace: {project}
  targets:
    - clusterSelector: {{ matchLabels: {{ env: dev }} }}
"
    )
}

#[tokio::test]
async fn an_operator_acts_only_on_the_apps_of_its_projects() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let admin = hub.admin_config_path().to_owned();
    let platform = write(
        &data,
        "platform.yaml",
        &format!(
            "{REPO_YAML}---\n{}---\n{}",
            project_yaml("team-a"),
            project_yaml("team-b")
        ),
    );
    cli(&admin, &["apply", "-f", &platform]).await.unwrap();
    let alice = create_user(
        &admin,
        &data,
        "alice",
        &["--role", "operator", "--project", "team-a"],
    )
    .await;

    // Inside team-a: allowed.
    let shop = write(&data, "shop.yaml", &team_app_yaml("shop", "team-a"));
    assert_eq!(
        cli(&alice, &["apply", "-f", &shop]).await.unwrap(),
        "app/shop created\n"
    );

    // An App of team-b: refused, naming the Project; nothing stored.
    let blog = write(&data, "blog.yaml", &team_app_yaml("blog", "team-b"));
    let err = cli(&alice, &["apply", "-f", &blog]).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("permission denied: operator alice cannot apply App \"blog\"")
            && err.to_string().contains("Project \"team-b\""),
        "{err}"
    );
    assert!(cli(&admin, &["get", "app", "blog"]).await.is_err());

    // team-b's App, applied by an admin, cannot be pulled into team-a by alice, nor deleted,
    // nor steered.
    cli(&admin, &["apply", "-f", &blog]).await.unwrap();
    let moved = write(&data, "moved.yaml", &team_app_yaml("blog", "team-a"));
    let err = cli(&alice, &["apply", "-f", &moved]).await.unwrap_err();
    assert!(err.to_string().contains("Project \"team-b\""), "{err}");
    let err = cli(&alice, &["delete", "app", "blog"]).await.unwrap_err();
    assert!(err.to_string().starts_with("permission denied"), "{err}");
    let err = cli(&alice, &["app", "suspend", "blog"]).await.unwrap_err();
    assert!(err.to_string().starts_with("permission denied"), "{err}");
    let get = cli(&admin, &["get", "app", "blog", "-o", "json"])
        .await
        .unwrap();
    assert!(get.contains("team-b"), "{get}");

    // Projects are the platform team's: an operator cannot widen its own.
    let wider = write(
        &data,
        "wider.yaml",
        &project_yaml("team-a").replace("[team-a]", "[team-a, team-b]"),
    );
    let err = cli(&alice, &["apply", "-f", &wider]).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("permission denied: operator alice cannot apply Project \"team-a\""),
        "{err}"
    );

    // Its own App it may delete.
    cli(&alice, &["delete", "app", "shop"]).await.unwrap();
    hub.shutdown().await;
}

/// One HTTP/1.1 request to the hub's HTTP listener: the status, the headers (lower-case
/// names) and the body.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[tokio::test]
async fn a_dashboard_link_signs_in_once_with_the_users_role_until_the_user_is_revoked() {
    let (_tmp, data) = data_dir();
    let hub = start_hub(&data).await;
    let addr = hub.http_addr().unwrap();
    let admin = hub.admin_config_path().to_owned();
    let vera = create_user(&admin, &data, "vera", &["--role", "viewer"]).await;
    cli(
        &admin,
        &[
            "apply",
            "-f",
            &write(
                &data,
                "web.yaml",
                &format!("{REPO_YAML}---\n{}", app_yaml("web", "apps/web")),
            ),
        ],
    )
    .await
    .unwrap();

    let out = cli(&vera, &["dashboard", "--no-open"]).await.unwrap();
    assert!(out.contains("it works once"), "{out}");
    let url = out.lines().find(|l| l.starts_with("http://")).unwrap();
    assert!(
        url.starts_with(&format!("http://{addr}/ui/signin?token=")),
        "{url}"
    );
    let path = &url[url.find("/ui/").unwrap()..];

    // The page itself: no inline script allowed.
    let (status, headers, body) = http(addr, "GET", "/ui", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("/ui/app.js"), "{body}");
    let csp = header(&headers, "content-security-policy");
    assert!(
        csp.iter().any(|c| c.contains("script-src 'self'")),
        "{headers:?}"
    );

    // Without a session, nothing is read.
    let (status, _, _) = http(addr, "GET", "/ui/api/grid", &[]).await;
    assert_eq!(status, 401);

    // The link: a session, once.
    let (status, headers, _) = http(addr, "GET", path, &[]).await;
    assert_eq!(status, 303, "{headers:?}");
    let cookies = header(&headers, "set-cookie");
    let session = cookies
        .iter()
        .find(|c| c.starts_with("gitfleet_session="))
        .unwrap();
    for flag in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(session.contains(flag), "{session}");
    }
    let value = |c: &str| c.split(';').next().unwrap().to_owned();
    let session = value(session);
    let csrf = value(
        cookies
            .iter()
            .find(|c| c.starts_with("gitfleet_csrf="))
            .unwrap(),
    );
    let csrf = csrf.trim_start_matches("gitfleet_csrf=").to_owned();
    let (status, _, body) = http(addr, "GET", path, &[]).await;
    assert_eq!(status, 401, "a second use: {body}");
    assert!(body.contains("used already or has expired"), "{body}");

    let (status, _, body) = http(addr, "GET", "/ui/api/me", &[("Cookie", &session)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"role\":\"viewer\""), "{body}");
    let (status, _, body) = http(addr, "GET", "/ui/api/apps/web", &[("Cookie", &session)]).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains("\"actions\":[]"),
        "a viewer may do nothing: {body}"
    );

    // A viewer's action is refused: without the CSRF token before anything, with it by role.
    let (status, _, body) = http(
        addr,
        "POST",
        "/ui/api/apps/web/pause",
        &[("Cookie", &session)],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("x-gitfleet-csrf"), "{body}");
    let (status, _, body) = http(
        addr,
        "POST",
        "/ui/api/apps/web/pause",
        &[("Cookie", &session), ("x-gitfleet-csrf", &csrf)],
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("permission denied: viewer vera"), "{body}");
    let log = audit(&admin, &["--user", "vera"]).await;
    assert!(
        log.entries
            .iter()
            .any(|e| e.action == "rollout pause" && e.outcome == "denied"),
        "{log:?}"
    );
    assert!(
        log.entries
            .iter()
            .any(|e| e.action == "dashboard" && e.outcome == "ok"),
        "{log:?}"
    );

    // Revoking the user ends the session at once.
    cli(&admin, &["user", "revoke", "vera"]).await.unwrap();
    let (status, _, _) = http(addr, "GET", "/ui/api/me", &[("Cookie", &session)]).await;
    assert_eq!(status, 401);
    hub.shutdown().await;
}
