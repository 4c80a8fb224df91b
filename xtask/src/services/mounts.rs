//! The USB target's "sticks": a tmpfs and a FAT image mounted for the
//! tests, so free space, FAT's limits and unplugging are real.

use super::*;

/// Size of the FAT image: room for a ~150 MiB artifact and then some.
const VFAT_BYTES: u64 = 300 << 20;

/// A tmpfs, a FAT filesystem and a plain directory, standing in for USB drives.
pub struct Mounts {
    dir: PathBuf,
    tmpfs: PathBuf,
    vfat: PathBuf,
    plain: PathBuf,
    tmpfs_mounted: bool,
    vfat_mounted: bool,
    /// How the FAT image got mounted: "kernel" or "fuse".
    vfat_kind: &'static str,
    /// The fusefat process when the kernel could not mount FAT itself.
    fuse: Option<Child>,
    stopped: bool,
}

impl Mounts {
    /// Mounts a 512 MiB tmpfs and a 300 MiB FAT32 image under `work/usb`:
    /// with the kernel's vfat driver when it has one, else with fusefat.
    pub fn start(work: &Path) -> Result<Mounts, String> {
        ensure_packages(&["dosfstools", "mount", "procps"])?;
        let dir = make_dir(&work.join("usb"))?;
        let mut mounts = Mounts {
            tmpfs: make_dir(&dir.join("tmpfs"))?,
            vfat: make_dir(&dir.join("vfat"))?,
            plain: make_dir(&dir.join("plain"))?,
            dir,
            tmpfs_mounted: false,
            vfat_mounted: false,
            vfat_kind: "kernel",
            fuse: None,
            stopped: false,
        };
        mounts.mount_tmpfs()?;
        let image = mounts.dir.join("vfat.img");
        make_vfat_image(&image)?;
        mounts.mount_vfat(&image)?;
        Ok(mounts)
    }

    fn mount_tmpfs(&mut self) -> Result<(), String> {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "tmpfs", "-o", "size=512m", "tmpfs"])
            .arg(&self.tmpfs);
        run(&mut cmd, CMD_TIMEOUT)?;
        self.tmpfs_mounted = true;
        Ok(())
    }

    /// Kernel loop mount first; containers and kernels without the vfat
    /// module (like this project's machines) refuse it, so fall back to FUSE.
    fn mount_vfat(&mut self, image: &Path) -> Result<(), String> {
        let mut cmd = Command::new("mount");
        cmd.args(["-t", "vfat", "-o", "loop"])
            .arg(image)
            .arg(&self.vfat);
        match run(&mut cmd, CMD_TIMEOUT) {
            Ok(_) => {
                self.vfat_mounted = true;
                Ok(())
            }
            Err(kernel_err) => self.mount_vfat_fuse(image).map_err(|fuse_err| {
                format!("cannot mount FAT image: kernel: {kernel_err}; fusefat: {fuse_err}")
            }),
        }
    }

    /// Runs fusefat in the foreground as our child, so it has a PID to stop,
    /// and waits until the mount appears.
    fn mount_vfat_fuse(&mut self, image: &Path) -> Result<(), String> {
        ensure_packages(&["fusefat", "fuse"])?;
        let log = self.dir.join("fusefat.log");
        let mut cmd = Command::new("fusefat");
        cmd.args(["-f", "-o", "rw+"]).arg(image).arg(&self.vfat);
        let fuse = self.fuse.insert(spawn_logged(&mut cmd, &log)?);
        self.vfat_mounted = true;
        self.vfat_kind = "fuse";
        let deadline = Instant::now() + Duration::from_secs(10);
        while !is_mount_point(&self.vfat) {
            check_alive(fuse, &log, "fusefat")?;
            if Instant::now() > deadline {
                return Err(timeout_error(
                    "fusefat",
                    "mounted",
                    Duration::from_secs(10),
                    &log,
                ));
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }
}

/// A sparse image file formatted FAT32. No volume label: fusefat would show
/// it as an empty file in the root directory.
fn make_vfat_image(image: &Path) -> Result<(), String> {
    let file = File::create(image).map_err(|e| format!("creating {}: {e}", image.display()))?;
    file.set_len(VFAT_BYTES)
        .map_err(|e| format!("sizing {}: {e}", image.display()))?;
    let mut cmd = Command::new("mkfs.vfat");
    cmd.args(["-F", "32"]).arg(image);
    run(&mut cmd, CMD_TIMEOUT).map(|_| ())
}

/// Unmounts `path`, lazily if it is busy, so stop never hangs on a test
/// that left a file open there.
fn unmount(path: &Path) {
    for args in [&["umount"][..], &["umount", "-l"][..]] {
        let mut cmd = Command::new(args[0]);
        cmd.args(&args[1..]).arg(path);
        if run(&mut cmd, CMD_TIMEOUT).is_ok() || !is_mount_point(path) {
            return;
        }
    }
    let mut cmd = Command::new("fusermount");
    cmd.args(["-u", "-z"]).arg(path);
    if let Err(e) = run(&mut cmd, CMD_TIMEOUT) {
        eprintln!("xtask: could not unmount {}: {e}", path.display());
    }
}

impl Service for Mounts {
    fn env(&self) -> Vec<(String, String)> {
        vec![
            var("MSS_TEST_USB_TMPFS", self.tmpfs.display().to_string()),
            var("MSS_TEST_USB_VFAT", self.vfat.display().to_string()),
            var("MSS_TEST_USB_PLAIN_DIR", self.plain.display().to_string()),
            var("MSS_TEST_USB_KIND_VFAT", self.vfat_kind),
        ]
    }

    fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.tmpfs_mounted {
            unmount(&self.tmpfs);
        }
        if self.vfat_mounted {
            unmount(&self.vfat);
        }
        // Unmounting ends fusefat after it has written back the image.
        if let Some(mut fuse) = self.fuse.take() {
            stop_child(&mut fuse, "fusefat");
        }
        // Never delete through a mount that is somehow still there.
        if is_mount_point(&self.tmpfs) || is_mount_point(&self.vfat) {
            eprintln!("xtask: leaving {} (still mounted)", self.dir.display());
        } else {
            remove_dir(&self.dir);
        }
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        self.stop();
    }
}

/// True when `path` is the mount point of some mount, per /proc/self/mountinfo
/// (paths there escape space, tab, newline and backslash as octal).
fn is_mount_point(path: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let wanted = path.to_string_lossy();
    info.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .any(|mp| unescape_mountinfo(mp) == wanted)
}

fn unescape_mountinfo(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}
