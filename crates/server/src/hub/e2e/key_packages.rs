//! Key packages: what is checked before one is kept, and the table that keeps them within
//! their bounds.
//!
//! An upload is checked package by package before anything is kept ([`KeyPackage::check`]):
//! base64 of at most [`MAX_KEY_PACKAGE_BYTES`], one MLS message holding one key package, valid
//! under openmls (`KeyPackageIn::validate`: the leaf and package signatures, the protocol
//! version, the lifetime), of Chatao's ciphersuite ([`chatao_e2e::CIPHERSUITE`]), whose basic
//! credential binds its MLS key to the uploading key's fingerprint
//! ([`chatao_e2e::verify_credential`]). So nobody can park another key's packages (or garbage)
//! under its own name, and what a fetch hands out is what a client can add.
//!
//! The [`KeyPackageTable`] keeps, per key, its packages oldest first under a sequence number
//! that only grows (the store's row key with the fingerprint, so each change is one row: an
//! upload inserts its packages and deletes those it replaced, a fetch deletes the one taken,
//! an eviction the key's rows). Bounds, all in `limits.rs`: [`MAX_KEY_PACKAGES`] and
//! [`MAX_KEY_PACKAGE_BYTES_PER_KEY`] per key (the oldest are replaced),
//! [`MAX_KEY_PACKAGE_KEYS`] keys and [`MAX_KEY_PACKAGE_TOTAL_BYTES`] in all (the offline key
//! that uploaded least recently is forgotten; if only online keys are left, the upload is
//! refused). Bytes are counted as held: the base64 text of each package.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::LazyLock;

use base64::Engine as _;
use openmls::prelude::tls_codec::DeserializeBytes as _;
use openmls::prelude::{BasicCredential, MlsMessageBodyIn, MlsMessageIn, ProtocolVersion};
use openmls_rust_crypto::RustCrypto;

use chatao_proto::Fingerprint;

use super::E2eRefusal;
use crate::limits::{
    MAX_KEY_PACKAGE_BYTES, MAX_KEY_PACKAGE_BYTES_PER_KEY, MAX_KEY_PACKAGE_KEYS,
    MAX_KEY_PACKAGE_TOTAL_BYTES, MAX_KEY_PACKAGES,
};

/// Longest base64 text of a package of [`MAX_KEY_PACKAGE_BYTES`] (padded).
pub const MAX_KEY_PACKAGE_B64: usize = MAX_KEY_PACKAGE_BYTES.div_ceil(3) * 4;

/// The crypto openmls verifies signatures with (only its verification is used: no secret, no
/// randomness drawn).
static CRYPTO: LazyLock<RustCrypto> = LazyLock::new(RustCrypto::default);

/// A key package that passed [`KeyPackage::check`] for the key that uploaded it: its base64
/// text as the client sent it (and as a fetch hands it out).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPackage(String);

impl KeyPackage {
    /// Checks `b64`, uploaded by the key `fingerprint`: its size first, then its structure,
    /// signatures, ciphersuite and credential (see the module docs). The refusal says which.
    pub fn check(b64: String, fingerprint: &str) -> Result<KeyPackage, E2eRefusal> {
        if b64.is_empty() {
            return Err(E2eRefusal::BadKeyPackage("empty"));
        }
        if b64.len() > MAX_KEY_PACKAGE_B64 {
            return Err(E2eRefusal::KeyPackageTooLarge(b64.len()));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&b64)
            .map_err(|_| E2eRefusal::BadKeyPackage("not base64"))?;
        if bytes.len() > MAX_KEY_PACKAGE_BYTES {
            return Err(E2eRefusal::KeyPackageTooLarge(b64.len()));
        }
        let msg = MlsMessageIn::tls_deserialize_exact_bytes(&bytes)
            .map_err(|_| E2eRefusal::BadKeyPackage("not an MLS message"))?;
        let MlsMessageBodyIn::KeyPackage(kp) = msg.extract() else {
            return Err(E2eRefusal::BadKeyPackage("not a key package"));
        };
        let kp = kp
            .validate(&*CRYPTO, ProtocolVersion::Mls10)
            .map_err(|_| E2eRefusal::BadKeyPackage("its signature or contents do not verify"))?;
        if kp.ciphersuite() != chatao_e2e::CIPHERSUITE {
            return Err(E2eRefusal::BadKeyPackage("not of Chatao's ciphersuite"));
        }
        let leaf = kp.leaf_node();
        let identity = BasicCredential::try_from(leaf.credential().clone())
            .map_err(|_| E2eRefusal::BadKeyPackage("not a basic credential"))?;
        match chatao_e2e::verify_credential(identity.identity(), leaf.signature_key().as_slice()) {
            Ok(fp) if fp == fingerprint => Ok(KeyPackage(b64)),
            Ok(_) => Err(E2eRefusal::NotOwnKeyPackage),
            Err(_) => Err(E2eRefusal::BadKeyPackage("its credential does not prove a Chatao key")),
        }
    }

    /// A package taken as valid without checking (unit tests of the table's bounds).
    #[cfg(test)]
    pub(crate) fn unchecked(b64: String) -> KeyPackage {
        KeyPackage(b64)
    }
}

/// One key's packages, oldest first, each with its sequence number.
#[derive(Debug, Default)]
struct KeySet {
    packages: VecDeque<(u64, String)>,
    /// The sum of the packages' lengths.
    bytes: usize,
    /// The sequence number of its last upload (the key of `by_upload`).
    uploaded: u64,
}

/// What an accepted upload changed, for the store: rows to insert, rows of the same key to
/// delete, keys whose rows all go.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Upload {
    pub added: Vec<(u64, String)>,
    pub replaced: Vec<u64>,
    pub evicted: Vec<Fingerprint>,
}

/// Every key's key packages, within the bounds in the module docs.
#[derive(Debug, Default)]
pub struct KeyPackageTable {
    keys: HashMap<Fingerprint, KeySet>,
    /// Each key under its last upload's sequence number: oldest upload first, for the
    /// eviction. (With the key: rows of an older version share their numbers.)
    by_upload: BTreeSet<(u64, Fingerprint)>,
    /// Bytes held: the sum of every key's `bytes`.
    bytes: usize,
    /// The last sequence number given (packages and uploads share it; it only grows, also
    /// across restarts: [`KeyPackageTable::load`] starts after the largest stored).
    seq: u64,
}

impl KeyPackageTable {
    /// Base64 bytes of packages held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Keys with packages.
    #[cfg(test)]
    pub fn keys(&self) -> usize {
        self.keys.len()
    }

    /// Whether `fp` has packages.
    #[cfg(test)]
    pub fn contains(&self, fp: &str) -> bool {
        self.keys.contains_key(fp)
    }

    /// How many packages `fp` has.
    #[cfg(test)]
    pub fn count(&self, fp: &str) -> usize {
        self.keys.get(fp).map_or(0, |k| k.packages.len())
    }

    /// Offers one stored row (newest first, at startup): kept if it fits the bounds, as an
    /// upload of it would (the newest rows win). Returns whether it was kept.
    pub fn load(&mut self, fp: &Fingerprint, seq: u64, package: String) -> bool {
        self.seq = self.seq.max(seq);
        let len = package.len();
        if len > MAX_KEY_PACKAGE_B64 || self.bytes + len > MAX_KEY_PACKAGE_TOTAL_BYTES {
            return false;
        }
        if !self.keys.contains_key(fp) {
            if self.keys.len() >= MAX_KEY_PACKAGE_KEYS {
                return false;
            }
            self.by_upload.insert((seq, fp.clone()));
            self.keys.insert(fp.clone(), KeySet { uploaded: seq, ..KeySet::default() });
        }
        let Some(set) = self.keys.get_mut(fp) else { return false };
        if set.packages.len() >= MAX_KEY_PACKAGES || set.bytes + len > MAX_KEY_PACKAGE_BYTES_PER_KEY
        {
            return false;
        }
        set.packages.push_front((seq, package));
        set.bytes += len;
        self.bytes += len;
        true
    }

    /// Adds `packages` (oldest first) for `fp`: the newest of them that fit the per-key bounds
    /// are kept, replacing the oldest held; room is made in the table by forgetting offline
    /// keys (`online` says which are not), least recent upload first. Refused, changing
    /// nothing, when that is not enough.
    pub fn upload(
        &mut self,
        fp: &Fingerprint,
        packages: Vec<KeyPackage>,
        online: impl Fn(&str) -> bool,
    ) -> Result<Upload, E2eRefusal> {
        // The newest of the upload that fit a key on their own.
        let (mut count, mut bytes) = (0, 0);
        let mut fresh: Vec<String> = vec![];
        for p in packages.into_iter().rev() {
            if count >= MAX_KEY_PACKAGES || bytes + p.0.len() > MAX_KEY_PACKAGE_BYTES_PER_KEY {
                break;
            }
            count += 1;
            bytes += p.0.len();
            fresh.push(p.0);
        }
        fresh.reverse();
        if fresh.is_empty() {
            return Ok(Upload::default());
        }
        // The oldest held that they replace.
        let held = self.keys.get(fp);
        let (mut keep_count, mut keep_bytes) = held.map_or((0, 0), |k| (k.packages.len(), k.bytes));
        let mut replaced = 0;
        if let Some(k) = held {
            for (_, p) in &k.packages {
                if keep_count + count <= MAX_KEY_PACKAGES
                    && keep_bytes + bytes <= MAX_KEY_PACKAGE_BYTES_PER_KEY
                {
                    break;
                }
                keep_count -= 1;
                keep_bytes -= p.len();
                replaced += 1;
            }
        }
        let before = held.map_or(0, |k| k.bytes);
        // Room in the table: the offline keys to forget, oldest upload first.
        let new_key = held.is_none();
        let mut total = self.bytes - before + keep_bytes + bytes;
        let mut keys = self.keys.len() + usize::from(new_key);
        let mut evict = vec![];
        for (_, other) in &self.by_upload {
            if total <= MAX_KEY_PACKAGE_TOTAL_BYTES && keys <= MAX_KEY_PACKAGE_KEYS {
                break;
            }
            if other == fp || online(other) {
                continue;
            }
            total -= self.keys.get(other).map_or(0, |k| k.bytes);
            keys -= 1;
            evict.push(other.clone());
        }
        if total > MAX_KEY_PACKAGE_TOTAL_BYTES || keys > MAX_KEY_PACKAGE_KEYS {
            return Err(E2eRefusal::KeyPackagesFull);
        }
        for other in &evict {
            self.forget(other);
        }
        // Apply.
        let set = self.keys.entry(fp.clone()).or_default();
        let mut up = Upload { evicted: evict, ..Upload::default() };
        for _ in 0..replaced {
            if let Some((seq, p)) = set.packages.pop_front() {
                set.bytes -= p.len();
                self.bytes -= p.len();
                up.replaced.push(seq);
            }
        }
        for p in fresh {
            self.seq += 1;
            set.bytes += p.len();
            self.bytes += p.len();
            up.added.push((self.seq, p.clone()));
            set.packages.push_back((self.seq, p));
        }
        self.by_upload.remove(&(set.uploaded, fp.clone()));
        set.uploaded = self.seq;
        self.by_upload.insert((self.seq, fp.clone()));
        Ok(up)
    }

    /// Hands out `fp`'s oldest package: taken (its sequence number returned, to delete its
    /// row) unless it is the last, which is kept and handed out again as a last resort.
    pub fn take(&mut self, fp: &str) -> Option<(String, Option<u64>)> {
        let set = self.keys.get_mut(fp)?;
        if set.packages.len() > 1 {
            let (seq, p) = set.packages.pop_front()?;
            set.bytes -= p.len();
            self.bytes -= p.len();
            Some((p, Some(seq)))
        } else {
            set.packages.front().map(|(_, p)| (p.clone(), None))
        }
    }

    /// Forgets every package of `fp`.
    fn forget(&mut self, fp: &Fingerprint) {
        if let Some(set) = self.keys.remove(fp) {
            self.bytes -= set.bytes;
            self.by_upload.remove(&(set.uploaded, fp.clone()));
            tracing::debug!(fingerprint = %fp, "key packages evicted (table full)");
        }
    }

    /// The bounds hold and the counters agree with the contents (tests).
    #[cfg(test)]
    pub(crate) fn assert_consistent(&self) {
        let mut total = 0;
        for (fp, set) in &self.keys {
            let bytes: usize = set.packages.iter().map(|(_, p)| p.len()).sum();
            assert_eq!(bytes, set.bytes, "{fp}");
            assert!(set.packages.len() <= MAX_KEY_PACKAGES && !set.packages.is_empty());
            assert!(set.bytes <= MAX_KEY_PACKAGE_BYTES_PER_KEY);
            assert!(self.by_upload.contains(&(set.uploaded, fp.clone())), "{fp}");
            total += bytes;
        }
        assert_eq!(total, self.bytes);
        assert_eq!(self.by_upload.len(), self.keys.len());
        assert!(self.bytes <= MAX_KEY_PACKAGE_TOTAL_BYTES);
        assert!(self.keys.len() <= MAX_KEY_PACKAGE_KEYS);
    }
}
