//! The addon's raw N-API calls (and the few libuv and socket calls of reading on the JS thread),
//! each behind a safe function: every `unsafe` block of the boundary lives here and states what it
//! relies on, and every status is checked (the few left unchecked say why: a call that cannot
//! fail for its arguments, or a cleanup whose failure leaves nothing to undo).
//!
//! Why raw calls at all, where napi-rs has safe ones: a client's native state is wrapped onto
//! the JS client object itself (no second JS object or reference-map entry per client), the
//! reference to that object switches between weak and strong, and the thread-safe function is
//! ref'd and unref'd at run time; napi-rs has no safe form of these. Event batches are built
//! from raw handles so that one batch costs one array, not a napi-rs object per event.
//!
//! All functions take the `Env` of the current call on the JS thread, and the `sys::napi_value`
//! handles they take or return are valid until that call returns (N-API's handle scopes).

use std::cell::Cell;
use std::ffi::{c_int, c_void, CStr, CString};
use std::marker::PhantomData;
use std::ptr;
use std::sync::OnceLock;

use napi::bindgen_prelude::*;
use napi::sys;

/// A JS value handle made by this module during the current call. It borrows the call's `Env`
/// (`'e`), so it cannot outlive the call whose handle scope holds it, nor (not being `Send`)
/// leave its thread.
#[derive(Clone, Copy)]
#[repr(transparent)]
pub struct Value<'e>(sys::napi_value, PhantomData<&'e Env>);

/// A value the event dispatchers' calls hand to JS (see `DispatchArgs`). Made only from a `Value`,
/// and converted by napi-rs as the call it is an argument or result of is made; it has no
/// lifetime because the thread-safe function's type (`Tsfn`) names it and outlives every call.
pub struct RawValue(sys::napi_value);

impl From<Value<'_>> for RawValue {
    fn from(v: Value<'_>) -> Self {
        RawValue(v.0)
    }
}

impl ToNapiValue for RawValue {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        Ok(val.0)
    }
}

/// The arguments of an event dispatcher's call: `(client, tag, payload)` for a lone event, or
/// `(batch)` and two `undefined` (see `delivery::dispatch_args`).
pub type DispatchArgs = FnArgs<(RawValue, RawValue, RawValue)>;

/// The thread-safe function that carries event batches to JS: weak (it never holds the event
/// loop by itself; see `set_tsfn_ref`), its queue unbounded (one call is pending at a time).
pub type Tsfn = napi::threadsafe_function::ThreadsafeFunction<(), (), DispatchArgs, Status, false, true, 0>;

/// `v` as a JS value.
pub fn to_js<'e, V: ToNapiValue>(env: &'e Env, v: V) -> Result<Value<'e>> {
    // SAFETY: `env` is the live environment of this call on the JS thread.
    unsafe { V::to_napi_value(env.raw(), v) }.map(|v| Value(v, PhantomData))
}

/// A JS string of `ascii`'s bytes, each one character (the caller knows them ASCII: no UTF-8 to
/// decode).
pub fn ascii_string<'e>(env: &'e Env, ascii: &str) -> Result<Value<'e>> {
    latin1_string(env, ascii.as_bytes())
}

/// A JS string of `bytes`, each one character (Latin-1).
pub fn latin1_string<'e>(env: &'e Env, bytes: &[u8]) -> Result<Value<'e>> {
    let mut v = ptr::null_mut();
    // SAFETY: live `env`; the pointer and length are `bytes`'s; `v` is a valid out pointer.
    check_status!(unsafe {
        sys::napi_create_string_latin1(env.raw(), bytes.as_ptr().cast(), bytes.len() as isize, &mut v)
    })?;
    Ok(Value(v, PhantomData))
}

pub fn undefined<'e>(env: &'e Env) -> Result<Value<'e>> {
    let mut v = ptr::null_mut();
    // SAFETY: live `env`; `v` is a valid out pointer.
    check_status!(unsafe { sys::napi_get_undefined(env.raw(), &mut v) })?;
    Ok(Value(v, PhantomData))
}

/// `Array.of`, kept to make an array in one call into V8. `napi_set_element` is a generic property
/// store under a `TryCatch`: about 1,000 instructions an element (callgrind), three per event of a
/// batch; `Array.of` takes all the elements at once.
pub struct ArrayOf(sys::napi_ref);

impl ArrayOf {
    /// More arguments than this (V8 takes up to 65,534; a batch has at most about 12,300) go
    /// element by element rather than onto the stack at once.
    const MAX_ARGS: usize = 1 << 15;

    /// The realm's `Array.of`, as it is now (a later replacement of it does not matter).
    pub fn new(env: &Env) -> Result<Self> {
        let mut global = ptr::null_mut();
        // SAFETY: live `env`; `global` is a valid out pointer.
        check_status!(unsafe { sys::napi_get_global(env.raw(), &mut global) })?;
        let mut ctor = ptr::null_mut();
        // SAFETY: `global` is a handle of this call; the name is NUL-terminated; `ctor` is a valid out pointer.
        check_status!(unsafe { sys::napi_get_named_property(env.raw(), global, c"Array".as_ptr(), &mut ctor) })?;
        let mut of = ptr::null_mut();
        // SAFETY: as above, on `ctor` (a property read of a non-object fails with a status).
        check_status!(unsafe { sys::napi_get_named_property(env.raw(), ctor, c"of".as_ptr(), &mut of) })?;
        let mut kind = sys::ValueType::napi_undefined;
        // SAFETY: `of` is a handle of this call; `kind` is a valid out pointer.
        check_status!(unsafe { sys::napi_typeof(env.raw(), of, &mut kind) })?;
        if kind != sys::ValueType::napi_function {
            return Err(Error::new(Status::FunctionExpected, "Array.of is not a function"));
        }
        let mut r = ptr::null_mut();
        // SAFETY: `of` is a live handle; `r` is a valid out pointer. The reference is strong (count
        // 1) and lives as long as the environment.
        check_status!(unsafe { sys::napi_create_reference(env.raw(), of, 1, &mut r) })?;
        Ok(ArrayOf(r))
    }

    /// A JS array of `values`.
    pub fn array<'e>(&self, env: &'e Env, values: &[Value<'_>]) -> Result<Value<'e>> {
        if values.len() > Self::MAX_ARGS {
            return array(env, values);
        }
        let mut of = ptr::null_mut();
        // SAFETY: `self.0` is a live reference of this environment (never deleted).
        check_status!(unsafe { sys::napi_get_reference_value(env.raw(), self.0, &mut of) })?;
        let mut recv = ptr::null_mut();
        // SAFETY: live `env`; `recv` is a valid out pointer. (`Array.of` called on a receiver that
        // is not a constructor makes a plain array.)
        check_status!(unsafe { sys::napi_get_undefined(env.raw(), &mut recv) })?;
        let mut result = ptr::null_mut();
        // SAFETY: `of` and `recv` are handles of this call; `Value` is a transparent `napi_value`,
        // so `values` is `values.len()` handles of this call in a row.
        let status =
            unsafe { sys::napi_call_function(env.raw(), recv, of, values.len(), values.as_ptr().cast(), &mut result) };
        if status == sys::Status::napi_pending_exception {
            // Out of stack, say: nothing for JS to see; the array is made element by element.
            let mut err = ptr::null_mut();
            // SAFETY: live `env` with a pending exception; `err` is a valid out pointer.
            check_status!(unsafe { sys::napi_get_and_clear_last_exception(env.raw(), &mut err) })?;
            return array(env, values);
        }
        check_status!(status)?;
        Ok(Value(result, PhantomData))
    }
}

/// A JS array of `values`, element by element. Each is defined as an own data property, as an
/// array literal does: a setter some code put on `Array.prototype` or `Object.prototype` for an
/// index does not intercept it (`napi_set_element` would call it).
pub fn array<'e>(env: &'e Env, values: &[Value<'_>]) -> Result<Value<'e>> {
    let mut array = ptr::null_mut();
    // SAFETY: live `env`; `array` is a valid out pointer.
    check_status!(unsafe { sys::napi_create_array_with_length(env.raw(), values.len(), &mut array) })?;
    let names = (0..values.len())
        .map(|i| CString::new(i.to_string()).map_err(|e| Error::from_reason(e.to_string())))
        .collect::<Result<Vec<_>>>()?;
    let properties: Vec<_> = names
        .iter()
        .zip(values)
        .map(|(name, v)| data_property(name, *v))
        .collect();
    // SAFETY: `array` and each value are handles of this call; each name is NUL-terminated and
    // lives (in `names`) until the call returns; `properties.len()` descriptors, read during it.
    check_status!(unsafe { sys::napi_define_properties(env.raw(), array, properties.len(), properties.as_ptr()) })?;
    Ok(Value(array, PhantomData))
}

/// A writable, enumerable, configurable data property `name: v`, as a literal defines one.
fn data_property(name: &CStr, v: Value<'_>) -> sys::napi_property_descriptor {
    use sys::PropertyAttributes::{configurable, enumerable, writable};
    sys::napi_property_descriptor {
        utf8name: name.as_ptr(),
        name: ptr::null_mut(),
        method: None,
        getter: None,
        setter: None,
        value: v.0,
        attributes: writable | enumerable | configurable,
        data: ptr::null_mut(),
    }
}

/// A plain JS object under construction.
pub struct Obj<'e> {
    env: &'e Env,
    pub value: Value<'e>,
}

impl<'e> Obj<'e> {
    pub fn new(env: &'e Env) -> Result<Self> {
        let mut value = ptr::null_mut();
        // SAFETY: live `env`; `value` is a valid out pointer.
        check_status!(unsafe { sys::napi_create_object(env.raw(), &mut value) })?;
        Ok(Obj {
            env,
            value: Value(value, PhantomData),
        })
    }

    pub fn set<V: ToNapiValue>(&mut self, key: &CStr, v: V) -> Result<()> {
        let v = to_js(self.env, v)?;
        self.set_value(key, v)
    }

    /// Defines an own data property, as an object literal does: a setter some code put on
    /// `Object.prototype` does not intercept it.
    pub fn set_value(&mut self, key: &CStr, v: Value<'_>) -> Result<()> {
        let property = data_property(key, v);
        // SAFETY: `self.value` and `v` are handles of this call; `key` is NUL-terminated; one
        // descriptor, read during the call.
        check_status!(unsafe { sys::napi_define_properties(self.env.raw(), self.value.0, 1, &property) })
    }
}

/// A Node Buffer holding a copy of `data`.
pub fn buffer_copy<'e>(env: &'e Env, data: &[u8]) -> Result<Value<'e>> {
    let mut v = ptr::null_mut();
    let mut out = ptr::null_mut();
    // SAFETY: `data` is valid for `data.len()` bytes for the duration of the call (it is copied).
    check_status!(unsafe {
        sys::napi_create_buffer_copy(env.raw(), data.len(), data.as_ptr().cast(), &mut out, &mut v)
    })?;
    Ok(Value(v, PhantomData))
}

thread_local! {
    /// Whether this JS thread hands out external Buffers (`enable_external_buffers`); until then, copies.
    static EXTERNAL_BUFFERS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Lets `external_buffer` give `env`'s thread memory Rust owns, not a copy, if its environment lives
/// as long as the process: when a worker's environment is torn down, Node runs the finalizer of
/// every external Buffer made there, freeing its memory even where `ArrayBuffer.prototype.transfer()`
/// has moved that memory to another thread's ArrayBuffer, which would then read and write freed
/// memory (or another message's, recycled). Decided here, not by the caller: the environment is the
/// main thread's when its loop is libuv's default loop, which only the main thread runs (Node's,
/// and Bun's, which exports libuv's symbols too). Where that cannot be told (no `uv_default_loop`
/// to ask: Windows, where symbols are not looked up, or Deno), Buffers are copies.
pub fn enable_external_buffers(env: &Env) {
    let main = match (default_loop(), uv_loop(env)) {
        (Some(default), Ok(mine)) => !mine.is_null() && mine == default,
        _ => false,
    };
    EXTERNAL_BUFFERS.with(|allowed| allowed.set(main));
}

/// libuv's default loop, the one Node's main thread runs (`uv_default_loop()`), if the process has
/// libuv's symbols.
#[cfg(unix)]
fn default_loop() -> Option<*mut c_void> {
    type DefaultLoop = unsafe extern "C" fn() -> *mut c_void;
    // SAFETY: the name is NUL-terminated; RTLD_DEFAULT searches the process's global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"uv_default_loop".as_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: `p` is libuv's `uv_default_loop`, `uv_loop_t* (void)` in the libuv 1.x ABI. It only
    // returns the process's default loop (initialising it if no one had: Node's main thread has).
    let default = unsafe { std::mem::transmute::<*mut c_void, DefaultLoop>(p)() };
    (!default.is_null()).then_some(default)
}

#[cfg(not(unix))]
fn default_loop() -> Option<*mut c_void> {
    None
}

/// A Node Buffer over memory that Rust keeps owning (`data` is dropped by the finalizer): no
/// copy. JS may write the Buffer as well as read it, so `data` must hand its bytes out as
/// `&mut [u8]` (`AsMut`): they are its alone, viewed by no other handle (`Bytes`, whose clones
/// share memory they promise never changes, cannot be passed). A copy on a thread not allowed
/// them (`enable_external_buffers`) and where the runtime refuses external buffers.
pub fn external_buffer<'e, T: AsMut<[u8]> + 'static>(env: &'e Env, data: T) -> Result<Value<'e>> {
    /// # Safety
    /// Called by Node once, on the JS thread, with the `hint` given below.
    unsafe extern "C" fn release<T: AsMut<[u8]>>(env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
        // SAFETY: `hint` is the `Box<T>` leaked below; Node calls this once.
        let mut data = unsafe { Box::from_raw(hint.cast::<T>()) };
        let extra = EXTRA_COUNT.get().map_or(0, |share| share.of((*data).as_mut().len()));
        // `T`'s drop may hand the memory on (`recycle`): a panic cannot unwind into Node.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(data)));
        if extra > 0 {
            let mut total = 0;
            // SAFETY: `env` is the live environment Node calls the finalizer with. A failure only
            // leaves V8's estimate high, which is harmless.
            let _ = unsafe { sys::napi_adjust_external_memory(env, -extra, &mut total) };
        }
    }
    let mut data = data;
    if !EXTERNAL_BUFFERS.with(std::cell::Cell::get) || data.as_mut().is_empty() {
        return buffer_copy(env, data.as_mut());
    }
    let hint = Box::into_raw(Box::new(data));
    // SAFETY: `hint` is the box leaked just above, valid and aligned; this is the only reference
    // made to its `T` until `release` (or a refusal below) takes the box back.
    let bytes = unsafe { (*hint).as_mut() };
    let (start, len) = (bytes.as_mut_ptr(), bytes.len());
    let mut v = ptr::null_mut();
    // SAFETY: `start..start + len` is memory `*hint` handed out as `&mut [u8]`: its own, viewed by
    // no other handle (the exclusivity `AsMut`'s signature promises), so what JS writes there
    // breaks no assumption of Rust's. It stays put and untouched until `release` drops `*hint`
    // after JS let go of the Buffer: the box is never moved or read again (the bytes are on the
    // heap, or inline in the box), and `bytes`, the borrow `start` came from, is not used again.
    let status = unsafe {
        sys::napi_create_external_buffer(env.raw(), len, start.cast(), Some(release::<T>), hint.cast(), &mut v)
    };
    match status {
        sys::Status::napi_ok => {
            let extra = extra_count(env).of(len);
            if extra > 0 {
                let mut total = 0;
                // SAFETY: live `env`; `total` is a valid out pointer. Undone by `release`; a
                // failure only leaves V8's estimate low, as it was before this call.
                let _ = unsafe { sys::napi_adjust_external_memory(env.raw(), extra, &mut total) };
            }
            young_collection_check(env);
            Ok(Value(v, PhantomData))
        }
        sys::Status::napi_no_external_buffers_allowed => {
            // SAFETY: refused before Node took ownership: `release` has not run and never will.
            let mut data = unsafe { Box::from_raw(hint) };
            buffer_copy(env, (*data).as_mut())
        }
        // The environment cannot run JS (a worker being terminated) or the call's arguments are
        // refused: Node checks these first (`NAPI_PREAMBLE`, `CHECK_ARG`), before it makes the
        // Buffer that would own the data, so nothing will ever run `release`.
        status @ (sys::Status::napi_pending_exception
        | sys::Status::napi_cannot_run_js
        | sys::Status::napi_invalid_arg) => {
            // SAFETY: refused before Node took ownership, as above.
            drop(unsafe { Box::from_raw(hint) });
            check_status!(status, "cannot create a Buffer of {len} bytes").map(|()| Value(v, PhantomData))
        }
        // Any other failure may come after Node already ran `release` (it does for a length over
        // the Buffer limit), so `hint` is no longer ours to free. `maxPayload` is capped below that
        // limit, so this is not expected; at worst the data leaks, it is never freed twice.
        status => check_status!(status, "cannot create a Buffer of {len} bytes").map(|()| Value(v, PhantomData)),
    }
}

/// Has V8 check its young generation's Buffer memory, which external Buffers alone never do.
/// V8 counts an external Buffer's memory as any Buffer's, and frees the memory of young ones in a
/// scavenge (whose cost is the live young objects'), but it decides to scavenge for that memory
/// only when it allocates a Buffer's memory itself and finds twice a semi-space of it young (about
/// 32 MB): `Heap::AllocateExternalBackingStore`. Node's own Buffers make that check as they are
/// made; a stream of external ones would be freed only by mark-compacts at V8's external-memory
/// limit, which cost what the whole heap costs. So each external Buffer is followed by one byte
/// that V8 allocates (docs/performance.md, "Large messages and the garbage collector").
fn young_collection_check(env: &Env) {
    let mut data = ptr::null_mut();
    let mut v = ptr::null_mut();
    // SAFETY: live `env`; `data` and `v` are valid out pointers. The Buffer is garbage at once; a
    // failure only skips the check, which V8 makes again at the next allocation.
    let _ = unsafe { sys::napi_create_buffer(env.raw(), 1, &mut data, &mut v) };
}

/// How much of an external Buffer's memory is counted a second time, by hand
/// (`napi_adjust_external_memory`): V8's external-memory limit, and so its next mark-compact,
/// comes that much earlier.
///
/// Where `young_collection_check` frees a stream of external Buffers in scavenges (Node 20 and 22;
/// every Node before 24 is taken to) a second count only adds mark-compacts: none. V8 13 (Node 24)
/// separates its collections' phases (`--separate-gc-phases`): it does not scavenge for Buffer
/// memory while a mark-compact's marking runs, and with the external limit (64 MB) as high as its
/// scavenge threshold, Buffers are freed by mark-compacts alone, for `ws` too. How much is counted
/// twice sets how much garbage Buffer memory builds up between them: three quarters needs as many
/// mark-compacts as `ws` and stays inside the hostile tests' bound (the measurements are in
/// docs/performance.md). Bun and Deno keep it too.
static EXTRA_COUNT: OnceLock<Share> = OnceLock::new();

/// A share of a length, in quarters.
#[derive(Clone, Copy)]
struct Share(i64);

impl Share {
    fn of(self, len: usize) -> i64 {
        i64::try_from(len).unwrap_or(i64::MAX) / 4 * self.0
    }
}

fn extra_count(env: &Env) -> Share {
    *EXTRA_COUNT.get_or_init(|| {
        let mut version: *const sys::napi_node_version = ptr::null();
        // SAFETY: live `env`; `version` is a valid out pointer to a struct Node owns for the life
        // of the process, read only when the call succeeded and returned one.
        let major = unsafe {
            (sys::napi_get_node_version(env.raw(), &mut version) == sys::Status::napi_ok && !version.is_null())
                .then(|| (*version).major)
        };
        match major {
            Some(major) if major < 24 => Share(0),
            _ => Share(3),
        }
    })
}

/// A reference to a client's JS object that is weak (the object may be collected) or strong.
pub struct OwnerRef(sys::napi_ref);

impl OwnerRef {
    /// A weak reference to `object`.
    pub fn new(env: &Env, object: &Object<'_>) -> Result<Self> {
        let mut r = ptr::null_mut();
        // SAFETY: `object` is a live handle of this call; `r` is a valid out pointer.
        check_status!(unsafe { sys::napi_create_reference(env.raw(), object.raw(), 0, &mut r) })?;
        Ok(OwnerRef(r))
    }

    /// Makes the reference strong (count 1) or weak (count 0). Call only on a change.
    pub fn set_strong(&self, env: &Env, strong: bool) -> Result<()> {
        let mut count = 0;
        // SAFETY: `self.0` is a reference of this environment, not yet deleted (`delete` takes
        // `self`); `count` is a valid out pointer.
        check_status!(unsafe {
            if strong {
                sys::napi_reference_ref(env.raw(), self.0, &mut count)
            } else {
                sys::napi_reference_unref(env.raw(), self.0, &mut count)
            }
        })
    }

    /// The object, or `None` once it was collected.
    pub fn get<'e>(&self, env: &'e Env) -> Result<Option<Value<'e>>> {
        let mut v = ptr::null_mut();
        // SAFETY: as in `set_strong`.
        check_status!(unsafe { sys::napi_get_reference_value(env.raw(), self.0, &mut v) })?;
        Ok((!v.is_null()).then_some(Value(v, PhantomData)))
    }

    pub fn delete(self, env: &Env) -> Result<()> {
        // SAFETY: `self.0` is live and, since `self` is consumed, never used again.
        check_status!(unsafe { sys::napi_delete_reference(env.raw(), self.0) })
    }
}

/// Refs (the event loop waits for it) or unrefs a thread-safe function; nothing once Node has
/// released it (environment teardown), when its hold no longer matters.
pub fn set_tsfn_ref(env: &Env, tsfn: &Tsfn, on: bool) -> Result<()> {
    if tsfn.aborted() {
        return Ok(());
    }
    // SAFETY: Node has not released the function: napi-rs marks it aborted in the finalizer Node
    // calls as it does, which runs on this thread, so not during this call. (Borrowing `tsfn` only
    // keeps napi-rs from releasing it; Node releases it at teardown regardless.)
    check_status!(unsafe {
        if on {
            sys::napi_ref_threadsafe_function(env.raw(), tsfn.raw())
        } else {
            sys::napi_unref_threadsafe_function(env.raw(), tsfn.raw())
        }
    })
}

/// A type tag (N-API 8): two random 64-bit halves, `lower` and `upper`.
pub type TypeTag = sys::napi_type_tag;

/// Native state that a JS object carries (`wrap`): freed by `finalize` when the object is collected.
pub trait Wrapped: Sized + 'static {
    /// Tells this type's objects from every other wrapped object (another addon's, napi-rs's).
    const TAG: TypeTag;
    fn finalize(self: Box<Self>, env: Env);
}

/// `T::TAG` mixed with a key drawn when this copy of the addon is loaded. Node keeps every addon's
/// wrapped pointers under one key, so another copy of redial-ws in the process (two versions in
/// one dependency tree, whose `T` may differ) would unwrap our objects: its tag must differ.
fn tag<T: Wrapped>() -> TypeTag {
    static KEY: std::sync::OnceLock<(u64, u64)> = std::sync::OnceLock::new();
    let &(lower, upper) = KEY.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        // Each `RandomState` is seeded from the operating system's randomness.
        let draw = || std::collections::hash_map::RandomState::new().build_hasher().finish();
        (draw(), draw())
    });
    TypeTag {
        lower: T::TAG.lower ^ lower,
        upper: T::TAG.upper ^ upper,
    }
}

/// Gives `object` its native state, tagged with `tag::<T>()`.
pub fn wrap<T: Wrapped>(env: &Env, object: &Object<'_>, state: T) -> Result<()> {
    /// # Safety
    /// Called by Node once, on the JS thread, with the pointer wrapped below.
    unsafe extern "C" fn finalize<T: Wrapped>(env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
        // SAFETY: `data` is the `Box<T>` given to `napi_wrap`; Node calls this finalizer once,
        // after which nothing can reach the object.
        let state = unsafe { Box::from_raw(data.cast::<T>()) };
        // A panic cannot unwind into Node (it would abort the process).
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| state.finalize(Env::from_raw(env))));
    }
    let state = Box::into_raw(Box::new(state));
    // SAFETY: `object` is a live handle of this call, `state` a heap pointer the finalizer takes
    // back exactly once.
    let status = unsafe {
        sys::napi_wrap(
            env.raw(),
            object.raw(),
            state.cast(),
            Some(finalize::<T>),
            ptr::null_mut(),
            ptr::null_mut(),
        )
    };
    if status != sys::Status::napi_ok {
        // SAFETY: the wrap failed, so Node holds no copy of `state` and will not finalize it.
        unsafe { Box::from_raw(state) }.finalize(Env::from_raw(env.raw()));
        return check_status!(status, "cannot attach the native state");
    }
    // Tagged only once wrapped: a tagged object always carries a `T`.
    let tag = tag::<T>();
    // SAFETY: `object` is a live handle of this call; Node copies the tag.
    check_status!(unsafe { sys::napi_type_tag_object(env.raw(), object.raw(), &tag) })
}

thread_local! {
    /// A `with_wrapped` call is running on this thread.
    static UNWRAPPED: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with the native state `wrap` gave `object`; an error for any object that is not
/// tagged `tag::<T>()`, and for a call made while another one's `f` runs (JS that `f` ran, calling in
/// again: its `&mut` would alias the first).
pub fn with_wrapped<T: Wrapped, R>(env: &Env, object: &Object<'_>, f: impl FnOnce(&mut T) -> R) -> Result<R> {
    let foreign = || Error::new(Status::InvalidArg, "the object is not a redial-ws client");
    let mut tagged = false;
    let tag = tag::<T>();
    // SAFETY: `object` is a live handle of this call; `tagged` is a valid out pointer.
    check_status!(unsafe { sys::napi_check_object_type_tag(env.raw(), object.raw(), &tag, &mut tagged) })?;
    if !tagged {
        return Err(foreign());
    }
    let mut data = ptr::null_mut();
    // SAFETY: as above; `data` receives the pointer given to `napi_wrap`.
    check_status!(unsafe { sys::napi_unwrap(env.raw(), object.raw(), &mut data) }).map_err(|_| foreign())?;
    if data.is_null() {
        return Err(foreign());
    }
    if UNWRAPPED.with(|u| u.replace(true)) {
        return Err(Error::new(
            Status::GenericFailure,
            "redial-ws: a client call made from within another",
        ));
    }
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            UNWRAPPED.with(|u| u.set(false));
        }
    }
    let _done = Done;
    // SAFETY: only `wrap::<T>` of this copy of the addon tags with `tag::<T>()`, and only an
    // object it has wrapped with a `Box<T>`, so `data` is that box's pointer. It lives until the
    // object's finalizer, which cannot run while JS calls a function with the object. Only the JS
    // thread uses it, `f` cannot keep the reference, and no other `with_wrapped` runs until `f`
    // returns (`UNWRAPPED`), so the `&mut` is unique.
    Ok(f(unsafe { &mut *data.cast::<T>() }))
}

// ---------------------------------------------------------------------------------------------
// Reading a socket on the JS thread (plain connections, Node only): a libuv readiness watch on
// the socket, a non-blocking read of it, and the call into JS that runs what was read.

/// A JS function kept for calls from native callbacks (`call`), with the async context that
/// makes such a call behave like Node's own I/O callbacks: process.nextTick callbacks and
/// promise jobs run when it returns.
pub struct CallbackTarget {
    func: sys::napi_ref,
    context: sys::napi_async_context,
}

impl CallbackTarget {
    pub fn new(env: &Env, func: &Function<'_, RawValue, ()>) -> Result<Self> {
        let mut func_ref = ptr::null_mut();
        // SAFETY: `func` is a live handle of this call; `func_ref` is a valid out pointer. The
        // reference is strong (count 1) and lives as long as the environment.
        check_status!(unsafe { sys::napi_create_reference(env.raw(), func.raw(), 1, &mut func_ref) })?;
        let resource = Obj::new(env)?.value;
        let name = to_js(env, "redial-ws")?;
        let mut context = ptr::null_mut();
        // SAFETY: `resource` and `name` are handles of this call; `context` a valid out pointer.
        check_status!(unsafe { sys::napi_async_init(env.raw(), resource.0, name.0, &mut context) })?;
        Ok(CallbackTarget {
            func: func_ref,
            context,
        })
    }

    /// Calls the function with `args` from a native callback (not from JS). A throw is the
    /// process's uncaught exception, as for any I/O callback.
    pub fn call(&self, env: &Env, args: &[Value<'_>]) -> Result<()> {
        let mut func = ptr::null_mut();
        // SAFETY: `self.func` is a live reference of this environment (never deleted).
        check_status!(unsafe { sys::napi_get_reference_value(env.raw(), self.func, &mut func) })?;
        let mut recv = ptr::null_mut();
        // SAFETY: live `env`; `recv` is a valid out pointer. (`napi_make_callback` needs an object
        // as the receiver; the dispatcher does not use `this`.)
        check_status!(unsafe { sys::napi_get_global(env.raw(), &mut recv) })?;
        let mut result = ptr::null_mut();
        // SAFETY: `func`, `recv` and `args` are handles of this call (`Value` is a transparent
        // `napi_value`, so `args` is `args.len()` handles in a row); `self.context` was made by
        // `napi_async_init` in this environment and is never destroyed.
        let status = unsafe {
            sys::napi_make_callback(
                env.raw(),
                self.context,
                recv,
                func,
                args.len(),
                args.as_ptr().cast(),
                &mut result,
            )
        };
        if status == sys::Status::napi_pending_exception {
            let mut err = ptr::null_mut();
            // SAFETY: live `env` with a pending exception; `err` is a valid out pointer.
            check_status!(unsafe { sys::napi_get_and_clear_last_exception(env.raw(), &mut err) })?;
            // SAFETY: `err` is the handle just taken.
            return check_status!(unsafe { sys::napi_fatal_exception(env.raw(), err) });
        }
        check_status!(status)
    }
}

/// The libuv functions a socket watch needs, looked up in the running process: Node exports
/// them, and a runtime that does not (or a build that cannot look) reads on the tokio side only.
struct Uv {
    handle_size: HandleSize,
    poll_init_socket: PollInitSocket,
    poll_start: PollStart,
    poll_stop: HandleFn,
    idle_init: HandleInit,
    idle_start: IdleStart,
    idle_stop: HandleFn,
    close: Close,
    unref: Unref,
    metrics_info: MetricsInfo,
}

type HandleSize = unsafe extern "C" fn(c_int) -> usize;
type PollInitSocket = unsafe extern "C" fn(*mut c_void, *mut c_void, c_int) -> c_int;
type PollStart = unsafe extern "C" fn(*mut c_void, c_int, PollCb) -> c_int;
type HandleFn = unsafe extern "C" fn(*mut c_void) -> c_int;
type HandleInit = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
type IdleStart = unsafe extern "C" fn(*mut c_void, IdleCb) -> c_int;
type IdleCb = unsafe extern "C" fn(*mut c_void);
type Close = unsafe extern "C" fn(*mut c_void, CloseCb);
type Unref = unsafe extern "C" fn(*mut c_void);
type MetricsInfo = unsafe extern "C" fn(*mut c_void, *mut UvMetrics) -> c_int;
type PollCb = unsafe extern "C" fn(*mut c_void, c_int, c_int);
type CloseCb = unsafe extern "C" fn(*mut c_void);

/// libuv's `uv_metrics_t` (1.45+): three counters, then reserved words.
#[repr(C)]
struct UvMetrics {
    loop_count: u64,
    _events: u64,
    _events_waiting: u64,
    _reserved: [*mut u64; 13],
}

/// `UV_IDLE` and `UV_POLL` in libuv's `uv_handle_type`, `UV_READABLE` in `uv_poll_event`
/// (stable ABI).
const UV_IDLE: c_int = 6;
const UV_POLL: c_int = 8;
const UV_READABLE: c_int = 1;

#[cfg(unix)]
fn uv() -> Option<&'static Uv> {
    static UV: std::sync::OnceLock<Option<Uv>> = std::sync::OnceLock::new();
    UV.get_or_init(|| {
        let find = |name: &CStr| {
            // SAFETY: `name` is NUL-terminated; RTLD_DEFAULT searches the process's global scope.
            let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        // SAFETY: each symbol, when present, is libuv's public function of that name, whose
        // signature (libuv 1.x ABI) is the one it is transmuted to.
        unsafe {
            Some(Uv {
                handle_size: std::mem::transmute::<*mut c_void, HandleSize>(find(c"uv_handle_size")?),
                poll_init_socket: std::mem::transmute::<*mut c_void, PollInitSocket>(find(c"uv_poll_init_socket")?),
                poll_start: std::mem::transmute::<*mut c_void, PollStart>(find(c"uv_poll_start")?),
                poll_stop: std::mem::transmute::<*mut c_void, HandleFn>(find(c"uv_poll_stop")?),
                idle_init: std::mem::transmute::<*mut c_void, HandleInit>(find(c"uv_idle_init")?),
                idle_start: std::mem::transmute::<*mut c_void, IdleStart>(find(c"uv_idle_start")?),
                idle_stop: std::mem::transmute::<*mut c_void, HandleFn>(find(c"uv_idle_stop")?),
                close: std::mem::transmute::<*mut c_void, Close>(find(c"uv_close")?),
                unref: std::mem::transmute::<*mut c_void, Unref>(find(c"uv_unref")?),
                metrics_info: std::mem::transmute::<*mut c_void, MetricsInfo>(find(c"uv_metrics_info")?),
            })
        }
    })
    .as_ref()
}

#[cfg(not(unix))]
fn uv() -> Option<&'static Uv> {
    None
}

/// What a socket watch calls when the socket is readable: `(env, key, ready)`.
pub type OnReady = fn(&Env, u64, Ready);

/// A watch's report.
#[derive(Clone, Copy, Debug)]
pub struct Ready {
    /// The loop's iterations (`uv_metrics_info`'s `loop_count`): the same for every callback of
    /// one poll phase, however many rounds of events it takes (libuv polls again at once, up to
    /// 48 times, while a poll fills its 1,024 events, and its clock moves meanwhile).
    pub turn: u64,
    /// The socket has an error pending (a reset, `POLLERR`): libuv has stopped the watch and
    /// reports nothing more, so whoever reads must read up to the error without it.
    pub failed: bool,
    /// The callback for this report panicked: what it was reading is in an unknown state.
    pub panicked: bool,
}

/// What a watch's handle carries (its `data` field, the first of every libuv handle).
struct WatchCtx {
    env: sys::napi_env,
    key: u64,
    on_ready: OnReady,
    /// The handle's allocation, in 8-byte words.
    words: usize,
}

/// What a turn hook's handle carries.
struct HookCtx {
    env: sys::napi_env,
    run: OnTurn,
    words: usize,
}

thread_local! {
    /// Handles closed that libuv has not released yet, and the environment teardown waiting for
    /// them (an async cleanup hook: Node runs the loop until it is removed).
    static CLOSING: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    static TEARDOWN: std::cell::RefCell<Vec<sys::napi_async_cleanup_hook_handle>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// A zeroed, 8-aligned allocation for a libuv handle of type `kind`, and its size in words.
fn alloc_handle(uv: &Uv, kind: c_int) -> Option<(*mut c_void, usize)> {
    // SAFETY: `uv_handle_size` takes any handle type and only reads it.
    let size = unsafe { (uv.handle_size)(kind) };
    if size < 2 * std::mem::size_of::<*mut c_void>() {
        return None;
    }
    let words = size.div_ceil(8);
    Some((
        Box::into_raw(vec![0u64; words].into_boxed_slice()).cast::<c_void>(),
        words,
    ))
}

/// # Safety
/// `handle` came from `alloc_handle` with `words`, and libuv does not hold it (never initialised,
/// or released by its close callback).
unsafe fn free_handle(handle: *mut c_void, words: usize) {
    // SAFETY: the caller's contract; the allocation was a boxed slice of `words` u64.
    drop(unsafe { Box::from_raw(std::ptr::slice_from_raw_parts_mut(handle.cast::<u64>(), words)) });
}

/// This environment's loop.
fn uv_loop(env: &Env) -> Result<*mut c_void> {
    let mut uv_loop = ptr::null_mut();
    // SAFETY: live `env`; `uv_loop` is a valid out pointer.
    check_status!(unsafe { sys::napi_get_uv_event_loop(env.raw(), &mut uv_loop) })?;
    Ok(uv_loop.cast())
}

/// Closes an initialised handle of this thread's loop; `on_closed` frees it.
///
/// # Safety
/// `handle` is initialised, of this thread's loop, and not yet closed.
unsafe fn close_handle(uv: &Uv, handle: *mut c_void, on_closed: CloseCb) {
    CLOSING.with(|c| c.set(c.get() + 1));
    // SAFETY: the caller's contract.
    unsafe { (uv.close)(handle, on_closed) };
}

/// A closed handle was released: if it was the last and teardown waits, teardown may finish.
fn count_handle_released() {
    let left = CLOSING.with(|c| {
        c.set(c.get() - 1);
        c.get()
    });
    if left == 0 {
        for hook in TEARDOWN.with(|t| std::mem::take(&mut *t.borrow_mut())) {
            // SAFETY: the handle of a pending teardown, taken out of the list: removed once. Its
            // status is not checked: it fails only for a handle not pending, and nothing waits then.
            let _ = unsafe { sys::napi_remove_async_cleanup_hook(hook) };
        }
    }
}

/// A readiness watch on a socket in the JS thread's event loop. It never holds the loop open
/// (unref'd). Dropping it stops it at once, so the socket may be closed right after; libuv
/// releases the handle on a later turn.
pub struct SocketWatch {
    handle: *mut c_void,
    /// Keeps the descriptor open while libuv may poll it (dropped after `drop` closes the handle):
    /// a descriptor closed under a watch could be reused by another socket, and watched as this one.
    _socket: SharedSocket,
}

/// A connection's socket, shared by those that read, write and watch it: the descriptor closes
/// when the last of them lets go, so nothing here can reach a descriptor closed and reused.
#[cfg(unix)]
pub type SharedSocket = std::sync::Arc<StreamSocket>;
/// Where no socket can be read or watched from the JS thread (`SocketWatch::available` is false).
#[cfg(not(unix))]
#[derive(Clone)]
pub struct SharedSocket;

impl SocketWatch {
    /// Whether this runtime lets the addon watch sockets in its event loop.
    pub fn available() -> bool {
        uv().is_some()
    }

    /// Starts watching `socket` for readability: `on_ready(env, key, ready)` runs on the JS thread,
    /// inside a handle scope, on each turn of the loop that finds it readable (level-triggered).
    /// The watch keeps `socket` open while it exists. `None` where the runtime has no libuv to
    /// offer.
    pub fn start(env: &Env, socket: SharedSocket, key: u64, on_ready: OnReady) -> Result<Option<Self>> {
        let Some(uv) = uv() else { return Ok(None) };
        let uv_loop = uv_loop(env)?;
        let Some((handle, words)) = alloc_handle(uv, UV_POLL) else {
            return Ok(None);
        };
        // SAFETY: `uv_loop` is this environment's loop (this is its thread); `handle` is a zeroed
        // allocation of `uv_handle_size(UV_POLL)` bytes; `socket` is open: the watch made below
        // keeps it until the handle is closed (and without one, it is open for this call).
        let rc = unsafe { (uv.poll_init_socket)(uv_loop, handle, raw_fd(&socket)) };
        if rc != 0 {
            // SAFETY: just allocated; libuv did not take it.
            unsafe { free_handle(handle, words) };
            return Err(Error::new(
                Status::GenericFailure,
                format!("uv_poll_init_socket failed ({rc})"),
            ));
        }
        let ctx = Box::into_raw(Box::new(WatchCtx {
            env: env.raw(),
            key,
            on_ready,
            words,
        }));
        // SAFETY: `handle` is an initialised uv_poll_t; its first field is `void* data`, which
        // libuv leaves to the user. From here the handle is only freed by `on_closed`.
        unsafe {
            *handle.cast::<*mut c_void>() = ctx.cast();
            (uv.unref)(handle);
        }
        let watch = SocketWatch {
            handle,
            _socket: socket,
        };
        if !watch.resume() {
            return Err(Error::new(Status::GenericFailure, "uv_poll_start failed"));
        }
        Ok(Some(watch))
    }

    /// Stops watching until `resume` (the socket leaves the loop's poll set at once).
    pub fn pause(&self) {
        if let Some(uv) = uv() {
            // SAFETY: an initialised, open uv_poll_t of this thread's loop (closed only by drop).
            // Its result is not read: uv_poll_stop always returns 0.
            unsafe { (uv.poll_stop)(self.handle) };
        }
    }

    /// Watches again after `pause` (or for the first time). False if libuv refused.
    pub fn resume(&self) -> bool {
        let Some(uv) = uv() else { return false };
        // SAFETY: as in `pause`; `on_poll` matches uv_poll_cb.
        unsafe { (uv.poll_start)(self.handle, UV_READABLE, on_poll) == 0 }
    }
}

impl Drop for SocketWatch {
    fn drop(&mut self) {
        let Some(uv) = uv() else { return };
        // SAFETY: `self.handle` is an initialised uv_poll_t of this thread's loop, not yet
        // closed (only this drop closes it). Stopping takes the socket out of the loop's poll set
        // at once (uv_poll_stop always returns 0); `on_closed` frees the memory once libuv is done
        // with it.
        unsafe {
            (uv.poll_stop)(self.handle);
            close_handle(uv, self.handle, on_closed::<WatchCtx>);
        }
    }
}

/// The number of the current turn of this environment's event loop (`loop_count`, below), where
/// the runtime runs libuv.
pub fn current_turn(env: &Env) -> Option<u64> {
    uv()?;
    uv_loop(env).ok().filter(|l| !l.is_null()).map(loop_count)
}

/// The iterations `uv_loop` has begun (its poll phases), 0 without libuv.
fn loop_count(uv_loop: *mut c_void) -> u64 {
    let Some(uv) = uv() else { return 0 };
    let mut metrics = UvMetrics {
        loop_count: 0,
        _events: 0,
        _events_waiting: 0,
        _reserved: [ptr::null_mut(); 13],
    };
    // SAFETY: `uv_loop` is a live loop (the caller's handle's); `uv_metrics_info` only fills
    // `metrics`, a valid `uv_metrics_t`, and cannot fail for a live loop.
    unsafe { (uv.metrics_info)(uv_loop, &mut metrics) };
    metrics.loop_count
}

/// # Safety
/// Called by libuv on the loop's thread with a handle `SocketWatch::start` made, not yet closed.
unsafe extern "C" fn on_poll(handle: *mut c_void, status: c_int, _events: c_int) {
    // SAFETY: `data` holds the `WatchCtx` set in `start`, freed only by `on_closed`.
    let ctx = unsafe { &*(*handle.cast::<*mut WatchCtx>()) };
    let (on_ready, key) = (ctx.on_ready, ctx.key);
    // libuv reports `POLLERR` as a negative status, having stopped the handle (`uv__poll_io`).
    let failed = status < 0;
    let ready = |turn, panicked| Ready { turn, failed, panicked };
    // SAFETY: the watch's handle, on its loop's thread; the watch is closed before `env` goes.
    let done = unsafe { call_in_scope(ctx.env, handle, |env, turn| on_ready(env, key, ready(turn, false))) };
    if !done {
        // Told, so that the socket is not left watched with nobody able to read it.
        // SAFETY: as above; the context lives until `on_closed`, even if the read closed the watch.
        let _ = unsafe { call_in_scope(ctx.env, handle, |env, turn| on_ready(env, key, ready(turn, true))) };
    }
}

/// Runs `f(env, loop_count)` for a libuv callback of `handle`, inside a handle scope; a panic
/// must not unwind into libuv. False when `f` panicked (or could not run).
///
/// # Safety
/// `handle` is an initialised handle of `env`'s loop, not yet released by its close callback (a
/// first call may have closed it: it stays valid until `on_closed`), and this is that loop's thread.
unsafe fn call_in_scope(env: sys::napi_env, handle: *mut c_void, f: impl FnOnce(&Env, u64)) -> bool {
    let mut scope = ptr::null_mut();
    // SAFETY: `env` is live (the caller's contract); `scope` is a valid out pointer.
    if unsafe { sys::napi_open_handle_scope(env, &mut scope) } != sys::Status::napi_ok {
        return false;
    }
    // SAFETY: `loop` is the second field of every libuv handle (after `data`), set by init; the
    // loop outlives its handles.
    let count = loop_count(unsafe { *handle.cast::<*mut c_void>().add(1) });
    let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&Env::from_raw(env), count))).is_ok();
    // SAFETY: the scope opened above, on the same thread. Its status is not checked: it fails
    // only for a scope that is not the innermost, and `f` opens none it leaves open.
    let _ = unsafe { sys::napi_close_handle_scope(env, scope) };
    done
}

/// What a handle's `data` points to: it knows the handle's allocation, for `on_closed` to free.
trait HandleCtx {
    fn words(&self) -> usize;
}

impl HandleCtx for WatchCtx {
    fn words(&self) -> usize {
        self.words
    }
}

impl HandleCtx for HookCtx {
    fn words(&self) -> usize {
        self.words
    }
}

/// # Safety
/// Called by libuv once, on the loop's thread, after `uv_close` of a handle whose `data` is a
/// boxed `C`.
unsafe extern "C" fn on_closed<C: HandleCtx>(handle: *mut c_void) {
    // SAFETY: libuv is done with the handle: its context and memory are ours to free, once.
    unsafe {
        let ctx = Box::from_raw(*handle.cast::<*mut C>());
        free_handle(handle, ctx.words());
    }
    count_handle_released();
}

/// What a turn hook calls: `(env, turn)`, `turn` being the number the coming poll phase has in
/// `OnReady`.
pub type OnTurn = fn(&Env, u64);

/// Runs a function once per turn of the JS thread's loop, before its poll phase, while armed
/// (a libuv idle handle: while it is armed the loop does not wait in its poll, as for a
/// `setImmediate`). Unref'd: it never holds the loop. Dropping it closes the handle.
pub struct TurnHook {
    handle: *mut c_void,
}

impl TurnHook {
    /// `None` where the runtime has no libuv to offer.
    pub fn new(env: &Env, run: OnTurn) -> Result<Option<Self>> {
        let Some(uv) = uv() else { return Ok(None) };
        let uv_loop = uv_loop(env)?;
        let Some((handle, words)) = alloc_handle(uv, UV_IDLE) else {
            return Ok(None);
        };
        // SAFETY: this environment's loop, on its thread; a zeroed allocation of the idle
        // handle's size.
        let rc = unsafe { (uv.idle_init)(uv_loop, handle) };
        if rc != 0 {
            // SAFETY: just allocated; libuv did not take it.
            unsafe { free_handle(handle, words) };
            return Err(Error::new(
                Status::GenericFailure,
                format!("uv_idle_init failed ({rc})"),
            ));
        }
        let ctx = Box::into_raw(Box::new(HookCtx {
            env: env.raw(),
            run,
            words,
        }));
        // SAFETY: an initialised uv_idle_t; `data` is the user's. Freed only by `on_closed`.
        unsafe {
            *handle.cast::<*mut c_void>() = ctx.cast();
            (uv.unref)(handle);
        }
        Ok(Some(TurnHook { handle }))
    }

    /// Runs the function on each turn from the next on, until `disarm`. False if libuv refused.
    pub fn arm(&self) -> bool {
        let Some(uv) = uv() else { return false };
        // SAFETY: an initialised, open uv_idle_t of this thread's loop; `on_turn` matches
        // uv_idle_cb. Starting an active handle does nothing.
        unsafe { (uv.idle_start)(self.handle, on_turn) == 0 }
    }

    pub fn disarm(&self) {
        if let Some(uv) = uv() {
            // SAFETY: as in `arm`; stopping a stopped handle does nothing. uv_idle_stop always
            // returns 0.
            unsafe { (uv.idle_stop)(self.handle) };
        }
    }
}

impl Drop for TurnHook {
    fn drop(&mut self) {
        let Some(uv) = uv() else { return };
        // SAFETY: initialised, of this thread's loop, closed only here; `on_closed` frees it.
        unsafe { close_handle(uv, self.handle, on_closed::<HookCtx>) };
    }
}

/// # Safety
/// Called by libuv on the loop's thread with an armed `TurnHook`'s handle, not yet closed.
unsafe extern "C" fn on_turn(handle: *mut c_void) {
    // SAFETY: `data` holds the `HookCtx` set in `new`, freed only by `on_closed`.
    let ctx = unsafe { &*(*handle.cast::<*mut HookCtx>()) };
    let run = ctx.run;
    // SAFETY: the hook's handle, on its loop's thread; the hook is closed before `env` goes. The
    // idle phase comes before the poll phase counts its iteration: this turn's poll will be the
    // next number.
    let _ = unsafe { call_in_scope(ctx.env, handle, |env, count| run(env, count + 1)) };
}

/// At environment teardown, `release()` drops every watch; Node then runs the loop until libuv
/// has released their handles (a worker's loop must have none left when it closes).
pub fn on_teardown(env: &Env, release: fn()) -> Result<()> {
    /// # Safety
    /// Called by Node once, on the JS thread, at environment teardown.
    unsafe extern "C" fn hook(handle: sys::napi_async_cleanup_hook_handle, arg: *mut c_void) {
        // SAFETY: `arg` is the `fn()` given below.
        let release: fn() = unsafe { std::mem::transmute::<*mut c_void, fn()>(arg) };
        let _ = std::panic::catch_unwind(release);
        if CLOSING.with(|c| c.get()) == 0 {
            // SAFETY: the handle Node passed, removed once. Its status is not checked: it fails only
            // for a handle not pending, and nothing waits then.
            let _ = unsafe { sys::napi_remove_async_cleanup_hook(handle) };
        } else {
            TEARDOWN.with(|t| t.borrow_mut().push(handle));
        }
    }
    let mut handle = ptr::null_mut();
    // SAFETY: live `env`; `release` is a plain function pointer, valid for the whole process.
    check_status!(unsafe {
        sys::napi_add_async_cleanup_hook(env.raw(), Some(hook), release as *const () as *mut c_void, &mut handle)
    })
}

/// The descriptor of a socket, for a call made while `socket` (which owns it) is borrowed.
#[cfg(unix)]
fn raw_fd(socket: &StreamSocket) -> c_int {
    use std::os::fd::AsRawFd;
    socket.as_raw_fd()
}

#[cfg(not(unix))]
fn raw_fd(_socket: &SharedSocket) -> c_int {
    -1
}

/// Reads what the socket has now into `buf`'s unfilled part, without waiting: `WouldBlock` when
/// it has nothing.
#[cfg(unix)]
pub fn recv_now(socket: &StreamSocket, buf: &mut tokio::io::ReadBuf<'_>) -> std::io::Result<usize> {
    loop {
        // SAFETY: the bytes are only written, by `recv`, and marked filled only as far as it wrote.
        let spare = unsafe { buf.unfilled_mut() };
        // SAFETY: `spare` is valid for writes of its length; the descriptor is open, owned by
        // `socket`, which is borrowed for the call.
        let n = unsafe {
            libc::recv(
                raw_fd(socket),
                spare.as_mut_ptr().cast(),
                spare.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            let n = n as usize;
            // SAFETY: `recv` initialised the first `n` bytes of the unfilled part.
            unsafe { buf.assume_init(n) };
            buf.advance(n);
            return Ok(n);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

#[cfg(not(unix))]
pub fn recv_now(_socket: &SharedSocket, _buf: &mut tokio::io::ReadBuf<'_>) -> std::io::Result<usize> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// Whether `socket` holds anything not read yet (bytes, or the peer's end), without taking it.
#[cfg(unix)]
pub fn has_unread(socket: &StreamSocket) -> bool {
    let mut byte = 0u8;
    // SAFETY: `byte` is valid for a write of one byte; the descriptor is open, owned by `socket`,
    // which is borrowed for the call. `MSG_PEEK` leaves what it sees on the socket.
    let n = unsafe {
        libc::recv(
            raw_fd(socket),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n >= 0
}

#[cfg(not(unix))]
pub fn has_unread(_socket: &SharedSocket) -> bool {
    false
}

/// A connected stream socket that owns its descriptor: TCP, or a Unix domain socket (`ws+unix:`).
#[cfg(unix)]
pub enum StreamSocket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

#[cfg(unix)]
impl StreamSocket {
    /// A write of what the socket takes now (non-blocking: `WouldBlock` when full).
    pub fn write(&self, buf: &[u8]) -> std::io::Result<usize> {
        use std::io::Write;
        match self {
            StreamSocket::Tcp(s) => (&*s).write(buf),
            StreamSocket::Unix(s) => (&*s).write(buf),
        }
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
        match self {
            StreamSocket::Tcp(s) => s.shutdown(how),
            StreamSocket::Unix(s) => s.shutdown(how),
        }
    }
}

#[cfg(unix)]
impl std::os::fd::AsRawFd for StreamSocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        match self {
            StreamSocket::Tcp(s) => s.as_raw_fd(),
            StreamSocket::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// A socket registered with a reactor (`register_socket`). It gives no `&mut` to the socket, so
/// that the registered descriptor cannot be swapped for another while registered.
#[cfg(unix)]
pub struct RegisteredSocket(tokio::io::unix::AsyncFd<SharedSocket>);

#[cfg(unix)]
impl RegisteredSocket {
    pub fn get_ref(&self) -> &SharedSocket {
        self.0.get_ref()
    }

    /// Deregisters it: the socket, for another watch.
    pub fn into_inner(self) -> SharedSocket {
        self.0.into_inner()
    }

    pub fn poll_read_ready<'a>(
        &'a self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'a, SharedSocket>>> {
        self.0.poll_read_ready(cx)
    }

    pub fn poll_write_ready<'a>(
        &'a self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<tokio::io::unix::AsyncFdReadyGuard<'a, SharedSocket>>> {
        self.0.poll_write_ready(cx)
    }
}

/// Registers a socket with `runtime`'s reactor for `interest` only (from any thread). On failure
/// the socket comes back with the error.
#[cfg(unix)]
pub fn register_socket(
    runtime: &tokio::runtime::Handle,
    socket: SharedSocket,
    interest: tokio::io::Interest,
) -> std::result::Result<RegisteredSocket, (SharedSocket, std::io::Error)> {
    let _in_runtime = runtime.enter();
    // SAFETY: a `StreamSocket` owns its descriptor (either std stream does), and the `AsyncFd`
    // holds one of its shares (or hands it back in the error): open until the `AsyncFd` is
    // dropped, and always the same (`RegisteredSocket` lends it only shared).
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(socket, interest) }
        .map(RegisteredSocket)
        .map_err(|e| e.into_parts())
}

/// Shuts both directions of `socket` down (what closing it would tell the peer), so that a
/// watch on it sees it readable at once. A failure (already shut) changes nothing.
#[cfg(unix)]
pub fn shutdown(socket: &StreamSocket) {
    let _ = socket.shutdown(std::net::Shutdown::Both);
}

#[cfg(not(unix))]
pub fn shutdown(_socket: &SharedSocket) {}
