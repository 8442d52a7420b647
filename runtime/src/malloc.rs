//! glibc malloc tuning applied before any thread starts.
//!
//! glibc gives each thread that contends for the heap its own arena, up to eight per core, and
//! returns an arena's free memory to the system only from its top. A long-running service with
//! a thread pool (tokio's blocking threads come and go; RocksDB and librdkafka run their own
//! threads) therefore spreads its heap over many arenas whose free space stays resident: the
//! 20-minute soak saw the reporter's RSS creep about 0.6 MiB a minute that way. Two arenas keep
//! contention low on the few cores this runs on and stop that creep.
//!
//! An operator's `MALLOC_ARENA_MAX` (read by glibc itself at start) wins: the cap is applied
//! only when that variable is unset. Other allocators (the projector's mimalloc for Rust
//! allocations) are unaffected; RocksDB's C++ allocations still go through glibc.

/// Arenas when `MALLOC_ARENA_MAX` is not set.
pub const DEFAULT_ARENAS: i32 = 2;

/// Caps glibc's arenas at [`DEFAULT_ARENAS`] unless `MALLOC_ARENA_MAX` is set. Call first thing
/// in `main`, before any thread is spawned. Returns the cap applied, if any.
pub fn limit_arenas() -> Option<i32> {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return None;
    }
    set_arena_max(DEFAULT_ARENAS).then_some(DEFAULT_ARENAS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: i32) -> bool {
    // SAFETY: `mallopt` takes two integers and touches only malloc's own parameters; with
    // M_ARENA_MAX it is documented as safe to call at any time (it only limits arenas created
    // later). No pointer is passed or returned.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cap_is_applied_unless_the_operator_set_one() {
        let applied = super::limit_arenas();
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
            assert_eq!(applied, None);
        } else if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert_eq!(applied, Some(super::DEFAULT_ARENAS));
        }
    }
}
