//! NVIDIA's CDI hooks, `nvidia-cdi-hook <name> …` and `nvidia-ctk hook <name> …`, recognised by
//! program name and parsed, so that gpu-youki does their work itself and never runs them.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One NVIDIA hook, with its arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvidiaHook {
    /// `create-symlinks --link target::link …`: (target, link path in the container).
    CreateSymlinks(Vec<(PathBuf, PathBuf)>),
    /// `update-ldcache --folder DIR …`: library directories for the ld.so.cache.
    UpdateLdcache(Vec<PathBuf>),
    /// `chmod --mode M --path P …`.
    Chmod {
        /// Permission bits.
        mode: u32,
        /// Paths in the container.
        paths: Vec<PathBuf>,
    },
    /// `enable-cuda-compat [--host-driver-version V] [--host-cuda-version V]
    /// [--cuda-compat-container-root DIR]`.
    EnableCudaCompat {
        /// The host driver version the compat libraries are compared with.
        host_driver_version: Option<String>,
        /// The host CUDA version (Orin); gpu-youki does not use compat libraries then.
        host_cuda_version: Option<String>,
    },
    /// `disable-device-node-modification`: `ModifyDeviceFiles: 0` in the container's params.
    DisableDeviceNodeModification,
    /// `update-application-profile`: the EGL profile naming the container's GPUs.
    UpdateApplicationProfile,
}

/// The program names of NVIDIA's hook binaries.
const CDI_HOOK: &str = "nvidia-cdi-hook";
const CTK: &str = "nvidia-ctk";

fn base_name(text: &str) -> &str {
    Path::new(text)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(text)
}

/// Whether the hook `path args` is one of NVIDIA's CDI hooks (cheap; does not parse it).
pub fn is_nvidia_hook(path: &str, args: &[String]) -> bool {
    subcommand_args(path, args).is_some()
}

/// The arguments from the subcommand name on, for NVIDIA's hook programs.
fn subcommand_args<'a>(path: &str, args: &'a [String]) -> Option<&'a [String]> {
    let program = args.first().map_or(base_name(path), |a| base_name(a));
    let names = [base_name(path), program];
    if names.contains(&CDI_HOOK) {
        return Some(args.get(1..).unwrap_or_default());
    }
    if names.contains(&CTK) && args.get(1).map(String::as_str) == Some("hook") {
        return Some(args.get(2..).unwrap_or_default());
    }
    None
}

/// Parses the hook if it is NVIDIA's: `None` for other programs, an error for a subcommand or
/// flag gpu-youki does not know (running it is not an option: it would touch the rootfs).
pub fn parse(path: &str, args: &[String]) -> Option<Result<NvidiaHook>> {
    let rest = subcommand_args(path, args)?;
    Some(parse_subcommand(rest).with_context(|| {
        format!(
            "NVIDIA hook `{}` (gpu-youki does its work natively and knows create-symlinks, \
             update-ldcache, chmod, enable-cuda-compat, disable-device-node-modification and \
             update-application-profile)",
            args.join(" ")
        )
    }))
}

fn parse_subcommand(rest: &[String]) -> Result<NvidiaHook> {
    let Some((name, flags)) = rest.split_first() else {
        bail!("no subcommand");
    };
    let flags = parse_flags(flags)?;
    let values = |flag: &str| -> Vec<String> {
        flags
            .iter()
            .filter(|(f, _)| f == flag)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let allowed = |known: &[&str]| -> Result<()> {
        for (flag, _) in &flags {
            if !known.contains(&flag.as_str()) {
                bail!("unknown flag --{flag} for {name}");
            }
        }
        Ok(())
    };
    Ok(match name.as_str() {
        "create-symlinks" => {
            allowed(&["link", "container-spec"])?;
            let mut links = Vec::new();
            for link in values("link") {
                let Some((target, path)) = link.split_once("::") else {
                    bail!("--link {link:?} is not target::link");
                };
                links.push((PathBuf::from(target), PathBuf::from(path)));
            }
            NvidiaHook::CreateSymlinks(links)
        }
        "update-ldcache" => {
            allowed(&["folder", "ldconfig-path", "container-spec"])?;
            NvidiaHook::UpdateLdcache(values("folder").into_iter().map(PathBuf::from).collect())
        }
        "chmod" => {
            allowed(&["mode", "path", "container-spec"])?;
            let mode = values("mode").pop().context("chmod without --mode")?;
            let mode = u32::from_str_radix(&mode, 8)
                .ok()
                .filter(|m| *m <= 0o7777)
                .with_context(|| format!("--mode {mode:?} is not octal permission bits"))?;
            NvidiaHook::Chmod {
                mode,
                paths: values("path").into_iter().map(PathBuf::from).collect(),
            }
        }
        "enable-cuda-compat" => {
            allowed(&[
                "host-driver-version",
                "host-cuda-version",
                "cuda-compat-container-root",
                "container-spec",
            ])?;
            if let Some(root) = values("cuda-compat-container-root").pop() {
                if root != crate::compat::COMPAT_DIR {
                    bail!("--cuda-compat-container-root {root} (only /usr/local/cuda/compat)");
                }
            }
            NvidiaHook::EnableCudaCompat {
                host_driver_version: values("host-driver-version").pop(),
                host_cuda_version: values("host-cuda-version").pop(),
            }
        }
        "disable-device-node-modification" => {
            allowed(&["container-spec"])?;
            NvidiaHook::DisableDeviceNodeModification
        }
        "update-application-profile" => {
            allowed(&["container-spec"])?;
            NvidiaHook::UpdateApplicationProfile
        }
        other => bail!("unknown subcommand {other:?}"),
    })
}

/// `--flag value`, `--flag=value`, `-flag value` pairs (urfave/cli's forms).
fn parse_flags(args: &[String]) -> Result<Vec<(String, String)>> {
    let mut flags = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let Some(flag) = arg.strip_prefix("--").or_else(|| arg.strip_prefix('-')) else {
            bail!("unexpected argument {arg:?}");
        };
        match flag.split_once('=') {
            Some((flag, value)) => flags.push((flag.to_string(), value.to_string())),
            None => {
                let value = iter
                    .next()
                    .with_context(|| format!("--{flag} without a value"))?;
                flags.push((flag.to_string(), value.clone()));
            }
        }
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(text: &str) -> Vec<String> {
        text.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn both_programs_and_every_subcommand_are_parsed() {
        let hook = parse(
            "/usr/bin/nvidia-cdi-hook",
            &args("nvidia-cdi-hook create-symlinks --link libcuda.so.1::/usr/lib/libcuda.so --link=../card1::/dev/dri/by-path/x"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            hook,
            NvidiaHook::CreateSymlinks(vec![
                ("libcuda.so.1".into(), "/usr/lib/libcuda.so".into()),
                ("../card1".into(), "/dev/dri/by-path/x".into()),
            ])
        );
        let hook = parse(
            "/usr/bin/nvidia-ctk",
            &args("nvidia-ctk hook update-ldcache --folder /a --folder /a/vdpau"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            hook,
            NvidiaHook::UpdateLdcache(vec!["/a".into(), "/a/vdpau".into()])
        );
        let hook = parse(
            "/x/nvidia-cdi-hook",
            &args("nvidia-cdi-hook chmod --mode 755 --path /dev/dri"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            hook,
            NvidiaHook::Chmod {
                mode: 0o755,
                paths: vec!["/dev/dri".into()]
            }
        );
        let hook = parse(
            "/usr/bin/nvidia-cdi-hook",
            &args("nvidia-cdi-hook enable-cuda-compat --host-driver-version=580.95.05"),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            hook,
            NvidiaHook::EnableCudaCompat {
                host_driver_version: Some("580.95.05".into()),
                host_cuda_version: None
            }
        );
        for (name, expected) in [
            (
                "disable-device-node-modification",
                NvidiaHook::DisableDeviceNodeModification,
            ),
            (
                "update-application-profile",
                NvidiaHook::UpdateApplicationProfile,
            ),
        ] {
            let hook = parse(
                "/usr/bin/nvidia-cdi-hook",
                &args(&format!("nvidia-cdi-hook {name}")),
            );
            assert_eq!(hook.unwrap().unwrap(), expected);
        }
    }

    #[test]
    fn other_hooks_are_not_ours_and_unknown_subcommands_are_refused() {
        assert!(parse("/usr/bin/prestart-thing", &args("prestart-thing x")).is_none());
        assert!(parse("/usr/bin/nvidia-ctk", &args("nvidia-ctk runtime configure")).is_none());
        assert!(!is_nvidia_hook(
            "/usr/bin/nvidia-container-runtime-hook",
            &[]
        ));
        let err = parse(
            "/usr/bin/nvidia-cdi-hook",
            &args("nvidia-cdi-hook frobnicate --x 1"),
        )
        .unwrap()
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.contains("frobnicate") && err.contains("natively"),
            "{err}"
        );
        let err = parse(
            "/usr/bin/nvidia-cdi-hook",
            &args("nvidia-cdi-hook update-ldcache --folderz /a"),
        )
        .unwrap()
        .unwrap_err();
        assert!(format!("{err:#}").contains("--folderz"));
    }
}
