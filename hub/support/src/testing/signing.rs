//! Signed commits for tests: keys made by `ssh-keygen` and `gpg` at test time, in temporary
//! directories, and commits and tags signed with them by the `git` command line, exactly as a
//! release engineer's Git signs them.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A signing key: an SSH key (Git's `gpg.format=ssh`) or an OpenPGP key in its own GnuPG home.
pub struct Signer {
    dir: tempfile::TempDir,
    kind: Kind,
    trusted_key: String,
}

enum Kind {
    Ssh { private: PathBuf },
    Gpg { fingerprint: String },
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?} cannot run (scripts/test installs it): {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Signer {
    /// An ed25519 SSH key made by `ssh-keygen -t ed25519 -N ''`, with `comment`.
    pub fn ssh(comment: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let private = dir.path().join("id_ed25519");
        run(Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
            .arg(&private));
        let trusted_key = std::fs::read_to_string(private.with_extension("pub"))
            .expect("the public key")
            .trim()
            .to_owned();
        Self {
            dir,
            kind: Kind::Ssh { private },
            trusted_key,
        }
    }

    /// An ed25519 OpenPGP key without a passphrase made by `gpg --quick-gen-key`, for `user`
    /// (`Name <email>`), in a GnuPG home of its own.
    pub fn gpg(user: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut signer = Self {
            dir,
            kind: Kind::Gpg {
                fingerprint: String::new(),
            },
            trusted_key: String::new(),
        };
        run(signer
            .gpg_command()
            .args(["--quick-gen-key", user, "ed25519", "sign", "never"]));
        let listing = run(signer
            .gpg_command()
            .args(["--with-colons", "--list-keys", user]));
        let fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("gpg lists the key's fingerprint")
            .to_owned();
        signer.trusted_key = run(signer
            .gpg_command()
            .args(["--armor", "--export", &fingerprint]));
        signer.kind = Kind::Gpg { fingerprint };
        signer
    }

    fn gpg_command(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.dir.path()).args([
            "--batch",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd
    }

    /// What a Repo's `spec.verify.trustedKeys` lists for this key: the SSH public key line, or
    /// the armored OpenPGP public key.
    pub fn trusted_key(&self) -> &str {
        &self.trusted_key
    }

    /// `git` in `repo` with this key as the signing key.
    fn git(&self, repo: &Path) -> Command {
        let mut cmd = git(repo);
        match &self.kind {
            Kind::Ssh { private } => {
                cmd.arg("-c").arg("gpg.format=ssh");
                cmd.arg("-c")
                    .arg(format!("user.signingkey={}", private.display()));
            }
            Kind::Gpg { fingerprint } => {
                cmd.env("GNUPGHOME", self.dir.path());
                cmd.args(["-c", "gpg.format=openpgp"]);
                cmd.arg("-c").arg(format!("user.signingkey={fingerprint}"));
            }
        }
        cmd
    }

    /// Writes `files` into the work tree of `repo` and commits everything there on its current
    /// branch, signed (`git commit -S`). Returns the commit id.
    pub fn commit(&self, repo: &Path, files: &[(&str, &str)], message: &str) -> String {
        stage(repo, files);
        run(self
            .git(repo)
            .args(["commit", "-q", "-S", "--allow-empty", "-m", message]));
        head(repo)
    }

    /// A signed annotated tag `name` of `commit` (`git tag -s`).
    pub fn tag(&self, repo: &Path, name: &str, commit: &str) {
        run(self.git(repo).args([
            "tag",
            "-s",
            "-f",
            "-m",
            &format!("release {name}"),
            name,
            commit,
        ]));
    }
}

impl Drop for Signer {
    fn drop(&mut self) {
        if matches!(self.kind, Kind::Gpg { .. }) {
            // The agent gpg started for this home ends with it.
            let _ = Command::new("gpgconf")
                .env("GNUPGHOME", self.dir.path())
                .args(["--kill", "gpg-agent"])
                .status();
        }
    }
}

fn git(repo: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.arg("-C").arg(repo).args([
        "-c",
        "user.name=test",
        "-c",
        "user.email=test@example.com",
        "-c",
        "commit.gpgsign=false",
        "-c",
        "tag.gpgsign=false",
    ]);
    cmd
}

fn stage(repo: &Path, files: &[(&str, &str)]) {
    for (path, content) in files {
        let full = repo.join(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("a directory in the work tree");
        }
        std::fs::write(full, content).expect("a file in the work tree");
    }
    run(git(repo).args(["add", "-A"]));
}

fn head(repo: &Path) -> String {
    run(git(repo).args(["rev-parse", "HEAD"])).trim().to_owned()
}

/// Commits `files` in `repo` without a signature, like [`Signer::commit`] otherwise.
pub fn unsigned_commit(repo: &Path, files: &[(&str, &str)], message: &str) -> String {
    stage(repo, files);
    run(git(repo).args(["commit", "-q", "--allow-empty", "-m", message]));
    head(repo)
}

/// An unsigned annotated tag (`git tag -a`), and a lightweight one (`git tag`).
pub fn unsigned_tag(repo: &Path, name: &str, commit: &str, annotated: bool) {
    let mut cmd = git(repo);
    cmd.args(["tag", "-f"]);
    if annotated {
        cmd.args(["-a", "-m", "unsigned"]);
    }
    run(cmd.args([name, commit]));
}

/// `git init -b main` in `dir`: a repository [`Signer::commit`] and [`unsigned_commit`] can
/// commit in.
pub fn init_repo(dir: &Path) {
    run(Command::new("git")
        .args(["init", "-q", "-b", "main"])
        .arg(dir));
}
