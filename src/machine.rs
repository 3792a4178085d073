//! The reconnection state machine: pure and deterministic.
//!
//! Inputs (user commands, connection outcomes, timer expiry) go in together with
//! the current time; actions come out. It performs no I/O and reads no clock, so
//! every interleaving can be replayed in `cargo test`. The tokio driver
//! (`driver.rs`) executes the actions. Its shape makes the core invariants
//! structural: there is one `Phase`, the reconnect timer exists only in
//! `Phase::Backoff`, and a connection exists only in `Connecting`, `Open` or
//! `Closing`, so neither can be doubled.

use std::sync::Arc;

use crate::backoff::{Backoff, Jitter, MAX_DELAY_MS};
use crate::errors::ConnError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HonorRetryAfter {
    /// Use the server's `Retry-After`, capped by `maxDelay`.
    Capped,
    /// Use it even above `maxDelay`.
    Always,
    /// Ignore it.
    Never,
}

#[derive(Clone, Debug)]
pub struct Policy {
    pub backoff: Backoff,
    /// Reconnect attempts allowed after a failure before giving up (`u64::MAX` for unlimited).
    pub max_retries: u64,
    /// A connection that stayed open at least this long resets the failure count.
    pub min_uptime_ms: u64,
    /// A user `shouldReconnect` exists: every retry decision is asked for.
    pub ask: bool,
    pub honor_retry_after: HonorRetryAfter,
}

/// What the driver knows about a failure when it reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// The default policy's verdict (network errors and most closes: retry; 4xx, 1002/1003/1007/1008: stop).
    pub default: bool,
    /// A `Retry-After` the server sent, in ms.
    pub after_ms: Option<u64>,
}

impl Retry {
    #[cfg(test)]
    pub const YES: Retry = Retry {
        default: true,
        after_ms: None,
    };
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
    /// Waiting for the user's `shouldReconnect` verdict on a failure.
    Deciding,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    Connect,
    /// Force a fresh connection now (closing the current one with `code`).
    Reconnect {
        code: u16,
        reason: String,
    },
    /// `flush`: queued messages are waiting, connect (if not connected) and write them before closing.
    Disconnect {
        code: u16,
        reason: String,
        flush: bool,
    },
    /// The handshake of the current attempt succeeded.
    Opened,
    /// The current attempt failed before the connection opened.
    AttemptFailed {
        error: ConnError,
        retry: Retry,
    },
    /// The open (or closing) connection ended.
    Lost {
        code: u16,
        reason: String,
        was_clean: bool,
        error: Option<ConnError>,
        /// The connection reported `error` as it began closing: not emitted again.
        error_reported: bool,
        retry: Retry,
    },
    /// The user's `shouldReconnect` verdict.
    Decided {
        retry: bool,
    },
    /// The reconnect timer fired.
    TimerFired,
    /// The close (or flush) deadline passed.
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
        /// A `reconnect()` call ended this connection, attempt or pending failure.
        by_reconnect: bool,
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
    /// Begin a connection attempt. `reconnect` is false for the first attempt after `connect()`.
    StartAttempt {
        attempt: u32,
        reconnect: bool,
    },
    /// Drop the in-flight attempt (TCP, TLS and upgrade).
    AbortAttempt,
    /// Stop accepting sends, write the close frame after what is queued, arm the close deadline (if not armed).
    StartClose {
        code: u16,
        reason: String,
    },
    /// Arm the deadline of a flushing disconnect.
    ArmCloseDeadline,
    DisarmCloseDeadline,
    /// Drop the socket without further ado.
    DropConnection,
    ArmTimer {
        delay_ms: u64,
    },
    CancelTimer,
    /// Ask the user's `shouldReconnect`; answer with `Input::Decided`.
    AskPolicy {
        attempt: u32,
    },
    Emit(Event),
    /// A `disconnect()` has completed.
    DisconnectDone,
    /// Nothing is left: the driver exits.
    Finish,
}

/// A failure whose close event waits for the policy verdict.
#[derive(Clone, Debug)]
struct Failure {
    code: u16,
    reason: String,
    was_clean: bool,
    retry: Retry,
}

/// What happened since `connect()`, for `metrics.reconnects` (one byte: the machine lives in
/// every client's task, at the edge of tokio's size class).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Since {
    /// No connection has opened yet.
    Connect,
    /// One has; the attempt in flight (if any) does not re-establish a lost one.
    Opened,
    /// One has, and the backoff started the attempt in flight (or the open connection).
    Reconnecting,
}

pub struct Machine {
    /// Shared with every machine of the same configuration (the machine lives inline in its client's task).
    policy: Arc<Policy>,
    phase: Phase,
    /// Consecutive failed attempts (drives the backoff).
    failures: u32,
    opened_at: u64,
    /// In `Closing`: start a fresh connection once the close completes.
    reconnect_after_close: bool,
    /// In `Closing`: the close was started by `reconnect()` (its close event says so).
    closing_for_reconnect: bool,
    /// In `Connecting`: a flushing disconnect closes as soon as the connection opens.
    // Rarely set, so boxed: the machine lives inline in every active client's task.
    close_when_open: Option<Box<(u16, String)>>,
    deciding: Option<Box<Failure>>,
    /// Whether a connection opened since `connect()`, and the attempt in flight re-establishes one.
    since: Since,
    last_error: Option<Box<ConnError>>,
    /// Also `Jitter::Spread`'s offset for the current outage, without a field of its own
    /// (the client's task is at the edge of tokio's size class, see driver.rs): the
    /// generator moves on at an outage's first retry, and every retry of it reads the
    /// value that follows without drawing it.
    rng: fastrand::Rng,
}

impl Machine {
    pub fn new(policy: impl Into<Arc<Policy>>, seed: u64) -> Self {
        Machine {
            policy: policy.into(),
            phase: Phase::Idle,
            failures: 0,
            opened_at: 0,
            reconnect_after_close: false,
            closing_for_reconnect: false,
            close_when_open: None,
            deciding: None,
            since: Since::Connect,
            last_error: None,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether the attempt in flight (or the open connection) re-establishes a connection that
    /// was lost: the backoff started it, and a connection has opened since `connect()`.
    pub fn is_reconnect(&self) -> bool {
        self.since == Since::Reconnecting
    }

    /// Consecutive failures so far (the `attempt` of the next retry).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn handle(&mut self, input: Input, now_ms: u64, out: &mut Vec<Action>) {
        use Phase::*;
        match (self.phase, input) {
            (Idle, Input::Connect) | (Idle, Input::Reconnect { .. }) => {
                self.failures = 0;
                self.since = Since::Connect;
                self.last_error = None;
                self.start_attempt(false, out);
            }
            (Idle, Input::Disconnect { .. }) => {
                out.push(Action::DisconnectDone);
                out.push(Action::Finish);
            }
            // connect() cancels a flushing disconnect that is still waiting for the connection.
            (Connecting, Input::Connect) => self.cancel_flush(out),
            (Open, Input::Connect) => {}
            (Connecting, Input::Reconnect { code, reason }) => {
                out.push(Action::AbortAttempt);
                self.cancel_flush(out);
                self.emit_close(code, reason, false, true, true, out);
                self.failures = 0;
                // An attempt to re-establish a lost connection, started afresh, still is one.
                self.start_attempt(self.since == Since::Reconnecting, out);
            }
            (Connecting, Input::Disconnect { code, reason, flush }) => {
                if flush {
                    self.close_when_open = Some(Box::new((code, reason)));
                    out.push(Action::ArmCloseDeadline);
                } else {
                    self.abandon_attempt(out);
                }
            }
            (Connecting, Input::CloseDeadline) => self.abandon_attempt(out),
            (Connecting, Input::Opened) => {
                self.phase = Open;
                self.opened_at = now_ms;
                self.since = Since::Opened;
                out.push(Action::Emit(Event::Open));
                if let Some((code, reason)) = self.close_when_open.take().map(|b| *b) {
                    self.phase = Closing;
                    self.reconnect_after_close = false;
                    out.push(Action::StartClose { code, reason });
                }
            }
            (Connecting, Input::AttemptFailed { error, retry }) => {
                out.push(Action::Emit(Event::Error(error.clone())));
                self.last_error = Some(Box::new(error));
                if self.close_when_open.take().is_some() {
                    self.emit_close(1006, String::new(), false, false, false, out);
                    self.finish_disconnect(out);
                    return;
                }
                self.fail(
                    Failure {
                        code: 1006,
                        reason: String::new(),
                        was_clean: false,
                        retry,
                    },
                    out,
                );
            }
            (Open, Input::Disconnect { code, reason, .. }) => {
                self.phase = Closing;
                self.reconnect_after_close = false;
                out.push(Action::StartClose { code, reason });
            }
            (Open, Input::Reconnect { code, reason }) => {
                self.phase = Closing;
                self.reconnect_after_close = true;
                self.closing_for_reconnect = true;
                out.push(Action::StartClose { code, reason });
            }
            (
                Open,
                Input::Lost {
                    code,
                    reason,
                    was_clean,
                    error,
                    error_reported,
                    retry,
                },
            ) => {
                if now_ms.saturating_sub(self.opened_at) >= self.policy.min_uptime_ms {
                    self.failures = 0;
                }
                if let Some(error) = error {
                    if !error_reported {
                        out.push(Action::Emit(Event::Error(error.clone())));
                    }
                    self.last_error = Some(Box::new(error));
                } else if !retry.default {
                    self.last_error = Some(Box::new(ConnError::new(
                        crate::errors::ERR_CLOSED,
                        format!("the server closed the connection with code {code} {reason}")
                            .trim_end()
                            .to_owned(),
                    )));
                }
                self.fail(
                    Failure {
                        code,
                        reason,
                        was_clean,
                        retry,
                    },
                    out,
                );
            }
            (Closing, Input::Connect) | (Closing, Input::Reconnect { .. }) => {
                self.reconnect_after_close = true;
                // A flush asked for meanwhile is cancelled, as it is while connecting.
                self.close_when_open = None;
            }
            (Closing, Input::Disconnect { code, reason, flush }) => {
                if flush && self.reconnect_after_close {
                    // A connection was to follow this close (a reconnect() or connect() came), and
                    // messages are queued for it: it is made, writes them, and closes with this
                    // call's code (`closed_by_us`).
                    self.close_when_open = Some(Box::new((code, reason)));
                } else {
                    self.reconnect_after_close = false;
                    self.close_when_open = None;
                }
            }
            (
                Closing,
                Input::Lost {
                    code,
                    reason,
                    was_clean,
                    error,
                    error_reported,
                    ..
                },
            ) => {
                // What the peer sent broke the protocol or a limit while we closed: reported, as
                // `ws` reports it (unless the connection did as it began closing). The socket's and
                // TLS's failures are how a close may end (a reset after the peer's answer, say) and
                // stay quiet, as `ws` keeps them.
                let peer_data = |e: &ConnError| !error_reported && crate::errors::PEER_DATA.contains(&e.code);
                if let Some(error) = error.filter(peer_data) {
                    out.push(Action::Emit(Event::Error(error)));
                }
                self.closed_by_us(code, reason, was_clean, out);
            }
            (Closing, Input::CloseDeadline) => {
                out.push(Action::DropConnection);
                self.closed_by_us(1006, String::new(), false, out);
            }
            (Backoff, input @ (Input::Connect | Input::Reconnect { .. })) => {
                // reconnect() starts afresh, as it does from any other phase: maxRetries counts anew.
                if matches!(input, Input::Reconnect { .. }) {
                    self.failures = 0;
                }
                out.push(Action::CancelTimer);
                self.start_attempt(true, out);
            }
            (Backoff, Input::TimerFired) => self.start_attempt(true, out),
            (Backoff, Input::Disconnect { code, reason, flush }) => {
                out.push(Action::CancelTimer);
                self.disconnect_without_connection(code, reason, flush, out);
            }
            (Deciding, Input::Decided { retry }) => {
                if let Some(f) = self.deciding.take() {
                    self.conclude(*f, retry, out);
                }
            }
            (Deciding, input @ (Input::Connect | Input::Reconnect { .. })) => {
                let by_reconnect = matches!(input, Input::Reconnect { .. });
                if let Some(f) = self.deciding.take() {
                    self.emit_close(f.code, f.reason, f.was_clean, true, by_reconnect, out);
                }
                if matches!(input, Input::Reconnect { .. }) {
                    self.failures = 0;
                }
                self.start_attempt(true, out);
            }
            (Deciding, Input::Disconnect { code, reason, flush }) => {
                if let Some(f) = self.deciding.take() {
                    self.emit_close(f.code, f.reason, f.was_clean, flush, false, out);
                }
                self.disconnect_without_connection(code, reason, flush, out);
            }
            // Anything else is stale (an outcome of something already cancelled) and ignored.
            _ => {}
        }
    }

    fn start_attempt(&mut self, reconnect: bool, out: &mut Vec<Action>) {
        self.phase = Phase::Connecting;
        if self.since != Since::Connect {
            self.since = if reconnect { Since::Reconnecting } else { Since::Opened };
        }
        let attempt = self.failures;
        out.push(Action::Emit(Event::Connecting { attempt }));
        out.push(Action::StartAttempt { attempt, reconnect });
    }

    fn emit_close(
        &mut self,
        code: u16,
        reason: String,
        was_clean: bool,
        will_reconnect: bool,
        by_reconnect: bool,
        out: &mut Vec<Action>,
    ) {
        out.push(Action::Emit(Event::Close {
            code,
            reason,
            was_clean,
            will_reconnect,
            by_reconnect,
        }));
    }

    fn cancel_flush(&mut self, out: &mut Vec<Action>) {
        if self.close_when_open.take().is_some() {
            out.push(Action::DisarmCloseDeadline);
            out.push(Action::DisconnectDone);
        }
    }

    /// `disconnect()` (or its flush deadline) while an attempt is in flight.
    fn abandon_attempt(&mut self, out: &mut Vec<Action>) {
        out.push(Action::AbortAttempt);
        self.close_when_open = None;
        self.emit_close(1006, String::new(), false, false, false, out);
        self.finish_disconnect(out);
    }

    /// A failed attempt or a lost connection: ask the policy if asked to, then retry or give up.
    fn fail(&mut self, f: Failure, out: &mut Vec<Action>) {
        self.failures = self.failures.saturating_add(1);
        if u64::from(self.failures) > self.policy.max_retries {
            self.give_up("maxRetries", f, out);
        } else if self.policy.ask {
            self.phase = Phase::Deciding;
            self.deciding = Some(Box::new(f));
            out.push(Action::AskPolicy { attempt: self.failures });
        } else {
            let retry = f.retry.default;
            self.conclude(f, retry, out);
        }
    }

    fn conclude(&mut self, f: Failure, retry: bool, out: &mut Vec<Action>) {
        if !retry {
            return self.give_up("policy", f, out);
        }
        self.emit_close(f.code, f.reason, f.was_clean, true, false, out);
        let backoff = &self.policy.backoff;
        let spread = backoff.jitter == Jitter::Spread;
        if spread && self.failures == 1 {
            self.rng.u64(..); // a new outage, a new offset
        }
        let backoff_ms = if spread {
            backoff.delay(self.failures, 0.0, self.rng.clone().f64())
        } else {
            backoff.delay(self.failures, self.rng.f64(), 0.0)
        };
        // The server's `Retry-After` lengthens the wait, never shortens it: `0` or a date past
        // (a clock behind) must not turn a fleet into a tight loop.
        let delay_ms = match (f.retry.after_ms, self.policy.honor_retry_after) {
            (Some(after), HonorRetryAfter::Capped) => after.max(backoff_ms).min(backoff.max_delay_ms).min(MAX_DELAY_MS),
            (Some(after), HonorRetryAfter::Always) => after.max(backoff_ms).min(MAX_DELAY_MS),
            _ => backoff_ms,
        };
        self.phase = Phase::Backoff;
        out.push(Action::ArmTimer { delay_ms });
        out.push(Action::Emit(Event::Reconnecting {
            attempt: self.failures,
            delay_ms,
        }));
    }

    fn give_up(&mut self, reason: &'static str, f: Failure, out: &mut Vec<Action>) {
        self.emit_close(f.code, f.reason, f.was_clean, false, false, out);
        out.push(Action::Emit(Event::GiveUp {
            attempts: self.failures,
            reason,
            last_error: self.last_error.take().map(|b| *b),
        }));
        self.phase = Phase::Idle;
        out.push(Action::Finish);
    }

    fn closed_by_us(&mut self, code: u16, reason: String, was_clean: bool, out: &mut Vec<Action>) {
        let again = self.reconnect_after_close;
        let by_reconnect = self.closing_for_reconnect;
        self.reconnect_after_close = false;
        self.closing_for_reconnect = false;
        self.emit_close(code, reason, was_clean, again, by_reconnect, out);
        if self.close_when_open.is_some() {
            // A flushing disconnect() waits for the next connection (`again` holds): it is done
            // once that one has written the queue and closed, within closeTimeout from now.
            out.push(Action::ArmCloseDeadline);
        } else {
            out.push(Action::DisconnectDone);
        }
        if again {
            self.failures = 0;
            self.start_attempt(false, out);
        } else {
            self.phase = Phase::Idle;
            out.push(Action::Finish);
        }
    }

    /// `disconnect()` with no connection: done now, or (flush) connect, write the queue, then close.
    fn disconnect_without_connection(&mut self, code: u16, reason: String, flush: bool, out: &mut Vec<Action>) {
        if flush {
            self.close_when_open = Some(Box::new((code, reason)));
            out.push(Action::ArmCloseDeadline);
            self.start_attempt(true, out);
        } else {
            self.finish_disconnect(out);
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
            ask: false,
            honor_retry_after: HonorRetryAfter::Capped,
        }
    }

    fn err() -> ConnError {
        ConnError::new("ERR_CONNECT", "refused")
    }

    fn reconnect() -> Input {
        Input::Reconnect {
            code: 1000,
            reason: String::new(),
        }
    }

    fn failed() -> Input {
        Input::AttemptFailed {
            error: err(),
            retry: Retry::YES,
        }
    }

    fn lost() -> Input {
        Input::Lost {
            code: 1006,
            reason: String::new(),
            was_clean: false,
            error: None,
            error_reported: false,
            retry: Retry::YES,
        }
    }

    fn disconnect(flush: bool) -> Input {
        Input::Disconnect {
            code: 1000,
            reason: String::new(),
            flush,
        }
    }

    fn run(m: &mut Machine, input: Input, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        m.handle(input, now, &mut out);
        out
    }

    fn gave_up(a: &[Action]) -> Option<(&'static str, u32)> {
        a.iter().find_map(|x| match x {
            Action::Emit(Event::GiveUp { reason, attempts, .. }) => Some((*reason, *attempts)),
            _ => None,
        })
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
        let a = run(&mut m, failed(), 0);
        assert!(a.contains(&Action::ArmTimer { delay_ms: 100 }));
        run(&mut m, Input::TimerFired, 100);
        let a = run(&mut m, failed(), 100);
        assert!(a.contains(&Action::ArmTimer { delay_ms: 200 }));
        run(&mut m, Input::TimerFired, 300);
        let a = run(&mut m, failed(), 300);
        assert_eq!(gave_up(&a), Some(("maxRetries", 3)));
        assert_eq!(a.last(), Some(&Action::Finish));
        assert_eq!(m.phase(), Phase::Idle);
    }

    #[test]
    fn uptime_resets_the_failure_count() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, failed(), 0);
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

    /// An error the connection reported as it began closing (`JsEvent::Closing`) is not emitted
    /// again with its close, open or closing for us; it still counts as the failure it is.
    #[test]
    fn an_error_reported_as_the_connection_began_closing_is_not_emitted_again() {
        let lost = || Input::Lost {
            code: 1002,
            reason: String::new(),
            was_clean: false,
            error: Some(ConnError::new(crate::errors::ERR_PROTOCOL, "RSV1 set")),
            error_reported: true,
            retry: Retry::YES,
        };
        let errors = |a: &[Action]| a.iter().filter(|x| matches!(x, Action::Emit(Event::Error(_)))).count();
        for ours_first in [false, true] {
            let mut m = Machine::new(policy(0), 1);
            run(&mut m, Input::Connect, 0);
            run(&mut m, Input::Opened, 0);
            if ours_first {
                run(&mut m, disconnect(false), 10);
            }
            let a = run(&mut m, lost(), 20);
            assert_eq!(errors(&a), 0, "{a:?}");
            assert!(
                a.iter()
                    .any(|x| matches!(x, Action::Emit(Event::Close { code: 1002, .. }))),
                "{a:?}"
            );
            if !ours_first {
                // Given up (maxRetries 0) with that error as the last one.
                let last = a.iter().find_map(|x| match x {
                    Action::Emit(Event::GiveUp { last_error, .. }) => last_error.as_ref().map(|e| e.code),
                    _ => None,
                });
                assert_eq!(last, Some(crate::errors::ERR_PROTOCOL), "{a:?}");
            }
        }
    }

    /// While our close is under way, what the peer sent can still break the protocol: reported
    /// before the close, as `ws` reports it; the socket failing then is how a close may end.
    #[test]
    fn a_peer_error_while_closing_is_reported_before_the_close() {
        let lost_with = |code: &'static str, close: u16| Input::Lost {
            code: close,
            reason: String::new(),
            was_clean: false,
            error: Some(ConnError::new(code, "what the peer did")),
            error_reported: false,
            retry: Retry::YES,
        };
        for (code, close, reported) in [
            (crate::errors::ERR_INVALID_UTF8, 1007, true),
            (crate::errors::ERR_PROTOCOL, 1002, true),
            (crate::errors::ERR_MESSAGE_TOO_BIG, 1009, true),
            (crate::errors::ERR_SOCKET, 1006, false),
        ] {
            let mut m = Machine::new(policy(100), 1);
            run(&mut m, Input::Connect, 0);
            run(&mut m, Input::Opened, 0);
            run(&mut m, disconnect(false), 10);
            let a = run(&mut m, lost_with(code, close), 20);
            let events: Vec<&Event> = a
                .iter()
                .filter_map(|x| match x {
                    Action::Emit(e) => Some(e),
                    _ => None,
                })
                .collect();
            let error = events
                .iter()
                .position(|e| matches!(e, Event::Error(e) if e.code == code));
            let closed = events
                .iter()
                .position(|e| matches!(e, Event::Close { code: c, .. } if *c == close));
            assert_eq!(error.is_some(), reported, "{code}: {events:?}");
            assert!(
                closed.is_some() && error.is_none_or(|e| e < closed.unwrap()),
                "{code}: {events:?}"
            );
            assert_eq!(m.phase(), Phase::Idle);
        }
    }

    fn armed(a: &[Action]) -> u64 {
        a.iter()
            .find_map(|x| match x {
                Action::ArmTimer { delay_ms } => Some(*delay_ms),
                _ => None,
            })
            .expect("a timer")
    }

    #[test]
    fn spread_keeps_one_phase_per_outage_and_draws_a_new_one_for_the_next() {
        let mut p = policy(100);
        p.backoff = Backoff {
            min_delay_ms: 1_000,
            max_delay_ms: 1_000_000,
            factor: 2.0,
            jitter: Jitter::Spread,
        };
        let mut m = Machine::new(p, 3);
        run(&mut m, Input::Connect, 0);
        let mut now = 0;
        let mut outage = |m: &mut Machine, first: Input| {
            let mut delays = vec![armed(&run(m, first, now))];
            for _ in 0..3 {
                now += delays.last().unwrap();
                run(m, Input::TimerFired, now);
                delays.push(armed(&run(m, failed(), now)));
            }
            now += delays.last().unwrap();
            run(m, Input::TimerFired, now);
            run(m, Input::Opened, now);
            now += 10_000; // past minUptime: the next loss is a new outage
            delays
        };
        let mut firsts = Vec::new();
        for i in 0..4 {
            let d = outage(&mut m, if i == 0 { failed() } else { lost() });
            // One offset on the grid for the whole outage: each step doubles.
            assert!(d[1] >= 1_000 && d[1] < 2_000, "{d:?}");
            for w in d[1..].windows(2) {
                assert!(w[1].abs_diff(2 * w[0]) <= 1, "{d:?}");
            }
            firsts.push(d[1]);
        }
        firsts.dedup();
        assert_eq!(firsts.len(), 4, "a new offset per outage: {firsts:?}");
    }

    #[test]
    fn default_policy_stops_without_a_timer() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        let mut e = err();
        e.status = Some(401);
        let a = run(
            &mut m,
            Input::AttemptFailed {
                error: e,
                retry: Retry {
                    default: false,
                    after_ms: None,
                },
            },
            0,
        );
        assert_eq!(gave_up(&a), Some(("policy", 1)));
        assert!(!a.iter().any(|x| matches!(x, Action::ArmTimer { .. })));
        assert_eq!(m.phase(), Phase::Idle);
    }

    /// A failed attempt whose answer had `Retry-After`.
    fn failed_with_retry_after(after_ms: u64) -> Input {
        Input::AttemptFailed {
            error: err(),
            retry: Retry {
                default: true,
                after_ms: Some(after_ms),
            },
        }
    }

    #[test]
    fn retry_after_sets_the_delay_capped_unless_always() {
        for (honor, want) in [
            (HonorRetryAfter::Capped, 1_000),
            (HonorRetryAfter::Always, 5_000),
            (HonorRetryAfter::Never, 100),
        ] {
            let mut p = policy(100);
            p.honor_retry_after = honor;
            let mut m = Machine::new(p, 1);
            run(&mut m, Input::Connect, 0);
            let a = run(&mut m, failed_with_retry_after(5_000), 0);
            assert!(a.contains(&Action::ArmTimer { delay_ms: want }), "{honor:?}: {a:?}");
        }
    }

    #[test]
    fn retry_after_never_shortens_the_backoff() {
        for honor in [HonorRetryAfter::Capped, HonorRetryAfter::Always] {
            let mut p = policy(100);
            p.honor_retry_after = honor;
            let mut m = Machine::new(p, 1);
            run(&mut m, Input::Connect, 0);
            for _ in 0..3 {
                let a = run(&mut m, failed_with_retry_after(0), 0);
                let delay = a.iter().find_map(|x| match x {
                    Action::ArmTimer { delay_ms } => Some(*delay_ms),
                    _ => None,
                });
                assert!(delay.is_some_and(|d| d >= 100), "{honor:?}: {a:?}");
                run(&mut m, Input::TimerFired, 0);
            }
        }
    }

    #[test]
    fn a_user_policy_is_asked_and_its_verdict_applies() {
        let mut p = policy(100);
        p.ask = true;
        let mut m = Machine::new(p, 1);
        run(&mut m, Input::Connect, 0);
        let a = run(&mut m, failed(), 0);
        assert!(a.contains(&Action::AskPolicy { attempt: 1 }));
        assert!(
            !a.iter().any(|x| matches!(x, Action::Emit(Event::Close { .. }))),
            "close waits for the verdict"
        );
        assert_eq!(m.phase(), Phase::Deciding);
        let a = run(&mut m, Input::Decided { retry: false }, 1);
        assert_eq!(gave_up(&a), Some(("policy", 1)));
    }

    #[test]
    fn connect_during_backoff_cancels_the_timer() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, failed(), 0);
        let a = run(&mut m, Input::Connect, 10);
        assert_eq!(a[0], Action::CancelTimer);
        assert!(matches!(a[2], Action::StartAttempt { reconnect: true, .. }));
        // The timer was cancelled: a stale expiry does nothing.
        assert!(run(&mut m, Input::TimerFired, 100).is_empty());
    }

    #[test]
    fn reconnect_while_open_closes_then_connects_afresh() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, Input::Opened, 0);
        let a = run(
            &mut m,
            Input::Reconnect {
                code: 4000,
                reason: "again".into(),
            },
            1,
        );
        assert_eq!(
            a,
            vec![Action::StartClose {
                code: 4000,
                reason: "again".into()
            }]
        );
        let a = run(
            &mut m,
            Input::Lost {
                code: 4000,
                reason: "again".into(),
                was_clean: true,
                error: None,
                error_reported: false,
                retry: Retry::YES,
            },
            2,
        );
        assert!(a.contains(&Action::Emit(Event::Close {
            code: 4000,
            reason: "again".into(),
            was_clean: true,
            will_reconnect: true,
            by_reconnect: true
        })));
        assert!(matches!(a.last(), Some(Action::StartAttempt { attempt: 0, .. })));
    }

    /// `metrics.reconnects`: an open after one since `connect()`, from the backoff (also when
    /// `reconnect()` restarts that attempt), not the first one nor one after `reconnect()` closed one.
    #[test]
    fn reconnects_are_opens_that_re_establish_a_lost_connection() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, failed(), 0);
        run(&mut m, Input::TimerFired, 100);
        assert!(!m.is_reconnect(), "the first connection, after a retry");
        run(&mut m, Input::Opened, 101);
        run(&mut m, lost(), 102);
        run(&mut m, Input::TimerFired, 300);
        assert!(m.is_reconnect(), "after a lost connection");
        run(&mut m, reconnect(), 301);
        assert!(m.is_reconnect(), "that attempt restarted by reconnect()");
        run(&mut m, Input::Opened, 302);
        run(&mut m, reconnect(), 303);
        run(&mut m, lost(), 304);
        assert!(!m.is_reconnect(), "after reconnect() closed an open connection");
    }

    /// Which closes `reconnect()` caused: reconnecting-websocket's mode fired those itself.
    #[test]
    fn closes_say_whether_reconnect_caused_them() {
        fn closes(a: &[Action]) -> Vec<bool> {
            a.iter()
                .filter_map(|x| match x {
                    Action::Emit(Event::Close { by_reconnect, .. }) => Some(*by_reconnect),
                    _ => None,
                })
                .collect()
        }
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, Input::Opened, 0);
        // A second reconnect() joins the close under way: one close, marked.
        assert!(closes(&run(&mut m, reconnect(), 1)).is_empty());
        assert!(closes(&run(&mut m, reconnect(), 1)).is_empty());
        assert_eq!(closes(&run(&mut m, lost(), 2)), vec![true]);
        // One that cuts the next attempt short reports that attempt's close, marked.
        assert_eq!(closes(&run(&mut m, reconnect(), 3)), vec![true]);
        // The server's close and a failed attempt are not marked.
        run(&mut m, Input::Opened, 4);
        assert_eq!(closes(&run(&mut m, lost(), 5)), vec![false]);
        run(&mut m, Input::TimerFired, 200);
        assert_eq!(closes(&run(&mut m, failed(), 201)), vec![false]);
        // A disconnect() after a reconnect() ends the close reconnect() started.
        run(&mut m, reconnect(), 202);
        run(&mut m, Input::Opened, 203);
        run(&mut m, reconnect(), 204);
        run(&mut m, disconnect(false), 204);
        assert_eq!(closes(&run(&mut m, lost(), 205)), vec![true]);
        // A disconnect() alone is not marked.
        run(&mut m, Input::Connect, 206);
        run(&mut m, Input::Opened, 206);
        run(&mut m, disconnect(false), 207);
        assert_eq!(closes(&run(&mut m, lost(), 208)), vec![false]);
    }

    #[test]
    fn flushing_disconnect_during_backoff_connects_writes_then_closes() {
        let mut m = Machine::new(policy(100), 1);
        run(&mut m, Input::Connect, 0);
        run(&mut m, failed(), 0);
        let a = run(&mut m, disconnect(true), 5);
        assert!(a.contains(&Action::CancelTimer) && a.contains(&Action::ArmCloseDeadline));
        assert!(a.iter().any(|x| matches!(x, Action::StartAttempt { .. })));
        let a = run(&mut m, Input::Opened, 6);
        assert!(matches!(a.last(), Some(Action::StartClose { .. })));
        assert_eq!(m.phase(), Phase::Closing);
    }

    /// `reconnect(); send(x); disconnect({ flush: true })`: x is queued for the next connection,
    /// which is made once the close under way ends, writes it and closes with the disconnect's code.
    #[test]
    fn a_flushing_disconnect_during_a_reconnects_close_connects_writes_then_closes() {
        let done = |a: &[Action]| a.contains(&Action::DisconnectDone);
        // Open, then reconnect() and disconnect({ flush: true }) while its close is under way.
        let flushing = || {
            let mut m = Machine::new(policy(100), 1);
            run(&mut m, Input::Connect, 0);
            run(&mut m, Input::Opened, 0);
            run(&mut m, reconnect(), 1);
            assert!(!done(&run(&mut m, disconnect(true), 1)));
            m
        };
        let mut m = flushing();
        let a = run(&mut m, lost(), 2);
        assert!(!done(&a), "not done: the queue is still to be written");
        assert!(a.contains(&Action::ArmCloseDeadline), "closeTimeout bounds the flush");
        assert!(a.iter().any(|x| matches!(x, Action::StartAttempt { .. })));
        let a = run(&mut m, Input::Opened, 3);
        assert!(matches!(a.last(), Some(Action::StartClose { code: 1000, .. })));
        let a = run(&mut m, lost(), 4);
        assert!(done(&a) && a.contains(&Action::Finish));
        // A disconnect() without flush after it, or a connect(), turns the flush off: done with the
        // close under way.
        let mut m = flushing();
        run(&mut m, disconnect(false), 1);
        let a = run(&mut m, lost(), 2);
        assert!(done(&a) && a.contains(&Action::Finish));
        let mut m = flushing();
        run(&mut m, Input::Connect, 1);
        let a = run(&mut m, lost(), 2);
        assert!(done(&a), "the flushing disconnect is settled");
        assert!(
            a.iter().any(|x| matches!(x, Action::StartAttempt { .. })),
            "and the client connects"
        );
        assert!(!matches!(
            run(&mut m, Input::Opened, 3).last(),
            Some(Action::StartClose { .. })
        ));
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
                flush: false,
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
                error_reported: false,
                retry: Retry::YES,
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
        asking: bool,
    }

    fn arb_retry() -> impl Strategy<Value = Retry> {
        (any::<bool>(), prop_oneof![Just(None), (0u64..5_000).prop_map(Some)])
            .prop_map(|(default, after_ms)| Retry { default, after_ms })
    }

    fn arb_input() -> impl Strategy<Value = Input> {
        prop_oneof![
            Just(Input::Connect),
            Just(Input::Reconnect {
                code: 1000,
                reason: String::new()
            }),
            any::<bool>().prop_map(disconnect),
            Just(Input::Opened),
            arb_retry().prop_map(|retry| Input::AttemptFailed { error: err(), retry }),
            arb_retry().prop_map(|retry| Input::Lost {
                code: 1006,
                reason: String::new(),
                was_clean: false,
                error: None,
                error_reported: false,
                retry
            }),
            arb_retry().prop_map(|retry| Input::Lost {
                code: 1001,
                reason: "going away".into(),
                was_clean: true,
                error: None,
                error_reported: false,
                retry
            }),
            any::<bool>().prop_map(|retry| Input::Decided { retry }),
            Just(Input::TimerFired),
            Just(Input::CloseDeadline),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3_000))]
        #[test]
        fn invariants_hold_for_any_sequence(
            seed in any::<u64>(),
            max_retries in prop_oneof![Just(u64::MAX), 0u64..5],
            ask in any::<bool>(),
            steps in proptest::collection::vec((arb_input(), 0u64..2_000), 1..80),
        ) {
            let mut p = policy(max_retries);
            p.ask = ask;
            let mut m = Machine::new(p, seed);
            let mut model = Model { timers: 0, connections: 0, finished: true, asking: false };
            let mut deadline = false;
            let mut now = 0;
            let mut out = Vec::new();
            let mut disconnect_pending = false;
            for (input, dt) in steps {
                now += dt;
                let was_phase = m.phase();
                let is_disconnect = matches!(input, Input::Disconnect { .. });
                let is_start = matches!(input, Input::Connect | Input::Reconnect { .. });
                if model.finished && !is_start && !is_disconnect {
                    // The driver is not running: no outcome can arrive.
                    continue;
                }
                // Outcomes only arrive for things that exist (the driver guarantees it).
                match input {
                    Input::Opened | Input::AttemptFailed { .. } if was_phase != Phase::Connecting => continue,
                    Input::Lost { .. } if !matches!(was_phase, Phase::Open | Phase::Closing) => continue,
                    Input::TimerFired if was_phase != Phase::Backoff => continue,
                    Input::CloseDeadline if !deadline => continue,
                    Input::Decided { .. } if !model.asking => continue,
                    _ => {}
                }
                if is_disconnect { disconnect_pending = true; }
                out.clear();
                m.handle(input.clone(), now, &mut out);
                match input {
                    Input::Lost { .. } | Input::AttemptFailed { .. } => model.connections -= 1,
                    Input::TimerFired => model.timers -= 1,
                    Input::CloseDeadline => deadline = false,
                    Input::Decided { .. } => model.asking = false,
                    _ => {}
                }
                if was_phase == Phase::Deciding && m.phase() != Phase::Deciding { model.asking = false; }
                for a in &out {
                    match a {
                        Action::StartAttempt { .. } => model.connections += 1,
                        Action::AbortAttempt | Action::DropConnection => model.connections -= 1,
                        Action::ArmTimer { delay_ms } => {
                            model.timers += 1;
                            prop_assert!(*delay_ms <= MAX_DELAY_MS);
                        }
                        Action::CancelTimer => model.timers -= 1,
                        Action::StartClose { .. } | Action::ArmCloseDeadline => deadline = true,
                        Action::DisarmCloseDeadline => deadline = false,
                        Action::AskPolicy { .. } => model.asking = true,
                        Action::DisconnectDone => disconnect_pending = false,
                        Action::Finish => {
                            model.finished = true;
                            deadline = false;
                        }
                        _ => {}
                    }
                }
                if is_start && model.finished && m.phase() != Phase::Idle { model.finished = false; }
                // Invariant 1: at most one reconnect timer, and only while backing off.
                prop_assert!(model.timers <= 1);
                prop_assert_eq!(model.timers == 1, m.phase() == Phase::Backoff);
                // Invariant 2: at most one connection, and only in a connection phase.
                prop_assert!(model.connections <= 1);
                prop_assert_eq!(model.connections == 1, matches!(m.phase(), Phase::Connecting | Phase::Open | Phase::Closing));
                prop_assert_eq!(model.asking, m.phase() == Phase::Deciding);
                // Invariant 3: once finished, nothing is left.
                if model.finished {
                    prop_assert_eq!(m.phase(), Phase::Idle);
                    prop_assert_eq!(model.timers + model.connections, 0);
                    prop_assert!(!disconnect_pending);
                }
                // A disconnect never arms a timer and never reconnects for its own sake.
                if is_disconnect {
                    let timers = out.iter().any(|a| matches!(a, Action::ArmTimer { .. }));
                    prop_assert!(!timers, "disconnect armed a timer: {:?}", out);
                }
            }
        }
    }
}
