//! Remote deletes that wait: a file unlinked (or replaced) while someone still reads it is
//! deleted at its last close. Until then it is recorded here, one empty file per remote
//! id under `<cache_dir>/deletes/`, so that a crash in between does not bring the file
//! back under its name: the next mount hides it from listings and deletes it.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

pub struct Deletes {
    dir: PathBuf,
}

impl Deletes {
    /// Creates the directory (0700) if needed.
    pub fn open(dir: PathBuf) -> std::io::Result<Deletes> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        Ok(Deletes { dir })
    }

    /// Ids are the service's strings: hex-encoded, any id is one safe file name.
    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(hex::encode(id))
    }

    /// `id` is to be deleted once its readers are done.
    pub fn record(&self, id: &str) -> std::io::Result<()> {
        fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(self.path(id))
            .map(|_| ())
    }

    /// `id` is deleted (or was never recorded).
    pub fn done(&self, id: &str) {
        match fs::remove_file(self.path(id)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("could not clear the delete record of {id}: {e}"),
        }
    }

    /// Every id still to delete (left by an earlier run).
    pub fn list(&self) -> Vec<String> {
        let Ok(rd) = fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        rd.filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().to_str().and_then(|n| hex::decode(n).ok()))
            .filter_map(|b| String::from_utf8(b).ok())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_until_done() {
        let tmp = tempfile::tempdir().unwrap();
        let d = Deletes::open(tmp.path().join("deletes")).unwrap();
        d.record("a/b").unwrap();
        d.record("c").unwrap();
        d.done("c");
        d.done("never");
        let d = Deletes::open(tmp.path().join("deletes")).unwrap();
        assert_eq!(d.list(), vec!["a/b".to_string()]);
    }
}
