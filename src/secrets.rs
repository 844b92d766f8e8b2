//! Secrets at rest. The data directory is the service's alone (directories 0700, files
//! 0600, whatever the umask); secret files are written readable by the service's user only;
//! and `SecretBox` seals the secrets the database keeps (vendors' webhook secrets, and any
//! credential stored later the same way) with a key kept beside the receipt key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

/// Writes a new secret file, readable by the service's user only; an existing file is
/// never overwritten.
pub fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    writeln!(file, "{secret}")
}

/// From now on, whatever this process creates (the database's journal, the spool, a key)
/// is its user's alone, whatever umask it was started with.
pub fn private_by_default() {
    // SAFETY: umask(2) only swaps the process's file mode mask; it cannot fail and touches
    // no memory.
    unsafe {
        libc::umask(0o077);
    }
}

/// Makes `dir` (creating it if needed) and everything under it private to the service's
/// user: directories 0700, files 0600. A data directory made by an earlier version, or under
/// a looser umask, is tightened. Symbolic links are neither followed nor changed.
pub fn make_private(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    tighten(dir, 0o700)?;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let kind = std::fs::symlink_metadata(&path)?.file_type();
        if kind.is_dir() {
            make_private(&path)?;
        } else if kind.is_file() {
            tighten(&path, 0o600)?;
        }
    }
    Ok(())
}

/// Makes sure `path` is a file private to the service's user (0600), creating it empty if
/// it does not exist. SQLite gives its journal, `-wal` and `-shm` files the mode of the
/// database file, so a database file made here first keeps all of them private.
pub fn private_file(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    tighten(path, 0o600)
}

fn tighten(path: &Path, mode: u32) -> std::io::Result<()> {
    let current = std::fs::symlink_metadata(path)?.permissions().mode() & 0o7777;
    if current != mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Why a key could not be had or a sealed value not opened.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("{0} is not a 32-byte key in base64")]
    BadKey(String),
    #[error("cannot read or store the key: {0}")]
    Io(#[from] std::io::Error),
    #[error("the value is not sealed")]
    NotSealed,
    #[error("the value was sealed with another key, or altered")]
    Unopenable,
}

/// Seals short secrets for storage: XChaCha20-Poly1305 under the deployment's 32-byte key,
/// a random 24-byte nonce per value, kept as the text `v1:<base64 of nonce ‖ ciphertext>`
/// (the version names the scheme, so a later one can be told apart).
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
    /// What nodes sharing this key show each other (`node_key`).
    node_key: [u8; 32],
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(..)")
    }
}

const SEALED_V1: &str = "v1:";
const NONCE_BYTES: usize = 24;

impl SecretBox {
    pub fn from_key(key: [u8; 32]) -> SecretBox {
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key");
        mac.update(b"testdrive: node to node");
        SecretBox {
            cipher: XChaCha20Poly1305::new(&key.into()),
            node_key: mac.finalize().into_bytes().into(),
        }
    }

    /// The credential a node shows another when it forwards a request: derived from the key
    /// (never the key itself), so only nodes sharing the key know it.
    pub fn node_key(&self) -> [u8; 32] {
        self.node_key
    }

    /// A box with a fresh key that lives as long as the process (tests).
    pub fn generate() -> SecretBox {
        SecretBox::from_key(rand::random())
    }

    /// The key `given` (base64, from the settings), else the one stored at `path`, else a
    /// new one stored there (0600) for the next start.
    pub fn load_or_create(given: Option<&str>, path: &Path) -> Result<SecretBox, SecretError> {
        if let Some(given) = given {
            return Ok(SecretBox::from_key(parse_key(
                given,
                "the given secret key",
            )?));
        }
        match std::fs::read_to_string(path) {
            Ok(stored) => Ok(SecretBox::from_key(parse_key(
                &stored,
                &path.display().to_string(),
            )?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                write_secret(path, &BASE64.encode(key))?;
                Ok(SecretBox::from_key(key))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `text` is a sealed value (of any key) rather than plain text.
    pub fn is_sealed(text: &str) -> bool {
        text.starts_with(SEALED_V1)
    }

    pub fn seal(&self, plain: &str) -> String {
        let nonce: [u8; NONCE_BYTES] = rand::random();
        let ciphertext = self
            .cipher
            .encrypt(&XNonce::from(nonce), plain.as_bytes())
            .expect("a short value always seals");
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&ciphertext);
        format!("{SEALED_V1}{}", BASE64.encode(sealed))
    }

    pub fn open(&self, sealed: &str) -> Result<String, SecretError> {
        let encoded = sealed
            .strip_prefix(SEALED_V1)
            .ok_or(SecretError::NotSealed)?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|_| SecretError::Unopenable)?;
        if bytes.len() < NONCE_BYTES {
            return Err(SecretError::Unopenable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_BYTES);
        let nonce: [u8; NONCE_BYTES] = nonce.try_into().expect("split at the nonce's length");
        let plain = self
            .cipher
            .decrypt(&XNonce::from(nonce), ciphertext)
            .map_err(|_| SecretError::Unopenable)?;
        String::from_utf8(plain).map_err(|_| SecretError::Unopenable)
    }
}

fn parse_key(text: &str, what: &str) -> Result<[u8; 32], SecretError> {
    BASE64
        .decode(text.trim())
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| SecretError::BadKey(what.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::symlink_metadata(path)
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    }

    #[test]
    fn sealed_values_open_with_their_key_only() {
        let sealer = SecretBox::generate();
        let sealed = sealer.seal("whsec_abc");
        assert!(SecretBox::is_sealed(&sealed), "{sealed}");
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(sealer.open(&sealed).unwrap(), "whsec_abc");
        assert_ne!(sealer.seal("whsec_abc"), sealed, "a fresh nonce every time");

        let other = SecretBox::generate();
        assert!(matches!(other.open(&sealed), Err(SecretError::Unopenable)));
        let mut altered = sealed.clone().into_bytes();
        let last = altered.len() - 3;
        altered[last] = if altered[last] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        assert!(matches!(
            sealer.open(&altered),
            Err(SecretError::Unopenable)
        ));
        assert!(matches!(
            sealer.open("whsec_abc"),
            Err(SecretError::NotSealed)
        ));
        assert!(matches!(sealer.open("v1:"), Err(SecretError::Unopenable)));
    }

    #[test]
    fn the_key_is_kept_or_given() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret-key");
        let first = SecretBox::load_or_create(None, &path).unwrap();
        assert_eq!(mode(&path), 0o600);
        let again = SecretBox::load_or_create(None, &path).unwrap();
        let sealed = first.seal("s");
        assert_eq!(again.open(&sealed).unwrap(), "s", "kept across restarts");

        let given = BASE64.encode([7u8; 32]);
        let from_env = SecretBox::load_or_create(Some(&given), &dir.path().join("none")).unwrap();
        assert_eq!(
            SecretBox::from_key([7u8; 32])
                .open(&from_env.seal("x"))
                .unwrap(),
            "x"
        );
        assert!(
            !dir.path().join("none").exists(),
            "a given key is not stored"
        );
        for bad in ["", "c2hvcnQ=", "not base64!"] {
            assert!(matches!(
                SecretBox::load_or_create(Some(bad), &path),
                Err(SecretError::BadKey(_))
            ));
        }
    }

    #[test]
    fn the_data_directory_is_made_private_and_looser_modes_are_tightened() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("var");
        std::fs::create_dir_all(data.join("spool/upload")).unwrap();
        std::fs::write(data.join("admin-token"), "t").unwrap();
        std::fs::write(data.join("spool/upload/a.csv"), "x").unwrap();
        for (path, m) in [
            (data.clone(), 0o755),
            (data.join("spool"), 0o777),
            (data.join("admin-token"), 0o644),
            (data.join("spool/upload/a.csv"), 0o666),
        ] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(m)).unwrap();
        }
        let outside = root.path().join("outside");
        std::fs::write(&outside, "o").unwrap();
        std::fs::set_permissions(&outside, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, data.join("link")).unwrap();

        make_private(&data).unwrap();
        private_file(&data.join("testdrive.db")).unwrap();
        assert_eq!(mode(&data), 0o700);
        assert_eq!(mode(&data.join("spool")), 0o700);
        assert_eq!(mode(&data.join("spool/upload")), 0o700);
        assert_eq!(mode(&data.join("admin-token")), 0o600);
        assert_eq!(mode(&data.join("spool/upload/a.csv")), 0o600);
        assert_eq!(mode(&data.join("testdrive.db")), 0o600);
        assert_eq!(mode(&outside), 0o644, "a link is not followed");

        let fresh = root.path().join("new/data");
        make_private(&fresh).unwrap();
        assert_eq!(mode(&fresh), 0o700);
    }
}
