//! The old container of a start-first recreate whose new container is proven: stopped (with its
//! stop grace period) and removed in the background, so the recreate ends, and its worker is free,
//! as soon as the new container holds the name.
//!
//! Before the new container takes the name, the old one is renamed `<name>-kedge-retired-<id>`.
//! That name is the durable record that the new container was proven: recovery (recover.rs) never
//! rolls such a recreate back, it gives the new container the name if it does not hold it yet and
//! retires the old container again. A retired container is never started again.
//!
//! A retirement keeps the old container's volumes (the new container mounts its anonymous ones by
//! name), and removes its image afterwards only when asked and no container uses it. Each old
//! container is retired at most once at a time per executor; a failed retirement is logged and
//! retried by the next recovery of its name (each reconcile of its key, or the agent's start).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tracing::{info, info_span, warn, Instrument};

use super::failpoint::fail_point;
use super::Executor;
use crate::docker::{Engine, RemoveOptions};

/// The retirements in flight: old container IDs, and a wake-up each time one ends.
#[derive(Debug, Default)]
pub(crate) struct Retirements {
    in_flight: Mutex<BTreeSet<String>>,
    ended: Notify,
}

/// One old container to stop and remove.
#[derive(Debug, Clone)]
pub(crate) struct Retirement {
    pub(crate) old_id: String,
    /// `None`: the container's own stop timeout.
    pub(crate) stop_timeout: Option<Duration>,
    /// Remove the old image afterwards when it is not the new container's and nothing uses it:
    /// `(old image ID, new container ID)`.
    pub(crate) remove_image: Option<(String, String)>,
}

impl Executor {
    /// Stops and removes `retirement.old_id` in the background, unless it is already being retired.
    /// The caller has renamed it to its retired name, with the new container proven.
    pub(crate) fn retire(&self, retirement: Retirement) {
        {
            let mut in_flight = self.retirements.in_flight.lock().unwrap_or_else(PoisonError::into_inner);
            if !in_flight.insert(retirement.old_id.clone()) {
                return;
            }
        }
        let engine = Arc::clone(&self.docker);
        let retirements = Arc::clone(&self.retirements);
        let span = info_span!("retire_old", old_id = %retirement.old_id);
        tokio::spawn(
            async move {
                stop_and_remove(engine.as_ref(), &retirement).await;
                retirements
                    .in_flight
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&retirement.old_id);
                retirements.ended.notify_waiters();
            }
            .instrument(span),
        );
    }

    /// Waits until no retirement is in flight (an agent shutting down, a test).
    pub async fn wait_retired(&self) {
        loop {
            let ended = self.retirements.ended.notified();
            if self.retirements_in_flight() == 0 {
                return;
            }
            ended.await;
        }
    }

    /// How many old containers are being stopped and removed in the background right now.
    pub fn retirements_in_flight(&self) -> usize {
        self.retirements.in_flight.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// Stops and removes one old container; a container already gone is retired.
async fn stop_and_remove(engine: &dyn Engine, retirement: &Retirement) {
    let old_id = retirement.old_id.as_str();
    match engine.stop_container(old_id, retirement.stop_timeout).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return,
        // The forced removal below kills it.
        Err(e) => warn!(old_id, error = %e, "could not stop the retired container; removing it by force"),
    }
    fail_point!("retire.after_stop_old");
    let options = RemoveOptions { force: true, anonymous_volumes: false };
    match engine.remove_container(old_id, options).await {
        Ok(()) => {}
        Err(e) if e.is_not_found() => return,
        Err(e) => {
            warn!(old_id, error = %e, "could not remove the retired container; the next recovery of its name retries");
            return;
        }
    }
    fail_point!("recreate.after_remove_old");
    info!(old_id, "retired the old container");
    if let Some((old_image, new_id)) = &retirement.remove_image {
        let new_image = engine.inspect_container(new_id).await.ok().flatten().map(|c| c.image_id);
        if new_image.as_deref() != Some(old_image.as_str()) {
            if let Err(e) = engine.remove_image_if_unused(old_image).await {
                warn!(image = %old_image, error = %e, "could not remove the old image");
            }
        }
    }
}
