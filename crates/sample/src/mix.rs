//! Named mixes: how a sample tree divides its bytes among kinds of data, so
//! that what depends on the data (the size of an archive above all) can be
//! checked on more than the one tree it was tuned on.

/// A part of a sample tree, by what its bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Part {
    /// Songs with tape and room hiss (gzip -6 ratio about 0.99).
    Music,
    /// Pads, chimes, lullabies (0.87).
    Tones,
    /// Voice memos, stories, announcements (0.79).
    Speech,
    /// White, pink, rain and ocean noise (0.89).
    Noise,
    /// Campfire, thunder, footsteps, wind: events over a noise bed.
    Effects,
    /// Drum loops over a room floor (0.73).
    Drums,
    /// Short hits padded with the recorder's floor (0.16).
    OneShots,
    /// Trackpack export zips of uploads (1.00).
    Exports,
    /// The SQLite database and the logs.
    Records,
}

/// A named way of dividing a sample tree among [`Part`]s.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    pub name: &'static str,
    /// One line on what it stands for.
    pub about: &'static str,
    /// Each part's weight in bytes; `None` for the calibrated tree, whose
    /// kinds follow a rotation by file count.
    pub shares: Option<&'static [(Part, u32)]>,
}

impl Mix {
    /// The tree the size-related constants were first tuned on; by bytes
    /// about 22% each of music, drums, speech and noise, 11% tones, 3%
    /// one-shots, 1% zips and well under 1% database and logs.
    pub const CALIBRATED: Mix = Mix {
        name: "calibrated",
        about: "kinds by file count, as calibrated on a real MSS data set (issue 3)",
        shares: None,
    };

    /// The independent mix of issue 18, on which thresholds tuned on the
    /// calibrated tree missed the size goal.
    pub const UNSEEN: Mix = Mix {
        name: "unseen",
        about: "issue 18's independent mix: music-heavy, zips and a bigger database",
        shares: Some(&[
            (Part::Music, 27),
            (Part::Tones, 17),
            (Part::Speech, 12),
            (Part::Noise, 12),
            (Part::Effects, 8),
            (Part::Drums, 8),
            (Part::OneShots, 4),
            (Part::Exports, 8),
            (Part::Records, 4),
        ]),
    };

    pub const SLEEP: Mix = Mix {
        name: "sleep",
        about: "a sleep and focus machine: mostly noise and tones",
        shares: Some(&[
            (Part::Noise, 35),
            (Part::Tones, 30),
            (Part::Music, 10),
            (Part::Effects, 10),
            (Part::Speech, 5),
            (Part::OneShots, 2),
            (Part::Drums, 2),
            (Part::Exports, 4),
            (Part::Records, 2),
        ]),
    };

    pub const STUDIO: Mix = Mix {
        name: "studio",
        about: "a music room: drum loops, songs and one-shots",
        shares: Some(&[
            (Part::Drums, 30),
            (Part::Music, 25),
            (Part::OneShots, 12),
            (Part::Effects, 8),
            (Part::Tones, 5),
            (Part::Speech, 4),
            (Part::Noise, 4),
            (Part::Exports, 10),
            (Part::Records, 2),
        ]),
    };

    pub const VOICE: Mix = Mix {
        name: "voice",
        about: "stories and announcements, with a busy database",
        shares: Some(&[
            (Part::Speech, 45),
            (Part::Music, 15),
            (Part::Tones, 10),
            (Part::Effects, 5),
            (Part::Noise, 5),
            (Part::OneShots, 3),
            (Part::Drums, 2),
            (Part::Exports, 10),
            (Part::Records, 5),
        ]),
    };

    pub const EXPORTS: Mix = Mix {
        name: "exports",
        about: "a shop of finished songs: music and export zips, little else",
        shares: Some(&[
            (Part::Music, 30),
            (Part::Exports, 30),
            (Part::Speech, 10),
            (Part::Tones, 10),
            (Part::Noise, 10),
            (Part::Drums, 5),
            (Part::Records, 5),
        ]),
    };

    /// The mix called `name`.
    pub fn named(name: &str) -> Option<&'static Mix> {
        MIXES.iter().find(|m| m.name == name)
    }
}

/// Every named mix, the calibrated one first.
pub const MIXES: &[Mix] = &[
    Mix::CALIBRATED,
    Mix::UNSEEN,
    Mix::SLEEP,
    Mix::STUDIO,
    Mix::VOICE,
    Mix::EXPORTS,
];
