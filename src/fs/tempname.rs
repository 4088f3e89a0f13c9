//! Names that programs give the temporary file of a save-through-rename (write a temp
//! file, close it, rename it over the real name). The write path holds back the upload
//! of a new file with such a name for a moment, so that the rename that usually follows
//! uploads it once, under its final name (see SEMANTICS.md, "Saves through a temporary
//! file"). A false positive only delays that one upload; a miss costs a second upload.

/// Whether `name` (one path component, as the service spells it) looks like the
/// temporary file of a program that saves by renaming.
pub fn is_temp_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    const SUFFIXES: &[&str] = &[
        ".tmp",        // python `name.tmp`, LibreOffice, many editors
        ".temp",       //
        ".lock",       // git (`index.lock`, `HEAD.lock`, refs)
        ".part",       // curl, wget, browsers
        ".partial",    //
        ".crdownload", // Chrome
        ".crswap",     // Chrome's File System Access API
        ".download",   // Safari
        ".~tmp~",      // rsync --delay-updates
        ".kate-swp",   // Kate
    ];
    if SUFFIXES
        .iter()
        .any(|s| lower.len() > s.len() && lower.ends_with(s))
    {
        return true;
    }
    // GIO (gedit, Nautilus): `.goutputstream-XXXXXX`.
    if name.starts_with(".goutputstream-") {
        return true;
    }
    // rsync --delay-updates' directory, vim's probe file, emacs auto-save files.
    if name == ".~tmp~"
        || name == "4913"
        || (name.len() > 2 && name.starts_with('#') && name.ends_with('#'))
    {
        return true;
    }
    // rsync: `.NAME.XXXXXX` (six random letters or digits after the last dot).
    if let Some(rest) = name.strip_prefix('.') {
        if let Some((stem, random)) = rest.rsplit_once('.') {
            if !stem.is_empty() && is_random(random, 6) {
                return true;
            }
        }
    }
    // sed -i: `sedXXXXXX`; zip: `ziXXXXXX`; mktemp(1): `tmp.XXXXXXXXXX`.
    if prefixed_random(name, "sed", 6) || prefixed_random(name, "zi", 6) {
        return true;
    }
    if prefixed_random(name, "tmp.", 10) {
        return true;
    }
    // git's loose objects and packs before their rename: `tmp_obj_XXXXXX`, ...
    if ["tmp_obj_", "tmp_pack_", "tmp_idx_"]
        .iter()
        .any(|p| prefixed_random(name, p, 6))
    {
        return true;
    }
    // python tempfile (mkstemp, NamedTemporaryFile): `tmpXXXXXXXX` plus an optional
    // suffix, the random part from `[a-z0-9_]`.
    if let Some(rest) = name.strip_prefix("tmp") {
        let random: String = rest.chars().take(8).collect();
        let after = &rest[random.len()..];
        if random.len() == 8
            && random
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && (after.is_empty() || after.starts_with('.'))
        {
            return true;
        }
    }
    false
}

/// `s` is exactly `len` ASCII letters or digits.
fn is_random(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn prefixed_random(name: &str, prefix: &str, len: usize) -> bool {
    name.strip_prefix(prefix).is_some_and(|r| is_random(r, len))
}

#[cfg(test)]
mod tests {
    use super::is_temp_name;

    #[test]
    fn temp_names_of_common_programs() {
        for n in [
            ".a.jpg.B03QRq",     // rsync
            ".notes.txt.x9Zk2a", // rsync
            "sedAbC123",         // sed -i
            "tmpk3j_x0ab",       // python tempfile.mkstemp
            "tmpa1b2c3d4.txt",   // python NamedTemporaryFile(suffix=".txt")
            "report.docx.tmp",   // write to name.tmp, then os.replace
            "data.TMP",
            "ziAb12Cd", // zip
            "index.lock",
            "HEAD.lock", // git
            "tmp_obj_a1B2c3",
            "tmp_pack_ZZ9x0a",
            "big.iso.part",
            "file.crdownload",
            ".goutputstream-ABC123",
            "tmp.AbCdEf1234", // mktemp
            "4913",           // vim's write probe
            "#notes.txt#",    // emacs auto-save
        ] {
            assert!(is_temp_name(n), "{n} should be a temp name");
        }
    }

    #[test]
    fn ordinary_names_are_not_temp_names() {
        for n in [
            "a.jpg",
            "notes.txt",
            ".bashrc",
            ".config",
            "sed",
            "sedimentary.txt",
            "tmp",
            "tmp.txt",
            ".tmp",
            ".lock",
            "tmpfile",
            "temporary.jpg",
            "zip.txt",
            ".hidden.md",
            "photo.2020",
            "tmpABCDEFGH", // python's random part is lower case
            "4914",
            "#",
            "part",
        ] {
            assert!(!is_temp_name(n), "{n} should not be a temp name");
        }
    }
}
