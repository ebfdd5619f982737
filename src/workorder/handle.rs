//! [`StoreHandle`]: how async code shares the synchronous work-order store.
//!
//! The store lives on one dedicated OS thread (`workorder-store`), which owns the SQLite
//! connection and runs calls one at a time, in the order they arrive; the handle is a cheap
//! clone that sends it closures over a bounded channel and awaits their result. So SQLite never
//! runs on a tokio worker thread, every change is serialized without a lock, and the rule
//! loop, the HTTP API and the notifiers all use the same handle.
//!
//! Whenever a call leaves deliveries due (new outbox entries, a retried dead letter, notifiers
//! registered), the thread wakes every [`StoreHandle::outbox_waker`], so the notifier loops
//! never need to be told by the caller. When the last handle is dropped the thread ends and
//! closes the database.

use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, mpsc, oneshot};
use tracing::error;

use super::outbox::{DeliveryState, OutboxRow};
use super::store::{ListFilter, ResponseTimes, StoreError, WorkOrderStore};
use super::types::{WorkOrder, WorkOrderEvent};
use crate::rules::types::{Priority, Trigger};

type Job = Box<dyn FnOnce(&mut WorkOrderStore) + Send>;

/// Calls queued for the store thread before senders wait.
const QUEUE: usize = 256;

/// A cloneable handle to the store's thread (see the module docs).
#[derive(Clone)]
pub struct StoreHandle {
    jobs: mpsc::Sender<Job>,
    wakers: Arc<Mutex<Vec<Weak<Notify>>>>,
}

impl std::fmt::Debug for StoreHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreHandle").finish_non_exhaustive()
    }
}

impl StoreHandle {
    /// Opens the database (blocking: call it at start-up or from `spawn_blocking`) and starts
    /// its thread.
    pub fn open(path: &Path, response_times: ResponseTimes) -> Result<Self, StoreError> {
        let store = WorkOrderStore::open(path, response_times)?;
        Ok(Self::spawn(store)?)
    }

    /// Moves an open store onto its own thread.
    pub fn spawn(mut store: WorkOrderStore) -> std::io::Result<Self> {
        let (jobs, mut rx) = mpsc::channel::<Job>(QUEUE);
        let wakers: Arc<Mutex<Vec<Weak<Notify>>>> = Arc::default();
        let thread_wakers = wakers.clone();
        std::thread::Builder::new()
            .name("workorder-store".into())
            .spawn(move || {
                while let Some(job) = rx.blocking_recv() {
                    let before = store.outbox_writes();
                    // A panicking call loses its answer (the caller sees `Closed`), not the
                    // store: its transaction, if any, rolled back when it unwound.
                    if std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut store))).is_err() {
                        error!("a work-order store call panicked; the store carries on");
                    }
                    if store.outbox_writes() != before {
                        let mut wakers = thread_wakers.lock().unwrap_or_else(|p| p.into_inner());
                        wakers.retain(|w| match w.upgrade() {
                            Some(n) => {
                                n.notify_one();
                                true
                            }
                            None => false,
                        });
                    }
                }
            })?;
        Ok(StoreHandle { jobs, wakers })
    }

    /// A `Notify` woken whenever deliveries may have become due: give one to each notifier loop.
    pub fn outbox_waker(&self) -> Arc<Notify> {
        let n = Arc::new(Notify::new());
        self.wakers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Arc::downgrade(&n));
        n
    }

    /// Runs `f` on the store's thread and awaits its result.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WorkOrderStore) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Like [`Self::call`], for threads outside the async runtime (it panics inside it).
    pub fn call_blocking<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut WorkOrderStore) -> Result<T, StoreError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.jobs
            .blocking_send(Box::new(move |s| {
                let _ = tx.send(f(s));
            }))
            .map_err(|_| StoreError::Closed)?;
        rx.blocking_recv().map_err(|_| StoreError::Closed)?
    }

    /// [`WorkOrderStore::apply`].
    pub async fn apply(
        &self,
        trigger: Trigger,
        rule_states: Vec<(String, String, serde_json::Value)>,
    ) -> Result<Vec<WorkOrderEvent>, StoreError> {
        self.call(move |s| s.apply(&trigger, &rule_states)).await
    }

    /// [`WorkOrderStore::apply_batch`].
    pub async fn apply_batch(
        &self,
        triggers: Vec<Trigger>,
        rule_states: Vec<(String, String, serde_json::Value)>,
    ) -> Result<Vec<WorkOrderEvent>, StoreError> {
        self.call(move |s| s.apply_batch(&triggers, &rule_states))
            .await
    }

    /// [`WorkOrderStore::acknowledge`].
    pub async fn acknowledge(
        &self,
        id: i64,
        by: Option<String>,
        note: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<(WorkOrder, Vec<WorkOrderEvent>), StoreError> {
        self.call(move |s| s.acknowledge(id, by.as_deref(), note.as_deref(), at))
            .await
    }

    /// [`WorkOrderStore::resolve`].
    pub async fn resolve(
        &self,
        id: i64,
        by: Option<String>,
        note: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<(WorkOrder, Vec<WorkOrderEvent>), StoreError> {
        self.call(move |s| s.resolve(id, by.as_deref(), note.as_deref(), at))
            .await
    }

    /// [`WorkOrderStore::close`].
    pub async fn close(
        &self,
        id: i64,
        by: Option<String>,
        note: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<(WorkOrder, Vec<WorkOrderEvent>), StoreError> {
        self.call(move |s| s.close(id, by.as_deref(), note.as_deref(), at))
            .await
    }

    pub async fn get(&self, id: i64) -> Result<Option<WorkOrder>, StoreError> {
        self.call(move |s| s.get(id)).await
    }

    pub async fn list(&self, filter: ListFilter) -> Result<Vec<WorkOrder>, StoreError> {
        self.call(move |s| s.list(&filter)).await
    }

    pub async fn events(&self, work_order_id: i64) -> Result<Vec<WorkOrderEvent>, StoreError> {
        self.call(move |s| s.events(work_order_id)).await
    }

    pub async fn unresolved_by_priority(&self) -> Result<Vec<(Priority, u64)>, StoreError> {
        self.call(|s| s.unresolved_by_priority()).await
    }

    pub async fn unresolved_for_asset(&self, asset: String) -> Result<Vec<WorkOrder>, StoreError> {
        self.call(move |s| s.unresolved_for_asset(&asset)).await
    }

    pub async fn save_rule_states(
        &self,
        states: Vec<(String, String, serde_json::Value)>,
    ) -> Result<(), StoreError> {
        self.call(move |s| s.save_rule_states(&states)).await
    }

    pub async fn load_rule_states(
        &self,
    ) -> Result<Vec<(String, String, serde_json::Value)>, StoreError> {
        self.call(|s| s.load_rule_states()).await
    }

    pub async fn register_notifiers(&self, names: Vec<String>) -> Result<(), StoreError> {
        self.call(move |s| s.register_notifiers(&names)).await
    }

    pub async fn retry_dead(&self, outbox_id: i64) -> Result<bool, StoreError> {
        self.call(move |s| s.retry_dead(outbox_id)).await
    }

    pub async fn outbox(
        &self,
        state: Option<DeliveryState>,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        self.call(move |s| s.outbox(state, limit)).await
    }

    pub async fn outbox_backlog(&self) -> Result<Vec<(String, DeliveryState, u64)>, StoreError> {
        self.call(|s| s.outbox_backlog()).await
    }
}
