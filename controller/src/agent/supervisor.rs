//! Supervision of the agent's long-lived tasks: a task that panics, or returns while it should run
//! on, is logged with its name and started again after a backoff; one that keeps dying makes the
//! agent unhealthy (`GET /healthz` answers 503 naming it).
//!
//! Promises:
//! - A task's death never goes unnoticed: every panic and every early return is logged (`error`)
//!   with the task's name and the panic's message, and counted in [`Health`].
//! - Restarts back off exponentially with jitter, from [`SupervisorConfig::min_delay`] to
//!   [`SupervisorConfig::max_delay`]; a run that lasted [`SupervisorConfig::reset_after`] starts the
//!   backoff over.
//! - A task that died [`SupervisorConfig::unhealthy_deaths`] times within
//!   [`SupervisorConfig::window`] makes [`Health::report`] unhealthy until enough of those deaths
//!   have aged out of the window.
//! - Once `stopping` is cancelled, a task's end is its normal end: nothing is restarted or counted.
//!
//! The scheduler task also runs the ContainerSet controller and the upgrade campaign driver (they
//! are passes of its leader loop), so all three are supervised as `scheduler`.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use futures::FutureExt;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// How tasks are restarted and when the agent counts as unhealthy.
#[derive(Debug, Clone, Copy)]
pub struct SupervisorConfig {
    /// The first restart's delay.
    pub min_delay: Duration,
    /// The longest delay between restarts.
    pub max_delay: Duration,
    /// A run at least this long resets the backoff.
    pub reset_after: Duration,
    /// This many deaths of one task within [`Self::window`] make the agent unhealthy.
    pub unhealthy_deaths: usize,
    pub window: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> SupervisorConfig {
        SupervisorConfig {
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(30),
            reset_after: Duration::from_secs(60),
            unhealthy_deaths: 5,
            window: Duration::from_secs(600),
        }
    }
}

/// The deaths of every supervised task, shared by the supervisors and the API's `/healthz`.
#[derive(Debug, Default)]
pub struct Health {
    config: SupervisorConfig,
    tasks: Mutex<BTreeMap<&'static str, TaskDeaths>>,
}

#[derive(Debug, Default)]
struct TaskDeaths {
    /// Within the window, oldest first.
    recent: VecDeque<Instant>,
    total: u64,
    last_error: String,
}

/// What `/healthz` reports: healthy, or the tasks that keep dying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    /// Every task that died within the window, unhealthy or not.
    pub tasks: Vec<TaskReport>,
}

/// One task that died recently.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskReport {
    pub name: String,
    /// Deaths within the window.
    pub recent_deaths: usize,
    /// Deaths since the agent started.
    pub total_deaths: u64,
    pub window_seconds: u64,
    /// True when this task alone makes the agent unhealthy.
    pub unhealthy: bool,
    pub last_error: String,
}

impl Health {
    pub fn new(config: SupervisorConfig) -> Health {
        Health { config, tasks: Mutex::default() }
    }

    pub fn config(&self) -> SupervisorConfig {
        self.config
    }

    /// Records a death of `task` at `now`.
    pub fn died(&self, task: &'static str, error: String, now: Instant) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let deaths = tasks.entry(task).or_default();
        deaths.recent.push_back(now);
        deaths.total += 1;
        deaths.last_error = error;
        prune(&mut deaths.recent, self.config.window, now);
    }

    /// The agent's health at `now`: unhealthy while a task died `unhealthy_deaths` times in the window.
    pub fn report_at(&self, now: Instant) -> HealthReport {
        let mut tasks = self.tasks.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut reports = Vec::new();
        for (name, deaths) in tasks.iter_mut() {
            prune(&mut deaths.recent, self.config.window, now);
            if deaths.recent.is_empty() {
                continue;
            }
            reports.push(TaskReport {
                name: (*name).to_owned(),
                recent_deaths: deaths.recent.len(),
                total_deaths: deaths.total,
                window_seconds: self.config.window.as_secs(),
                unhealthy: deaths.recent.len() >= self.config.unhealthy_deaths,
                last_error: deaths.last_error.clone(),
            });
        }
        HealthReport { healthy: reports.iter().all(|task| !task.unhealthy), tasks: reports }
    }

    pub fn report(&self) -> HealthReport {
        self.report_at(Instant::now())
    }
}

fn prune(recent: &mut VecDeque<Instant>, window: Duration, now: Instant) {
    while recent.front().is_some_and(|at| now.saturating_duration_since(*at) >= window) {
        recent.pop_front();
    }
}

/// Runs the task `start()` makes, as `name`, until `stopping` is cancelled: a panic or an early
/// return is logged and counted in `health`, and the task is started again after a backoff.
pub(crate) async fn supervise<F, Fut>(
    name: &'static str,
    health: std::sync::Arc<Health>,
    stopping: CancellationToken,
    mut start: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let config = health.config();
    let mut backoff = restart_backoff(config);
    loop {
        // Tokio's clock, so that paused-time tests see the run's length.
        let started = tokio::time::Instant::now();
        let run = async {
            #[cfg(feature = "failpoints")]
            crate::executor::failpoint::panic_task(name);
            start().await
        };
        let outcome = AssertUnwindSafe(run).catch_unwind().await;
        if stopping.is_cancelled() {
            if let Err(payload) = outcome {
                let message = panic_message(payload.as_ref());
                tracing::error!(task = name, panic = %message, "an agent task panicked while the agent stops");
            }
            return;
        }
        let error = match outcome {
            Ok(()) => "returned while the agent runs".to_owned(),
            Err(payload) => format!("panicked: {}", panic_message(payload.as_ref())),
        };
        if started.elapsed() >= config.reset_after {
            backoff = restart_backoff(config);
        }
        let delay = backoff.next().unwrap_or(config.max_delay);
        health.died(name, error.clone(), Instant::now());
        tracing::error!(task = name, %error, restart_in = ?delay, "an agent task died; restarting it");
        tokio::select! {
            _ = stopping.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The message a panic was raised with (`panic!("...")`), or a placeholder.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

fn restart_backoff(config: SupervisorConfig) -> backon::ExponentialBackoff {
    ExponentialBuilder::default()
        .with_min_delay(config.min_delay)
        .with_max_delay(config.max_delay)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn config() -> SupervisorConfig {
        SupervisorConfig {
            min_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            reset_after: Duration::from_secs(60),
            unhealthy_deaths: 3,
            window: Duration::from_secs(100),
        }
    }

    #[test]
    fn a_task_that_keeps_dying_is_unhealthy_until_its_deaths_age_out() {
        let health = Health::new(config());
        let t0 = Instant::now();
        health.died("scheduler", "panicked: one".into(), t0);
        health.died("scheduler", "panicked: two".into(), t0 + Duration::from_secs(10));
        health.died("follow-store", "returned".into(), t0 + Duration::from_secs(10));
        let report = health.report_at(t0 + Duration::from_secs(20));
        assert!(report.healthy);
        assert_eq!(report.tasks.len(), 2);
        health.died("scheduler", "panicked: three".into(), t0 + Duration::from_secs(30));
        let report = health.report_at(t0 + Duration::from_secs(31));
        assert!(!report.healthy);
        let scheduler = report.tasks.iter().find(|t| t.name == "scheduler").unwrap();
        assert_eq!((scheduler.recent_deaths, scheduler.unhealthy), (3, true));
        assert_eq!(scheduler.last_error, "panicked: three");
        // The first death leaves the window: healthy again, the task still listed.
        let report = health.report_at(t0 + Duration::from_secs(100));
        assert!(report.healthy);
        assert_eq!(report.tasks.iter().find(|t| t.name == "scheduler").unwrap().recent_deaths, 2);
        let report = health.report_at(t0 + Duration::from_secs(200));
        assert_eq!(report, HealthReport { healthy: true, tasks: vec![] });
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_task_is_restarted_with_backoff_and_counted() {
        let health = Arc::new(Health::new(SupervisorConfig { unhealthy_deaths: 10, ..config() }));
        let stopping = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let supervisor = {
            let (health, stopping, runs) = (health.clone(), stopping.clone(), runs.clone());
            tokio::spawn(supervise("flaky", health, stopping.clone(), move || {
                let (runs, stopping) = (runs.clone(), stopping.clone());
                async move {
                    if runs.fetch_add(1, Ordering::SeqCst) < 3 {
                        panic!("run failed");
                    }
                    stopping.cancelled().await;
                }
            }))
        };
        // Jittered delays: 1-2 s, 2-4 s, 4-8 s; all three restarts are done within 14 s.
        tokio::time::sleep(Duration::from_millis(900)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1, "no restart before the first delay");
        tokio::time::sleep(Duration::from_secs(14)).await;
        assert_eq!(runs.load(Ordering::SeqCst), 4);
        let report = health.report();
        assert_eq!(report.tasks[0].total_deaths, 3);
        assert_eq!(report.tasks[0].last_error, "panicked: run failed");
        stopping.cancel();
        supervisor.await.unwrap();
        assert_eq!(health.report().tasks[0].total_deaths, 3, "a stop is not a death");
    }

    #[tokio::test(start_paused = true)]
    async fn a_long_run_starts_the_backoff_over() {
        // Runs: die at once, at once, then after 70 s (past reset_after), then live. Without the
        // reset the third restart would wait 4-8 s; with it, 1-2 s.
        let health = Arc::new(Health::new(SupervisorConfig { unhealthy_deaths: 10, ..config() }));
        let stopping = CancellationToken::new();
        let starts = Arc::new(Mutex::new(Vec::<tokio::time::Instant>::new()));
        let supervisor = {
            let (health, stopping, starts) = (health.clone(), stopping.clone(), starts.clone());
            tokio::spawn(supervise("long", health, stopping.clone(), move || {
                let (starts, stopping) = (starts.clone(), stopping.clone());
                async move {
                    let run = {
                        let mut starts = starts.lock().unwrap();
                        starts.push(tokio::time::Instant::now());
                        starts.len()
                    };
                    match run {
                        1 | 2 => panic!("early"),
                        3 => tokio::time::sleep(Duration::from_secs(70)).await,
                        _ => stopping.cancelled().await,
                    }
                }
            }))
        };
        tokio::time::sleep(Duration::from_secs(120)).await;
        let starts = starts.lock().unwrap().clone();
        assert_eq!(starts.len(), 4, "{starts:?}");
        let last_delay = starts[3] - starts[2] - Duration::from_secs(70);
        assert!(
            last_delay >= Duration::from_secs(1) && last_delay <= Duration::from_secs(2),
            "{last_delay:?}"
        );
        stopping.cancel();
        supervisor.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_task_that_returns_early_is_a_death_and_restarted() {
        let health = Arc::new(Health::new(config()));
        let stopping = CancellationToken::new();
        let runs = Arc::new(AtomicU32::new(0));
        let supervisor = {
            let (health, stopping, runs) = (health.clone(), stopping.clone(), runs.clone());
            tokio::spawn(supervise("quitter", health, stopping, move || {
                runs.fetch_add(1, Ordering::SeqCst);
                async {}
            }))
        };
        tokio::time::sleep(Duration::from_secs(30)).await;
        let report = health.report();
        assert!(!report.healthy, "three early returns within the window");
        assert_eq!(report.tasks[0].name, "quitter");
        assert_eq!(report.tasks[0].last_error, "returned while the agent runs");
        stopping.cancel();
        supervisor.await.unwrap();
        assert!(runs.load(Ordering::SeqCst) >= 4);
    }
}
