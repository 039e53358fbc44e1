//! The pure half of `spec.updatePolicy`: compiling a tag policy and choosing the newest tag it
//! allows, parsing a daily window and telling whether a time is inside it. No IO: the agent and
//! `kedge check` list the tags and read the clock, validation compiles the same rules so that a
//! spec that is accepted always compiles.

use chrono::{DateTime, FixedOffset, NaiveTime, Utc};
use regex::Regex;
use semver::{Version, VersionReq};

use crate::container::{TagLevel, TagPolicy, TagRules};

/// A tag policy ready to choose tags. Built by [`TagSelector::compile`].
#[derive(Debug, Clone)]
pub struct TagSelector {
    range: Option<VersionReq>,
    level: Option<TagLevel>,
    include: Option<Regex>,
    exclude: Option<Regex>,
    transform: Option<(Regex, String)>,
    prerelease: bool,
}

/// A policy field that does not compile: the field under `spec.updatePolicy` and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFieldError {
    /// `tags`, `tags.semver`, `tags.include`, `window`...
    pub field: String,
    pub problem: String,
}

impl TagSelector {
    /// Compiles `policy`; the error names the field (`tags.include`) and the semver or regex
    /// crate's reason.
    pub fn compile(policy: &TagPolicy) -> Result<TagSelector, PolicyFieldError> {
        let rules = match policy {
            TagPolicy::Range(range) => {
                return Ok(TagSelector {
                    range: Some(parse_range(range, "tags")?),
                    level: None,
                    include: None,
                    exclude: None,
                    transform: None,
                    prerelease: false,
                });
            }
            TagPolicy::Rules(rules) => rules,
        };
        let TagRules { semver, level, include, exclude, transform, prerelease } = rules;
        let regex = |text: &str, field: &str| {
            Regex::new(text).map_err(|error| PolicyFieldError {
                field: field.to_owned(),
                problem: format!("not a regex: {}", one_line(&error.to_string())),
            })
        };
        let transform = match transform {
            None => None,
            Some(text) => {
                let (pattern, replacement) = text.split_once("=>").ok_or_else(|| PolicyFieldError {
                    field: "tags.transform".to_owned(),
                    problem: format!("{text:?} is not `REGEX => REPLACEMENT` (e.g. `^v(.*)$ => $1`)"),
                })?;
                Some((regex(pattern.trim(), "tags.transform")?, replacement.trim().to_owned()))
            }
        };
        Ok(TagSelector {
            range: semver.as_deref().map(|range| parse_range(range, "tags.semver")).transpose()?,
            level: *level,
            include: include.as_deref().map(|text| regex(text, "tags.include")).transpose()?,
            exclude: exclude.as_deref().map(|text| regex(text, "tags.exclude")).transpose()?,
            transform,
            prerelease: prerelease.unwrap_or(false),
        })
    }

    /// The version `tag` stands for under this policy's transform, if it reads as one.
    pub fn version_of(&self, tag: &str) -> Option<Version> {
        let text = match &self.transform {
            Some((pattern, replacement)) => {
                if !pattern.is_match(tag) {
                    return None;
                }
                pattern.replace(tag, replacement.as_str()).into_owned()
            }
            None => tag.to_owned(),
        };
        parse_loose_version(&text)
    }

    /// Whether `tag` may be taken at all (include, exclude, a version, pre-release rule, range),
    /// regardless of the running tag.
    fn allows(&self, tag: &str) -> Option<Version> {
        if self.include.as_ref().is_some_and(|include| !include.is_match(tag)) {
            return None;
        }
        if self.exclude.as_ref().is_some_and(|exclude| exclude.is_match(tag)) {
            return None;
        }
        let version = self.version_of(tag)?;
        if !version.pre.is_empty() && !self.prerelease {
            return None;
        }
        if let Some(range) = &self.range {
            // A range matches a pre-release only on its own major.minor.patch in the semver
            // crate; with pre-releases allowed the release part decides.
            let release = Version::new(version.major, version.minor, version.patch);
            if !range.matches(&release) {
                return None;
            }
        }
        Some(version)
    }

    /// The tag to run: the newest of `tags` the policy allows that is newer than `current` (the
    /// running tag), or `None` to stay. A `current` that reads as no version (`latest`) moves to
    /// the newest allowed tag; `level` is then not applied (there is nothing to measure from).
    pub fn select<'a>(&self, current: &str, tags: impl IntoIterator<Item = &'a str>) -> Option<String> {
        let current_version = self.version_of(current);
        let mut best: Option<(Version, &str)> = None;
        for tag in tags {
            let Some(version) = self.allows(tag) else { continue };
            if let Some(current) = &current_version {
                if version <= *current || !within_level(self.level, current, &version) {
                    continue;
                }
            }
            let better = match &best {
                None => true,
                // Equal versions (`1.2` and `1.2.0`): the longer spelling wins, so the choice does
                // not depend on the registry's order.
                Some((best_version, best_tag)) => {
                    version > *best_version || (version == *best_version && tag.len() > best_tag.len())
                }
            };
            if better {
                best = Some((version, tag));
            }
        }
        best.map(|(_, tag)| tag.to_owned())
    }
}

fn within_level(level: Option<TagLevel>, current: &Version, candidate: &Version) -> bool {
    match level {
        None | Some(TagLevel::Major) => true,
        Some(TagLevel::Minor) => candidate.major == current.major,
        Some(TagLevel::Patch) => candidate.major == current.major && candidate.minor == current.minor,
    }
}

/// A semver range; `">=1.2 <2"` (npm's space-separated form) is read as `">=1.2, <2"`.
fn parse_range(text: &str, field: &str) -> Result<VersionReq, PolicyFieldError> {
    let normalized = normalize_range(text);
    VersionReq::parse(&normalized).map_err(|error| PolicyFieldError {
        field: field.to_owned(),
        problem: format!("{text:?} is not a semver range: {error}"),
    })
}

fn normalize_range(text: &str) -> String {
    let mut out = String::new();
    let mut previous_was_operator = false;
    for word in text.split_whitespace() {
        let word_is_operator = word.chars().all(|c| matches!(c, '<' | '>' | '=' | '~' | '^'));
        if !out.is_empty() {
            if previous_was_operator || out.ends_with(',') || word.starts_with(',') {
                out.push(' ');
            } else {
                out.push_str(", ");
            }
        }
        out.push_str(word);
        previous_was_operator = word_is_operator;
    }
    out
}

/// `1.2.3`, `v1.2.3`, `1.2` (1.2.0), `1` (1.0.0), `1.2.3-rc.1`; anything else is no version.
pub fn parse_loose_version(text: &str) -> Option<Version> {
    let text = text.strip_prefix('v').unwrap_or(text);
    if let Ok(version) = Version::parse(text) {
        return Some(version);
    }
    let (core, pre) = match text.split_once('-') {
        Some((core, pre)) => (core, Some(pre)),
        None => (text, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    if parts.is_empty() || parts.len() > 2 || parts.iter().any(|part| part.is_empty()) {
        return None;
    }
    let mut full = parts.join(".");
    for _ in parts.len()..3 {
        full.push_str(".0");
    }
    if let Some(pre) = pre {
        full.push('-');
        full.push_str(pre);
    }
    Version::parse(&full).ok()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A daily time window (`"02:00-04:00"`, `"22:00-02:00"` across midnight, with an optional fixed
/// offset `"02:00-04:00 +02:00"`; UTC otherwise). Named zones (`Europe/Paris`) are not read:
/// that would take a zone database kedge does not carry, and a fixed offset says the same thing
/// outside summer-time changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DailyWindow {
    start: NaiveTime,
    end: NaiveTime,
    offset: FixedOffset,
}

impl DailyWindow {
    pub fn parse(text: &str) -> Result<DailyWindow, PolicyFieldError> {
        let error = |problem: String| PolicyFieldError { field: "window".to_owned(), problem };
        let mut words = text.split_whitespace();
        let range = words.next().ok_or_else(|| error("is empty; write HH:MM-HH:MM".to_owned()))?;
        let offset = match words.next() {
            None => FixedOffset::east_opt(0).expect("zero offset"),
            Some("UTC" | "Z" | "utc") => FixedOffset::east_opt(0).expect("zero offset"),
            Some(zone) => zone.parse::<FixedOffset>().map_err(|_| {
                error(format!(
                    "zone {zone:?} is not UTC or a fixed offset like +02:00 (named zones are not supported)"
                ))
            })?,
        };
        if let Some(extra) = words.next() {
            return Err(error(format!("unexpected {extra:?} after the zone")));
        }
        let (start, end) = range
            .split_once('-')
            .ok_or_else(|| error(format!("{range:?} is not HH:MM-HH:MM (e.g. 02:00-04:00)")))?;
        let time = |text: &str| {
            NaiveTime::parse_from_str(text, "%H:%M")
                .map_err(|_| error(format!("{text:?} is not a time HH:MM (00:00 to 23:59)")))
        };
        let (start, end) = (time(start)?, time(end)?);
        if start == end {
            return Err(error(format!("{range:?} is empty: start and end are the same time")));
        }
        Ok(DailyWindow { start, end, offset })
    }

    /// Whether `now` is in the window (start included, end excluded).
    pub fn contains(&self, now: DateTime<Utc>) -> bool {
        let local = now.with_timezone(&self.offset).time();
        if self.start < self.end {
            self.start <= local && local < self.end
        } else {
            local >= self.start || local < self.end
        }
    }

    /// How long from `now` until the window next opens (zero when inside it).
    pub fn until_open(&self, now: DateTime<Utc>) -> std::time::Duration {
        if self.contains(now) {
            return std::time::Duration::ZERO;
        }
        let local = now.with_timezone(&self.offset).time();
        let mut wait = self.start.signed_duration_since(local);
        if wait < chrono::TimeDelta::zero() {
            wait += chrono::TimeDelta::days(1);
        }
        wait.to_std().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests;
