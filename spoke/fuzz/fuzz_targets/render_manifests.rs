//! Manifest files from a repository, as the spoke renders plain YAML: arbitrary bytes split into
//! a few files. Must never panic or blow past its limits (aliases, huge documents).
#![no_main]

use gitfleet_spoke::sync::render::{self, RenderContext, RenderLimits, SourceFile};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let files: Vec<SourceFile> = data
        .split(|b| *b == 0)
        .take(8)
        .enumerate()
        .map(|(i, content)| {
            let ext = if i % 3 == 2 { "json" } else { "yaml" };
            SourceFile::new(format!("apps/fuzz/f{i}.{ext}"), content.to_vec())
        })
        .collect();
    let ctx = RenderContext {
        app: "fuzz".into(),
        target_id: "fuzz".into(),
        revision: "0123456789abcdef0123456789abcdef01234567".into(),
        namespace: "fuzz".into(),
        create_namespace: true,
    };
    let limits = RenderLimits {
        max_documents: 1_000,
        max_bytes: 1 << 20,
        yaml: gitfleet_core::yaml::Limits {
            max_document_bytes: 4 << 20,
            max_total_bytes: 8 << 20,
            ..gitfleet_core::yaml::Limits::DEFAULT
        },
    };
    let _ = render::render(&files, &ctx, &limits, &render::no_discovery);
});
