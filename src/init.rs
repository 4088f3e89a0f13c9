//! mediafs as PID 1 (a container's entrypoint, or `unshare --pid --fork`).
//!
//! The kernel treats PID 1 specially: signals without a handler are dropped (so a plain
//! SIGTERM would do nothing), and every orphaned process of the namespace becomes its
//! child (so it must reap them, or zombies pile up). mediafs then splits in two, like
//! `tini` or `docker run --init`: PID 1 stays a tiny init that forwards signals to the real
//! mediafs, reaps every child, and exits with the real mediafs's status.

use std::sync::atomic::{AtomicBool, Ordering};

/// Set in the child of the init: mediafs runs under its own init (and must stay in the
/// foreground, since the init exits when its child does).
static UNDER_INIT: AtomicBool = AtomicBool::new(false);

/// Signals passed on to the real mediafs.
const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// True in the mediafs process started by [`become_init_if_pid1`].
pub fn under_init() -> bool {
    UNDER_INIT.load(Ordering::Relaxed)
}

/// If this process is PID 1, forks: the child returns and goes on as mediafs; the parent
/// never returns from here (it exits with the child's status). Otherwise does nothing.
///
/// Must be called before any thread exists (fork copies only the calling thread).
/// `MEDIAFS_NO_INIT=1` turns it off (for an image that already has an init).
pub fn become_init_if_pid1() {
    if unsafe { libc::getpid() } != 1
        || std::env::var_os("MEDIAFS_NO_INIT").is_some_and(|v| v == "1")
    {
        return;
    }
    // Block the signals before forking so none is lost between fork and sigwait; the
    // child unblocks them again.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
    }
    let child = unsafe { libc::fork() };
    if child < 0 {
        // Cannot split: run as PID 1 ourselves (signals with handlers still work).
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        eprintln!(
            "mediafs: fork for the PID 1 init failed: {}",
            std::io::Error::last_os_error()
        );
        return;
    }
    if child == 0 {
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
        UNDER_INIT.store(true, Ordering::Relaxed);
        return;
    }
    std::process::exit(supervise(child, &set));
}

/// The init's loop: forward signals, reap every child; returns the exit code.
fn supervise(child: libc::pid_t, set: &libc::sigset_t) -> i32 {
    loop {
        let mut sig: libc::c_int = 0;
        if unsafe { libc::sigwait(set, &mut sig) } != 0 {
            continue;
        }
        if sig != libc::SIGCHLD {
            unsafe { libc::kill(child, sig) };
            continue;
        }
        // Reap everything that has exited: ours and orphans handed to PID 1.
        loop {
            let mut status = 0;
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                if libc::WIFEXITED(status) {
                    return libc::WEXITSTATUS(status);
                }
                if libc::WIFSIGNALED(status) {
                    return 128 + libc::WTERMSIG(status);
                }
            }
        }
    }
}
