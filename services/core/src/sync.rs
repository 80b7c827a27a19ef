//! Taking std locks, with tern's one policy on poisoning.
//!
//! A lock is poisoned when a thread panicked while holding it, that is in
//! the middle of an update: the state behind it may be half-changed and
//! break the invariants the rest of the code relies on. Rather than serve
//! from it (wrong routes, lost counts, a cache that lies), we fail loudly:
//! taking a poisoned lock panics, at the caller's location. These helpers
//! are the only place outside tests allowed to `expect`; every
//! `Mutex`/`RwLock` in the workspace is taken through them.

use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`; panics if it is poisoned (see the module docs for why).
#[track_caller]
#[allow(clippy::expect_used)] // why: the poisoning policy above, in one place.
pub fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock()
        .expect("lock poisoned: a thread panicked mid-update")
}

/// Takes `l` for reading; panics if it is poisoned (see the module docs).
#[track_caller]
#[allow(clippy::expect_used)] // why: the poisoning policy above, in one place.
pub fn read<T: ?Sized>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read()
        .expect("lock poisoned: a thread panicked mid-update")
}

/// Takes `l` for writing; panics if it is poisoned (see the module docs).
#[track_caller]
#[allow(clippy::expect_used)] // why: the poisoning policy above, in one place.
pub fn write<T: ?Sized>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write()
        .expect("lock poisoned: a thread panicked mid-update")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_panics_at_the_caller() {
        let m = std::sync::Arc::new(Mutex::new(0));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _guard = lock(&m2);
            panic!("mid-update");
        })
        .join();
        let caught = std::panic::catch_unwind(|| *lock(&m));
        assert!(caught.is_err());
    }

    #[test]
    fn healthy_locks_are_taken() {
        let m = Mutex::new(1);
        *lock(&m) += 1;
        assert_eq!(*lock(&m), 2);
        let l = RwLock::new(1);
        *write(&l) += 1;
        assert_eq!(*read(&l), 2);
    }
}
