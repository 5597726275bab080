//! Every runc-style command of gpu-youki against real busybox containers, with exit codes,
//! signals, terminals and cleanup checked from outside.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::bundle::{unique, Bundle, Runtime};
use serde_json::{json, Value};

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Polls until `done` holds, for at most five seconds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn version_names_runtime_libcontainer_and_spec() {
    let rt = Runtime::new();
    let out = rt.ok(&["--version"]);
    assert!(out.starts_with("gpu-youki version "), "{out}");
    assert!(out.contains("\nlibcontainer: 0.7."), "{out}");
    assert!(out.contains("\nspec: 1."), "{out}");
}

#[test]
fn run_returns_the_workload_exit_code_and_output() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(
        &rt,
        &["sh", "-c", "echo out-$((6*7)); echo err >&2; exit 3"],
    )
    .unwrap();
    let id = unique("run");
    let output = rt.run(&["run", "-b", bundle.path(), &id]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "out-42\n");
    assert!(stderr(&output).contains("err"));
    bundle.assert_clean(&rt);
}

#[test]
fn run_of_an_instantly_exiting_workload_never_hangs() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["true"]).unwrap();
    for n in 0..40 {
        let id = unique("true");
        let mut child = rt
            .command(&["run", "-b", bundle.path(), &id])
            .spawn()
            .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                panic!("run {n} of `true` hung");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        assert!(status.success(), "run {n}: {status}");
    }
    bundle.assert_clean(&rt);
}

#[test]
fn foreground_run_forwards_signals_and_reports_signal_deaths() {
    let rt = Runtime::new();
    let trap = "trap 'exit 9' USR1; while true; do sleep 0.05; done";
    let bundle = Bundle::busybox(&rt, &["sh", "-c", trap]).unwrap();
    // A signal sent to gpu-youki reaches the workload, whose exit code becomes gpu-youki's.
    let id = unique("fwd");
    let mut child = rt
        .command(&["run", "-b", bundle.path(), &id])
        .spawn()
        .unwrap();
    eventually("the container to run", || {
        rt.polled_status(&id).as_deref() == Some("running")
    });
    nix_kill(child.id() as i32, libc::SIGUSR1);
    assert_eq!(child.wait().unwrap().code(), Some(9));

    // A workload killed by signal N makes gpu-youki exit with 128+N.
    let id = unique("sig");
    let mut child = rt
        .command(&["run", "-b", bundle.path(), &id])
        .spawn()
        .unwrap();
    eventually("the container to run", || {
        rt.polled_status(&id).as_deref() == Some("running")
    });
    rt.ok(&["kill", &id, "KILL"]);
    assert_eq!(child.wait().unwrap().code(), Some(137));
    bundle.assert_clean(&rt);
}

fn nix_kill(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a pid we spawned.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

#[test]
fn create_start_state_kill_delete_lifecycle() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(
        &rt,
        &[
            "sh",
            "-c",
            "trap 'exit 0' TERM; while true; do sleep 0.05; done",
        ],
    )
    .unwrap();
    let id = unique("life");
    let pid_file = bundle.dir.join("init.pid");
    rt.ok(&[
        "create",
        "--bundle",
        bundle.path(),
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
    ]);
    let state: Value = serde_json::from_str(&rt.ok(&["state", &id])).unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], json!(id));
    assert_eq!(state["bundle"], json!(bundle.path()));
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(state["pid"], json!(pid));

    // A created container cannot be paused or exec'd into, and start works once.
    assert!(!rt.run(&["exec", &id, "true"]).status.success());
    rt.ok(&["start", &id]);
    assert_eq!(rt.status(&id), "running");
    let again = rt.run(&["start", &id]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("running"), "{}", stderr(&again));

    // delete without --force refuses a running container.
    let refused = rt.run(&["delete", &id]);
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("running"), "{}", stderr(&refused));

    rt.ok(&["kill", &id, "TERM"]);
    eventually("the container to stop", || rt.status(&id) == "stopped");
    let kill_stopped = rt.run(&["kill", &id, "KILL"]);
    assert!(!kill_stopped.status.success());
    assert!(stderr(&kill_stopped).contains("not running"));
    rt.ok(&["delete", &id]);
    let gone = rt.run(&["state", &id]);
    assert!(!gone.status.success());
    assert_eq!(
        stderr(&gone).trim(),
        format!("gpu-youki: container {id} does not exist")
    );
    // The shim deletes twice: the second --force delete of a gone container succeeds.
    rt.ok(&["delete", "--force", &id]);
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
}

#[test]
fn kill_takes_signal_numbers_names_and_all() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["sleep", "1000"]).unwrap();
    let id = unique("kill");
    rt.ok(&["run", "--detach", "-b", bundle.path(), &id]);
    assert_eq!(rt.status(&id), "running");
    let bad = rt.run(&["kill", &id, "NOSUCHSIG"]);
    assert!(
        stderr(&bad).contains("invalid signal \"NOSUCHSIG\""),
        "{}",
        stderr(&bad)
    );
    // A second process, then kill --all with a number takes both down.
    rt.ok(&["exec", "--detach", &id, "sleep", "1000"]);
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids.len(), 2, "{pids:?}");
    rt.ok(&["kill", "--all", &id, "9"]);
    eventually("all processes to die", || {
        pids.iter()
            .all(|p| !std::path::Path::new(&format!("/proc/{p}")).exists() || zombie(*p))
    });
    rt.ok(&["delete", &id]);
    bundle.assert_clean(&rt);
}

fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(true)
}

#[test]
fn pause_and_resume_freeze_the_container() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["sleep", "1000"]).unwrap();
    let id = unique("pause");
    rt.ok(&["run", "-d", "-b", bundle.path(), &id]);
    rt.ok(&["pause", &id]);
    assert_eq!(rt.status(&id), "paused");
    let freezer = format!("/sys/fs/cgroup/freezer{}/freezer.state", bundle.cgroup);
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "FROZEN");
    assert!(
        !rt.run(&["pause", &id]).status.success(),
        "pausing twice must fail"
    );
    rt.ok(&["resume", &id]);
    assert_eq!(rt.status(&id), "running");
    assert_eq!(std::fs::read_to_string(&freezer).unwrap().trim(), "THAWED");
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
}

#[test]
fn exec_inline_process_file_detach_and_pid_file() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["sleep", "1000"]).unwrap();
    let id = unique("exec");
    rt.ok(&["run", "-d", "-b", bundle.path(), &id]);

    let inline = rt.run(&[
        "exec",
        "-e",
        "GREETING=hi",
        &id,
        "sh",
        "-c",
        "echo $GREETING; exit 5",
    ]);
    assert_eq!(inline.status.code(), Some(5));
    assert_eq!(String::from_utf8_lossy(&inline.stdout), "hi\n");

    let process = bundle.dir.join("process.json");
    let mut spec_process = bundle.config["process"].clone();
    spec_process["args"] = json!(["sh", "-c", "echo from-file $(pwd); exit 6"]);
    spec_process["cwd"] = json!("/tmp");
    std::fs::write(&process, spec_process.to_string()).unwrap();
    let from_file = rt.run(&["exec", "--process", process.to_str().unwrap(), &id]);
    assert_eq!(from_file.status.code(), Some(6), "{}", stderr(&from_file));
    assert_eq!(
        String::from_utf8_lossy(&from_file.stdout),
        "from-file /tmp\n"
    );

    let pid_file = bundle.dir.join("exec.pid");
    rt.ok(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        &id,
        "sleep",
        "999",
    ]);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap();
    assert_eq!(cmdline, "sleep\0999\0");

    let missing = rt.run(&["exec", &id, "/nonexistent"]);
    assert!(!missing.status.success());
    assert!(
        stderr(&missing)
            .contains("exec: \"/nonexistent\": stat /nonexistent: no such file or directory"),
        "{}",
        stderr(&missing)
    );
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
}

/// Runs `command` under `script` so that gpu-youki's stdin is a terminal.
fn in_a_terminal(command: &str) -> std::process::Output {
    Command::new("script")
        .args(["-qec", command, "/dev/null"])
        .stdin(Stdio::piped())
        .output()
        .expect("script (bsdutils) is needed for terminal tests")
}

#[test]
fn run_and_exec_with_a_terminal() {
    let rt = Runtime::new();
    let mut bundle = Bundle::busybox(
        &rt,
        &[
            "sh",
            "-c",
            "test -t 0 && test -t 1 && echo TTY-$(stty size | tr ' ' x); exit 4",
        ],
    )
    .unwrap();
    bundle.config["process"]["terminal"] = json!(true);
    bundle.save().unwrap();
    let id = unique("tty");
    let line = format!(
        "stty rows 33 cols 91; {} --root {} run -b {} {id}; echo rc=$?",
        rt.bin.display(),
        rt.root.display(),
        bundle.path()
    );
    let output = in_a_terminal(&line);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("TTY-33x91"), "{text}");
    assert!(text.contains("rc=4"), "{text}");

    let mut long = Bundle::busybox(&rt, &["sleep", "1000"]).unwrap();
    long.config["process"]["terminal"] = json!(false);
    long.save().unwrap();
    let id = unique("ttyexec");
    rt.ok(&["run", "-d", "-b", long.path(), &id]);
    let line = format!(
        "{} --root {} exec -t {id} sh -c 'test -t 0 && echo EXEC-TTY; exit 2'; echo rc=$?",
        rt.bin.display(),
        rt.root.display()
    );
    let text = String::from_utf8_lossy(&in_a_terminal(&line).stdout).into_owned();
    assert!(text.contains("EXEC-TTY"), "{text}");
    assert!(text.contains("rc=2"), "{text}");
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
    long.assert_clean(&rt);
}

#[test]
fn ps_lists_container_processes_as_json_and_table() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["sleep", "1234"]).unwrap();
    let id = unique("ps");
    let pid_file = bundle.dir.join("pid");
    rt.ok(&[
        "run",
        "-d",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "-b",
        bundle.path(),
        &id,
    ]);
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pids: Vec<i32> = serde_json::from_str(&rt.ok(&["ps", "--format", "json", &id])).unwrap();
    assert_eq!(pids, vec![pid]);
    let table = rt.ok(&["ps", &id]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().contains("PID"));
    let rows: Vec<&str> = lines.collect();
    assert_eq!(rows.len(), 1, "{table}");
    assert!(rows[0].contains("sleep 1234"), "{table}");
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
}

#[test]
fn update_applies_limits_and_keeps_device_access() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["sleep", "1000"]).unwrap();
    let id = unique("update");
    rt.ok(&["run", "-d", "-b", bundle.path(), &id]);
    // CRI's payload: a memory limit and a deny-all device rule.
    let payload = json!({
        "memory": {"limit": 268435456u64},
        "cpu": {"shares": 512},
        "devices": [{"allow": false, "access": "rwm"}]
    });
    let mut child = rt
        .command(&["update", "--resources", "-", &id])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(payload.to_string().as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let memory = format!(
        "/sys/fs/cgroup/memory{}/memory.limit_in_bytes",
        bundle.cgroup
    );
    assert_eq!(std::fs::read_to_string(memory).unwrap().trim(), "268435456");
    let shares = format!("/sys/fs/cgroup/cpu{}/cpu.shares", bundle.cgroup);
    assert_eq!(std::fs::read_to_string(shares).unwrap().trim(), "512");
    // The container still reaches its devices.
    let devnull = rt.run(&[
        "exec",
        &id,
        "sh",
        "-c",
        "echo x > /dev/null && head -c1 /dev/zero | wc -c",
    ]);
    assert!(devnull.status.success(), "{}", stderr(&devnull));
    assert_eq!(String::from_utf8_lossy(&devnull.stdout).trim(), "1");

    rt.ok(&["update", "--pids-limit", "77", &id]);
    let pids = format!("/sys/fs/cgroup/pids{}/pids.max", bundle.cgroup);
    assert_eq!(std::fs::read_to_string(pids).unwrap().trim(), "77");
    let bad = rt.run(&[
        "update",
        "--resources",
        bundle.dir.join("missing.json").to_str().unwrap(),
        &id,
    ]);
    assert!(stderr(&bad).contains("missing.json"), "{}", stderr(&bad));
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
}

#[test]
fn features_spec_list_and_events() {
    let rt = Runtime::new();
    let features: Value = serde_json::from_str(&rt.ok(&["features"])).unwrap();
    assert_eq!(features["ociVersionMin"], "1.0.0");
    assert!(features["hooks"]
        .as_array()
        .unwrap()
        .contains(&json!("createContainer")));
    assert!(features["linux"]["capabilities"]
        .as_array()
        .unwrap()
        .contains(&json!("CAP_SYS_ADMIN")));

    let bundle = Bundle::busybox(&rt, &["sleep", "1000"]).unwrap();
    let again = rt.run(&["spec", "--bundle", bundle.path()]);
    assert!(
        stderr(&again).contains("already exists"),
        "{}",
        stderr(&again)
    );

    let id = unique("list");
    rt.ok(&["run", "-d", "-b", bundle.path(), &id]);
    let table = rt.ok(&["list"]);
    assert!(table.starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("running"), "{table}");
    assert_eq!(rt.ok(&["list", "-q"]).trim(), id);
    let listed: Value = serde_json::from_str(&rt.ok(&["list", "--format", "json"])).unwrap();
    assert_eq!(listed[0]["id"], json!(id));
    assert_eq!(listed[0]["status"], "running");

    let events: Value = serde_json::from_str(&rt.ok(&["events", "--stats", &id])).unwrap();
    assert_eq!(events["type"], "stats", "{events}");
    assert!(events["data"]["memory"].is_object(), "{events}");
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
}

#[test]
fn json_log_carries_the_real_cause_for_engines() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["/nonexistent"]).unwrap();
    let log = bundle.dir.join("log.json");
    let id = unique("log");
    let output = rt.run(&[
        "--log",
        log.to_str().unwrap(),
        "--log-format",
        "json",
        "create",
        "--bundle",
        bundle.path(),
        &id,
    ]);
    assert!(!output.status.success());
    let text = std::fs::read_to_string(&log).unwrap();
    let last: Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["level"], "error");
    assert!(last["time"].is_string());
    let msg = last["msg"].as_str().unwrap();
    assert!(
        msg.contains("exec: \"/nonexistent\": stat /nonexistent: no such file or directory"),
        "{msg}"
    );
    for line in text.lines() {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(
            value["msg"].is_string() && value["level"].is_string(),
            "{line}"
        );
    }
    let bad_format = rt.run(&["--log-format", "yaml", "list"]);
    assert!(stderr(&bad_format).contains("invalid --log-format \"yaml\""));
    bundle.assert_clean(&rt);
}

#[test]
fn bad_input_gets_one_line_errors_and_leaves_nothing() {
    let rt = Runtime::new();
    let mut bundle = Bundle::busybox(&rt, &["true"]).unwrap();
    let one_line = |args: &[&str], expected: &str| {
        let output = rt.run(args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let err = stderr(&output);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(expected), "{args:?}: {err}");
    };
    one_line(
        &["create", "-b", "/nonexistent-bundle", "x1"],
        "bundle /nonexistent-bundle does not exist",
    );
    one_line(
        &["start", "no-such-id"],
        "container no-such-id does not exist",
    );
    one_line(
        &["kill", "no-such-id"],
        "container no-such-id does not exist",
    );
    one_line(
        &["create", "-b", bundle.path(), "bad/id"],
        "invalid container id \"bad/id\"",
    );

    one_line(
        &["--systemd-cgroup", "create", "-b", bundle.path(), "x5"],
        "systemd is not running",
    );
    bundle.config["process"]["args"] = json!("sh");
    bundle.save().unwrap();
    one_line(
        &["create", "-b", bundle.path(), "x2"],
        "config.json at process.args: invalid type",
    );
    bundle.config["process"]["args"] = json!(["true"]);
    bundle.config["ociVersion"] = json!("2.0.0");
    bundle.save().unwrap();
    one_line(&["create", "-b", bundle.path(), "x3"], "at ociVersion");
    std::fs::write(bundle.dir.join("config.json"), "{not json").unwrap();
    one_line(&["create", "-b", bundle.path(), "x4"], "config.json");

    // A failure inside libcontainer's create (a mount that cannot be made) cleans up too.
    bundle.config["ociVersion"] = json!("1.0.2");
    bundle.config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(json!({"destination": "/mnt", "type": "bind", "source": "/does/not/exist", "options": ["bind"]}));
    bundle.save().unwrap();
    let failed = rt.run(&["create", "-b", bundle.path(), "x6"]);
    assert!(!failed.status.success());
    bundle.assert_clean(&rt);
}

#[test]
fn concurrent_creates_of_one_id_exactly_one_wins() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["sleep", "1000"]).unwrap();
    let id = unique("race");
    let results: Vec<_> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..6)
            .map(|_| scope.spawn(|| rt.run(&["create", "-b", bundle.path(), &id])))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let winners = results.iter().filter(|o| o.status.success()).count();
    assert_eq!(
        winners,
        1,
        "{:?}",
        results.iter().map(stderr).collect::<Vec<_>>()
    );
    for loser in results.iter().filter(|o| !o.status.success()) {
        assert!(
            stderr(loser).contains("already exists"),
            "{}",
            stderr(loser)
        );
    }
    assert_eq!(rt.status(&id), "created");
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
}

#[test]
fn no_pivot_preserve_fds_and_newer_spec_versions() {
    let rt = Runtime::new();
    let mut bundle = Bundle::busybox(&rt, &["sh", "-c", "cat <&3"]).unwrap();
    bundle.config["ociVersion"] = json!("1.3.0");
    bundle.save().unwrap();
    let secret = bundle.dir.join("fd3.txt");
    std::fs::write(&secret, "through-fd-3").unwrap();
    let file = std::fs::File::open(&secret).unwrap();
    let mut command = rt.command(&[
        "run",
        "--no-pivot",
        "--preserve-fds",
        "1",
        "-b",
        bundle.path(),
        &unique("fds"),
    ]);
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw = file.as_raw_fd();
    // SAFETY: dup2 in the child before exec, onto fd 3, is async-signal-safe.
    unsafe {
        command.pre_exec(move || {
            // dup first: dup2 onto the same number would keep the close-on-exec flag.
            if libc::dup2(libc::dup(raw), 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let output = command.output().unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(String::from_utf8_lossy(&output.stdout), "through-fd-3");
    bundle.assert_clean(&rt);
}

#[test]
fn container_entering_commands_run_from_a_sealed_copy() {
    let rt = Runtime::new();
    let bundle = Bundle::busybox(&rt, &["sleep", "1000"]).unwrap();
    let id = unique("seal");
    let mut child = rt
        .command(&["run", "-b", bundle.path(), &id])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The foreground runtime process runs from a read-only overlay of its directory, not from
    // the host binary: another file (its own device) that cannot be opened for writing.
    eventually("the container to run", || {
        rt.polled_status(&id).as_deref() == Some("running")
    });
    let exe = format!("/proc/{}/exe", child.id());
    let (running, host) = (
        std::fs::metadata(&exe).unwrap(),
        std::fs::metadata(&rt.bin).unwrap(),
    );
    assert_ne!(
        (running.dev(), running.ino()),
        (host.dev(), host.ino()),
        "the runtime runs from the host binary itself"
    );
    let opened = std::fs::OpenOptions::new().write(true).open(&exe);
    assert_eq!(
        opened.map(|_| ()).unwrap_err().raw_os_error(),
        Some(libc::EROFS),
        "the sealed binary must not be writable"
    );
    rt.ok(&["kill", &id, "KILL"]);
    child.wait().unwrap();

    // Sealing copies nothing, and commands that never enter a container do not seal.
    let trace = |args: &[&str]| {
        let traced = Command::new("strace")
            .args(["-f", "-e", "trace=memfd_create,fsopen,execveat", "-o"])
            .arg("/dev/stdout")
            .arg(&rt.bin)
            .args(["--root", rt.root.to_str().unwrap()])
            .args(args)
            .output()
            .expect("strace is needed for this test");
        String::from_utf8_lossy(&traced.stdout).into_owned()
    };
    let text = trace(&["list"]);
    assert!(
        !text.contains("fsopen(") && !text.contains("memfd_create("),
        "{text}"
    );
    let text = trace(&["run", "-b", "/nonexistent", "x"]);
    assert!(
        text.contains("fsopen(\"overlay\"") && text.contains("execveat("),
        "{text}"
    );
    assert!(!text.contains("memfd_create("), "{text}");
    rt.ok(&["delete", "--force", &id]);
    bundle.assert_clean(&rt);
}
