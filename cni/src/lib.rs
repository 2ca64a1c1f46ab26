//! `weft-cni`: the flannel CNI plugin (docs/flannel-compat.md §8), installable as `flannel` or
//! `weft-cni`.
//!
//! - `ADD`: reads subnet.env, renders the delegate config ([`conf::build_delegate`]), saves it
//!   to `<dataDir>/<CNI_CONTAINERID>` (0600, fsync, atomic rename) and runs the delegate plugin
//!   (`bridge` unless told otherwise) from `CNI_PATH` with that config on stdin and the same
//!   `CNI_*` environment; the delegate's stdout and exit status are the plugin's.
//! - `DEL`: replays the saved config to the delegate and removes it once the delegate
//!   succeeded; no saved config means nothing to do (success). subnet.env is not read, so DEL
//!   works while the agent is down.
//! - `CHECK` (cniVersion ≥ 0.4.0): runs the delegate's CHECK with the saved config and the
//!   runtime's `prevResult`; with nothing saved it succeeds, as flannel's CHECK always does.
//! - `VERSION`: the supported spec versions.
//!
//! Errors are CNI error objects on stdout with exit status 1.
pub mod conf;

use std::ffi::OsString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

use conf::code;
pub use conf::{CniError, NetConf};

/// Mode of a saved delegate config: it may hold runtime data, readable by root only.
const SAVED_MODE: u32 = 0o600;
const DATA_DIR_MODE: u32 = 0o700;

/// What the process prints on stdout and exits with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub stdout: Vec<u8>,
    pub exit_code: u8,
}

impl Outcome {
    fn ok(stdout: impl Into<Vec<u8>>) -> Outcome {
        Outcome {
            stdout: stdout.into(),
            exit_code: 0,
        }
    }

    fn error(e: &CniError, cni_version: &str) -> Outcome {
        let mut stdout = e.to_json(cni_version).into_bytes();
        stdout.push(b'\n');
        Outcome {
            stdout,
            exit_code: 1,
        }
    }
}

/// The CNI_* variables a command needs.
#[derive(Debug, Clone)]
struct Args {
    command: String,
    container_id: String,
    ifname: String,
    path: Vec<PathBuf>,
}

/// Runs one CNI command: `getenv` reads the environment (the delegate inherits the process's
/// own), `stdin` holds the netconf (not read for VERSION).
pub fn run(stdin: &mut dyn Read, getenv: &dyn Fn(&str) -> Option<String>) -> Outcome {
    let command = getenv("CNI_COMMAND").unwrap_or_default();
    match command.as_str() {
        "VERSION" => return Outcome::ok(conf::version_json() + "\n"),
        "ADD" | "DEL" | "CHECK" => {}
        "" => {
            return Outcome::error(
                &CniError::new(
                    code::INVALID_ENVIRONMENT,
                    "required env variables [CNI_COMMAND] missing",
                ),
                conf::CURRENT_VERSION,
            );
        }
        other => {
            return Outcome::error(
                &CniError::new(
                    code::INVALID_ENVIRONMENT,
                    format!("unknown CNI_COMMAND: {other}"),
                ),
                conf::CURRENT_VERSION,
            );
        }
    }
    let args = match read_args(&command, getenv) {
        Ok(a) => a,
        Err(e) => return Outcome::error(&e, conf::CURRENT_VERSION),
    };
    let mut input = Vec::new();
    if let Err(e) = stdin.read_to_end(&mut input) {
        return Outcome::error(
            &CniError::new(code::IO_FAILURE, format!("error reading from stdin: {e}")),
            conf::CURRENT_VERSION,
        );
    }
    let netconf = match conf::parse_netconf(&input) {
        Ok(c) => c,
        Err(e) => return Outcome::error(&e, conf::CURRENT_VERSION),
    };
    let version = if netconf.cni_version.is_empty() {
        conf::CURRENT_VERSION.to_owned()
    } else {
        netconf.cni_version.clone()
    };
    let result = conf::check_version(&netconf).and_then(|()| match args.command.as_str() {
        "ADD" => cmd_add(&args, &netconf),
        "DEL" => cmd_del(&args, &netconf),
        _ => cmd_check(&args, &netconf),
    });
    result.unwrap_or_else(|e| Outcome::error(&e, &version))
}

/// libcni's required variables: CNI_CONTAINERID, CNI_IFNAME, CNI_PATH always, CNI_NETNS for
/// ADD and CHECK.
fn read_args(command: &str, getenv: &dyn Fn(&str) -> Option<String>) -> Result<Args, CniError> {
    let get = |k: &str| getenv(k).filter(|v| !v.is_empty());
    let mut missing = Vec::new();
    let container_id = get("CNI_CONTAINERID");
    let ifname = get("CNI_IFNAME");
    let path = get("CNI_PATH");
    if container_id.is_none() {
        missing.push("CNI_CONTAINERID");
    }
    if command != "DEL" && get("CNI_NETNS").is_none() {
        missing.push("CNI_NETNS");
    }
    if ifname.is_none() {
        missing.push("CNI_IFNAME");
    }
    if path.is_none() {
        missing.push("CNI_PATH");
    }
    let missing_error = || {
        CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("required env variables [{}] missing", missing.join(" ")),
        )
    };
    if !missing.is_empty() {
        return Err(missing_error());
    }
    let (Some(container_id), Some(ifname), Some(path)) = (container_id, ifname, path) else {
        return Err(missing_error());
    };
    if !conf::valid_container_id(&container_id) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("invalid characters in containerID {container_id:?}"),
        ));
    }
    if !conf::valid_ifname(&ifname) {
        return Err(CniError::new(
            code::INVALID_ENVIRONMENT,
            format!("interface name {ifname:?} is not valid"),
        ));
    }
    Ok(Args {
        command: command.to_owned(),
        container_id,
        ifname,
        path: path
            .split(':')
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
            .collect(),
    })
}

fn cmd_add(args: &Args, netconf: &NetConf) -> Result<Outcome, CniError> {
    let text = fs::read_to_string(&netconf.subnet_file);
    let env = conf::load_subnet_env(&netconf.subnet_file, text)?;
    let delegate = conf::build_delegate(netconf, &env)?;
    let plugin_type = plugin_type(&delegate)?;
    let bytes = Value::Object(delegate).to_string().into_bytes();
    let saved = saved_path(netconf, args);
    save_atomic(&saved, &bytes).map_err(|e| {
        CniError::new(
            code::IO_FAILURE,
            format!("failed to save delegate config for {}: {e}", args.ifname),
        )
    })?;
    // The saved file stays even if the delegate fails: the runtime's DEL replays it, so a
    // half-made interface or IP reservation gets cleaned up.
    invoke(&args.path, &plugin_type, "ADD", &bytes)
}

fn cmd_del(args: &Args, netconf: &NetConf) -> Result<Outcome, CniError> {
    let saved = saved_path(netconf, args);
    let bytes = match fs::read(&saved) {
        Ok(b) => b,
        // Nothing saved: never added, or already deleted. DEL must succeed (CNI spec).
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::ok(Vec::new())),
        Err(e) => {
            return Err(CniError::new(
                code::IO_FAILURE,
                format!("reading {}: {e}", saved.display()),
            ));
        }
    };
    let delegate = parse_saved(&saved, &bytes)?;
    let plugin_type = plugin_type(&delegate)?;
    let outcome = invoke(&args.path, &plugin_type, "DEL", &bytes)?;
    if outcome.exit_code == 0 {
        match fs::remove_file(&saved) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(CniError::new(
                    code::IO_FAILURE,
                    format!("removing {}: {e}", saved.display()),
                ));
            }
        }
    }
    Ok(outcome)
}

fn cmd_check(args: &Args, netconf: &NetConf) -> Result<Outcome, CniError> {
    if !conf::allows_check(netconf.effective_version()) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "config version does not allow CHECK",
        ));
    }
    let saved = saved_path(netconf, args);
    let bytes = match fs::read(&saved) {
        Ok(b) => b,
        // flannel's CHECK checks nothing; without a saved config there is nothing to ask.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Outcome::ok(Vec::new())),
        Err(e) => {
            return Err(CniError::new(
                code::IO_FAILURE,
                format!("reading {}: {e}", saved.display()),
            ));
        }
    };
    let mut delegate = parse_saved(&saved, &bytes)?;
    let saved_version = delegate
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !conf::allows_check(saved_version) {
        // Added with a version that has no CHECK: the delegate would refuse; nothing to check.
        return Ok(Outcome::ok(Vec::new()));
    }
    if let Some(prev) = &netconf.prev_result {
        delegate.insert("prevResult".into(), prev.clone());
    }
    let plugin_type = plugin_type(&delegate)?;
    let bytes = Value::Object(delegate).to_string().into_bytes();
    invoke(&args.path, &plugin_type, "CHECK", &bytes)
}

/// `<dataDir>/<containerID>` (the container ID was checked to be a plain file name).
fn saved_path(netconf: &NetConf, args: &Args) -> PathBuf {
    netconf.data_dir.join(&args.container_id)
}

fn parse_saved(path: &Path, bytes: &[u8]) -> Result<serde_json::Map<String, Value>, CniError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(other) => Err(CniError::new(
            code::DECODING_FAILURE,
            format!(
                "failed to parse netconf saved in {}: not an object: {other}",
                path.display()
            ),
        )),
        Err(e) => Err(CniError::new(
            code::DECODING_FAILURE,
            format!("failed to parse netconf saved in {}: {e}", path.display()),
        )),
    }
}

fn plugin_type(delegate: &serde_json::Map<String, Value>) -> Result<String, CniError> {
    match delegate.get("type").and_then(Value::as_str) {
        Some(t) if conf::valid_plugin_type(t) => Ok(t.to_owned()),
        other => Err(CniError::new(
            code::INVALID_NETWORK_CONFIG,
            format!("delegate 'type' {other:?} is not a plugin name"),
        )),
    }
}

/// Writes `bytes` to `path` atomically: the directory is created (0700), a temporary file
/// (`.<name>.tmp-<pid>`, never a valid container ID) is written with mode 0600, synced and
/// renamed over `path`, then the directory is synced.
fn save_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let ctx = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or_default();
    DirBuilder::new()
        .recursive(true)
        .mode(DATA_DIR_MODE)
        .create(dir)
        .map_err(|e| ctx("creating directory", dir, e))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp-{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(SAVED_MODE)
            .open(&tmp)
            .map_err(|e| ctx("creating", &tmp, e))?;
        f.set_permissions(fs::Permissions::from_mode(SAVED_MODE))
            .map_err(|e| ctx("setting mode of", &tmp, e))?;
        f.write_all(bytes).map_err(|e| ctx("writing", &tmp, e))?;
        f.sync_all().map_err(|e| ctx("syncing", &tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| ctx("renaming onto", path, e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| ctx("syncing directory", dir, e))
    };
    let result = write();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// The first `<dir>/<plugin>` in `CNI_PATH` that is an executable file.
pub fn find_plugin(path: &[PathBuf], plugin: &str) -> Result<PathBuf, CniError> {
    for dir in path {
        let candidate = dir.join(plugin);
        if let Ok(meta) = fs::metadata(&candidate) {
            if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
                return Ok(candidate);
            }
        }
    }
    let dirs: Vec<String> = path.iter().map(|p| p.display().to_string()).collect();
    Err(CniError::new(
        code::INTERNAL,
        format!(
            "failed to find plugin \"{plugin}\" in path [{}]",
            dirs.join(" ")
        ),
    ))
}

/// Runs the delegate `plugin` with `CNI_COMMAND=<command>`, the rest of the environment
/// inherited and `config` on stdin; its stdout and exit status become ours (its stderr goes
/// straight to ours).
fn invoke(
    path: &[PathBuf],
    plugin: &str,
    command: &str,
    config: &[u8],
) -> Result<Outcome, CniError> {
    let exe = find_plugin(path, plugin)?;
    let mut child = Command::new(&exe)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| {
            CniError::new(
                code::INTERNAL,
                format!("failed to run delegate plugin {}: {e}", exe.display()),
            )
        })?;
    let mut stdin = child.stdin.take();
    let config = config.to_vec();
    // A separate writer, so a plugin that writes before reading cannot deadlock us.
    let writer = std::thread::spawn(move || -> io::Result<()> {
        if let Some(mut s) = stdin.take() {
            s.write_all(&config)?;
        }
        Ok(())
    });
    let output = child.wait_with_output().map_err(|e| {
        CniError::new(
            code::INTERNAL,
            format!("waiting for delegate plugin {}: {e}", exe.display()),
        )
    })?;
    // A plugin that exits without reading its stdin gives a broken pipe here: its own
    // output and status tell what happened.
    let _ = writer.join();
    match output.status.code() {
        Some(c) => Ok(Outcome {
            stdout: output.stdout,
            exit_code: u8::try_from(c).unwrap_or(1),
        }),
        None => Err(CniError::new(
            code::INTERNAL,
            format!(
                "delegate plugin {} {command} ended by a signal ({})",
                exe.display(),
                output.status
            ),
        )),
    }
}
