//! The hooks engines put into a spec to have the NVIDIA Container Toolkit set up GPUs
//! (`shared/reference/engines.md`, "What the engines put into the spec for GPUs"), recognised so
//! that gpu-youki does their work natively and never runs them:
//! * docker 20.10 `--gpus`: a prestart hook `nvidia-container-runtime-hook prestart` (also
//!   named `nvidia-container-toolkit`); the request itself is in the process environment
//!   (`NVIDIA_VISIBLE_DEVICES`, `NVIDIA_DRIVER_CAPABILITIES`).
//! * containerd 1.6 `ctr run --gpus`: a prestart hook `containerd oci-hook -- nvidia-container-cli
//!   [global flags] configure --device=… --compute … [--require=…] --pid={{pid}} {{rootfs}}`;
//!   the request is in the flags, which [`request_env`] turns into request variables for
//!   [`crate::request::GpuRequest::from_env`], so that there is one request parser.
//!
//! Recognised hooks are left out of the effective spec; every other hook (docker's
//! `libnetwork-setkey`, the user's, the CDI hooks `nvidia-cdi-hook`/`nvidia-ctk hook`) stays
//! and runs. A recognised hook in a spec without a GPU request is removed too: the toolkit's
//! hook would have done nothing.
//!
//! Flags of `nvidia-container-cli` that gpu-youki accepts but does not need: `--load-kmods`/`-k`
//! (gpu-youki loads no module), `--ldcache=` and `--ldconfig=` (gpu-youki writes the
//! container's ld.so.cache itself), `--no-pivot`, `--debug=`, `--user=`, `--pid=` and the
//! rootfs operand (gpu-youki knows its container). Any other flag is refused with an error
//! naming it, rather than silently giving the container something else than it asked for.

#![allow(deprecated)] // `prestart` is deprecated in the runtime spec, yet engines use it.

use std::path::Path;

use anyhow::{bail, ensure, Result};
use oci_spec::runtime::{Hook, Hooks};

use crate::request::{DriverCapability, DRIVER_CAPABILITIES, REQUIRE_PREFIX, VISIBLE_DEVICES};

/// The hook docker 20.10 appends for `--gpus`, and its older name.
const RUNTIME_HOOK_NAMES: [&str; 2] = ["nvidia-container-runtime-hook", "nvidia-container-toolkit"];
/// The program containerd's `oci-hook` runs for `ctr run --gpus`.
const CLI_NAME: &str = "nvidia-container-cli";
/// Requirements of `--require=` flags become `NVIDIA_REQUIRE_HOOK_<n>` (n from 1, in order).
const HOOK_REQUIREMENT_PREFIX: &str = "HOOK_";

/// A GPU hook an engine added, as gpu-youki understands it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineHook {
    /// `nvidia-container-runtime-hook`: the request is the process environment's.
    RuntimeHook,
    /// `containerd oci-hook -- nvidia-container-cli … configure …`: the request variables its
    /// flags stand for (`KEY=VALUE`).
    Cli(Vec<String>),
}

fn base_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(path)
}

/// The arguments after `containerd oci-hook --` when `hook` is containerd's oci-hook running
/// `nvidia-container-cli` (the first of them is the CLI's path).
fn cli_args(hook: &Hook) -> Option<&[String]> {
    let args = hook.args().as_deref()?;
    match args {
        [containerd, oci_hook, dashes, rest @ ..]
            if base_name(containerd) == "containerd"
                && oci_hook == "oci-hook"
                && dashes == "--"
                && rest.first().is_some_and(|cli| base_name(cli) == CLI_NAME) =>
        {
            Some(rest)
        }
        _ => None,
    }
}

fn is_runtime_hook(hook: &Hook) -> bool {
    let path_name = hook.path().file_name().and_then(|name| name.to_str());
    let arg0 = hook.args().as_ref().and_then(|args| args.first());
    path_name.is_some_and(|name| RUNTIME_HOOK_NAMES.contains(&name))
        || arg0.is_some_and(|arg| RUNTIME_HOOK_NAMES.contains(&base_name(arg)))
}

/// Whether `hook` is an engine's GPU hook, by its names only (no flag is checked): the cheap
/// test that decides whether the GPU stage runs at all.
pub fn is_engine_hook(hook: &Hook) -> bool {
    is_runtime_hook(hook) || cli_args(hook).is_some()
}

/// What `hook` asks for when it is an engine's GPU hook; `None` for any other hook. An
/// `nvidia-container-cli` flag gpu-youki does not know is an error naming it.
pub fn classify(hook: &Hook) -> Result<Option<EngineHook>> {
    if is_runtime_hook(hook) {
        return Ok(Some(EngineHook::RuntimeHook));
    }
    match cli_args(hook) {
        Some(args) => cli_request(&args[1..]).map(|env| Some(EngineHook::Cli(env))),
        None => Ok(None),
    }
}

/// The request variables of `nvidia-container-cli`'s arguments (after its path).
fn cli_request(args: &[String]) -> Result<Vec<String>> {
    let mut args = args.iter().map(String::as_str);
    // Global flags, up to the command.
    loop {
        match args.next() {
            Some("configure") => break,
            Some("--load-kmods" | "-k" | "--no-pivot") => {}
            Some(flag) if has_value(flag, &["--ldcache", "--debug", "--user"]) => {}
            Some(flag) => bail!("{CLI_NAME} hook: unsupported flag {flag:?} (gpu-youki does GPU setup itself and knows only the flags containerd passes)"),
            None => bail!("{CLI_NAME} hook without the configure command"),
        }
    }
    let mut devices = None;
    let mut capabilities = Vec::new();
    let mut requirements = Vec::new();
    let mut rootfs = None;
    for arg in args {
        if let Some(list) = arg.strip_prefix("--device=") {
            ensure!(
                devices.replace(list).is_none(),
                "{CLI_NAME} hook: --device given twice"
            );
        } else if let Some(expression) = arg.strip_prefix("--require=") {
            requirements.push(expression);
        } else if let Some(capability) = arg.strip_prefix("--").and_then(capability_flag) {
            capabilities.push(capability.name());
        } else if has_value(arg, &["--pid", "--ldconfig"]) {
        } else if !arg.starts_with('-') {
            ensure!(
                rootfs.replace(arg).is_none(),
                "{CLI_NAME} hook: more than one rootfs operand ({arg:?})"
            );
        } else {
            bail!("{CLI_NAME} hook: unsupported flag {arg:?} (gpu-youki does GPU setup itself and knows only the flags containerd passes)");
        }
    }
    ensure!(
        !capabilities.is_empty(),
        "{CLI_NAME} hook without a capability flag (--compute, --utility, …): a container \
         without driver libraries is not supported"
    );
    // Without --device the CLI gives the driver but no GPU: NVIDIA_VISIBLE_DEVICES=none.
    let devices = devices.filter(|list| !list.is_empty()).unwrap_or("none");
    let mut env = vec![
        format!("{VISIBLE_DEVICES}={devices}"),
        format!("{DRIVER_CAPABILITIES}={}", capabilities.join(",")),
    ];
    env.extend(requirements.iter().enumerate().map(|(i, expression)| {
        format!(
            "{REQUIRE_PREFIX}{HOOK_REQUIREMENT_PREFIX}{}={expression}",
            i + 1
        )
    }));
    Ok(env)
}

/// Whether `arg` is `FLAG=VALUE` for one of `flags`.
fn has_value(arg: &str, flags: &[&str]) -> bool {
    arg.split_once('=')
        .is_some_and(|(flag, _)| flags.contains(&flag))
}

/// The capability a `--NAME` flag of `configure` stands for.
fn capability_flag(name: &str) -> Option<DriverCapability> {
    DriverCapability::ALL
        .into_iter()
        .find(|capability| capability.name() == name)
}

/// Every hook list of the spec, in lifecycle order.
fn lists(hooks: &Hooks) -> [&Option<Vec<Hook>>; 6] {
    [
        hooks.prestart(),
        hooks.create_runtime(),
        hooks.create_container(),
        hooks.start_container(),
        hooks.poststart(),
        hooks.poststop(),
    ]
}

/// Whether any hook list holds an engine's GPU hook (by names; see [`is_engine_hook`]).
pub fn has_engine_hook(hooks: Option<&Hooks>) -> bool {
    hooks.is_some_and(|hooks| {
        lists(hooks)
            .into_iter()
            .flatten()
            .flatten()
            .any(is_engine_hook)
    })
}

/// The request variables the engine hooks stand for, to take the place of the same variables
/// of the process environment: those of containerd's `nvidia-container-cli` hook; none for
/// docker's hook, whose request is the environment. Two CLI hooks are an error.
pub fn request_env(hooks: Option<&Hooks>) -> Result<Vec<String>> {
    let Some(hooks) = hooks else {
        return Ok(Vec::new());
    };
    let mut found: Option<Vec<String>> = None;
    for hook in lists(hooks).into_iter().flatten().flatten() {
        if let Some(EngineHook::Cli(env)) = classify(hook)? {
            ensure!(
                found.replace(env).is_none(),
                "the spec has two {CLI_NAME} hooks; give the GPUs once"
            );
        }
    }
    Ok(found.unwrap_or_default())
}

/// Removes every engine GPU hook from every list; lists left empty are kept empty.
pub fn remove_engine_hooks(hooks: &mut Hooks) {
    let keep_others = |list: &mut Option<Vec<Hook>>| {
        if let Some(list) = list {
            list.retain(|hook| !is_engine_hook(hook));
        }
    };
    keep_others(hooks.prestart_mut());
    keep_others(hooks.create_runtime_mut());
    keep_others(hooks.create_container_mut());
    keep_others(hooks.start_container_mut());
    keep_others(hooks.poststart_mut());
    keep_others(hooks.poststop_mut());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{DeviceSelector, DriverCapabilities, GpuRequest, VisibleDevices};
    use oci_spec::runtime::HookBuilder;

    fn hook(path: &str, args: &[&str]) -> Hook {
        HookBuilder::default()
            .path(path)
            .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap()
    }

    /// `containerd oci-hook -- nvidia-container-cli` followed by `cli_args`.
    fn ctr_hook(cli_args: &[&str]) -> Hook {
        let mut args = vec![
            "containerd",
            "oci-hook",
            "--",
            "/usr/local/bin/nvidia-container-cli",
        ];
        args.extend_from_slice(cli_args);
        hook("/usr/bin/containerd", &args)
    }

    /// What `ctr run --gpus 0` (containerd 1.6) writes.
    const CTR_GPUS_0: &[&str] = &[
        "--load-kmods",
        "configure",
        "--device=0",
        "--compute",
        "--compat32",
        "--graphics",
        "--utility",
        "--video",
        "--display",
        "--pid={{pid}}",
        "{{rootfs}}",
    ];

    fn cli_env(cli_args: &[&str]) -> Result<Vec<String>> {
        match classify(&ctr_hook(cli_args))? {
            Some(EngineHook::Cli(env)) => Ok(env),
            other => panic!("not a CLI hook: {other:?}"),
        }
    }

    fn error(cli_args: &[&str]) -> String {
        format!("{:#}", cli_env(cli_args).unwrap_err())
    }

    #[test]
    fn ctr_gpus_hook_becomes_request_variables() {
        let env = cli_env(CTR_GPUS_0).unwrap();
        assert_eq!(
            env,
            [
                "NVIDIA_VISIBLE_DEVICES=0",
                "NVIDIA_DRIVER_CAPABILITIES=compute,compat32,graphics,utility,video,display",
            ]
        );
        let request = GpuRequest::from_env(&env).unwrap().unwrap();
        assert_eq!(
            request.devices,
            Some(VisibleDevices::Selected(vec![DeviceSelector::Index(0)]))
        );
        let all_but_ngx: DriverCapabilities = DriverCapability::ALL
            .into_iter()
            .filter(|c| *c != DriverCapability::Ngx)
            .collect();
        assert_eq!(request.capabilities, all_but_ngx);
    }

    #[test]
    fn cli_devices_capabilities_and_requirements() {
        let env = cli_env(&[
            "-k",
            "--ldcache=/etc/ld.so.cache",
            "configure",
            "--device=GPU-0b2c5e6e-9f0a-4c1d-8e2f-3a4b5c6d7e8f,1",
            "--utility",
            "--ngx",
            "--require=cuda>=12.0",
            "--require=driver>=500 brand=tesla",
            "--ldconfig=@/sbin/ldconfig",
            "--pid=123",
            "/rootfs",
        ])
        .unwrap();
        assert_eq!(
            env,
            [
                "NVIDIA_VISIBLE_DEVICES=GPU-0b2c5e6e-9f0a-4c1d-8e2f-3a4b5c6d7e8f,1",
                "NVIDIA_DRIVER_CAPABILITIES=utility,ngx",
                "NVIDIA_REQUIRE_HOOK_1=cuda>=12.0",
                "NVIDIA_REQUIRE_HOOK_2=driver>=500 brand=tesla",
            ]
        );
        let request = GpuRequest::from_env(&env).unwrap().unwrap();
        assert_eq!(request.requirements.len(), 2);
    }

    #[test]
    fn cli_without_device_gives_the_driver_only() {
        for args in [
            &["configure", "--compute"][..],
            &["configure", "--device=", "--compute"],
        ] {
            let env = cli_env(args).unwrap();
            let request = GpuRequest::from_env(&env).unwrap().unwrap();
            assert_eq!(
                request.devices,
                Some(VisibleDevices::DriverOnly),
                "{args:?}"
            );
        }
        let env = cli_env(&["configure", "--device=all", "--compute"]).unwrap();
        let request = GpuRequest::from_env(&env).unwrap().unwrap();
        assert_eq!(request.devices, Some(VisibleDevices::All));
    }

    #[test]
    fn unknown_cli_flags_are_refused_by_name() {
        assert!(
            error(&["--root=/run/nvidia/driver", "configure", "--compute"])
                .contains("unsupported flag \"--root=/run/nvidia/driver\"")
        );
        assert!(error(&["configure", "--compute", "--no-cgroups"])
            .contains("unsupported flag \"--no-cgroups\""));
        assert!(error(&["configure", "--compute", "--mig-config=all"])
            .contains("unsupported flag \"--mig-config=all\""));
        assert!(error(&["configure", "--cumpute"]).contains("unsupported flag \"--cumpute\""));
        assert!(error(&["info"]).contains("unsupported flag \"info\""));
        assert!(error(&["--load-kmods"]).contains("without the configure command"));
        assert!(error(&["configure", "--device=0"]).contains("without a capability flag"));
        assert!(error(&["configure", "--compute", "/a", "/b"]).contains("more than one rootfs"));
        assert!(
            error(&["configure", "--device=0", "--device=1", "--compute"])
                .contains("--device given twice")
        );
        for message in [
            error(&["configure", "--compute", "--no-cgroups"]),
            error(&["info"]),
        ] {
            assert!(!message.contains('\n'), "{message}");
        }
    }

    #[test]
    fn docker_hook_is_recognised_by_path_or_first_argument() {
        for hook in [
            hook(
                "/usr/bin/nvidia-container-runtime-hook",
                &["nvidia-container-runtime-hook", "prestart"],
            ),
            hook("/usr/local/bin/nvidia-container-toolkit", &["prestart"]),
            hook(
                "/opt/x/hook",
                &["/usr/bin/nvidia-container-runtime-hook", "prestart"],
            ),
        ] {
            assert_eq!(classify(&hook).unwrap(), Some(EngineHook::RuntimeHook));
            assert!(is_engine_hook(&hook));
        }
    }

    #[test]
    fn other_hooks_are_not_engine_hooks() {
        for hook in [
            hook(
                "/proc/4242/exe",
                &["libnetwork-setkey", "-exec-root=/run/docker", "abc"],
            ),
            hook(
                "/usr/bin/nvidia-cdi-hook",
                &["nvidia-cdi-hook", "update-ldcache"],
            ),
            hook(
                "/usr/bin/nvidia-ctk",
                &["nvidia-ctk", "hook", "create-symlinks"],
            ),
            hook(
                "/usr/bin/containerd",
                &["containerd", "oci-hook", "--", "/bin/true"],
            ),
            hook(
                "/usr/local/bin/nvidia-container-cli",
                &["nvidia-container-cli", "configure"],
            ),
            hook("/bin/hook", &[]),
        ] {
            assert_eq!(classify(&hook).unwrap(), None, "{hook:?}");
            assert!(!is_engine_hook(&hook));
        }
    }

    fn hooks(prestart: Vec<Hook>, poststop: Vec<Hook>) -> Hooks {
        let mut hooks = Hooks::default();
        hooks.set_prestart(Some(prestart));
        hooks.set_poststop(Some(poststop));
        hooks
    }

    #[test]
    fn engine_hooks_are_removed_and_others_kept() {
        let setkey = hook("/proc/4242/exe", &["libnetwork-setkey", "abc"]);
        let user = hook("/bin/user-hook", &["user-hook"]);
        let docker = hook(
            "/usr/bin/nvidia-container-runtime-hook",
            &["nvidia-container-runtime-hook", "prestart"],
        );
        let mut all = hooks(
            vec![
                setkey.clone(),
                docker.clone(),
                ctr_hook(CTR_GPUS_0),
                user.clone(),
            ],
            vec![docker, user.clone()],
        );
        assert!(has_engine_hook(Some(&all)));
        assert_eq!(
            request_env(Some(&all)).unwrap(),
            cli_env(CTR_GPUS_0).unwrap()
        );
        remove_engine_hooks(&mut all);
        assert_eq!(all.prestart().as_deref(), Some(&[setkey, user.clone()][..]));
        assert_eq!(all.poststop().as_deref(), Some(&[user][..]));
        assert!(!has_engine_hook(Some(&all)));
        assert!(!has_engine_hook(None));
        assert_eq!(request_env(None).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn docker_hook_alone_adds_no_variables() {
        let docker = hook("/usr/bin/nvidia-container-runtime-hook", &["x", "prestart"]);
        assert_eq!(
            request_env(Some(&hooks(vec![docker], vec![]))).unwrap(),
            Vec::<String>::new()
        );
    }

    #[test]
    fn two_cli_hooks_are_refused() {
        let two = hooks(vec![ctr_hook(CTR_GPUS_0)], vec![ctr_hook(CTR_GPUS_0)]);
        assert!(format!("{:#}", request_env(Some(&two)).unwrap_err()).contains("two"));
    }
}
