//! The uploads: WAV files of six kinds of sound, rendered from a seed and
//! streamed to disk through a small buffer. Each kind has a noise floor under
//! it, as real recordings do, tuned so that gzip -6 shrinks it as much as it
//! shrinks that kind of real MSS audio (see the crate's header).

use std::collections::HashMap;
use std::f64::consts::{PI, TAU};
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use crate::files::put;
use crate::{CHUNK_FRAMES, MIB, Part, RATE, Rng, SampleSpec, WAV_HEADER};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Kind {
    Tone,
    Speech,
    Noise,
    OneShot,
    Drums,
    Music,
    Effect,
}

/// The mix by file count; the 10 slots cycle so even a tiny tree has every kind.
const ROTATION: [Kind; 10] = {
    use Kind::*;
    [
        Music, Drums, Speech, Noise, Tone, Music, OneShot, Speech, Drums, Noise,
    ]
};

impl Kind {
    pub(crate) fn stems(self) -> [&'static str; 4] {
        match self {
            Kind::Tone => ["synth_pad", "bell_chime", "lullaby_tone", "singing_bowl"],
            Kind::Speech => ["voice_memo", "story_time", "announcement", "affirmation"],
            // The order matters: it is the noise colour rendered.
            Kind::Noise => ["white_noise", "pink_noise", "rain_noise", "ocean_waves"],
            Kind::OneShot => ["door_chime", "clap_oneshot", "notification", "click_fx"],
            Kind::Drums => ["kick_loop", "drum_loop", "hihat_loop", "breakbeat"],
            Kind::Music => ["song_mix", "ambient_track", "jam_session", "lofi_beat"],
            Kind::Effect => ["campfire", "thunder", "footsteps", "wind_gust"],
        }
    }

    /// The kind of audio a part of a mix holds, if it is audio.
    pub(crate) fn of(part: Part) -> Option<Kind> {
        Some(match part {
            Part::Music => Kind::Music,
            Part::Tones => Kind::Tone,
            Part::Speech => Kind::Speech,
            Part::Noise => Kind::Noise,
            Part::Effects => Kind::Effect,
            Part::Drums => Kind::Drums,
            Part::OneShots => Kind::OneShot,
            Part::Exports | Part::Records => return None,
        })
    }

    /// The largest file of this kind, given the largest of any kind: one-shots
    /// are short, effects medium.
    fn largest(self, largest: u64) -> u64 {
        match self {
            Kind::OneShot => largest / 4,
            Kind::Effect => largest / 2,
            _ => largest,
        }
    }
}

pub(crate) struct Wav {
    pub(crate) name: String,
    kind: Kind,
    variant: usize,
    channels: u16,
    pub(crate) frames: u64,
    pub(crate) size: u64,
    pub(crate) crc: u32,
}

/// Names, sizes and renders the uploads one by one; `next_kind` says which
/// kind comes next given the files so far, `None` when done.
struct Uploads<'a> {
    dir: &'a Path,
    seed: u64,
    sine: Sine,
    rng: Rng,
    counts: HashMap<&'static str, u32>,
    wavs: Vec<Wav>,
}

impl<'a> Uploads<'a> {
    fn new(dir: &'a Path, seed: u64) -> Self {
        Uploads {
            dir,
            seed,
            sine: Sine::new(),
            rng: Rng::new(seed, 1),
            counts: HashMap::new(),
            wavs: Vec::new(),
        }
    }

    /// Writes one WAV of `kind`, of about `size` bytes.
    fn add(&mut self, kind: Kind, size: u64) -> io::Result<u64> {
        let rng = &mut self.rng;
        let variant = rng.below(4) as usize;
        let stem = kind.stems()[variant];
        let n = self.counts.entry(stem).or_insert(0u32);
        *n += 1;
        let channels = match kind {
            Kind::Music | Kind::Drums | Kind::Noise | Kind::Effect => 2,
            Kind::Tone => 1 + rng.below(2) as u16,
            Kind::Speech | Kind::OneShot => 1,
        };
        let frames = (size - WAV_HEADER) / (2 * u64::from(channels));
        let mut wav = Wav {
            name: format!("{stem}_{n:02}.wav"),
            kind,
            variant,
            channels,
            frames,
            size: WAV_HEADER + frames * 2 * u64::from(channels),
            crc: 0,
        };
        // Each file has its own stream, so its bytes depend only on seed and position.
        let mut file_rng = Rng::new(self.seed, 1000 + self.wavs.len() as u64);
        wav.crc = render(&self.dir.join(&wav.name), &wav, &mut file_rng, &self.sine)?;
        let size = wav.size;
        self.wavs.push(wav);
        Ok(size)
    }
}

/// The calibrated tree's uploads: kinds by file count ([`ROTATION`]),
/// `spec.audio_mib` of them.
pub(crate) fn write_audio(uploads: &Path, spec: &SampleSpec) -> io::Result<Vec<Wav>> {
    let total = spec.audio_mib.saturating_mul(MIB);
    let largest = (total / 4).clamp(64 * 1024, 8 * MIB);
    let mut out = Uploads::new(uploads, spec.seed);
    let mut written = 0;
    while written + 4096 <= total {
        let kind = ROTATION[out.wavs.len() % ROTATION.len()];
        let mut size = out.rng.between(largest / 16, largest);
        if kind == Kind::OneShot {
            size /= 4;
        }
        size = size.min(total - written);
        written += out.add(kind, size)?;
    }
    Ok(out.wavs)
}

/// Uploads by bytes: `budgets` gives each kind its bytes. The kind furthest
/// behind its budget (as a fraction of it) goes next, so kinds interleave in
/// the listing as they would in real uploads instead of coming in blocks.
pub(crate) fn write_audio_shares(
    uploads: &Path,
    budgets: &[(Kind, u64)],
    seed: u64,
) -> io::Result<Vec<Wav>> {
    let total: u64 = budgets.iter().map(|(_, b)| b).sum();
    let largest = (total / 4).clamp(64 * 1024, 8 * MIB);
    let mut out = Uploads::new(uploads, seed);
    let mut written: Vec<u64> = vec![0; budgets.len()];
    loop {
        let behind = budgets
            .iter()
            .zip(&written)
            .enumerate()
            .filter(|(_, ((_, budget), done))| **done + 4096 <= *budget)
            .min_by(|(_, ((_, a), da)), (_, ((_, b), db))| {
                // done/budget, compared without division: da/a < db/b.
                (u128::from(**da) * u128::from(*b)).cmp(&(u128::from(**db) * u128::from(*a)))
            })
            .map(|(i, _)| i);
        let Some(i) = behind else { break };
        let (kind, budget) = budgets[i];
        let most = kind.largest(largest);
        let size = out.rng.between(most / 16, most).min(budget - written[i]);
        written[i] += out.add(kind, size)?;
    }
    Ok(out.wavs)
}

/// Sine lookup table: a load per oscillator sample is several times cheaper than
/// `sin()`, and the phase truncation only adds some inaudible noise.
pub(crate) struct Sine(Box<[f32; 4096]>);

impl Sine {
    fn new() -> Self {
        let mut table = Box::new([0.0; 4096]);
        for (i, v) in table.iter_mut().enumerate() {
            *v = (i as f64 * TAU / 4096.0).sin() as f32;
        }
        Sine(table)
    }

    /// `phase` is a full turn over the `u32` range, so oscillators wrap for free.
    fn at(&self, phase: u32) -> f32 {
        self.0[(phase >> 20) as usize]
    }
}

const PHASE_PER_HZ: f32 = 4_294_967_296.0 / RATE as f32;

fn phase_inc(hz: f32) -> u32 {
    (hz * PHASE_PER_HZ) as u32
}

/// Exponential decay that snaps to zero before reaching denormals, which are slow.
fn decay(level: &mut f32, factor: f32) {
    *level = if *level > 1e-5 { *level * factor } else { 0.0 };
}

/// Streams a 16-bit PCM WAV and returns the CRC-32 of the file, which spares the export
/// bundles a second read.
fn write_wav(
    path: &Path,
    channels: u16,
    frames: u64,
    mut next: impl FnMut() -> (f32, f32),
) -> io::Result<u32> {
    let block = channels * 2;
    let data = frames * u64::from(block);
    let riff = u32::try_from(data + WAV_HEADER - 8).map_err(io::Error::other)?;
    let mut head = b"RIFF".to_vec();
    put(&mut head, &[(riff, 4)]);
    head.extend_from_slice(b"WAVEfmt ");
    let block = u32::from(block);
    put(
        &mut head,
        &[
            (16, 4), // fmt chunk size
            (1, 2),  // integer PCM
            (channels.into(), 2),
            (RATE, 4),
            (RATE * block, 4), // bytes per second
            (block, 2),
            (16, 2), // bits per sample
        ],
    );
    head.extend_from_slice(b"data");
    put(&mut head, &[(riff + 8 - WAV_HEADER as u32, 4)]);

    let mut out = BufWriter::new(File::create(path)?);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&head);
    out.write_all(&head)?;
    let mut buf = vec![0u8; CHUNK_FRAMES * block as usize];
    let pcm = |x: f32| ((x * 32767.0) as i16).to_le_bytes(); // `as` saturates: clipping
    let mut left = frames;
    while left > 0 {
        let n = left.min(CHUNK_FRAMES as u64) as usize;
        let chunk = &mut buf[..n * block as usize];
        if channels == 2 {
            for frame in chunk.chunks_exact_mut(4) {
                let (l, r) = next();
                frame[..2].copy_from_slice(&pcm(l));
                frame[2..].copy_from_slice(&pcm(r));
            }
        } else {
            for frame in chunk.chunks_exact_mut(2) {
                frame.copy_from_slice(&pcm(next().0));
            }
        }
        crc.update(chunk);
        out.write_all(chunk)?;
        left -= n as u64;
    }
    out.flush()?;
    Ok(crc.finalize())
}

fn render(path: &Path, wav: &Wav, rng: &mut Rng, sine: &Sine) -> io::Result<u32> {
    let (channels, frames) = (wav.channels, wav.frames);
    match wav.kind {
        Kind::Tone => {
            let mut melody = Melody::new(220.0 * rng.pick(&PENTATONIC), 400, 2000);
            write_wav(path, channels, frames, || {
                let s = melody.next(rng, sine) * 0.65;
                (s, s * 0.8)
            })
        }
        Kind::Speech => {
            let mut speech = Speech::default();
            write_wav(path, channels, frames, || {
                let s = speech.next(rng, sine) + rng.floor(0.0007).0;
                (s, s)
            })
        }
        Kind::Noise => {
            let (mut left, mut right) = (Pink::default(), Pink::default());
            let (mut swell, swell_inc) = (0u32, phase_inc(0.07 + rng.unit() * 0.1));
            let (mut last_l, mut last_r) = (0.0, 0.0);
            let variant = wav.variant;
            // Noise machines play quietly: a quarter of full scale.
            let gain = 0.25;
            write_wav(path, channels, frames, || {
                let (a, b) = rng.noise2();
                let (a, b) = (a * gain, b * gain);
                match variant {
                    0 => (a * 0.4, b * 0.4),
                    1 => (left.next(a), right.next(b)),
                    2 => {
                        // Rain is brighter than pink noise: add the crackle of a difference.
                        let l = left.next(a) * 0.6 + (a - last_l) * 0.12;
                        let r = right.next(b) * 0.6 + (b - last_r) * 0.12;
                        (last_l, last_r) = (a, b);
                        (l, r)
                    }
                    _ => {
                        swell = swell.wrapping_add(swell_inc);
                        let gain = 0.55 + 0.45 * sine.at(swell);
                        (left.next(a) * gain, right.next(b) * gain)
                    }
                }
            })
        }
        Kind::OneShot => {
            // A short hit followed by silence padding: the most compressible audio.
            let hit = rng.between(u64::from(RATE) / 20, u64::from(RATE) * 2 / 5);
            let factor = 0.001f32.powf(1.0 / hit as f32);
            let inc = phase_inc(300.0 + rng.unit() * 1500.0);
            let (mut t, mut level, mut phase) = (0, 1.0, 0u32);
            write_wav(path, channels, frames, || {
                // The padding is the recorder's floor, a few LSB, not digital zero.
                let (f, _) = rng.floor(0.000_08);
                if t >= hit {
                    return (f, f);
                }
                t += 1;
                decay(&mut level, factor);
                phase = phase.wrapping_add(inc);
                let s = level * (sine.at(phase) * 0.7 + rng.noise() * 0.3 * level) + f;
                (s, s)
            })
        }
        Kind::Drums => {
            let mut drums = Drums::new(rng);
            write_wav(path, channels, frames, || {
                // A loop sample peaks around -10 dBFS over a room floor near -70.
                let (l, r) = drums.next(rng, sine);
                let (l, r) = (l * 0.3, r * 0.3);
                let (fl, fr) = rng.floor(0.0003);
                (l + fl, r + fr)
            })
        }
        Kind::Music => {
            let root = 110.0 * rng.pick(&PENTATONIC);
            let mut bass = Melody::new(root / 2.0, 300, 900);
            let mut voices = [
                Melody::new(root * 2.0, 150, 600),
                Melody::new(root * 3.0, 200, 800),
                Melody::new(root * 4.0, 100, 400),
            ];
            let hiss = 0.5;
            write_wav(path, channels, frames, || {
                let mut s = bass.next(rng, sine) * 0.35;
                for voice in &mut voices {
                    s += voice.next(rng, sine) * 0.2;
                }
                // Per-channel noise stands in for the room and tape hiss of real
                // recordings, which is what makes them nearly incompressible.
                let (l, r) = rng.noise2();
                (s + l * hiss, s * 0.9 + r * hiss)
            })
        }
        Kind::Effect => {
            let mut effect = Effect::new(wav.variant, rng);
            write_wav(path, channels, frames, || effect.next(rng, sine))
        }
    }
}

const PENTATONIC: [f32; 8] = [
    1.0, 1.122_462, 1.259_921, 1.498_307, 1.681_793, 2.0, 2.244_924, 2.519_842,
];
const HARMONICS: [f32; 3] = [0.6, 0.25, 0.15];

/// An oscillator with a few harmonics playing random notes of a pentatonic scale, each
/// under a linear attack-decay-sustain-release envelope stepped by a per-sample slope.
#[derive(Default)]
struct Melody {
    root: f32,
    note_ms: (u64, u64),
    phase: [u32; 3],
    inc: [u32; 3],
    /// Envelope segments of the note as (samples, level reached at their end).
    segments: [(u32, f32); 4],
    segment: usize,
    left: u32,
    level: f32,
    slope: f32,
}

impl Melody {
    fn new(root: f32, min_ms: u64, max_ms: u64) -> Self {
        Melody {
            root,
            note_ms: (min_ms, max_ms),
            segment: 4, // past the last segment: the first sample starts a note
            ..Default::default()
        }
    }

    #[inline]
    fn next(&mut self, rng: &mut Rng, sine: &Sine) -> f32 {
        if self.left == 0 {
            if self.segment == self.segments.len() {
                self.trigger(rng);
            }
            let (len, target) = self.segments[self.segment];
            self.segment += 1;
            (self.left, self.slope) = (len, (target - self.level) / len as f32);
        }
        self.left -= 1;
        self.level += self.slope;
        let mut s = 0.0;
        for ((phase, inc), amp) in self.phase.iter_mut().zip(self.inc).zip(HARMONICS) {
            *phase = phase.wrapping_add(inc);
            s += sine.at(*phase) * amp;
        }
        s * self.level
    }

    fn trigger(&mut self, rng: &mut Rng) {
        let hz = self.root * rng.pick(&PENTATONIC);
        // Slightly stretched overtones, as in bells and pianos, sound less like a test signal.
        let stretch = 1.0 + rng.unit() * 0.01;
        for (k, inc) in self.inc.iter_mut().enumerate() {
            *inc = phase_inc(hz * (k + 1) as f32 * stretch.powi(k as i32));
        }
        let len = (rng.between(self.note_ms.0, self.note_ms.1) * u64::from(RATE) / 1000) as u32;
        let sustain = 0.4 + rng.unit() * 0.4;
        let attack = len / rng.between(8, 30) as u32;
        let hold = len - attack - len / 5 - len / 4;
        self.segments = [
            (attack, 1.0),
            (len / 5, sustain),
            (hold, sustain),
            (len / 4, 0.0),
        ]
        .map(|(len, level)| (len.max(1), level));
        self.segment = 0;
    }
}

/// Paul Kellet's economy pink-noise filter.
#[derive(Default)]
struct Pink([f32; 3]);

impl Pink {
    fn next(&mut self, white: f32) -> f32 {
        let b = &mut self.0;
        b[0] = 0.99765 * b[0] + white * 0.099_046;
        b[1] = 0.96300 * b[1] + white * 0.296_516_4;
        b[2] = 0.57000 * b[2] + white * 1.052_691_3;
        (b[0] + b[1] + b[2] + white * 0.1848) * 0.15
    }
}

/// A state-variable band-pass standing in for one vocal-tract resonance.
#[derive(Default, Clone, Copy)]
struct Formant {
    coef: f32,
    low: f32,
    band: f32,
}

/// Syllables of voiced (buzz) or unvoiced (hiss) sound through two formants, with
/// pauses of near-silent room tone between them.
#[derive(Default)]
struct Speech {
    left: u32,
    talking: bool,
    voiced: bool,
    env: u32,
    env_inc: u32,
    glottis: u32,
    pitch: u32,
    formants: [Formant; 2],
}

impl Speech {
    fn next(&mut self, rng: &mut Rng, sine: &Sine) -> f32 {
        if self.left == 0 {
            self.segment(rng);
        }
        self.left -= 1;
        let noise = rng.noise();
        if !self.talking {
            return noise * 0.002;
        }
        self.env = self.env.wrapping_add(self.env_inc);
        self.glottis = self.glottis.wrapping_add(self.pitch);
        let source = if self.voiced {
            self.glottis as i32 as f32 * (1.0 / 2_147_483_648.0) * 0.8 + noise * 0.2
        } else {
            noise
        };
        const DAMPING: f32 = 0.15;
        let mut out = 0.0;
        for (f, gain) in self.formants.iter_mut().zip([1.6, 1.0]) {
            f.low += f.coef * f.band;
            let high = source - f.low - DAMPING * f.band;
            f.band += f.coef * high;
            out += f.band * DAMPING * gain;
        }
        out * sine.at(self.env)
    }

    fn segment(&mut self, rng: &mut Rng) {
        let ms = RATE / 1000;
        self.talking = !self.talking;
        if self.talking {
            self.left = ms * rng.between(80, 320) as u32;
            // Half a sine turn over the syllable: a smooth rise and fall.
            (self.env, self.env_inc) = (0, (1 << 31) / self.left);
            self.voiced = rng.below(5) != 0;
            self.pitch = phase_inc(100.0 + rng.unit() * 120.0);
            let hz = [300.0 + 550.0 * rng.unit(), 900.0 + 1500.0 * rng.unit()];
            for (f, hz) in self.formants.iter_mut().zip(hz) {
                f.coef = (2.0 * (PI * f64::from(hz) / f64::from(RATE)).sin()) as f32;
            }
        } else {
            // Mostly gaps between syllables, sometimes a breath between sentences.
            let pause = match rng.below(6) {
                0 => rng.between(400, 1200),
                _ => rng.between(30, 150),
            };
            self.left = ms * pause as u32;
        }
    }
}

/// A 16-step drum machine: pitch-swept kick, noisy snare, clicky hi-hat.
#[derive(Default)]
struct Drums {
    step_len: u32,
    t: u32,
    step: u32,
    pattern: [u16; 3],
    kick: f32,
    kick_hz: f32,
    kick_phase: u32,
    snare: f32,
    snare_phase: u32,
    hat: f32,
    last: f32,
}

impl Drums {
    fn new(rng: &mut Rng) -> Self {
        let bpm = rng.between(80, 140) as u32;
        Drums {
            step_len: RATE * 60 / (bpm * 4),
            // Bit n set: the instrument plays on the n-th sixteenth.
            pattern: [
                rng.pick(&[0x1111, 0x0521, 0x2491, 0x1105]),
                rng.pick(&[0x1010, 0x5010, 0x1090]),
                rng.pick(&[0x5555, 0xffff, 0xdddd, 0x4444]),
            ],
            ..Default::default()
        }
    }

    fn next(&mut self, rng: &mut Rng, sine: &Sine) -> (f32, f32) {
        if self.t == 0 {
            let [kick, snare, hat] = self.pattern.map(|p| p & (1 << self.step) != 0);
            if kick {
                (self.kick, self.kick_hz) = (1.0, 150.0);
            }
            if snare {
                self.snare = 0.7;
            }
            if hat {
                self.hat = 0.25 + rng.unit() * 0.2; // a human hand never hits twice alike
            }
        }
        self.t += 1;
        if self.t == self.step_len {
            self.t = 0;
            self.step = (self.step + 1) % 16;
        }
        self.kick_hz = 45.0 + (self.kick_hz - 45.0) * 0.9995;
        self.kick_phase = self.kick_phase.wrapping_add(phase_inc(self.kick_hz));
        self.snare_phase = self.snare_phase.wrapping_add(phase_inc(185.0));
        let noise = rng.noise();
        let kick = sine.at(self.kick_phase) * self.kick;
        let snare = (noise * 0.6 + sine.at(self.snare_phase) * 0.4) * self.snare;
        let hat = (noise - self.last) * self.hat;
        self.last = noise;
        decay(&mut self.kick, 0.99985);
        decay(&mut self.snare, 0.9992);
        decay(&mut self.hat, 0.996);
        let (kick, snare) = (kick * 0.8, snare * 0.8);
        (
            kick + snare * 0.8 + hat * 0.4,
            kick + snare * 0.6 + hat * 0.8,
        )
    }
}

/// Sound effects: events (crackles, thunderclaps, steps) over a bed of
/// filtered noise, or a bed alone whose level swells (wind). Events come at
/// random intervals, so unlike loops nothing repeats.
struct Effect {
    variant: usize,
    /// Samples until the next event, and the range drawn from (ms).
    next_event: u32,
    interval_ms: (u64, u64),
    level: f32,
    peak: f32,
    decay: f32,
    /// Share of noise against the low sine body of an event.
    noise: f32,
    body: (u32, u32),
    bed: (f32, f32),
    bed_gain: f32,
    swell: (u32, u32),
    pink: (Pink, Pink),
}

impl Effect {
    fn new(variant: usize, rng: &mut Rng) -> Self {
        // campfire, thunder, footsteps, wind_gust
        let (interval_ms, peak, decay, noise, hz, bed_gain) = match variant {
            0 => ((20, 300), 0.5, 0.995, 1.0, 0.0, 0.06),
            1 => ((1500, 6000), 0.8, 0.999_95, 1.0, 0.0, 0.03),
            2 => ((380, 650), 0.6, 0.9985, 0.3, 70.0 + 40.0 * rng.unit(), 0.01),
            _ => ((0, 0), 0.0, 0.0, 0.0, 0.0, 0.35),
        };
        Effect {
            variant,
            next_event: 0,
            interval_ms,
            level: 0.0,
            peak,
            decay,
            noise,
            body: (0, phase_inc(hz)),
            bed: (0.0, 0.0),
            bed_gain,
            swell: (0, phase_inc(0.1 + 0.2 * rng.unit())),
            pink: (Pink::default(), Pink::default()),
        }
    }

    fn next(&mut self, rng: &mut Rng, sine: &Sine) -> (f32, f32) {
        let (a, b) = rng.noise2();
        let (fl, fr) = rng.floor(0.0003);
        if self.variant == 3 {
            self.swell.0 = self.swell.0.wrapping_add(self.swell.1);
            let gain = self.bed_gain * (0.6 + 0.4 * sine.at(self.swell.0));
            let (l, r) = (self.pink.0.next(a), self.pink.1.next(b));
            return (l * gain + fl, r * gain + fr);
        }
        if self.next_event == 0 {
            let ms = rng.between(self.interval_ms.0, self.interval_ms.1);
            self.next_event = (ms * u64::from(RATE) / 1000) as u32;
            self.level = self.peak * (0.3 + 0.7 * rng.unit());
        }
        self.next_event -= 1;
        // A rumbling bed: noise through a one-pole low-pass (brown-ish).
        self.bed.0 = self.bed.0 * 0.998 + a * 0.05;
        self.bed.1 = self.bed.1 * 0.998 + b * 0.05;
        self.body.0 = self.body.0.wrapping_add(self.body.1);
        let source = if self.variant == 1 { self.bed.0 } else { a };
        let event = self.level * (source * self.noise + sine.at(self.body.0) * (1.0 - self.noise));
        decay(&mut self.level, self.decay);
        (
            event + self.bed.0 * self.bed_gain + fl,
            event * 0.8 + self.bed.1 * self.bed_gain + fr,
        )
    }
}
