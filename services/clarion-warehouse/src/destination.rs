//! Where the files go: a local directory (the default,
//! `<data-dir>/warehouse`, or a `file://` URL) or an S3-compatible object
//! store (`s3://bucket/prefix`, with the `s3` feature), through the
//! `object_store` crate.
//!
//! The exporter's protocol is the same on both (see [`crate::exporter`]):
//! a file is written under `_staging/`, then moved to its name once the
//! manifest naming it is committed. A directory moves it with a rename; an
//! object store has none, so `object_store` copies it (server side) and
//! deletes the staged object. A crash between the two leaves both: the
//! restart copies again (the same bytes under the same name) and deletes.

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

/// How to reach an S3-compatible store; empty fields fall back to the
/// `AWS_*` environment variables (`AWS_ENDPOINT`, `AWS_REGION`,
/// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
/// `AWS_ALLOW_HTTP`) and then to the instance's credentials.
#[derive(Clone, Default, PartialEq)]
pub struct S3Options {
    /// `http(s)://host:port` of a non-AWS store (MinIO, Ceph, moto, R2).
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Allows `http://` endpoints (a local store); off, only `https://`.
    pub allow_http: bool,
}

/// Never prints the secret.
impl std::fmt::Debug for S3Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |v: &str| if v.is_empty() { "" } else { "***" };
        f.debug_struct("S3Options")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &hidden(&self.secret_access_key))
            .field("session_token", &hidden(&self.session_token))
            .field("allow_http", &self.allow_http)
            .finish()
    }
}

/// What the destination is, for what the object store API does not show.
#[derive(Clone, Debug)]
enum Root {
    Dir(std::path::PathBuf),
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    ObjectStore,
}

/// The warehouse root.
#[derive(Clone, Debug)]
pub struct Destination {
    store: Arc<dyn ObjectStore>,
    /// What the URL named (for messages).
    pub url: String,
    root: Root,
}

impl Destination {
    /// A directory: `url` empty (then `default_dir`), `file:///ABS/PATH`
    /// or a plain path. `s3://` URLs need [`Destination::open_with`].
    pub fn open(url: &str, default_dir: &std::path::Path) -> Result<Destination, WarehouseError> {
        Destination::open_with(url, default_dir, &S3Options::default())
    }

    /// A directory as in [`Destination::open`], or `s3://bucket[/prefix]`
    /// reached with `s3`. Other schemes are refused with what is supported.
    pub fn open_with(
        url: &str,
        default_dir: &std::path::Path,
        s3: &S3Options,
    ) -> Result<Destination, WarehouseError> {
        if let Some(rest) = url.strip_prefix("s3://") {
            return open_s3(url, rest, s3);
        }
        let dir = if url.is_empty() {
            default_dir.to_path_buf()
        } else if let Some(rest) = url.strip_prefix("file://") {
            std::path::PathBuf::from(rest)
        } else if url.contains("://") {
            return Err(WarehouseError::Config(format!(
                "warehouse.url: {url:?}: a directory (a path or file:///PATH) or \
                 s3://BUCKET/PREFIX is supported"
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
            root: Root::Dir(dir),
        })
    }

    /// The object store itself (tests and tools read the files with it).
    pub fn store(&self) -> Arc<dyn ObjectStore> {
        self.store.clone()
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
    /// and returns how many.
    pub async fn sweep_staging(&self, prefix: &str) -> Result<usize, WarehouseError> {
        match &self.root {
            Root::Dir(dir) => sweep_dir(&dir.join(STAGING), prefix),
            Root::ObjectStore => {
                let mut removed = 0;
                for name in self.list(STAGING).await? {
                    let file = name.rsplit('/').next().unwrap_or_default();
                    if file.starts_with(prefix) {
                        self.delete(&name).await?;
                        removed += 1;
                    }
                }
                Ok(removed)
            }
        }
    }

    /// A whole object (tests and tools).
    pub async fn get(&self, path: &str) -> Result<Vec<u8>, WarehouseError> {
        let got = self.store.get(&Path::from(path)).await?;
        Ok(got.bytes().await?.to_vec())
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

/// A put a crash cut short leaves the local store's own temporary file
/// (`<name>#<n>`), which no staged note names and listing does not show:
/// reading the directory finds those too.
fn sweep_dir(dir: &std::path::Path, prefix: &str) -> Result<usize, WarehouseError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error(dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| io_error(dir, e))?;
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

/// `s3://bucket[/prefix]`: the bucket through `object_store`'s S3 client,
/// the prefix as a [`PrefixStore`](object_store::prefix::PrefixStore).
#[cfg(feature = "s3")]
fn open_s3(url: &str, rest: &str, o: &S3Options) -> Result<Destination, WarehouseError> {
    use object_store::aws::AmazonS3Builder;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(WarehouseError::Config(format!(
            "warehouse.url: {url:?}: no bucket (s3://BUCKET/PREFIX)"
        )));
    }
    let mut b = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let set = |v: &str| (!v.is_empty()).then(|| v.to_string());
    if let Some(v) = set(&o.endpoint) {
        b = b.with_endpoint(v);
    }
    if let Some(v) = set(&o.region) {
        b = b.with_region(v);
    }
    if let Some(v) = set(&o.access_key_id) {
        b = b.with_access_key_id(v);
    }
    if let Some(v) = set(&o.secret_access_key) {
        b = b.with_secret_access_key(v);
    }
    if let Some(v) = set(&o.session_token) {
        b = b.with_token(v);
    }
    if o.allow_http {
        b = b.with_allow_http(true);
    }
    let s3 = b
        .build()
        .map_err(|e| WarehouseError::Config(format!("warehouse.url: {url:?}: {e}")))?;
    let prefix = prefix.trim_matches('/');
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        Arc::new(s3)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(s3, prefix))
    };
    Ok(Destination {
        store,
        url: url.to_string(),
        root: Root::ObjectStore,
    })
}

#[cfg(not(feature = "s3"))]
fn open_s3(url: &str, _rest: &str, _o: &S3Options) -> Result<Destination, WarehouseError> {
    Err(WarehouseError::Config(format!(
        "warehouse.url: {url:?}: this build has no S3 support (cargo feature `s3` of \
         clarion-warehouse, on in the `clarion` binary by default)"
    )))
}
