//! Notifiers: the seam between the outbox and the outside world (webhook, MQTT), and the loop
//! that delivers a notifier's outbox backlog.
//!
//! Delivery is at least once and in order per work order: an entry is marked delivered only
//! after the peer confirmed it, so one in flight when the daemon stops is sent again after the
//! restart, with the same `Idempotency-Key`.

pub mod webhook;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use super::handle::StoreHandle;
use super::store::StoreError;
use super::types::{EventKind, WorkOrder, WorkOrderEvent};
use crate::backoff::Backoff;
use crate::rules::types::AssetInfo;

/// Why a delivery failed, sorted by what the loop does about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Connection errors, timeouts, 5xx, 429, 408: retried with capped backoff, for as long as
    /// it takes.
    #[error("{0}")]
    Retryable(String),
    /// The peer refused the event for good (another 4xx): the delivery goes to the dead state.
    #[error("{0}")]
    Permanent(String),
}

/// Something that delivers work-order events.
pub trait Notifier: Send + Sync {
    /// Unique among the configured notifiers and stable across restarts: it names the
    /// notifier's delivery rows in the outbox (`webhook:0`, or the configured `id`).
    fn name(&self) -> &str;
    /// The `events` and `match` filters: an unwanted event is marked delivered (skipped).
    fn wants(&self, event: &WorkOrderEvent) -> bool;
    fn deliver<'a>(
        &'a self,
        event: &'a WorkOrderEvent,
    ) -> Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send + 'a>>;
}

/// A validated `[[notify]]` item, before it runs: its name is the notifier's (see
/// [`Notifier::name`]).
pub trait NotifierName {
    fn name(&self) -> &str;
}

/// The notification body, shared by the webhook and MQTT notifiers:
/// `{"event", "seq", "idempotency_key", "occurred_at", "gateway", "work_order"}` in that order.
pub fn event_body(event: &WorkOrderEvent, gateway: &str) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        event: &'a str,
        seq: u64,
        idempotency_key: String,
        occurred_at: DateTime<Utc>,
        gateway: &'a str,
        work_order: &'a WorkOrder,
    }
    let body = Body {
        event: event.event.as_str(),
        seq: event.seq,
        idempotency_key: event.idempotency_key(),
        occurred_at: event.occurred_at,
        gateway,
        work_order: &event.work_order,
    };
    // Serializing plain data into a Vec cannot fail (the store keeps evidence finite).
    serde_json::to_vec(&body).unwrap_or_default()
}

/// Retry backoff bounds.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// How often an idle loop looks at the outbox even without a wake-up (a safety net).
const IDLE_RECHECK: Duration = Duration::from_secs(60);
/// Deliveries fetched per query.
const BATCH: usize = 64;
/// Pause after the store itself failed.
const STORE_TROUBLE: Duration = Duration::from_secs(5);

/// The wait before retry number `failures` (1, 2, ...): doubling from [`BACKOFF_MIN`], capped at
/// [`BACKOFF_MAX`], with jitter (50-100 %) so that gateways do not retry in step.
pub fn backoff(failures: u32) -> Duration {
    Backoff::new(BACKOFF_MIN, BACKOFF_MAX).delay(failures.saturating_sub(1))
}

/// Delivers `notifier`'s outbox backlog for as long as it takes, until `stop`.
///
/// In order per work order (the store hands out only the oldest undelivered event of each
/// work order; a dead one holds the later ones back until retried through the API). A
/// retryable failure schedules that delivery's retry with backoff and pauses the whole loop
/// (the peer is likely down: one probe per pause, not one request per backlog entry); the
/// pause doubles with consecutive failures and resets on a success. A permanent failure marks
/// the delivery dead. The loop sleeps until `wake` (new outbox entries) or its next due retry.
/// On `stop`, a delivery in flight is abandoned: it stays pending and is sent again later.
pub async fn run_notifier(
    store: StoreHandle,
    notifier: Arc<dyn Notifier>,
    wake: Arc<Notify>,
    stop: CancellationToken,
) {
    let name: Arc<str> = notifier.name().into();
    // Consecutive retryable failures of this notifier (its peer's health).
    let mut failures: u32 = 0;
    loop {
        if stop.is_cancelled() {
            return;
        }
        let now = Utc::now();
        let n = name.clone();
        let batch = match store.call(move |s| s.next_deliveries(&n, now, BATCH)).await {
            Ok(b) => b,
            Err(StoreError::Closed) => return,
            Err(e) => {
                error!(notifier = %name, error = %e, "cannot read the outbox");
                if pause(&stop, STORE_TROUBLE).await {
                    return;
                }
                continue;
            }
        };
        if batch.is_empty() {
            let n = name.clone();
            let next = store.call(move |s| s.next_retry_at(&n)).await;
            let wait = match next {
                Ok(Some(t)) => (t - Utc::now()).to_std().unwrap_or(Duration::ZERO),
                Ok(None) => IDLE_RECHECK,
                Err(StoreError::Closed) => return,
                Err(_) => STORE_TROUBLE,
            }
            .min(IDLE_RECHECK);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            continue;
        }
        for d in batch {
            let (outbox_id, key) = (d.event.id, d.event.idempotency_key());
            if !notifier.wants(&d.event) {
                if !record(&store, &name, &stop, move |s, n| {
                    s.mark_skipped(outbox_id, n)
                })
                .await
                {
                    return;
                }
                continue;
            }
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = notifier.deliver(&d.event) => r,
            };
            match result {
                Ok(()) => {
                    failures = 0;
                    debug!(notifier = %name, idempotency_key = %key, event = d.event.event.as_str(), "delivered");
                    if !record(&store, &name, &stop, move |s, n| {
                        s.mark_delivered(outbox_id, n)
                    })
                    .await
                    {
                        return;
                    }
                }
                Err(DeliveryError::Retryable(e)) => {
                    failures = failures.saturating_add(1);
                    let wait = backoff(failures);
                    let retry_in = backoff(d.attempts.saturating_add(1)).max(wait);
                    // retry_in <= BACKOFF_MAX, so this neither fails nor overflows.
                    let at = Utc::now()
                        + chrono::Duration::from_std(retry_in)
                            .unwrap_or(chrono::Duration::seconds(300));
                    warn!(notifier = %name, idempotency_key = %key, error = %e,
                        attempts = d.attempts.saturating_add(1), retry_in_ms = retry_in.as_millis() as u64,
                        "delivery failed; will retry");
                    if !record(&store, &name, &stop, move |s, n| {
                        s.mark_retry(outbox_id, n, &e, at)
                    })
                    .await
                        || pause(&stop, wait).await
                    {
                        return;
                    }
                    break;
                }
                Err(DeliveryError::Permanent(e)) => {
                    error!(notifier = %name, idempotency_key = %key, error = %e,
                        "delivery refused; dead letter (later events of this work order wait for POST /api/v1/outbox/{outbox_id}/retry)");
                    if !record(&store, &name, &stop, move |s, n| {
                        s.mark_dead(outbox_id, n, &e)
                    })
                    .await
                    {
                        return;
                    }
                }
            }
        }
    }
}

/// Records a delivery outcome; `false` when the loop must end (store stopped, or `stop`).
async fn record(
    store: &StoreHandle,
    name: &Arc<str>,
    stop: &CancellationToken,
    f: impl FnOnce(&mut super::store::WorkOrderStore, &str) -> Result<(), StoreError> + Send + 'static,
) -> bool {
    let n = name.clone();
    match store.call(move |s| f(s, &n)).await {
        Ok(()) => true,
        Err(StoreError::Closed) => false,
        Err(e) => {
            // The delivery stays pending and is sent again (at least once); pause so that a
            // store that cannot write does not turn into a stream of repeats.
            error!(notifier = %name, error = %e, "cannot record a delivery outcome");
            !pause(stop, STORE_TROUBLE).await
        }
    }
}

/// Sleeps unless stopped first; `true` when stopped.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

/// Where one `[[notify]]` item's configuration errors point (its file and `notify[N]`), and
/// what it is called when it has no `id`.
pub struct ItemScope<'a> {
    pub file: &'a str,
    pub base: &'a str,
    /// Its place among the notifiers: the default name is `<type>:<position>`.
    pub position: usize,
}

impl ItemScope<'_> {
    /// An error at `path` below the item (the item itself when empty).
    pub fn issue(&self, path: &str, message: String) -> crate::config::ConfigIssue {
        crate::config::ConfigIssue {
            file: self.file.to_string(),
            path: if path.is_empty() {
                self.base.to_string()
            } else {
                format!("{}.{path}", self.base)
            },
            message,
        }
    }

    /// The item's table as `T`; an error names the key path.
    pub fn deserialize<T: serde::de::DeserializeOwned>(
        &self,
        value: config::Value,
    ) -> Result<T, Vec<crate::config::ConfigIssue>> {
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let path = if path == "." { String::new() } else { path };
            vec![self.issue(&path, webhook::clean_message(&e.inner().to_string()))]
        })
    }

    /// The notifier's name: its `id`, or `<kind>:<position>`; an empty `id` is an error.
    pub fn name(
        &self,
        id: Option<&str>,
        kind: &str,
        errors: &mut Vec<crate::config::ConfigIssue>,
    ) -> String {
        match id {
            Some(id) if id.trim().is_empty() => {
                errors.push(self.issue("id", "must not be empty".into()));
                String::new()
            }
            Some(id) => id.to_string(),
            None => format!("{kind}:{}", self.position),
        }
    }
}

/// A notifier's `events` list: `None` (every event) when absent, or the set; an error as
/// (key path relative to the notifier, message).
pub fn parse_events(
    list: Option<&[String]>,
) -> Result<Option<std::collections::HashSet<EventKind>>, (String, String)> {
    let Some(list) = list else { return Ok(None) };
    if list.is_empty() {
        return Err((
            "events".into(),
            "an empty list sends nothing: leave `events` out to send every event".into(),
        ));
    }
    let mut set = std::collections::HashSet::new();
    for (i, name) in list.iter().enumerate() {
        match EventKind::ALL.iter().find(|k| k.as_str() == name) {
            Some(k) => {
                set.insert(*k);
            }
            None => {
                return Err((
                    format!("events[{i}]"),
                    format!(
                        "unknown event {name:?}: expected one of {}",
                        EventKind::ALL.map(EventKind::as_str).join(", ")
                    ),
                ));
            }
        }
    }
    Ok(Some(set))
}

/// The configured assets by id, shared by the notifiers of one configuration: a configuration
/// reload replaces them, so `match` and `{name}` follow the devices in force.
#[derive(Debug, Clone, Default)]
pub struct AssetDirectory(
    Arc<std::sync::RwLock<std::collections::HashMap<String, Arc<AssetInfo>>>>,
);

impl AssetDirectory {
    pub fn new(assets: std::collections::HashMap<String, Arc<AssetInfo>>) -> Self {
        AssetDirectory(Arc::new(std::sync::RwLock::new(assets)))
    }

    pub fn get(&self, id: &str) -> Option<Arc<AssetInfo>> {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Replaces the assets (a configuration reload).
    pub fn replace(&self, assets: std::collections::HashMap<String, Arc<AssetInfo>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = assets;
    }
}

/// The `events` and `match` filters every notifier has.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// `None`: every event.
    pub events: Option<std::collections::HashSet<EventKind>>,
    pub asset_match: Option<crate::rules::matcher::AssetMatch>,
    /// The configured assets, for `match` on profile and tags.
    pub assets: AssetDirectory,
}

impl EventFilter {
    pub fn wants(&self, event: &WorkOrderEvent) -> bool {
        if let Some(events) = &self.events
            && !events.contains(&event.event)
        {
            return false;
        }
        match &self.asset_match {
            None => true,
            Some(m) => match self.assets.get(&event.work_order.asset) {
                Some(a) => m.matches(&a),
                None => m.matches(&asset_of(&event.work_order)),
            },
        }
    }
}

/// The asset a work order is about, for `match`: the configured asset, or, for one no longer
/// configured or the gateway itself, what the record says of it.
fn asset_of(wo: &WorkOrder) -> AssetInfo {
    let device_type = [
        crate::profile::DeviceType::Elevator,
        crate::profile::DeviceType::Pump,
        crate::profile::DeviceType::FirePanel,
        crate::profile::DeviceType::AccessDoor,
    ]
    .into_iter()
    .find(|d| d.as_str() == wo.device_type)
    .unwrap_or(crate::profile::DeviceType::Other);
    AssetInfo {
        id: wo.asset.as_str().into(),
        name: None,
        site: wo.site.clone(),
        building: wo.building.clone(),
        floor: wo.floor.clone(),
        device_type,
        profile: String::new(),
        tags: std::collections::BTreeMap::new(),
        points: Default::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_bounds() {
        for n in 0..40 {
            let b = backoff(n);
            let cap = BACKOFF_MIN
                .saturating_mul(1 << n.saturating_sub(1).min(20))
                .min(BACKOFF_MAX);
            assert!(b <= cap && b >= cap / 2, "{n}: {b:?} vs {cap:?}");
        }
        assert!(backoff(1) <= BACKOFF_MIN);
        assert!(backoff(u32::MAX) <= BACKOFF_MAX);
        assert!(backoff(30) >= BACKOFF_MAX / 2);
    }
}
