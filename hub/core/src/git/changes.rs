//! Which Apps a commit touches: pure decisions over the list of changed files.

/// Whether any of `changed` (repository-relative file paths, '/'-separated) lies under the App's
/// `path` or one of its `extra_paths`. An empty path or "." is the whole repository.
pub fn app_touched(changed: &[String], path: &str, extra_paths: &[String]) -> bool {
    std::iter::once(path)
        .chain(extra_paths.iter().map(String::as_str))
        .any(|dir| changed.iter().any(|file| is_under(file, dir)))
}

/// Whether `file` is `dir` itself or inside it.
pub fn is_under(file: &str, dir: &str) -> bool {
    let dir = dir.trim_start_matches("./").trim_matches('/');
    if dir.is_empty() || dir == "." {
        return true;
    }
    match file.strip_prefix(dir) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(f: &[&str]) -> Vec<String> {
        f.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_file_inside_the_path_touches_the_app() {
        let changed = files(&["apps/web/deploy.yaml"]);
        assert!(app_touched(&changed, "apps/web", &[]));
        assert!(app_touched(&changed, "apps/web/", &[]));
        assert!(app_touched(&changed, "./apps/web", &[]));
        assert!(app_touched(&changed, "apps", &[]));
    }

    #[test]
    fn a_sibling_with_a_common_prefix_does_not() {
        let changed = files(&["apps/web2/deploy.yaml", "apps/webx"]);
        assert!(!app_touched(&changed, "apps/web", &[]));
    }

    #[test]
    fn extra_paths_count_and_exact_files_match() {
        let changed = files(&["bases/common/kustomization.yaml", "values.yaml"]);
        assert!(!app_touched(&changed, "apps/web", &[]));
        assert!(app_touched(&changed, "apps/web", &files(&["bases/common"])));
        assert!(app_touched(&changed, "apps/web", &files(&["values.yaml"])));
    }

    #[test]
    fn the_root_path_sees_everything() {
        let changed = files(&["x/y.yaml"]);
        assert!(app_touched(&changed, "", &[]));
        assert!(app_touched(&changed, ".", &[]));
        assert!(!app_touched(&[], ".", &[]));
    }
}
