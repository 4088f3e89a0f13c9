//! [`Core::build`]: the one constructor of the filesystem core, used by the mount and by the
//! tests. It wires the parts together: the namespace, the read path, the write path, and
//! the background task that applies uploads landing later.

use std::sync::{Arc, Weak};

use crate::api::MediaClient;
use crate::err;
use crate::fs::config::CoreConfig;
use crate::fs::error::Result;
use crate::fs::files::OpenFiles;
use crate::fs::filesystem::MediaFs;
use crate::fs::handles::Handles;
use crate::fs::local_attrs::LocalAttrs;
use crate::fs::read::Reader;
use crate::fs::readers::OpenReaders;
use crate::fs::superblock::Superblock;
use crate::fs::write::Uploader;

pub struct Core;

impl Core {
    /// Builds the namespace, the read path and (unless read-only) the write path over
    /// `client`, recovers uploads left by an earlier run and starts the background task that
    /// applies uploads landing later. Must be called inside a Tokio runtime.
    pub fn build(config: CoreConfig, client: Arc<dyn MediaClient>) -> Result<Arc<MediaFs>> {
        let readers = Arc::new(OpenReaders::default());
        let reader = Reader::new(client.clone(), config.read);
        let uploader = match config.write {
            Some(wc) if !config.fs.read_only => {
                let u = Uploader::new(client.clone(), wc, readers.clone())?;
                u.recover();
                Some(u)
            }
            _ => None,
        };
        let landed = uploader.as_ref().and_then(|u| u.take_landed());
        // A read-only mount shows what a writable one stored, but creates nothing.
        let attrs = match &config.fs.attrs_db {
            Some(p) if !config.fs.read_only || p.exists() => {
                Some(LocalAttrs::open(p).map_err(|e| err!(Io, "local attributes: {e:#}"))?)
            }
            _ => None,
        };
        let sb = Arc::new(Superblock::new(
            client,
            reader.clone(),
            readers.clone(),
            config.fs,
            attrs,
            uploader.as_ref().map(|u| u.deletes()),
        ));
        // Directory times are stored within a second (`LocalAttrs::set_soon`).
        let weak_sb: Weak<Superblock> = Arc::downgrade(&sb);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                match weak_sb.upgrade() {
                    Some(sb) => sb.flush_attrs(),
                    None => return,
                }
            }
        });
        let files = Arc::new(OpenFiles::new(
            sb.clone(),
            Handles::new(readers),
            reader.clone(),
            uploader,
        ));
        // The task ends when the uploader goes (its channel closes) or the core does.
        if let Some(mut landed) = landed {
            let weak: Weak<OpenFiles> = Arc::downgrade(&files);
            tokio::spawn(async move {
                while let Some(l) = landed.recv().await {
                    match weak.upgrade() {
                        Some(files) => files.landed(l),
                        None => return,
                    }
                }
            });
        }
        Ok(Arc::new(MediaFs::from_parts(sb, files, reader)))
    }
}
