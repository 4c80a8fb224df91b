//! Which backups to delete: a pure function of the names present and the
//! policy, so every target (local, USB, rsync, S3) prunes the same way and
//! the rule can be tested without a disk.

use crate::name::ArtifactName;

/// How many complete backups to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// The newest `keep` backups stay; at least 1.
    pub keep: usize,
}

/// The names to delete: all but the newest `policy.keep` by the timestamp
/// in their names, never `protect` (the backup just made, which must
/// survive even when the clock was set back and older-looking names exist).
/// Returned oldest first.
pub fn to_delete(
    names: &[ArtifactName],
    policy: RetentionPolicy,
    protect: Option<&ArtifactName>,
) -> Vec<ArtifactName> {
    to_delete_holding(names, policy, protect, &[])
}

/// [`to_delete`], also sparing every name in `held`: backups the shrink
/// guard keeps because a later backup held far less (an emptied `Sounds/`
/// must not rotate the last good backup out after `keep` nights). Held
/// backups are kept on top of the newest `keep`, not instead of them.
pub fn to_delete_holding(
    names: &[ArtifactName],
    policy: RetentionPolicy,
    protect: Option<&ArtifactName>,
    held: &[ArtifactName],
) -> Vec<ArtifactName> {
    // One backup may be present twice, plain and encrypted (`.tar.gz.age`):
    // backups are counted, kept and deleted by timestamp.
    let mut backups: Vec<&ArtifactName> = names.iter().collect();
    backups.sort_unstable_by(|a, b| b.cmp(a));
    backups.dedup_by(|a, b| a.same_backup(b));
    let keep = policy.keep.max(1);
    let is_protected = |name: &ArtifactName| protect.is_some_and(|p| p.same_backup(name));
    // The protected backup counts towards `keep` wherever it sorts.
    let mut kept = usize::from(backups.iter().any(|n| is_protected(n)));
    let mut doomed_backups = Vec::new();
    for name in backups {
        if is_protected(name) || held.iter().any(|h| h.same_backup(name)) {
            continue;
        }
        if kept < keep {
            kept += 1;
        } else {
            doomed_backups.push(name);
        }
    }
    let mut doomed: Vec<ArtifactName> = names
        .iter()
        .filter(|n| doomed_backups.iter().any(|d| d.same_backup(n)))
        .cloned()
        .collect();
    doomed.sort_unstable();
    doomed.dedup();
    doomed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(days: &[u32]) -> Vec<ArtifactName> {
        days.iter()
            .map(|d| {
                ArtifactName::parse(&format!("mss-backup-2026-03-{d:02}_031500.tar.gz")).unwrap()
            })
            .collect()
    }

    #[test]
    fn keeps_the_newest_n_by_name() {
        let all = names(&[5, 1, 9, 3, 7, 2, 8, 4, 6]);
        let doomed = to_delete(&all, RetentionPolicy { keep: 7 }, None);
        assert_eq!(doomed, names(&[1, 2]));
        assert_eq!(to_delete(&all, RetentionPolicy { keep: 3 }, None).len(), 6);
        assert!(to_delete(&all[..2], RetentionPolicy { keep: 7 }, None).is_empty());
    }

    #[test]
    fn never_deletes_the_protected_backup_after_a_clock_step_back() {
        let all = names(&[10, 11, 12, 1]);
        let just_made = &names(&[1])[0];
        let doomed = to_delete(&all, RetentionPolicy { keep: 2 }, Some(just_made));
        assert_eq!(doomed, names(&[10, 11]));
    }

    #[test]
    fn plain_and_encrypted_spellings_are_one_backup() {
        let mut all = names(&[1, 2, 3, 4]);
        all.extend(names(&[1, 3, 4]).iter().map(ArtifactName::encrypted));
        let protect = names(&[4])[0].encrypted();
        let doomed = to_delete(&all, RetentionPolicy { keep: 2 }, Some(&protect));
        let plain_doomed = names(&[1, 2]);
        let expected = vec![
            plain_doomed[0].clone(),
            plain_doomed[0].encrypted(),
            plain_doomed[1].clone(),
        ];
        assert_eq!(doomed, expected);
        let held = names(&[1]);
        let doomed = to_delete_holding(&all, RetentionPolicy { keep: 2 }, Some(&protect), &held);
        assert_eq!(doomed, vec![plain_doomed[1].clone()]);
    }

    #[test]
    fn held_backups_survive_on_top_of_the_newest_n() {
        let all = names(&[1, 2, 3, 4, 5, 6]);
        let held = names(&[2]);
        let doomed = to_delete_holding(&all, RetentionPolicy { keep: 3 }, None, &held);
        assert_eq!(doomed, names(&[1, 3]));
    }
}
