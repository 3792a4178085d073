//! One value per key while anything holds it: values that are costly to build and equal for equal
//! keys (a client's configuration, a TLS config) are built once and shared. A key is forgotten
//! with the last holder of its value, not later: it may spell a secret (a password, a private key).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// A shared value and the key it is known by.
pub struct Interned<K: ?Sized + Hash + Eq + 'static, T: 'static> {
    value: T,
    key: Arc<K>,
    table: &'static InternTable<K, T>,
}

impl<K: ?Sized + Hash + Eq, T> Deref for Interned<K, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

/// The value only: the key may spell a secret.
impl<K: ?Sized + Hash + Eq, T: std::fmt::Debug> std::fmt::Debug for Interned<K, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.value.fmt(f)
    }
}

impl<K: ?Sized + Hash + Eq, T> Drop for Interned<K, T> {
    fn drop(&mut self) {
        self.table.forget(&self.key);
    }
}

impl<K: ?Sized + Hash + Eq, T> Default for InternTable<K, T> {
    fn default() -> Self {
        Self::new()
    }
}

type Entries<K, T> = HashMap<Arc<K>, Weak<Interned<K, T>>>;

/// The values alive, by key (`Weak`: a value goes with its last holder).
pub struct InternTable<K: ?Sized + Hash + Eq + 'static, T: 'static>(Mutex<Option<Entries<K, T>>>);

impl<K: ?Sized + Hash + Eq, T> InternTable<K, T> {
    pub const fn new() -> Self {
        InternTable(Mutex::new(None))
    }

    fn lock(&self) -> MutexGuard<'_, Option<Entries<K, T>>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The live value for `key`, if any.
    pub fn get<Q: ?Sized + Hash + Eq>(&self, key: &Q) -> Option<Arc<Interned<K, T>>>
    where
        Arc<K>: Borrow<Q>,
    {
        self.lock().as_ref()?.get(key)?.upgrade()
    }

    /// `value`, known by `key` from now on. (Two threads that make a value for one key at once
    /// both keep theirs; the table knows the last.)
    pub fn insert(&'static self, key: Arc<K>, value: T) -> Arc<Interned<K, T>> {
        let value = Arc::new(Interned {
            value,
            key: key.clone(),
            table: self,
        });
        let replaced = self
            .lock()
            .get_or_insert_with(HashMap::new)
            .insert(key, Arc::downgrade(&value));
        // Dropped without the lock held (though dropping a `Weak` never drops its value).
        drop(replaced);
        value
    }

    /// The number of keys known: live values, and any whose last holder is dropping it.
    pub fn known_keys(&self) -> usize {
        self.lock().as_ref().map_or(0, HashMap::len)
    }

    /// Called as the last holder of `key`'s value drops it. The entry may be another value's by
    /// now, made once this one could no longer be had: that one stays.
    fn forget(&self, key: &K) {
        let mut guard = self.lock();
        if let Some(map) = guard.as_mut() {
            if map.get(key).is_some_and(|value| value.strong_count() == 0) {
                map.remove(key);
            }
            if map.is_empty() {
                // The table's room goes too.
                *guard = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_keys_share_a_value_and_a_key_goes_with_its_last_holder() {
        static TABLE: InternTable<str, String> = InternTable::new();
        let a = TABLE.insert(Arc::from("secret-a"), "one".to_owned());
        let b = TABLE.get("secret-a").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(b.as_str(), "one");
        let c = TABLE.insert(Arc::from("secret-b"), "two".to_owned());
        assert_eq!(TABLE.known_keys(), 2);
        drop(a);
        assert_eq!(TABLE.known_keys(), 2, "a holder is left");
        drop(b);
        assert_eq!(TABLE.known_keys(), 1, "the key is forgotten with its last holder");
        assert!(TABLE.get("secret-a").is_none());
        assert_eq!(TABLE.get("secret-b").unwrap().as_str(), "two");
        drop(c);
        assert_eq!(TABLE.known_keys(), 0);
    }

    #[test]
    fn a_key_given_a_new_value_while_its_old_one_drops_keeps_the_new_one() {
        static TABLE: InternTable<str, u32> = InternTable::new();
        let old = TABLE.insert(Arc::from("k"), 1);
        let old_gone = Arc::downgrade(&old);
        // Its last holder is dropping the old value when a new one is made for the key (the old
        // one can no longer be had): the old one's forgetting leaves the new one's entry.
        let new = TABLE.insert(Arc::from("k"), 2);
        drop(old);
        assert!(old_gone.upgrade().is_none());
        assert_eq!(TABLE.known_keys(), 1);
        assert_eq!(**TABLE.get("k").unwrap(), 2);
        drop(new);
        assert_eq!(TABLE.known_keys(), 0);
    }
}
