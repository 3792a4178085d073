//! The JS values of the events a client reports: a message as a string or a Buffer (a run of
//! them as one array or one Buffer), an error as an object with its code, each other event's
//! payload as a plain value or a small object.

use napi::bindgen_prelude::*;

use crate::errors::ConnError;
use crate::events::{JsEvent, PolicyInfo};
use crate::napi_raw::{self, ArrayOf, Obj, Value};
use crate::protocol::{event as tag, EXTERNAL_FROM};

/// A text message as a JS string: V8 copies an ASCII one as it is, and decodes UTF-8 otherwise.
pub fn text_value<'e>(env: &'e Env, text: &str) -> Result<Value<'e>> {
    if text.is_ascii() {
        napi_raw::ascii_string(env, text)
    } else {
        napi_raw::to_js(env, text)
    }
}

/// A run of text messages as an array of strings, made here: N-API makes a string for about a
/// third of what `Buffer#latin1Slice`/`utf8Slice` cost a call from JS, and `Array.of` takes them
/// all at once (docs/performance.md).
pub fn text_run<'e>(env: &'e Env, array_of: Option<&ArrayOf>, texts: &[JsEvent]) -> Result<Value<'e>> {
    let count = texts.iter().map(JsEvent::messages).sum();
    let mut strings = Vec::with_capacity(count);
    for t in texts {
        match t {
            JsEvent::Text(one) => strings.push(text_value(env, one.as_str())?),
            JsEvent::Texts(run) => {
                for one in run.iter() {
                    strings.push(text_value(env, one)?);
                }
            }
            _ => {}
        }
    }
    match array_of {
        Some(of) => of.array(env, &strings),
        None => napi_raw::array(env, &strings),
    }
}

fn error_obj<'e>(env: &'e Env, e: &ConnError) -> Result<Value<'e>> {
    let mut o = Obj::new(env)?;
    o.set(c"code", e.code)?;
    o.set(c"message", e.message.as_str())?;
    if let Some(status) = e.status {
        o.set(c"status", u32::from(status))?;
        if !e.headers.is_empty() {
            o.set_value(c"headers", raw_headers(env, &e.headers)?)?;
        }
        if let Some(body) = &e.body {
            o.set_value(c"body", napi_raw::buffer_copy(env, body)?)?;
        }
    }
    Ok(o.value)
}

/// A response's headers as Node's `rawHeaders` are: names and values in turn, in order. JS builds
/// the object Node would (`lib/response.js`), repeated names and all.
fn raw_headers<'e>(env: &'e Env, headers: &[(String, String)]) -> Result<Value<'e>> {
    let mut strings = Vec::with_capacity(headers.len() * 2);
    for (name, value) in headers {
        strings.push(text_value(env, name)?);
        strings.push(text_value(env, value)?);
    }
    napi_raw::array(env, &strings)
}

/// An event's tag and payload for JS.
pub fn event_to_js(env: &Env, event: JsEvent) -> Result<(u32, Value<'_>)> {
    Ok(match event {
        // `delivery` sends text runs itself; a lone one is the string.
        JsEvent::Text(t) => (tag::TEXT, text_value(env, t.as_str())?),
        run @ JsEvent::Texts(_) => (tag::TEXT_BATCH, text_run(env, None, &[run])?),
        JsEvent::Binary(b) if b.len() >= EXTERNAL_FROM => (tag::BINARY, napi_raw::external_buffer(env, b)?),
        JsEvent::Binary(b) => (tag::BINARY, napi_raw::buffer_copy(env, &b)?),
        JsEvent::Binaries(run) => (tag::BINARY_BATCH, napi_raw::buffer_copy(env, &run.into_wire())?),
        JsEvent::Connecting { attempt } => (tag::CONNECTING, napi_raw::to_js(env, attempt)?),
        // HTTP header bytes are Latin-1 to Node (`IncomingMessage`): one character each.
        JsEvent::Upgrade(head) => (tag::UPGRADE, napi_raw::latin1_string(env, &head)?),
        // Payloads of the events every connection has are plain values where one will do: a
        // fleet connecting or churning makes no garbage object per event.
        JsEvent::Open {
            protocol,
            extensions: None,
        } => (tag::OPEN, napi_raw::to_js(env, protocol.unwrap_or_default())?),
        JsEvent::Open {
            protocol,
            extensions: Some(extensions),
        } => {
            let mut o = Obj::new(env)?;
            o.set(c"protocol", protocol.unwrap_or_default())?;
            o.set(c"extensions", extensions)?;
            (tag::OPEN, o.value)
        }
        JsEvent::Error(e) => (tag::ERROR, error_obj(env, &e)?),
        JsEvent::Closing(Some(e)) => (tag::CLOSING, error_obj(env, &e)?),
        JsEvent::Closing(None) => (tag::CLOSING, napi_raw::undefined(env)?),
        JsEvent::Close {
            code,
            reason,
            was_clean,
            will_reconnect,
            by_reconnect,
            retries,
            gen,
            restarts,
        } => {
            let mut o = Obj::new(env)?;
            o.set(c"code", u32::from(code))?;
            o.set(c"reason", reason)?;
            o.set(c"wasClean", was_clean)?;
            o.set(c"willReconnect", will_reconnect)?;
            o.set(c"byReconnect", by_reconnect)?;
            o.set(c"retries", retries)?;
            o.set(c"gen", gen)?;
            o.set(c"restarts", restarts)?;
            (tag::CLOSE, o.value)
        }
        JsEvent::Reconnecting {
            attempt,
            delay_ms,
            restarts,
        } => {
            let mut o = Obj::new(env)?;
            o.set(c"attempt", attempt)?;
            o.set(c"delay", delay_ms as f64)?;
            o.set(c"restarts", restarts)?;
            (tag::RECONNECTING, o.value)
        }
        JsEvent::GiveUp {
            attempts,
            reason,
            last_error,
            gen,
        } => {
            let mut o = Obj::new(env)?;
            o.set(c"reason", reason)?;
            o.set(c"attempts", attempts)?;
            o.set(c"gen", gen)?;
            let last = match last_error {
                Some(e) => error_obj(env, &e)?,
                None => napi_raw::undefined(env)?,
            };
            o.set_value(c"lastError", last)?;
            (tag::GIVEUP, o.value)
        }
        JsEvent::DisconnectDone { discarded, upto } => {
            let mut o = Obj::new(env)?;
            o.set(c"discarded", discarded)?;
            o.set(c"upto", upto)?;
            (tag::DISCONNECTED, o.value)
        }
        JsEvent::Ping(p) => (tag::PING, napi_raw::buffer_copy(env, &p)?),
        JsEvent::Pong(p) => (tag::PONG, napi_raw::buffer_copy(env, &p)?),
        JsEvent::Sent => (tag::SENT, napi_raw::undefined(env)?),
        JsEvent::Redirect(url) => (tag::REDIRECT, napi_raw::to_js(env, url)?),
        JsEvent::Lookup { request, host, family } => {
            let mut o = Obj::new(env)?;
            o.set(c"request", request as f64)?;
            o.set(c"host", host)?;
            o.set(c"family", u32::from(family))?;
            (tag::LOOKUP, o.value)
        }
        JsEvent::Identity { request, host, chain } => {
            let mut o = Obj::new(env)?;
            o.set(c"request", request as f64)?;
            o.set(c"host", host)?;
            let certificates = chain
                .iter()
                .map(|der| napi_raw::buffer_copy(env, der))
                .collect::<Result<Vec<_>>>()?;
            o.set_value(c"chain", napi_raw::array(env, &certificates)?)?;
            (tag::IDENTITY, o.value)
        }
        JsEvent::Provide { id, attempt } => {
            let mut o = Obj::new(env)?;
            o.set(c"id", id as f64)?;
            o.set(c"attempt", attempt)?;
            (tag::PROVIDE, o.value)
        }
        JsEvent::Decide {
            id,
            attempt,
            info,
            default,
        } => {
            let mut o = Obj::new(env)?;
            o.set(c"id", id as f64)?;
            o.set(c"default", default)?;
            let mut i = Obj::new(env)?;
            match info {
                PolicyInfo::Close {
                    code,
                    reason,
                    was_clean,
                    error,
                } => {
                    i.set(c"kind", "close")?;
                    i.set(c"code", u32::from(code))?;
                    i.set(c"reason", reason)?;
                    i.set(c"wasClean", was_clean)?;
                    if let Some(error) = error {
                        i.set(c"error", error)?;
                    }
                }
                PolicyInfo::Handshake { status, headers } => {
                    i.set(c"kind", "handshake")?;
                    i.set(c"status", u32::from(status))?;
                    i.set_value(c"headers", raw_headers(env, &headers)?)?;
                }
                PolicyInfo::Error { code } => {
                    i.set(c"kind", "error")?;
                    i.set(c"code", code)?;
                }
            }
            i.set(c"attempt", attempt)?;
            o.set_value(c"info", i.value)?;
            (tag::DECIDE, o.value)
        }
        JsEvent::Idle { gen, discarded, upto } => {
            let mut o = Obj::new(env)?;
            o.set(c"gen", gen)?;
            o.set(c"discarded", discarded)?;
            o.set(c"upto", upto)?;
            (tag::IDLE, o.value)
        }
        JsEvent::Warning { code, message, detail } => {
            let mut o = Obj::new(env)?;
            o.set(c"code", code)?;
            o.set(c"message", message)?;
            o.set(c"detail", detail)?;
            (tag::WARNING, o.value)
        }
        // Taken by `delivery` itself: it is for the JS thread, not for JS.
        JsEvent::ReadIdle { .. } => return Err(Error::new(Status::GenericFailure, "not an event for JS")),
    })
}
