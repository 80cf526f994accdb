//! Hint values. runsc compares them as exact lower-case strings; the 2022 release refuses the whole pod on any
//! other spelling, so parsing here is exact too.

use std::fmt;
use std::str::FromStr;

/// `type`: how runsc backs the volume inside the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HintType {
    /// A sandbox-internal tmpfs (memory-backed, or disk-backed through a filestore file on newer runsc).
    Tmpfs,
    /// Served from the host through the gofer.
    Bind,
}

/// `share`: who else sees the volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Share {
    /// One container of the pod.
    Container,
    /// Several containers of the pod, nobody outside it.
    Pod,
    /// Also processes outside the sandbox: no sandbox-internal caching.
    Shared,
}

/// `directfs`: whether the gofer mount follows runsc's global `--directfs` (`default`) or opts out (`off`).
/// It can only turn directfs off: turning it on needs sandbox-wide seccomp settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Directfs {
    Default,
    Off,
}

impl Share {
    /// The narrowest share that is still right for a volume `containers` containers of the pod mount: with two
    /// or more, `container` is wrong on every runsc (separate tmpfs copies on 2022, a refused start later).
    pub fn for_containers(containers: usize) -> Share {
        if containers > 1 {
            Share::Pod
        } else {
            Share::Container
        }
    }

    /// `self` unless it is narrower than `needed`: a share is widened, never narrowed.
    pub fn widened_to(self, needed: Share) -> Share {
        if self.rank() < needed.rank() {
            needed
        } else {
            self
        }
    }

    fn rank(self) -> u8 {
        match self {
            Share::Container => 0,
            Share::Pod => 1,
            Share::Shared => 2,
        }
    }
}

impl Directfs {
    pub fn as_str(self) -> &'static str {
        match self {
            Directfs::Default => "default",
            Directfs::Off => "off",
        }
    }
}

impl FromStr for Directfs {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "default" => Ok(Directfs::Default),
            "off" => Ok(Directfs::Off),
            _ => Err(ValueError { what: "directfs", value: s.to_owned(), expected: "`default`, `off`" }),
        }
    }
}

impl fmt::Display for Directfs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} `{value}`: expected one of {expected}")]
pub struct ValueError {
    what: &'static str,
    value: String,
    expected: &'static str,
}

impl HintType {
    pub fn as_str(self) -> &'static str {
        match self {
            HintType::Tmpfs => "tmpfs",
            HintType::Bind => "bind",
        }
    }
}

impl Share {
    pub fn as_str(self) -> &'static str {
        match self {
            Share::Container => "container",
            Share::Pod => "pod",
            Share::Shared => "shared",
        }
    }
}

impl FromStr for HintType {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "tmpfs" => Ok(HintType::Tmpfs),
            "bind" => Ok(HintType::Bind),
            _ => Err(ValueError { what: "type", value: s.to_owned(), expected: "`tmpfs`, `bind`" }),
        }
    }
}

impl FromStr for Share {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "container" => Ok(Share::Container),
            "pod" => Ok(Share::Pod),
            "shared" => Ok(Share::Shared),
            _ => Err(ValueError { what: "share", value: s.to_owned(), expected: "`container`, `pod`, `shared`" }),
        }
    }
}

impl fmt::Display for HintType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Mount flags every supported runsc accepts in a hint's `options` (runsc's `specutils` option tables). The
/// 2022 release refuses any other word, and any `key=value`.
pub const FLAG_OPTIONS: &[&str] = &[
    "atime",
    "bind",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "mand",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "private",
    "rbind",
    "relatime",
    "remount",
    "ro",
    "rprivate",
    "rshared",
    "rslave",
    "runbindable",
    "rw",
    "shared",
    "slave",
    "strictatime",
    "suid",
    "sync",
    "unbindable",
];

/// One parsed entry of `options`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountOption<'a> {
    Flag(&'a str),
    /// `size=<bytes>[k|m|g]`, accepted by runsc from release-20240501 only.
    Size(&'a str),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OptionsError {
    #[error("options are empty (the 2022 runsc refuses an empty options value)")]
    Empty,
    #[error("options `{0}` contain an empty entry")]
    EmptyEntry(String),
    #[error("unknown mount option `{0}`")]
    Unknown(String),
    #[error("valued option `{0}` needs runsc release-20240501 or newer, which this configuration does not allow")]
    ValuedNotAllowed(String),
    #[error("`{0}` is not a size runsc understands (bytes, or a number with k, m or g)")]
    BadSize(String),
}

/// Parses a hint's `options` value the way the strictest runsc we support would, except that `size=` is
/// accepted when `allow_size` says every runsc in use is new enough.
pub fn parse_options(value: &str, allow_size: bool) -> Result<Vec<MountOption<'_>>, OptionsError> {
    if value.is_empty() {
        return Err(OptionsError::Empty);
    }
    value
        .split(',')
        .map(|entry| {
            if entry.is_empty() {
                return Err(OptionsError::EmptyEntry(value.to_owned()));
            }
            if let Some(size) = entry.strip_prefix("size=") {
                if !allow_size {
                    return Err(OptionsError::ValuedNotAllowed(entry.to_owned()));
                }
                if !is_tmpfs_size(size) {
                    return Err(OptionsError::BadSize(entry.to_owned()));
                }
                return Ok(MountOption::Size(size));
            }
            if entry.contains('=') {
                return Err(if allow_size {
                    OptionsError::Unknown(entry.to_owned())
                } else {
                    OptionsError::ValuedNotAllowed(entry.to_owned())
                });
            }
            FLAG_OPTIONS
                .iter()
                .find(|known| **known == entry)
                .map(|known| MountOption::Flag(known))
                .ok_or_else(|| OptionsError::Unknown(entry.to_owned()))
        })
        .collect()
}

fn is_tmpfs_size(s: &str) -> bool {
    let digits = s.strip_suffix(['k', 'm', 'g']).unwrap_or(s);
    !digits.is_empty() && digits.len() <= 19 && digits.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_exact() {
        assert_eq!("tmpfs".parse(), Ok(HintType::Tmpfs));
        assert_eq!("bind".parse(), Ok(HintType::Bind));
        assert!("Tmpfs".parse::<HintType>().is_err());
        assert!("overlay".parse::<HintType>().is_err());
        assert_eq!("pod".parse(), Ok(Share::Pod));
        assert!("POD".parse::<Share>().is_err());
        assert!("bogus".parse::<Share>().unwrap_err().to_string().contains("bogus"));
        assert_eq!("off".parse(), Ok(Directfs::Off));
        assert_eq!("default".parse(), Ok(Directfs::Default));
        assert!("Off".parse::<Directfs>().is_err());
        assert!("on".parse::<Directfs>().is_err());
    }

    #[test]
    fn shares_widen_and_never_narrow() {
        assert_eq!(Share::for_containers(0), Share::Container);
        assert_eq!(Share::for_containers(1), Share::Container);
        assert_eq!(Share::for_containers(2), Share::Pod);
        assert_eq!(Share::Container.widened_to(Share::Pod), Share::Pod);
        assert_eq!(Share::Container.widened_to(Share::Container), Share::Container);
        assert_eq!(Share::Pod.widened_to(Share::Container), Share::Pod);
        assert_eq!(Share::Shared.widened_to(Share::Pod), Share::Shared);
        assert_eq!(Share::Pod.widened_to(Share::Shared), Share::Shared);
    }

    #[test]
    fn options_follow_the_strict_runsc() {
        assert_eq!(parse_options("rw", false), Ok(vec![MountOption::Flag("rw")]));
        assert_eq!(parse_options("rw,noexec", false).unwrap().len(), 2);
        assert_eq!(parse_options("", false), Err(OptionsError::Empty));
        assert_eq!(parse_options("rw,", false), Err(OptionsError::EmptyEntry("rw,".into())));
        assert_eq!(parse_options("rw,bogus", true), Err(OptionsError::Unknown("bogus".into())));
        assert_eq!(parse_options("size=1g", false), Err(OptionsError::ValuedNotAllowed("size=1g".into())));
        assert_eq!(parse_options("size=1g", true), Ok(vec![MountOption::Size("1g")]));
        assert_eq!(parse_options("size=1Gi", true), Err(OptionsError::BadSize("size=1Gi".into())));
        assert_eq!(parse_options("mode=0777", true), Err(OptionsError::Unknown("mode=0777".into())));
    }
}
