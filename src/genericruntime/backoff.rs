//! Per-key exponential back-off, a port of client-go's `flowcontrol.Backoff` (§1.11), used for
//! crash-loop back-off and image-pull back-off.
//!
//! Durations are virtual ([`Clock`]): with `--time-scale 20` a 5-minute back-off lasts 15 real
//! seconds. Event times are wall timestamps (container `finishedAt`), so elapsed time between two
//! timestamps is converted with [`Clock::virtual_between`]. No jitter, like the kubelet's.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::Pod;

use super::hash::hash_hex;
use super::util::{pod_name, pod_namespace, pod_uid};
use crate::clock::{go_duration, Clock};

/// The kubelet's initial back-off (`backOffPeriod`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The kubelet's cap (`MaxContainerBackOff`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug)]
struct Entry {
    backoff: Duration,
    last_update: Timestamp,
}

/// Exponential back-off per key: initial, ×2 per `next`, capped at `max`; an entry is "expired"
/// (the sequence restarts) when the new event is more than 2 × max after its last update.
#[derive(Debug)]
pub struct Backoff {
    clock: Clock,
    initial: Duration,
    max: Duration,
    entries: Mutex<HashMap<String, Entry>>,
}

impl Backoff {
    pub fn new(clock: Clock, initial: Duration, max: Duration) -> Self {
        Self {
            clock,
            initial,
            max,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The kubelet's parameters: 10 s doubling to 300 s.
    pub fn kubelet_default(clock: Clock) -> Self {
        Self::new(clock, INITIAL_BACKOFF, MAX_BACKOFF)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned map only means another thread panicked mid-update of plain data; keep going.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn has_expired(&self, event_time: Timestamp, last_update: Timestamp) -> bool {
        self.clock.virtual_between(last_update, event_time) > self.max * 2
    }

    /// The current back-off of `id` (zero when unknown).
    pub fn get(&self, id: &str) -> Duration {
        self.lock().get(id).map(|e| e.backoff).unwrap_or(Duration::ZERO)
    }

    /// Records another failure of `id` at `event_time`.
    pub fn next(&self, id: &str, event_time: Timestamp) {
        self.next_at(id, event_time, self.clock.now());
    }

    /// `next` with an explicit "now" (tests).
    pub fn next_at(&self, id: &str, event_time: Timestamp, now: Timestamp) {
        let mut map = self.lock();
        let backoff = match map.get(id) {
            Some(e) if !self.has_expired(event_time, e.last_update) => (e.backoff * 2).min(self.max),
            _ => self.initial,
        };
        map.insert(
            id.to_string(),
            Entry {
                backoff,
                last_update: now,
            },
        );
    }

    /// Forgets `id`.
    pub fn reset(&self, id: &str) {
        self.lock().remove(id);
    }

    /// True while less than the current back-off has passed since `event_time`.
    pub fn is_in_backoff_since(&self, id: &str, event_time: Timestamp) -> bool {
        self.is_in_backoff_since_at(id, event_time, self.clock.now())
    }

    pub fn is_in_backoff_since_at(&self, id: &str, event_time: Timestamp, now: Timestamp) -> bool {
        let map = self.lock();
        let Some(e) = map.get(id) else { return false };
        if self.has_expired(event_time, e.last_update) {
            return false;
        }
        self.clock.virtual_between(event_time, now) < e.backoff
    }

    /// How much of the back-off since `event_time` is left at `now` (None when not in back-off).
    pub fn remaining_since_at(&self, id: &str, event_time: Timestamp, now: Timestamp) -> Option<Duration> {
        let map = self.lock();
        let e = map.get(id)?;
        if self.has_expired(event_time, e.last_update) {
            return None;
        }
        e.backoff
            .checked_sub(self.clock.virtual_between(event_time, now))
            .filter(|d| !d.is_zero())
    }

    /// True while less than the current back-off has passed between the last update and
    /// `event_time` (the image manager asks with "now").
    pub fn is_in_backoff_since_update(&self, id: &str, event_time: Timestamp) -> bool {
        let map = self.lock();
        let Some(e) = map.get(id) else { return false };
        if self.has_expired(event_time, e.last_update) {
            return false;
        }
        self.clock.virtual_between(e.last_update, event_time) < e.backoff
    }

    /// Drops entries idle for more than 2 × max (housekeeping).
    pub fn gc(&self) {
        self.gc_at(self.clock.now());
    }

    pub fn gc_at(&self, now: Timestamp) {
        let limit = self.max * 2;
        self.lock()
            .retain(|_, e| self.clock.virtual_between(e.last_update, now) <= limit);
    }

    /// Number of tracked keys.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Crash-loop key: `<pod>_<ns>_<uid>_<container>_<hash hex>` (a spec change resets back-off).
pub fn crash_loop_key(pod: &Pod, container_name: &str, hash: u64) -> String {
    format!(
        "{}_{}_{}_{}_{}",
        pod_name(pod),
        pod_namespace(pod),
        pod_uid(pod),
        container_name,
        hash_hex(hash)
    )
}

/// Image-pull key: `<uid>_<image>`.
pub fn image_pull_key(pod_uid: &str, image: &str) -> String {
    format!("{pod_uid}_{image}")
}

/// The crash-loop message: `back-off 20s restarting failed container=<c> pod=<name>_<ns>(<uid>)`.
pub fn crash_loop_message(backoff: Duration, container_name: &str, pod: &Pod) -> String {
    format!(
        "back-off {} restarting failed container={} pod={}",
        go_duration(backoff),
        container_name,
        super::util::format_pod(pod)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn at(secs: u64) -> Timestamp {
        t0() + Duration::from_secs(secs)
    }

    // client-go TestSlowBackoff: each Next doubles until the cap.
    #[test]
    fn slow_backoff() {
        for (initial, max, steps) in [(1u64, 50u64, 10u32), (1, 1, 5), (2, 35, 8)] {
            let b = Backoff::new(Clock::real(), Duration::from_secs(initial), Duration::from_secs(max));
            let mut now = 0u64;
            for i in 0..steps {
                b.next_at("_idSlow", at(now), at(now));
                let expected = (initial << i).min(max);
                assert_eq!(b.get("_idSlow"), Duration::from_secs(expected), "step {i}");
                now += b.get("_idSlow").as_secs();
            }
        }
    }

    // client-go TestBackoffReset.
    #[test]
    fn backoff_reset() {
        let b = Backoff::new(Clock::real(), Duration::from_secs(1), Duration::from_secs(5));
        b.next_at("_idReset", at(0), at(0));
        b.next_at("_idReset", at(1), at(1));
        assert_eq!(b.get("_idReset"), Duration::from_secs(2));
        b.reset("_idReset");
        assert_eq!(b.get("_idReset"), Duration::ZERO);
    }

    // client-go TestBackoffHighWaterMark.
    #[test]
    fn backoff_high_water_mark() {
        let b = Backoff::new(Clock::real(), Duration::from_secs(1), Duration::from_secs(5));
        for i in 0..10 {
            b.next_at("_idHiWaterMark", at(i), at(i));
        }
        assert_eq!(b.get("_idHiWaterMark"), Duration::from_secs(5));
    }

    // client-go TestBackoffGC.
    #[test]
    fn backoff_gc() {
        let step = 1u64;
        let max = 5u64;
        let b = Backoff::new(Clock::real(), Duration::from_secs(step), Duration::from_secs(max));
        let mut now = 0;
        for _ in 0..=max / step {
            now += step;
            b.next_at("_idGC", at(now), at(now));
        }
        now += max + step;
        b.gc_at(at(now));
        assert_eq!(b.len(), 1, "GC must keep an entry idle for less than 2×max");
        now += max + step;
        b.gc_at(at(now));
        assert!(b.is_empty(), "GC must drop an entry idle for more than 2×max");
    }

    // client-go TestIsInBackOffSinceUpdate, verbatim table.
    #[test]
    fn is_in_backoff_since_update() {
        let b = Backoff::new(Clock::real(), Duration::from_secs(1), Duration::from_secs(10));
        let cases: &[(u64, bool, u64)] = &[
            (0, false, 0),
            (1, false, 1),
            (2, true, 2),
            (3, false, 2),
            (4, true, 4),
            (5, true, 4),
            (6, true, 4),
            (7, false, 4),
            (8, true, 8),
            (9, true, 8),
            (10, true, 8),
            (11, true, 8),
            (12, true, 8),
            (13, true, 8),
            (14, true, 8),
            (15, false, 8),
            (16, true, 10),
            (17, true, 10),
            (18, true, 10),
            (19, true, 10),
            (20, true, 10),
            (21, true, 10),
            (22, true, 10),
            (23, true, 10),
            (24, true, 10),
            (25, false, 10),
            (26, true, 10),
            (27, true, 10),
            (28, true, 10),
            (29, true, 10),
            (30, true, 10),
            (31, true, 10),
            (32, true, 10),
            (33, true, 10),
            (34, true, 10),
            (35, false, 10),
            (56, false, 0),
            (57, false, 1),
        ];
        for &(tick, in_backoff, value) in cases {
            let now = at(tick);
            assert_eq!(b.is_in_backoff_since_update("id", now), in_backoff, "tick {tick}");
            if in_backoff {
                assert_eq!(b.get("id"), Duration::from_secs(value), "tick {tick}");
            } else {
                b.next_at("id", now, now);
            }
        }
    }

    // The kubelet's crash-loop sequence: 10, 20, 40, 80, 160, 300, 300; reset after > 600 s.
    #[test]
    fn kubelet_crash_loop_sequence_and_reset() {
        let b = Backoff::kubelet_default(Clock::real());
        let mut now = 0;
        let mut seen = vec![];
        for _ in 0..7 {
            b.next_at("k", at(now), at(now));
            seen.push(b.get("k").as_secs());
            now += b.get("k").as_secs();
        }
        assert_eq!(seen, vec![10, 20, 40, 80, 160, 300, 300]);
        // An exit 601 s after the last update starts over.
        let last = now - 300;
        assert!(!b.is_in_backoff_since_at("k", at(last + 601), at(last + 602)));
        b.next_at("k", at(last + 601), at(last + 601));
        assert_eq!(b.get("k"), INITIAL_BACKOFF);
        // In back-off while less than the entry has passed since the exit.
        assert!(b.is_in_backoff_since_at("k", at(last + 601), at(last + 605)));
        assert!(!b.is_in_backoff_since_at("k", at(last + 601), at(last + 611)));
    }

    #[test]
    fn remaining_time_of_a_backoff() {
        let b = Backoff::kubelet_default(Clock::real());
        assert_eq!(b.remaining_since_at("k", at(0), at(1)), None);
        b.next_at("k", at(0), at(0));
        assert_eq!(b.remaining_since_at("k", at(0), at(4)), Some(Duration::from_secs(6)));
        assert_eq!(b.remaining_since_at("k", at(0), at(10)), None);
    }

    #[test]
    fn scaled_clock_shrinks_real_time() {
        let b = Backoff::kubelet_default(Clock::scaled(20.0));
        let t = t0();
        b.next_at("k", t, t);
        // 10 virtual seconds = 0.5 real seconds.
        assert!(b.is_in_backoff_since_at("k", t, t + Duration::from_millis(400)));
        assert!(!b.is_in_backoff_since_at("k", t, t + Duration::from_millis(600)));
    }

    #[test]
    fn keys_and_message() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"}
        }))
        .unwrap();
        assert_eq!(crash_loop_key(&pod, "c", 0x311670a), "p_ns_u1_c_311670a");
        assert_eq!(image_pull_key("u1", "busybox:1"), "u1_busybox:1");
        assert_eq!(
            crash_loop_message(Duration::from_secs(20), "c", &pod),
            "back-off 20s restarting failed container=c pod=p_ns(u1)"
        );
    }
}
