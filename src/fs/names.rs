//! Remote names ↔ POSIX names, and the duplicate rule (SEMANTICS.md, "Names" and "Duplicates").
//!
//! The service allows any character in a name and several entries with one name in a folder;
//! a POSIX directory allows neither. This module decides what each entry of one folder is
//! called locally. Everything here is pure: no I/O, deterministic, independent of the order
//! in which the service listed the entries.
//!
//! Escaping: `/` shows as `∕` (U+2215 DIVISION SLASH), a name that is exactly `.` or `..`
//! shows as `．` / `．．` (U+FF0E FULLWIDTH FULL STOP), NUL is dropped. [`unescape`] reverses
//! this for names typed by the user. A remote name that already contains `∕`, or is exactly
//! `．`/`．．`, displays unchanged but would come back as `/`, `.` or `..` if typed anew:
//! the mapping chosen by the product cannot tell them apart. Lookups must therefore go by
//! the display names computed here, never by unescaping the looked-up name.

use std::collections::HashSet;
use std::ffi::OsStr;

use chrono::{DateTime, Utc};

use crate::api::{Folder, MediaFile};
use crate::fs::error::Kind;

/// Longest file name, in bytes, that Linux accepts (`NAME_MAX`).
pub const MAX_NAME_BYTES: usize = 255;

/// Shown in place of `/`.
const SLASH: char = '\u{2215}';
/// Shown in place of a name that is exactly `.`.
const DOT: &str = "\u{FF0E}";
/// Shown in place of a name that is exactly `..`.
const DOT_DOT: &str = "\u{FF0E}\u{FF0E}";

/// A shortened name keeps its extension only up to this many bytes (dot included), so that
/// most of the name stays readable.
const MAX_KEPT_EXT_BYTES: usize = 32;
/// Cap on an id tag (a huge opaque id must not eat the whole name).
const MAX_TAG_BYTES: usize = 64;
/// How many characters of the id a suffix uses first.
const SHORT_TAG_CHARS: usize = 8;

/// Escapes a remote name into a POSIX name, without length or duplicate handling
/// (see [`assign_names`] for those). May return an empty string.
pub fn escape(remote: &str) -> String {
    let s: String = remote
        .chars()
        .filter(|&c| c != '\0')
        .map(|c| if c == '/' { SLASH } else { c })
        .collect();
    // Checked after dropping NULs: "\0." must not become ".".
    match s.as_str() {
        "." => DOT.to_string(),
        ".." => DOT_DOT.to_string(),
        _ => s,
    }
}

/// Turns a name given by the user (create, mkdir, rename target) into the remote name.
/// A name over [`MAX_NAME_BYTES`] gets `ENAMETOOLONG` before any remote call, as on a local
/// disk (it could be stored, but never shown back under the name given). Non-UTF-8 names
/// are rejected as invalid (`EINVAL`): the service stores text.
pub fn unescape(local: &OsStr) -> Result<String, Kind> {
    if local.len() > MAX_NAME_BYTES {
        return Err(Kind::NameTooLong);
    }
    let s = local.to_str().ok_or(Kind::Invalid)?;
    Ok(match s {
        DOT => ".".to_string(),
        DOT_DOT => "..".to_string(),
        _ => s.replace(SLASH, "/"),
    })
}

/// The remote name of a file: its title, else `upload.fileName`, else its id.
pub fn file_remote_name(f: &MediaFile) -> String {
    if let Some(title) = f.title.as_deref().filter(|t| !t.is_empty()) {
        return title.to_string();
    }
    match f.upload.as_ref().map(|u| u.file_name.as_str()) {
        Some(name) if !name.is_empty() => name.to_string(),
        _ => f.id.clone(),
    }
}

/// One entry of a folder listing, as far as naming is concerned.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub id: String,
    pub is_dir: bool,
    /// The remote name, unescaped (folder `name`, or [`file_remote_name`]).
    pub remote_name: String,
    /// `createdAt` as the service sent it (RFC 3339).
    pub created_at: Option<String>,
    /// The mount wrote or moved this entry under its plain name (an overwrite, an `mv`
    /// onto the name): it keeps the name over older namesakes while the mount runs.
    pub claimed: bool,
}

impl Candidate {
    pub fn from_folder(f: &Folder) -> Candidate {
        Candidate {
            id: f.id.clone(),
            is_dir: true,
            remote_name: f.name.clone(),
            created_at: f.created_at.clone(),
            claimed: false,
        }
    }

    pub fn from_file(f: &MediaFile) -> Candidate {
        Candidate {
            id: f.id.clone(),
            is_dir: false,
            remote_name: file_remote_name(f),
            created_at: f.created_at.clone(),
            claimed: false,
        }
    }
}

/// Display names for one folder's entries, in the same order as `entries`; all unique, all
/// valid POSIX names (non-empty, at most [`MAX_NAME_BYTES`] bytes, no `/` or NUL, never `.`
/// or `..`).
///
/// Entries whose escaped names are equal compete for that name: a folder beats a file, then
/// one the mount claimed the name for ([`Candidate::claimed`]), then the oldest
/// (`createdAt`, then `id`) wins. Every loser is shown as `stem~<first 8 of id>.ext`;
/// if that is taken too, more of the id is used, then the whole id, then a counter. Plain
/// names are reserved before any generated one, so an entry never loses its plain name to
/// another entry's generated name.
pub fn assign_names(entries: &[Candidate]) -> Vec<String> {
    let bases: Vec<String> = entries.iter().map(base_name).collect();
    let ranks: Vec<Rank<'_>> = entries.iter().map(Rank::of).collect();

    // Canonical order: by name, then best claim first. Stable, and the key covers every
    // field of a candidate, so the result does not depend on the input order.
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| {
        bases[a]
            .cmp(&bases[b])
            .then_with(|| ranks[a].cmp(&ranks[b]))
    });

    let mut names = vec![String::new(); entries.len()];
    let taken: HashSet<&str> = bases.iter().map(String::as_str).collect();
    let mut losers = Vec::new();
    for (k, &i) in order.iter().enumerate() {
        if k > 0 && bases[order[k - 1]] == bases[i] {
            losers.push(i);
        } else {
            names[i] = bases[i].clone();
        }
    }
    let mut generated: HashSet<String> = HashSet::new();
    for i in losers {
        let name = disambiguate(&bases[i], &entries[i].id, |n| {
            taken.contains(n) || generated.contains(n)
        });
        generated.insert(name.clone());
        names[i] = name;
    }
    names
}

/// How strong an entry's claim on a contested name is; smaller wins.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Rank<'a> {
    is_file: bool,
    unclaimed: bool,
    /// Unparseable or missing timestamps count as newest: an entry of unknown age does not
    /// take the name from one whose age is known.
    time_unknown: bool,
    time: Option<DateTime<Utc>>,
    created_raw: Option<&'a str>,
    id: &'a str,
    remote_name: &'a str,
}

impl<'a> Rank<'a> {
    fn of(c: &'a Candidate) -> Rank<'a> {
        // Parsed, not compared as text: "…:59Z" and "…:59.000001Z" must order by time.
        let time = c
            .created_at
            .as_deref()
            .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
            .map(|t| t.with_timezone(&Utc));
        Rank {
            is_file: !c.is_dir,
            unclaimed: !c.claimed,
            time_unknown: time.is_none(),
            time,
            created_raw: c.created_at.as_deref(),
            id: &c.id,
            remote_name: &c.remote_name,
        }
    }
}

/// The name an entry gets when nothing competes with it (its plain name): escaped, never
/// empty, fitted into [`MAX_NAME_BYTES`].
pub fn base_name(c: &Candidate) -> String {
    let escaped = escape(&c.remote_name);
    if escaped.is_empty() {
        format!("~{}", id_tag(&c.id, SHORT_TAG_CHARS))
    } else if escaped.len() > MAX_NAME_BYTES {
        with_tag(&escaped, &id_tag(&c.id, SHORT_TAG_CHARS))
    } else {
        escaped
    }
}

/// The first name in a fixed sequence of variants of `base` that `is_taken` refuses.
fn disambiguate(base: &str, id: &str, is_taken: impl Fn(&str) -> bool) -> String {
    let mut last_tag = None;
    for chars in [SHORT_TAG_CHARS, 2 * SHORT_TAG_CHARS, usize::MAX] {
        let tag = id_tag(id, chars);
        if last_tag.as_ref() == Some(&tag) {
            continue;
        }
        let name = with_tag(base, &tag);
        if !is_taken(&name) {
            return name;
        }
        last_tag = Some(tag);
    }
    // Only reachable with equal or pathological ids; the set of taken names is finite.
    let short = id_tag(id, SHORT_TAG_CHARS);
    (1u64..)
        .map(|k| with_tag(base, &format!("{short}-{k}")))
        .find(|n| !is_taken(n))
        .expect("a free name exists")
}

/// Up to `chars` characters of an id, made safe for a file name and capped in bytes.
fn id_tag(id: &str, chars: usize) -> String {
    let tag: String = id
        .chars()
        .filter(|&c| c != '\0')
        .map(|c| if c == '/' { SLASH } else { c })
        .take(chars)
        .collect();
    truncate(&tag, MAX_TAG_BYTES).to_string()
}

/// `stem~tag.ext`, shortening the stem (on a char boundary) to stay within
/// [`MAX_NAME_BYTES`]. A long extension is not kept apart when shortening.
fn with_tag(name: &str, tag: &str) -> String {
    let (stem, ext) = split_ext(name);
    let suffix_len = 1 + tag.len();
    if stem.len() + suffix_len + ext.len() <= MAX_NAME_BYTES {
        return format!("{stem}~{tag}{ext}");
    }
    let (stem, ext) = if ext.len() <= MAX_KEPT_EXT_BYTES {
        (stem, ext)
    } else {
        (name, "")
    };
    let room = MAX_NAME_BYTES - suffix_len - ext.len();
    format!("{}~{tag}{ext}", truncate(stem, room))
}

/// Splits `photo.jpg` into (`photo`, `.jpg`). A leading dot does not start an extension:
/// `.bashrc` has none.
fn split_ext(name: &str) -> (&str, &str) {
    match name.rfind('.') {
        Some(i) if i > 0 => name.split_at(i),
        _ => (name, ""),
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Upload;
    use proptest::prelude::*;
    use std::ffi::OsString;
    use std::os::unix::ffi::OsStringExt;

    fn file(id: &str, name: &str, created: &str) -> Candidate {
        Candidate {
            id: id.to_string(),
            is_dir: false,
            remote_name: name.to_string(),
            created_at: Some(created.to_string()),
            claimed: false,
        }
    }

    fn dir(id: &str, name: &str, created: &str) -> Candidate {
        Candidate {
            is_dir: true,
            ..file(id, name, created)
        }
    }

    fn un(s: &str) -> String {
        unescape(OsStr::new(s)).unwrap()
    }

    const T1: &str = "2026-02-20T11:29:59.000000Z";
    const T2: &str = "2026-02-20T11:29:59.000001Z";
    const T3: &str = "2026-02-21T08:00:00.000000Z";

    #[test]
    fn escape_cases() {
        assert_eq!(escape("photo.jpg"), "photo.jpg");
        assert_eq!(escape("a/b"), "a∕b");
        assert_eq!(escape("/"), "∕");
        assert_eq!(escape("//x//"), "∕∕x∕∕");
        assert_eq!(escape("."), "．");
        assert_eq!(escape(".."), "．．");
        assert_eq!(escape("..."), "...");
        assert_eq!(escape(".hidden"), ".hidden");
        assert_eq!(escape("a\0b"), "ab");
        assert_eq!(escape("\0"), "");
        assert_eq!(escape("\0.\0"), "．", "NUL dropped before the dot check");
        assert_eq!(escape("."), DOT);
        assert_eq!(escape(""), "");
        assert_eq!(escape("日本語 ✓"), "日本語 ✓");
    }

    #[test]
    fn unescape_cases() {
        assert_eq!(un("a∕b"), "a/b");
        assert_eq!(un("∕"), "/");
        assert_eq!(un("．"), ".");
        assert_eq!(un("．．"), "..");
        assert_eq!(un("．．．"), "．．．", "only exact matches");
        assert_eq!(un("a．"), "a．");
        assert_eq!(un("plain name.txt"), "plain name.txt");
        let bad = OsString::from_vec(vec![b'a', 0xff, b'b']);
        assert_eq!(unescape(&bad), Err(Kind::Invalid));
        let long = "é".repeat(128); // 256 bytes
        assert_eq!(unescape(OsStr::new(&long)), Err(Kind::NameTooLong));
        let fits = format!("{}a", "é".repeat(127)); // 255 bytes
        assert_eq!(unescape(OsStr::new(&fits)).as_deref(), Ok(fits.as_str()));
    }

    #[test]
    fn round_trips() {
        for x in [
            "a",
            "a/b",
            "/",
            ".",
            "..",
            "...",
            ".x",
            "x.",
            "photo.jpg",
            " ",
            "~",
            "日本/語",
        ] {
            assert_eq!(un(&escape(x)), x, "{x:?}");
        }
    }

    #[test]
    fn file_remote_name_falls_back() {
        let mut f = MediaFile {
            id: "id-1".into(),
            upload_id: None,
            folder_id: None,
            title: Some("Title".into()),
            description: None,
            alt_text: None,
            sort_order: None,
            is_favorite: None,
            is_private: None,
            created_at: None,
            updated_at: None,
            upload: Some(Upload {
                id: None,
                file_name: "name.png".into(),
                file_size: 1,
                file_url: None,
                mime_type: None,
            }),
        };
        assert_eq!(file_remote_name(&f), "Title");
        f.title = Some(String::new());
        assert_eq!(file_remote_name(&f), "name.png");
        f.title = None;
        assert_eq!(file_remote_name(&f), "name.png");
        f.upload.as_mut().unwrap().file_name.clear();
        assert_eq!(file_remote_name(&f), "id-1");
        f.upload = None;
        assert_eq!(file_remote_name(&f), "id-1");
        let c = Candidate::from_file(&f);
        assert!(!c.is_dir);
        assert_eq!(c.remote_name, "id-1");
    }

    #[test]
    fn empty_name_shows_id() {
        let names = assign_names(&[
            file("1a2b3c4d-0000", "", T1),
            file("5e6f7a8b-0000", "\0\0", T1),
        ]);
        assert_eq!(names, ["~1a2b3c4d", "~5e6f7a8b"]);
    }

    fn check_long(name: &str, id: &str) -> String {
        let out = assign_names(&[file(id, name, T1)]).remove(0);
        assert!(out.len() <= MAX_NAME_BYTES, "{} bytes", out.len());
        // A `String` is valid UTF-8 by construction; the prefix must be the original's.
        let (prefix, _) = out.split_once('~').unwrap();
        assert!(name.starts_with(prefix), "{out:?}");
        assert!(prefix.len() > 150, "most of the name is kept");
        out
    }

    #[test]
    fn long_names_are_shortened_with_id() {
        let ascii = format!("{}.jpg", "a".repeat(296));
        let out = check_long(&ascii, "1a2b3c4d-5e6f");
        assert!(out.ends_with("~1a2b3c4d.jpg"), "{out}");
        assert_eq!(out.len(), MAX_NAME_BYTES);

        // Two-byte chars: 400 bytes, cut on a boundary.
        let out = check_long(&"é".repeat(200), "1a2b3c4d");
        assert!(out.ends_with("~1a2b3c4d"), "{out}");
        // Three- and four-byte chars, with an extension.
        let out = check_long(&format!("{}.txt", "日本語".repeat(40)), "ffff0000");
        assert!(out.ends_with("~ffff0000.txt"), "{out}");
        check_long(&"🦀".repeat(100), "1a2b3c4d");
        // An over-long "extension" is not kept apart.
        let long_ext = format!("x.{}", "e".repeat(300));
        let out = check_long(&long_ext, "1a2b3c4d");
        assert!(out.ends_with("ee~1a2b3c4d"), "{out}");

        // 255 bytes exactly is left alone; the escaped length is what counts.
        let exact = "b".repeat(255);
        assert_eq!(assign_names(&[file("i", &exact, T1)]), [exact]);
        let slashes = "/".repeat(100); // 300 bytes once escaped
        let out = assign_names(&[file("1a2b3c4d", &slashes, T1)]).remove(0);
        assert!(out.len() <= MAX_NAME_BYTES && out.ends_with("~1a2b3c4d"));
        assert!(!out.contains('/'));
    }

    #[test]
    fn two_files_same_title_oldest_plain() {
        let names = assign_names(&[
            file("bbbbbbbb-2222", "photo.jpg", T2),
            file("aaaaaaaa-1111", "photo.jpg", T1),
        ]);
        assert_eq!(names, ["photo~bbbbbbbb.jpg", "photo.jpg"]);
    }

    #[test]
    fn suffix_forms() {
        for (name, want) in [
            ("README", "README~1a2b3c4d"),
            (".bashrc", ".bashrc~1a2b3c4d"),
            ("archive.tar.gz", "archive.tar~1a2b3c4d.gz"),
            ("a/b.png", "a∕b~1a2b3c4d.png"),
            (".", "．~1a2b3c4d"),
        ] {
            let names = assign_names(&[
                file("00000000-old", name, T1),
                file("1a2b3c4d-5e6f-7a8b", name, T2),
            ]);
            assert_eq!(names[1], want, "{name}");
            assert_eq!(names[0], escape(name));
        }
    }

    #[test]
    fn three_files() {
        let names = assign_names(&[
            file("cccccccc", "x", T3),
            file("aaaaaaaa", "x", T1),
            file("bbbbbbbb", "x", T2),
        ]);
        assert_eq!(names, ["x~cccccccc", "x", "x~bbbbbbbb"]);
    }

    #[test]
    fn folder_beats_older_file() {
        let names = assign_names(&[
            file("aaaaaaaa", "docs", T1),
            dir("bbbbbbbb", "docs", T3),
            dir("cccccccc", "docs", T2),
        ]);
        assert_eq!(names, ["docs~aaaaaaaa", "docs~bbbbbbbb", "docs"]);
    }

    #[test]
    fn same_created_at_id_decides() {
        let names = assign_names(&[file("b-2", "n", T1), file("a-1", "n", T1)]);
        assert_eq!(names, ["n~b-2", "n"]);
    }

    #[test]
    fn timestamps_compare_as_times() {
        // As text "…59Z" sorts after "…59.5Z"; as times it is earlier.
        let names = assign_names(&[
            file("aaaaaaaa", "n", "2026-02-20T11:29:59.5Z"),
            file("bbbbbbbb", "n", "2026-02-20T11:29:59Z"),
            file("00000000", "n", "garbage"),
        ]);
        assert_eq!(names, ["n~aaaaaaaa", "n", "n~00000000"]);
    }

    #[test]
    fn shuffled_input_same_result() {
        let entries = vec![
            file("cccccccc", "x", T3),
            file("aaaaaaaa", "x", T1),
            dir("dddddddd", "x", T3),
            file("bbbbbbbb", "x", T2),
            file("eeeeeeee", "y", T1),
        ];
        let want = assign_names(&entries);
        let mut rev = entries.clone();
        rev.reverse();
        let mut got = assign_names(&rev);
        got.reverse();
        assert_eq!(got, want);
        assert_eq!(want[2], "x");
    }

    #[test]
    fn generated_name_collision_uses_more_of_the_id() {
        // A third entry is really called what the loser would be shown as.
        let names = assign_names(&[
            file("aaaaaaaa-0000-0000", "photo.jpg", T1),
            file("bbbbbbbb-1111-2222-3333", "photo.jpg", T2),
            file("zzzz", "photo~bbbbbbbb.jpg", T3),
        ]);
        assert_eq!(
            names,
            [
                "photo.jpg",
                "photo~bbbbbbbb-1111-22.jpg",
                "photo~bbbbbbbb.jpg"
            ]
        );

        // 8 and 16 characters both taken: the full id.
        let names = assign_names(&[
            file("aaaaaaaa", "p", T1),
            file("bbbbbbbb-1111-2222-3333", "p", T2),
            file("zzzz", "p~bbbbbbbb", T3),
            file("yyyy", "p~bbbbbbbb-1111-22", T3),
        ]);
        assert_eq!(names[1], "p~bbbbbbbb-1111-2222-3333");

        // Ids sharing 8 characters among the losers.
        let names = assign_names(&[
            file("0", "p", T1),
            file("12345678-a", "p", T2),
            file("12345678-b", "p", T3),
        ]);
        assert_eq!(names, ["p", "p~12345678", "p~12345678-b"]);

        // Identical ids (a misbehaving service): a counter as the last resort.
        let names = assign_names(&[file("same", "p", T1), file("same", "p", T1)]);
        assert_eq!(names, ["p", "p~same"]);
        let names = assign_names(&[
            file("same", "p", T1),
            file("same", "p", T1),
            file("same", "p", T1),
        ]);
        assert_eq!(names, ["p", "p~same", "p~same-1"]);
    }

    #[test]
    fn plain_names_are_never_taken_by_generated_ones() {
        // The loser's first choice is another entry's plain name, whatever their ages.
        let names = assign_names(&[
            file("old", "a", T1),
            file("bbbbbbbb-9", "a", T2),
            file("newest", "a~bbbbbbbb", T3),
        ]);
        assert_eq!(names[2], "a~bbbbbbbb");
        assert_eq!(names[1], "a~bbbbbbbb-9");
    }

    #[test]
    fn odd_ids_stay_valid() {
        let names = assign_names(&[file("", "n", T1), file("a/b\0c", "n", T2), file("", "", T3)]);
        assert_eq!(names, ["n", "n~a∕bc", "~"]);
    }

    // A small alphabet makes duplicates and escapes frequent.
    fn name_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "[ab./\u{0}∕．~]{0,4}",
            1 => "[a-zé日🦀.]{0,130}",
            1 => Just(".".to_string()),
            1 => Just("..".to_string()),
        ]
    }

    fn candidate_strategy() -> impl Strategy<Value = Candidate> {
        (
            "[0-9a-f]{0,3}|[0-9a-f]{8}-[0-9a-f/]{0,12}",
            any::<bool>(),
            name_strategy(),
            prop::option::of(prop::sample::select(vec![T1, T2, T3, "junk"])),
            any::<bool>(),
        )
            .prop_map(|(id, is_dir, remote_name, created, claimed)| Candidate {
                id,
                is_dir,
                remote_name,
                created_at: created.map(str::to_string),
                claimed,
            })
    }

    fn entries_and_shuffle() -> impl Strategy<Value = (Vec<Candidate>, Vec<usize>)> {
        prop::collection::vec(candidate_strategy(), 0..12).prop_flat_map(|v| {
            let n = v.len();
            (Just(v), Just((0..n).collect::<Vec<_>>()).prop_shuffle())
        })
    }

    proptest! {
        #[test]
        fn assign_names_invariants((entries, perm) in entries_and_shuffle()) {
            let names = assign_names(&entries);
            prop_assert_eq!(names.len(), entries.len());
            let unique: HashSet<&String> = names.iter().collect();
            prop_assert_eq!(unique.len(), names.len(), "not unique: {:?}", names);
            for n in &names {
                prop_assert!(!n.is_empty());
                prop_assert!(n.len() <= MAX_NAME_BYTES);
                prop_assert!(!n.contains('/') && !n.contains('\0'), "{:?}", n);
                prop_assert!(n != "." && n != "..");
            }
            // Permutation invariance: every entry keeps its name. Fully identical entries
            // are indistinguishable and may swap names, so compare sorted (entry, name) pairs.
            let shuffled: Vec<Candidate> = perm.iter().map(|&i| entries[i].clone()).collect();
            let names2 = assign_names(&shuffled);
            let pairs = |es: &[Candidate], ns: &[String]| {
                let mut v: Vec<_> = es
                    .iter()
                    .zip(ns)
                    .map(|(c, n)| (c.id.clone(), c.is_dir, c.remote_name.clone(), c.created_at.clone(), n.clone()))
                    .collect();
                v.sort();
                v
            };
            prop_assert_eq!(pairs(&shuffled, &names2), pairs(&entries, &names));
        }

        #[test]
        fn escape_round_trips(x in "[ab./\u{0}∕．日 ]{0,8}|.{0,40}") {
            let e = escape(&x);
            prop_assert!(!e.contains('/') && !e.contains('\0'));
            prop_assert!(e != "." && e != "..");
            // The mapping is ambiguous exactly for names already holding the display forms.
            let x_no_nul: String = x.chars().filter(|&c| c != '\0').collect();
            if !x_no_nul.contains(SLASH) && x_no_nul != DOT && x_no_nul != DOT_DOT {
                prop_assert_eq!(un(&e), x_no_nul);
            }
        }

        #[test]
        fn single_entry_keeps_escaped_name(x in "[a-z/.日]{1,80}") {
            let e = escape(&x);
            let names = assign_names(&[file("1a2b3c4d", &x, T1)]);
            prop_assert_eq!(&names[0], &e);
        }
    }
}
