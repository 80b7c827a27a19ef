//! Where segments live: a local directory, or (later) S3-compatible object
//! storage. Both only need whole-object writes that are atomic and durable,
//! reads, listing by prefix and deletes, which is all the archive uses.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bytes::Bytes;

use crate::ArchiveError;

#[async_trait]
pub trait ObjectStorage: Send + Sync + 'static {
    /// Writes object `name` whole. When this returns it is durable, and a
    /// reader never sees part of it (a crash leaves the old object or none).
    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), ArchiveError>;

    /// The object's bytes; None if there is no such object.
    async fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError>;

    /// Names of the objects under `prefix` (e.g. `"manifests/"`), sorted.
    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError>;

    /// Removes the object; removing a missing object is not an error.
    async fn delete(&self, name: &str) -> Result<(), ArchiveError>;

    /// Where the objects are, for messages.
    fn describe(&self) -> String;
}

/// Objects as files under a directory: write a temporary file, fsync it,
/// rename it into place, fsync the directory.
#[derive(Debug, Clone)]
pub struct LocalDir {
    root: PathBuf,
}

impl LocalDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> Result<PathBuf, ArchiveError> {
        // Names are made by the archive; refuse anything that could leave the root.
        if name.is_empty()
            || name.starts_with('/')
            || name
                .split('/')
                .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(ArchiveError::Storage(format!(
                "invalid object name {name:?}"
            )));
        }
        Ok(self.root.join(name))
    }
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> ArchiveError {
    ArchiveError::Storage(format!("cannot {what} {}: {e}", path.display()))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ArchiveError> + Send + 'static,
) -> Result<T, ArchiveError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ArchiveError::Storage(format!("storage task failed: {e}")))?
}

#[async_trait]
impl ObjectStorage for LocalDir {
    async fn put(&self, name: &str, bytes: Bytes) -> Result<(), ArchiveError> {
        use std::io::Write as _;
        let path = self.path(name)?;
        let dir = path.parent().map(Path::to_path_buf).ok_or_else(|| {
            ArchiveError::Storage(format!("object path {} has no directory", path.display()))
        })?;
        blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|e| io_error("create", &dir, e))?;
            let tmp = dir.join(format!(
                ".{}.tmp-{:016x}",
                path.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("object"),
                rand::random::<u64>()
            ));
            let write = || -> std::io::Result<()> {
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)?;
                // The rename is durable once the directory is.
                std::fs::File::open(&dir)?.sync_all()
            };
            write().map_err(|e| {
                let _ = std::fs::remove_file(&tmp);
                io_error("write", &path, e)
            })
        })
        .await
    }

    async fn get(&self, name: &str) -> Result<Option<Bytes>, ArchiveError> {
        let path = self.path(name)?;
        blocking(move || match std::fs::read(&path) {
            Ok(b) => Ok(Some(Bytes::from(b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("read", &path, e)),
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, ArchiveError> {
        let (dir_part, file_prefix) = match prefix.rsplit_once('/') {
            Some((d, f)) => (d.to_owned(), f.to_owned()),
            None => (String::new(), prefix.to_owned()),
        };
        let dir = if dir_part.is_empty() {
            self.root.clone()
        } else {
            self.path(&dir_part)?
        };
        blocking(move || {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_error("list", &dir, e)),
            };
            let mut names = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| io_error("list", &dir, e))?;
                let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                    continue;
                };
                // Temporary files of unfinished writes are not objects.
                if name.starts_with('.') || !name.starts_with(&file_prefix) {
                    continue;
                }
                if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    names.push(if dir_part.is_empty() {
                        name
                    } else {
                        format!("{dir_part}/{name}")
                    });
                }
            }
            names.sort();
            Ok(names)
        })
        .await
    }

    async fn delete(&self, name: &str) -> Result<(), ArchiveError> {
        let path = self.path(name)?;
        blocking(move || match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete", &path, e)),
        })
        .await
    }

    fn describe(&self) -> String {
        self.root.display().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list_delete_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalDir::new(dir.path());
        assert_eq!(s.list("manifests/").await.unwrap(), Vec::<String>::new());
        s.put("manifests/2.json", Bytes::from_static(b"b"))
            .await
            .unwrap();
        s.put("manifests/1.json", Bytes::from_static(b"a"))
            .await
            .unwrap();
        s.put("segments/1.seg", Bytes::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(
            s.list("manifests/").await.unwrap(),
            vec!["manifests/1.json", "manifests/2.json"]
        );
        assert_eq!(s.get("manifests/1.json").await.unwrap().unwrap(), "a");
        s.delete("manifests/1.json").await.unwrap();
        s.delete("manifests/1.json").await.unwrap();
        assert_eq!(s.get("manifests/1.json").await.unwrap(), None);
        assert!(
            s.get("../escape").await.is_err(),
            "names cannot leave the root"
        );
    }
}
