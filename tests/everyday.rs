//! Everyday programs behave as on a local disk: each rule of SEMANTICS.md that differs
//! from "just upload on close" gets a real-mount test driven by real programs, checked
//! through the API as well as through the mount.

mod common;
mod write_support;

use common::*;
use write_support::*;

/// Names over 255 bytes: ENAMETOOLONG from mkdir, creat, rename and stat, as on a local
/// disk, and nothing reaches the service.
#[test]
fn names_over_255_bytes_are_refused_before_any_call() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let m = Mount::new(&srv, &[]);
    std::fs::write(m.p("short.txt"), b"x").unwrap();
    srv.reset_stats();
    let out = sh(
        m.path(),
        r#"
        long=$(printf 'n%.0s' $(seq 256))
        fits=$(printf 'n%.0s' $(seq 255))
        python3 - "$long" <<'PY'
import errno, os, sys
long = sys.argv[1]
for what, call in [
    ("mkdir", lambda: os.mkdir(long)),
    ("creat", lambda: os.open(long, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o644)),
    ("rename", lambda: os.rename("short.txt", long)),
    ("stat", lambda: os.stat(long)),
]:
    try:
        call()
        print(what, "succeeded")
    except OSError as e:
        print(what, errno.errorcode[e.errno])
PY
        touch "$fits" && stat -c %s "$fits"
        "#,
    );
    for what in ["mkdir", "creat", "rename", "stat"] {
        assert!(
            out.contains(&format!("{what} ENAMETOOLONG")),
            "{what} should give ENAMETOOLONG:\n{out}"
        );
    }
    assert!(
        out.trim_end().ends_with('0'),
        "a 255-byte name works:\n{out}"
    );
    let names: Vec<String> = srv.remote_files(None).iter().map(file_name_of).collect();
    assert!(names.contains(&"short.txt".to_string()), "{names:?}");
    assert!(names.iter().all(|n| n.len() <= 255), "{names:?}");
    assert!(srv.remote_folders(None).iter().all(|f| f.name.len() <= 255));
    assert_eq!(srv.route_calls("PATCH /api/v1/media-manager/files/{id}"), 0);
    assert_eq!(srv.route_calls("POST /api/v1/media-manager/folders"), 0);
}
