use super::bounded;

#[test]
fn long_text_is_cut_at_a_character_boundary() {
    assert_eq!(bounded("short".into(), 10), "short");
    let cut = bounded("ééééé".into(), 5);
    assert_eq!(cut, "éé …(cut)");
}
