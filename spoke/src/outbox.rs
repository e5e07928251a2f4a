//! Status reports waiting for the hub's ack. Pure; the link persists it after every change.
//!
//! Every report gets the next sequence number when it enters the outbox, before it is sent.
//! A newer report about a Target replaces an older unacked one (the hub only keeps the latest
//! per Target, and sequence numbers still only grow), so the outbox stays small however long
//! the hub is away.

use serde::{Deserialize, Serialize};

use crate::model::TargetStatus;
use crate::sync::report;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencedReport {
    pub seq: u64,
    pub status: TargetStatus,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    /// The last sequence number handed out.
    pub last_seq: u64,
    /// Everything up to this is durable at the hub.
    pub last_acked: u64,
    /// Unacked reports, in sequence order.
    pub pending: Vec<SequencedReport>,
}

impl Outbox {
    /// Adds a report (bounded to what the hub accepts: see [`report::bounded`]) and returns
    /// its sequence number.
    pub fn push(&mut self, status: TargetStatus) -> u64 {
        // Every report goes through here: one too big to send would be resent forever, and
        // everything queued behind it with it.
        let status = report::bounded(status);
        self.last_seq = self.last_seq.max(self.last_acked) + 1;
        self.pending
            .retain(|r| r.status.target_id != status.target_id);
        self.pending.push(SequencedReport {
            seq: self.last_seq,
            status,
        });
        self.last_seq
    }

    /// The outbox with every pending report bounded (see [`report::bounded`]): one written by
    /// an older spoke may hold a report too big to send.
    pub fn within_limits(mut self) -> Self {
        self.pending = self
            .pending
            .into_iter()
            .map(|r| SequencedReport {
                seq: r.seq,
                status: report::bounded(r.status),
            })
            .collect();
        self
    }

    /// Records a cumulative ack; returns whether anything changed.
    pub fn ack(&mut self, acked_seq: u64) -> bool {
        let before = (self.last_acked, self.pending.len(), self.last_seq);
        self.last_acked = self.last_acked.max(acked_seq);
        // A hub that acked more than we ever sent knows a history we lost (a restored data
        // dir): continue above it, or the hub would ignore our next reports as duplicates.
        self.last_seq = self.last_seq.max(self.last_acked);
        let acked = self.last_acked;
        self.pending.retain(|r| r.seq > acked);
        before != (self.last_acked, self.pending.len(), self.last_seq)
    }

    /// Reports with a sequence number above `after`, in order.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &SequencedReport> {
        self.pending.iter().filter(move |r| r.seq > after)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::model::{Health, SyncState};

    fn status(target: &str, message: &str) -> TargetStatus {
        TargetStatus {
            chart_digest: String::new(),
            target_id: target.into(),
            revision: "c".into(),
            spec_generation: 1,
            sync: SyncState::Synced,
            health: Health::Healthy,
            message: message.into(),
            resources: Vec::new(),
            observed_at_unix: 0,
            trace: BTreeMap::new(),
        }
    }

    #[test]
    fn sequence_numbers_strictly_increase() {
        let mut outbox = Outbox::default();
        assert_eq!(outbox.push(status("a", "1")), 1);
        assert_eq!(outbox.push(status("b", "1")), 2);
        assert_eq!(outbox.push(status("a", "2")), 3);
        let seqs: Vec<u64> = outbox.pending.iter().map(|r| r.seq).collect();
        assert_eq!(
            seqs,
            [2, 3],
            "the newer report about a replaced the older one"
        );
    }

    #[test]
    fn acks_are_cumulative() {
        let mut outbox = Outbox::default();
        for t in ["a", "b", "c"] {
            outbox.push(status(t, "x"));
        }
        assert!(outbox.ack(2));
        assert_eq!(
            outbox.pending.iter().map(|r| r.seq).collect::<Vec<_>>(),
            [3]
        );
        assert!(!outbox.ack(1), "an old ack changes nothing");
        assert_eq!(outbox.last_acked, 2);
        assert_eq!(outbox.after(2).count(), 1);
        assert_eq!(outbox.after(3).count(), 0);
    }

    #[test]
    fn acks_beyond_what_was_sent_move_the_sequence_on() {
        let mut outbox = Outbox::default();
        assert!(outbox.ack(41));
        assert_eq!(outbox.push(status("a", "x")), 42);
    }

    #[test]
    fn reports_enter_the_outbox_within_the_limits() {
        use gitfleet_proto::report_limits::MAX_MESSAGE_BYTES;
        let mut outbox = Outbox::default();
        outbox.push(status("a", &"x".repeat(100_000)));
        let kept = &outbox.pending[0].status.message;
        assert!(kept.len() <= MAX_MESSAGE_BYTES, "{}", kept.len());
    }

    #[test]
    fn an_outbox_from_an_older_spoke_is_bounded_when_loaded() {
        use gitfleet_proto::report_limits::MAX_MESSAGE_BYTES;
        let old = Outbox {
            last_seq: 7,
            last_acked: 6,
            pending: vec![SequencedReport {
                seq: 7,
                status: status("a", &"x".repeat(100_000)),
            }],
        };
        let loaded = old.within_limits();
        assert_eq!((loaded.last_seq, loaded.pending[0].seq), (7, 7));
        assert!(loaded.pending[0].status.message.len() <= MAX_MESSAGE_BYTES);
    }

    #[test]
    fn survives_a_round_trip_through_json() {
        let mut outbox = Outbox::default();
        outbox.push(status("a", "x"));
        let json = serde_json::to_string(&outbox).expect("json");
        assert_eq!(
            serde_json::from_str::<Outbox>(&json).expect("parse"),
            outbox
        );
    }
}
