//! The client against other plausible shapes of the API (`--api-variant`, see
//! docs/API-VARIANTS.md): `mediafs probe` reports each shape, `--write` leaves nothing
//! behind, and one scenario of everyday commands runs on a real mount of each variant the
//! client handles, checked through the mount and through the API.

mod common;
mod write_support;

use std::collections::BTreeSet;
use std::process::Command;

use common::*;
use mediafs::server::{Variant, Variants};
use serde_json::Value;
use write_support::*;

fn server(variants: &[Variant]) -> Server {
    Server::start(|c| {
        c.seed_sample = true;
        c.variants = variants
            .iter()
            .fold(Variants::none(), |acc, v| acc.with(*v));
    })
}

/// Every folder and file id of the library, through the API.
fn all_ids(srv: &Server) -> BTreeSet<String> {
    fn walk(srv: &Server, folder: Option<&str>, out: &mut BTreeSet<String>) {
        for d in srv.remote_folders(folder) {
            out.insert(d.id.clone());
            walk(srv, Some(&d.id), out);
        }
        out.extend(srv.remote_files(folder).into_iter().map(|f| f.id));
    }
    let mut out = BTreeSet::new();
    walk(srv, None, &mut out);
    out
}

/// Runs `mediafs probe --json --write` against `variants`; checks that it leaves the
/// library as it found it and prints no secret; returns the report.
fn probe(variants: &[Variant]) -> Value {
    probe_of(&server(variants))
}

fn probe_of(srv: &Server) -> Value {
    let before = all_ids(srv);
    assert!(before.len() > 5, "the sample library is there");
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    let out = Command::new(bin())
        .args(["probe", "--json", "--write", "--api-url", &srv.url()])
        .arg("--token-file")
        .arg(&token_file)
        .env_remove("MEDIAFS_API_URL")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "probe failed: {stdout}\n{stderr}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
        assert!(!text.contains("Signature="), "a signed URL leaked: {text}");
        assert!(!text.contains("/cdn/"), "a signed URL leaked: {text}");
    }
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    let w = &report["write"];
    assert_eq!(w["leftovers"], Value::Array(vec![]), "{report:#}");
    assert_eq!(all_ids(srv), before, "--write left the library changed");
    let root: Vec<_> = srv
        .remote_folders(None)
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert!(
        !root.iter().any(|n| n.starts_with("mediafs-probe-")),
        "scratch folder left: {root:?}"
    );
    report
}

#[test]
fn probe_of_the_default_shape() {
    let r = probe(&[]);
    let w = &r["write"];
    assert_eq!(r["bareLists"], false);
    assert_eq!(r["wrapped"], false);
    assert_eq!(r["largestPageSize"], 100);
    assert_eq!(r["folderFilterHonoured"], true);
    assert_eq!(r["fileFilterHonoured"], true);
    assert_eq!(r["fractionalSeconds"], true);
    assert_eq!(r["fileSizeType"], "number");
    assert_eq!(r["unauthorizedStatus"], 401);
    assert_eq!(r["errorKeys"], serde_json::json!(["message", "statusCode"]));
    assert_eq!(r["rangeWorks"], true);
    let lifetime = r["signedUrlLifetimeSecs"].as_i64().unwrap();
    assert!((1..=600).contains(&lifetime), "{lifetime}");
    assert_eq!(w["createFolderStatus"], 200);
    assert_eq!(w["createFileStatus"], 200);
    assert_eq!(w["deleteStatus"], 200);
    assert_eq!(w["fileMoveHonoured"], true);
    assert_eq!(w["folderMoveHonoured"], true);
    assert_eq!(w["uniqueNames"], false);
}

#[test]
fn probe_reports_bare_lists() {
    let r = probe(&[Variant::BareLists]);
    assert_eq!(r["bareLists"], true, "{r:#}");
    assert_eq!(r["pagingFields"], serde_json::json!([]));
    assert_eq!(r["largestPageSize"], Value::Null);
}

#[test]
fn probe_reports_wrapped() {
    let r = probe(&[Variant::Wrapped]);
    assert_eq!(r["wrapped"], true, "{r:#}");
    let keys: Vec<_> = r["errorKeys"].as_array().unwrap().iter().collect();
    for k in ["success", "message", "errors", "requestId"] {
        assert!(keys.iter().any(|x| *x == k), "{k} in {keys:?}");
    }
}

#[test]
fn probe_reports_ignore_filters() {
    let r = probe(&[Variant::IgnoreFilters]);
    assert_eq!(r["folderFilterHonoured"], false, "{r:#}");
    assert_eq!(r["fileFilterHonoured"], false);
}

#[test]
fn probe_reports_created_201_and_delete_204() {
    let r = probe(&[Variant::Created201, Variant::Delete204]);
    let w = &r["write"];
    assert_eq!(w["createFolderStatus"], 201, "{r:#}");
    assert_eq!(w["createFileStatus"], 201);
    assert_eq!(w["deleteStatus"], 204);
}

#[test]
fn probe_reports_page_size_50() {
    let r = probe(&[Variant::PageSize50]);
    assert_eq!(r["largestPageSize"], 50, "{r:#}");
    let fields = r["pagingFields"].as_array().unwrap();
    assert!(!fields.iter().any(|f| f == "lastPage"), "{fields:?}");
}

/// A service that echoes the `pageSize` asked for while serving 50: the items of a full
/// page tell the real size.
#[test]
fn probe_reports_page_size_50_echoed() {
    let srv = server(&[Variant::PageSize50Echo]);
    for i in 0..60 {
        srv.put_file(None, &format!("f{i:02}"), b"x");
    }
    let r = probe_of(&srv);
    assert_eq!(r["largestPageSize"], 50, "{r:#}");
}

#[test]
fn probe_reports_no_move() {
    let r = probe(&[Variant::NoMove]);
    assert_eq!(r["write"]["fileMoveHonoured"], false, "{r:#}");
    assert_eq!(r["write"]["folderMoveHonoured"], false);
}

#[test]
fn probe_reports_unique_names() {
    let r = probe(&[Variant::UniqueNames]);
    assert_eq!(r["write"]["uniqueNames"], true, "{r:#}");
    assert_eq!(r["write"]["duplicateRenameStatus"], 409);
    assert_eq!(r["write"]["duplicateCreateStatus"], 409);
}

#[test]
fn probe_reports_strict_timestamps() {
    let r = probe(&[Variant::StrictTimestamps]);
    assert_eq!(r["fractionalSeconds"], false, "{r:#}");
    assert_eq!(r["fileSizeType"], "string");
}

#[test]
fn probe_without_write_changes_nothing_and_prints_no_secret() {
    let srv = server(&[]);
    let before = all_ids(&srv);
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, TOKEN).unwrap();
    srv.reset_stats();
    let out = Command::new(bin())
        .args(["probe", "--api-url", &srv.url()])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("filters honoured:      folders yes, files yes"),
        "{text}"
    );
    assert!(
        !text.contains(TOKEN) && !text.contains("Signature="),
        "{text}"
    );
    assert_eq!(all_ids(&srv), before);
    let by_route = srv.stats()["byRoute"].clone();
    for (route, _) in by_route.as_object().unwrap() {
        assert!(route.starts_with("GET "), "a read-only probe sent {route}");
    }
}

#[test]
fn probe_with_a_wrong_token_fails_clearly() {
    let srv = server(&[Variant::Wrapped]);
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, "kpt_not-the-right-one").unwrap();
    let out = Command::new(bin())
        .args(["probe", "--write", "--api-url", &srv.url()])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.contains("refused the token (HTTP 401)"), "{stderr}");
    assert!(!stderr.contains("kpt_not-the-right-one"), "{stderr}");
    assert!(out.stdout.is_empty());
}

#[test]
fn probe_of_a_closed_port_says_why() {
    // A port nothing listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let work = tempfile::tempdir().unwrap();
    let token_file = work.path().join("token");
    std::fs::write(&token_file, "kpt_whatever").unwrap();
    let out = Command::new(bin())
        .args(["probe", "--api-url", &format!("http://127.0.0.1:{port}")])
        .arg("--token-file")
        .arg(&token_file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    assert!(stderr.contains("Connection refused"), "{stderr}");
    assert!(!stderr.contains("kpt_whatever"), "{stderr}");
}

// ---------------------------------------------------------------- mounts

/// Everyday commands on a mount, each result checked through the mount and the API.
fn everyday_commands(variants: &[Variant]) {
    if !fuse_available() {
        return;
    }
    let srv = server(variants);
    let src = srv.put_folder(None, "src");
    let dst = srv.put_folder(None, "dst");
    let a_bytes = pseudo_random(300_000, 1);
    srv.put_file(Some(&src), "a.bin", &a_bytes);
    // More entries than two pages of 50.
    let many = srv.put_folder(None, "many");
    for i in 0..120 {
        srv.put_file(
            Some(&many),
            &format!("f{i:03}"),
            format!("{i}\n").as_bytes(),
        );
    }
    let m = Mount::new(&srv, &[]);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // Browse and read.
    let top = sh(m.path(), "ls");
    assert!(
        top.lines().any(|l| l == "src") && top.lines().any(|l| l == "dst"),
        "{top}"
    );
    assert_eq!(sh(m.path(), "ls src"), "a.bin\n");
    assert_eq!(sha256_file(&m.p("src/a.bin")), sha256(&a_bytes));
    let listed = sh(m.path(), "ls many");
    let want: Vec<String> = (0..120).map(|i| format!("f{i:03}")).collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);
    assert_eq!(sh(m.path(), "cat many/f077"), "77\n");

    // cp in, then overwrite.
    let new1 = write_random_file(&w.join("new1"), 200_000, 2);
    sh(m.path(), &format!("cp {}/new1 src/new.bin", w.display()));
    assert!(wait_landed(&srv, Some(&src), "new.bin", &new1, 30));
    let new2 = write_random_file(&w.join("new2"), 150_000, 3);
    sh(m.path(), &format!("cp {}/new2 src/new.bin", w.display()));
    assert!(wait_landed(&srv, Some(&src), "new.bin", &new2, 30));
    assert_eq!(sha256_file(&m.p("src/new.bin")), new2);

    // mv within a folder, across folders, onto a name.
    sh(m.path(), "mv src/new.bin src/renamed.bin");
    assert_eq!(
        remote_sha256(&srv, &remote_file(&srv, Some(&src), "renamed.bin").id),
        new2
    );
    assert!(remote_files_named(&srv, Some(&src), "new.bin").is_empty());
    sh(m.path(), "mv src/renamed.bin dst/moved.bin");
    assert_eq!(
        remote_sha256(&srv, &remote_file(&srv, Some(&dst), "moved.bin").id),
        new2
    );
    assert!(remote_files_named(&srv, Some(&src), "renamed.bin").is_empty());
    sh(m.path(), "echo victim > dst/target.txt");
    assert!(wait_landed(
        &srv,
        Some(&dst),
        "target.txt",
        &sha256(b"victim\n"),
        30
    ));
    sh(m.path(), "mv dst/moved.bin dst/target.txt");
    assert!(wait_landed(&srv, Some(&dst), "target.txt", &new2, 30));
    assert_eq!(sh(m.path(), "ls dst"), "target.txt\n");
    assert_eq!(srv.remote_files(Some(&dst)).len(), 1);
    assert_eq!(sha256_file(&m.p("dst/target.txt")), new2);

    // rm.
    sh(m.path(), "rm dst/target.txt");
    assert!(srv.remote_files(Some(&dst)).is_empty());
    assert_eq!(sh(m.path(), "ls dst"), "");

    // mkdir -p and rmdir.
    sh(m.path(), "mkdir -p x/y/z");
    let x = remote_folder(&srv, None, "x");
    let y = remote_folder(&srv, Some(&x.id), "y");
    remote_folder(&srv, Some(&y.id), "z");
    sh(m.path(), "rmdir x/y/z x/y");
    assert!(srv.remote_folders(Some(&x.id)).is_empty());
    assert_eq!(sh(m.path(), "ls x"), "");

    // mv of a directory across folders.
    sh(m.path(), "mkdir mvd && echo hi > mvd/f.txt && mv mvd dst/");
    let mvd = remote_folder(&srv, Some(&dst), "mvd");
    assert_eq!(
        srv.remote_bytes(&remote_file(&srv, Some(&mvd.id), "f.txt").id),
        b"hi\n"
    );
    assert!(!srv.remote_folders(None).iter().any(|f| f.name == "mvd"));
    assert_eq!(sh(m.path(), "cat dst/mvd/f.txt"), "hi\n");

    // rsync -a of a small tree.
    let tree = w.join("tree");
    std::fs::create_dir_all(tree.join("sub/deeper")).unwrap();
    write_random_file(&tree.join("one.bin"), 70_000, 4);
    write_random_file(&tree.join("sub/two.bin"), 1, 5);
    write_random_file(&tree.join("sub/deeper/three.bin"), 123_457, 6);
    std::fs::write(tree.join("empty"), b"").unwrap();
    sh(m.path(), &format!("rsync -a {}/ r/", tree.display()));
    sh(m.path(), &format!("diff -r {} r", tree.display()));
    let r = remote_folder(&srv, None, "r");
    assert_eq!(remote_tree(&srv, Some(&r.id)), local_tree(&tree));

    // The tree, through the API and through the mount, after all that.
    for dir in ["src", "dst", "x", "r"] {
        let id = remote_folder(&srv, None, dir).id;
        assert_eq!(remote_tree(&srv, Some(&id)), local_tree(&m.p(dir)), "{dir}");
    }
}

#[test]
fn everyday_commands_on_the_default_shape() {
    everyday_commands(&[]);
}

#[test]
fn everyday_commands_with_bare_lists() {
    everyday_commands(&[Variant::BareLists]);
}

#[test]
fn everyday_commands_with_wrapped_answers() {
    everyday_commands(&[Variant::Wrapped]);
}

#[test]
fn everyday_commands_with_created_201_and_delete_204() {
    everyday_commands(&[Variant::Created201, Variant::Delete204]);
}

#[test]
fn everyday_commands_with_page_size_50() {
    everyday_commands(&[Variant::PageSize50]);
}

#[test]
fn everyday_commands_with_strict_timestamps() {
    everyday_commands(&[Variant::StrictTimestamps]);
}

/// Moves across folders fall back to copy + delete (EXDEV from the client).
#[test]
fn everyday_commands_with_no_move() {
    everyday_commands(&[Variant::NoMove]);
}

#[test]
fn everyday_commands_with_ignore_filters() {
    everyday_commands(&[Variant::IgnoreFilters]);
}

/// Variants together, as a real service may combine them.
#[test]
fn everyday_commands_with_wrapped_bare_lists_and_strict_timestamps() {
    everyday_commands(&[
        Variant::Wrapped,
        Variant::BareLists,
        Variant::StrictTimestamps,
    ]);
}

/// Overwrite and `mv` onto a name make room first (see docs/API-VARIANTS.md).
#[test]
fn everyday_commands_with_unique_names_and_more() {
    everyday_commands(&[
        Variant::UniqueNames,
        Variant::Created201,
        Variant::Delete204,
        Variant::PageSize50,
    ]);
}

/// Names shown by the mount and held by the service: one remote file per name, with the
/// bytes the mount shows, and no temporary name left behind.
fn assert_same_tree(srv: &Server, m: &Mount, folder: &str) {
    let id = remote_folder(srv, None, folder).id;
    let remote = remote_tree(srv, Some(&id));
    assert!(
        !remote.keys().any(|k| k.contains(".mediafs-")),
        "a temporary name is left: {remote:#?}"
    );
    assert_eq!(remote, local_tree(&m.p(folder)), "{folder}");
}

#[test]
fn unique_names_overwrite_mv_cp_r_and_rsync_twice() {
    overwrite_mv_cp_r_and_rsync_twice(Variant::UniqueNames);
}

/// The temporary title alone does not free the name while the old file holds the
/// `fileName`: such an upload takes a temporary `fileName` too (it would fail otherwise).
#[test]
fn unique_file_names_overwrite_mv_cp_r_and_rsync_twice() {
    overwrite_mv_cp_r_and_rsync_twice(Variant::UniqueFileNames);
}

fn overwrite_mv_cp_r_and_rsync_twice(variant: Variant) {
    if !fuse_available() {
        return;
    }
    let srv = server(&[variant]);
    let u = srv.put_folder(None, "u");
    srv.put_file(Some(&u), "old.txt", b"old\n");
    srv.put_file(Some(&u), "b.txt", b"b before\n");
    let m = Mount::new(&srv, &[]);
    let work = tempfile::tempdir().unwrap();
    let w = work.path();

    // Overwrite by the shell, by cp, and a new file (created empty, then written).
    sh(m.path(), "echo replaced > u/old.txt");
    assert!(wait_landed(
        &srv,
        Some(&u),
        "old.txt",
        &sha256(b"replaced\n"),
        30
    ));
    let big = write_random_file(&w.join("big"), 250_000, 7);
    sh(m.path(), &format!("cp {}/big u/old.txt", w.display()));
    assert!(wait_landed(&srv, Some(&u), "old.txt", &big, 30));
    assert_eq!(sha256_file(&m.p("u/old.txt")), big);
    sh(m.path(), "echo fresh > u/new.txt");
    assert!(wait_landed(
        &srv,
        Some(&u),
        "new.txt",
        &sha256(b"fresh\n"),
        30
    ));
    assert_eq!(sh(m.path(), "cat u/new.txt"), "fresh\n");

    // mv onto an existing name.
    sh(m.path(), "mv u/new.txt u/b.txt");
    assert_eq!(sh(m.path(), "cat u/b.txt"), "fresh\n");
    assert!(remote_files_named(&srv, Some(&u), "new.txt").is_empty());
    assert_eq!(
        remote_sha256(&srv, &remote_file(&srv, Some(&u), "b.txt").id),
        sha256(b"fresh\n")
    );
    assert_eq!(sh(m.path(), "ls u"), "b.txt\nold.txt\n");
    assert_same_tree(&srv, &m, "u");

    // cp -r of a tree, then again over it with changed files.
    let tree = w.join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    write_random_file(&tree.join("one.bin"), 70_000, 8);
    write_random_file(&tree.join("sub/two.bin"), 3_000, 9);
    sh(m.path(), &format!("cp -r {} c", tree.display()));
    write_random_file(&tree.join("one.bin"), 50_000, 10);
    write_random_file(&tree.join("sub/two.bin"), 4_000, 11);
    sh(m.path(), &format!("cp -r {}/. c/", tree.display()));
    sh(m.path(), &format!("diff -r {} c", tree.display()));
    assert_same_tree(&srv, &m, "c");

    // rsync -a twice: the second run replaces changed files by temp file + rename.
    sh(m.path(), &format!("rsync -a {}/ r/", tree.display()));
    write_random_file(&tree.join("one.bin"), 60_000, 12);
    std::fs::write(tree.join("sub/two.bin"), b"short now\n").unwrap();
    sh(m.path(), &format!("rsync -a {}/ r/", tree.display()));
    sh(m.path(), &format!("diff -r {} r", tree.display()));
    assert_same_tree(&srv, &m, "r");
    assert_eq!(
        remote_tree(&srv, Some(&remote_folder(&srv, None, "r").id)),
        local_tree(&tree)
    );

    let log = m.log_text();
    assert!(
        log.contains("the service refuses duplicate names"),
        "the variant is logged once it is seen"
    );
    assert_eq!(
        log.matches("the service refuses duplicate names").count(),
        1,
        "logged once"
    );
}

/// With `ignore-filters`, `ls -R` of a tree costs one walk of the library, not one per
/// directory.
#[test]
fn ignore_filters_lists_a_tree_with_one_walk() {
    if !fuse_available() {
        return;
    }
    let srv = server(&[Variant::IgnoreFilters]);
    let top = srv.put_folder(None, "top");
    let mut want = 0;
    for i in 0..6 {
        let d = srv.put_folder(Some(&top), &format!("d{i}"));
        let e = srv.put_folder(Some(&d), "e");
        srv.put_file(Some(&d), "f.txt", format!("{i}\n").as_bytes());
        srv.put_file(Some(&e), "g.txt", b"g\n");
        want += 2;
    }
    let m = Mount::new(&srv, &["--dir-ttl", "120"]);
    srv.reset_stats();
    let listed = sh(m.path(), "ls -R top");
    assert_eq!(listed.matches("f.txt").count(), 6, "{listed}");
    assert_eq!(listed.matches("g.txt").count(), 6, "{listed}");
    let folders = srv.route_calls("GET /api/v1/media-manager/folders");
    let files = srv.route_calls("GET /api/v1/media-manager/files");
    assert!(
        folders <= 2 && files <= 2,
        "{want} directories listed with {folders} folder and {files} file list calls (one walk each expected)"
    );
    // The mount's own change shows at once (the walk is not reused after it).
    sh(m.path(), "echo new > top/d0/e/h.txt");
    assert_eq!(sh(m.path(), "ls top/d0/e"), "g.txt\nh.txt\n");
    // Another client's change shows after SIGHUP, which drops the walk too.
    let d1 = remote_folder(&srv, Some(&top), "d1").id;
    sh(m.path(), &format!("kill -HUP {}", m.pid()));
    assert!(
        wait_until(std::time::Duration::from_secs(10), || sh(
            m.path(),
            "ls top/d1"
        ) == "e\nf.txt\n"),
        "a walk of the library after the mount's own change"
    );
    srv.put_file(Some(&d1), "other.txt", b"o\n");
    sh(m.path(), &format!("kill -HUP {}", m.pid()));
    assert!(
        wait_until(std::time::Duration::from_secs(10), || sh(
            m.path(),
            "ls top/d1"
        )
            == "e\nf.txt\nother.txt\n"),
        "SIGHUP shows the change"
    );
}

/// A service that echoes the `pageSize` asked for while serving 50 items a page.
#[test]
fn listing_with_an_echoed_page_size_is_complete() {
    if !fuse_available() {
        return;
    }
    let srv = server(&[Variant::PageSize50Echo]);
    let many = srv.put_folder(None, "many");
    for i in 0..120 {
        srv.put_file(
            Some(&many),
            &format!("f{i:03}"),
            format!("{i}\n").as_bytes(),
        );
    }
    let m = Mount::new(&srv, &[]);
    let listed = sh(m.path(), "ls many");
    let want: Vec<String> = (0..120).map(|i| format!("f{i:03}")).collect();
    assert_eq!(listed.lines().collect::<Vec<_>>(), want);
}

/// An overwrite on a unique-names service interrupted by a crash (the old file's delete, or
/// the rename to the final name, failed and the daemon died) ends on the next mount.
#[test]
fn unique_names_overwrite_interrupted_by_a_crash_ends_after_remount() {
    if !fuse_available() {
        return;
    }
    let srv = server(&[Variant::UniqueNames]);
    let u = srv.put_folder(None, "u");
    srv.put_file(Some(&u), "a.txt", b"a before\n");
    srv.put_file(Some(&u), "b.txt", b"b before\n");
    let mut m = Mount::new(&srv, &[]);
    assert_eq!(sh(m.path(), "cat u/a.txt u/b.txt"), "a before\nb before\n");

    // a.txt: the new bytes land under a temporary title, the old file stays.
    srv.set_faults(serde_json::json!({
        "errorRate": 1.0, "errorStatus": 400, "route": "DELETE /api/v1/media-manager/files/{id}"
    }));
    sh(m.path(), "echo a after > u/a.txt");
    // b.txt: the old file goes, the new one keeps its temporary title.
    srv.set_faults(serde_json::json!({
        "errorRate": 1.0, "errorStatus": 400, "route": "PATCH /api/v1/media-manager/files/{id}"
    }));
    sh(m.path(), "echo b after > u/b.txt");
    let titles: Vec<String> = srv
        .remote_files(Some(&u))
        .iter()
        .map(file_name_of)
        .collect();
    assert_eq!(
        titles.iter().filter(|t| t.starts_with(".mediafs-")).count(),
        2,
        "both new versions wait under a temporary title: {titles:?}"
    );
    m.kill();
    let first_log = m.log_text();
    srv.clear_faults();
    m.remount();

    for (name, bytes) in [("a.txt", b"a after\n"), ("b.txt", b"b after\n")] {
        assert!(
            wait_landed(&srv, Some(&u), name, &sha256(bytes), 30),
            "{name} did not land; on the service: {:?}; first daemon log:\n{first_log}\n\
             daemon log after the remount:\n{}",
            srv.remote_files(Some(&u))
                .iter()
                .map(file_name_of)
                .collect::<Vec<_>>(),
            m.log_text()
        );
    }
    assert!(wait_until(std::time::Duration::from_secs(30), || srv
        .remote_files(Some(&u))
        .len()
        == 2));
    assert_same_tree(&srv, &m, "u");
    assert_eq!(sh(m.path(), "cat u/a.txt u/b.txt"), "a after\nb after\n");
}

/// `mediafs mount DIR --api-variant NAME` (no `--api-url`): the embedded server speaks the
/// variant, so one command tries mediafs against it.
#[test]
fn mount_of_the_embedded_server_takes_an_api_variant() {
    if !fuse_available() {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let mp = tempfile::tempdir().unwrap();
    let log = work.path().join("mediafs.log");
    let mount = |extra: &[&str]| {
        Command::new(bin())
            .arg("mount")
            .arg(mp.path())
            .arg("--data-dir")
            .arg(work.path().join("library"))
            .arg("--cache-dir")
            .arg(work.path().join("cache"))
            .arg("--log-file")
            .arg(&log)
            .args(extra)
            .env("MEDIAFS_LOG", "info")
            .env_remove("MEDIAFS_API_URL")
            .env_remove("MEDIAFS_TOKEN")
            .output()
            .unwrap()
    };
    let bad = mount(&["--api-variant", "nope"]);
    assert!(!bad.status.success());
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("unknown API variant \"nope\""), "{stderr}");
    let remote = mount(&[
        "--api-variant",
        "wrapped",
        "--api-url",
        "http://127.0.0.1:9",
    ]);
    assert!(!remote.status.success());
    let stderr = String::from_utf8_lossy(&remote.stderr);
    assert!(stderr.contains("embedded server only"), "{stderr}");

    let ok = mount(&["--api-variant", "unique-names,wrapped"]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let m = mp.path();
    let result = std::panic::catch_unwind(|| {
        sh(
            m,
            "echo one > t.txt && echo two > t.txt && cp t.txt u.txt && mv u.txt t.txt",
        );
        assert_eq!(sh(m, "cat t.txt"), "two\n");
        assert_eq!(
            sh(m, "ls t.txt u.txt 2>&1 || true"),
            "ls: cannot access 'u.txt': No such file or directory\nt.txt\n"
        );
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(text.contains("variant=wrapped,unique-names"), "{text}");
        assert!(
            text.contains("the service refuses duplicate names"),
            "{text}"
        );
    });
    let _ = Command::new(bin()).arg("unmount").arg(m).status();
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}

/// An overwrite of a file still open for reading on a unique-names service: the reader
/// keeps the old bytes, the mount shows the new ones, and the new file takes the name on
/// the service once the reader closes (the old file's delete waits for it).
#[test]
fn unique_names_overwrite_of_a_file_being_read() {
    if !fuse_available() {
        return;
    }
    let srv = server(&[Variant::UniqueNames]);
    let u = srv.put_folder(None, "u");
    let old = pseudo_random(200_000, 21);
    srv.put_file(Some(&u), "r.bin", &old);
    let m = Mount::new(&srv, &[]);
    let work = tempfile::tempdir().unwrap();
    let new = write_random_file(&work.path().join("new"), 100_000, 22);
    let script = format!(
        "import hashlib, subprocess\n\
         f = open('u/r.bin', 'rb')\n\
         head = f.read(1000)\n\
         subprocess.run(['cp', '{}/new', 'u/r.bin'], check=True)\n\
         print(hashlib.sha256(open('u/r.bin', 'rb').read()).hexdigest())\n\
         print(hashlib.sha256(head + f.read()).hexdigest())\n\
         f.close()\n",
        work.path().display()
    );
    std::fs::write(work.path().join("read.py"), script).unwrap();
    let out = sh(
        m.path(),
        &format!("python3 {}/read.py", work.path().display()),
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [new.as_str(), sha256(&old).as_str()],
        "new bytes shown, old kept for the reader"
    );
    assert!(wait_landed(&srv, Some(&u), "r.bin", &new, 30));
    assert!(wait_until(std::time::Duration::from_secs(30), || srv
        .remote_files(Some(&u))
        .len()
        == 1));
    assert_same_tree(&srv, &m, "u");
}
