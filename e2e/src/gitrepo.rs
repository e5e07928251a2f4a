//! A local Git repository for tests and the demo: write files, commit, and hand out a URL the hub
//! and the spokes can fetch from.

use std::path::{Path, PathBuf};

use git2::{IndexAddOption, Repository, Signature};

#[derive(Debug, thiserror::Error)]
pub enum GitRepoError {
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// A non-bare repository on branch `main` whose working tree the test edits.
pub struct GitRepo {
    repo: Repository,
    dir: PathBuf,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo").field("dir", &self.dir).finish()
    }
}

impl GitRepo {
    /// Creates an empty repository at `dir` with `main` as its initial branch.
    pub fn init(dir: &Path) -> Result<GitRepo, GitRepoError> {
        std::fs::create_dir_all(dir).map_err(|source| GitRepoError::Io {
            path: dir.to_owned(),
            source,
        })?;
        let mut opts = git2::RepositoryInitOptions::new();
        opts.initial_head("main");
        let repo = Repository::init_opts(dir, &opts)?;
        Ok(GitRepo {
            repo,
            dir: dir.to_owned(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `file://` URL of the repository.
    pub fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }

    /// Writes `contents` to `path` (relative), creating directories.
    pub fn write(&self, path: &str, contents: impl AsRef<[u8]>) -> Result<(), GitRepoError> {
        let full = self.dir.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).map_err(|source| GitRepoError::Io {
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&full, contents).map_err(|source| GitRepoError::Io { path: full, source })
    }

    /// Removes a file from the working tree (it leaves the repository at the next commit).
    pub fn remove(&self, path: &str) -> Result<(), GitRepoError> {
        let full = self.dir.join(path);
        std::fs::remove_file(&full).map_err(|source| GitRepoError::Io { path: full, source })
    }

    /// Copies every file below `src` into `dest` (relative) in the working tree.
    pub fn copy_dir(&self, src: &Path, dest: &str) -> Result<(), GitRepoError> {
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| GitRepoError::Io { path, source }
        };
        for entry in std::fs::read_dir(src).map_err(io(src))? {
            let entry = entry.map_err(io(src))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let target = if dest.is_empty() {
                name.to_string()
            } else {
                format!("{dest}/{name}")
            };
            if entry.file_type().map_err(io(&entry.path()))?.is_dir() {
                self.copy_dir(&entry.path(), &target)?;
            } else {
                let bytes = std::fs::read(entry.path()).map_err(io(&entry.path()))?;
                self.write(&target, bytes)?;
            }
        }
        Ok(())
    }

    /// Commits the whole working tree (additions, changes and removals) on `main`; returns the
    /// commit id.
    pub fn commit(&self, message: &str) -> Result<String, GitRepoError> {
        let mut index = self.repo.index()?;
        index.add_all(["*"], IndexAddOption::DEFAULT, None)?;
        index.update_all(["*"], None)?;
        index.write()?;
        let tree = self.repo.find_tree(index.write_tree()?)?;
        let sig = Signature::now("gitfleet tests", "tests@gitfleet.invalid")?;
        let parent = match self.repo.head() {
            Ok(head) => Some(head.peel_to_commit()?),
            Err(_) => None,
        };
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        let id = self
            .repo
            .commit(Some("HEAD"), &sig, &sig, message, &tree, &parents)?;
        Ok(id.to_string())
    }

    /// The commit `main` points at.
    pub fn head(&self) -> Result<String, GitRepoError> {
        Ok(self.repo.head()?.peel_to_commit()?.id().to_string())
    }
}
