//! mount(8)'s helper: `mount -t mediafs SOURCE DIR -o OPTIONS` (or an fstab line) runs
//! `/sbin/mount.mediafs SOURCE DIR [-sfnv] -o OPTIONS`, a link to the mediafs binary.
//!
//! SOURCE is the API URL (`https://…`), or any word (`mediafs`) for the embedded server's
//! local library or an `api_url=` option. Options are the mount flags with `_` for `-`
//! (`token_file=/etc/mediafs/token,ro,allow_other,dir_ttl=10`); the ones that only mean
//! something to mount(8), systemd or fstab tools are ignored; anything else is an error.

use std::ffi::OsString;
use std::path::Path;

use clap::Parser;

use crate::mount::MountArgs;

/// What the helper was asked to do.
pub enum Helper {
    Mount(Box<MountArgs>),
    /// `-f`: check the options, do nothing.
    Fake,
}

/// True when the binary was run as `mount.mediafs` (or `mount.fuse.mediafs`).
pub fn invoked_as_helper(argv: &[OsString]) -> bool {
    argv.first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "mount.mediafs" || n == "mount.fuse.mediafs")
}

/// Options with a value, and the mount flag each becomes.
const VALUED: &[(&str, &str)] = &[
    ("api_url", "--api-url"),
    ("token_file", "--token-file"),
    ("uid", "--uid"),
    ("gid", "--gid"),
    ("cache_size", "--cache-size"),
    ("dir_ttl", "--dir-ttl"),
    ("attr_ttl", "--attr-ttl"),
    ("data_dir", "--data-dir"),
    ("cache_dir", "--cache-dir"),
    ("upload_retry_secs", "--upload-retry-secs"),
    ("unmount_timeout", "--unmount-timeout"),
    ("temp_upload_delay", "--temp-upload-delay"),
    ("log_file", "--log-file"),
    ("metrics_addr", "--metrics-addr"),
];

/// Options without a value, and the mount flag each becomes ("" = nothing to pass).
const FLAGS: &[(&str, &str)] = &[
    ("ro", "--read-only"),
    ("rw", ""),
    ("allow_other", "--allow-other"),
    ("nonempty", "--allow-non-empty"),
    ("noexec", "--noexec"),
    ("exec", ""),
    // mediafs mounts are always nosuid and nodev.
    ("nosuid", ""),
    ("nodev", ""),
];

/// Meaningful to mount(8), systemd or fstab tools only.
fn ignored(opt: &str) -> bool {
    matches!(
        opt,
        "defaults"
            | "_netdev"
            | "auto"
            | "noauto"
            | "user"
            | "nouser"
            | "users"
            | "owner"
            | "group"
            | "nofail"
            | "noatime"
            | "relatime"
    ) || opt.starts_with("x-")
        || opt.starts_with("comment=")
}

#[derive(Parser)]
#[command(name = "mount.mediafs", no_binary_name = true)]
struct HelperCli {
    #[command(flatten)]
    args: MountArgs,
}

/// Parses `SOURCE DIR [-sfnv] [-o OPTS]…` (argv without the program name).
pub fn parse(argv: &[OsString]) -> Result<Helper, String> {
    let mut positional: Vec<OsString> = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let (mut fake, mut sloppy) = (false, false);
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "-o" {
            let v = it.next().ok_or("-o needs a value")?;
            opts.extend(v.to_string_lossy().split(',').map(str::to_string));
        } else if let Some(v) = s.strip_prefix("-o") {
            opts.extend(v.split(',').map(str::to_string));
        } else if s == "-t" || s == "-N" {
            // The type (we know it) / a namespace (mount(8) has entered it already).
            it.next();
        } else if s.starts_with('-') && s.len() > 1 {
            for c in s[1..].chars() {
                match c {
                    'f' => fake = true,
                    's' => sloppy = true,
                    'n' | 'v' => {}
                    _ => return Err(format!("unknown option -{c}")),
                }
            }
        } else {
            positional.push(a.clone());
        }
    }
    let [source, dir] = positional.as_slice() else {
        return Err("usage: mount.mediafs SOURCE MOUNTPOINT [-o OPTIONS]".into());
    };
    let source = source.to_string_lossy().into_owned();
    let mut flags: Vec<OsString> = vec![dir.clone()];
    let mut api_url_opt = false;
    for opt in opts.iter().filter(|o| !o.is_empty()) {
        if ignored(opt) {
            continue;
        }
        let (key, value) = match opt.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        if let Some((_, flag)) = VALUED.iter().find(|(k, _)| *k == key) {
            let Some(v) = value else {
                return Err(format!("option {key} needs a value ({key}=…)"));
            };
            api_url_opt |= key == "api_url";
            flags.push((*flag).into());
            flags.push(v.into());
        } else if let Some((_, flag)) = FLAGS.iter().find(|(k, _)| *k == key && value.is_none()) {
            if !flag.is_empty() {
                flags.push((*flag).into());
            }
        } else if sloppy {
            eprintln!("mount.mediafs: ignoring unknown option {opt:?} (-s)");
        } else {
            return Err(format!(
                "unknown option {opt:?}; known: {}, {} and the ignored {}",
                VALUED
                    .iter()
                    .map(|(k, _)| format!("{k}="))
                    .collect::<Vec<_>>()
                    .join(", "),
                FLAGS
                    .iter()
                    .map(|(k, _)| *k)
                    .collect::<Vec<_>>()
                    .join(", "),
                "defaults, _netdev, auto, noauto, user, nouser, users, owner, group, nofail, noatime, relatime, x-*, comment="
            ));
        }
    }
    if source.starts_with("http://") || source.starts_with("https://") {
        if api_url_opt {
            return Err("the API URL is given twice (SOURCE and api_url=)".into());
        }
        flags.push("--api-url".into());
        flags.push(source.clone().into());
    }
    flags.push("--fsname".into());
    flags.push(source.into());
    let cli = HelperCli::try_parse_from(flags).map_err(|e| {
        // clap speaks of flags; say which option it was.
        e.to_string()
            .replace("--", "option ")
            .trim_end()
            .to_string()
    })?;
    if fake {
        return Ok(Helper::Fake);
    }
    Ok(Helper::Mount(Box::new(cli.args)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<MountArgs, String> {
        let argv: Vec<OsString> = args.iter().map(OsString::from).collect();
        match parse(&argv)? {
            Helper::Mount(a) => Ok(*a),
            Helper::Fake => Err("fake".into()),
        }
    }

    #[test]
    fn maps_options_to_flags() {
        let a = p(&[
            "https://api.example.com",
            "/mnt/media",
            "-o",
            "token_file=/etc/mediafs/token,ro,allow_other,_netdev,defaults,nofail,x-systemd.automount,dir_ttl=5,uid=1000",
        ])
        .unwrap();
        assert_eq!(a.mountpoint, Path::new("/mnt/media"));
        assert_eq!(a.api_url.as_deref(), Some("https://api.example.com"));
        assert_eq!(
            a.token_file.as_deref(),
            Some(Path::new("/etc/mediafs/token"))
        );
        assert!(a.read_only && a.allow_other && !a.foreground);
        assert_eq!((a.dir_ttl, a.uid), (5, Some(1000)));
        assert_eq!(a.fsname.as_deref(), Some("https://api.example.com"));
    }

    #[test]
    fn word_source_means_embedded_or_api_url_option() {
        let a = p(&["mediafs", "/m", "-o", "rw,data_dir=/srv/lib"]).unwrap();
        assert_eq!(a.api_url, None);
        assert_eq!(a.data_dir.as_deref(), Some(Path::new("/srv/lib")));
        let a = p(&["mediafs", "/m", "-oapi_url=http://h:1"]).unwrap();
        assert_eq!(a.api_url.as_deref(), Some("http://h:1"));
    }

    #[test]
    fn rejects_unknown_and_malformed_options() {
        let e = p(&["mediafs", "/m", "-o", "bogus"]).unwrap_err();
        assert!(e.contains("unknown option \"bogus\""), "{e}");
        let e = p(&["mediafs", "/m", "-o", "token_file"]).unwrap_err();
        assert!(e.contains("token_file needs a value"), "{e}");
        let e = p(&["mediafs", "/m", "-o", "dir_ttl=soon"]).unwrap_err();
        assert!(e.contains("dir-ttl"), "{e}");
        assert!(p(&["/m"]).is_err());
        // -s (sloppy) ignores unknown options.
        assert!(p(&["mediafs", "/m", "-s", "-o", "bogus"]).is_ok());
    }

    #[test]
    fn fake_mount_checks_only() {
        let argv: Vec<OsString> = ["mediafs", "/m", "-f", "-o", "ro"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(matches!(parse(&argv), Ok(Helper::Fake)));
    }

    #[test]
    fn recognises_its_names() {
        let v = |s: &str| vec![OsString::from(s)];
        assert!(invoked_as_helper(&v("/sbin/mount.mediafs")));
        assert!(invoked_as_helper(&v("mount.fuse.mediafs")));
        assert!(!invoked_as_helper(&v("/usr/bin/mediafs")));
    }
}
