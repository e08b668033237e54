//! Optional encryption of the files to a recipient's age X25519 public key
//! (`age1...`). The manifest lists the encrypted files, so `verify` checks
//! what is on disk without the private key; the recipient decrypts with
//! `age -d -i key.txt FILE.age` (or `rage`).

use std::io::Write;
use std::str::FromStr;

use crate::ExportError;

/// The recipient, or an error naming `encrypt_to`.
pub fn parse_recipient(s: &str) -> Result<age::x25519::Recipient, ExportError> {
    age::x25519::Recipient::from_str(s.trim()).map_err(|e| {
        ExportError::invalid(
            "encrypt_to",
            format!("not an age X25519 recipient (age1...): {e}"),
        )
    })
}

/// `plain` encrypted to `recipient` (the age binary format).
pub fn encrypt(recipient: &age::x25519::Recipient, plain: &[u8]) -> Result<Vec<u8>, ExportError> {
    let err = |e: &dyn std::fmt::Display| ExportError::Encode(format!("age: {e}"));
    let enc = age::Encryptor::with_recipients(std::iter::once(recipient as &dyn age::Recipient))
        .map_err(|e| err(&e))?;
    let mut out = Vec::with_capacity(plain.len() + 256);
    let mut w = enc.wrap_output(&mut out).map_err(|e| err(&e))?;
    w.write_all(plain).map_err(|e| err(&e))?;
    w.finish().map_err(|e| err(&e))?;
    Ok(out)
}
