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

/// A duration the way Go prints it (`3m0s`, `1h2m3.5s`, `250ms`), as the kubelet's messages do.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".to_string();
    }
    if nanos < 1_000 {
        return format!("{nanos}ns");
    }
    let trim = |whole: u128, frac: u128, width: usize| {
        let frac = format!("{frac:0width$}");
        let frac = frac.trim_end_matches('0');
        if frac.is_empty() {
            whole.to_string()
        } else {
            format!("{whole}.{frac}")
        }
    };
    if nanos < 1_000_000 {
        return format!("{}µs", trim(nanos / 1_000, nanos % 1_000, 3));
    }
    if nanos < 1_000_000_000 {
        return format!("{}ms", trim(nanos / 1_000_000, nanos % 1_000_000, 6));
    }
    let total_secs = nanos / 1_000_000_000;
    let (h, m, s) = (total_secs / 3600, (total_secs / 60) % 60, total_secs % 60);
    let secs = format!("{}s", trim(s, nanos % 1_000_000_000, 9));
    match (h, m) {
        (0, 0) => secs,
        (0, m) => format!("{m}m{secs}"),
        (h, m) => format!("{h}h{m}m{secs}"),
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

    #[test]
    fn go_durations() {
        let cases = [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(5), "5ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(61_500), "1m1.5s"),
            (Duration::from_secs(180), "3m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
        ];
        for (d, want) in cases {
            assert_eq!(go_duration(d), want);
        }
    }

    #[test]
    fn go_duration_format() {
        let s = Duration::from_secs;
        assert_eq!(go_duration(s(10)), "10s");
        assert_eq!(go_duration(s(20)), "20s");
        assert_eq!(go_duration(s(80)), "1m20s");
        assert_eq!(go_duration(s(160)), "2m40s");
        assert_eq!(go_duration(s(300)), "5m0s");
        assert_eq!(go_duration(s(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_nanos(7)), "7ns");
    }

    #[test]
    fn go_durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_secs(180)), "3m0s");
        assert_eq!(go_duration(Duration::from_millis(185_250)), "3m5.25s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::from_millis(300)), "300ms");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}
