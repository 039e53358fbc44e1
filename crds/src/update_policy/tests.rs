use chrono::{TimeZone, Utc};

use super::*;

fn rules(yaml_like: TagRules) -> TagPolicy {
    TagPolicy::Rules(yaml_like)
}

/// One case: the policy, the running tag, the registry's tags, and the tag expected (None: stay).
fn check(policy: TagPolicy, current: &str, tags: &[&str], expected: Option<&str>) {
    let selector = TagSelector::compile(&policy).unwrap_or_else(|e| panic!("{policy:?}: {e:?}"));
    let chosen = selector.select(current, tags.iter().copied());
    assert_eq!(chosen.as_deref(), expected, "{policy:?} from {current} among {tags:?}");
}

const TAGS: &[&str] =
    &["1.0.0", "1.0.1", "1.1.0", "1.2.0", "1.3.0-rc.1", "2.0.0", "latest", "1.2.0-alpine", "v1.4.0"];

#[test]
fn caret_range_stays_below_the_next_major() {
    check(TagPolicy::Range("^1.0".into()), "1.0.0", TAGS, Some("v1.4.0"));
    check(TagPolicy::Range("^1.0".into()), "1.0.0", &["1.0.0", "1.2.0", "2.0.0"], Some("1.2.0"));
}

#[test]
fn tilde_range_stays_on_the_minor() {
    check(TagPolicy::Range("~1.0".into()), "1.0.0", TAGS, Some("1.0.1"));
}

#[test]
fn space_separated_range_reads_as_and() {
    check(TagPolicy::Range(">=1.1 <2".into()), "1.0.0", &["1.0.1", "1.1.0", "2.0.0"], Some("1.1.0"));
    check(TagPolicy::Range(">= 1.1, < 2".into()), "1.0.0", &["1.1.0", "2.0.0"], Some("1.1.0"));
}

#[test]
fn nothing_newer_stays() {
    check(TagPolicy::Range("^1.0".into()), "1.2.0", &["1.0.0", "1.2.0", "2.0.0"], None);
    check(TagPolicy::Range("^1.0".into()), "1.2.0", &[], None);
}

#[test]
fn levels_measure_from_the_running_tag() {
    let level = |level| rules(TagRules { level: Some(level), ..TagRules::default() });
    let tags = &["1.0.1", "1.1.0", "2.0.0", "2.1.0"];
    check(level(TagLevel::Patch), "1.0.0", tags, Some("1.0.1"));
    check(level(TagLevel::Minor), "1.0.0", tags, Some("1.1.0"));
    check(level(TagLevel::Major), "1.0.0", tags, Some("2.1.0"));
}

#[test]
fn pre_releases_only_when_asked() {
    let tags = &["1.2.0", "1.3.0-rc.1"];
    check(TagPolicy::Range("^1".into()), "1.2.0", tags, None);
    let asked = rules(TagRules { semver: Some("^1".into()), prerelease: Some(true), ..TagRules::default() });
    check(asked, "1.2.0", tags, Some("1.3.0-rc.1"));
}

#[test]
fn include_and_exclude_filter_tags() {
    let alpine = rules(TagRules {
        include: Some("-alpine$".into()),
        transform: Some(r"^(\d+\.\d+\.\d+)-alpine$ => $1".into()),
        ..TagRules::default()
    });
    check(alpine, "1.0.0-alpine", &["1.1.0", "1.1.0-alpine", "2.0.0-alpine"], Some("2.0.0-alpine"));
    let no_two = rules(TagRules { exclude: Some("^2\\.".into()), ..TagRules::default() });
    check(no_two, "1.0.0", &["1.1.0", "2.0.0"], Some("1.1.0"));
}

#[test]
fn transform_reads_prefixed_tags() {
    let prefixed = rules(TagRules {
        semver: Some("^1".into()),
        transform: Some(r"^release-(.*)$ => $1".into()),
        ..TagRules::default()
    });
    check(prefixed, "release-1.0.0", &["release-1.1.0", "release-2.0.0", "1.9.0"], Some("release-1.1.0"));
    // Without a transform a leading v is dropped and short versions are filled in.
    check(TagPolicy::Range("^1".into()), "v1.0", &["v1.1", "v1.0.5"], Some("v1.1"));
}

#[test]
fn an_unversioned_running_tag_moves_to_the_newest_allowed() {
    check(TagPolicy::Range("^1".into()), "latest", &["1.0.0", "1.5.0", "2.0.0"], Some("1.5.0"));
}

#[test]
fn compile_errors_name_the_field() {
    let field = |policy: TagPolicy| TagSelector::compile(&policy).unwrap_err().field;
    assert_eq!(field(TagPolicy::Range("not a range".into())), "tags");
    assert_eq!(field(rules(TagRules { semver: Some("^^1".into()), ..TagRules::default() })), "tags.semver");
    assert_eq!(field(rules(TagRules { include: Some("(".into()), ..TagRules::default() })), "tags.include");
    assert_eq!(field(rules(TagRules { exclude: Some("[".into()), ..TagRules::default() })), "tags.exclude");
    assert_eq!(
        field(rules(TagRules { transform: Some("no arrow".into()), ..TagRules::default() })),
        "tags.transform"
    );
}

fn at(hour: u32, minute: u32) -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 7, hour, minute, 0).unwrap()
}

#[test]
fn window_membership_same_day() {
    let window = DailyWindow::parse("02:00-04:00").unwrap();
    assert!(!window.contains(at(1, 59)));
    assert!(window.contains(at(2, 0)));
    assert!(window.contains(at(3, 59)));
    assert!(!window.contains(at(4, 0)));
    assert_eq!(window.until_open(at(1, 0)), std::time::Duration::from_secs(3600));
    assert_eq!(window.until_open(at(5, 0)), std::time::Duration::from_secs(21 * 3600));
    assert_eq!(window.until_open(at(3, 0)), std::time::Duration::ZERO);
}

#[test]
fn window_across_midnight() {
    let window = DailyWindow::parse("22:00-02:00").unwrap();
    assert!(window.contains(at(23, 0)));
    assert!(window.contains(at(0, 30)));
    assert!(!window.contains(at(2, 0)));
    assert!(!window.contains(at(12, 0)));
    assert_eq!(window.until_open(at(21, 0)), std::time::Duration::from_secs(3600));
}

#[test]
fn window_with_an_offset() {
    // 02:00-04:00 at +02:00 is 00:00-02:00 UTC.
    let window = DailyWindow::parse("02:00-04:00 +02:00").unwrap();
    assert!(window.contains(at(0, 30)));
    assert!(!window.contains(at(2, 30)));
}

#[test]
fn window_errors() {
    for text in
        ["", "2-4", "02:00", "02:00-02:00", "25:00-26:00", "02:00-04:00 Europe/Paris", "02:00-04:00 UTC x"]
    {
        let error = DailyWindow::parse(text).unwrap_err();
        assert_eq!(error.field, "window", "{text}");
    }
}
