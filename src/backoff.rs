//! Reconnect delay arithmetic: exponential growth, a cap, then jitter.
//!
//! Every step is overflow-safe: a huge attempt number or factor yields the cap,
//! never NaN, zero-by-accident or a value past the timer limit.

/// The largest delay a JavaScript timer accepts (2^31 - 1 ms). Node clamps larger
/// values to 1 ms, a classic reconnect-storm bug; we never produce one.
pub const MAX_DELAY_MS: u64 = 2_147_483_647;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Retries on a grid whose steps grow by `factor` up to the cap, each client at
    /// an offset on it drawn once per outage (see [`Backoff::delay`]).
    Spread,
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
            "spread" => Some(Jitter::Spread),
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
            jitter: Jitter::Spread,
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

    /// The delay to wait before retry number `attempt`, never above the cap.
    ///
    /// `unit` is a uniform random number in `[0, 1)` drawn for this retry; `phase`
    /// one drawn once for the outage (the first retry after a connection was lost
    /// or failed) and passed again for every later retry of it. `Full`, `Equal` and
    /// `None` apply their jitter to the capped delay, so that it never disappears at
    /// the cap; `Spread` places the retries on a grid (see [`Backoff::spread`]).
    pub fn delay(&self, attempt: u32, unit: f64, phase: f64) -> u64 {
        let d = self.capped(attempt);
        let unit = if unit.is_finite() { unit.clamp(0.0, 1.0) } else { 0.0 };
        match self.jitter {
            Jitter::Spread => return self.spread(attempt, phase),
            Jitter::None => d,
            Jitter::Full => (d as f64 * unit).round() as u64,
            Jitter::Equal => {
                let half = d / 2;
                half + ((d - half) as f64 * unit).round() as u64
            }
        }
        .min(d)
    }

    /// `Spread`: retry n of an outage happens at grid position `phase + n - 1`, and
    /// position `x` lies `W(x)` after the loss, where the step from `x` to `x + 1` is
    /// `minDelay * factor^x` until it reaches the cap, and the cap after that:
    ///   W(x) = minDelay (factor^x - 1) / (factor - 1)   for x <= xc,
    ///   W(x) = W(xc) + (x - xc) cap                       for x >= xc,
    /// with `minDelay * factor^xc = cap`. The wait before retry n is
    /// `W(phase + n - 1) - W(phase + n - 2)` (the first, `W(phase)`), so retry
    /// n >= 2 waits at least the base delay of retry n - 1 and, below the cap, at most
    /// that of retry n (the step that reaches the cap can pass it by a fraction of the
    /// cap: under a tenth for factors up to 2); retry 1 waits 0 to `minDelay`; none
    /// waits more than the cap. (When `minDelay * factor` passes the cap, the first step
    /// is `minDelay` long and the later ones the cap.)
    ///
    /// Why: clients dropped together then each attempt once per step, spread
    /// over the step by their phases, so whenever the server returns, the first
    /// attempt of each after it falls in one step with density `1 / (step length)`:
    /// an even arrival rate at any outage's end, where jitter drawn per retry
    /// piles the next attempts at the start of the window (the remaining wait of a
    /// random delay is skewed short). docs/performance.md has the figures.
    fn spread(&self, attempt: u32, phase: f64) -> u64 {
        let cap = self.max_delay_ms.min(MAX_DELAY_MS);
        let first = self.capped(1) as f64; // min(minDelay, cap)
        if first == 0.0 || attempt == 0 {
            return 0;
        }
        let phase = if phase.is_finite() { phase.clamp(0.0, 1.0) } else { 0.0 };
        let f = self.factor;
        let capf = cap as f64;
        let wait = if !(f > 1.0 && f.is_finite()) || first >= capf {
            // Steps of one length: the grid does not grow.
            if attempt == 1 {
                phase * first
            } else {
                first
            }
        } else if first * f >= capf {
            // The first step's end already reaches the cap (xc <= 1): it is `minDelay` long, and
            // every later one the cap (W(x) = x minDelay up to 1, then a cap a step), so that
            // retry 1 waits no more than `minDelay` (the geometric W would make it up to the cap).
            match attempt {
                1 => phase * first,
                2 => first + phase * (capf - first),
                _ => capf,
            }
        } else {
            let xc = (capf / first).ln() / f.ln(); // > 1
            if attempt == 1 {
                // phase <= 1 < xc: on the geometric part.
                first * (f.powf(phase) - 1.0) / (f - 1.0)
            } else {
                let x = phase + f64::from(attempt - 2);
                if x >= xc {
                    capf
                } else if x + 1.0 <= xc {
                    first * f.powf(x)
                } else {
                    // The step that straddles xc: geometric up to it, the cap's slope past it.
                    (capf - first * f.powf(x)) / (f - 1.0) + (x + 1.0 - xc) * capf
                }
            }
        };
        if wait.is_finite() {
            // Non-negative and at most `cap` after the clamp, so the cast is exact enough.
            (wait.clamp(0.0, capf).round() as u64).min(cap)
        } else {
            cap
        }
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
        let got: Vec<u64> = (1..=9).map(|n| bo.delay(n, 0.5, 0.0)).collect();
        assert_eq!(got, vec![250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    }

    #[test]
    fn huge_attempts_give_the_cap() {
        let bo = b(1000, 30_000, 10.0, Jitter::None);
        assert_eq!(bo.delay(10_000, 0.0, 0.0), 30_000);
        assert_eq!(bo.delay(u32::MAX, 0.0, 0.0), 30_000);
        let unbounded = b(1000, u64::MAX, 10.0, Jitter::None);
        assert_eq!(unbounded.delay(10_000, 0.0, 0.0), MAX_DELAY_MS);
    }

    #[test]
    fn jitter_survives_the_cap() {
        let bo = b(1000, 5_000, 2.0, Jitter::Full);
        assert_eq!(bo.delay(500, 0.0, 0.0), 0);
        assert_eq!(bo.delay(500, 0.5, 0.0), 2_500);
        let eq = b(1000, 5_000, 2.0, Jitter::Equal);
        assert_eq!(eq.delay(500, 0.0, 0.0), 2_500);
        assert_eq!(eq.delay(500, 0.999_999, 0.0), 5_000);
    }

    #[test]
    fn spread_retry_one_waits_at_most_min_delay_when_the_first_step_reaches_the_cap() {
        // minDelay * factor > maxDelay: the grid's first step ends past the cap.
        for (min, max, factor) in [(1000, 1500, 2.0), (250, 30_000, 200.0), (250, 30_000, 1e300)] {
            let bo = b(min, max, factor, Jitter::Spread);
            for k in 0..=100 {
                let phase = f64::from(k) / 100.0;
                let (one, two, three) = (
                    bo.delay(1, 0.5, phase),
                    bo.delay(2, 0.5, phase),
                    bo.delay(3, 0.5, phase),
                );
                assert!(one <= min, "{min}/{max}/{factor} phase {phase}: retry 1 waited {one}");
                assert!((min..=max).contains(&two), "retry 2 waited {two}");
                assert_eq!(three, max);
                // On the grid: retry 2 comes a whole step (minDelay, then the cap) after phase 0's first.
                assert!(one + two >= min && one + two <= min + max);
            }
            assert_eq!((bo.delay(1, 0.5, 1.0), bo.delay(2, 0.5, 0.0)), (min, min));
        }
    }

    #[test]
    fn spread_retries_sit_on_a_growing_grid() {
        let bo = b(1000, 30_000, 2.0, Jitter::Spread);
        // Phase 0.5: positions 0.5, 1.5, 2.5, ... so the waits are 1000 (2^0.5 - 1), then 1000 * 2^(n - 1.5).
        let got: Vec<u64> = (1..=5).map(|n| bo.delay(n, 0.9, 0.5)).collect();
        assert_eq!(got, vec![414, 1414, 2828, 5657, 11314]);
        // Position 4.5 to 5.5 straddles xc = log2(30) = 4.91: 1000 * 2^x up to xc, the cap's slope after.
        assert_eq!(bo.delay(6, 0.9, 0.5), 25_166);
        assert_eq!(bo.delay(7, 0.9, 0.5), 30_000);
        assert_eq!(bo.delay(u32::MAX, 0.9, 0.5), 30_000);
        // Phase 0 retries at once, then on the base delays; the per-retry `unit` plays no part.
        assert_eq!(bo.delay(1, 0.1, 0.0), 0);
        assert_eq!(bo.delay(2, 0.1, 0.0), 1_000);
        assert_eq!(bo.delay(3, 0.7, 0.0), 2_000);
        // A grid that does not grow (factor 1, or minDelay at the cap): one step length.
        let flat = b(1000, 30_000, 1.0, Jitter::Spread);
        assert_eq!(
            (
                flat.delay(1, 0.0, 0.25),
                flat.delay(2, 0.0, 0.25),
                flat.delay(99, 0.0, 0.25)
            ),
            (250, 1000, 1000)
        );
        let capped = b(9000, 5000, 2.0, Jitter::Spread);
        assert_eq!((capped.delay(1, 0.0, 0.5), capped.delay(2, 0.0, 0.5)), (2500, 5000));
        assert_eq!(b(0, 5000, 2.0, Jitter::Spread).delay(3, 0.5, 0.5), 0);
    }

    /// Where each of `n` clients dropped at t = 0 first attempts after an outage of
    /// `outage` ms (ms after the server's return).
    fn first_after(bo: &Backoff, outage: f64, n: usize, rng: &mut fastrand::Rng) -> Vec<f64> {
        (0..n)
            .map(|_| {
                let phase = rng.f64();
                let mut t = 0.0;
                for attempt in 1.. {
                    t += bo.delay(attempt, rng.f64(), phase) as f64;
                    if t >= outage {
                        break;
                    }
                }
                t - outage
            })
            .collect()
    }

    /// The busiest of 20 equal slices of the window (return to last arrival) over the mean.
    fn peak_over_mean(arrivals: &[f64]) -> f64 {
        let last = arrivals.iter().cloned().fold(0.0, f64::max) + 1.0;
        let mut slices = [0usize; 20];
        for a in arrivals {
            slices[((a / last) * 20.0) as usize] += 1;
        }
        *slices.iter().max().unwrap() as f64 / (arrivals.len() as f64 / 20.0)
    }

    #[test]
    fn spread_brings_a_crowd_back_evenly_whenever_the_server_returns() {
        let mut rng = fastrand::Rng::with_seed(7);
        let outages = [
            300.0, 700.0, 1000.0, 1500.0, 2000.0, 2600.0, 3000.0, 5000.0, 8000.0, 13000.0, 21000.0, 40000.0,
        ];
        for (min, max, factor) in [
            (1000, 5000, 1.3),
            (250, 30_000, 2.0),
            (500, 10_000, 1.5),
            (1000, 1000, 1.0),
        ] {
            // Within a grid step the density falls by `factor`: peak/mean (f - 1) / ln f, 1.44 at f = 2;
            // 0.2 more allows for the counting noise of 20,000 clients in 20 slices.
            let bound = if factor > 1.0 {
                (factor - 1.0) / f64::ln(factor)
            } else {
                1.0
            } + 0.2;
            let spread = b(min, max, factor, Jitter::Spread);
            let equal = b(min, max, factor, Jitter::Equal);
            let mut equal_worst = 0.0f64;
            for outage in outages {
                let r = peak_over_mean(&first_after(&spread, outage, 20_000, &mut rng));
                assert!(
                    r <= bound,
                    "spread {min}/{max}/{factor}, outage {outage}: peak/mean {r:.2} > {bound:.2}"
                );
                equal_worst = equal_worst.max(peak_over_mean(&first_after(&equal, outage, 20_000, &mut rng)));
            }
            // What the test tells apart: jitter drawn per retry piles arrivals up at the window's start.
            if factor > 1.0 {
                assert!(
                    equal_worst > 1.9,
                    "equal {min}/{max}/{factor}: worst peak/mean {equal_worst:.2}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn spread_stays_on_the_grid(
            min in 0u64..100_000,
            extra in 0u64..10_000_000,
            factor in 1.0f64..1000.0,
            attempt in 1u32..200,
            phase in 0.0f64..1.0,
        ) {
            let max = min.saturating_add(extra);
            let bo = b(min, max, factor, Jitter::Spread);
            let cap = max.min(MAX_DELAY_MS);
            let d = bo.delay(attempt, 0.5, phase);
            prop_assert!(d <= cap);
            // Retry n >= 2 waits at least the base delay of retry n - 1, and steps never shrink.
            if attempt >= 2 {
                prop_assert!(d + 1 >= bo.capped(attempt - 1), "{} < {}", d, bo.capped(attempt - 1));
                prop_assert!(bo.delay(attempt + 1, 0.5, phase) + 1 >= d);
            } else {
                // Retry 1 waits 0 to minDelay, as the README says.
                prop_assert!(d <= bo.capped(1), "{} > {}", d, bo.capped(1));
            }
            // A later phase is later on the grid, but by less than one step: clients keep their order.
            let later = (phase + 0.25).min(1.0);
            let at = |ph: f64| (1..=attempt).map(|n| bo.delay(n, 0.5, ph) as f64).sum::<f64>();
            let (t, u) = (at(phase), at(later));
            prop_assert!(u + f64::from(attempt) >= t);
            prop_assert!(u <= t + bo.delay(attempt + 1, 0.5, phase) as f64 + f64::from(attempt) + 1.0);
        }

        #[test]
        fn bounded_and_monotone_cap(
            min in 0u64..100_000,
            extra in 0u64..10_000_000,
            factor in 1.0f64..1000.0,
            attempt in 1u32..u32::MAX,
            unit in 0.0f64..1.0,
        ) {
            let max = min.saturating_add(extra);
            for jitter in [Jitter::Spread, Jitter::Full, Jitter::Equal, Jitter::None] {
                let bo = b(min, max, factor, jitter);
                let cap = bo.capped(attempt);
                prop_assert!(cap <= max.min(MAX_DELAY_MS));
                prop_assert!(cap >= min.min(max) || min == 0);
                prop_assert!(bo.capped(attempt.saturating_add(1)) >= cap);
                let d = bo.delay(attempt, unit, unit);
                prop_assert!(d <= max.min(MAX_DELAY_MS));
                if jitter != Jitter::Spread { prop_assert!(d <= cap); }
                if jitter == Jitter::Equal { prop_assert!(d >= cap / 2); }
                if jitter == Jitter::None { prop_assert_eq!(d, cap); }
            }
        }
    }
}
