//! keel's one notion of time.
//!
//! Wall-clock timestamps (what goes into the API and into CRI `*_at` fields) are always real.
//! Durations (back-off, grace periods, relist and resync periods, the simulator's `sleep N`) are
//! *virtual*: with a time scale of N, a virtual second lasts 1/N real seconds. A harness that
//! wants to watch a 5-minute crash-loop back-off in 15 s runs keel with `--time-scale 20`; the
//! kubelet's numbers stay exactly the kubelet's, only the clock runs faster. Scale 1 (the
//! default) is real time.

use std::time::Duration;

use jiff::Timestamp;

/// A clock that converts between virtual durations and real ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clock {
    scale: f64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::real()
    }
}

impl Clock {
    /// Real time: a virtual second is a real second.
    pub fn real() -> Self {
        Self { scale: 1.0 }
    }

    /// A clock running `scale` times faster than real time (values below 1 are clamped to 1).
    pub fn scaled(scale: f64) -> Self {
        let scale = if scale.is_finite() && scale >= 1.0 { scale } else { 1.0 };
        Self { scale }
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// The current wall-clock time (never scaled).
    pub fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    /// A monotonic instant (tokio's, so tests can pause time).
    pub fn instant(&self) -> tokio::time::Instant {
        tokio::time::Instant::now()
    }

    /// How long a virtual duration lasts in real time.
    pub fn to_real(&self, virtual_duration: Duration) -> Duration {
        if self.scale == 1.0 {
            virtual_duration
        } else {
            virtual_duration.div_f64(self.scale)
        }
    }

    /// How much virtual time a real duration amounts to.
    pub fn to_virtual(&self, real_duration: Duration) -> Duration {
        if self.scale == 1.0 {
            real_duration
        } else {
            real_duration.mul_f64(self.scale)
        }
    }

    /// Virtual time elapsed between two wall-clock timestamps (zero if `later` is earlier).
    pub fn virtual_between(&self, earlier: Timestamp, later: Timestamp) -> Duration {
        let real = later.duration_since(earlier);
        let real = Duration::try_from(real).unwrap_or(Duration::ZERO);
        self.to_virtual(real)
    }

    /// Sleeps for a virtual duration.
    pub async fn sleep(&self, virtual_duration: Duration) {
        tokio::time::sleep(self.to_real(virtual_duration)).await;
    }

    /// A tokio deadline `virtual_duration` from now.
    pub fn deadline(&self, virtual_duration: Duration) -> tokio::time::Instant {
        tokio::time::Instant::now() + self.to_real(virtual_duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_converts_both_ways() {
        let c = Clock::scaled(20.0);
        assert_eq!(c.to_real(Duration::from_secs(10)), Duration::from_millis(500));
        assert_eq!(c.to_virtual(Duration::from_millis(500)), Duration::from_secs(10));
        assert_eq!(Clock::scaled(0.1).scale(), 1.0);
        assert_eq!(Clock::scaled(f64::NAN).scale(), 1.0);
    }

    #[test]
    fn virtual_between_never_negative() {
        let c = Clock::real();
        let a = Timestamp::from_second(100).unwrap();
        let b = Timestamp::from_second(50).unwrap();
        assert_eq!(c.virtual_between(a, b), Duration::ZERO);
        assert_eq!(c.virtual_between(b, a), Duration::from_secs(50));
    }
}
