//! The agent's side of `spec.updatePolicy`: which image reference a spec runs (its own, or a newer
//! tag its tag policy allows), what the registry says that reference names now, and whether an
//! update found may be taken now (`mode`, `window`, `minAge`).
//!
//! The spec in the store is never rewritten. A newer tag lives in `status.update.resolvedImage`
//! (written with the status, read back from it after an agent restart) and the planner is handed
//! a copy of the spec with that image, so drift, the recreate and the executor all see one image.
//! A spec whose `image` changes drops the resolved tag: the user's word wins.
//!
//! minAge counts from when this agent first saw a digest (`status.update.firstSeen`), not from the
//! image config's `created` time: that takes only the HEAD the check makes anyway (the config blob
//! would be two more GETs per check), it works for every registry, and it is not fooled by
//! reproducible builds, which set `created` to 1970 and would make every image old enough.

use std::time::Duration;

use chrono::{DateTime, Utc};
use kedge_crds::meta::rfc3339;
use kedge_crds::{
    Container, DailyWindow, ImageCheck, ImageReference, ImageUpdateStatus, TagSelector, UpdateMode,
    UpdatePolicy,
};

use kedge_crds::event::EventType;

use crate::registry::RegistryClient;

/// Default period of image checks when the spec sets none.
pub(crate) const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// How many digests `status.update.firstSeen` keeps (the newest).
const FIRST_SEEN_KEPT: usize = 16;

/// What the registry said before planning.
#[derive(Debug, Clone, Default)]
pub(crate) struct Findings {
    /// The reference to run instead of `spec.image` (a newer tag taken earlier or now).
    pub(crate) run_image: Option<String>,
    /// A newer tag found, before the hold rules decide whether it is taken.
    pub(crate) newer_tag: Option<String>,
    /// What the registry's digest for the reference to run is now.
    pub(crate) registry_digest: Option<String>,
    /// The digest the newer tag names (for minAge).
    pub(crate) newer_digest: Option<String>,
    /// The status to carry: previous one (if for this spec image) with the check's news.
    pub(crate) status: ImageUpdateStatus,
    /// A registry error, logged and otherwise ignored (not knowing is not an update).
    pub(crate) error: Option<String>,
}

/// Why an update found is not taken now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hold {
    Notify,
    OutsideWindow,
    TooYoung,
}

impl Hold {
    pub(crate) fn reason(self) -> &'static str {
        match self {
            Hold::Notify => "Notify",
            Hold::OutsideWindow => "OutsideWindow",
            Hold::TooYoung => "TooYoung",
        }
    }
}

/// Whether a spec's policy needs this module at all (beyond the planner's own same-tag check).
pub(crate) fn applies(spec: &Container) -> bool {
    spec.spec
        .update_policy
        .as_ref()
        .is_some_and(|policy| policy.image_check.unwrap_or_default() != ImageCheck::None)
}

/// Asks the registry (when the policy checks it) about the reference this spec runs, and about
/// newer tags under its tag policy. `max_age` is the spec's interval: an answer another spec got
/// for the same reference within it is reused.
pub(crate) async fn find(
    registry: &RegistryClient,
    spec: &Container,
    previous: Option<&ImageUpdateStatus>,
    max_age: Duration,
    now: DateTime<Utc>,
) -> Findings {
    let spec_image = spec.spec.image.to_string();
    let policy = spec.spec.update_policy.clone().unwrap_or_default();
    let mut status =
        previous.filter(|previous| previous.spec_image == spec_image).cloned().unwrap_or_else(|| {
            ImageUpdateStatus { spec_image: spec_image.clone(), ..ImageUpdateStatus::default() }
        });
    let run_image = status.resolved_image.clone();
    let mut findings = Findings { run_image: run_image.clone(), ..Findings::default() };
    if policy.image_check.unwrap_or_default() != ImageCheck::Registry {
        findings.status = status;
        return findings;
    }
    let running: ImageReference = match run_image.as_deref().unwrap_or(&spec_image).parse() {
        Ok(reference) => reference,
        Err(error) => {
            findings.error = Some(error);
            findings.status = status;
            return findings;
        }
    };
    status.last_check = Some(rfc3339(now));
    match registry.digest(&running, max_age).await {
        Ok(digest) => {
            note_first_seen(&mut status, &digest, now);
            findings.registry_digest = Some(digest);
        }
        Err(error) => findings.error = Some(error.to_string()),
    }
    if let Some(tags) = &policy.tags {
        match TagSelector::compile(tags) {
            Ok(selector) => match registry.tags(&running, max_age).await {
                Ok(listed) => {
                    let current = running.tag_or_default();
                    if let Some(tag) = selector.select(current, listed.iter().map(String::as_str)) {
                        let newer = ImageReference { tag: Some(tag), digest: None, ..running.clone() };
                        match registry.digest(&newer, max_age).await {
                            Ok(digest) => {
                                note_first_seen(&mut status, &digest, now);
                                findings.newer_digest = Some(digest);
                            }
                            Err(error) => findings.error = Some(error.to_string()),
                        }
                        findings.newer_tag = Some(newer.to_string());
                    }
                }
                Err(error) => findings.error = Some(error.to_string()),
            },
            // Validation compiles the same rules: only a spec stored before it did gets here.
            Err(error) => findings.error = Some(format!("updatePolicy.{}: {}", error.field, error.problem)),
        }
    }
    findings.status = status;
    findings
}

/// Whether an update may be taken now; `None`: take it.
pub(crate) fn hold(
    policy: &UpdatePolicy,
    digest: Option<&str>,
    status: &ImageUpdateStatus,
    now: DateTime<Utc>,
) -> Option<Hold> {
    if policy.mode.unwrap_or_default() == UpdateMode::Notify {
        return Some(Hold::Notify);
    }
    if let Some(window) = policy.window.as_deref().and_then(|window| DailyWindow::parse(window).ok()) {
        if !window.contains(now) {
            return Some(Hold::OutsideWindow);
        }
    }
    if let (Some(min_age), Some(digest)) = (policy.min_age, digest) {
        if !old_enough(status.first_seen.get(digest).map(String::as_str), min_age.duration(), now) {
            return Some(Hold::TooYoung);
        }
    }
    None
}

/// Whether a digest first seen at `first_seen` (RFC 3339) is at least `min_age` old at `now`. A
/// digest never seen, or a time that does not read, is young: the safe side.
pub(crate) fn old_enough(first_seen: Option<&str>, min_age: Duration, now: DateTime<Utc>) -> bool {
    let Some(seen) = first_seen.and_then(|seen| DateTime::parse_from_rfc3339(seen).ok()) else {
        return false;
    };
    let age = now.signed_duration_since(seen.with_timezone(&Utc));
    age.to_std().is_ok_and(|age| age >= min_age)
}

/// When a held update may be looked at again: the window's opening, or when the digest is old
/// enough, if sooner than the next check anyway.
pub(crate) fn recheck_after(
    policy: &UpdatePolicy,
    hold: Hold,
    digest: Option<&str>,
    status: &ImageUpdateStatus,
    now: DateTime<Utc>,
) -> Option<Duration> {
    match hold {
        Hold::Notify => None,
        Hold::OutsideWindow => policy
            .window
            .as_deref()
            .and_then(|window| DailyWindow::parse(window).ok())
            .map(|w| w.until_open(now)),
        Hold::TooYoung => {
            let seen = digest.and_then(|digest| status.first_seen.get(digest))?;
            let seen = DateTime::parse_from_rfc3339(seen).ok()?.with_timezone(&Utc);
            let ripe = seen + chrono::Duration::from_std(policy.min_age?.duration()).ok()?;
            Some((ripe - now).to_std().unwrap_or_default())
        }
    }
}

/// A registry check interval with up to 10% of jitter, so that agents started together spread
/// their requests.
pub(crate) fn jittered(interval: Duration) -> Duration {
    let tenth = interval.as_millis() / 10;
    let tenth = u64::try_from(tenth).unwrap_or(u64::MAX);
    if tenth == 0 {
        return interval;
    }
    interval + Duration::from_millis(rand::random_range(0..=tenth))
}

fn note_first_seen(status: &mut ImageUpdateStatus, digest: &str, now: DateTime<Utc>) {
    if status.first_seen.contains_key(digest) {
        return;
    }
    status.first_seen.insert(digest.to_owned(), rfc3339(now));
    // Keep the newest few: a tag that moves every hour must not grow the status for ever.
    while status.first_seen.len() > FIRST_SEEN_KEPT {
        let oldest = status.first_seen.iter().min_by(|a, b| a.1.cmp(b.1)).map(|(digest, _)| digest.clone());
        match oldest {
            Some(digest) => status.first_seen.remove(&digest),
            None => break,
        };
    }
}

/// One reconcile's update check: the findings and what was decided about them.
#[derive(Debug, Default)]
pub(crate) struct UpdateCheck {
    /// `None` for a spec without an image check.
    findings: Option<Findings>,
    /// The reference to run when it is not `spec.image`.
    run_image: Option<String>,
    /// The digest the reference to run names in the registry now.
    digest: Option<String>,
    /// A newer tag taken by this check (so a recreate now is its UpdateApplied).
    took_newer_tag: Option<String>,
    /// The same tag moved and the move is taken (imageCheck local or registry).
    same_tag_moved: Option<String>,
    /// Why an update found is held, with the digest the hold is about.
    held: Option<(Hold, Option<String>)>,
    /// The status to write.
    status: Option<ImageUpdateStatus>,
    /// What `status.update.available` said before this check.
    previously_available: Option<String>,
}

impl UpdateCheck {
    /// A copy of `spec` that runs the resolved newer tag, when there is one.
    pub(crate) fn spec_to_run(&self, spec: &Container) -> Option<Container> {
        let image: ImageReference = self.run_image.as_deref()?.parse().ok()?;
        let mut copy = spec.clone();
        copy.spec.image = image;
        Some(copy)
    }

    pub(crate) fn registry_digest(&self) -> Option<String> {
        self.digest.clone()
    }

    pub(crate) fn status(&self) -> Option<ImageUpdateStatus> {
        self.status.clone()
    }

    /// A same-tag move (the local tag or the registry's digest names another image than the
    /// container runs) is held by the policy's mode, window or minAge: the planner is told
    /// nothing moved, and the status says what is available. A newer tag taken by this check
    /// is not held again here.
    pub(crate) fn hold_same_tag(
        &mut self,
        spec: &Container,
        observed: Option<&crate::docker::ObservedContainer>,
        facts: &mut crate::planner::ImageFacts,
        now: DateTime<Utc>,
    ) {
        let (Some(status), Some(container)) = (self.status.as_mut(), observed) else { return };
        if self.took_newer_tag.is_some() {
            return;
        }
        let policy = spec.spec.update_policy.clone().unwrap_or_default();
        let reference = self.run_image.clone().unwrap_or_else(|| spec.spec.image.to_string());
        let moved = match policy.image_check.unwrap_or_default() {
            ImageCheck::None => None,
            ImageCheck::Local => facts
                .local_image_id
                .as_ref()
                .filter(|local| **local != container.image_id)
                .map(|local| format!("{reference} (image {})", short(local))),
            ImageCheck::Registry => facts
                .registry_digest
                .as_ref()
                .filter(|digest| {
                    !facts.running_repo_digests.iter().any(|running| {
                        running.rsplit_once('@').is_some_and(|(_, running)| running == *digest)
                    })
                })
                .map(|digest| format!("{reference}@{digest}")),
        };
        let Some(moved) = moved else {
            if self.held.is_none() {
                status.available = None;
                status.held_reason = None;
            }
            return;
        };
        let digest = facts.registry_digest.clone();
        match hold(&policy, digest.as_deref(), status, now) {
            None => self.same_tag_moved = Some(moved),
            Some(why) => {
                // Not taking it: the planner must not see it either.
                match policy.image_check.unwrap_or_default() {
                    ImageCheck::Registry => facts.registry_digest = None,
                    _ => facts.local_image_id = Some(container.image_id.clone()),
                }
                status.available = Some(moved);
                status.held_reason = Some(why.reason().to_owned());
                self.held = Some((why, digest));
            }
        }
    }

    /// How soon to look again because a hold ends (the window opens, a digest ages).
    pub(crate) fn recheck_after(&self, spec: &Container, now: DateTime<Utc>) -> Option<Duration> {
        let (why, digest) = self.held.as_ref()?;
        let policy = spec.spec.update_policy.as_ref()?;
        recheck_after(policy, *why, digest.as_deref(), self.status.as_ref()?, now)
    }
}

impl super::Agent {
    /// The registry side of the update policy, before planning: see [`UpdateCheck`].
    pub(crate) async fn check_updates(
        &self,
        key: &str,
        spec: &Container,
        previous: Option<&kedge_crds::ContainerStatus>,
        now: DateTime<Utc>,
    ) -> UpdateCheck {
        if !applies(spec) {
            return UpdateCheck::default();
        }
        let policy = spec.spec.update_policy.clone().unwrap_or_default();
        let interval = policy.interval().map_or(DEFAULT_CHECK_INTERVAL, |interval| interval.duration());
        let previous = previous.and_then(|status| status.update.as_ref());
        let findings = find(&self.registry, spec, previous, interval, now).await;
        if let Some(error) = &findings.error {
            // Not knowing is not an update: keep the container, say why in the log.
            tracing::warn!(key, %error, "update check: could not ask the registry");
        }
        let mut status = findings.status.clone();
        let mut check = UpdateCheck {
            run_image: findings.run_image.clone(),
            digest: findings.registry_digest.clone(),
            previously_available: previous.and_then(|previous| previous.available.clone()),
            ..UpdateCheck::default()
        };
        if let Some(newer) = &findings.newer_tag {
            match hold(&policy, findings.newer_digest.as_deref(), &status, now) {
                None => {
                    status.resolved_image = Some(newer.clone());
                    status.available = None;
                    status.held_reason = None;
                    check.run_image = Some(newer.clone());
                    check.digest = findings.newer_digest.clone();
                    check.took_newer_tag = Some(newer.clone());
                }
                Some(why) => {
                    status.available = Some(newer.clone());
                    status.held_reason = Some(why.reason().to_owned());
                    check.held = Some((why, findings.newer_digest.clone()));
                }
            }
        }
        check.status = Some(status);
        check.findings = Some(findings);
        check
    }

    /// Records UpdateAvailable when an update is newly found and held, and UpdateApplied when
    /// this reconcile replaced the container for one. Both are notified (notify.rs).
    pub(crate) async fn report_updates(
        &self,
        key: &str,
        check: &UpdateCheck,
        recreated: bool,
        before: Option<&str>,
        after: Option<&crate::docker::ObservedContainer>,
    ) {
        let Some(status) = &check.status else { return };
        if let (Some(available), Some((why, _))) = (&status.available, &check.held) {
            if check.previously_available.as_ref() != Some(available) {
                let message = match why {
                    Hold::Notify => format!("update available: {available} (mode notify: not applied)"),
                    Hold::OutsideWindow => {
                        format!("update available: {available}; applied in the update window")
                    }
                    Hold::TooYoung => {
                        format!("update available: {available}; applied once it is older than minAge")
                    }
                };
                self.events.record(key, EventType::Normal, "UpdateAvailable", &message).await;
            }
        }
        let replaced = before.is_some() && after.map(|after| after.id.as_str()) != before;
        if recreated && replaced {
            let what = check.took_newer_tag.clone().or_else(|| check.same_tag_moved.clone());
            if let Some(what) = what {
                let message = format!(
                    "updated to {what}: container {} replaced by {}",
                    short(before.unwrap_or_default()),
                    after.map_or("", |after| short(&after.id))
                );
                self.config.metrics.update_applied();
                self.events.record(key, EventType::Normal, "UpdateApplied", &message).await;
            }
        }
    }
}

fn short(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 7, hour, 0, 0).unwrap()
    }

    #[test]
    fn min_age_counts_from_first_seen() {
        let hour = Duration::from_secs(3600);
        assert!(!old_enough(None, hour, at(5)), "never seen is young");
        assert!(!old_enough(Some(&rfc3339(at(5))), hour, at(5)), "just seen is young");
        assert!(old_enough(Some(&rfc3339(at(4))), hour, at(5)));
        assert!(!old_enough(Some("yesterday"), hour, at(5)), "unreadable is young");
        assert!(!old_enough(Some(&rfc3339(at(6))), hour, at(5)), "seen in the future is young");
    }

    fn policy(text: &str) -> UpdatePolicy {
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn holds_in_order_notify_window_age() {
        let mut status = ImageUpdateStatus::default();
        status.first_seen.insert("sha256:a".into(), rfc3339(at(4)));
        let notify = policy(r#"{"mode": "notify"}"#);
        assert_eq!(hold(&notify, Some("sha256:a"), &status, at(5)), Some(Hold::Notify));
        let window = policy(r#"{"window": "02:00-04:00"}"#);
        assert_eq!(hold(&window, Some("sha256:a"), &status, at(5)), Some(Hold::OutsideWindow));
        assert_eq!(hold(&window, Some("sha256:a"), &status, at(3)), None);
        assert_eq!(
            recheck_after(&window, Hold::OutsideWindow, None, &status, at(5)),
            Some(Duration::from_secs(21 * 3600))
        );
        let two_hours = policy(r#"{"minAge": "2h"}"#);
        assert_eq!(hold(&two_hours, Some("sha256:a"), &status, at(5)), Some(Hold::TooYoung));
        assert_eq!(
            recheck_after(&two_hours, Hold::TooYoung, Some("sha256:a"), &status, at(5)),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(hold(&two_hours, Some("sha256:a"), &status, at(6)), None);
        assert_eq!(hold(&policy("{}"), Some("sha256:a"), &status, at(5)), None);
    }

    #[test]
    fn first_seen_is_kept_and_bounded() {
        let mut status = ImageUpdateStatus::default();
        note_first_seen(&mut status, "sha256:a", at(1));
        note_first_seen(&mut status, "sha256:a", at(2));
        assert_eq!(status.first_seen.get("sha256:a"), Some(&rfc3339(at(1))), "the first sighting stays");
        for index in 0..40 {
            note_first_seen(
                &mut status,
                &format!("sha256:{index}"),
                at(2) + chrono::Duration::minutes(index),
            );
        }
        assert_eq!(status.first_seen.len(), FIRST_SEEN_KEPT);
        assert!(!status.first_seen.contains_key("sha256:a"), "the oldest goes first");
    }

    #[test]
    fn jitter_stays_within_a_tenth() {
        let interval = Duration::from_secs(100);
        for _ in 0..50 {
            let next = jittered(interval);
            assert!(next >= interval && next <= Duration::from_secs(110), "{next:?}");
        }
    }
}
