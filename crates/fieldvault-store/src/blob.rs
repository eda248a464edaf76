//! Encrypted blob storage on `object_store`: a local directory by default, any S3-compatible
//! bucket when configured (M2, M9).
//!
//! Blobs are encrypted with [`fieldvault_crypto::stream`] before they leave the process, so the
//! object store (and anyone who copies the bucket) sees only ciphertext. Uploads stream in
//! constant memory: small blobs go in one `PUT`, larger ones switch to a multipart upload of
//! [`PART_LEN`] parts. Local writes are fsync'd (file and directory) before they count as stored.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use fieldvault_crypto::Key256;
use fieldvault_crypto::stream::{StreamOpener, StreamSealer};
use futures_util::{Stream, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};

use crate::StoreError;

/// Multipart part size: S3's minimum part size, and the most a single upload buffers.
pub const PART_LEN: usize = 5 * 1024 * 1024;
/// Parts in flight at once during a multipart upload.
const UPLOAD_CONCURRENCY: usize = 2;

/// Where blobs live.
#[derive(Clone, PartialEq, Eq)]
pub enum BlobSettings {
    /// A directory on local disk.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3(S3Settings),
}

impl std::fmt::Debug for BlobSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BlobSettings::Local(p) => write!(f, "Local({})", p.display()),
            BlobSettings::S3(s) => write!(f, "S3(s3://{}/{})", s.bucket, s.prefix),
        }
    }
}

/// Connection details for an S3-compatible store.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix inside the bucket (no leading or trailing `/`), may be empty.
    pub prefix: String,
    /// Endpoint URL for non-AWS servers (MinIO, Garage, s3s-fs…); `None` for AWS.
    pub endpoint: Option<String>,
    /// Region; most non-AWS servers accept anything.
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: fieldvault_crypto::SecretString,
    /// Allow `http://` endpoints (only sensible on loopback or a private network).
    pub allow_http: bool,
}

/// Parses `s3://bucket/prefix` into bucket and prefix.
pub fn parse_s3_url(url: &str) -> Result<(String, String), StoreError> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| StoreError::Setup(format!("blob_store {url:?} must start with s3://")))?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err(StoreError::Setup(format!(
            "blob_store {url:?} names no bucket"
        )));
    }
    Ok((bucket.to_owned(), prefix.trim_matches('/').to_owned()))
}

/// Facts about a stored blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobInfo {
    /// Plaintext bytes.
    pub size: u64,
    /// Bytes stored (ciphertext).
    pub stored_size: u64,
}

/// The encrypted blob store.
#[derive(Clone)]
pub struct BlobStore {
    inner: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    description: String,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlobStore({})", self.description)
    }
}

impl BlobStore {
    /// Opens (creating the directory if needed) the configured store.
    pub fn open(settings: &BlobSettings) -> Result<Self, StoreError> {
        match settings {
            BlobSettings::Local(dir) => {
                std::fs::create_dir_all(dir).map_err(|e| {
                    StoreError::Setup(format!(
                        "cannot create blob directory {}: {e}",
                        dir.display()
                    ))
                })?;
                let fs = object_store::local::LocalFileSystem::new_with_prefix(dir)
                    .map_err(|e| {
                        StoreError::Setup(format!("blob directory {}: {e}", dir.display()))
                    })?
                    .with_fsync(true)
                    .with_automatic_cleanup(true);
                Ok(Self {
                    inner: Arc::new(fs),
                    prefix: ObjectPath::default(),
                    description: format!("file://{}", dir.display()),
                })
            }
            BlobSettings::S3(s) => {
                let mut b = object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(&s.bucket)
                    .with_region(&s.region)
                    .with_access_key_id(&s.access_key_id)
                    .with_secret_access_key(s.secret_access_key.expose())
                    .with_allow_http(s.allow_http);
                if let Some(ep) = &s.endpoint {
                    b = b.with_endpoint(ep).with_virtual_hosted_style_request(false);
                }
                let store = b
                    .build()
                    .map_err(|e| StoreError::Setup(format!("S3 blob store: {e}")))?;
                Ok(Self {
                    inner: Arc::new(store),
                    prefix: ObjectPath::from(s.prefix.as_str()),
                    description: format!("s3://{}/{}", s.bucket, s.prefix),
                })
            }
        }
    }

    /// A human description (`file:///…` or `s3://bucket/prefix`) without credentials.
    pub fn describe(&self) -> &str {
        &self.description
    }

    fn path(&self, name: &str) -> Result<ObjectPath, StoreError> {
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(StoreError::Setup(format!("invalid blob name {name:?}")));
        }
        Ok(self
            .prefix
            .parts()
            .chain(ObjectPath::from(name).parts())
            .collect())
    }

    /// Encrypts and stores a stream of plaintext under `name`, bound to `aad`. Memory use is
    /// bounded by [`PART_LEN`] whatever the size. Returns sizes once the object is durable.
    pub async fn put_stream<S, E>(
        &self,
        key: &Key256,
        name: &str,
        aad: &[u8],
        mut body: S,
    ) -> Result<BlobInfo, StoreError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let path = self.path(name)?;
        let (mut sealer, mut buf) = StreamSealer::new(key, aad)?;
        let mut size = 0u64;
        let mut stored = 0u64;
        let mut upload: Option<WriteMultipart> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| StoreError::Backend(format!("reading upload: {e}")))?;
            size += chunk.len() as u64;
            sealer.update(&chunk, &mut buf)?;
            if buf.len() >= PART_LEN {
                let w = match upload.as_mut() {
                    Some(w) => w,
                    None => {
                        let up = self.inner.put_multipart(&path).await?;
                        upload.insert(WriteMultipart::new_with_chunk_size(up, PART_LEN))
                    }
                };
                w.wait_for_capacity(UPLOAD_CONCURRENCY).await?;
                w.write(&buf);
                stored += buf.len() as u64;
                buf.clear();
            }
        }
        sealer.finish(&mut buf)?;
        stored += buf.len() as u64;
        match upload {
            Some(mut w) => {
                w.write(&buf);
                w.finish().await?;
            }
            None => {
                self.inner.put(&path, PutPayload::from(buf)).await?;
            }
        }
        Ok(BlobInfo {
            size,
            stored_size: stored,
        })
    }

    /// Encrypts and stores an in-memory value.
    pub async fn put_bytes(
        &self,
        key: &Key256,
        name: &str,
        aad: &[u8],
        data: Bytes,
    ) -> Result<BlobInfo, StoreError> {
        let s = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(data)]);
        self.put_stream(key, name, aad, s).await
    }

    /// Streams the decrypted blob. Each yielded piece is authenticated; the stream ends with an
    /// error (never silently) if the stored object was truncated, altered or moved.
    pub async fn get_stream(
        &self,
        key: &Key256,
        name: &str,
        aad: &[u8],
    ) -> Result<impl Stream<Item = Result<Bytes, StoreError>> + Send + use<>, StoreError> {
        let path = self.path(name)?;
        let got = self.inner.get(&path).await?;
        let opener = StreamOpener::new(key, aad);
        let state = (got.into_stream(), Some(opener));
        Ok(futures_util::stream::unfold(
            state,
            |(mut inner, opener)| async move {
                let mut opener = opener?;
                loop {
                    match inner.next().await {
                        Some(Ok(ct)) => {
                            let mut out = Vec::new();
                            if let Err(e) = opener.update(&ct, &mut out) {
                                return Some((Err(StoreError::from(e)), (inner, None)));
                            }
                            if !out.is_empty() {
                                return Some((Ok(Bytes::from(out)), (inner, Some(opener))));
                            }
                        }
                        Some(Err(e)) => return Some((Err(StoreError::from(e)), (inner, None))),
                        None => {
                            let mut out = Vec::new();
                            return match opener.finish(&mut out) {
                                Ok(()) => Some((Ok(Bytes::from(out)), (inner, None))),
                                Err(e) => Some((Err(StoreError::from(e)), (inner, None))),
                            };
                        }
                    }
                }
            },
        ))
    }

    /// Reads and decrypts a whole blob into memory (for small blobs and tests).
    pub async fn get_bytes(
        &self,
        key: &Key256,
        name: &str,
        aad: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        let mut s = std::pin::pin!(self.get_stream(key, name, aad).await?);
        let mut out = Vec::new();
        while let Some(piece) = s.next().await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }

    /// Raw stored bytes (ciphertext), for backups and tamper tests.
    pub async fn get_raw(&self, name: &str) -> Result<Bytes, StoreError> {
        Ok(self.inner.get(&self.path(name)?).await?.bytes().await?)
    }

    /// Whether an object of that name is stored.
    pub async fn exists(&self, name: &str) -> Result<bool, StoreError> {
        match self.inner.head(&self.path(name)?).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Overwrites the raw stored bytes (restores, and tests that simulate tampering).
    pub async fn put_raw(&self, name: &str, data: Bytes) -> Result<(), StoreError> {
        self.inner
            .put(&self.path(name)?, PutPayload::from(data))
            .await?;
        Ok(())
    }

    /// Names of the stored objects under `prefix` (`""` for all), sorted, relative to this
    /// store's own prefix. Temporary files of unfinished local uploads are left out.
    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let base = if prefix.is_empty() {
            self.prefix.clone()
        } else {
            self.path(prefix)?
        };
        let skip = self.prefix.parts().count();
        let mut s = self.inner.list(Some(&base));
        let mut out = Vec::new();
        while let Some(m) = s.next().await {
            let m = m?;
            let parts: Vec<String> = m
                .location
                .parts()
                .skip(skip)
                .map(|p| p.as_ref().to_owned())
                .collect();
            let name = parts.join("/");
            if name.is_empty() || name.starts_with('.') || name.contains('#') {
                continue;
            }
            out.push(name);
        }
        out.sort();
        Ok(out)
    }

    /// Deletes a blob; deleting a missing blob is not an error.
    pub async fn delete(&self, name: &str) -> Result<(), StoreError> {
        match self.inner.delete(&self.path(name)?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Proves the store answers: a `HEAD` of a name that need not exist.
    pub async fn health(&self) -> Result<(), StoreError> {
        match self.inner.head(&self.path(".health")?).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(StoreError::Unavailable(e.to_string())),
        }
    }
}
