//! `weft install-cni`: what kube-flannel.yml's two init containers do, as one command of the
//! image, so the DaemonSet needs no second image: the CNI plugin (`/opt/bin/weft-cni`) installed
//! as `<bin-dir>/flannel` and `<bin-dir>/weft-cni`, and the conflist from the ConfigMap
//! (`/etc/kube-flannel/cni-conf.json`) as `<conf-dir>/10-flannel.conflist`.
//!
//! Each file is written atomically: a temporary file in the target directory (written, given
//! its mode, synced), then renamed over the target, so kubelet and the container runtime never
//! see half a plugin or half a conflist. The conflist must parse as a CNI network config (JSON
//! with `plugins` or `type`) before anything is written: a broken ConfigMap never replaces a
//! working conflist. A missing or read-only target directory is one clear error naming it.
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};

use crate::cli::InstallCniArgs;

/// The names the plugin is installed under: `flannel` (the `type` of flannel's conflist) and
/// `weft-cni`.
pub const PLUGIN_NAMES: [&str; 2] = ["flannel", "weft-cni"];

/// `weft install-cni` with its parsed flags: installs, prints one line per file, returns the
/// exit code (0 done, 1 failed).
pub fn run_command(args: InstallCniArgs) -> u8 {
    match install(&args) {
        Ok(done) => {
            for line in done {
                println!("{line}");
            }
            0
        }
        Err(e) => {
            eprintln!("weft install-cni: {e:#}");
            1
        }
    }
}

/// Installs the plugin and the conflist; returns what was written, one line each.
pub fn install(args: &InstallCniArgs) -> Result<Vec<String>> {
    let plugin = fs::read(&args.plugin)
        .with_context(|| format!("read the CNI plugin {}", args.plugin.display()))?;
    let conf = fs::read(&args.conf)
        .with_context(|| format!("read the CNI config {}", args.conf.display()))?;
    check_conf(&conf).with_context(|| {
        format!(
            "{} is not a CNI network config; nothing was installed",
            args.conf.display()
        )
    })?;
    let mut done = Vec::new();
    for name in PLUGIN_NAMES {
        let path = install_file(&plugin, &args.bin_dir, name, 0o755)?;
        done.push(format!(
            "installed {} ({} bytes from {})",
            path.display(),
            plugin.len(),
            args.plugin.display()
        ));
    }
    let path = install_file(&conf, &args.conf_dir, &args.conf_name, 0o644)?;
    done.push(format!(
        "installed {} (from {})",
        path.display(),
        args.conf.display()
    ));
    Ok(done)
}

/// A conflist (`plugins`: a non-empty list) or a single network config (`type`).
fn check_conf(text: &[u8]) -> Result<()> {
    let v: serde_json::Value = serde_json::from_slice(text).context("not JSON")?;
    let Some(obj) = v.as_object() else {
        bail!("not a JSON object");
    };
    match (obj.get("plugins"), obj.get("type")) {
        (Some(serde_json::Value::Array(p)), _) if !p.is_empty() => Ok(()),
        (Some(_), _) => bail!("\"plugins\" is not a non-empty list"),
        (None, Some(serde_json::Value::String(_))) => Ok(()),
        _ => bail!("neither \"plugins\" nor \"type\""),
    }
}

/// Writes `bytes` as `<dir>/<name>` with `mode`, through a temporary file in `dir` and a rename.
fn install_file(bytes: &[u8], dir: &Path, name: &str, mode: u32) -> Result<PathBuf> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("{} is not a directory", dir.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "{} does not exist: mount the host's directory there (hostPath)",
            dir.display()
        ),
        Err(e) => return Err(e).with_context(|| format!("stat {}", dir.display())),
    }
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.set_permissions(fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        fs::rename(&tmp, &target)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
            bail!(
                "{} is read-only: mount the host's directory read-write",
                dir.display()
            );
        }
        return Err(e).with_context(|| format!("write {}", target.display()));
    }
    Ok(target)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CONFLIST: &str = r#"{"name":"cbr0","cniVersion":"0.3.1","plugins":[{"type":"flannel","delegate":{"hairpinMode":true,"isDefaultGateway":true}},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;

    fn args(root: &Path) -> InstallCniArgs {
        fs::create_dir_all(root.join("host/opt/cni/bin")).unwrap();
        fs::create_dir_all(root.join("host/etc/cni/net.d")).unwrap();
        fs::write(root.join("weft-cni"), b"\x7fELF plugin").unwrap();
        fs::write(root.join("cni-conf.json"), CONFLIST).unwrap();
        InstallCniArgs {
            plugin: root.join("weft-cni"),
            bin_dir: root.join("host/opt/cni/bin"),
            conf: root.join("cni-conf.json"),
            conf_dir: root.join("host/etc/cni/net.d"),
            conf_name: "10-flannel.conflist".into(),
        }
    }

    #[test]
    fn installs_both_names_and_the_conflist_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path());
        // An old plugin in place is replaced.
        fs::write(a.bin_dir.join("flannel"), b"old").unwrap();
        let done = install(&a).unwrap();
        assert_eq!(done.len(), 3, "{done:?}");
        for name in PLUGIN_NAMES {
            let p = a.bin_dir.join(name);
            assert_eq!(fs::read(&p).unwrap(), b"\x7fELF plugin");
            assert_eq!(
                fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o755
            );
        }
        let conf = a.conf_dir.join("10-flannel.conflist");
        assert_eq!(fs::read_to_string(&conf).unwrap(), CONFLIST);
        assert_eq!(
            fs::metadata(&conf).unwrap().permissions().mode() & 0o777,
            0o644
        );
        // No temporary file is left behind; a second run is the same.
        for d in [&a.bin_dir, &a.conf_dir] {
            let names: Vec<String> = fs::read_dir(d)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
        }
        assert_eq!(install(&a).unwrap(), done);
    }

    #[test]
    fn a_missing_directory_or_a_bad_config_is_one_clear_error_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = args(dir.path());
        a.bin_dir = dir.path().join("host/opt/cni/missing");
        let e = format!("{:#}", install(&a).unwrap_err());
        assert!(
            e.contains("host/opt/cni/missing does not exist: mount the host's directory there"),
            "{e}"
        );

        let a = args(dir.path());
        fs::write(a.conf_dir.join("10-flannel.conflist"), CONFLIST).unwrap();
        for bad in [
            "{\"name\":\"cbr0\"",
            "[]",
            "{\"plugins\":[]}",
            "{\"name\":\"x\"}",
        ] {
            fs::write(&a.conf, bad).unwrap();
            let e = format!("{:#}", install(&a).unwrap_err());
            assert!(e.contains("is not a CNI network config"), "{bad}: {e}");
            assert!(!a.bin_dir.join("flannel").exists(), "nothing installed");
            assert_eq!(
                fs::read_to_string(a.conf_dir.join("10-flannel.conflist")).unwrap(),
                CONFLIST,
                "the working conflist stays"
            );
        }
        let mut a = args(dir.path());
        a.plugin = dir.path().join("nope");
        let e = format!("{:#}", install(&a).unwrap_err());
        assert!(e.contains("read the CNI plugin"), "{e}");
    }
}
