use super::*;
use serde_json::json;

fn budget() -> Budget {
    Budget::new(Limits::DEFAULT)
}

/// One anchored scalar repeated by `aliases` aliases: the attack that took the hub to 3 GB from a
/// 1 MiB file.
fn scalar_alias_bomb(aliases: usize) -> String {
    let mut text = format!("a: &a \"{}\"\nb: [", "x".repeat(4096));
    for i in 0..aliases {
        if i > 0 {
            text.push(',');
        }
        text.push_str("*a");
    }
    text.push_str("]\n");
    text
}

/// A mapping of `width` long strings anchored once and aliased `aliases` times: few aliases,
/// large expansion.
fn mapping_alias_bomb(width: usize, aliases: usize) -> String {
    let mut text = String::from("base: &base\n");
    for i in 0..width {
        text.push_str(&format!("  k{i}: \"{}\"\n", "y".repeat(1000)));
    }
    text.push_str("copies:\n");
    for _ in 0..aliases {
        text.push_str("  - *base\n");
    }
    text
}

#[test]
fn ordinary_yaml_becomes_json() {
    let docs = budget()
        .documents("a: 1\nb: [x, true, null, 2.5]\n---\n---\nc: {d: e}\n")
        .unwrap();
    assert_eq!(
        docs,
        vec![
            json!({"a": 1, "b": ["x", true, null, 2.5]}),
            Value::Null,
            json!({"c": {"d": "e"}})
        ]
    );
}

#[test]
fn keys_become_strings_and_merge_keys_apply() {
    let doc = budget()
        .document("base: &b {x: 1, y: 2}\nmerged:\n  <<: *b\n  y: 3\n1: one\ntrue: yes\n")
        .unwrap();
    assert_eq!(doc["merged"], json!({"x": 1, "y": 3}));
    assert_eq!(doc["1"], "one");
    assert_eq!(doc["true"], "yes");
}

#[test]
fn a_megabyte_of_aliases_to_one_scalar_is_refused_before_anything_is_built() {
    let text = scalar_alias_bomb(100_000);
    assert!(text.len() < 1024 * 1024);
    let err = budget().document(&text).unwrap_err();
    assert_eq!(
        err,
        YamlError::Limit(LimitExceeded::Aliases {
            limit: Limits::DEFAULT.max_aliases
        })
    );
    assert!(
        err.to_string().contains("more than 10000 YAML aliases"),
        "{err}"
    );
}

#[test]
fn few_aliases_of_a_large_mapping_are_refused_by_the_document_size() {
    // 100 KB anchored, 2,000 copies: 200 MB if expanded.
    let text = mapping_alias_bomb(100, 2_000);
    let err = budget().document(&text).unwrap_err();
    assert_eq!(
        err,
        YamlError::Limit(LimitExceeded::DocumentBytes {
            limit: Limits::DEFAULT.max_document_bytes
        })
    );
}

#[test]
fn many_files_each_within_the_document_limit_are_refused_together() {
    // Each file expands to about 10 MB (under 16 MiB per document); 30 of them are 300 MB.
    let text = mapping_alias_bomb(100, 100);
    let budget = budget();
    let mut refused = None;
    for i in 0..30 {
        if let Err(e) = budget.document(&text) {
            refused = Some((i, e));
            break;
        }
    }
    let (i, err) = refused.expect("the Target's budget stops the files together");
    assert!(i > 5, "refused too early, at file {i}");
    assert_eq!(
        err,
        YamlError::Limit(LimitExceeded::TotalBytes {
            limit: Limits::DEFAULT.max_total_bytes
        })
    );
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!("{}1{}", "[".repeat(500), "]".repeat(500));
    let err = budget().document(&text).unwrap_err();
    assert_eq!(err, YamlError::Limit(LimitExceeded::Depth { limit: 100 }));
    let block: String = (0..150)
        .map(|i| format!("{}k:\n", "  ".repeat(i)))
        .collect();
    let err = budget().document(&block).unwrap_err();
    assert_eq!(err, YamlError::Limit(LimitExceeded::Depth { limit: 100 }));
}

#[test]
fn documents_and_events_count_over_every_file() {
    let limits = Limits {
        max_documents: 5,
        ..Limits::DEFAULT
    };
    let budget = Budget::new(limits);
    budget.documents("a: 1\n---\nb: 2\n").unwrap();
    let err = budget
        .documents("c: 3\n---\nd: 4\n---\ne: 5\n---\nf: 6\n")
        .unwrap_err();
    assert_eq!(err, YamlError::Limit(LimitExceeded::Documents { limit: 5 }));

    let budget = Budget::new(Limits {
        max_events: 100,
        ..Limits::DEFAULT
    });
    let list = format!("[{}]", vec!["1"; 30].join(","));
    budget.document(&list).unwrap();
    budget.document(&list).unwrap();
    let err = budget.document(&list).unwrap_err();
    assert_eq!(err, YamlError::Limit(LimitExceeded::Events { limit: 100 }));
}

#[test]
fn json_is_charged_too() {
    let budget = Budget::new(Limits {
        max_document_bytes: 1000,
        ..Limits::DEFAULT
    });
    budget.json(r#"{"a": [1, 2, 3]}"#).unwrap();
    let big = format!("{{\"a\": \"{}\"}}", "z".repeat(2000));
    let err = budget.json(&big).unwrap_err();
    assert_eq!(
        err,
        YamlError::Limit(LimitExceeded::DocumentBytes { limit: 1000 })
    );
    let err = budget.json("{\"a\": }").unwrap_err();
    assert!(
        matches!(err, YamlError::Syntax { line: Some(1), .. }),
        "{err:?}"
    );
}

#[test]
fn syntax_errors_say_where() {
    let err = budget()
        .documents("a: 1\n---\nb:\n  c: [unclosed\n")
        .unwrap_err();
    let YamlError::Syntax {
        line,
        column,
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    let (line, column) = (line.unwrap(), column.unwrap());
    assert!(line >= 4, "{err:?}");
    assert!(
        !message.contains(&format!("at line {line} column {column}")),
        "position said twice: {message}"
    );
    let err = budget()
        .document("kind: App\nmetadata:\n\tname: x\n")
        .unwrap_err();
    assert_eq!(err.line(), Some(3), "{err:?}");
}

#[test]
fn typed_parsing_goes_through_the_budget() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Chart {
        name: String,
        dependencies: Option<Vec<Value>>,
    }
    let chart: Chart = budget().parse("name: web\ndependencies: []\n").unwrap();
    assert_eq!(chart.name, "web");
    let err = budget()
        .parse::<Chart>(&scalar_alias_bomb(20_000))
        .unwrap_err();
    assert!(matches!(
        err,
        YamlError::Limit(LimitExceeded::Aliases { .. })
    ));
}

/// What plain scalars and document streams become: Kubernetes manifests depend on it (a mode
/// `0755` stays a string, `yes` is not a boolean), so the parser behind the budget must not
/// change it.
#[test]
fn scalars_and_streams_read_as_they_always_have() {
    let doc = budget()
        .document(concat!(
            "octal: 0755\nnegative_octal: -007\nradix_octal: 0o17\nhex: 0x1F\n",
            "underscored: 1_000\nyes: yes\nno: off\nTrue: True\nnull_word: null\ntilde: ~\n",
            "empty:\nfloat: 1.5\nexp: 1e3\nplus: +1\ntime: 12:30\n",
            "quoted: '0755'\nbig: 18446744073709551615\nneg: -3\n",
        ))
        .unwrap();
    assert_eq!(
        doc,
        json!({
            "octal": "0755", "negative_octal": "-007", "radix_octal": 15, "hex": 31,
            "underscored": "1_000", "yes": "yes", "no": "off", "true": true,
            "null_word": null, "tilde": null, "empty": null, "float": 1.5, "exp": 1000.0,
            "plus": 1, "time": "12:30", "quoted": "0755",
            "big": 18446744073709551615u64, "neg": -3,
        })
    );
    assert_eq!(budget().document("").unwrap(), Value::Null);
    assert_eq!(budget().documents("").unwrap(), vec![Value::Null]);
    assert_eq!(
        budget().documents("# only a comment\n").unwrap(),
        vec![Value::Null]
    );
    assert_eq!(budget().documents("---\n").unwrap(), vec![Value::Null]);
    assert_eq!(
        budget().documents("--- a\n...\n--- b\n").unwrap(),
        vec![json!("a"), json!("b")]
    );
    assert_eq!(
        budget().documents("%YAML 1.2\n---\nx: 1\n").unwrap(),
        vec![json!({"x": 1})]
    );
    assert_eq!(
        budget().document("a: 1\na: 2\n").unwrap(),
        json!({"a": 2}),
        "a repeated key keeps the last value"
    );
    assert!(budget().document("a: 1\n---\nb: 2\n").is_err());
}

/// Each document is built apart from the others; an error in a later one still names its
/// line and column in the whole file.
#[test]
fn errors_in_a_later_document_say_where_in_the_file() {
    let err = budget()
        .documents("a: 1\n---\nb: 2\n...\n---\nc:\n  d: .inf\n")
        .unwrap_err();
    let YamlError::Syntax {
        line: Some(line),
        column: Some(column),
        message,
    } = &err
    else {
        panic!("{err:?}");
    };
    assert_eq!((*line, *column), (7, 6), "{err:?}");
    assert!(message.contains("not a number JSON can carry"), "{message}");
    assert!(!message.contains("line"), "position said twice: {message}");

    let err = budget().documents("x: 1\n--- {a: .nan}\n").unwrap_err();
    assert_eq!(err.line(), Some(2), "{err:?}");
}
