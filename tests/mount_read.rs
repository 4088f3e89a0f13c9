//! Browsing and reading through a real mount, with real programs (issue: the mount, part 1).

mod common;

use std::time::Duration;

use common::*;

#[test]
fn ls_stat_find_du_and_cat_show_the_library() {
    if !fuse_available() {
        return;
    }
    let srv = Server::start(|_| {});
    let photos = srv.put_folder(None, "Photos");
    let trips = srv.put_folder(Some(&photos), "Trips");
    let small = pseudo_random(1000, 1);
    srv.put_file(None, "readme.txt", b"hello mediafs\n");
    srv.put_file(Some(&photos), "a.jpg", &small);
    srv.put_file(Some(&trips), "empty.bin", b"");
    let m = Mount::new(&srv, &[]);

    let ls = sh(m.path(), "ls -la");
    assert!(ls.contains("Photos") && ls.contains("readme.txt"), "{ls}");
    assert_eq!(sh(m.path(), "cat readme.txt"), "hello mediafs\n");
    assert_eq!(sh(m.path(), "stat -c '%s %F' Photos/a.jpg").trim(), "1000 regular file");
    assert_eq!(sh(m.path(), "stat -c '%F' Photos/Trips").trim(), "directory");
    assert_eq!(sha256_file(&m.p("Photos/a.jpg")), sha256(&small));
    let found = sh(m.path(), "find . | sort");
    assert_eq!(
        found.lines().collect::<Vec<_>>(),
        vec![".", "./Photos", "./Photos/Trips", "./Photos/Trips/empty.bin", "./Photos/a.jpg", "./readme.txt"]
    );
    let sized = sh(m.path(), "find . -type f -size +100c");
    assert_eq!(sized.trim(), "./Photos/a.jpg");
    let du = sh(m.path(), "du -sb .");
    let total: u64 = du.split_whitespace().next().unwrap().parse().unwrap();
    assert!(total >= 1014, "du -sb counts the file bytes: {du}");
    assert_eq!(sh(m.path(), "cat Photos/Trips/empty.bin | wc -c").trim(), "0");
    let df = sh(m.path(), "df -h . | tail -1");
    assert!(df.contains("mediafs"), "{df}");
    // Absent names are ENOENT.
    let out = sh_out(m.path(), "stat nope");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No such file"));
}
