//! Pin checks of members' credentials, and the commit events built from them.

use super::*;

impl E2e {
    /// The pin status of a leaf; with `pin`, a valid fingerprint seen for the first time is
    /// pinned (and reported as [`PinStatus::New`]).
    pub(super) fn check_leaf(&mut self, leaf: &Leaf, pin: bool) -> PinStatus {
        let status = self.status_of(leaf);
        if pin
            && status == PinStatus::New
            && let Some(fp) = claimed_fingerprint(&leaf.identity)
        {
            self.pins.insert(fp, leaf.key.clone());
        }
        status
    }

    /// The status of a leaf: FORGED unless its credential binds its key to its fingerprint
    /// ([`crate::verify_credential`]); then own, pinned, new or changed as the pins say.
    pub(super) fn status_of(&self, leaf: &Leaf) -> PinStatus {
        let fp = match verify_credential(&leaf.identity, &leaf.key) {
            Ok(fp) => fp,
            Err(reason) => return PinStatus::Forged { reason: reason.into() },
        };
        if fp == self.fingerprint {
            return if leaf.key == self.signer.public() {
                PinStatus::Own
            } else {
                PinStatus::Forged {
                    reason: "it claims this client's own fingerprint with another key".into(),
                }
            };
        }
        match self.pins.get(&fp) {
            Some(pinned) if *pinned == leaf.key => PinStatus::Pinned,
            Some(pinned) => PinStatus::Changed { pinned_key_fp: key_fingerprint(pinned) },
            None => PinStatus::New,
        }
    }

    /// Builds the [`Event::Commit`] of a merged commit from the leaves before and after,
    /// checking (and pinning) every new or changed leaf.
    pub(super) fn commit_event(
        &mut self,
        room: &str,
        before: &[Leaf],
        committer_fp: Option<String>,
        own: bool,
        removed_me: bool,
        discarded_pending: bool,
    ) -> Event {
        let after = self.leaves(room);
        let epoch = self.epoch(room).unwrap_or_default();
        let same = |a: &Leaf, b: &Leaf| a.index == b.index && a.identity == b.identity;
        let removed = before
            .iter()
            .filter(|b| !after.iter().any(|a| same(a, b)))
            .map(|b| display_identity(&b.identity))
            .collect();
        let mut added = Vec::new();
        let mut warnings = Vec::new();
        for leaf in &after {
            if before.iter().any(|b| b == leaf) {
                continue; // unchanged: checked when it was first seen
            }
            if !before.iter().any(|b| same(b, leaf)) {
                added.push(display_identity(&leaf.identity));
            }
            let status = self.check_leaf(leaf, true);
            if status.is_forged() {
                let w = warning_of(&member_info(leaf, status, false));
                tracing::warn!(%room, warning = %w, "forged member in E2E group");
                warnings.push(w);
            }
        }
        Event::Commit {
            epoch,
            committer_fp,
            own,
            added,
            removed,
            removed_me,
            discarded_pending,
            warnings,
        }
    }
}

pub(super) fn member_info(leaf: &Leaf, status: PinStatus, is_self: bool) -> MemberInfo {
    MemberInfo {
        fingerprint: display_identity(&leaf.identity),
        signature_key_fp: key_fingerprint(&leaf.key),
        status,
        is_self,
    }
}

pub(super) fn warning_of(info: &MemberInfo) -> Warning {
    Warning {
        fingerprint: info.fingerprint.clone(),
        signature_key_fp: info.signature_key_fp.clone(),
        status: info.status.clone(),
    }
}
