//! Static X25519 keys: the key file on disk, its generation and its fingerprint.
//!
//! This module owns the key file format. A key file holds one unencrypted PKCS#8 `PRIVATE KEY`
//! PEM block for an X25519 key, byte-identical to what `openssl genpkey -algorithm X25519` writes,
//! so users can make, inspect and back up keys with standard tools. Anything else (another
//! algorithm, a passphrase, a public key, DER) is refused with an error that names the file, says
//! what it found, and gives the `openssl` command that makes a usable key. A key file is never
//! overwritten: [`load_or_generate`] only creates one where none exists.
//!
//! A key is shown to people as its [fingerprint](PublicKey::fingerprint), never as key bytes;
//! nothing here logs or prints secret material (`Keypair`'s `Debug` omits the secret).

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
pub use chatao_proto::Fingerprint;
use pkcs8::der::asn1::OctetStringRef;
use pkcs8::der::zeroize::Zeroizing;
use pkcs8::der::{Decode, pem};
use pkcs8::{ObjectIdentifier, PrivateKeyInfoRef};
use sha2::{Digest, Sha256};
use x25519_dalek::StaticSecret;

use crate::private_file::{Publish, write_private};

/// Name of the key file inside a key directory (see [`load_or_generate`]).
pub const KEY_FILE: &str = "key.pem";

/// Largest key file [`load`] reads, in bytes. An X25519 PEM is 119 bytes; the cap only stops a
/// wrong path (a log, a disk image) from being read into memory whole.
pub const MAX_KEY_FILE_LEN: u64 = 64 * 1024;

/// The `openssl` command that writes a key this module accepts; every refusal quotes it.
const OPENSSL_GENPKEY: &str = "openssl genpkey -algorithm X25519 -out";

/// DER encoding of PKCS#8 `PrivateKeyInfo` v1 for X25519 up to the 32 secret bytes: SEQUENCE,
/// version 0, AlgorithmIdentifier { 1.3.101.110 } without parameters, OCTET STRING wrapping an
/// OCTET STRING of 32 bytes. This is exactly what OpenSSL writes.
const PKCS8_X25519_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x04, 0x22, 0x04, 0x20,
];

const OID_X25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.110");
const OID_X448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.111");
const OID_ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
const OID_ED448: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.113");
const OID_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const OID_EC: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");

/// Why a key could not be loaded, generated or parsed. The `Display` text is meant for the user:
/// it names the file, says what was found and how to make a usable key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file or its directory could not be read or written.
    #[error("key file {}: {source}", .path.display())]
    Io { path: PathBuf, source: io::Error },

    /// No PEM block at all: binary data (such as a DER-encoded key) or not a key.
    #[error(
        "{} is not a PEM key file (it holds binary data such as a DER-encoded key, or no key at \
         all). If it is a DER-encoded X25519 key, `openssl pkey -inform DER -in {} -out NEW_FILE` \
         converts it. {}",
        .path.display(),
        shell_quote(.path),
        remedy(.path)
    )]
    NotPem { path: PathBuf },

    /// An `ENCRYPTED PRIVATE KEY` block.
    #[error(
        "{} holds a passphrase-protected (encrypted) private key, and Chatao does not support \
         passphrase-protected keys. If it is an X25519 key, `openssl pkey -in {} -out NEW_FILE` \
         removes the passphrase. {}",
        .path.display(),
        shell_quote(.path),
        remedy(.path)
    )]
    Encrypted { path: PathBuf },

    /// A private key for another algorithm; `found` names it ("RSA", "Ed25519", "X448", "Ed448",
    /// "EC", "DSA") or is its OID when unknown.
    #[error("{} holds a private key of the wrong type ({found}). {}", .path.display(), remedy(.path))]
    WrongAlgorithm { path: PathBuf, found: String },

    /// A `PUBLIC KEY` block: the private half is needed.
    #[error(
        "{} holds only a public key, not a private key. {}",
        .path.display(),
        remedy(.path)
    )]
    PublicKeyOnly { path: PathBuf },

    /// A PEM file that looks like a key file but does not decode as an X25519 PKCS#8 key.
    #[error(
        "{} is not a valid X25519 private key: {detail}. {}",
        .path.display(),
        remedy(.path)
    )]
    Malformed { path: PathBuf, detail: String },

    /// A user-supplied fingerprint that is not `SHA256:` followed by 43 base64 characters.
    #[error(
        "`{0}` is not a key fingerprint: expected `SHA256:` followed by 43 base64 characters, as \
         printed by Chatao"
    )]
    BadFingerprint(String),

    /// The operating system's random number generator failed.
    #[error("cannot get random bytes from the operating system to generate a key: {0}")]
    Rng(getrandom::Error),
}

/// The sentence every "unusable key" error ends with.
fn remedy(path: &Path) -> String {
    format!(
        "Chatao needs an unencrypted X25519 private key in PEM format: move this file aside and \
         create one with `{} {}`",
        OPENSSL_GENPKEY,
        shell_quote(path)
    )
}

/// `path` as one shell word, so the command in an error message can be pasted as is.
fn shell_quote(path: &Path) -> String {
    let s = path.display().to_string();
    let plain =
        !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "/._-+,:=@%~".contains(c));
    if plain { s } else { format!("'{}'", s.replace('\'', r"'\''")) }
}

/// 32-byte X25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey([u8; 32]);

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// `None` unless `bytes` is exactly 32 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `SHA256:` + unpadded standard base64 of SHA-256 of the raw 32 bytes (like `ssh-keygen -l`).
    /// Equals `openssl pkey -pubout -outform DER | tail -c 32 | openssl dgst -sha256 -binary |
    /// base64 | tr -d =` on the key file.
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of_digest(&Sha256::digest(self.0).into())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.fingerprint())
    }
}

/// A static X25519 key pair. The secret is wiped from memory when the pair is dropped, and
/// `Debug` shows only the public key's fingerprint.
#[derive(Clone)]
pub struct Keypair {
    secret: StaticSecret,
    public: PublicKey,
}

impl Keypair {
    /// A new key pair from the operating system's random number generator.
    pub fn generate() -> Result<Self, KeyError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        getrandom::fill(secret.as_mut_slice()).map_err(KeyError::Rng)?;
        Ok(Self::from_secret(*secret))
    }

    /// The pair whose secret is `secret` (stored as given; X25519 clamps it when used).
    pub fn from_secret(secret: [u8; 32]) -> Self {
        let secret = StaticSecret::from(secret);
        let public = PublicKey(x25519_dalek::PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    pub fn public(&self) -> &PublicKey {
        &self.public
    }

    /// The raw secret, for the Noise handshake. Never log it.
    pub fn secret_bytes(&self) -> &[u8; 32] {
        self.secret.as_bytes()
    }

    /// The key file contents: PKCS#8 `PRIVATE KEY` PEM with LF line endings, byte-identical to
    /// what `openssl genpkey -algorithm X25519` writes. The string holds the secret: write it to
    /// a private file and drop it.
    pub fn to_pem(&self) -> String {
        let mut der = Zeroizing::new([0u8; 48]);
        der[..16].copy_from_slice(&PKCS8_X25519_PREFIX);
        der[16..].copy_from_slice(self.secret.as_bytes());
        // 48 bytes are 64 base64 characters: exactly one of OpenSSL's 64-column lines.
        let body = Zeroizing::new(STANDARD.encode(der.as_slice()));
        format!("-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n", body.as_str())
    }
}

impl fmt::Debug for Keypair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keypair").field("public", &self.public).finish_non_exhaustive()
    }
}

/// Where a key came from, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOrigin {
    /// Read from an existing key file.
    Loaded,
    /// Newly generated and written by [`load_or_generate`].
    Generated,
}

/// Reads the key file at `path`. The file is only read. A file that other users may access is
/// accepted with a warning in the log; every other problem is an error saying what was found.
pub fn load(path: &Path) -> Result<Keypair, KeyError> {
    let io_err = |source| KeyError::Io { path: path.to_owned(), source };
    let file = File::open(path).map_err(io_err)?;
    let metadata = file.metadata().map_err(io_err)?;
    if !metadata.is_file() {
        return Err(io_err(io::Error::other("not a regular file")));
    }
    if metadata.len() > MAX_KEY_FILE_LEN {
        return Err(KeyError::Malformed {
            path: path.to_owned(),
            detail: format!(
                "the file is {} bytes long, far too big for a key file ({} bytes at most)",
                metadata.len(),
                MAX_KEY_FILE_LEN
            ),
        });
    }
    warn_if_exposed(path, &metadata);

    let mut contents = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_FILE_LEN).read_to_end(&mut contents).map_err(io_err)?;
    decode_pem(&contents, path)
}

/// Loads `dir/key.pem`, or when that file does not exist, creates `dir` (mode 0700) and writes a
/// new key with mode 0600 (create_new: never overwrite an existing file; refuse a symlink).
///
/// An existing but unusable file is an error, never replaced: the user decides what to do with
/// it. The new file appears complete or not at all (written under a temporary name, then
/// hard-linked into place), so a crash or a concurrent start cannot leave a half-written key; if
/// another process creates the key first, that key is loaded.
pub fn load_or_generate(dir: &Path) -> Result<(Keypair, KeyOrigin), KeyError> {
    let path = dir.join(KEY_FILE);
    match fs::symlink_metadata(&path) {
        Ok(meta) if meta.file_type().is_symlink() && !path.exists() => {
            return Err(KeyError::Io {
                path,
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "it is a symbolic link to a missing file; Chatao does not create a key \
                     through a symbolic link",
                ),
            });
        }
        Ok(_) => return load(&path).map(|key| (key, KeyOrigin::Loaded)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(KeyError::Io { path, source }),
    }

    create_private_dir(dir).map_err(|source| KeyError::Io { path: dir.to_owned(), source })?;
    let key = Keypair::generate()?;
    let pem = Zeroizing::new(key.to_pem());
    match write_private(&path, pem.as_bytes(), Publish::CreateNew) {
        Ok(()) => Ok((key, KeyOrigin::Generated)),
        // Lost a race with another process starting on the same directory: use its key.
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
            load(&path).map(|key| (key, KeyOrigin::Loaded))
        }
        Err(source) => Err(KeyError::Io { path, source }),
    }
}

/// Validates a user-supplied fingerprint (`SHA256:` + 43 base64 chars): surrounding whitespace,
/// a lower-case `sha256:` prefix and a trailing `=` are accepted ([`Fingerprint::parse`]); the
/// error names what was typed.
pub fn parse_fingerprint(s: &str) -> Result<Fingerprint, KeyError> {
    Fingerprint::parse(s).map_err(|_| KeyError::BadFingerprint(s.to_owned()))
}

/// Parses key file contents; `path` is only used in errors.
fn decode_pem(contents: &[u8], path: &Path) -> Result<Keypair, KeyError> {
    let malformed = |detail: String| KeyError::Malformed { path: path.to_owned(), detail };
    let wrong =
        |found: &str| KeyError::WrongAlgorithm { path: path.to_owned(), found: found.into() };

    let pem = normalize_pem(contents).ok_or_else(|| KeyError::NotPem { path: path.to_owned() })?;
    let label = match pem.label() {
        Some(label) => label,
        None => return Err(malformed("its `-----BEGIN` line is damaged".into())),
    };
    match label {
        "PRIVATE KEY" => {}
        "ENCRYPTED PRIVATE KEY" => return Err(KeyError::Encrypted { path: path.to_owned() }),
        "RSA PRIVATE KEY" => return Err(wrong("RSA")),
        "EC PRIVATE KEY" => return Err(wrong("EC")),
        "DSA PRIVATE KEY" => return Err(wrong("DSA")),
        _ if label.ends_with("PUBLIC KEY") => {
            return Err(KeyError::PublicKeyOnly { path: path.to_owned() });
        }
        _ => {
            return Err(malformed(format!(
                "it holds a PEM block labelled `{label}`, not `PRIVATE KEY`"
            )));
        }
    }

    let der = match pem::decode_vec(pem.text.as_bytes()) {
        Ok((_, der)) => Zeroizing::new(der),
        Err(err) => return Err(malformed(format!("its PEM block does not decode ({err})"))),
    };
    let info = PrivateKeyInfoRef::from_der(&der)
        .map_err(|err| malformed(format!("it is not a PKCS#8 private key ({err})")))?;

    let oid = info.algorithm.oid;
    match oid {
        OID_X25519 => {}
        OID_RSA => return Err(wrong("RSA")),
        OID_ED25519 => return Err(wrong("Ed25519")),
        OID_X448 => return Err(wrong("X448")),
        OID_ED448 => return Err(wrong("Ed448")),
        OID_EC => return Err(wrong("EC")),
        other => return Err(wrong(&other.to_string())),
    }
    if info.algorithm.parameters.is_some() {
        return Err(malformed("its X25519 algorithm identifier has parameters".into()));
    }

    // RFC 8410: the PKCS#8 privateKey field holds a CurvePrivateKey, itself an OCTET STRING.
    let inner = <&OctetStringRef>::from_der(info.private_key.as_bytes())
        .map_err(|err| malformed(format!("its private key field does not decode ({err})")))?;
    let secret: [u8; 32] = inner.as_bytes().try_into().map_err(|_| {
        malformed(format!("its private key is {} bytes long instead of 32", inner.as_bytes().len()))
    })?;
    let key = Keypair::from_secret(secret);

    // OneAsymmetricKey (v2) may carry the public key too; it must be this key's. A BIT STRING
    // with unused bits (no whole bytes) is no X25519 key either.
    if let Some(public) = info.public_key {
        match public.as_bytes() {
            Some(public) if public == key.public.as_bytes() => {}
            Some(_) => {
                return Err(malformed(
                    "its embedded public key does not match its private key".into(),
                ));
            }
            None => {
                return Err(malformed(
                    "its embedded public key is not a whole number of bytes".into(),
                ));
            }
        }
    }
    Ok(key)
}

/// The first PEM block of a key file, rewritten in the strict form `pem-rfc7468` decodes: LF line
/// endings, no trailing whitespace, nothing before `-----BEGIN` or after `-----END`.
struct NormalizedPem {
    text: Zeroizing<String>,
    label_len: usize,
}

impl NormalizedPem {
    /// The label between `-----BEGIN ` and `-----`, if the BEGIN line is well formed.
    fn label(&self) -> Option<&str> {
        const BEGIN: &str = "-----BEGIN ";
        let label = self.text.get(BEGIN.len()..BEGIN.len() + self.label_len)?;
        Some(label).filter(|l| !l.is_empty())
    }
}

/// `None` when the contents hold no `-----BEGIN ` line at all (binary data, garbage).
fn normalize_pem(contents: &[u8]) -> Option<NormalizedPem> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    let start = contents.windows(BEGIN.len()).position(|w| w == BEGIN)?;
    let text = Zeroizing::new(String::from_utf8_lossy(&contents[start..]).into_owned());
    let mut lines = text.lines().map(str::trim_end);
    let begin = lines.next()?;
    let label = begin.strip_prefix("-----BEGIN ").and_then(|rest| rest.strip_suffix("-----"));
    let mut out = Zeroizing::new(String::with_capacity(text.len()));
    out.push_str(begin);
    out.push('\n');
    if let Some(label) = label {
        let end = format!("-----END {label}-----");
        for line in lines.by_ref() {
            let line = line.trim_start();
            if line.is_empty() {
                continue;
            }
            out.push_str(line);
            out.push('\n');
            if line == end {
                break;
            }
        }
    }
    let label_len = label.map_or(0, str::len);
    Some(NormalizedPem { text: out, label_len })
}

/// Logs a warning when group or other users may access the key file. Not refused: the key is
/// already exposed, and refusing would only stop the program, not undo the exposure.
#[cfg(unix)]
fn warn_if_exposed(path: &Path, metadata: &fs::Metadata) {
    use std::os::unix::fs::PermissionsExt;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{mode:03o}"),
            "key file is accessible by other users; restrict it with `chmod 600 {}`",
            shell_quote(path)
        );
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_path: &Path, _metadata: &fs::Metadata) {}

/// Creates `dir` and missing parents with mode 0700; an existing directory is left as it is.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if dir.as_os_str().is_empty() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// RFC 7748 section 6.1, Alice's private key.
    const RFC7748_SECRET: &str = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
    /// RFC 7748 section 6.1, Alice's public key.
    const RFC7748_PUBLIC: &str = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
    /// `openssl pkey -inform DER` of the PKCS#8 DER for `RFC7748_SECRET`.
    const RFC7748_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VuBCIEIHcHbQpzGKV9PBbBclGyZkXfTC+H68CZKrF3+6UduSwq\n\
        -----END PRIVATE KEY-----\n";
    /// `... | tail -c 32 | openssl dgst -sha256 -binary | base64 | tr -d =` of that key.
    const RFC7748_FINGERPRINT: &str = "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4";

    fn hex32(s: &str) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
        }
        out
    }

    fn decode(text: &str) -> Result<Keypair, KeyError> {
        decode_pem(text.as_bytes(), Path::new("/keys/key.pem"))
    }

    #[test]
    fn public_key_is_derived_per_rfc7748() {
        let key = Keypair::from_secret(hex32(RFC7748_SECRET));
        assert_eq!(key.public().as_bytes(), &hex32(RFC7748_PUBLIC));
        assert_eq!(key.secret_bytes(), &hex32(RFC7748_SECRET));
    }

    #[test]
    fn fingerprint_matches_openssl() {
        let key = Keypair::from_secret(hex32(RFC7748_SECRET));
        assert_eq!(key.public().fingerprint(), RFC7748_FINGERPRINT);
        assert_eq!(key.public().to_string(), RFC7748_FINGERPRINT);
        assert_eq!(format!("{:?}", key.public()), format!("PublicKey({RFC7748_FINGERPRINT})"));
    }

    #[test]
    fn to_pem_is_byte_identical_to_openssl() {
        assert_eq!(Keypair::from_secret(hex32(RFC7748_SECRET)).to_pem(), RFC7748_PEM);
    }

    #[test]
    fn pem_round_trip() {
        for _ in 0..8 {
            let key = Keypair::generate().unwrap();
            let back = decode(&key.to_pem()).unwrap();
            assert_eq!(back.secret_bytes(), key.secret_bytes());
            assert_eq!(back.public(), key.public());
        }
    }

    #[test]
    fn accepts_crlf_trailing_whitespace_and_surrounding_text() {
        let crlf = RFC7748_PEM.replace('\n', "  \r\n") + "\r\n\r\n";
        assert_eq!(decode(&crlf).unwrap().public().fingerprint(), RFC7748_FINGERPRINT);
        let wrapped = format!("a comment\n{RFC7748_PEM}\nmore text\n");
        assert_eq!(decode(&wrapped).unwrap().public().fingerprint(), RFC7748_FINGERPRINT);
    }

    #[test]
    fn accepts_one_asymmetric_key_with_public_key() {
        // v2 OneAsymmetricKey: version 1, and [1] IMPLICIT BIT STRING public key.
        let mut der = vec![0x30, 0x51, 0x02, 0x01, 0x01];
        der.extend_from_slice(&PKCS8_X25519_PREFIX[5..]);
        der.extend_from_slice(&hex32(RFC7748_SECRET));
        der.extend_from_slice(&[0x81, 0x21, 0x00]);
        der.extend_from_slice(&hex32(RFC7748_PUBLIC));
        let text = pem::encode_string("PRIVATE KEY", pem::LineEnding::LF, &der).unwrap();
        assert_eq!(decode(&text).unwrap().public().fingerprint(), RFC7748_FINGERPRINT);

        // The same with a public key that is not the private key's.
        let last = der.len() - 1;
        der[last] ^= 1;
        let text = pem::encode_string("PRIVATE KEY", pem::LineEnding::LF, &der).unwrap();
        assert!(matches!(decode(&text), Err(KeyError::Malformed { .. })));

        // A public key BIT STRING with unused bits: refused (pkcs8 0.10 refused it while
        // decoding; 0.11 hands it over and keys.rs checks).
        der[last] ^= 1;
        der[last - 32] = 0x01;
        let text = pem::encode_string("PRIVATE KEY", pem::LineEnding::LF, &der).unwrap();
        let err = decode(&text).unwrap_err();
        assert!(
            matches!(&err, KeyError::Malformed { detail, .. } if detail.contains("whole number")),
            "{err:?}"
        );
    }

    #[test]
    fn refuses_traditional_labels_by_name() {
        let rsa = "-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n";
        assert!(
            matches!(decode(rsa), Err(KeyError::WrongAlgorithm { found, .. }) if found == "RSA")
        );
        let ec = "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
        assert!(matches!(decode(ec), Err(KeyError::WrongAlgorithm { found, .. }) if found == "EC"));
        let public = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        assert!(matches!(decode(public), Err(KeyError::PublicKeyOnly { .. })));
        let cert = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(decode(cert), Err(KeyError::Malformed { .. })));
    }

    #[test]
    fn refuses_other_pkcs8_algorithms_by_name() {
        // Same layout as X25519, only the OID's last arc differs.
        for (arc, name) in [(0x6f, "X448"), (0x70, "Ed25519"), (0x71, "Ed448")] {
            let mut der = PKCS8_X25519_PREFIX.to_vec();
            der[11] = arc;
            der.extend_from_slice(&[7; 32]);
            let text = pem::encode_string("PRIVATE KEY", pem::LineEnding::LF, &der).unwrap();
            let err = decode(&text).unwrap_err();
            assert!(
                matches!(&err, KeyError::WrongAlgorithm { found, .. } if found == name),
                "{err:?}"
            );
        }
    }

    #[test]
    fn refuses_truncated_and_garbage() {
        assert!(matches!(decode(""), Err(KeyError::NotPem { .. })));
        assert!(matches!(decode("hello world\n"), Err(KeyError::NotPem { .. })));
        let truncated = &RFC7748_PEM[..40];
        assert!(matches!(decode(truncated), Err(KeyError::Malformed { .. })));
        let short = pem::encode_string("PRIVATE KEY", pem::LineEnding::LF, &[0x30, 0x00]).unwrap();
        assert!(matches!(decode(&short), Err(KeyError::Malformed { .. })));
    }

    #[test]
    fn errors_name_the_file_and_the_fix() {
        let msg = decode("garbage").unwrap_err().to_string();
        assert!(msg.contains("/keys/key.pem is not a PEM key file"), "{msg}");
        assert!(msg.contains("`openssl genpkey -algorithm X25519 -out /keys/key.pem`"), "{msg}");
        let spaced = decode_pem(b"x", Path::new("/my keys/it's.pem")).unwrap_err().to_string();
        assert!(spaced.contains(r"-out '/my keys/it'\''s.pem'`"), "{spaced}");
    }

    #[test]
    fn keypair_debug_hides_the_secret() {
        let key = Keypair::from_secret(hex32(RFC7748_SECRET));
        let debug = format!("{key:?}");
        assert!(debug.contains(RFC7748_FINGERPRINT), "{debug}");
        assert!(!debug.contains("119"), "{debug}"); // 0x77, the first secret byte
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn parse_fingerprint_normalizes_and_rejects() {
        assert_eq!(parse_fingerprint(RFC7748_FINGERPRINT).unwrap(), RFC7748_FINGERPRINT);
        let sloppy = format!(" sha256:{}= \n", &RFC7748_FINGERPRINT[7..]);
        assert_eq!(parse_fingerprint(&sloppy).unwrap(), RFC7748_FINGERPRINT);
        for bad in [
            "",
            "SHA256:",
            "MD5:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4",
            "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja",
            "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja4A",
            "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja!",
            // Non-canonical: the last character carries bits beyond the 32 bytes.
            "SHA256:MAyclgO5Kks57TlYv5JAEUgE20/TcwEsDKR0MtY0Ja5",
            "SHA256:ü",
        ] {
            assert!(matches!(parse_fingerprint(bad), Err(KeyError::BadFingerprint(_))), "{bad}");
        }
    }

    #[test]
    fn public_key_from_slice_checks_length() {
        assert!(PublicKey::from_slice(&[0; 31]).is_none());
        assert!(PublicKey::from_slice(&[0; 33]).is_none());
        assert_eq!(PublicKey::from_slice(&[9; 32]), Some(PublicKey::from_bytes([9; 32])));
    }
}
