//! Local attributes: what `chmod`, `chown` and `utimens` set, kept on this machine.
//!
//! The service stores no mode, owner or times a user can set, yet `rsync -a`, `cp -p`,
//! `tar x` and `make` need them to stick. They are kept in a small SQLite database in the
//! cache directory, keyed by the remote object's id (a remote file's bytes never change,
//! so what is stored for an id stays right), and shown on top of the service's values.
//! An overwrite gives a file a new id: [`LocalAttrs::carry`] moves the row along.
//!
//! Every row is also held in memory, so `getattr` never touches the disk: the table only
//! holds objects someone changed on this machine. Writes go through to the database at
//! once (WAL), so they survive unmount, remount and a crash; except a directory's times,
//! which every create in it changes: those are written within a second
//! ([`LocalAttrs::set_soon`]), and a crash may lose that second.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rusqlite::{params, Connection};

/// What was set locally for one object; `None` = not set, show the default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    /// Permission bits only (`0o7777`).
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub atime: Option<SystemTime>,
    pub mtime: Option<SystemTime>,
    /// When any of the above last changed (a change of attributes moves ctime).
    pub ctime: Option<SystemTime>,
}

impl Stored {
    /// `self` with every field `update` sets replaced.
    pub fn merged(self, update: &Stored) -> Stored {
        Stored {
            mode: update.mode.or(self.mode),
            uid: update.uid.or(self.uid),
            gid: update.gid.or(self.gid),
            atime: update.atime.or(self.atime),
            mtime: update.mtime.or(self.mtime),
            ctime: update.ctime.or(self.ctime),
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Stored::default()
    }
}

/// The store. Cheap to query (memory), durable on every change (SQLite).
pub struct LocalAttrs {
    inner: Mutex<Inner>,
}

struct Inner {
    db: Connection,
    rows: HashMap<String, Stored>,
    /// Rows changed by `set_soon` and not written yet.
    unsaved: HashSet<String>,
}

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS attrs (
    id TEXT PRIMARY KEY,
    mode INTEGER, uid INTEGER, gid INTEGER,
    atime_ns INTEGER, mtime_ns INTEGER, ctime_ns INTEGER
)";

fn to_ns(t: Option<SystemTime>) -> Option<i64> {
    t.map(|t| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    })
}

fn from_ns(ns: Option<i64>) -> Option<SystemTime> {
    ns.map(|n| {
        let d = Duration::from_nanos(n.unsigned_abs());
        if n >= 0 {
            UNIX_EPOCH + d
        } else {
            UNIX_EPOCH - d
        }
    })
}

impl LocalAttrs {
    /// Opens (or creates, mode 0600) `path` and loads every row. A symlink planted at
    /// `path` is refused rather than followed.
    pub fn open(path: &Path) -> anyhow::Result<LocalAttrs> {
        // Create it private before SQLite opens it (SQLite would use the umask).
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        drop(f);
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "NORMAL")?;
        db.execute(SCHEMA, [])?;
        let mut rows = HashMap::new();
        {
            let mut stmt =
                db.prepare("SELECT id, mode, uid, gid, atime_ns, mtime_ns, ctime_ns FROM attrs")?;
            let mut q = stmt.query([])?;
            while let Some(r) = q.next()? {
                let id: String = r.get(0)?;
                rows.insert(
                    id,
                    Stored {
                        mode: r.get(1)?,
                        uid: r.get(2)?,
                        gid: r.get(3)?,
                        atime: from_ns(r.get(4)?),
                        mtime: from_ns(r.get(5)?),
                        ctime: from_ns(r.get(6)?),
                    },
                );
            }
        }
        Ok(LocalAttrs {
            inner: Mutex::new(Inner {
                db,
                rows,
                unsaved: HashSet::new(),
            }),
        })
    }

    /// What is stored for `id` (all `None` when nothing is).
    pub fn get(&self, id: &str) -> Stored {
        self.inner
            .lock()
            .unwrap()
            .rows
            .get(id)
            .copied()
            .unwrap_or_default()
    }

    /// Sets the fields `update` sets; returns the merged result.
    pub fn set(&self, id: &str, update: &Stored) -> rusqlite::Result<Stored> {
        let mut inner = self.inner.lock().unwrap();
        let merged = inner.merged(id, update);
        write_row(&inner.db, id, &merged)?;
        inner.rows.insert(id.to_string(), merged);
        Ok(merged)
    }

    /// Like [`LocalAttrs::set`], but written by the next [`LocalAttrs::flush`] (the mount
    /// flushes every second and at unmount): for a directory's times, which every create,
    /// rename and unlink in it changes (one transaction per create was 6 % of the daemon's
    /// time in `cp -r` of small files).
    pub fn set_soon(&self, id: &str, update: &Stored) -> Stored {
        let mut inner = self.inner.lock().unwrap();
        let merged = inner.merged(id, update);
        inner.rows.insert(id.to_string(), merged);
        inner.unsaved.insert(id.to_string());
        merged
    }

    /// Writes the rows [`LocalAttrs::set_soon`] changed, in one transaction.
    pub fn flush(&self) -> rusqlite::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        if inner.unsaved.is_empty() {
            return Ok(());
        }
        let Inner { db, rows, unsaved } = &mut *inner;
        let tx = db.unchecked_transaction()?;
        for id in unsaved.iter() {
            if let Some(row) = rows.get(id) {
                write_row(&tx, id, row)?;
            }
        }
        tx.commit()?;
        unsaved.clear();
        Ok(())
    }

    /// `old` became `new` (an overwrite made a new remote file): `new` gets `old`'s row,
    /// with the fields of `over` (e.g. a fresh mtime) on top. `old`'s row stays until
    /// [`LocalAttrs::remove`], as the old file may still be read.
    pub fn carry(&self, old: &str, new: &str, over: &Stored) -> rusqlite::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        let Some(row) = inner.rows.get(old).copied() else {
            return Ok(());
        };
        let merged = row.merged(over);
        write_row(&inner.db, new, &merged)?;
        inner.rows.insert(new.to_string(), merged);
        Ok(())
    }

    /// The object is gone.
    pub fn remove(&self, id: &str) -> rusqlite::Result<()> {
        let mut inner = self.inner.lock().unwrap();
        inner.unsaved.remove(id);
        if inner.rows.remove(id).is_some() {
            inner.db.execute("DELETE FROM attrs WHERE id = ?1", [id])?;
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    /// The row of `id` with the fields `update` sets on top.
    fn merged(&self, id: &str, update: &Stored) -> Stored {
        self.rows
            .get(id)
            .copied()
            .unwrap_or_default()
            .merged(update)
    }
}

fn write_row(db: &Connection, id: &str, s: &Stored) -> rusqlite::Result<()> {
    db.execute(
        "INSERT INTO attrs (id, mode, uid, gid, atime_ns, mtime_ns, ctime_ns)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(id) DO UPDATE SET mode = ?2, uid = ?3, gid = ?4,
             atime_ns = ?5, mtime_ns = ?6, ctime_ns = ?7",
        params![
            id,
            s.mode,
            s.uid,
            s.gid,
            to_ns(s.atime),
            to_ns(s.mtime),
            to_ns(s.ctime)
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> SystemTime {
        from_ns(Some(secs * 1_000_000_000)).unwrap()
    }

    #[test]
    fn set_get_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attrs.db");
        {
            let a = LocalAttrs::open(&path).unwrap();
            assert!(a.get("f1").is_empty());
            a.set(
                "f1",
                &Stored {
                    mode: Some(0o600),
                    ..Default::default()
                },
            )
            .unwrap();
            let m = a
                .set(
                    "f1",
                    &Stored {
                        mtime: Some(t(1_000_000_000)),
                        uid: Some(7),
                        ..Default::default()
                    },
                )
                .unwrap();
            assert_eq!(m.mode, Some(0o600), "earlier fields are kept");
            assert_eq!(m.uid, Some(7));
        }
        let a = LocalAttrs::open(&path).unwrap();
        let s = a.get("f1");
        assert_eq!(s.mode, Some(0o600));
        assert_eq!(s.uid, Some(7));
        assert_eq!(s.gid, None);
        assert_eq!(s.mtime, Some(t(1_000_000_000)));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the database is private");
    }

    #[test]
    fn set_soon_is_seen_at_once_and_stored_by_flush() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attrs.db");
        let update = Stored {
            mtime: Some(t(1_600_000_000)),
            ..Default::default()
        };
        {
            let a = LocalAttrs::open(&path).unwrap();
            a.set_soon("d1", &update);
            a.set_soon("d2", &update);
            assert_eq!(a.get("d1").mtime, update.mtime);
            // Not on disk before a flush (a crash loses it).
            assert!(LocalAttrs::open(&path).unwrap().get("d1").is_empty());
            a.remove("d2").unwrap();
            a.flush().unwrap();
        }
        let a = LocalAttrs::open(&path).unwrap();
        assert_eq!(a.get("d1").mtime, update.mtime);
        assert!(a.get("d2").is_empty(), "a removed row is not written back");
    }

    #[test]
    fn times_before_1970_and_nanoseconds_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attrs.db");
        let old = UNIX_EPOCH - Duration::new(86_400 * 365 * 10, 123_456_789);
        let new = UNIX_EPOCH + Duration::new(1_700_000_000, 987_654_321);
        LocalAttrs::open(&path)
            .unwrap()
            .set(
                "x",
                &Stored {
                    atime: Some(old),
                    mtime: Some(new),
                    ..Default::default()
                },
            )
            .unwrap();
        let s = LocalAttrs::open(&path).unwrap().get("x");
        assert_eq!(s.atime, Some(old));
        assert_eq!(s.mtime, Some(new));
    }

    #[test]
    fn carry_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("attrs.db");
        let a = LocalAttrs::open(&path).unwrap();
        a.set(
            "old",
            &Stored {
                mode: Some(0o640),
                mtime: Some(t(5)),
                ..Default::default()
            },
        )
        .unwrap();
        a.carry(
            "old",
            "new",
            &Stored {
                mtime: Some(t(9)),
                ..Default::default()
            },
        )
        .unwrap();
        a.carry("absent", "other", &Stored::default()).unwrap();
        assert!(a.get("other").is_empty());
        a.remove("old").unwrap();
        drop(a);
        let a = LocalAttrs::open(&path).unwrap();
        assert!(a.get("old").is_empty());
        let n = a.get("new");
        assert_eq!(n.mode, Some(0o640));
        assert_eq!(n.mtime, Some(t(9)));
        assert_eq!(a.len(), 1);
    }

    #[test]
    fn planted_symlink_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        let path = dir.path().join("attrs.db");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(
            LocalAttrs::open(&path).is_err(),
            "a planted link is refused"
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
    }
}
