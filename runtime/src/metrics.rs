//! Counters every box keeps, readable at any time without stopping anything.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

/// The live counters of one box (relaxed atomics: each is exact, their sum is a moment's view).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Messages delivered into the inboxes of agents (and endpoints) of this box.
    pub messages_in: AtomicU64,
    /// Messages sent by agents (and endpoints) of this box.
    pub messages_out: AtomicU64,
    /// Data frames written to other boxes (first transmissions).
    pub frames_out: AtomicU64,
    /// Data frames accepted from other boxes (duplicates excluded).
    pub frames_in: AtomicU64,
    /// Agent routing table misses (asked the controller).
    pub art_misses: AtomicU64,
    /// Box routing table misses (asked the controller).
    pub brt_misses: AtomicU64,
    /// Data frames sent again after a connection was re-established.
    pub retransmissions: AtomicU64,
    /// Data frames received twice and dropped by de-duplication.
    pub duplicates: AtomicU64,
    /// Messages or frames rejected: bad frame, unknown identifier, dead agent, no handler.
    pub rejections: AtomicU64,
    /// Connections to other boxes established (including re-connections).
    pub connections: AtomicU64,
    /// Gauges agents publish with `Context::set_metric` (rarely written: a lock is fine).
    pub gauges: std::sync::Mutex<std::collections::BTreeMap<String, u64>>,
}

impl Metrics {
    /// Adds one to a counter.
    /// Sets the gauge `name`.
    pub fn set_gauge(&self, name: String, value: u64) {
        self.gauges
            .lock()
            .expect("gauges poisoned")
            .insert(name, value);
    }

    /// The gauges agents published, by name.
    pub fn gauges(&self) -> std::collections::BTreeMap<String, u64> {
        self.gauges.lock().expect("gauges poisoned").clone()
    }

    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    /// A copy of every counter.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            messages_in: self.messages_in.load(Relaxed),
            messages_out: self.messages_out.load(Relaxed),
            // Everything delivered here that did not come off the wire came from this box.
            local_deliveries: self
                .messages_in
                .load(Relaxed)
                .saturating_sub(self.frames_in.load(Relaxed)),
            frames_out: self.frames_out.load(Relaxed),
            frames_in: self.frames_in.load(Relaxed),
            art_misses: self.art_misses.load(Relaxed),
            brt_misses: self.brt_misses.load(Relaxed),
            retransmissions: self.retransmissions.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            rejections: self.rejections.load(Relaxed),
            connections: self.connections.load(Relaxed),
        }
    }
}

/// The counters of a box at one moment; also what the box manager answers to `GetMetrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricsSnapshot {
    /// See [`Metrics::messages_in`].
    pub messages_in: u64,
    /// See [`Metrics::messages_out`].
    pub messages_out: u64,
    /// Messages that went from an agent of this box to another in memory (`messages_in` minus
    /// `frames_in`).
    pub local_deliveries: u64,
    /// See [`Metrics::frames_out`].
    pub frames_out: u64,
    /// See [`Metrics::frames_in`].
    pub frames_in: u64,
    /// See [`Metrics::art_misses`].
    pub art_misses: u64,
    /// See [`Metrics::brt_misses`].
    pub brt_misses: u64,
    /// See [`Metrics::retransmissions`].
    pub retransmissions: u64,
    /// See [`Metrics::duplicates`].
    pub duplicates: u64,
    /// See [`Metrics::rejections`].
    pub rejections: u64,
    /// See [`Metrics::connections`].
    pub connections: u64,
}

impl MetricsSnapshot {
    /// The counters in the Prometheus text format, labelled with the box name.
    pub fn to_prometheus(&self, box_name: &str) -> String {
        let mut out = String::new();
        let rows = [
            ("messages_in", self.messages_in),
            ("messages_out", self.messages_out),
            ("local_deliveries", self.local_deliveries),
            ("frames_out", self.frames_out),
            ("frames_in", self.frames_in),
            ("art_misses", self.art_misses),
            ("brt_misses", self.brt_misses),
            ("retransmissions", self.retransmissions),
            ("duplicates", self.duplicates),
            ("rejections", self.rejections),
            ("connections", self.connections),
        ];
        for (name, value) in rows {
            let _ = writeln!(out, "# TYPE ovid_{name}_total counter");
            let _ = writeln!(out, "ovid_{name}_total{{box=\"{box_name}\"}} {value}");
        }
        out
    }
}
