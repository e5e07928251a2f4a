//! Charts from Helm repositories and OCI registries: the exact chart the hub resolved
//! (`ResolvedChart`: a URL and a sha256 digest) downloaded with `gitfleet_support::fetch`
//! (timeout, size cap, refused addresses), checked against its digest (a mismatch renders
//! nothing), kept in a cache by digest in the spoke's data directory (bounded: the oldest
//! archives go first), and unpacked safely for `helm template`: regular files and directories
//! only, no absolute paths or `..`, bounded in entries and bytes.

use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use gitfleet_core::charts::{ChartError, ResolvedChart, check_digest, normalize_digest};
use gitfleet_support::fetch::{BasicAuth, FetchError, FetchPolicy, Fetcher};

use crate::model::{CredentialKind, RepoCredential};

/// What a chart may cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChartLimits {
    /// Most bytes of one chart archive (.tgz) downloaded.
    pub max_archive_bytes: usize,
    /// Most bytes an archive may unpack to.
    pub max_unpacked_bytes: u64,
    /// Most entries (files and directories) in an archive.
    pub max_entries: usize,
    /// Most bytes of archives the cache keeps on disk.
    pub max_cache_bytes: u64,
}

impl Default for ChartLimits {
    fn default() -> Self {
        Self {
            max_archive_bytes: 20 * 1024 * 1024,
            max_unpacked_bytes: 100 * 1024 * 1024,
            max_entries: 10_000,
            max_cache_bytes: 512 * 1024 * 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ChartFetchError {
    #[error("chart {chart}: {source}")]
    Fetch {
        chart: String,
        source: Box<FetchError>,
    },
    #[error("chart {chart}: {source}; nothing rendered")]
    Digest {
        chart: String,
        source: Box<ChartError>,
    },
    #[error("chart {chart}: {message}")]
    Unpack { chart: String, message: String },
    #[error("chart cache {path}: {source}")]
    Cache {
        path: String,
        source: std::io::Error,
    },
}

/// Downloads and caches chart archives; shared by every Target of the spoke.
#[derive(Debug)]
pub struct ChartCache {
    dir: PathBuf,
    fetcher: Fetcher,
    limits: ChartLimits,
}

impl ChartCache {
    pub fn new(
        dir: PathBuf,
        policy: FetchPolicy,
        limits: ChartLimits,
    ) -> Result<ChartCache, ChartFetchError> {
        let fetcher = Fetcher::new(policy).map_err(|source| ChartFetchError::Fetch {
            chart: String::new(),
            source: Box::new(source),
        })?;
        Ok(ChartCache {
            dir,
            fetcher,
            limits,
        })
    }

    pub fn limits(&self) -> &ChartLimits {
        &self.limits
    }

    /// The archive of `chart`, verified against its digest: from the cache, or downloaded
    /// (and cached) when not there.
    /// `credential` is sent only where its scope allows (`gitfleet_support::fetch`).
    pub async fn archive(
        &self,
        chart: &ResolvedChart,
        credential: Option<&RepoCredential>,
    ) -> Result<Vec<u8>, ChartFetchError> {
        let name = chart.describe();
        let digest = normalize_digest(&chart.digest).map_err(|m| ChartFetchError::Unpack {
            chart: name.clone(),
            message: m,
        })?;
        let file = self
            .dir
            .join(format!("{}.tgz", digest.trim_start_matches("sha256:")));
        if let Ok(bytes) = tokio::fs::read(&file).await {
            if check_digest(&bytes, &digest, &chart.url).is_ok() {
                // Touched, so that pruning takes the least recently used first.
                let _ = filetime_now(&file);
                return Ok(bytes);
            }
            // A damaged cache entry is fetched again.
            let _ = tokio::fs::remove_file(&file).await;
        }
        let auth = credential.and_then(basic_auth);
        let fetched = self
            .fetcher
            .get(
                &chart.url,
                None,
                self.limits.max_archive_bytes,
                auth.as_ref(),
            )
            .await
            .map_err(|source| ChartFetchError::Fetch {
                chart: name.clone(),
                source: Box::new(source),
            })?;
        check_digest(&fetched.body, &digest, &chart.url).map_err(|source| {
            ChartFetchError::Digest {
                chart: name.clone(),
                source: Box::new(source),
            }
        })?;
        let bytes = fetched.body.to_vec();
        let (dir, max, keep) = (self.dir.clone(), self.limits.max_cache_bytes, file.clone());
        let data = bytes.clone();
        tokio::task::spawn_blocking(move || store(&dir, &keep, &data, max))
            .await
            .map_err(|e| ChartFetchError::Cache {
                path: self.dir.display().to_string(),
                source: std::io::Error::other(e.to_string()),
            })?
            .map_err(|source| ChartFetchError::Cache {
                path: self.dir.display().to_string(),
                source,
            })?;
        Ok(bytes)
    }
}

/// Marks `file` as used now (its modification time).
fn filetime_now(file: &Path) -> std::io::Result<()> {
    std::fs::File::options()
        .append(true)
        .open(file)?
        .set_modified(std::time::SystemTime::now())
}

/// Writes `data` to `file` atomically, then removes the least recently used archives until
/// the cache holds at most `max` bytes (never `file` itself).
fn store(dir: &Path, file: &Path, data: &[u8], max: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tmp = file.with_extension("tgz.tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, file)?;
    let mut entries: Vec<(std::time::SystemTime, u64, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let m = e.metadata().ok()?;
            m.is_file().then(|| {
                (
                    m.modified().unwrap_or(std::time::UNIX_EPOCH),
                    m.len(),
                    e.path(),
                )
            })
        })
        .collect();
    let mut total: u64 = entries.iter().map(|e| e.1).sum();
    entries.sort();
    for (_, len, path) in entries {
        if total <= max {
            break;
        }
        if path == file {
            continue;
        }
        if std::fs::remove_file(&path).is_ok() {
            total = total.saturating_sub(len);
        }
    }
    Ok(())
}

/// `credential` as the HTTP client takes it, bound to its scope; `None` for an SSH key.
fn basic_auth(credential: &RepoCredential) -> Option<BasicAuth> {
    match &credential.kind {
        CredentialKind::Https { username, password } => Some(BasicAuth {
            username: username.clone(),
            password: password.clone(),
            urls: credential.scope().to_vec(),
        }),
        CredentialKind::Ssh { .. } => None,
    }
}

/// Unpacks a chart archive into `dest` and returns the chart's directory (the one top-level
/// directory holding `Chart.yaml`). Refuses anything but regular files and directories,
/// absolute paths and `..`, and archives over the limits.
pub fn unpack(bytes: &[u8], dest: &Path, limits: &ChartLimits) -> Result<PathBuf, String> {
    let gz = flate2::read::GzDecoder::new(bytes);
    let mut archive = tar::Archive::new(gz);
    let mut total: u64 = 0;
    let mut count = 0usize;
    let mut top: Option<String> = None;
    std::fs::create_dir_all(dest).map_err(|e| format!("creating {}: {e}", dest.display()))?;
    let entries = archive
        .entries()
        .map_err(|e| format!("not a gzipped tar archive: {e}"))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format!("reading the archive: {e}"))?;
        count += 1;
        if count > limits.max_entries {
            return Err(format!("more than {} entries", limits.max_entries));
        }
        let path = entry
            .path()
            .map_err(|e| format!("an entry's path: {e}"))?
            .into_owned();
        let shown = path.display().to_string();
        let mut clean = PathBuf::new();
        for c in path.components() {
            match c {
                Component::Normal(part) => clean.push(part),
                Component::CurDir => {}
                _ => {
                    return Err(format!(
                        "entry {shown:?}: absolute paths and '..' are refused"
                    ));
                }
            }
        }
        let Some(first) = clean
            .components()
            .next()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
        else {
            continue;
        };
        let kind = entry.header().entry_type();
        // PAX and GNU headers carry metadata, not files.
        if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
        {
            continue;
        }
        let target = dest.join(&clean);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| format!("{shown}: {e}"))?;
            continue;
        }
        if !kind.is_file() {
            return Err(format!(
                "entry {shown:?}: only files and directories are unpacked (links and devices are refused)"
            ));
        }
        match &top {
            None => top = Some(first),
            Some(t) if *t == first => {}
            Some(t) => {
                return Err(format!(
                    "entry {shown:?}: a chart archive holds one top-level directory ({t})"
                ));
            }
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        total = total.saturating_add(size);
        if total > limits.max_unpacked_bytes {
            return Err(format!(
                "unpacks to more than {} bytes",
                limits.max_unpacked_bytes
            ));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{shown}: {e}"))?;
        }
        let mut data = Vec::with_capacity(usize::try_from(size).unwrap_or(0).min(1 << 20));
        (&mut entry)
            .take(size)
            .read_to_end(&mut data)
            .map_err(|e| format!("{shown}: {e}"))?;
        std::fs::write(&target, &data).map_err(|e| format!("{shown}: {e}"))?;
    }
    let top = top.ok_or_else(|| "the archive holds no files".to_owned())?;
    let chart = dest.join(&top);
    if !chart.join("Chart.yaml").is_file() {
        return Err(format!("{top}/Chart.yaml is missing: not a Helm chart"));
    }
    Ok(chart)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(gz);
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            // `set_path` refuses `..`: write the name by hand, as a hostile archive would.
            let name = &mut header.as_old_mut().name;
            name[..path.len()].copy_from_slice(path.as_bytes());
            header.set_cksum();
            builder.append(&header, *data).unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    #[test]
    fn unpacks_a_chart() {
        let tgz = archive(&[
            (
                "podinfo/Chart.yaml",
                b"apiVersion: v2\nname: podinfo\nversion: 1.0.0\n",
            ),
            ("podinfo/templates/cm.yaml", b"kind: ConfigMap\n"),
        ]);
        let dir = tempfile::tempdir().unwrap();
        let chart = unpack(&tgz, dir.path(), &ChartLimits::default()).unwrap();
        assert_eq!(chart, dir.path().join("podinfo"));
        assert!(chart.join("templates/cm.yaml").is_file());
    }

    #[test]
    fn refuses_escapes_links_and_oversized_archives() {
        let dir = tempfile::tempdir().unwrap();
        let limits = ChartLimits::default();
        let e = unpack(
            &archive(&[("podinfo/../../etc/x", b"x")]),
            dir.path(),
            &limits,
        )
        .unwrap_err();
        assert!(e.contains("'..'"), "{e}");
        let e = unpack(&archive(&[("/etc/x", b"x")]), dir.path(), &limits).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
        let small = ChartLimits {
            max_unpacked_bytes: 4,
            ..limits
        };
        let e = unpack(&archive(&[("p/Chart.yaml", b"12345")]), dir.path(), &small).unwrap_err();
        assert!(e.contains("more than 4 bytes"), "{e}");
        let few = ChartLimits {
            max_entries: 1,
            ..limits
        };
        let e = unpack(&archive(&[("p/a", b"1"), ("p/b", b"2")]), dir.path(), &few).unwrap_err();
        assert!(e.contains("entries"), "{e}");
        let e = unpack(
            &archive(&[("p/a", b"1"), ("q/b", b"2")]),
            dir.path(),
            &limits,
        )
        .unwrap_err();
        assert!(e.contains("one top-level"), "{e}");
        let e = unpack(&archive(&[("p/values.yaml", b"1")]), dir.path(), &limits).unwrap_err();
        assert!(e.contains("Chart.yaml"), "{e}");
        let e = unpack(b"not gzip", dir.path(), &limits).unwrap_err();
        assert!(!e.is_empty());

        let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(gz);
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Symlink);
        header.set_size(0);
        builder
            .append_link(&mut header, "p/link", "/etc/passwd")
            .unwrap();
        let tgz = builder.into_inner().unwrap().finish().unwrap();
        let e = unpack(&tgz, dir.path(), &limits).unwrap_err();
        assert!(e.contains("links"), "{e}");
    }

    #[test]
    fn the_cache_keeps_at_most_its_bytes_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.tgz");
        store(dir.path(), &a, &[0; 10], 15).unwrap();
        let b = dir.path().join("b.tgz");
        store(dir.path(), &b, &[0; 10], 15).unwrap();
        assert!(b.is_file());
        assert!(!a.is_file(), "the older archive goes");
    }
}
