//! The bus every event goes through: recorded in the store (durable with the flush of the change
//! it belongs to, as every write of that change), with the deliveries of the Notifiers that
//! ask for it queued in the same write (see `notifications`), and broadcast to live
//! subscribers (a dashboard's stream). Nothing else appends events.
//!
//! A subscriber that falls behind by more than [`BUS_CAPACITY`] events is told how many it
//! missed (`RecvError::Lagged`) and can read them back from the store by id: ids grow in the
//! order events are recorded, which is the order they are broadcast in.

use tokio::sync::{Notify, broadcast};

use crate::model::EventRecord;
use crate::store::{Store, StoreError};

/// Events kept for subscribers that have not received them yet.
pub const BUS_CAPACITY: usize = 4096;

pub(super) struct EventBus {
    store: Store,
    tx: broadcast::Sender<EventRecord>,
    /// Recording and broadcasting happen as one step, so that subscribers see events in the
    /// order of their ids even when several tasks record at once.
    order: std::sync::Mutex<()>,
    /// Wakes the notification worker: deliveries were queued.
    queued: Notify,
}

impl EventBus {
    pub(super) fn new(store: Store) -> Self {
        Self {
            store,
            tx: broadcast::channel(BUS_CAPACITY).0,
            order: std::sync::Mutex::new(()),
            queued: Notify::new(),
        }
    }

    /// Records `events` (each given its id) and hands them to every subscriber.
    pub(super) fn record(&self, events: &mut [EventRecord]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let _order = self
            .order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.store.append_events(events)?;
        // Queued with the events, in the same flush: nothing acknowledged loses its
        // notifications.
        let now = crate::pki::now_unix();
        let deliveries = super::notifications::deliveries_for(&self.store, events, now);
        if !deliveries.is_empty() {
            self.store.enqueue_deliveries(&deliveries, now);
            self.queued.notify_one();
        }
        // Without subscribers (the usual case) an event costs no copy.
        if self.tx.receiver_count() > 0 {
            for e in events.iter() {
                // Only fails when the last subscriber left meanwhile.
                let _ = self.tx.send(e.clone());
            }
        }
        Ok(())
    }

    /// Hands subscribers an event another replica recorded (it is in the shared store
    /// already). On a shared store ids are unique but only roughly ordered across replicas:
    /// each replica's ids grow, and each moves past the ids it sees others give (see
    /// `store::next_id`).
    pub(super) fn relay(&self, event: EventRecord) {
        let _order = self
            .order
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.tx.receiver_count() > 0 {
            let _ = self.tx.send(event);
        }
        // The replica that recorded it queued its deliveries: the leader sends them.
        self.queued.notify_one();
    }

    /// Resolves when deliveries were queued since the last call.
    pub(super) async fn deliveries_queued(&self) {
        self.queued.notified().await;
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<EventRecord> {
        self.tx.subscribe()
    }
}
