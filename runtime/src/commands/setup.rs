//! `setup containerd` and `setup docker`: register gpu-youki in an engine's configuration (what
//! `nvidia-ctk runtime configure` does for the toolkit's runtime, `shared/reference/
//! nvidia-toolkit.md` §5.4) and install the placeholder program the engine's `--gpus` looks
//! for. Everything already in the file is kept (TOML comments and layout too, through
//! `toml_edit`); the old file is backed up; a run that changes nothing writes nothing.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde_json::Value;
use toml_edit::{DocumentMut, Item, Table};

use super::absolute;
use crate::cli::{SetupArgs, SetupCommand};
use gpu::atomic_file::write_atomically;

const CONTAINERD_CONFIG: &str = "/etc/containerd/config.toml";
const DOCKER_CONFIG: &str = "/etc/docker/daemon.json";
/// containerd's CRI plugin in a version 2 configuration.
const CRI_PLUGIN: &str = "io.containerd.grpc.v1.cri";
/// The runc v2 shim, which runs `options.BinaryName` as its runc.
const RUNC_V2: &str = "io.containerd.runc.v2";
/// Pod annotations CRI passes to the runtime: the device plugin's CDI device names.
const CDI_ANNOTATIONS: &str = "cdi.k8s.io/*";
/// The first two lines of every placeholder, by which setup knows it may replace one.
const PLACEHOLDER_MARK: &str = "#!/bin/sh\n# gpu-youki placeholder";

/// One engine's part: where its configuration is, how it is edited, which placeholder it needs.
struct Engine {
    name: &'static str,
    default_config: &'static str,
    placeholder: &'static str,
    /// What makes the engine look for the placeholder, for its text.
    flag: &'static str,
    edit: fn(&str, &Path, &Registration) -> Result<String>,
}

const CONTAINERD: Engine = Engine {
    name: "containerd",
    default_config: CONTAINERD_CONFIG,
    placeholder: "nvidia-container-cli",
    flag: "`ctr run --gpus` (which checks the ctr client's PATH)",
    edit: edit_containerd,
};

const DOCKER: Engine = Engine {
    name: "docker",
    default_config: DOCKER_CONFIG,
    placeholder: "nvidia-container-runtime-hook",
    flag: "`docker run --gpus` (dockerd checks its PATH when it starts)",
    edit: edit_docker,
};

/// What goes into the engine's configuration.
struct Registration {
    name: String,
    binary: String,
    set_as_default: bool,
}

pub fn setup(command: SetupCommand) -> Result<()> {
    let (engine, args) = match command {
        SetupCommand::Containerd(args) => (CONTAINERD, args),
        SetupCommand::Docker(args) => (DOCKER, args),
    };
    let binary = std::env::current_exe()
        .and_then(|exe| exe.canonicalize())
        .context("cannot find the path of this gpu-youki binary")?;
    let registration = Registration {
        name: args.runtime_name.clone(),
        binary: binary.to_string_lossy().into_owned(),
        set_as_default: args.set_as_default,
    };
    let config = args
        .config
        .clone()
        .unwrap_or_else(|| PathBuf::from(engine.default_config));
    // A config that is a symbolic link is edited where it points, and stays a link.
    let config = fs::canonicalize(&config).unwrap_or(config);
    let old = match fs::read_to_string(&config) {
        Ok(text) => Some(text),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", config.display())),
    };
    let new = (engine.edit)(old.as_deref().unwrap_or(""), &config, &registration)?;
    let placeholder = (!args.no_placeholder)
        .then(|| Placeholder::new(&engine, &args))
        .transpose()?;
    if args.dry_run {
        print!("{new}");
        if let Some(placeholder) = &placeholder {
            eprintln!("would install {}", placeholder.path.display());
        }
        return Ok(());
    }
    if old.as_deref() == Some(new.as_str()) {
        println!(
            "{} already registers {}",
            config.display(),
            args.runtime_name
        );
    } else {
        let backup = write_with_backup(&config, old.is_some(), &new)?;
        match backup {
            Some(backup) => println!(
                "wrote {} (the old file is {})",
                config.display(),
                backup.display()
            ),
            None => println!("wrote {}", config.display()),
        }
    }
    if let Some(placeholder) = placeholder {
        placeholder.install()?;
    }
    println!("restart {} for the change to take effect", engine.name);
    Ok(())
}

/// Replaces `path` by `text` (through a temporary file and a rename, keeping the old file's
/// permissions), first copying the old file to `PATH.YYYYMMDD-HHMMSS.bak` when there is one.
fn write_with_backup(path: &Path, exists: bool, text: &str) -> Result<Option<PathBuf>> {
    let backup = if exists { Some(back_up(path)?) } else { None };
    let mode = fs::metadata(path).map_or(0o644, |meta| meta.permissions().mode() & 0o7777);
    write_atomically(path, text.as_bytes(), mode)?;
    Ok(backup)
}

/// Copies `path` to `PATH.YYYYMMDD-HHMMSS.bak`, or `PATH.YYYYMMDD-HHMMSS-N.bak` when a
/// backup of that second exists already (two changing runs in one second keep both).
fn back_up(path: &Path) -> Result<PathBuf> {
    let stamp = chrono::Utc::now().format("%Y%m%d-%H%M%S").to_string();
    let old = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    for n in 0.. {
        let suffix = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}-{n}")
        };
        let backup = PathBuf::from(format!("{}.{suffix}.bak", path.display()));
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&backup)
        {
            Ok(mut file) => {
                // The backup is as readable as the file was, no more.
                if let Ok(meta) = fs::metadata(path) {
                    file.set_permissions(meta.permissions())
                        .with_context(|| format!("cannot chmod {}", backup.display()))?;
                }
                file.write_all(&old)
                    .with_context(|| format!("cannot write {}", backup.display()))?;
                return Ok(backup);
            }
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => {
                return Err(err).with_context(|| {
                    format!("cannot back {} up to {}", path.display(), backup.display())
                })
            }
        }
    }
    unreachable!("an unbounded range ends only by returning")
}

/// containerd's configuration with the runtime handler (and default) set.
fn edit_containerd(text: &str, path: &Path, registration: &Registration) -> Result<String> {
    let mut doc: DocumentMut = text
        .parse()
        .with_context(|| format!("cannot parse {} as TOML", path.display()))?;
    let shown = path.display();
    match doc.get("version").map(|v| v.as_integer()) {
        Some(Some(2)) => {}
        None if doc.is_empty() => {
            doc.insert("version", toml_edit::value(2));
        }
        _ => bail!(
            "{shown}: only containerd configuration version 2 (`version = 2`, containerd \
             1.5–1.7) is supported"
        ),
    }
    let cri = sub_table(doc.as_table_mut(), &["plugins", CRI_PLUGIN], path)?;
    let containerd = sub_table(cri, &["containerd"], path)?;
    if registration.set_as_default {
        set_string(containerd, "default_runtime_name", &registration.name);
    }
    let runtimes = sub_table(containerd, &["runtimes"], path)?;
    let systemd_cgroup = (!runtimes.contains_key(&registration.name))
        .then(|| {
            runtimes
                .get("runc")?
                .get("options")?
                .get("SystemdCgroup")
                .cloned()
        })
        .flatten();
    let runtime = sub_table(runtimes, &[&registration.name], path)?;
    runtime.set_implicit(false);
    set_string(runtime, "runtime_type", RUNC_V2);
    let annotations = runtime
        .entry("container_annotations")
        .or_insert_with(|| toml_edit::value(toml_edit::Array::new()))
        .as_array_mut()
        .with_context(|| {
            format!(
                "{shown}: container_annotations of runtime {} is not an array",
                registration.name
            )
        })?;
    if !annotations
        .iter()
        .any(|a| a.as_str() == Some(CDI_ANNOTATIONS))
    {
        annotations.push(CDI_ANNOTATIONS);
    }
    let options = sub_table(runtime, &["options"], path)?;
    options.set_implicit(false);
    set_string(options, "BinaryName", &registration.binary);
    if let Some(systemd_cgroup) = systemd_cgroup {
        options.insert("SystemdCgroup", systemd_cgroup);
    }
    Ok(doc.to_string())
}

/// The table at `keys` below `table`, made (as an implicit table, which prints no header of its
/// own) where missing; anything but a table there is an error naming the file.
fn sub_table<'t>(mut table: &'t mut Table, keys: &[&str], path: &Path) -> Result<&'t mut Table> {
    for key in keys {
        table = table
            .entry(key)
            .or_insert_with(|| {
                let mut new = Table::new();
                new.set_implicit(true);
                Item::Table(new)
            })
            .as_table_mut()
            .with_context(|| {
                format!(
                    "{}: {key} is not a table ([{key}] section); gpu-youki setup edits \
                     only tables there",
                    path.display()
                )
            })?;
    }
    Ok(table)
}

/// Sets `key = "value"` unless it has that value already (so formatting stays untouched).
fn set_string(table: &mut Table, key: &str, value: &str) {
    if table.get(key).and_then(Item::as_str) != Some(value) {
        table.insert(key, toml_edit::value(value));
    }
}

/// dockerd's daemon.json with the runtime (and default) set; unchanged text when it has them.
fn edit_docker(text: &str, path: &Path, registration: &Registration) -> Result<String> {
    let shown = path.display();
    let old: Value = if text.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(text).with_context(|| format!("cannot parse {shown} as JSON"))?
    };
    let mut new = old.clone();
    let top = new
        .as_object_mut()
        .with_context(|| format!("{shown} is not a JSON object"))?;
    let runtimes = top
        .entry("runtimes")
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .with_context(|| format!("{shown}: runtimes is not an object"))?;
    let runtime = runtimes
        .entry(registration.name.clone())
        .or_insert_with(|| Value::Object(Default::default()))
        .as_object_mut()
        .with_context(|| format!("{shown}: runtimes.{} is not an object", registration.name))?;
    runtime.insert("path".into(), Value::from(registration.binary.as_str()));
    if registration.set_as_default {
        top.insert(
            "default-runtime".into(),
            Value::from(registration.name.as_str()),
        );
    }
    if new == old && !text.trim().is_empty() {
        return Ok(text.to_string());
    }
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    serde::Serialize::serialize(
        &new,
        &mut serde_json::Serializer::with_formatter(&mut out, formatter),
    )?;
    out.push(b'\n');
    Ok(String::from_utf8(out)?)
}

/// A placeholder program: a shell script standing in for a toolkit program an engine looks
/// for, so that its `--gpus` flag is offered. gpu-youki leaves the hooks that would run it out
/// of the container, so it never runs under gpu-youki; if it does run, it fails loudly.
struct Placeholder {
    path: PathBuf,
    text: String,
}

impl Placeholder {
    /// The placeholder `engine` needs, after checking that it may be installed.
    fn new(engine: &Engine, args: &SetupArgs) -> Result<Self> {
        // Absolute: the placeholder may be run from any directory.
        let path = absolute(&args.placeholder_dir)?.join(engine.placeholder);
        let log = absolute(&args.placeholder_log)?;
        let log = log.to_string_lossy().replace('\'', r"'\''");
        let text = format!(
            "{PLACEHOLDER_MARK} for {name}, installed by `gpu-youki setup {engine}`.\n\
             #\n\
             # This is NOT the NVIDIA Container Toolkit's {name}. It exists so that\n\
             # {flag} is offered.\n\
             # gpu-youki sets GPUs up itself and leaves the hook that would run this program\n\
             # out of the container, so it never runs for gpu-youki containers. If it runs,\n\
             # a container asked for GPUs through another runtime (runc?) and gets none: it\n\
             # says so on stderr, appends a line to the log below, and fails.\n\
             # Remove this file to take the flag away again.\n\
             echo \"gpu-youki placeholder $0 was run: this is not the NVIDIA Container Toolkit;\" \
             \"use the gpu-youki runtime for GPU containers (run logged to '{log}')\" >&2\n\
             printf '%s %s[%s]:%s\\n' \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\" \"$0\" \"$$\" \
             \"$(printf ' %s' \"$@\")\" >>'{log}'\n\
             exit 1\n",
            name = engine.placeholder,
            engine = engine.name,
            flag = engine.flag,
        );
        if let Ok(meta) = fs::symlink_metadata(&path) {
            let ours = meta.is_file()
                && fs::read_to_string(&path).is_ok_and(|t| t.starts_with(PLACEHOLDER_MARK));
            if !ours {
                bail!(
                    "{} exists and is not a gpu-youki placeholder (the NVIDIA Container \
                     Toolkit?); gpu-youki never replaces it: pass --no-placeholder to keep it",
                    path.display()
                );
            }
        }
        Ok(Placeholder { path, text })
    }

    /// Writes the placeholder (mode 0755) unless it is there already.
    fn install(self) -> Result<()> {
        if fs::read_to_string(&self.path).is_ok_and(|t| t == self.text) {
            println!("placeholder {} already installed", self.path.display());
            return Ok(());
        }
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        }
        write_atomically(&self.path, self.text.as_bytes(), 0o755)?;
        println!("installed placeholder {}", self.path.display());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration(set_as_default: bool) -> Registration {
        Registration {
            name: "gpu-youki".into(),
            binary: "/usr/local/bin/gpu-youki".into(),
            set_as_default,
        }
    }

    fn containerd(text: &str, set_as_default: bool) -> Result<String> {
        edit_containerd(
            text,
            Path::new("/etc/c.toml"),
            &registration(set_as_default),
        )
    }

    #[test]
    fn containerd_handler_is_added_keeping_everything_else() {
        let old = "# my containerd\nversion = 2\nroot = \"/var/lib/c\" # keep\n\n\
                   [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n  \
                   runtime_type = \"io.containerd.runc.v2\"\n  \
                   [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n    \
                   SystemdCgroup = true\n";
        let new = containerd(old, true).unwrap();
        assert!(new.starts_with(old.split("\n\n").next().unwrap()), "{new}");
        assert!(new.contains("SystemdCgroup = true\n"), "{new}");
        let parsed: DocumentMut = new.parse().unwrap();
        let cri = &parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
        assert_eq!(cri["default_runtime_name"].as_str(), Some("gpu-youki"));
        let handler = &cri["runtimes"]["gpu-youki"];
        assert_eq!(handler["runtime_type"].as_str(), Some(RUNC_V2));
        assert_eq!(
            handler["container_annotations"]
                .as_array()
                .unwrap()
                .get(0)
                .and_then(|a| a.as_str()),
            Some("cdi.k8s.io/*")
        );
        assert_eq!(
            handler["options"]["BinaryName"].as_str(),
            Some("/usr/local/bin/gpu-youki")
        );
        assert_eq!(handler["options"]["SystemdCgroup"].as_bool(), Some(true));
        assert_eq!(
            cri["runtimes"]["runc"]["options"]["SystemdCgroup"].as_bool(),
            Some(true)
        );
        assert_eq!(containerd(&new, true).unwrap(), new, "not idempotent");
    }

    #[test]
    fn backups_of_one_second_do_not_overwrite_each_other() {
        let dir = std::env::temp_dir().join(format!("gpu-youki-backup-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("daemon.json");
        fs::write(&file, "first").unwrap();
        let one = back_up(&file).unwrap();
        fs::write(&file, "second").unwrap();
        let two = back_up(&file).unwrap();
        let contents = (fs::read_to_string(&one), fs::read_to_string(&two));
        fs::remove_dir_all(&dir).unwrap();
        assert_ne!(one, two);
        assert_eq!(
            (contents.0.unwrap(), contents.1.unwrap()),
            ("first".into(), "second".into())
        );
    }

    #[test]
    fn containerd_config_is_made_from_nothing() {
        let new = containerd("", false).unwrap();
        assert!(new.starts_with("version = 2\n"), "{new}");
        assert!(!new.contains("default_runtime_name"), "{new}");
        assert!(!new.contains("[plugins]"), "{new}");
        assert_eq!(containerd(&new, false).unwrap(), new);
        let parsed: DocumentMut = new.parse().unwrap();
        let runtimes = &parsed["plugins"][CRI_PLUGIN]["containerd"]["runtimes"];
        assert!(runtimes.get("gpu-youki").is_some(), "{new}");
    }

    #[test]
    fn containerd_errors_name_the_file() {
        for (text, expected) in [
            (
                "version = 2\n[plugins\n",
                "cannot parse /etc/c.toml as TOML",
            ),
            ("root = \"/x\"\n", "only containerd configuration version 2"),
            ("version = 3\n", "only containerd configuration version 2"),
            (
                "version = 2\nplugins = 1\n",
                "/etc/c.toml: plugins is not a table",
            ),
        ] {
            let message = format!("{:#}", containerd(text, false).unwrap_err());
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }

    fn docker(text: &str, set_as_default: bool) -> Result<String> {
        edit_docker(
            text,
            Path::new("/etc/d.json"),
            &registration(set_as_default),
        )
    }

    #[test]
    fn docker_runtime_is_added_keeping_everything_else() {
        let old = r#"{"data-root": "/d", "runtimes": {"other": {"path": "/bin/o", "runtimeArgs": ["--x"]}}}"#;
        let new = docker(old, true).unwrap();
        let parsed: Value = serde_json::from_str(&new).unwrap();
        assert_eq!(parsed["data-root"], "/d");
        assert_eq!(parsed["runtimes"]["other"]["runtimeArgs"][0], "--x");
        assert_eq!(
            parsed["runtimes"]["gpu-youki"]["path"],
            "/usr/local/bin/gpu-youki"
        );
        assert_eq!(parsed["default-runtime"], "gpu-youki");
        assert!(new.contains("\n    \"data-root\""), "{new}");
        assert_eq!(docker(&new, true).unwrap(), new, "not idempotent");
        assert!(!docker("", false).unwrap().contains("default-runtime"));
    }

    #[test]
    fn another_runtime_name_is_used_for_the_handler_runtime_and_default() {
        let named = Registration {
            name: "gpu-custom".into(),
            ..registration(true)
        };
        let path = Path::new("/etc/e");
        let new = edit_containerd("", path, &named).unwrap();
        let parsed: DocumentMut = new.parse().unwrap();
        let cri = &parsed["plugins"][CRI_PLUGIN]["containerd"];
        assert_eq!(cri["default_runtime_name"].as_str(), Some("gpu-custom"));
        let handler = &cri["runtimes"]["gpu-custom"];
        assert_eq!(handler["runtime_type"].as_str(), Some(RUNC_V2), "{new}");
        assert_eq!(
            handler["options"]["BinaryName"].as_str(),
            Some("/usr/local/bin/gpu-youki")
        );
        assert!(cri["runtimes"].get("gpu-youki").is_none(), "{new}");
        assert_eq!(edit_containerd(&new, path, &named).unwrap(), new);

        let new = edit_docker("", path, &named).unwrap();
        let parsed: Value = serde_json::from_str(&new).unwrap();
        assert_eq!(parsed["default-runtime"], "gpu-custom");
        assert_eq!(
            parsed["runtimes"],
            serde_json::json!({ "gpu-custom": { "path": "/usr/local/bin/gpu-youki" } })
        );
        assert_eq!(edit_docker(&new, path, &named).unwrap(), new);
    }

    #[test]
    fn docker_errors_name_the_file() {
        for (text, expected) in [
            ("{", "cannot parse /etc/d.json as JSON"),
            ("[]", "/etc/d.json is not a JSON object"),
            (
                r#"{"runtimes": 3}"#,
                "/etc/d.json: runtimes is not an object",
            ),
        ] {
            let message = format!("{:#}", docker(text, false).unwrap_err());
            assert!(message.contains(expected), "{text:?}: {message}");
        }
    }
}
