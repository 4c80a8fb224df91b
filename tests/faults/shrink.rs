//! The shrink guard: an emptied `Sounds/` keeps the last good backup.

use std::fs;

use crate::support::*;

#[test]
fn an_emptied_sounds_dir_warns_and_keeps_the_last_good_backup_beyond_retention() {
    let mut env = TestEnv::with_audio(4);
    env.set("MSS_BACKUP_RETENTION", "2");
    env.backup_ok();
    let good = env.status()["archive"].as_str().unwrap().to_string();
    let uploads = env.data_dir.join("Sounds/uploads");
    let saved = env.root.path().join("saved-uploads");
    fs::rename(&uploads, &saved).unwrap();
    fs::create_dir(&uploads).unwrap();

    let out = env.backup_ok();
    let msg = stderr(&out);
    assert!(
        msg.contains("under 50% of the previous backup") && msg.contains(&good),
        "{msg}"
    );
    let status = env.status();
    assert_eq!(status["status"], "success");
    assert_eq!(status["shrink_guard"]["kept"][0]["archive"], good.as_str());
    let shown = env.expect(&["status"], 0);
    assert!(
        stdout(&shown).contains(&format!("shrink guard: keeping {good}")),
        "{}",
        stdout(&shown)
    );
    // A week of small backups: the last good one stays, the small ones
    // rotate as usual.
    for _ in 0..4 {
        let out = env.backup_ok();
        assert!(
            !stderr(&out).contains("under 50%"),
            "only the drop itself warns"
        );
        let names = env.archives();
        assert!(names.contains(&good), "{names:?}");
        assert_eq!(
            names.len(),
            3,
            "2 kept by retention + the held one: {names:?}"
        );
    }
    // The data comes back: the guard lets go and retention takes it.
    fs::remove_dir(&uploads).unwrap();
    fs::rename(&saved, &uploads).unwrap();
    env.backup_ok();
    let names = env.archives();
    assert!(!names.contains(&good), "{names:?}");
    assert_eq!(names.len(), 2);
    assert!(
        env.status()["shrink_guard"]["kept"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // Configurable: off means no warning and no hold.
    env.set("MSS_BACKUP_SHRINK_GUARD", "off");
    fs::rename(&uploads, &saved).unwrap();
    fs::create_dir(&uploads).unwrap();
    let out = env.backup_ok();
    assert!(!stderr(&out).contains("under"), "{}", stderr(&out));
    env.set("MSS_BACKUP_SHRINK_GUARD", "2");
    let out = env.expect(&[], 78);
    assert!(
        stderr(&out).contains("MSS_BACKUP_SHRINK_GUARD=2 is not valid"),
        "{}",
        stderr(&out)
    );
}
