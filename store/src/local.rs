use crate::{check_key, sha256_hex, ObjectInfo, ObjectStore, StoreError};
use async_trait::async_trait;
use bytes::Bytes;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Objects as files below `root`. Writes go to a temporary file that is
/// fsynced, renamed into place, and the directory fsynced.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Result<Self, StoreError> {
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        check_key(key)?;
        Ok(self.root.join(key))
    }
}

fn put_sync(path: &Path, data: &[u8]) -> Result<(), std::io::Error> {
    let dir = path
        .parent()
        .ok_or_else(|| std::io::Error::other("key has no parent"))?;
    std::fs::create_dir_all(dir)?;
    let mut tmp = tempfile_in(dir)?;
    tmp.1.write_all(data)?;
    tmp.1.sync_all()?;
    drop(tmp.1);
    std::fs::rename(&tmp.0, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        ".tmp-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let p = dir.join(name);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&p)?;
    Ok((p, f))
}

fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in rd {
        let entry = entry?;
        let p = entry.path();
        if entry.file_type()?.is_dir() {
            walk(&p, root, out)?;
        } else if !entry.file_name().to_string_lossy().starts_with(".tmp-") {
            if let Ok(rel) = p.strip_prefix(root) {
                out.push(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    Ok(())
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn put(&self, key: &str, data: Bytes, sha256: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let expected = sha256.to_ascii_lowercase();
        tokio::task::spawn_blocking(move || {
            let actual = sha256_hex(&data);
            if actual != expected {
                return Err(StoreError::Integrity { expected, actual });
            }
            put_sync(&path, &data).map_err(StoreError::from)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::read(&path).await {
            Ok(v) => Ok(Bytes::from(v)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::NotFound),
            Err(e) => Err(e.into()),
        }
    }

    async fn head(&self, key: &str) -> Result<Option<ObjectInfo>, StoreError> {
        let path = self.path(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(ObjectInfo {
                size: m.len(),
                sha256: None,
            })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            walk(&root, &root, &mut out)?;
            out.retain(|k| k.starts_with(&prefix));
            out.sort();
            Ok(out)
        })
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))?
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_list() {
        let dir = tempfile::tempdir().unwrap();
        let s = LocalStore::new(dir.path().to_path_buf()).unwrap();
        let data = Bytes::from_static(b"hello");
        s.put("studies/1/a.dcm", data.clone(), &sha256_hex(&data))
            .await
            .unwrap();
        assert_eq!(s.get("studies/1/a.dcm").await.unwrap(), data);
        assert_eq!(
            s.list("studies/").await.unwrap(),
            vec!["studies/1/a.dcm".to_string()]
        );
        assert!(matches!(
            s.put("../x", data.clone(), "00").await,
            Err(StoreError::BadKey)
        ));
        assert!(matches!(
            s.put("studies/2", data, "00").await,
            Err(StoreError::Integrity { .. })
        ));
        assert!(s.head("studies/none").await.unwrap().is_none());
    }
}
