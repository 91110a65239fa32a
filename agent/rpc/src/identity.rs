//! An endpoint's Ed25519 identity, kept in a file so that its endpoint id survives restarts
//! (the id is what a `Host` registers and what allowlists admit).
//!
//! The file holds the 32-byte secret as 64 lowercase hex digits and a newline, readable by the
//! owner only (the same format as a Kubernetes Secret's `iroh.key` entry, for the operator).

use std::path::Path;

use iroh::SecretKey;

use crate::pki::{PkiError, write_private};

/// The key file's name in a data dir.
pub const KEY_FILE: &str = "iroh.key";

/// Reads the key at `path`, or makes one and writes it there first.
///
/// # Errors
/// The file cannot be read or written, or does not hold a key.
pub fn load_or_create_key(path: &Path) -> Result<SecretKey, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_key(&text).map_err(|reason| PkiError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidData, reason),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| PkiError::io(dir, e))?;
            }
            let key = SecretKey::generate();
            write_private(path, &encode_key(&key))?;
            Ok(key)
        }
        Err(e) => Err(PkiError::io(path, e)),
    }
}

/// The key as stored: 64 lowercase hex digits and a newline.
#[must_use]
pub fn encode_key(key: &SecretKey) -> String {
    let hex: String = key.to_bytes().iter().map(|b| format!("{b:02x}")).collect();
    hex + "\n"
}

/// Reads a stored key (surrounding whitespace allowed).
///
/// # Errors
/// Says what is wrong with the text (never echoes it: it is a secret).
pub fn parse_key(text: &str) -> Result<SecretKey, String> {
    let hex = text.trim();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "expected 64 hex digits (an Ed25519 secret key), found {} characters",
            hex.len()
        ));
    }
    let mut bytes = [0u8; 32];
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte =
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| format!("byte {i}: {e}"))?;
    }
    Ok(SecretKey::from_bytes(&bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn a_key_is_made_once_kept_private_and_reloaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub").join(KEY_FILE);
        let made = load_or_create_key(&path).expect("create");
        let loaded = load_or_create_key(&path).expect("load");
        assert_eq!(made.public(), loaded.public());
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_damaged_key_file_is_an_error_that_does_not_quote_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join(KEY_FILE);
        std::fs::write(&path, "secretsecret").expect("write");
        let err = load_or_create_key(&path).unwrap_err();
        let text = format!("{err} {:?}", std::error::Error::source(&err));
        assert!(text.contains("12 characters"), "{text}");
        assert!(!text.contains("secretsecret"), "{text}");
    }
}
