use super::*;

fn info(name: &str, active: bool) -> pb::FreezeInfo {
    pb::FreezeInfo {
        name: name.into(),
        apps: vec!["checkout".into()],
        projects: vec![],
        cluster_selector: String::new(),
        until_unix: 1_796_000_000,
        reason: "holiday campaign".into(),
        created_by: "alice".into(),
        created_at_unix: 1_795_000_000,
        active,
        scope: "apps checkout".into(),
        no_self_heal: false,
    }
}

fn style() -> Style {
    Style {
        color: false,
        now_unix: 1_796_000_000 - 3600,
    }
}

#[test]
fn the_table_shows_name_scope_until_by_and_reason_and_which_ended() {
    let report = freeze_list_report(&[info("campaign", true), info("old", false)]);
    let text = freeze_table(&report, style());
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("NAME"), "{text}");
    for column in ["SCOPE", "UNTIL", "SELF-HEAL", "BY", "REASON"] {
        assert!(lines[0].contains(column), "{text}");
    }
    assert!(
        lines[1].contains("campaign")
            && lines[1].contains("apps checkout")
            && lines[1].contains("(in 1h)")
            && lines[1].contains("alice")
            && lines[1].contains("holiday campaign"),
        "{text}"
    );
    assert!(lines[2].contains("(ended)"), "{text}");
    assert_eq!(
        freeze_table(&freeze_list_report(&[]), style()),
        "no freezes\n"
    );
}

#[test]
fn json_names_every_field() {
    let report = freeze_list_report(&[info("campaign", true)]);
    let json = serde_json::to_value(&report).expect("json");
    let f = &json["freezes"][0];
    assert_eq!(f["name"], "campaign");
    assert_eq!(f["apps"][0], "checkout");
    assert_eq!(f["until"], "2026-11-30T00:53:20Z");
    assert_eq!(f["active"], true);
    assert_eq!(f["createdBy"], "alice");
}

#[test]
fn a_freeze_without_self_heal_says_so_in_the_table_json_and_on_creation() {
    let no_heal = pb::FreezeInfo {
        no_self_heal: true,
        ..info("maint", true)
    };
    let report = freeze_list_report(&[info("campaign", true), no_heal]);
    let text = freeze_table(&report, style());
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[1].contains("kept"), "{text}");
    assert!(lines[2].contains("suspended"), "{text}");
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["freezes"][0]["selfHeal"], true);
    assert_eq!(json["freezes"][1]["selfHeal"], false);
    let created = created_text(&report.freezes[1], style());
    assert!(created.ends_with(", and do not self-heal\n"), "{created}");
    assert!(!created_text(&report.freezes[0], style()).contains("self-heal"));
}
