//! The control API's connection counters: why the network side refused a request or closed a
//! connection, and how many connections it accepted and holds open. The network thread
//! ([`super::http`]) adds to them; the control thread reads them for `/metrics` and
//! `GET /v1/stats`.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::messages::{ApiStats, NamedCount};

/// Why the network side refused a request or a connection, with an answer that says so.
/// Its label in metrics and `GET /v1/stats` is the variant's name in snake case.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::EnumCount, strum::IntoStaticStr, strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
#[repr(usize)]
pub enum Refusal {
    /// 503: `max_connections` connections were open.
    MaxConnections,
    /// 503: [`QUEUE`](super::http::QUEUE) requests were already waiting for the control thread.
    QueueFull,
    /// 503: [`BODY_BUDGET`](super::http::BODY_BUDGET) bytes of request bodies were already being read.
    BodyBudget,
    /// 431: the request line and headers went over [`MAX_HEAD_BYTES`](super::http::MAX_HEAD_BYTES) or [`MAX_HEAD_LINES`](super::http::MAX_HEAD_LINES).
    HeadTooLarge,
    /// 413: a body announced or grown over [`MAX_BODY`](super::api::MAX_BODY).
    BodyTooLarge,
    /// 408: the head did not arrive within `header_timeout_ms`.
    HeadTimeout,
    /// 408: the body did not arrive within `body_timeout_ms`.
    BodyTimeout,
    /// 401: no token, or a wrong one.
    Unauthorized,
    /// 400 (hyper's answer): not an HTTP/1.1 request, or a malformed chunked body.
    Malformed,
}

impl Refusal {
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;
    pub const ALL: &'static [Refusal] = <Self as strum::VariantArray>::VARIANTS;

    /// The label used in metrics and `GET /v1/stats`.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// Why the network side closed a connection without a word. Labelled as [`Refusal`] is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::EnumCount, strum::IntoStaticStr, strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
#[repr(usize)]
pub enum Closure {
    /// Kept alive after an answer, and no new request within `idle_timeout_ms`.
    Idle,
    /// Connected and sent nothing within `header_timeout_ms`.
    Silent,
    /// Did not take its answer within `write_timeout_ms`.
    WriteTimeout,
}

impl Closure {
    pub const COUNT: usize = <Self as strum::EnumCount>::COUNT;
    pub const ALL: &'static [Closure] = <Self as strum::VariantArray>::VARIANTS;

    /// The label used in metrics and `GET /v1/stats`.
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// The API's connection counters. The network thread writes them, the control thread reads
/// them (`/metrics`, `GET /v1/stats`): atomics only, relaxed (each is a count on its own, read
/// by nothing that depends on another), so neither thread ever waits for the other.
#[derive(Debug, Default)]
pub struct ApiCounters {
    /// Admitted connections open now; also what admission checks `max_connections` against.
    open: AtomicUsize,
    accepted: AtomicU64,
    accept_errors: AtomicU64,
    refused: [AtomicU64; Refusal::COUNT],
    closed: [AtomicU64; Closure::COUNT],
}

impl ApiCounters {
    pub(crate) fn refused(&self, reason: Refusal) {
        self.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn closed(&self, reason: Closure) {
        self.closed[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Takes a connection slot if fewer than `max` are taken; never counts one over `max`,
    /// not even for a moment, so the gauge never shows more than `max_connections`.
    pub(crate) fn open_one(&self, max: usize) -> bool {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn close_one(&self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }

    pub(crate) fn accepted(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn accept_failed(&self) {
        self.accept_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters as `GET /v1/stats` reports them (every reason, in [`Refusal::ALL`] and
    /// [`Closure::ALL`] order, zeros included).
    pub fn read(&self) -> ApiStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ApiStats {
            connections_open: self.open.load(Ordering::Relaxed) as u64,
            connections_total: load(&self.accepted),
            accept_errors: load(&self.accept_errors),
            refused: Refusal::ALL
                .iter()
                .map(|r| NamedCount {
                    name: r.name().into(),
                    count: load(&self.refused[*r as usize]),
                })
                .collect(),
            closed: Closure::ALL
                .iter()
                .map(|c| NamedCount {
                    name: c.name().into(),
                    count: load(&self.closed[*c as usize]),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_report_every_reason_by_name() {
        let counters = ApiCounters::default();
        counters.refused(Refusal::QueueFull);
        counters.refused(Refusal::QueueFull);
        counters.refused(Refusal::Malformed);
        counters.closed(Closure::WriteTimeout);
        assert!(counters.open_one(2));
        assert!(counters.open_one(2));
        assert!(!counters.open_one(2), "a third slot of two");
        let stats = counters.read();
        assert_eq!(stats.connections_open, 2);
        let names: Vec<&str> = stats.refused.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "max_connections",
                "queue_full",
                "body_budget",
                "head_too_large",
                "body_too_large",
                "head_timeout",
                "body_timeout",
                "unauthorized",
                "malformed"
            ]
        );
        let count =
            |list: &[NamedCount], name: &str| list.iter().find(|c| c.name == name).map(|c| c.count);
        assert_eq!(count(&stats.refused, "queue_full"), Some(2));
        assert_eq!(count(&stats.refused, "malformed"), Some(1));
        assert_eq!(count(&stats.refused, "unauthorized"), Some(0));
        assert_eq!(
            stats
                .closed
                .iter()
                .map(|c| (c.name.as_str(), c.count))
                .collect::<Vec<_>>(),
            [("idle", 0), ("silent", 0), ("write_timeout", 1)]
        );
        counters.close_one();
        assert_eq!(counters.read().connections_open, 1);
    }
}
