//! Threads: one rayon pool owned by sftfast, rebuilt after `fork`, plus a cancel flag.
//!
//! Rayon's global pool does not survive `fork` (the child has the pool's bookkeeping but none of
//! its threads), and PyTorch DataLoader workers are forked. We therefore keep our own pool keyed
//! by the process id: a call in a new process builds a new pool. A forked child defaults to one
//! thread (many workers already share the cores). The thread count never changes results: every
//! parallel step writes into row-indexed slots and reduces in row order.
//!
//! Cancellation: the Python layer sets [`request_cancel`] on Ctrl-C; long loops poll
//! [`cancelled`] once per chunk and return [`SftError::Interrupted`].

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::ThreadPool;

use crate::error::{Result, SftError};

static CANCEL: AtomicBool = AtomicBool::new(false);
/// 0 = not set by the user (use the default).
static REQUESTED_THREADS: AtomicUsize = AtomicUsize::new(0);
static POOL: Mutex<Option<(u32, usize, Arc<ThreadPool>)>> = Mutex::new(None);
static FIRST_PID: Mutex<Option<u32>> = Mutex::new(None);

/// Set the number of worker threads for later calls (0 = default).
///
/// # Errors
/// Never fails today; returns `Result` so that a bound can be added without an API change.
pub fn set_num_threads(n: usize) -> Result<()> {
    REQUESTED_THREADS.store(n, Ordering::SeqCst);
    Ok(())
}

fn is_forked_child() -> bool {
    let pid = std::process::id();
    let mut first = FIRST_PID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match *first {
        None => {
            *first = Some(pid);
            false
        }
        Some(p) => p != pid,
    }
}

/// Record the current process as the parent (called when the library loads).
pub fn mark_main_process() {
    let _ = is_forked_child();
}

/// The number of threads the next parallel call uses.
///
/// Order: [`set_num_threads`], then `SFTFAST_NUM_THREADS`, then `RAYON_NUM_THREADS`, then 1 in a
/// forked child, then the available cores.
pub fn num_threads() -> usize {
    let requested = REQUESTED_THREADS.load(Ordering::SeqCst);
    if requested > 0 {
        return requested;
    }
    for var in ["SFTFAST_NUM_THREADS", "RAYON_NUM_THREADS"] {
        if let Some(n) = std::env::var(var)
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
        {
            if n > 0 {
                return n;
            }
        }
    }
    if is_forked_child() {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Run `f` inside sftfast's pool (built for this process and thread count on first use).
///
/// # Errors
/// [`SftError::Config`] when the pool cannot be built (the OS refused threads).
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R> {
    let n = num_threads();
    let pid = std::process::id();
    let pool = {
        let mut guard = POOL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match guard.as_ref() {
            Some((p, t, pool)) if *p == pid && *t == n => Arc::clone(pool),
            _ => {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("sftfast-{i}"))
                    .build()
                    .map_err(|e| SftError::Config(format!("cannot start {n} threads: {e}")))?;
                let pool = Arc::new(pool);
                // A pool inherited through fork has no threads: forget it without dropping it
                // (dropping would wait on threads that do not exist in this process).
                if let Some((p, _, old)) = guard.take() {
                    if p != pid {
                        std::mem::forget(old);
                    }
                }
                *guard = Some((pid, n, Arc::clone(&pool)));
                pool
            }
        }
    };
    Ok(pool.install(f))
}

/// Ask running loops to stop at their next check.
pub fn request_cancel() {
    CANCEL.store(true, Ordering::SeqCst);
}

/// Clear a cancel request (before a new call).
pub fn reset_cancel() {
    CANCEL.store(false, Ordering::SeqCst);
}

/// Whether a cancel was requested.
pub fn cancelled() -> bool {
    CANCEL.load(Ordering::Relaxed)
}

/// `Err(Interrupted)` when a cancel was requested.
///
/// # Errors
/// [`SftError::Interrupted`] after [`request_cancel`].
pub fn check_cancel() -> Result<()> {
    if cancelled() {
        Err(SftError::Interrupted)
    } else {
        Ok(())
    }
}

static PROGRESS_ROWS: AtomicUsize = AtomicUsize::new(0);

/// Count `n` more rows done (read by progress bars).
pub fn add_progress(n: usize) {
    PROGRESS_ROWS.fetch_add(n, Ordering::Relaxed);
}

/// Rows done since the process started (monotonic; callers take differences).
pub fn progress() -> usize {
    PROGRESS_ROWS.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_runs_in_pool_with_requested_threads() {
        let n = install(rayon::current_num_threads).unwrap();
        assert!(n >= 1);
    }
}
