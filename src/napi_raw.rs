//! The addon's raw N-API calls, each behind a safe function: every `unsafe` block of the
//! boundary lives here, states what it relies on, and every status is checked.
//!
//! Why raw calls at all, where napi-rs has safe ones: a client's native state is wrapped onto
//! the JS client object itself (no second JS object or reference-map entry per client), the
//! reference to that object switches between weak and strong, and the thread-safe function is
//! ref'd and unref'd at run time; napi-rs has no safe form of these. Event batches are built
//! from raw handles so that one batch costs one array, not a napi-rs object per event.
//!
//! All functions take the `Env` of the current call on the JS thread, and the `sys::napi_value`
//! handles they take or return are valid until that call returns (N-API's handle scopes).

use std::ffi::{c_void, CStr};
use std::ptr;

use napi::bindgen_prelude::*;
use napi::sys;

/// A JS value handle made by this module during the current call. Only this module makes them,
/// and callers use them before the call returns (they are not `Send`, and nothing stores them).
#[derive(Clone, Copy)]
pub struct Value(sys::napi_value);

/// What the event dispatcher's thread-safe function hands to JS: the batch array of one call.
pub struct RawValue(sys::napi_value);

impl From<Value> for RawValue {
    fn from(v: Value) -> Self {
        RawValue(v.0)
    }
}

impl ToNapiValue for RawValue {
    unsafe fn to_napi_value(_env: sys::napi_env, val: Self) -> Result<sys::napi_value> {
        Ok(val.0)
    }
}

/// The thread-safe function that carries event batches to JS: weak (it never holds the event
/// loop by itself; see `set_tsfn_ref`), its queue unbounded (one call is pending at a time).
pub type Tsfn = napi::threadsafe_function::ThreadsafeFunction<(), (), RawValue, Status, false, true, 0>;

/// `v` as a JS value.
pub fn to_js<V: ToNapiValue>(env: &Env, v: V) -> Result<Value> {
    // SAFETY: `env` is the live environment of this call on the JS thread.
    unsafe { V::to_napi_value(env.raw(), v) }.map(Value)
}

pub fn undefined(env: &Env) -> Result<Value> {
    let mut v = ptr::null_mut();
    // SAFETY: live `env`; `v` is a valid out pointer.
    check_status!(unsafe { sys::napi_get_undefined(env.raw(), &mut v) })?;
    Ok(Value(v))
}

/// A JS array of `values`.
pub fn array(env: &Env, values: Vec<Value>) -> Result<Value> {
    let mut array = ptr::null_mut();
    // SAFETY: live `env`; `array` is a valid out pointer.
    check_status!(unsafe { sys::napi_create_array_with_length(env.raw(), values.len(), &mut array) })?;
    for (i, v) in values.into_iter().enumerate() {
        let i = u32::try_from(i).map_err(|_| Error::new(Status::GenericFailure, "array too long"))?;
        // SAFETY: `array` and `v` are handles of this call.
        check_status!(unsafe { sys::napi_set_element(env.raw(), array, i, v.0) })?;
    }
    Ok(Value(array))
}

/// A plain JS object under construction.
pub struct Obj<'e> {
    env: &'e Env,
    pub value: Value,
}

impl<'e> Obj<'e> {
    pub fn new(env: &'e Env) -> Result<Self> {
        let mut value = ptr::null_mut();
        // SAFETY: live `env`; `value` is a valid out pointer.
        check_status!(unsafe { sys::napi_create_object(env.raw(), &mut value) })?;
        Ok(Obj {
            env,
            value: Value(value),
        })
    }

    pub fn set<V: ToNapiValue>(&mut self, key: &CStr, v: V) -> Result<()> {
        let v = to_js(self.env, v)?;
        self.set_value(key, v)
    }

    pub fn set_value(&mut self, key: &CStr, v: Value) -> Result<()> {
        // SAFETY: `self.value` and `v` are handles of this call; `key` is NUL-terminated.
        check_status!(unsafe { sys::napi_set_named_property(self.env.raw(), self.value.0, key.as_ptr(), v.0) })
    }
}

/// A Node Buffer holding a copy of `data`.
pub fn buffer_copy(env: &Env, data: &[u8]) -> Result<Value> {
    let mut v = ptr::null_mut();
    let mut out = ptr::null_mut();
    // SAFETY: `data` is valid for `data.len()` bytes for the duration of the call (it is copied).
    check_status!(unsafe {
        sys::napi_create_buffer_copy(env.raw(), data.len(), data.as_ptr().cast(), &mut out, &mut v)
    })?;
    Ok(Value(v))
}

/// A Node Buffer over memory that Rust keeps owning (`data` is dropped by the finalizer): no
/// copy. Falls back to a copy where the runtime refuses external buffers. V8 is told about the
/// memory while the Buffer holds it, so that garbage Buffers are collected as promptly as
/// Node's own (a stream of large messages would otherwise pile up between collections).
pub fn external_buffer<T: AsRef<[u8]> + 'static>(env: &Env, data: T) -> Result<Value> {
    /// # Safety
    /// Called by Node once, on the JS thread, with the `hint` given below.
    unsafe extern "C" fn release<T: AsRef<[u8]>>(env: sys::napi_env, _data: *mut c_void, hint: *mut c_void) {
        // SAFETY: `hint` is the `Box<T>` leaked below; Node calls this once.
        let data = unsafe { Box::from_raw(hint.cast::<T>()) };
        let len = i64::try_from((*data).as_ref().len()).unwrap_or(i64::MAX);
        drop(data);
        let mut total = 0;
        // SAFETY: `env` is the live environment Node calls the finalizer with. A failure only
        // leaves V8's estimate high, which is harmless.
        let _ = unsafe { sys::napi_adjust_external_memory(env, -len, &mut total) };
    }
    let boxed = Box::new(data);
    let (start, len) = {
        let bytes = (*boxed).as_ref();
        (bytes.as_ptr(), bytes.len())
    };
    if len == 0 {
        return buffer_copy(env, &[]);
    }
    let hint = Box::into_raw(boxed);
    let mut v = ptr::null_mut();
    // SAFETY: `start..start + len` is the heap memory of `*hint`, which stays put (a `T` that owns
    // its bytes on the heap, moved only as a box pointer) until `release` drops it.
    let status = unsafe {
        sys::napi_create_external_buffer(
            env.raw(),
            len,
            start.cast_mut().cast(),
            Some(release::<T>),
            hint.cast(),
            &mut v,
        )
    };
    match status {
        sys::Status::napi_ok => {
            let mut total = 0;
            let len = i64::try_from(len).unwrap_or(i64::MAX);
            // SAFETY: live `env`; `total` is a valid out pointer. Undone by `release`; a failure
            // only leaves V8's estimate low, as it was before this call, so the Buffer stands.
            let _ = unsafe { sys::napi_adjust_external_memory(env.raw(), len, &mut total) };
            Ok(Value(v))
        }
        sys::Status::napi_no_external_buffers_allowed => {
            // SAFETY: refused before Node took ownership: `release` has not run and never will.
            let data = unsafe { Box::from_raw(hint) };
            buffer_copy(env, (*data).as_ref())
        }
        // Any other failure may come after Node already ran `release` (it does for a length over
        // the Buffer limit), so `hint` is no longer ours to free. `maxPayload` is capped below that
        // limit, so this is not expected; at worst the data leaks, it is never freed twice.
        status => check_status!(status, "cannot create a Buffer of {len} bytes").map(|()| Value(v)),
    }
}

/// The length of a JS array.
pub fn array_len(env: &Env, array: Value) -> Result<u32> {
    let mut len = 0;
    // SAFETY: `array` is a handle of this call; `len` is a valid out pointer.
    check_status!(unsafe { sys::napi_get_array_length(env.raw(), array.0, &mut len) })?;
    Ok(len)
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
    pub fn get(&self, env: &Env) -> Result<Option<Value>> {
        let mut v = ptr::null_mut();
        // SAFETY: as in `set_strong`.
        check_status!(unsafe { sys::napi_get_reference_value(env.raw(), self.0, &mut v) })?;
        Ok((!v.is_null()).then_some(Value(v)))
    }

    pub fn delete(self, env: &Env) -> Result<()> {
        // SAFETY: `self.0` is live and, since `self` is consumed, never used again.
        check_status!(unsafe { sys::napi_delete_reference(env.raw(), self.0) })
    }
}

/// Refs (the event loop waits for it) or unrefs a thread-safe function.
pub fn set_tsfn_ref(env: &Env, tsfn: &Tsfn, on: bool) -> Result<()> {
    // SAFETY: `tsfn` is borrowed, so the function is not released during the call.
    check_status!(unsafe {
        if on {
            sys::napi_ref_threadsafe_function(env.raw(), tsfn.raw())
        } else {
            sys::napi_unref_threadsafe_function(env.raw(), tsfn.raw())
        }
    })
}

/// Native state that a JS object carries (`wrap`): freed by `finalize` when the object is collected.
/// A type tag (N-API 8): two random 64-bit halves, `lower` and `upper`.
pub type TypeTag = sys::napi_type_tag;

pub trait Wrapped: Sized + 'static {
    /// Tells this type's objects from every other wrapped object (another addon's, napi-rs's).
    const TAG: TypeTag;
    fn finalize(self: Box<Self>, env: Env);
}

/// Gives `object` its native state, tagged with `T::TAG`.
pub fn wrap<T: Wrapped>(env: &Env, object: &Object<'_>, state: T) -> Result<()> {
    /// # Safety
    /// Called by Node once, on the JS thread, with the pointer wrapped below.
    unsafe extern "C" fn finalize<T: Wrapped>(env: sys::napi_env, data: *mut c_void, _hint: *mut c_void) {
        // SAFETY: `data` is the `Box<T>` given to `napi_wrap`; Node calls this finalizer once,
        // after which nothing can reach the object.
        let state = unsafe { Box::from_raw(data.cast::<T>()) };
        state.finalize(Env::from_raw(env));
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
    // SAFETY: `object` is a live handle of this call; the tag is a constant.
    check_status!(unsafe { sys::napi_type_tag_object(env.raw(), object.raw(), &T::TAG) })
}

/// The native state `wrap` gave `object`; an error for any object that is not tagged `T::TAG`.
/// JS-thread only, and never held across calls.
pub fn unwrap<'a, T: Wrapped>(env: &Env, object: &Object<'_>) -> Result<&'a mut T> {
    let foreign = || Error::new(Status::InvalidArg, "the object is not a redial-ws client");
    let mut tagged = false;
    // SAFETY: `object` is a live handle of this call; `tagged` is a valid out pointer.
    check_status!(unsafe { sys::napi_check_object_type_tag(env.raw(), object.raw(), &T::TAG, &mut tagged) })?;
    if !tagged {
        return Err(foreign());
    }
    let mut data = ptr::null_mut();
    // SAFETY: as above; `data` receives the pointer given to `napi_wrap`.
    check_status!(unsafe { sys::napi_unwrap(env.raw(), object.raw(), &mut data) }).map_err(|_| foreign())?;
    if data.is_null() {
        return Err(foreign());
    }
    // SAFETY: only `wrap::<T>` tags with `T::TAG`, and only an object it has wrapped with a
    // `Box<T>`, so `data` is that box's pointer. It lives until the object's finalizer, which
    // cannot run while JS calls a function with the object. Only the JS thread uses it and no
    // reference outlives the call, so the `&mut` is unique.
    Ok(unsafe { &mut *data.cast::<T>() })
}
