use super::*;

fn style() -> Style {
    Style {
        color: false,
        now_unix: 1_000_000,
    }
}

#[test]
fn a_new_users_credentials_reuse_the_creators_hub_and_name_the_user() {
    let creator = Context {
        name: "prod".into(),
        server: "https://hub.example.com:7443".into(),
        certificate_authority_data: "old ca".into(),
        client_certificate_data: "admin cert".into(),
        client_key_data: "admin key".into(),
        tls_server_name: Some("hub".into()),
    };
    let response = pb::CreateUserResponse {
        user: Some(pb::UserInfo {
            name: "alice".into(),
            ..Default::default()
        }),
        certificate_pem: "alice cert".into(),
        private_key_pem: "alice key".into(),
        ca_pem: "ca".into(),
    };
    let config = credentials(&creator, &response);
    let context = config.context(None).unwrap();
    assert_eq!(context.name, "alice@prod");
    assert_eq!(context.server, creator.server);
    assert_eq!(context.tls_server_name.as_deref(), Some("hub"));
    assert_eq!(context.client_certificate_data, "alice cert");
    assert_eq!(context.client_key_data, "alice key");
    assert_eq!(context.certificate_authority_data, "ca");
}

#[test]
fn the_user_table_shows_projects_by_role() {
    let users = [
        pb::UserInfo {
            name: "admin".into(),
            role: "admin".into(),
            status: "active".into(),
            created_by: "hub".into(),
            expires_at_unix: 1_000_000 + 3600,
            ..Default::default()
        },
        pb::UserInfo {
            name: "alice".into(),
            role: "operator".into(),
            status: "revoked".into(),
            created_by: "admin".into(),
            ..Default::default()
        },
    ];
    let table = user_table(&user_list_report(&users), style());
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{table}");
    let admin: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(admin, ["admin", "admin", "*", "in", "1h", "active", "hub"]);
    let alice: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        alice,
        ["alice", "operator", "default", "-", "revoked", "admin"]
    );
}

#[test]
fn the_audit_table_shows_why_a_call_was_refused() {
    let entries = [pb::AuditEntry {
        id: 1,
        at_unix: 1_000_000,
        user: "bob".into(),
        action: "apply".into(),
        target: "App/web".into(),
        outcome: "denied".into(),
        message: "permission denied: viewer bob cannot apply (operator or admin required)".into(),
    }];
    let table = audit_table(&audit_report(&entries), style());
    assert!(table.starts_with("TIME"), "{table}");
    assert!(table.contains("bob"), "{table}");
    assert!(
        table.contains("denied: permission denied: viewer bob cannot apply"),
        "{table}"
    );
    assert_eq!(
        audit_table(&audit_report(&[]), style()),
        "No audit entries match\n"
    );
}
