//! A registry's rate-limit headers (Docker Hub's `ratelimit-limit: 100;w=21600`,
//! `ratelimit-remaining: 76;w=21600`) and how long to leave the registry alone.
//!
//! The rule: with at most a tenth of the limit left, checks are spaced so that what remains lasts
//! the rest of the window (`window / remaining`); with nothing left, the whole window. A 429 waits
//! for its `Retry-After`, or a minute without one. Far from the limit nothing waits.

use std::time::Duration;

/// What the headers said. The window defaults to Docker Hub's six hours when not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u64,
    pub remaining: u64,
    pub window: Duration,
}

const DEFAULT_WINDOW: Duration = Duration::from_secs(6 * 3600);
const RETRY_WITHOUT_RETRY_AFTER: Duration = Duration::from_secs(60);

impl RateLimit {
    /// Reads the two headers; `None` unless both are there and read as numbers.
    pub fn from_headers(remaining: Option<&str>, limit: Option<&str>) -> Option<RateLimit> {
        let (remaining, remaining_window) = count_and_window(remaining?)?;
        let (limit, limit_window) = count_and_window(limit?)?;
        let window = remaining_window.or(limit_window).unwrap_or(DEFAULT_WINDOW);
        Some(RateLimit { limit, remaining, window })
    }
}

/// `76;w=21600` as (76, Some(21600 s)).
fn count_and_window(text: &str) -> Option<(u64, Option<Duration>)> {
    let mut parts = text.split(';');
    let count = parts.next()?.trim().parse().ok()?;
    let window = parts.find_map(|part| {
        let (key, value) = part.trim().split_once('=')?;
        (key.trim() == "w").then(|| value.trim().parse().ok().map(Duration::from_secs)).flatten()
    });
    Some((count, window))
}

/// How long to leave the registry alone after an answer, if at all.
pub fn pause(
    too_many_requests: bool,
    retry_after_seconds: Option<u64>,
    limit: Option<RateLimit>,
) -> Option<Duration> {
    if too_many_requests {
        return Some(retry_after_seconds.map_or(RETRY_WITHOUT_RETRY_AFTER, Duration::from_secs));
    }
    let limit = limit?;
    if limit.limit == 0 {
        return None;
    }
    if limit.remaining == 0 {
        return Some(limit.window);
    }
    if limit.remaining.saturating_mul(10) <= limit.limit {
        let window_ms = u64::try_from(limit.window.as_millis()).unwrap_or(u64::MAX);
        return Some(Duration::from_millis(window_ms / limit.remaining));
    }
    None
}
