//! The reconnection state machine: pure and deterministic.
//!
//! Inputs (user commands, connection outcomes, timer expiry) go in together with
//! the current time; actions come out. It performs no I/O and reads no clock, so
//! every interleaving can be replayed in `cargo test`. The tokio driver
//! (`driver.rs`) executes the actions. Its shape makes the core invariants
//! structural: there is one `Phase`, the reconnect timer exists only in
//! `Phase::Backoff`, and a connection exists only in `Connecting`, `Open` or
//! `Closing`, so neither can be doubled.

use crate::backoff::Backoff;
use crate::errors::ConnError;

#[derive(Clone, Debug)]
pub struct Policy {
    pub backoff: Backoff,
    /// Reconnect attempts allowed after a failure before giving up
    /// (`u64::MAX` for unlimited).
    pub max_retries: u64,
    /// A connection that stayed open at least this long resets the failure count.
    pub min_uptime_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// No connection, no timer: the driver is finished.
    Idle,
    Connecting,
    Open,
    /// Our close frame is out; waiting for the peer or the deadline.
    Closing,
    /// Waiting for the one reconnect timer.
    Backoff,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Connect,
    Disconnect {
        code: u16,
        reason: String,
    },
    /// The handshake of the current attempt succeeded.
    Opened,
    /// The current attempt failed before the connection opened.
    AttemptFailed {
        error: ConnError,
    },
    /// The open (or closing) connection ended.
    Lost {
        code: u16,
        reason: String,
        was_clean: bool,
        error: Option<ConnError>,
    },
    /// The reconnect timer fired.
    TimerFired,
    /// The close handshake did not finish in time.
    CloseDeadline,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    Connecting {
        attempt: u32,
    },
    Open,
    Error(ConnError),
    Close {
        code: u16,
        reason: String,
        was_clean: bool,
        will_reconnect: bool,
    },
    Reconnecting {
        attempt: u32,
        delay_ms: u64,
    },
    GiveUp {
        attempts: u32,
        reason: &'static str,
        last_error: Option<ConnError>,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Begin a connection attempt. `reconnect` is false for the first attempt
    /// after `connect()`.
    StartAttempt {
        attempt: u32,
        reconnect: bool,
    },
    /// Drop the in-flight attempt (TCP, TLS and upgrade).
    AbortAttempt,
    /// Stop accepting sends, write the close frame after what is queued, arm the close deadline.
    StartClose {
        code: u16,
        reason: String,
    },
    /// Drop the socket without further ado.
    DropConnection,
    ArmTimer {
        delay_ms: u64,
    },
    CancelTimer,
    Emit(Event),
    /// A `disconnect()` has completed.
    DisconnectDone,
    /// Nothing is left: the driver exits.
    Finish,
}

pub struct Machine {
    policy: Policy,
    phase: Phase,
    /// Consecutive failed attempts (drives the backoff).
    failures: u32,
    opened_at: u64,
    /// In `Closing`: start a fresh connection once the close completes.
    reconnect_after_close: bool,
    current_is_reconnect: bool,
    last_error: Option<ConnError>,
    rng: fastrand::Rng,
}

impl Machine {
    pub fn new(policy: Policy, seed: u64) -> Self {
        Machine {
            policy,
            phase: Phase::Idle,
            failures: 0,
            opened_at: 0,
            reconnect_after_close: false,
            current_is_reconnect: false,
            last_error: None,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the attempt in flight (or the open connection) is a reconnection.
    pub fn is_reconnect(&self) -> bool {
        self.current_is_reconnect
    }

    pub fn handle(&mut self, input: Input, now_ms: u64, out: &mut Vec<Action>) {
        use Phase::*;
        match (self.phase, input) {
            (Idle, Input::Connect) => {
                self.failures = 0;
                self.last_error = None;
                self.start_attempt(false, out);
            }
            (Idle, Input::Disconnect { .. }) => {
                out.push(Action::DisconnectDone);
                out.push(Action::Finish);
            }
            (Connecting | Open, Input::Connect) => {}
            (Connecting, Input::Disconnect { .. }) => {
                out.push(Action::AbortAttempt);
                self.emit_close(1006, String::new(), false, false, out);
                self.finish_disconnect(out);
            }
            (Connecting, Input::Opened) => {
                self.phase = Open;
                self.opened_at = now_ms;
                out.push(Action::Emit(Event::Open));
            }
            (Connecting, Input::AttemptFailed { error }) => {
                out.push(Action::Emit(Event::Error(error.clone())));
                self.last_error = Some(error);
                self.fail(1006, String::new(), false, out);
            }
            (Open, Input::Disconnect { code, reason }) => {
                self.phase = Closing;
                self.reconnect_after_close = false;
                out.push(Action::StartClose { code, reason });
            }
            (
                Open,
                Input::Lost {
                    code,
                    reason,
                    was_clean,
                    error,
                },
            ) => {
                if now_ms.saturating_sub(self.opened_at) >= self.policy.min_uptime_ms {
                    self.failures = 0;
                }
                if let Some(error) = error {
                    out.push(Action::Emit(Event::Error(error.clone())));
                    self.last_error = Some(error);
                }
                self.fail(code, reason, was_clean, out);
            }
            (Closing, Input::Connect) => self.reconnect_after_close = true,
            (Closing, Input::Disconnect { .. }) => self.reconnect_after_close = false,
            (
                Closing,
                Input::Lost {
                    code,
                    reason,
                    was_clean,
                    ..
                },
            ) => {
                self.closed_by_us(code, reason, was_clean, out);
            }
            (Closing, Input::CloseDeadline) => {
                out.push(Action::DropConnection);
                self.closed_by_us(1006, String::new(), false, out);
            }
            (Backoff, Input::Connect) => {
                out.push(Action::CancelTimer);
                self.start_attempt(true, out);
            }
            (Backoff, Input::TimerFired) => self.start_attempt(true, out),
            (Backoff, Input::Disconnect { .. }) => {
                out.push(Action::CancelTimer);
                self.finish_disconnect(out);
            }
            // Anything else is stale (an outcome of something already cancelled) and ignored.
            _ => {}
        }
    }

    fn start_attempt(&mut self, reconnect: bool, out: &mut Vec<Action>) {
        self.phase = Phase::Connecting;
        self.current_is_reconnect = reconnect;
        let attempt = self.failures;
        out.push(Action::Emit(Event::Connecting { attempt }));
        out.push(Action::StartAttempt { attempt, reconnect });
    }

    fn emit_close(&mut self, code: u16, reason: String, was_clean: bool, will_reconnect: bool, out: &mut Vec<Action>) {
        out.push(Action::Emit(Event::Close {
            code,
            reason,
            was_clean,
            will_reconnect,
        }));
    }

    /// A failed attempt or a lost connection: retry with backoff, or give up.
    fn fail(&mut self, code: u16, reason: String, was_clean: bool, out: &mut Vec<Action>) {
        self.failures = self.failures.saturating_add(1);
        if u64::from(self.failures) > self.policy.max_retries {
            self.emit_close(code, reason, was_clean, false, out);
            out.push(Action::Emit(Event::GiveUp {
                attempts: self.failures,
                reason: "maxRetries",
                last_error: self.last_error.take(),
            }));
            self.phase = Phase::Idle;
            out.push(Action::Finish);
            return;
        }
        self.emit_close(code, reason, was_clean, true, out);
        let delay_ms = self.policy.backoff.delay(self.failures, self.rng.f64());
        self.phase = Phase::Backoff;
        out.push(Action::ArmTimer { delay_ms });
        out.push(Action::Emit(Event::Reconnecting {
            attempt: self.failures,
            delay_ms,
        }));
    }

    fn closed_by_us(&mut self, code: u16, reason: String, was_clean: bool, out: &mut Vec<Action>) {
        let again = self.reconnect_after_close;
        self.reconnect_after_close = false;
        self.emit_close(code, reason, was_clean, again, out);
        out.push(Action::DisconnectDone);
        if again {
            self.failures = 0;
            self.start_attempt(false, out);
        } else {
            self.phase = Phase::Idle;
            out.push(Action::Finish);
        }
    }

    fn finish_disconnect(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Idle;
        out.push(Action::DisconnectDone);
        out.push(Action::Finish);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backoff::Jitter;
    use proptest::prelude::*;

    fn policy(max_retries: u64) -> Policy {
        Policy {
            backoff: Backoff {
                min_delay_ms: 100,
                max_delay_ms: 1_000,
                factor: 2.0,
                jitter: Jitter::None,
            },
            max_retries,
            min_uptime_ms: 500,
        }
    }

    fn err() -> ConnError {
        ConnError::new("ERR_CONNECT", "refused")
    }

    fn lost() -> Input {
        Input::Lost {
            code: 1006,
            reason: String::new(),
            was_clean: false,
            error: None,
        }
    }

    fn run(m: &mut Machine, input: Input, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        m.handle(input, now, &mut out);
        out
    }

    #[test]
    fn failed_attempts_back_off_then_give_up() {
        let mut m = Machine::new(policy(2), 1);
        assert!(matches!(
            run(&mut m, Input::Connect, 0)[..],
            [
                Action::Emit(Event::Connecting { attempt: 0 }),
                Action::StartAttempt {
                    attempt: 0,
                    reconnect: false
                }
            ]
        ));
        let a = run(&mut m, Input::AttemptFailed { error: err() }, 0);
        assert!(a.contains(&Action::ArmTimer { delay_ms: 100 }));
        run(&mut m, Input::TimerFired, 100);
        let a = run(&mut m, Input::AttemptFailed { error: err() }, 100);
        assert!(a.contains(&Action::ArmTimer { delay_ms: 200 }));
        run(&mut m, Input::TimerFired, 300);
        let a = run(&mut m, Input::AttemptFailed { error: err() }, 300);
        assert!(a
            .iter()
            .any(|x| matches!(x, Action::Emit(Event::GiveUp { attempts: 3, .. }))));
        assert_eq!(a.last(), Some(&Action::Finish));
        assert_eq!(m.phase(), Phase::Idle);
    }

    #[test]
    fn uptime_resets_the_failure_count() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, Input::AttemptFailed { error: err() }, 0);
        run(&mut m, Input::TimerFired, 100);
        run(&mut m, Input::Opened, 100);
        // Dropped quickly: the count keeps growing.
        let a = run(&mut m, lost(), 150);
        assert!(a.contains(&Action::ArmTimer { delay_ms: 200 }));
        run(&mut m, Input::TimerFired, 350);
        run(&mut m, Input::Opened, 350);
        // Stayed up for minUptime: back to the first delay.
        let a = run(&mut m, lost(), 900);
        assert!(a.contains(&Action::ArmTimer { delay_ms: 100 }));
    }

    #[test]
    fn connect_during_backoff_cancels_the_timer() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, Input::AttemptFailed { error: err() }, 0);
        let a = run(&mut m, Input::Connect, 10);
        assert_eq!(a[0], Action::CancelTimer);
        assert!(matches!(a[2], Action::StartAttempt { reconnect: true, .. }));
        // The timer was cancelled: a stale expiry does nothing.
        assert!(run(&mut m, Input::TimerFired, 100).is_empty());
    }

    #[test]
    fn connect_while_closing_reconnects_after_the_close() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, Input::Opened, 0);
        run(
            &mut m,
            Input::Disconnect {
                code: 1000,
                reason: "bye".into(),
            },
            1,
        );
        run(&mut m, Input::Connect, 2);
        let a = run(
            &mut m,
            Input::Lost {
                code: 1000,
                reason: "bye".into(),
                was_clean: true,
                error: None,
            },
            3,
        );
        assert!(a.contains(&Action::DisconnectDone));
        assert!(matches!(a.last(), Some(Action::StartAttempt { reconnect: false, .. })));
    }

    /// Replays random input sequences and checks invariants 1-3 after every step.
    struct Model {
        timers: u32,
        connections: u32,
        finished: bool,
    }

    fn arb_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            Just(Input::Connect),
            Just(Input::Disconnect {
                code: 1000,
                reason: String::new()
            }),
            Just(Input::Opened),
            Just(Input::AttemptFailed {
                error: ConnError::new("ERR_CONNECT", "x")
            }),
            Just(Input::Lost {
                code: 1006,
                reason: String::new(),
                was_clean: false,
                error: None
            }),
            Just(Input::Lost {
                code: 1001,
                reason: "going away".into(),
                was_clean: true,
                error: None
            }),
            Just(Input::TimerFired),
            Just(Input::CloseDeadline),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]
        #[test]
        fn invariants_hold_for_any_sequence(
            seed in any::<u64>(),
            max_retries in prop_oneof![Just(u64::MAX), 0u64..5],
            steps in proptest::collection::vec((arb_input(), 0u64..2_000), 1..80),
        ) {
            let mut m = Machine::new(policy(max_retries), seed);
            let mut model = Model { timers: 0, connections: 0, finished: true };
            let mut now = 0;
            let mut out = Vec::new();
            let mut disconnect_pending = false;
            for (input, dt) in steps {
                now += dt;
                let was_phase = m.phase();
                let is_disconnect = matches!(input, Input::Disconnect { .. });
                let is_connect = matches!(input, Input::Connect);
                if model.finished && !is_connect && !is_disconnect {
                    // The driver is not running: no outcome can arrive.
                    continue;
                }
                // Outcomes only arrive for things that exist (the driver guarantees it).
                match input {
                    Input::Opened | Input::AttemptFailed { .. } if was_phase != Phase::Connecting => continue,
                    Input::Lost { .. } if !matches!(was_phase, Phase::Open | Phase::Closing) => continue,
                    Input::TimerFired if was_phase != Phase::Backoff => continue,
                    Input::CloseDeadline if was_phase != Phase::Closing => continue,
                    _ => {}
                }
                if is_disconnect { disconnect_pending = true; }
                out.clear();
                m.handle(input.clone(), now, &mut out);
                if matches!(input, Input::Lost { .. } | Input::AttemptFailed { .. }) { model.connections -= 1; }
                for a in &out {
                    match a {
                        Action::StartAttempt { .. } => model.connections += 1,
                        Action::AbortAttempt | Action::DropConnection => model.connections -= 1,
                        Action::ArmTimer { delay_ms } => {
                            model.timers += 1;
                            prop_assert!(*delay_ms <= 1_000);
                        }
                        Action::CancelTimer => model.timers -= 1,
                        Action::DisconnectDone => disconnect_pending = false,
                        Action::Finish => model.finished = true,
                        _ => {}
                    }
                }
                if matches!(input, Input::TimerFired) { model.timers -= 1; }
                if is_connect && model.finished && m.phase() != Phase::Idle { model.finished = false; }
                // Invariant 1: at most one reconnect timer, and only while backing off.
                prop_assert!(model.timers <= 1);
                prop_assert_eq!(model.timers == 1, m.phase() == Phase::Backoff);
                // Invariant 2: at most one connection, and only in a connection phase.
                prop_assert!(model.connections <= 1);
                prop_assert_eq!(model.connections == 1, matches!(m.phase(), Phase::Connecting | Phase::Open | Phase::Closing));
                // Invariant 3: once finished, nothing is left.
                if model.finished {
                    prop_assert_eq!(m.phase(), Phase::Idle);
                    prop_assert_eq!(model.timers + model.connections, 0);
                    prop_assert!(!disconnect_pending);
                }
                // A disconnect leaves no timer and never starts a reconnect by itself.
                if is_disconnect {
                    let restarts = out.iter().any(|a| matches!(a, Action::ArmTimer { .. } | Action::StartAttempt { .. }));
                    prop_assert!(!restarts, "disconnect restarted something: {:?}", out);
                }
            }
        }
    }
}
