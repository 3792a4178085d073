//! The tokio task that runs one client while it is active: it feeds the state
//! machine with commands, connection outcomes and timer expiries, and executes
//! the actions it returns. It owns everything per-connection (the attempt, the
//! socket, the one reconnect timer, the close deadline), so aborting the task
//! drops them all; each is counted by an RAII gauge.

use std::future::{pending, Future};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;

use crate::connection::{Attempt, ConnConfig, IoEvent, OpenConn};
use crate::delivery::{Hub, JsEvent};
use crate::machine::{Action, Event, Input, Machine, Phase, Policy};
use crate::stats::{self, Gauge, Metrics, GLOBAL};

pub enum Command {
    Connect,
    Disconnect { code: u16, reason: String },
}

/// State shared between the JS-facing client and its driver.
pub struct Shared {
    pub id: u64,
    pub metrics: Arc<Metrics>,
    /// Sender into the open connection; `None` when not open (sends are refused).
    pub out: Mutex<Option<UnboundedSender<Message>>>,
}

impl Shared {
    pub fn set_out(&self, tx: Option<UnboundedSender<Message>>) {
        *self.out.lock().unwrap_or_else(|p| p.into_inner()) = tx;
    }
}

pub struct DriverConfig {
    pub conn: ConnConfig,
    pub policy: Policy,
    pub close_timeout: Duration,
}

pub struct Driver {
    shared: Arc<Shared>,
    hub: Arc<Hub>,
    config: Arc<DriverConfig>,
    gen: u32,
    machine: Machine,
    started: Instant,
    attempt: Option<Attempt>,
    socket: Option<OpenConn>,
    timer: Option<(Pin<Box<Sleep>>, Gauge)>,
    close_deadline: Option<Pin<Box<Sleep>>>,
    events: Vec<JsEvent>,
    actions: Vec<Action>,
    finished: bool,
    disconnect_done: bool,
}

async fn maybe<F: Future + Unpin>(f: Option<&mut F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => pending().await,
    }
}

async fn maybe_io(socket: Option<&mut OpenConn>, events: &mut Vec<JsEvent>) -> IoEvent {
    match socket {
        Some(s) => std::future::poll_fn(|cx| s.poll_io(cx, events)).await,
        None => pending().await,
    }
}

impl Driver {
    pub fn new(shared: Arc<Shared>, hub: Arc<Hub>, config: Arc<DriverConfig>, gen: u32) -> Self {
        let machine = Machine::new(config.policy.clone(), fastrand::u64(..));
        Driver {
            shared,
            hub,
            config,
            gen,
            machine,
            started: Instant::now(),
            attempt: None,
            socket: None,
            timer: None,
            close_deadline: None,
            events: Vec::new(),
            actions: Vec::new(),
            finished: false,
            disconnect_done: false,
        }
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub async fn run(mut self, mut commands: UnboundedReceiver<Command>) {
        let running = Gauge::new(&GLOBAL.running_drivers);
        self.input(Input::Connect);
        loop {
            self.hub.push(self.shared.id, &mut self.events);
            if self.finished {
                // Refuse further commands, but honour a connect() that raced with the exit.
                commands.close();
                let mut restart = false;
                while let Ok(cmd) = commands.try_recv() {
                    restart |= matches!(cmd, Command::Connect);
                }
                if !restart {
                    break;
                }
                self.finished = false;
                // Settle a disconnect() that finished just before this connect().
                self.events.push(JsEvent::DisconnectDone);
                self.input(Input::Connect);
                continue;
            }
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Connect) => self.input(Input::Connect),
                    Some(Command::Disconnect { code, reason }) => self.input(Input::Disconnect { code, reason }),
                    // The client was dropped: abandon everything.
                    None => return,
                },
                result = maybe(self.attempt.as_mut()) => {
                    self.attempt = None;
                    match result {
                        Ok(opened) => {
                            let (conn, tx) = OpenConn::new(opened.ws, self.shared.metrics.clone(), self.config.close_timeout);
                            self.socket = Some(conn);
                            self.shared.set_out(Some(tx));
                            stats::inc(&self.shared.metrics.connects);
                            if self.machine.is_reconnect() {
                                stats::inc(&self.shared.metrics.reconnects);
                            }
                            self.events.push(JsEvent::Open { protocol: opened.protocol });
                            self.input(Input::Opened);
                        }
                        Err(error) => {
                            stats::inc(&self.shared.metrics.connection_errors);
                            self.input(Input::AttemptFailed { error });
                        }
                    }
                }
                io = maybe_io(self.socket.as_mut(), &mut self.events) => {
                    if let IoEvent::Ended(end) = io {
                        self.socket = None;
                        self.shared.set_out(None);
                        self.close_deadline = None;
                        if end.error.is_some() {
                            stats::inc(&self.shared.metrics.connection_errors);
                        }
                        self.input(Input::Lost { code: end.code, reason: end.reason, was_clean: end.was_clean, error: end.error });
                    }
                }
                _ = maybe(self.timer.as_mut().map(|t| &mut t.0)) => {
                    self.timer = None;
                    self.input(Input::TimerFired);
                }
                _ = maybe(self.close_deadline.as_mut()) => {
                    self.close_deadline = None;
                    self.input(Input::CloseDeadline);
                }
            }
        }
        // Release everything before reporting the exit: JS resolves `disconnect()` on this event.
        self.attempt = None;
        self.socket = None;
        self.timer = None;
        self.close_deadline = None;
        self.shared.set_out(None);
        drop(running);
        self.hub.push_one(self.shared.id, JsEvent::Idle { gen: self.gen });
    }

    fn input(&mut self, input: Input) {
        let now = self.now_ms();
        let mut actions = std::mem::take(&mut self.actions);
        self.machine.handle(input, now, &mut actions);
        for action in actions.drain(..) {
            self.execute(action);
        }
        self.actions = actions;
        // When the driver finishes, its `Idle` report settles the disconnect, after everything is released.
        if std::mem::take(&mut self.disconnect_done) && !self.finished {
            self.events.push(JsEvent::DisconnectDone);
        }
        debug_assert!(self.timer.is_none() || self.machine.phase() == Phase::Backoff);
    }

    fn execute(&mut self, action: Action) {
        match action {
            Action::StartAttempt { .. } => {
                stats::inc(&self.shared.metrics.connect_attempts);
                self.attempt = Some(Attempt::start(&self.config.conn));
            }
            Action::AbortAttempt => self.attempt = None,
            Action::StartClose { code, reason } => {
                // Dropping the last sender lets the socket drain what was sent, then write our close.
                self.shared.set_out(None);
                if let Some(s) = self.socket.as_mut() {
                    s.begin_close(code, reason);
                }
                self.close_deadline = Some(Box::pin(tokio::time::sleep(self.config.close_timeout)));
            }
            Action::DropConnection => {
                self.socket = None;
                self.shared.set_out(None);
                self.close_deadline = None;
            }
            Action::ArmTimer { delay_ms } => {
                let sleep = Box::pin(tokio::time::sleep(Duration::from_millis(delay_ms)));
                self.timer = Some((sleep, Gauge::reconnect_timer(&self.shared.metrics)));
            }
            Action::CancelTimer => self.timer = None,
            Action::Emit(event) => self.events.push(match event {
                Event::Connecting { attempt } => JsEvent::Connecting { attempt },
                // `Open` is pushed by the driver with the handshake details.
                Event::Open => return,
                Event::Error(e) => JsEvent::Error(e),
                Event::Close {
                    code,
                    reason,
                    was_clean,
                    will_reconnect,
                } => JsEvent::Close {
                    code,
                    reason,
                    was_clean,
                    will_reconnect,
                },
                Event::Reconnecting { attempt, delay_ms } => JsEvent::Reconnecting { attempt, delay_ms },
                Event::GiveUp {
                    attempts,
                    reason,
                    last_error,
                } => JsEvent::GiveUp {
                    attempts,
                    reason,
                    last_error,
                },
            }),
            Action::DisconnectDone => self.disconnect_done = true,
            Action::Finish => self.finished = true,
        }
    }
}
