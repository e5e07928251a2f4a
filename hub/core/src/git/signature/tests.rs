//! Keys made by `ssh-keygen` and `gpg` at test time, signatures made by them over payloads the
//! way Git makes them (SSH: `ssh-keygen -Y sign -n git`; OpenPGP: `gpg --detach-sign --armor`).

use std::path::PathBuf;
use std::process::Command;

use super::*;

const PAYLOAD: &[u8] = b"tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\nauthor A <a@example.com> 1700000000 +0000\ncommitter A <a@example.com> 1700000000 +0000\n\nrelease\n";

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .expect("the tool runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// An SSH key pair made by ssh-keygen in a temporary directory.
struct SshKey {
    _dir: tempfile::TempDir,
    private: PathBuf,
    public_line: String,
}

impl SshKey {
    fn new(kind: &str, comment: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let private = dir.path().join("key");
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", kind, "-N", "", "-C", comment, "-f"])
            .arg(&private);
        if kind == "rsa" {
            cmd.args(["-b", "2048"]);
        }
        run(&mut cmd);
        let public_line = std::fs::read_to_string(private.with_extension("pub"))
            .expect("public key")
            .trim()
            .to_owned();
        Self {
            _dir: dir,
            private,
            public_line,
        }
    }

    fn sign_in(&self, namespace: &str, payload: &[u8]) -> Vec<u8> {
        let file = self.private.with_file_name("payload");
        std::fs::write(&file, payload).expect("payload written");
        run(Command::new("ssh-keygen")
            .args(["-q", "-Y", "sign", "-n", namespace, "-f"])
            .arg(&self.private)
            .arg(&file));
        std::fs::read(file.with_extension("sig")).expect("signature")
    }

    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        self.sign_in("git", payload)
    }
}

/// A GnuPG home with one key, made by gpg at test time.
struct GpgKey {
    home: tempfile::TempDir,
    fingerprint: String,
}

impl GpgKey {
    /// `algo` as `gpg --quick-gen-key` takes it; `signing_subkey` adds an ed25519 signing
    /// subkey, which gpg then signs with.
    fn new(user: &str, algo: &str, signing_subkey: bool) -> Self {
        let home = tempfile::tempdir().expect("temp dir");
        let mut key = Self {
            home,
            fingerprint: String::new(),
        };
        let usage = if signing_subkey { "cert" } else { "sign" };
        run(key
            .gpg()
            .args(["--quick-gen-key", user, algo, usage, "never"]));
        let listing = run(key.gpg().args(["--with-colons", "--list-keys", user]));
        let fingerprint = listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .expect("a fingerprint")
            .to_owned();
        if signing_subkey {
            run(key
                .gpg()
                .args(["--quick-add-key", &fingerprint, "ed25519", "sign", "never"]));
        }
        key.fingerprint = fingerprint;
        key
    }

    fn gpg(&self) -> Command {
        let mut cmd = Command::new("gpg");
        cmd.env("GNUPGHOME", self.home.path()).args([
            "--batch",
            "--quiet",
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
        ]);
        cmd
    }

    fn public_armor(&self) -> String {
        run(self.gpg().args(["--armor", "--export", &self.fingerprint]))
    }

    fn sign(&self, payload: &[u8]) -> Vec<u8> {
        let file = self.home.path().join("payload");
        std::fs::write(&file, payload).expect("payload written");
        run(self
            .gpg()
            .args([
                "--armor",
                "--detach-sign",
                "--local-user",
                &self.fingerprint,
            ])
            .arg(&file));
        std::fs::read(file.with_extension("asc")).expect("signature")
    }
}

impl Drop for GpgKey {
    fn drop(&mut self) {
        // The agent gpg started for this home ends with it.
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "gpg-agent"])
            .status();
    }
}

fn keys(entries: &[&str]) -> TrustedKeys {
    TrustedKeys::parse(entries).expect("trusted keys parse")
}

#[test]
fn ssh_ed25519_signature_by_a_trusted_key_verifies_and_names_the_key() {
    let key = SshKey::new("ed25519", "release-bot");
    let trusted = keys(&[&key.public_line]);
    let verified = verify(PAYLOAD, &key.sign(PAYLOAD), &trusted).expect("verified");
    assert!(verified.key.starts_with("SHA256:"), "{verified:?}");
    assert!(verified.key.ends_with("(release-bot)"), "{verified:?}");
}

#[test]
fn ssh_rsa_and_ecdsa_signatures_verify() {
    for kind in ["rsa", "ecdsa"] {
        let key = SshKey::new(kind, "bot");
        let trusted = keys(&[&key.public_line]);
        verify(PAYLOAD, &key.sign(PAYLOAD), &trusted).unwrap_or_else(|e| panic!("{kind}: {e}"));
    }
}

#[test]
fn ssh_signature_by_an_untrusted_key_names_its_fingerprint() {
    let (trusted_key, other) = (
        SshKey::new("ed25519", "trusted"),
        SshKey::new("ed25519", "other"),
    );
    let trusted = keys(&[&trusted_key.public_line]);
    let err = verify(PAYLOAD, &other.sign(PAYLOAD), &trusted).expect_err("refused");
    let other_fp = ssh_key::PublicKey::from_openssh(&other.public_line)
        .expect("key")
        .fingerprint(ssh_key::HashAlg::Sha256)
        .to_string();
    assert_eq!(err, VerifyError::UntrustedKey(other_fp.clone()));
    assert_eq!(
        err.to_string(),
        format!("signed by untrusted key {other_fp}")
    );
}

#[test]
fn ssh_signature_over_a_tampered_payload_is_a_bad_signature() {
    let key = SshKey::new("ed25519", "bot");
    let trusted = keys(&[&key.public_line]);
    let sig = key.sign(PAYLOAD);
    let mut tampered = PAYLOAD.to_vec();
    tampered.extend_from_slice(b"evil\n");
    let err = verify(&tampered, &sig, &trusted).expect_err("refused");
    assert!(
        matches!(&err, VerifyError::BadSignature { key, .. } if key.contains("bot")),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with("bad signature by SHA256:"),
        "{err}"
    );
}

#[test]
fn ssh_signature_in_another_namespace_is_refused() {
    let key = SshKey::new("ed25519", "bot");
    let trusted = keys(&[&key.public_line]);
    let err = verify(PAYLOAD, &key.sign_in("file", PAYLOAD), &trusted).expect_err("refused");
    assert!(
        err.to_string().contains("namespace \"file\""),
        "namespace named: {err}"
    );
}

#[test]
fn openpgp_signature_by_a_trusted_primary_key_verifies() {
    let key = GpgKey::new("Release Bot <bot@example.com>", "ed25519", false);
    let trusted = keys(&[&key.public_armor()]);
    let verified = verify(PAYLOAD, &key.sign(PAYLOAD), &trusted).expect("verified");
    assert!(
        verified.key.contains(&key.fingerprint),
        "fingerprint named: {verified:?}"
    );
    assert!(verified.key.contains("bot@example.com"), "{verified:?}");
}

#[test]
fn openpgp_signature_by_a_signing_subkey_and_by_rsa_verify() {
    let sub = GpgKey::new("Sub <sub@example.com>", "ed25519", true);
    verify(PAYLOAD, &sub.sign(PAYLOAD), &keys(&[&sub.public_armor()])).expect("subkey");
    let rsa = GpgKey::new("Rsa <rsa@example.com>", "rsa2048", false);
    verify(PAYLOAD, &rsa.sign(PAYLOAD), &keys(&[&rsa.public_armor()])).expect("rsa");
}

#[test]
fn openpgp_untrusted_and_tampered_are_refused_with_the_reason() {
    let trusted_key = GpgKey::new("Trusted <t@example.com>", "ed25519", false);
    let other = GpgKey::new("Other <o@example.com>", "ed25519", false);
    let ssh = SshKey::new("ed25519", "ssh");
    // A mixed list: the SSH key is no help for an OpenPGP signature.
    let trusted = keys(&[&ssh.public_line, &trusted_key.public_armor()]);

    let err = verify(PAYLOAD, &other.sign(PAYLOAD), &trusted).expect_err("untrusted");
    assert_eq!(
        err,
        VerifyError::UntrustedKey(format!("OpenPGP {}", other.fingerprint))
    );

    let mut tampered = PAYLOAD.to_vec();
    tampered[0] = b'T';
    let err = verify(&tampered, &trusted_key.sign(PAYLOAD), &trusted).expect_err("tampered");
    assert!(
        matches!(&err, VerifyError::BadSignature { key, .. } if key.contains(&trusted_key.fingerprint)),
        "{err:?}"
    );
}

#[test]
fn unsigned_and_unknown_formats_are_refused() {
    let key = SshKey::new("ed25519", "bot");
    let trusted = keys(&[&key.public_line]);
    assert_eq!(verify(PAYLOAD, b"", &trusted), Err(VerifyError::NotSigned));
    assert_eq!(
        verify(PAYLOAD, b"\n  \n", &trusted),
        Err(VerifyError::NotSigned)
    );
    let err = verify(PAYLOAD, b"-----BEGIN SIGNED MESSAGE-----\nxx\n", &trusted)
        .expect_err("unsupported");
    assert!(
        err.to_string().starts_with("unsupported signature format"),
        "{err}"
    );
    let err = verify(
        PAYLOAD,
        b"-----BEGIN SSH SIGNATURE-----\nnot base64\n-----END SSH SIGNATURE-----\n",
        &trusted,
    )
    .expect_err("garbage");
    assert!(matches!(err, VerifyError::Unsupported(_)), "{err:?}");
}

#[test]
fn trusted_key_entries_are_parsed_or_refused_with_their_index() {
    let ssh = SshKey::new("ed25519", "bot");
    assert!(TrustedKey::parse(&ssh.public_line).is_ok());
    let cases: [(&[&str], usize, &str); 4] = [
        (
            &[&ssh.public_line, "hello"],
            1,
            "not an SSH public key or an armored OpenPGP public key",
        ),
        (&[""], 0, "must not be empty"),
        (
            &["ssh-ed25519 AAAAnotbase64 bot"],
            0,
            "not a valid SSH public key",
        ),
        (
            &["-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxxxx\n-----END PGP PUBLIC KEY BLOCK-----"],
            0,
            "not a valid armored OpenPGP public key",
        ),
    ];
    for (entries, index, message) in cases {
        let (i, err) = TrustedKeys::parse(entries).expect_err("refused");
        assert_eq!(i, index, "{entries:?}");
        assert!(err.to_string().starts_with(message), "{entries:?}: {err}");
    }
}

#[test]
fn a_signed_tag_splits_at_its_last_signature_block() {
    let raw = b"object 0123\ntype commit\ntag v1\ntagger A <a@x> 1 +0000\n\nrelease v1\n-----BEGIN SSH SIGNATURE-----\nAAA\n-----END SSH SIGNATURE-----\n";
    let (payload, sig) = split_signed_tag(raw);
    assert!(payload.ends_with(b"release v1\n"));
    assert!(
        sig.expect("signed")
            .starts_with(b"-----BEGIN SSH SIGNATURE-----")
    );
    let unsigned = b"object 0123\ntype commit\ntag v1\n\nplain\n";
    assert_eq!(split_signed_tag(unsigned), (&unsigned[..], None));
}
