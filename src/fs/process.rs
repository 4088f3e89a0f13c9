//! Which process a request comes from, for closes of inherited descriptors.
//!
//! A FUSE request carries the id of the calling thread. A descriptor open for writing is
//! shared with every child forked while it is open, and each child's close (at exit, or
//! at exec for a close-on-exec descriptor) is a flush of the same handle: uploading there
//! would send a partial file and make the child's exec or exit wait for the upload. Only
//! the process that opened the file uploads at its close; the last close (release)
//! uploads whatever is left. mountpoint-s3 draws the same line.

/// The process (thread group) of thread `tid`, from `/proc`; `None` when that cannot be
/// known: pid 0 (the caller is in a pid namespace the daemon cannot see), a thread gone,
/// or a `/proc` mounted with `hidepid`.
pub fn process_of(tid: u32) -> Option<u32> {
    if tid == 0 {
        return None;
    }
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse().ok())
}

/// Whether a close by thread `tid` is a close by the process that opened the handle.
/// Unknown openers (another pid namespace) keep the plain rule: every close uploads.
pub fn closed_by_opener(opener: Option<u32>, tid: u32) -> bool {
    match opener {
        None => true,
        // A single-threaded opener closes with its own id: no need to read /proc.
        Some(p) => tid == p || process_of(tid) == Some(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_belongs_to_its_process() {
        let me = std::process::id();
        assert_eq!(process_of(me), Some(me));
        let (tx, rx) = std::sync::mpsc::channel();
        let (hold, release) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = release.recv();
        });
        let tid = rx.recv().unwrap();
        assert_ne!(tid, me);
        assert_eq!(process_of(tid), Some(me));
        assert!(closed_by_opener(Some(me), tid));
        drop(hold);
        t.join().unwrap();
    }

    #[test]
    fn a_child_is_another_process_and_unknown_openers_keep_the_plain_rule() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id();
        assert_eq!(process_of(child.id()), Some(child.id()));
        assert!(!closed_by_opener(Some(me), child.id()));
        assert!(!closed_by_opener(Some(me), 0));
        assert!(closed_by_opener(None, child.id()));
        assert_eq!(process_of(0), None);
        child.kill().unwrap();
        child.wait().unwrap();
    }
}
