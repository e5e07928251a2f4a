use super::*;

fn origins(docs: &[Document]) -> Vec<&str> {
    docs.iter().map(|d| d.origin.as_str()).collect()
}

fn write(dir: &Path, rel: &str, text: &str) {
    let path = dir.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn directories_are_walked_recursively_in_path_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "b.yaml", "kind: B\n");
    write(root, "a/z.yml", "kind: AZ\n");
    write(root, "a/b/c.json", r#"{"kind":"ABC"}"#);
    write(root, "a.yaml", "kind: A\n");
    write(root, "README.md", "# not a manifest\n");
    write(root, ".git/config.yaml", "kind: Hidden\n");
    write(root, ".hidden.yaml", "kind: Hidden\n");

    let files: Vec<String> = walk(root)
        .unwrap()
        .iter()
        .map(|p| p.strip_prefix(root).unwrap().display().to_string())
        .collect();
    assert_eq!(files, ["a/b/c.json", "a/z.yml", "a.yaml", "b.yaml"]);

    let docs = load(&[root.display().to_string()], &mut std::io::empty()).unwrap();
    let kinds: Vec<&str> = docs
        .iter()
        .map(|d| d.value["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["ABC", "AZ", "A", "B"]);
    assert_eq!(
        docs[0].origin,
        format!("{}#0", root.join("a/b/c.json").display())
    );
}

#[test]
fn load_keeps_the_order_of_the_sources_and_reads_stdin_once() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "one.yaml", "kind: One\n");
    let one = dir.path().join("one.yaml").display().to_string();
    let mut stdin = "kind: FromStdin\n---\nkind: Second\n".as_bytes();
    let docs = load(&["-".into(), one.clone(), "-".into()], &mut stdin).unwrap();
    assert_eq!(origins(&docs), ["stdin#0", "stdin#1", &format!("{one}#0")]);
}

#[test]
fn load_fails_whole_on_any_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "a.yaml", "kind: Good\n");
    write(dir.path(), "b.yaml", "kind: [bad\n");
    let err = load(&[dir.path().display().to_string()], &mut std::io::empty()).unwrap_err();
    let text = err.to_string();
    assert!(text.contains("b.yaml:"), "{text}");
}

#[test]
fn missing_files_empty_directories_and_empty_input_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.yaml").display().to_string();
    let err = load(std::slice::from_ref(&missing), &mut std::io::empty()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read {missing}")),
        "{err}"
    );

    let err = load(&[dir.path().display().to_string()], &mut std::io::empty()).unwrap_err();
    assert!(matches!(err, DocumentError::EmptyDirectory(_)), "{err:?}");

    let err = load(&["-".into()], &mut "---\n".as_bytes()).unwrap_err();
    assert_eq!(err.to_string(), "no documents in -");
}
