//! The tokio task that runs one client while it is active: it feeds the state
//! machine with commands, connection outcomes and timer expiries, and executes
//! the actions it returns. It owns everything per-connection (the attempt, the
//! socket, the one reconnect timer, the close deadline), so aborting the task
//! drops them all; each is counted by an RAII gauge.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use crate::attempt::{Attempt, ParamSource};
use crate::connection::{ConnConfig, Ended, IoEvent, OpenConn};
use crate::errors::{self, ConnError};
use crate::events::{JsEvent, PolicyInfo};
use crate::hub::{self, Hub};
use crate::interned::Interned;
use crate::machine::{Action, Event, Input, Machine, Phase, Policy};
use crate::outbox::QueueConfig;
use crate::policy;
use crate::queue::Queue;
use crate::shared::{AttemptParams, Shared};
use crate::stats::{self, Gauge, PendingReconnects, RunningDrivers};
use crate::testing;
use crate::upgrade::Opened;

pub enum Command {
    /// `restarts`: the client's count of `connect()` and `reconnect()` calls, this one included.
    Connect { restarts: u32 },
    Reconnect {
        code: u16,
        reason: String,
        /// As `Connect`'s.
        restarts: u32,
    },
    Disconnect {
        code: u16,
        reason: String,
        flush: bool,
        /// `terminate()`: no close handshake; the connection is dropped at once.
        terminate: bool,
        /// The call's number (1, 2, ... per client): what `DisconnectDone` and `Idle` settle.
        seq: u32,
    },
    /// The user's `shouldReconnect` verdict for request `id`.
    Decided { id: u64, retry: bool },
    /// The client's previous driver, still exiting when this one was started (several tokio
    /// workers): this one starts once it is done, so that JS gets its last events first. The
    /// first command of a driver, if any.
    Follow(tokio::task::JoinHandle<()>),
}

pub struct DriverConfig {
    /// The URL clients of this configuration were created with (for messages).
    pub url: String,
    pub conn: ConnConfig,
    pub policy: Arc<Policy>,
    pub queue: QueueConfig,
    /// The fixed attempt parameters, or `None` when JS providers supply them per attempt.
    pub params: Option<Arc<AttemptParams>>,
}

pub struct Driver {
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    config: Arc<Interned<str, DriverConfig>>,
    gen: u32,
    machine: Machine,
    /// Boxed: the driver lives in its task's cell, which is 384 bytes only without it.
    attempt: Option<Box<Attempt>>,
    socket: Option<OpenConn>,
    timer: Option<Box<ReconnectTimer>>,
    close_deadline: Option<Pin<Box<Sleep>>>,
    /// What the policy is asked about, and the id its answer must carry.
    // Boxed: set only between a failure and the policy question.
    last_failure: Option<Box<(PolicyInfo, bool)>>,
    /// The id the pending policy answer must carry; 0 when none is pending (ids start at 1).
    deciding: u64,
    events: Vec<JsEvent>,
    finished: bool,
    /// Queued messages a finishing disconnect discarded.
    discarded: u32,
    /// The number of the last `disconnect()` call received (`Command::Disconnect::seq`).
    disconnects: u32,
    /// A `disconnect()` call came that no `DisconnectDone` has settled yet. Without one, a close of
    /// ours was a `reconnect()`'s: it settles nothing, and the queue is kept for the next connection.
    unsettled: bool,
    /// Where the first attempt of a driver a JS `connect()` started stands, when JS does not need
    /// its `Connecting` at once (`new`'s `quiet`). JS has already made the client connecting and
    /// reachable, so the event is not worth a wake-up of the JS thread of its own: it goes with
    /// the attempt's next event (`deliver`). A process connecting and closing clients one after
    /// another woke the JS thread for it in most cycles. Only a new driver's: while one runs, JS
    /// may not have seen all it reported yet (a `Close` that would undo the `connecting` state
    /// `connect()` set), and the prompt event puts the state right. (One byte: the task must
    /// stay within tokio's 384-byte cell.)
    quiet: Quiet,
    /// Counted in `runningTasks` from the task's first poll until it exits. Here rather than in
    /// `DriverTask`, where its byte would take 8 with padding: the task then fits tokio's
    /// 384-byte cell (a future of at most 280 bytes) instead of the 512-byte one.
    running: Option<Gauge<RunningDrivers>>,
}

/// The client's one reconnect timer, counted (globally and in the client's
/// `pendingReconnects`) for exactly as long as it exists.
struct ReconnectTimer {
    sleep: Pin<Box<Sleep>>,
    shared: Arc<Shared>,
    _global: Gauge<PendingReconnects>,
}

impl ReconnectTimer {
    fn start(shared: &Arc<Shared>, delay: Duration) -> Box<Self> {
        shared.metrics.pending_reconnects.fetch_add(1, Ordering::Relaxed);
        Box::new(ReconnectTimer {
            sleep: Box::pin(tokio::time::sleep(delay)),
            shared: shared.clone(),
            _global: Gauge::<PendingReconnects>::new(),
        })
    }
}

impl Drop for ReconnectTimer {
    fn drop(&mut self) {
        self.shared.metrics.pending_reconnects.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Quiet {
    No,
    /// The first attempt is quiet and not yet started, or being started.
    Connect,
    /// `events` holds only its `Connecting`.
    Pending,
}

enum Exit {
    /// Idle after `disconnect()` or a giveup: report it.
    Finished,
    /// The client was dropped: nobody is listening.
    Abandoned,
}

/// The future a client's tokio task runs (see `Driver::run`).
pub struct DriverTask {
    driver: Driver,
    commands: Arc<Queue<Command>>,
}

impl Future for DriverTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // A panic must not leave the client looking alive with no task behind it: it is caught
        // here, and the client ends as after a fatal error (events, then `Idle`).
        if this.driver.running.is_none() {
            let predecessor_exiting = this.commands.with_front(|front| match front {
                Some(Command::Follow(previous)) => Pin::new(previous).poll(cx).is_pending(),
                _ => false,
            });
            if predecessor_exiting {
                return Poll::Pending;
            }
        }
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if this.driver.running.is_none() {
                this.driver.running = Some(Gauge::<RunningDrivers>::new());
                this.driver.first_connect();
            }
            if testing::driver_panics(this.driver.shared.id) {
                panic!("panic requested by a test");
            }
            // A call from JS panicked: its client state may be half-changed. The client ends as
            // after a panic of this task (resume_unwind: the panic was reported where it happened).
            if let Some(what) = this.driver.shared.take_call_panic() {
                std::panic::resume_unwind(Box::new(what));
            }
            this.driver.poll_run(cx, &this.commands)
        }));
        match polled {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(Exit::Abandoned)) => Poll::Ready(()),
            Ok(Poll::Ready(Exit::Finished)) => {
                this.driver.exit();
                Poll::Ready(())
            }
            Err(panic) => {
                this.commands.close();
                this.driver.crashed(errors::panic_text(&*panic));
                this.driver.exit();
                Poll::Ready(())
            }
        }
    }
}

impl Driver {
    /// The task panicked: release the connection and report a fatal error and a final close.
    fn crashed(&mut self, what: String) {
        testing::driver_panicked(self.shared.id);
        self.attempt = None;
        self.timer = None;
        self.close_deadline = None;
        self.finished = true;
        self.shared.outbox().set_accepting(false);
        if self.socket.is_some() {
            self.end_connection();
        }
        let message = format!("internal error ({what}): the client was closed");
        let error = ConnError::new(errors::ERR_INTERNAL, message);
        self.events.push(JsEvent::Error(error.clone()));
        self.events.push(JsEvent::Close {
            code: 1006,
            reason: String::new(),
            was_clean: false,
            will_reconnect: false,
            by_reconnect: false,
            retries: 0,
            gen: self.gen,
            // Final whatever JS called since: a command it queued died with this task.
            restarts: 0,
        });
        // The client gave up, for `opened()`, `messages()` and streams as for the application.
        self.events.push(JsEvent::GiveUp {
            attempts: self.machine.failures(),
            reason: "internal",
            last_error: Some(error),
            gen: self.gen,
        });
        self.deliver();
    }
}

impl Driver {
    /// `quiet`: the first attempt's `Connecting` need not wake JS (`Driver::quiet`).
    pub fn new(
        shared: Arc<Shared>,
        hub: Arc<Hub>,
        config: Arc<Interned<str, DriverConfig>>,
        gen: u32,
        restarts: u32,
        quiet: bool,
    ) -> Self {
        let machine = Machine::new(config.policy.clone(), fastrand::u64(..));
        shared.restarts.store(restarts, Ordering::Relaxed);
        Driver {
            shared,
            hub,
            config,
            gen,
            machine,
            attempt: None,
            socket: None,
            timer: None,
            close_deadline: None,
            last_failure: None,
            deciding: 0,
            events: Vec::new(),
            finished: false,
            discarded: 0,
            disconnects: 0,
            unsettled: false,
            quiet: if quiet { Quiet::Connect } else { Quiet::No },
            running: None,
        }
    }

    /// The machine only compares times: milliseconds since a process-wide epoch will do (an
    /// epoch per driver would take room in every active client's task).
    fn now_ms(&self) -> u64 {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        EPOCH.get_or_init(Instant::now).elapsed().as_millis() as u64
    }

    /// The client's task. A hand-written future rather than an `async fn` with `select!`:
    /// the task then holds the driver and little else, which keeps an active client small.
    pub fn run(self, commands: Arc<Queue<Command>>) -> DriverTask {
        DriverTask { driver: self, commands }
    }

    /// One wake-up: take every source that is ready, until none is, delivering events as they come.
    /// They go out once commands and the attempt have been taken: a new attempt's `connecting` then
    /// reaches JS once its connect is under way, and does not wake the JS thread just before it.
    fn poll_run(&mut self, cx: &mut Context<'_>, commands: &Queue<Command>) -> Poll<Exit> {
        loop {
            if self.finished {
                // Exit only if no command raced with the decision (closing the queue is atomic
                // with that check, so no command can be lost); otherwise handle them first.
                // `send()` is refused from then on, in the same step: a `connect()` racing with a
                // giveup or a disconnect's end makes `send()` accepted under the same lock, with its
                // command, so that it cannot be undone once the driver is to go on.
                if commands.close_if_empty_then(|| self.shared.outbox().set_accepting(false)) {
                    // `exit` delivers what is pending with `Idle`, in one batch.
                    return Poll::Ready(Exit::Finished);
                }
                self.deliver();
                self.finished = false;
                let discarded = std::mem::take(&mut self.discarded);
                // What finished settles the calls received before these commands, not theirs.
                let upto = self.disconnects;
                while let Some(cmd) = commands.try_recv() {
                    self.command(cmd);
                }
                if self.machine.phase() == Phase::Idle {
                    // Still exiting: `Idle`, sent once everything is released, settles every
                    // pending disconnect() (JS must not see it settle while the task still runs).
                    self.finished = true;
                    self.discarded = self.discarded.saturating_add(discarded);
                } else {
                    // Going on (a connect() among them): settle the disconnect() that finished just
                    // before these commands, and those among them that completed at once (taken
                    // while idle, `Finish` included, which must not end a driver that goes on).
                    self.finished = false;
                    let (discarded, upto) = if self.unsettled {
                        (discarded, upto)
                    } else {
                        let done = std::mem::take(&mut self.discarded);
                        (discarded.saturating_add(done), self.disconnects)
                    };
                    self.events.push(JsEvent::DisconnectDone { discarded, upto });
                }
                continue;
            }
            match commands.poll_recv(cx) {
                Poll::Ready(Some(cmd)) => {
                    self.command(cmd);
                    continue;
                }
                // The client was dropped: abandon everything.
                Poll::Ready(None) => return Poll::Ready(Exit::Abandoned),
                Poll::Pending => {}
            }
            let polled = self.attempt.as_mut().map(|a| Pin::new(a).poll(cx));
            if let Some(a) = self.attempt.as_ref() {
                // Before the attempt's outcome: a redirect is reported before the open or the error.
                for url in a.take_redirects() {
                    self.events.push(JsEvent::Redirect(url));
                }
            }
            if let Some(Poll::Ready(result)) = polled {
                self.attempt = None;
                // Commands JS queued while the attempt ended act first, as for a connection's end:
                // a reconnect() or disconnect() made just before cuts this attempt short (its socket
                // is dropped), rather than closing a connection the queue, and what was sent after
                // the call, would have been handed to.
                while let Some(cmd) = commands.try_recv() {
                    self.command(cmd);
                }
                if self.attempt.is_none() && self.machine.phase() == Phase::Connecting {
                    self.attempt_done(result);
                }
                continue;
            }
            self.deliver();
            if let Some(Poll::Ready(io)) = self
                .socket
                .as_mut()
                .map(|s| s.poll_io(cx, &self.config.conn, &mut self.events))
            {
                if let IoEvent::Ended(end) = io {
                    // Commands sent before the end was seen act first. disconnect() writes its
                    // close and queues its command in one step under the queue's lock, so a peer's
                    // answer and TCP close read in this very poll still end a connection that is
                    // closing for JS.
                    while let Some(cmd) = commands.try_recv() {
                        self.command(cmd);
                    }
                    self.connection_ended(end);
                }
                continue;
            }
            // A reconnect also waits for JS to take what the client reported (`EVENTS_BEHIND`).
            if let Some(Poll::Ready(())) = self
                .timer
                .as_mut()
                .filter(|_| !self.shared.read_gate.js_behind(cx))
                .map(|t| t.sleep.as_mut().poll(cx))
            {
                self.timer = None;
                self.input(Input::TimerFired);
                continue;
            }
            if let Some(Poll::Ready(())) = self.close_deadline.as_mut().map(|d| d.as_mut().poll(cx)) {
                self.close_deadline = None;
                self.input(Input::CloseDeadline);
                continue;
            }
            // Going to sleep: deliver anything left, and keep no events buffer while idle.
            self.deliver();
            if self.events.capacity() > 0 {
                self.events = Vec::new();
            }
            return Poll::Pending;
        }
    }

    /// The connection ended (`end`): its socket is dropped, and the machine hears how.
    fn connection_ended(&mut self, end: Ended) {
        self.end_connection();
        self.close_deadline = None;
        if end.error.is_some() {
            stats::inc(&self.shared.metrics.connection_errors);
        }
        // With an error, the client failed the connection (the peer broke the
        // protocol or a limit, or the socket failed) and the code is the client's, not
        // the peer's verdict on it: retried as such an error is.
        let retry = match &end.error {
            Some(error) => policy::on_error(error),
            None => policy::on_close(end.code),
        };
        let info = PolicyInfo::Close {
            code: end.code,
            reason: end.reason.clone(),
            was_clean: end.was_clean,
            error: end.error.as_ref().map(|e| e.code),
        };
        self.last_failure = Some(Box::new((info, retry.default)));
        self.input(Input::Lost {
            code: end.code,
            reason: end.reason,
            was_clean: end.was_clean,
            error: end.error,
            error_reported: end.error_reported,
            retry,
        });
    }

    fn attempt_done(&mut self, result: Result<Opened, ConnError>) {
        match result {
            Ok(opened) => {
                let protocol = opened.protocol.clone();
                let head = opened.head.clone();
                let extensions = opened.deflate.as_ref().map(|(_, answer)| answer.clone());
                let (conn, sending) = OpenConn::new(opened, self.shared.clone(), &self.config.conn);
                self.socket = Some(conn);
                self.shared
                    .outbox()
                    .open(sending.tx, Some(sending.writer), &self.shared.metrics);
                stats::inc(&self.shared.metrics.connects);
                if self.machine.is_reconnect() {
                    stats::inc(&self.shared.metrics.reconnects);
                }
                self.events.push(JsEvent::Upgrade(head));
                // Held for JS like a message of no bytes (`delivery::credit`): a close frame read
                // right after the 101 is answered once the `open` listeners have run, so what they
                // send goes before our close, as with `ws` (which parses that frame after them).
                self.shared.read_gate.admit(0);
                self.events.push(JsEvent::Open { protocol, extensions });
                self.input(Input::Opened);
            }
            Err(mut error) => {
                // A 101 answer refused: its `upgrade` event before the error, as `ws` emits it.
                if let Some(head) = error.refused_101.take() {
                    self.events.push(JsEvent::Upgrade(*head));
                }
                stats::inc(&self.shared.metrics.connection_errors);
                let retry = policy::on_error(&error);
                self.last_failure = Some(Box::new((PolicyInfo::from_error(&error), retry.default)));
                self.input(Input::AttemptFailed { error, retry });
            }
        }
    }

    /// The driver finished: release everything before reporting the exit (JS resolves
    /// `disconnect()` on that event). What is still pending (the last `close`, usually) goes in
    /// the same batch, one call into JS rather than two.
    fn exit(&mut self) {
        self.attempt = None;
        if self.socket.is_some() {
            self.end_connection();
        }
        self.timer = None;
        self.close_deadline = None;
        *self.shared.provide.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.running = None;
        // Tests: a final `close` and `Idle` still go to JS in one batch.
        testing::stall_driver_exit();
        self.events.push(JsEvent::Idle {
            gen: self.gen,
            discarded: self.discarded,
            upto: self.disconnects,
        });
        self.deliver();
    }

    /// The attempt a new driver starts with, quiet if `new` was told so.
    fn first_connect(&mut self) {
        self.input(Input::Connect);
        if self.quiet == Quiet::Connect {
            self.quiet = Quiet::No;
        }
    }

    /// Hands the events so far to JS, ringing for them unless all there is is a quiet `Connecting`.
    fn deliver(&mut self) {
        self.shared.read_gate.events_queued(self.events.len());
        if std::mem::replace(&mut self.quiet, Quiet::No) == Quiet::Pending && self.events.len() == 1 {
            self.hub.push_quiet(self.shared.id, &mut self.events);
        } else {
            self.hub.push(self.shared.id, &mut self.events);
        }
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Connect { restarts } => {
                self.shared.restarts.store(restarts, Ordering::Relaxed);
                self.input(Input::Connect)
            }
            Command::Reconnect { code, reason, restarts } => {
                self.shared.restarts.store(restarts, Ordering::Relaxed);
                self.input(Input::Reconnect { code, reason })
            }
            Command::Disconnect {
                code,
                reason,
                flush,
                terminate,
                seq,
            } => {
                self.disconnects = seq;
                self.unsettled = true;
                if terminate && self.machine.phase() == Phase::Open {
                    // Before the close begins (it would add our close frame to the writes).
                    if let Some(conn) = self.socket.as_mut() {
                        conn.write_what_fits();
                    }
                }
                let flush = flush && !self.shared.outbox().is_queue_empty();
                self.input(Input::Disconnect { code, reason, flush });
                if terminate && self.machine.phase() == Phase::Closing {
                    match self.socket.as_mut().and_then(OpenConn::end_closing) {
                        // The close handshake was under way on the connection's side (the peer's
                        // close answered, or the connection failed): it ends as the peer's TCP
                        // close would end it now, with the peer's code, as `ws` reports it.
                        Some(end) => self.connection_ended(end),
                        // As if the close deadline had passed: the socket is dropped before the
                        // driver writes anything more, our close frame included (the JS thread
                        // wrote none).
                        None => self.input(Input::CloseDeadline),
                    }
                }
            }
            // Waited for before the first attempt (`DriverTask::poll`).
            Command::Follow(_) => {}
            Command::Decided { id, retry } => {
                if id != 0 && self.deciding == id {
                    self.deciding = 0;
                    self.input(Input::Decided { retry });
                }
            }
        }
    }

    /// The socket is gone: stop routing sends to it and requeue what it never wrote.
    fn end_connection(&mut self) {
        let mut outbox = self.shared.outbox();
        outbox.close_connection();
        if let Some(mut socket) = self.socket.take() {
            let unsent = socket.take_unsent();
            outbox.requeue(unsent, &self.shared.metrics);
        }
    }

    fn input(&mut self, input: Input) {
        let now = self.now_ms();
        let mut actions = Vec::new();
        self.machine.handle(input, now, &mut actions);
        let disconnect_done = actions.iter().any(|a| matches!(a, Action::DisconnectDone));
        for action in actions {
            self.execute(action);
        }
        // A completed disconnect discards what is still queued (unless every call it settles keeps
        // it, see `Outbox::discards_upto`) and reports the count.
        if disconnect_done && (self.finished || self.unsettled) {
            self.unsettled = false;
            let discarded = self
                .shared
                .outbox()
                .discard_at_completion(self.disconnects, &self.shared.metrics);
            if self.finished {
                // Reported by `Idle`, once everything is released.
                self.discarded = self.discarded.saturating_add(discarded);
            } else {
                self.events.push(JsEvent::DisconnectDone {
                    discarded,
                    upto: self.disconnects,
                });
            }
        }
        debug_assert!(self.timer.is_none() || self.machine.phase() == Phase::Backoff);
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::StartAttempt { attempt, .. } => {
                stats::inc(&self.shared.metrics.connect_attempts);
                let params = match &self.config.params {
                    Some(p) => ParamSource::Fixed(p.clone()),
                    None => {
                        let (tx, rx) = oneshot::channel();
                        let id = self.shared.request_id();
                        *self.shared.provide.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, tx));
                        self.events.push(JsEvent::Provide { id, attempt });
                        ParamSource::Provided(rx)
                    }
                };
                let js = (self.config.conn.asks_js()).then(|| hub::js_asker(self.hub.clone(), self.shared.clone()));
                self.attempt = Some(Box::new(Attempt::start(&self.config.conn, params, js, &self.shared)));
            }
            Action::AbortAttempt => self.attempt = None,
            Action::StartClose { code, reason } => {
                // Closing the send queue lets the socket drain what was sent, then write our close.
                self.shared.outbox().close_connection();
                if let Some(s) = self.socket.as_mut() {
                    s.begin_close(code, reason);
                }
                if self.close_deadline.is_none() {
                    self.arm_close_deadline();
                }
            }
            Action::ArmCloseDeadline => self.arm_close_deadline(),
            Action::DisarmCloseDeadline => self.close_deadline = None,
            Action::DropConnection => {
                self.end_connection();
                self.close_deadline = None;
            }
            Action::ArmTimer { delay_ms } => {
                self.timer = Some(ReconnectTimer::start(&self.shared, Duration::from_millis(delay_ms)));
            }
            Action::CancelTimer => self.timer = None,
            Action::AskPolicy { attempt } => {
                let id = self.shared.request_id();
                self.deciding = id;
                let (info, default) = self.last_failure.take().map(|f| *f).unwrap_or((
                    PolicyInfo::Close {
                        code: 1006,
                        reason: String::new(),
                        was_clean: false,
                        error: None,
                    },
                    true,
                ));
                self.events.push(JsEvent::Decide {
                    id,
                    attempt,
                    info,
                    default,
                });
            }
            Action::Emit(event) => self.events.push(match event {
                Event::Connecting { attempt } => {
                    if self.quiet == Quiet::Connect {
                        self.quiet = if self.events.is_empty() {
                            Quiet::Pending
                        } else {
                            Quiet::No
                        };
                    }
                    JsEvent::Connecting { attempt }
                }
                // `Open` is pushed by the driver with the handshake details.
                Event::Open => return,
                Event::Error(e) => JsEvent::Error(e),
                Event::Close {
                    code,
                    reason,
                    was_clean,
                    will_reconnect,
                    by_reconnect,
                } => JsEvent::Close {
                    code,
                    reason,
                    was_clean,
                    will_reconnect,
                    by_reconnect,
                    retries: self.machine.failures(),
                    gen: self.gen,
                    restarts: self.shared.restarts.load(Ordering::Relaxed),
                },
                Event::Reconnecting { attempt, delay_ms } => JsEvent::Reconnecting {
                    attempt,
                    delay_ms,
                    restarts: self.shared.restarts.load(Ordering::Relaxed),
                },
                Event::GiveUp {
                    attempts,
                    reason,
                    last_error,
                } => JsEvent::GiveUp {
                    attempts,
                    reason,
                    last_error,
                    gen: self.gen,
                },
            }),
            // Handled by `input`, once every action has run.
            Action::DisconnectDone => {}
            Action::Finish => self.finished = true,
        }
    }

    fn arm_close_deadline(&mut self) {
        self.close_deadline = Some(Box::pin(tokio::time::sleep(self.config.conn.close_timeout)));
    }
}

#[cfg(test)]
mod tests {
    /// Every client with a driver has one tokio task: a single allocation of the future and 104
    /// bytes of tokio's (1.54), aligned to 128 bytes on x86_64 and aarch64. Up to 280 bytes of
    /// driver that is 384 bytes; past it, 512 (measured with a counting allocator around
    /// `Runtime::spawn`, in a scratch crate: the lint keeps `unsafe` out of this one).
    #[test]
    fn a_clients_task_fits_tokios_384_byte_cell() {
        let size = std::mem::size_of::<super::DriverTask>();
        assert!(
            size <= 280,
            "the driver task is {size} bytes: its tokio cell grows to 512"
        );
    }
}
