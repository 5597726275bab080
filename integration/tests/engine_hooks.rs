//! The GPU hooks docker and containerd put into a spec for `--gpus`, given straight to gpu-youki
//! (`run`) on the fake 2-GPU driver: the request they carry is honoured, they never run (their
//! programs here record a run), every other hook still runs, and config.json stays as it was.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use integration::bundle::unique;
use integration::gpu::{fixtures, gpu_bundle, GpuRuntime};
use serde_json::{json, Value};

/// Writes an executable at `path` that records its run in `mark` and fails, as a stand-in for
/// a toolkit program.
fn recording_program(path: &Path, mark: &Path) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(
        path,
        format!("#!/bin/sh\ntouch '{}'\nexit 1\n", mark.display()),
    )
    .unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

/// `ctr run --gpus`'s hook with `cli_args` after the CLI's path.
fn ctr_hook(cli: &Path, cli_args: &[&str]) -> Value {
    let mut args = vec![
        json!("containerd"),
        json!("oci-hook"),
        json!("--"),
        json!(cli),
    ];
    args.extend(cli_args.iter().map(|a| json!(a)));
    json!({ "path": "/usr/bin/containerd", "args": args })
}

#[test]
fn engine_gpu_hooks_are_honoured_but_never_run_and_other_hooks_run() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let script = "ls /dev | grep '^nvidia[0-9]' | tr '\\n' ' '; true";
    let configure = |device: &str| {
        vec![
            "--load-kmods".to_string(),
            "configure".into(),
            format!("--device={device}"),
            "--utility".into(),
            "--pid={{pid}}".into(),
            "{{rootfs}}".into(),
        ]
    };
    // (env, which hook, expected GPU nodes)
    let cases: [(&[&str], &str, &str); 4] = [
        (&["NVIDIA_VISIBLE_DEVICES=1"], "docker", "nvidia1 "),
        // `--gpus` without a request: the hook goes all the same, and nothing else happens.
        (&[], "docker", ""),
        (&[], "ctr", "nvidia1 "),
        // The hook's device list takes the place of the environment's.
        (&["NVIDIA_VISIBLE_DEVICES=all"], "ctr", "nvidia1 "),
    ];
    for (env, engine, expected) in cases {
        let mut bundle = gpu_bundle(&rt, script, env).unwrap();
        let toolkit_ran = bundle.dir.join("toolkit-ran");
        let user_ran = bundle.dir.join("user-ran");
        let bin = bundle.dir.join("toolkit-bin");
        let hook_program = bin.join("nvidia-container-runtime-hook");
        let cli = bin.join("nvidia-container-cli");
        recording_program(&hook_program, &toolkit_ran);
        recording_program(&cli, &toolkit_ran);
        let gpu_hook = match engine {
            "docker" => {
                json!({ "path": hook_program, "args": ["nvidia-container-runtime-hook", "prestart"] })
            }
            _ => {
                let args = configure("1");
                ctr_hook(&cli, &args.iter().map(String::as_str).collect::<Vec<_>>())
            }
        };
        let user_hook = json!({
            "path": "/bin/sh",
            "args": ["sh", "-c", format!("echo x >> '{}'", user_ran.display())],
        });
        bundle.config["hooks"] = json!({
            "prestart": [user_hook, gpu_hook],
            "createRuntime": [user_hook],
        });
        if engine == "docker" {
            // Any list: the toolkit's runtime hook also has poststart/poststop forms.
            bundle.config["hooks"]["poststop"] = json!([gpu_hook]);
        }
        bundle.save().unwrap();
        let config_before = fs::read(bundle.dir.join("config.json")).unwrap();

        let output = rt.run(&["run", "-b", bundle.path(), &unique("hooks")]);
        let what = format!("{engine} hook with {env:?}");
        assert!(
            output.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&output.stdout), expected, "{what}");
        assert!(!toolkit_ran.exists(), "{what}: the toolkit's hook ran");
        assert_eq!(
            fs::read_to_string(&user_ran).unwrap_or_default(),
            "x\nx\n",
            "{what}: the user's prestart and createRuntime hooks did not both run"
        );
        assert_eq!(
            fs::read(bundle.dir.join("config.json")).unwrap(),
            config_before,
            "{what}: config.json was modified"
        );
        rt.assert_clean(&bundle);
    }
}

#[test]
fn unknown_nvidia_container_cli_flags_fail_the_create_naming_the_flag() {
    let f = fixtures();
    let rt = GpuRuntime::new(&f.fake2);
    let mut bundle = gpu_bundle(&rt, "true", &[]).unwrap();
    let cli = bundle.dir.join("nvidia-container-cli");
    recording_program(&cli, &bundle.dir.join("toolkit-ran"));
    bundle.config["hooks"] = json!({ "prestart": [ctr_hook(
        &cli,
        &["configure", "--device=0", "--compute", "--no-cgroups", "--pid={{pid}}", "{{rootfs}}"],
    )] });
    bundle.save().unwrap();
    let output = rt.run(&["run", "-b", bundle.path(), &unique("badflag")]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "ran with --no-cgroups");
    assert!(
        stderr.contains("unsupported flag \"--no-cgroups\"") && stderr.trim().lines().count() == 1,
        "{stderr}"
    );
    rt.assert_clean(&bundle);
}
