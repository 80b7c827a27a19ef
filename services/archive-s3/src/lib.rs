//! tern-archive-s3: the compliance archive on S3-compatible object storage
//! (AWS S3, SeaweedFS, MinIO, Ceph RGW, ...) through `object_store`.
//!
//! Location: `s3://bucket[/prefix]`. Credentials, region and endpoint come
//! from the usual variables: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_REGION` (default `us-east-1`), and `AWS_ENDPOINT` (or
//! `AWS_ENDPOINT_URL`) for a server other than AWS; an `http://` endpoint is
//! allowed. Requests are path-style, which every S3-compatible server takes.
//!
//! A PUT replaces an object whole: readers see the old object, or the new
//! one, never part of it; so segments, indexes and manifests are written
//! with one PUT each, as the archive's write-once rule needs.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::TryStreamExt as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload, RetryConfig};
use tern_archive::{Archive, ArchiveError, ObjectStorage};

/// Where the archive is and how to reach it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct S3Config {
    pub bucket: String,
    /// Key prefix of every object ("" for the bucket's root).
    pub prefix: String,
    /// Server URL for S3-compatible servers; None: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
}

impl S3Config {
    /// Parses `s3://bucket[/prefix]`, and takes the rest from the
    /// environment (see the crate docs).
    pub fn from_url_and_env(url: &str) -> Result<S3Config, ArchiveError> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| ArchiveError::Invalid(format!("archive {url:?} is not an s3:// URL")))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(ArchiveError::Invalid(format!(
                "archive {url:?} names no bucket: use s3://bucket[/prefix]"
            )));
        }
        let var = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
        };
        Ok(S3Config {
            bucket: bucket.to_owned(),
            prefix: prefix.trim_matches('/').to_owned(),
            endpoint: var(&["AWS_ENDPOINT", "AWS_ENDPOINT_URL"]),
            region: var(&["AWS_REGION", "AWS_DEFAULT_REGION"]),
            access_key_id: var(&["AWS_ACCESS_KEY_ID"]),
            secret_access_key: var(&["AWS_SECRET_ACCESS_KEY"]),
        })
    }
}

/// Objects in an S3 bucket, under a prefix.
#[derive(Debug)]
pub struct S3Storage {
    store: Arc<dyn ObjectStore>,
    config: S3Config,
}

fn storage_error(what: &str, name: &str, e: object_store::Error) -> ArchiveError {
    ArchiveError::Storage(format!("cannot {what} {name}: {e}"))
}

impl S3Storage {
    pub fn new(config: S3Config) -> Result<S3Storage, ArchiveError> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&config.bucket)
            .with_region(config.region.as_deref().unwrap_or("us-east-1"))
            .with_virtual_hosted_style_request(false)
            // A few quick retries: the archiver retries a failed segment
            // write itself, with backoff, for as long as the outage lasts.
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(10),
                ..Default::default()
            });
        if let Some(endpoint) = &config.endpoint {
            b = b
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let (Some(key), Some(secret)) = (&config.access_key_id, &config.secret_access_key) {
            b = b.with_access_key_id(key).with_secret_access_key(secret);
        }
        let store = b
            .build()
            .map_err(|e| ArchiveError::Invalid(format!("archive s3://{}: {e}", config.bucket)))?;
        Ok(S3Storage {
            store: Arc::new(store),
            config,
        })
    }

    fn key(&self, name: &str) -> Path {
        if self.config.prefix.is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.config.prefix))
        }
    }

    /// The archive's own name of a listed key (the prefix taken off).
    fn name_of(&self, key: &Path) -> String {
        let key = key.as_ref();
        if self.config.prefix.is_empty() {
            key.to_owned()
        } else {
            key.strip_prefix(&format!("{}/", self.config.prefix))
                .unwrap_or(key)
                .to_owned()
        }
    }
}

/// Opens the archive at an `s3://` location (see the crate docs).
pub fn open(url: &str) -> Result<Archive, ArchiveError> {
    let storage = S3Storage::new(S3Config::from_url_and_env(url)?)?;
    Ok(Archive::new(Arc::new(storage)))
}

#[async_trait]
impl ObjectStorage for S3Storage {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), ArchiveError> {
        self.store
            .put(&self.key(name), PutPayload::from_bytes(bytes))
            .await
            .map_err(|e| storage_error("write", name, e))?;
        Ok(())
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError> {
        let read = async {
            let object = self.store.get(&self.key(name)).await?;
            object.bytes().await
        };
        match read.await {
            Ok(b) => Ok(Some(b)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(storage_error("read", name, e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        // Listing works on whole path segments: list the folder part, then
        // keep the names that start with the whole prefix.
        let folder = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let under = if folder.is_empty() && self.config.prefix.is_empty() {
            None
        } else if folder.is_empty() {
            Some(Path::from(self.config.prefix.as_str()))
        } else {
            Some(self.key(folder))
        };
        let listed: Vec<_> = self
            .store
            .list(under.as_ref())
            .try_collect()
            .await
            .map_err(|e| storage_error("list", prefix, e))?;
        let mut names: Vec<String> = listed
            .iter()
            .map(|meta| self.name_of(&meta.location))
            .filter(|n| n.starts_with(prefix))
            .collect();
        names.sort();
        Ok(names)
    }

    async fn delete(&self, name: &str) -> Result<(), ArchiveError> {
        match self.store.delete(&self.key(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(storage_error("delete", name, e)),
        }
    }

    fn describe(&self) -> String {
        match (&self.config.endpoint, self.config.prefix.as_str()) {
            (Some(e), p) => format!("s3://{}/{p} at {e}", self.config.bucket),
            (None, p) => format!("s3://{}/{p}", self.config.bucket),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_s3_url_names_the_bucket_and_the_prefix() {
        let c = S3Config::from_url_and_env("s3://archive/tern/prod/").unwrap();
        assert_eq!(
            (c.bucket.as_str(), c.prefix.as_str()),
            ("archive", "tern/prod")
        );
        let c = S3Config::from_url_and_env("s3://archive").unwrap();
        assert_eq!((c.bucket.as_str(), c.prefix.as_str()), ("archive", ""));
        assert!(S3Config::from_url_and_env("s3:///x").is_err());
        assert!(S3Config::from_url_and_env("/var/archive").is_err());
    }
}
