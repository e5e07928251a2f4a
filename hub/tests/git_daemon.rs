//! The Git adapter against a real Git server (`git daemon`, git://): shallow and incremental
//! fetches, change detection across them, a force-push, and an unreachable server.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use gitfleet_hub::git::GitCache;
use gitfleet_hub::resources::GitRef;
use support::{GitRepo, eventually};

/// A `git daemon` serving every repository on this machine by absolute path; killed on drop.
struct GitDaemon {
    child: Child,
    port: u16,
}

impl GitDaemon {
    async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--base-path=/",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("git daemon starts");
        eventually("git daemon to listen", || async move {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
        })
        .await;
        Self { child, port }
    }

    fn url(&self, repo: &GitRepo) -> String {
        format!("git://127.0.0.1:{}{}", self.port, repo.dir.path().display())
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main_branch() -> GitRef {
    GitRef::Branch("main".into())
}

#[tokio::test]
async fn shallow_incremental_fetches_still_detect_changes() {
    let daemon = GitDaemon::start().await;
    let repo = GitRepo::new();
    let c1 = repo.commit(&[("apps/web/a.yaml", "1"), ("apps/api/b.yaml", "1")], "one");
    let c2 = repo.commit(&[("apps/web/a.yaml", "2")], "two");
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().join("git"), 2, Duration::from_secs(30));
    let url = daemon.url(&repo);

    assert_eq!(cache.fetch(&url, &main_branch()).await.unwrap().commit, c2);
    let bare = git2::Repository::open_bare(cache.cache_dir(&url)).unwrap();
    assert!(bare.is_shallow(), "only the tip was fetched");
    assert!(bare.find_commit(git2::Oid::from_str(&c1).unwrap()).is_err());

    let c3 = repo.commit(&[("apps/api/b.yaml", "3")], "three");
    assert_eq!(cache.fetch(&url, &main_branch()).await.unwrap().commit, c3);
    let files = cache.changed_files(&url, &c2, &c3).await.unwrap().unwrap();
    assert_eq!(files, ["apps/api/b.yaml"]);

    // Force-push: main rewritten to a sibling of c3.
    let r = git2::Repository::open(repo.dir.path()).unwrap();
    let parent = r.find_commit(git2::Oid::from_str(&c2).unwrap()).unwrap();
    r.reset(parent.as_object(), git2::ResetType::Hard, None)
        .unwrap();
    let c3b = repo.commit(&[("apps/web/a.yaml", "3b")], "three, rewritten");
    assert_eq!(cache.fetch(&url, &main_branch()).await.unwrap().commit, c3b);
    let files = cache.changed_files(&url, &c3, &c3b).await.unwrap().unwrap();
    let mut files = files;
    files.sort();
    assert_eq!(files, ["apps/api/b.yaml", "apps/web/a.yaml"]);
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_and_others_still_work() {
    let daemon = GitDaemon::start().await;
    let repo = GitRepo::new();
    let c1 = repo.commit(&[("a.yaml", "1")], "one");
    let dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(dir.path().join("git"), 2, Duration::from_secs(30));
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("git://127.0.0.1:{dead_port}/nowhere");
    let (main, live) = (main_branch(), daemon.url(&repo));
    let (broken, fine) = tokio::join!(cache.fetch(&dead, &main), cache.fetch(&live, &main));
    let err = broken.unwrap_err().to_string();
    assert!(err.contains(&dead), "{err}");
    assert_eq!(fine.unwrap().commit, c1);
}
