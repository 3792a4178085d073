//! Questions a connection attempt asks its client's JS functions, and waits for: its `lookup`
//! (the addresses of a host name) and its `tls.checkServerIdentity` (whether a verified
//! certificate chain is the server's). A question goes out through the client's event queue
//! (an [`Asker`], made by `hub`, so that this module depends on nothing of the boundary) and
//! is answered by [`answer`]; it is forgotten when its attempt ends, answered or not (a timeout,
//! `disconnect()`), so nothing waits on a function that never answers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

/// What an attempt asks.
#[derive(Debug)]
pub enum Question {
    /// `lookup(host, { family, all: true })`: 0, 4 or 6.
    Lookup { host: String, family: u8 },
    /// `checkServerIdentity(host, certificate)`: the chain as the server sent it (DER, leaf
    /// first), already verified up to a trusted root.
    Identity { host: String, chain: Vec<Vec<u8>> },
}

/// What JS answered.
#[derive(Debug, PartialEq)]
pub enum Answer {
    /// A lookup's addresses, in the order to try.
    Addresses(Vec<IpAddr>),
    /// `checkServerIdentity` returned nothing: the certificate is the server's.
    Accepted,
    /// Why the function failed, threw, or refused.
    Failed(String),
}

/// Sends a question to one client's JS side, with its request number.
#[derive(Clone)]
pub struct Asker(pub Arc<AskFn>);

pub type AskFn = dyn Fn(u64, Question) + Send + Sync;

impl std::fmt::Debug for Asker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Asker")
    }
}

/// Questions waiting for their answer, by request number.
type Waiting = HashMap<u64, oneshot::Sender<Answer>>;

static WAITING: Mutex<Option<Waiting>> = Mutex::new(None);
static NEXT_REQUEST: AtomicU64 = AtomicU64::new(1);

fn waiting() -> std::sync::MutexGuard<'static, Option<Waiting>> {
    WAITING.lock().unwrap_or_else(|p| p.into_inner())
}

/// Forgets its request when dropped: the attempt that asked ended.
struct Forget(u64);

impl Drop for Forget {
    fn drop(&mut self) {
        if let Some(map) = waiting().as_mut() {
            map.remove(&self.0);
        }
    }
}

/// Asks `question` and waits for its answer (`Failed` if the request was dropped unanswered).
pub async fn ask(asker: &Asker, question: Question) -> Answer {
    let request = NEXT_REQUEST.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = oneshot::channel();
    waiting().get_or_insert_with(HashMap::new).insert(request, tx);
    let _forget = Forget(request);
    (asker.0)(request, question);
    rx.await
        .unwrap_or_else(|_| Answer::Failed("the request was dropped".to_owned()))
}

/// The answer to `request` (ignored when its attempt has ended).
pub fn answer(request: u64, answer: Answer) {
    let tx = waiting().as_mut().and_then(|m| m.remove(&request));
    if let Some(tx) = tx {
        let _ = tx.send(answer);
    }
}

/// Questions not yet answered nor abandoned (tests prove none is left).
pub fn questions_waiting() -> usize {
    waiting().as_ref().map_or(0, HashMap::len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::task::{Context, Waker};

    fn lookup(host: &str) -> Question {
        Question::Lookup {
            host: host.into(),
            family: 0,
        }
    }

    fn pending<F: Future + Unpin>(f: &mut F) -> bool {
        Future::poll(std::pin::Pin::new(f), &mut Context::from_waker(Waker::noop())).is_pending()
    }

    #[test]
    fn an_answer_reaches_its_question_and_an_abandoned_question_is_forgotten() {
        let asked = Arc::new(Mutex::new(Vec::new()));
        let log = asked.clone();
        let asker = Asker(Arc::new(move |request, _| log.lock().unwrap().push(request)));
        let mut first = Box::pin(ask(&asker, lookup("a")));
        assert!(pending(&mut first));
        answer(asked.lock().unwrap()[0], Answer::Accepted);
        let answered = Future::poll(first.as_mut(), &mut Context::from_waker(Waker::noop()));
        assert_eq!(answered, std::task::Poll::Ready(Answer::Accepted));
        // Asked, then dropped: its request is gone, and a late answer is ignored.
        let mut abandoned = Box::pin(ask(&asker, lookup("b")));
        assert!(pending(&mut abandoned));
        let request = asked.lock().unwrap()[1];
        assert!(waiting().as_ref().is_some_and(|m| m.contains_key(&request)));
        drop(abandoned);
        assert!(waiting().as_ref().is_none_or(|m| !m.contains_key(&request)));
        answer(request, Answer::Accepted);
    }
}
