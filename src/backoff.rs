//! Reconnect delay arithmetic: exponential growth, a cap, then jitter.
//!
//! Every step is overflow-safe: a huge attempt number or factor yields the cap,
//! never NaN, zero-by-accident or a value past the timer limit.

/// The largest delay a JavaScript timer accepts (2^31 - 1 ms). Node clamps larger
/// values to 1 ms, a classic reconnect-storm bug; we never produce one.
pub const MAX_DELAY_MS: u64 = 2_147_483_647;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Uniform in `0..=d`.
    Full,
    /// `d/2` plus uniform in `0..=d/2`.
    Equal,
    /// Exactly `d`.
    None,
}

impl Jitter {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(Jitter::Full),
            "equal" => Some(Jitter::Equal),
            "none" => Some(Jitter::None),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Backoff {
    pub min_delay_ms: u64,
    pub max_delay_ms: u64,
    pub factor: f64,
    pub jitter: Jitter,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            min_delay_ms: 250,
            max_delay_ms: 30_000,
            factor: 2.0,
            jitter: Jitter::Equal,
        }
    }
}

impl Backoff {
    /// `min(maxDelay, minDelay * factor^(attempt-1))` for a 1-based retry number,
    /// before jitter. Monotone non-decreasing in `attempt` when `factor >= 1`.
    pub fn capped(&self, attempt: u32) -> u64 {
        let cap = self.max_delay_ms.min(MAX_DELAY_MS);
        if self.min_delay_ms == 0 {
            return 0;
        }
        let exp = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let raw = self.min_delay_ms as f64 * self.factor.powi(exp);
        if raw.is_finite() && raw < cap as f64 {
            // `raw` is finite, non-negative and below `cap`, so the cast is exact enough.
            (raw as u64).min(cap)
        } else {
            cap
        }
    }

    /// The delay to wait before retry number `attempt`, with jitter applied after
    /// the cap so that jitter never disappears at the cap. `unit` is a uniform
    /// random number in `[0, 1)`.
    pub fn delay(&self, attempt: u32, unit: f64) -> u64 {
        let d = self.capped(attempt);
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        match self.jitter {
            Jitter::None => d,
            Jitter::Full => (d as f64 * unit).round() as u64,
            Jitter::Equal => {
                let half = d / 2;
                half + ((d - half) as f64 * unit).round() as u64
            }
        }
        .min(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(min: u64, max: u64, factor: f64, jitter: Jitter) -> Backoff {
        Backoff {
            min_delay_ms: min,
            max_delay_ms: max,
            factor,
            jitter,
        }
    }

    #[test]
    fn grows_then_caps() {
        let bo = b(250, 30_000, 2.0, Jitter::None);
        let got: Vec<u64> = (1..=9).map(|n| bo.delay(n, 0.5)).collect();
        assert_eq!(got, vec![250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn huge_attempts_give_the_cap() {
        let bo = b(1000, 30_000, 10.0, Jitter::None);
        assert_eq!(bo.delay(10_000, 0.0), 30_000);
        assert_eq!(bo.delay(u32::MAX, 0.0), 30_000);
        let unbounded = b(1000, u64::MAX, 10.0, Jitter::None);
        assert_eq!(unbounded.delay(10_000, 0.0), MAX_DELAY_MS);
    }

    #[test]
    fn jitter_survives_the_cap() {
        let bo = b(1000, 5_000, 2.0, Jitter::Full);
        assert_eq!(bo.delay(500, 0.0), 0);
        assert_eq!(bo.delay(500, 0.5), 2_500);
        let eq = b(1000, 5_000, 2.0, Jitter::Equal);
        assert_eq!(eq.delay(500, 0.0), 2_500);
        assert_eq!(eq.delay(500, 0.999_999), 5_000);
    }

    proptest! {
        #[test]
        fn bounded_and_monotone_cap(
            min in 0u64..100_000,
            extra in 0u64..10_000_000,
            factor in 1.0f64..1000.0,
            attempt in 1u32..u32::MAX,
            unit in 0.0f64..1.0,
        ) {
            let max = min.saturating_add(extra);
            for jitter in [Jitter::Full, Jitter::Equal, Jitter::None] {
                let bo = b(min, max, factor, jitter);
                let cap = bo.capped(attempt);
                prop_assert!(cap <= max.min(MAX_DELAY_MS));
                prop_assert!(cap >= min.min(max) || min == 0);
                prop_assert!(bo.capped(attempt.saturating_add(1)) >= cap);
                let d = bo.delay(attempt, unit);
                prop_assert!(d <= cap);
                if jitter == Jitter::Equal { prop_assert!(d >= cap / 2); }
                if jitter == Jitter::None { prop_assert_eq!(d, cap); }
            }
        }
    }
}
