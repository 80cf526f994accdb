//! Which runsc is in use decides what a hint may say. The dates are gVisor release tags.

use std::fmt;
use std::str::FromStr;

/// A runsc release, as the date of its `release-YYYYMMDD.N` tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunscRelease(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a runsc release (expected YYYYMMDD, release-YYYYMMDD.N or 0.0~YYYYMMDD.N)")]
pub struct ReleaseError(String);

impl RunscRelease {
    /// Debian bookworm's runsc: strict about every hint field.
    pub const DEBIAN_BOOKWORM: RunscRelease = RunscRelease(20221219);
    /// From here on an invalid hint is dropped with a warning instead of failing the pod.
    pub const TOLERANT_HINTS: RunscRelease = RunscRelease(20230417);
    /// From here on a tmpfs hint over a bind (disk) mount works, backed by a `.gvisor.filestore.*` file.
    pub const DISK_BACKED_TMPFS: RunscRelease = RunscRelease(20231023);
    /// From here on `size=` is accepted in a hint's options.
    pub const VALUED_OPTIONS: RunscRelease = RunscRelease(20240501);
    /// The first release with the per-mount `directfs` hint field: gVisor commit 7dce1df4 (PR #13099) is in
    /// `release-20260520.0` and not in `release-20260511.0`, the tag before it.
    pub const DIRECTFS: RunscRelease = RunscRelease(20260520);
    /// What the rules assume when nothing says which runsc is in use: the strictest one supported.
    pub const OLDEST_SUPPORTED: RunscRelease = RunscRelease::DEBIAN_BOOKWORM;

    pub fn from_date(yyyymmdd: u32) -> Result<Self, ReleaseError> {
        let (month, day) = (yyyymmdd / 100 % 100, yyyymmdd % 100);
        if (20_180_000..21_000_000).contains(&yyyymmdd) && (1..=12).contains(&month) && (1..=31).contains(&day) {
            Ok(RunscRelease(yyyymmdd))
        } else {
            Err(ReleaseError(yyyymmdd.to_string()))
        }
    }

    pub fn date(self) -> u32 {
        self.0
    }

    pub fn tolerates_invalid_hints(self) -> bool {
        self >= Self::TOLERANT_HINTS
    }

    pub fn supports_disk_backed_tmpfs(self) -> bool {
        self >= Self::DISK_BACKED_TMPFS
    }

    pub fn supports_valued_options(self) -> bool {
        self >= Self::VALUED_OPTIONS
    }

    pub fn supports_directfs(self) -> bool {
        self >= Self::DIRECTFS
    }

    /// Finds the release in `runsc --version` output (`runsc version release-20221219.0` upstream,
    /// `runsc version 0.0~20221219.0` in Debian).
    pub fn from_version_output(output: &str) -> Result<Self, ReleaseError> {
        output
            .lines()
            .filter_map(|line| line.trim().strip_prefix("runsc version "))
            .find_map(|v| v.trim().parse().ok())
            .ok_or_else(|| ReleaseError(output.lines().next().unwrap_or_default().to_owned()))
    }
}

impl FromStr for RunscRelease {
    type Err = ReleaseError;
    fn from_str(s: &str) -> Result<Self, ReleaseError> {
        let bad = || ReleaseError(s.to_owned());
        let rest = s.strip_prefix("release-").or_else(|| s.strip_prefix("0.0~")).unwrap_or(s);
        let date = rest.split_once('.').map_or(rest, |(date, _)| date);
        if date.len() != 8 || !date.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        RunscRelease::from_date(date.parse().map_err(|_| bad())?).map_err(|_| bad())
    }
}

impl fmt::Display for RunscRelease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "release-{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_spelling() {
        let want = RunscRelease::DEBIAN_BOOKWORM;
        assert_eq!("release-20221219.0".parse(), Ok(want));
        assert_eq!("0.0~20221219.0".parse(), Ok(want));
        assert_eq!("20221219".parse(), Ok(want));
        assert!("2022121".parse::<RunscRelease>().is_err());
        assert!("20221319".parse::<RunscRelease>().is_err());
        assert!("latest".parse::<RunscRelease>().is_err());
    }

    #[test]
    fn reads_runsc_version_output() {
        let debian = "runsc version 0.0~20240729.0\nspec: 1.1.0-rc.1\n";
        assert_eq!(RunscRelease::from_version_output(debian).unwrap().date(), 20240729);
        let upstream = "runsc version release-20221219.0\nspec: 1.0.2-dev\n";
        assert_eq!(RunscRelease::from_version_output(upstream), Ok(RunscRelease::DEBIAN_BOOKWORM));
        assert!(RunscRelease::from_version_output("runc version 1.1.5").is_err());
    }

    #[test]
    fn capabilities_follow_the_release_dates() {
        let old = RunscRelease::DEBIAN_BOOKWORM;
        let new: RunscRelease = "0.0~20240729.0".parse().unwrap();
        assert!(!old.supports_disk_backed_tmpfs() && !old.supports_valued_options() && !old.tolerates_invalid_hints());
        assert!(new.supports_disk_backed_tmpfs() && new.supports_valued_options() && new.tolerates_invalid_hints());
        assert!(!RunscRelease::from_date(20231022).unwrap().supports_disk_backed_tmpfs());
        assert!(!new.supports_directfs());
        assert!(!RunscRelease::from_date(20260511).unwrap().supports_directfs());
        assert!(RunscRelease::from_date(20260520).unwrap().supports_directfs());
    }
}
