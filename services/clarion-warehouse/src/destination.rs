//! Where the files go: a local directory (the default,
//! `<data-dir>/warehouse`, or a `file://` URL), through the `object_store`
//! crate so that an object store can be added by URL scheme.

use std::sync::Arc;

use bytes::Bytes;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::WarehouseError;

/// The directory files are written to before they are published; readers
/// glob `<table>/**/*.parquet` and never look here.
pub const STAGING: &str = "_staging";

fn io_error(path: &std::path::Path, e: std::io::Error) -> WarehouseError {
    WarehouseError::Config(format!("warehouse: {}: {e}", path.display()))
}

/// The warehouse root.
#[derive(Clone, Debug)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    /// What the URL named (for messages).
    pub url: String,
    /// The directory itself, for what the object store API does not show.
    dir: std::path::PathBuf,
}

impl Destination {
    /// `url` empty: `default_dir`. Otherwise `file:///ABS/PATH` or a plain
    /// path. Other schemes (`s3://`) are refused with what is supported.
    pub fn open(url: &str, default_dir: &std::path::Path) -> Result<Destination, WarehouseError> {
        let dir = if url.is_empty() {
            default_dir.to_path_buf()
        } else if let Some(rest) = url.strip_prefix("file://") {
            std::path::PathBuf::from(rest)
        } else if url.contains("://") {
            return Err(WarehouseError::Config(format!(
                "warehouse.url: {url:?}: only a directory (a path or file:///PATH) is supported \
                 by this build"
            )));
        } else {
            std::path::PathBuf::from(url)
        };
        std::fs::create_dir_all(&dir).map_err(|e| {
            WarehouseError::Config(format!(
                "warehouse.url: cannot create {}: {e}",
                dir.display()
            ))
        })?;
        let fs = LocalFileSystem::new_with_prefix(&dir).map_err(|e| {
            WarehouseError::Config(format!("warehouse.url: {}: {e}", dir.display()))
        })?;
        Ok(Destination {
            store: Arc::new(fs),
            url: dir.display().to_string(),
            dir,
        })
    }

    /// Writes a whole object. On a directory the local store writes a
    /// temporary file and renames it, so a reader never sees half a file.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) -> Result<(), WarehouseError> {
        self.store
            .put(&Path::from(path), PutPayload::from(Bytes::from(bytes)))
            .await?;
        Ok(())
    }

    /// Moves a staged file to its published name. `Ok(false)`: nothing at
    /// `from` (already moved by an earlier attempt).
    pub async fn rename(&self, from: &str, to: &str) -> Result<bool, WarehouseError> {
        match self.store.rename(&Path::from(from), &Path::from(to)).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes an object if it is there.
    pub async fn delete(&self, path: &str) -> Result<(), WarehouseError> {
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every file under `_staging/` whose name starts with `prefix`,
    /// and returns how many. A put a crash cut short leaves the local
    /// store's own temporary file (`<name>#<n>`), which no staged note
    /// names and listing does not show: this finds those too.
    pub fn sweep_staging(&self, prefix: &str) -> Result<usize, WarehouseError> {
        let dir = self.dir.join(STAGING);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io_error(&dir, e)),
        };
        let mut removed = 0;
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&dir, e))?;
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                let path = entry.path();
                match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error(&path, e)),
                }
            }
        }
        Ok(removed)
    }

    /// Every object under `prefix` (tests and tools).
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, WarehouseError> {
        use futures::TryStreamExt;
        let metas: Vec<_> = self
            .store
            .list(Some(&Path::from(prefix)))
            .try_collect()
            .await?;
        let mut out: Vec<String> = metas.into_iter().map(|m| m.location.to_string()).collect();
        out.sort();
        Ok(out)
    }
}
