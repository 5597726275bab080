#!/usr/bin/python3
"""The container start benchmark (scripts/bench prepares its inputs and runs this as root).

Every case starts a container whose process is `true`, the way containerd does it: `create`,
`start`, wait for the container's init to exit (this process is a child subreaper, as the shim
is, so it reaps the init itself), `delete`; and the same with one `run`. Cases are interleaved
round by round, each round in a new random order (seeded, so a run can be repeated): the
machine's drift hits all of them alike, and no case always follows the same neighbour (whose
teardown, finishing in the kernel after it returns, would slow it every time); the first rounds
are warm-up and are not counted. Also measured: `ctr run --rm` through a private
containerd; in separate interleaved phases, so that they never slow the timed cycles, the
peak RSS of `create` (under GNU time) and gpu-youki's own tracing spans (`--debug`); and a floor: the GPU plan's device nodes and bind mounts made with bare
syscalls by scripts/bench.d/floor.c.

Writes OUT/results.json, OUT/samples.csv, OUT/spans.csv, OUT/chart.svg and OUT/report.txt
(the printed table). Everything it creates (containers, cgroups, mounts, containerd) is removed
at the end, on Ctrl-C too; what an interrupted earlier run left is removed before starting.
"""

import argparse
import ctypes
import datetime
import fcntl
import html
import json
import math
import os
import platform
import random
import re
import resource
import shutil
import select
import signal
import statistics
import subprocess
import sys
import time


def use_scratch(name):
    """Names the scratch area (state, cgroup parent, containerd, lock) that everything here
    makes, finds and cleans up: `gpu-youki-bench`, or scripts/load's own, so that neither
    ever takes the other's containers for leftovers."""
    global STATE, CGROUP_PARENT, CONTAINERD_DIR, NAMESPACE, SHIM_RUNTIME_ROOT, LOCK
    STATE = f"/run/{name}"
    CGROUP_PARENT = name
    CONTAINERD_DIR = f"/tmp/{name}-containerd"
    # ctr's namespace; the shim puts its containers in the cgroup /NAMESPACE/ID, so they land
    # under the same parent as the direct cases', and keeps their runtime state here:
    NAMESPACE = CGROUP_PARENT
    SHIM_RUNTIME_ROOT = f"/run/containerd/runc/{NAMESPACE}"
    LOCK = f"/run/{name}.lock"


use_scratch("gpu-youki-bench")
GPU_ENV = "NVIDIA_VISIBLE_DEVICES=all"
CAPS = {"cu": "compute,utility", "all": "all"}
GPU_COUNTS = (1, 8, 64)
PR_SET_CHILD_SUBREAPER = 36
# How long a `run` of `true` may take before it counts as hung (seconds).
RUN_TIMEOUT = 10

# The child being waited for, so that an interrupted wait can still be finished at cleanup.
CURRENT_CHILD = None


def shuffled(items, round_number):
    """`items` in round `round_number`'s order: a permutation seeded by the round, the same in
    every run, so that no case always follows the same neighbour."""
    order = list(items)
    random.Random(round_number).shuffle(order)
    return order


def log(msg):
    print(f"bench: {msg}", flush=True)


class BenchError(Exception):
    """A failure that ends the benchmark with a one-line message."""


# --- processes -----------------------------------------------------------------------------


def spawn(argv, env=None, out="/dev/null"):
    """Starts argv in its own process group (so Ctrl-C reaches only this script, which then
    cleans up in order), stdin from /dev/null, stdout and stderr to `out`."""
    global CURRENT_CHILD
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    pid = os.posix_spawnp(argv[0], argv, env or os.environ, file_actions=actions, setpgroup=0)
    CURRENT_CHILD = pid
    return pid


class Hung(BenchError):
    """A child that did not exit in time; it was killed (with its process group)."""


def wait(pid, timeout=60):
    """The exit code (or -signal) of child pid; Hung if it runs longer than timeout seconds
    (a pidfd's poll: no sleep granularity added to the measured time)."""
    global CURRENT_CHILD
    fd = os.pidfd_open(pid)
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        exited = poller.poll(timeout * 1000)
    finally:
        os.close(fd)
    if not exited:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            kill_pid(pid)
        os.waitpid(pid, 0)
        CURRENT_CHILD = None
        raise Hung(f"process {pid} did not exit within {timeout}s; killed")
    _, status = os.waitpid(pid, 0)
    CURRENT_CHILD = None
    return os.waitstatus_to_exitcode(status)


def children_cpu_ns():
    """User + system CPU time of this script's reaped descendants so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return int((usage.ru_utime + usage.ru_stime) * 1e9)


def run_timed(argv, env=None, out="/dev/null", timeout=60):
    """Runs argv to completion: (nanoseconds, exit code)."""
    start = time.perf_counter_ns()
    code = wait(spawn(argv, env, out), timeout)
    return time.perf_counter_ns() - start, code


def check(code, argv, out):
    if code != 0:
        text = open(out, errors="replace").read().strip() if os.path.exists(out) else ""
        raise BenchError(f"`{' '.join(argv)}` exited with {code}: {text[-2000:]}")


def output(argv, env=None):
    result = subprocess.run(argv, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result.stdout


def wait_exit(pid):
    """Waits for a container's init, reparented to this subreaper when the runtime's create
    exited."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        raise BenchError(f"container init {pid} is not a child of this subreaper: the runtime "
                         "left a process between them")


def reap_orphans():
    """Reaps processes reparented to this subreaper (a runtime's helpers); call only when no
    container init is being waited for."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


# --- cleanup -------------------------------------------------------------------------------


def mountpoints():
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), p) for p in points]


def cgroup_dirs():
    """Every cgroup directory under CGROUP_PARENT, deepest first, in every hierarchy."""
    found = []
    for hierarchy in sorted(os.listdir("/sys/fs/cgroup")):
        top = os.path.join("/sys/fs/cgroup", hierarchy, CGROUP_PARENT)
        if not os.path.isdir(top):
            continue
        for dirpath, _, _ in os.walk(top):
            found.append(dirpath)
    return sorted(found, key=lambda d: -d.count("/"))


def pids_in(dirs):
    pids = set()
    for d in dirs:
        try:
            pids.update(int(p) for p in open(os.path.join(d, "cgroup.procs")).read().split())
        except OSError:
            pass
    return pids


def kill_pid(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def containerd_processes():
    """containerd and its shims: their command lines name CONTAINERD_DIR."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cmdline = open(f"/proc/{entry}/cmdline", "rb").read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if CONTAINERD_DIR in cmdline:
            found.append(int(entry))
    return found


def leftovers():
    """What an earlier (interrupted) run left, as lines."""
    found = []
    if os.path.isdir(STATE):
        found += [f"state {os.path.join(STATE, e)}" for e in sorted(os.listdir(STATE))]
    for path in (CONTAINERD_DIR, SHIM_RUNTIME_ROOT):
        if os.path.exists(path):
            found.append(f"directory {path}")
    found += [f"cgroup {d}" for d in cgroup_dirs()]
    found += [f"mount {m}" for m in mountpoints() if m.startswith((STATE, CONTAINERD_DIR))]
    found += [f"process {p}" for p in containerd_processes()]
    return found


def cleanup(runtimes):
    """Removes every container, process, mount, cgroup and directory this benchmark makes,
    whatever state it was left in. Best effort, then checks; returns what could not be
    removed."""
    global CURRENT_CHILD
    if CURRENT_CHILD is not None:
        # An interrupted runtime command: let it finish (it holds locks), then reap it.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if os.waitpid(CURRENT_CHILD, os.WNOHANG)[0]:
                break
            time.sleep(0.05)
        else:
            kill_pid(CURRENT_CHILD)
            os.waitpid(CURRENT_CHILD, 0)
        CURRENT_CHILD = None
    for pid in containerd_processes():
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while containerd_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in containerd_processes():
        kill_pid(pid)
    # Containers through their runtime first: that removes their mounts and state properly.
    for name, binary in runtimes.items():
        root = os.path.join(STATE, "roots", name)
        if not os.path.isdir(root) or not binary or not os.path.exists(binary):
            continue
        for cid in os.listdir(root):
            if os.path.isdir(os.path.join(root, cid)) and not cid.startswith("."):
                subprocess.run([binary, "--root", root, "delete", "--force", cid],
                               capture_output=True)
    dirs = cgroup_dirs()
    for d in dirs:
        for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
            try:
                open(os.path.join(d, name), "w").write(value)
            except OSError:
                pass
    for pid in pids_in(dirs):
        kill_pid(pid)
    reap_orphans()
    for _ in range(10):
        inside = [m for m in mountpoints() if m.startswith((STATE, CONTAINERD_DIR))]
        if not inside:
            break
        for m in sorted(inside, key=len, reverse=True):
            subprocess.run(["umount", "-l", m], capture_output=True)
    for d in cgroup_dirs():
        deadline = time.monotonic() + 3
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
    if not any(m.startswith((STATE, CONTAINERD_DIR)) for m in mountpoints()):
        for path in (STATE, CONTAINERD_DIR, SHIM_RUNTIME_ROOT):
            shutil.rmtree(path, ignore_errors=True)
    return leftovers()


def take_scratch(runtimes):
    """Locks the scratch area (see use_scratch), so that one run at a time uses it, and
    removes what an interrupted earlier run left there. Returns the lock, held while it stays
    open."""
    lock = open(LOCK, "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BenchError(f"another run is using {STATE} ({LOCK} is locked)")
    left = leftovers()
    if left:
        log("an earlier run left these; removing them:\n  " + "\n  ".join(left))
        left = cleanup(runtimes)
        if left:
            raise BenchError("cannot remove what an earlier run left:\n  " + "\n  ".join(left))
    return lock


def become_subreaper():
    """Containers' inits are reparented to this process when the runtime's create exits, as
    they are to containerd's shim: waiting for them is how the shim learns of an exit."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise BenchError("prctl(PR_SET_CHILD_SUBREAPER) failed")


def interrupt_on_signals():
    """SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, so that cleanup runs; also when
    started with SIGINT ignored (a background job of a script)."""

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)


# --- bundles -------------------------------------------------------------------------------


def make_rootfs(path):
    """A busybox rootfs shaped like a Debian image (/etc/debian_version, the multiarch library
    directory, an /etc to write the ld.so.cache into)."""
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "usr/lib/x86_64-linux-gnu"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    shutil.copy2("/bin/busybox", os.path.join(path, "bin/busybox"))
    for tool in ("sh", "true", "ls", "cat"):
        os.symlink("busybox", os.path.join(path, "bin", tool))
    files = {
        "etc/debian_version": "12.0\n",
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
        "etc/group": "root:x:0:\n",
    }
    for name, text in files.items():
        with open(os.path.join(path, name), "w") as f:
            f.write(text)


def make_bundle(path, name, env=()):
    """BUNDLE/rootfs + runc's default config.json running `true`, writable rootfs (as
    containerd's snapshots are) and a cgroup under CGROUP_PARENT."""
    make_rootfs(os.path.join(path, "rootfs"))
    subprocess.run(["runc", "spec", "--bundle", path], check=True)
    config_path = os.path.join(path, "config.json")
    config = json.load(open(config_path))
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    config["process"]["env"] += list(env)
    config["root"]["readonly"] = False
    config["linux"]["cgroupsPath"] = f"/{CGROUP_PARENT}/{name}"
    json.dump(config, open(config_path, "w"), indent=2)
    return config


def gpu_plan(gpu_youki, bundle, config_toml):
    env = dict(os.environ, GPU_YOUKI_CONFIG=config_toml)
    return json.loads(output([gpu_youki, "gpu", "plan", "--format", "json", "--bundle", bundle],
                             env))


def add_plan_by_hand(config_path, plan):
    """What a runc without any hook would need for the same GPUs: the plan's device nodes
    (linux.devices + device cgroup rules) and its mounts as bind mounts (ro, nosuid, nodev;
    writable ones rw). Its ld.so.cache, links and /proc/driver/nvidia view are left out: runc
    cannot write files into the rootfs and refuses mounts under /proc."""
    config = json.load(open(config_path))
    linux = config["linux"]
    for dev in plan["devices"]:
        linux.setdefault("devices", []).append({
            "path": dev["path"], "type": "c", "major": dev["major"], "minor": dev["minor"],
            "fileMode": 0o666, "uid": 0, "gid": 0,
        })
        linux["resources"]["devices"].append({
            "allow": True, "type": "c", "major": dev["major"], "minor": dev["minor"],
            "access": "rwm",
        })
    for mount in plan["mounts"]:
        options = ["rbind", "nosuid", "nodev"] + ([] if mount["writable"] else ["ro"])
        config["mounts"].append({"destination": mount["destination"], "type": "bind",
                                 "source": mount["source"], "options": options})
    json.dump(config, open(config_path, "w"), indent=2)
    return len(plan["devices"]), len(plan["mounts"])


def floor_ops(plan, path):
    """The floor program's input: the plan's device nodes and bind mounts."""
    with open(path, "w") as f:
        for dev in plan["devices"]:
            node = dev["path"].removeprefix("/dev/").lstrip("/")
            f.write(f"dev {node} {dev['major']} {dev['minor']}\n")
        for mount in plan["mounts"]:
            kind = "dir" if mount["directory"] else "file"
            f.write(f"{kind} {mount['source']} {mount['destination'].lstrip('/')}\n")
    return len(plan["devices"]), len(plan["mounts"])


# --- cases ---------------------------------------------------------------------------------


class Case:
    """One container flavour: a runtime binary with its own --root, a bundle, extra env."""

    def __init__(self, name, label, runtime, binary, bundle, env=None):
        self.name, self.label, self.runtime, self.binary = name, label, runtime, binary
        self.bundle, self.env = bundle, env
        self.root = os.path.join(STATE, "roots", runtime)
        self.out = os.path.join(STATE, "logs", f"{name}.log")
        self.count = 0

    def next_id(self):
        self.count += 1
        self.last_id = f"gyb-{self.name}-{self.count}"
        return self.last_id

    def environ(self):
        return dict(os.environ, **self.env) if self.env else None

    def base(self):
        return [self.binary, "--root", self.root]

    def cycle(self, debug_log=None, rss_file=None):
        """create, start, wait for the init to exit, delete: the parts in ns. With debug_log,
        create logs its spans there (--debug); with rss_file, create runs under GNU time, which
        writes its peak RSS in KiB there (this script's own wait4 rusage cannot tell: a child
        of a Python process starts with the parent's RSS as its high-water mark). "cpu" is the
        CPU time (user + system) of every process of the cycle, the container's included: this
        script is their subreaper and reaps them all before it returns."""
        cid = self.next_id()
        pid_file = os.path.join(STATE, "pid", cid)
        flags = ["--debug", "--log", debug_log, "--log-format", "text"] if debug_log else []
        create = self.base()[:1] + flags + self.base()[1:] + [
            "create", "--bundle", self.bundle, "--pid-file", pid_file, cid]
        if rss_file:
            create = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + create
        env = self.environ()
        cpu0 = children_cpu_ns()
        t0 = time.perf_counter_ns()
        code = wait(spawn(create, env, self.out))
        t1 = time.perf_counter_ns()
        check(code, create, self.out)
        init = int(open(pid_file).read())
        start = self.base() + ["start", cid]
        code = wait(spawn(start, env, self.out))
        t2 = time.perf_counter_ns()
        check(code, start, self.out)
        wait_exit(init)
        t3 = time.perf_counter_ns()
        delete = self.base() + ["delete", cid]
        code = wait(spawn(delete, env, self.out))
        t4 = time.perf_counter_ns()
        check(code, delete, self.out)
        os.unlink(pid_file)
        reap_orphans()
        return {"total": t4 - t0, "create": t1 - t0, "start": t2 - t1, "wait": t3 - t2,
                "delete": t4 - t3, "cpu": children_cpu_ns() - cpu0}

    def run(self):
        """One `run` (foreground: it waits for the container and deletes it). None when it
        hung: youki 0.7.0's run can miss the SIGCHLD of a container that exits before it blocks
        signals, and wait forever; it is killed after RUN_TIMEOUT and its container deleted."""
        cid = self.next_id()
        argv = self.base() + ["run", "--bundle", self.bundle, cid]
        try:
            ns, code = run_timed(argv, self.environ(), self.out, RUN_TIMEOUT)
        except Hung:
            reap_orphans()
            subprocess.run(self.base() + ["delete", "--force", cid], capture_output=True)
            return None
        check(code, argv, self.out)
        reap_orphans()
        if os.path.exists(os.path.join(self.root, cid)):
            raise BenchError(f"{self.runtime} run left container {cid} in {self.root}")
        return {"total": ns}


class CtrCase:
    """`ctr run --rm` of the busybox image through the private containerd's runc v2 shim."""

    def __init__(self, name, label, runtime, binary, ctr, image, env=()):
        self.name, self.label, self.runtime, self.binary = name, label, runtime, binary
        self.ctr, self.image, self.env = ctr, image, list(env)
        self.out = os.path.join(STATE, "logs", f"{name}.log")
        self.count = 0

    def run(self):
        self.count += 1
        self.last_id = f"gyb-{self.name}-{self.count}"
        argv = self.ctr + ["run", "--rm", "--runtime", "io.containerd.runc.v2",
                           "--runc-binary", self.binary]
        for item in self.env:
            argv += ["--env", item]
        argv += [self.image, self.last_id, "true"]
        ns, code = run_timed(argv, None, self.out)
        check(code, argv, self.out)
        reap_orphans()  # shims that exited, reparented here when containerd's helper exited
        return {"total": ns}


class FloorCase:
    """The floor program over a plan's operations: its wall time and its own syscall time."""

    def __init__(self, name, label, binary, ops):
        self.name, self.label, self.binary, self.ops = name, label, binary, ops
        self.scratch = os.path.join(STATE, "floor")
        self.out = os.path.join(STATE, "logs", f"{name}.log")
        os.makedirs(self.scratch, exist_ok=True)

    def run(self):
        argv = [self.binary, self.ops, self.scratch]
        ns, code = run_timed(argv, None, self.out)
        check(code, argv, self.out)
        report = json.loads(open(self.out).read())
        return {"total": ns, "ns_us": report["ns_us"], "work_us": report["work_us"]}


def start_containerd(containerd_env):
    """A private containerd (own root, state, socket; no CRI) whose environment carries
    GPU_YOUKI_CONFIG: its shims inherit it and pass it to the runtime they run."""
    os.makedirs(CONTAINERD_DIR)
    socket = os.path.join(CONTAINERD_DIR, "containerd.sock")
    config = os.path.join(CONTAINERD_DIR, "config.toml")
    with open(config, "w") as f:
        f.write(f"""version = 2
root = "{CONTAINERD_DIR}/root"
state = "{CONTAINERD_DIR}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{socket}"
[ttrpc]
  address = "{socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{CONTAINERD_DIR}/opt"
""")
    logf = open(os.path.join(CONTAINERD_DIR, "containerd.log"), "w")
    proc = subprocess.Popen(["containerd", "--config", config], stdin=subprocess.DEVNULL,
                            stdout=logf, stderr=logf, env=containerd_env, process_group=0)
    ctr = ["ctr", "--address", socket, "--namespace", NAMESPACE]
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise BenchError(f"containerd exited with {proc.returncode}; see "
                             f"{CONTAINERD_DIR}/containerd.log")
        if os.path.exists(socket) and subprocess.run(ctr + ["version"],
                                                     capture_output=True).returncode == 0:
            return proc, ctr
        if time.monotonic() > deadline:
            raise BenchError("containerd did not answer within 20s")
        time.sleep(0.05)


# --- statistics and reports ----------------------------------------------------------------


def percentile(ordered, fraction):
    """The nearest-rank percentile of sorted values: the smallest value with at least that
    fraction of them at or below it."""
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def stats(values):
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p90": percentile(ordered, 0.9),
        "p99": percentile(ordered, 0.99),
        "max": ordered[-1],
    }


def slope(xs, ys):
    """Least-squares slope of ys over xs."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


DURATION = re.compile(r"^([0-9.]+)(ns|µs|us|ms|s)$")
UNIT_NS = {"ns": 1, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
CLOSE = ": close time.busy="


def innermost_span(scope):
    """The last span of a text log line's scope, `outer:inner{field=…}` → `inner`."""
    depth, plain = 0, []
    for ch in scope:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0:
            plain.append(ch)
    return "".join(plain).rsplit(":", 1)[-1]


def parse_spans(path):
    """Span close events of a `gpu-youki --debug --log-format text` log: [(span, busy_ns,
    idle_ns)]. A close line reads `TIME LEVEL outer:span: target: close time.busy=1.2ms
    time.idle=3µs`. (The json format names the span that is current when a span closes, not
    the closing one, so it cannot be used for this.)"""
    spans = []
    for line in open(path, errors="replace"):
        if CLOSE not in line:
            continue
        head, times = line.rstrip("\n").rsplit(CLOSE, 1)
        parts = head.split(None, 2)
        if len(parts) < 3 or ": " not in parts[2]:
            continue
        scope = parts[2].rsplit(": ", 1)[0]
        fields = dict(f.split("=", 1) for f in ("time.busy=" + times).split() if "=" in f)
        values = []
        for key in ("time.busy", "time.idle"):
            m = DURATION.match(fields.get(key, ""))
            values.append(float(m.group(1)) * UNIT_NS[m.group(2)] if m else 0.0)
        spans.append((innermost_span(scope), values[0], values[1]))
    return spans


def ms(ns):
    return ns / 1e6


def svg_chart(rows, title, path):
    """A horizontal bar chart: one bar per case and mode at its median, a line from min to
    p90, and the runc median of the mode as a dashed reference."""
    bar_h, gap, left, width, top = 16, 6, 330, 520, 50
    peak = max(r["stats"]["p90"] for r in rows)
    scale = width / (peak * 1.08)
    height = top + len(rows) * (bar_h + gap) + 60
    colors = {"cycle": "#4C72B0", "run": "#DD8452", "ctr run --rm": "#55A868",
              "floor": "#8172B2"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 90}" '
        f'height="{height}" font-family="sans-serif" font-size="12">',
        f'<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{html.escape(title)}</text>',
        f'<text x="10" y="40" fill="#555">bar: median; line: min to p90; milliseconds '
        f'(lower is better)</text>',
    ]
    # Grid and axis first, so that the bars are drawn over them.
    axis_y = top + len(rows) * (bar_h + gap)
    step = 10 ** math.floor(math.log10(peak)) if peak > 0 else 1
    if peak / step < 3:
        step /= 2
    tick = 0.0
    while tick <= peak * 1.08:
        x = left + tick * scale
        parts.append(f'<line x1="{x:.1f}" y1="{top - 4}" x2="{x:.1f}" y2="{axis_y}" '
                     f'stroke="#ddd"/>')
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle">{tick:g}</text>')
        tick += step
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + width}" y2="{axis_y}" '
                 f'stroke="#333"/>')
    y = top
    for r in rows:
        s = r["stats"]
        color = colors.get(r["mode"], "#999")
        parts.append(f'<text x="{left - 8}" y="{y + bar_h - 4}" text-anchor="end">'
                     f'{html.escape(r["label"])} · {html.escape(r["mode"])}</text>')
        parts.append(f'<rect x="{left}" y="{y}" width="{s["median"] * scale:.1f}" '
                     f'height="{bar_h}" fill="{color}"/>')
        mid = y + bar_h / 2
        parts.append(f'<line x1="{left + s["min"] * scale:.1f}" y1="{mid}" '
                     f'x2="{left + s["p90"] * scale:.1f}" y2="{mid}" stroke="black"/>')
        parts.append(f'<text x="{left + s["p90"] * scale + 4:.1f}" y="{y + bar_h - 4}">'
                     f'{s["median"]:.1f}</text>')
        y += bar_h + gap
    parts.append(f'<text x="{left + width / 2}" y="{y + 36}" text-anchor="middle">ms</text>')
    parts.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(parts) + "\n")


def machine():
    model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                  if line.startswith("model name")), "?")
    mem = next(line.split()[1] for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(int(mem) / 2**20, 1),
        "kernel": platform.release(),
        "os": next((line.split("=", 1)[1].strip().strip('"') for line in open("/etc/os-release")
                    if line.startswith("PRETTY_NAME=")), "?"),
        "cgroup": "v2" if os.path.exists("/sys/fs/cgroup/cgroup.controllers") else "v1",
        "loadavg_start": open("/proc/loadavg").read().split()[:3],
    }


# --- main ----------------------------------------------------------------------------------


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-containerd", action="store_true")
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", required=True, help="where bundles are made")
    parser.add_argument("--gpu-youki", required=True)
    parser.add_argument("--youki", required=True)
    parser.add_argument("--floor", required=True)
    parser.add_argument("--fake", required=True, action="append",
                        help="N=DIR: a fake driver tree with N GPUs")
    parser.add_argument("--image", required=True, help="busybox OCI archive for ctr")
    parser.add_argument("--image-ref", required=True)
    parser.add_argument("--versions", required=True, help="JSON of tool versions")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.warmup = 3, 1
    if args.runs < 1 or args.warmup < 0:
        parser.error("--runs must be at least 1 and --warmup at least 0")
    fakes = {int(k): v for k, v in (f.split("=", 1) for f in args.fake)}
    runtimes = {"runc": shutil.which("runc"), "youki": args.youki, "gpu-youki": args.gpu_youki}

    lock = take_scratch(runtimes)
    become_subreaper()
    interrupt_on_signals()
    try:
        results = bench(args, fakes, runtimes)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        results = None
    finally:
        left = cleanup(runtimes)
        if left:
            log("could not remove:\n  " + "\n  ".join(left))
    if results is None:
        sys.exit(130)
    if left:
        sys.exit(1)


def bench(args, fakes, runtimes):
    gy = args.gpu_youki
    for d in ("roots", "logs", "pid"):
        os.makedirs(os.path.join(STATE, d), exist_ok=True)
    bundles = os.path.join(args.work, "bundles")
    shutil.rmtree(bundles, ignore_errors=True)
    os.makedirs(bundles)
    os.makedirs(args.out, exist_ok=True)
    notes = []

    def bundle(name, env=()):
        path = os.path.join(bundles, name)
        os.makedirs(path)
        make_bundle(path, name, env)
        return path

    def cfg(n):
        return {"GPU_YOUKI_CONFIG": os.path.join(fakes[n], "config.toml")}

    cases = [
        Case("runc", "runc (no GPU)", "runc", runtimes["runc"], bundle("runc")),
        Case("youki", "youki (no GPU)", "youki", args.youki, bundle("youki")),
        Case("gy", "gpu-youki (no GPU)", "gpu-youki", gy, bundle("gy")),
    ]
    sizes = []
    for caps, value in CAPS.items():
        for n in GPU_COUNTS:
            name = f"gy-{n}-{caps}"
            env = (GPU_ENV, f"NVIDIA_DRIVER_CAPABILITIES={value}")
            case = Case(name, f"gpu-youki {n} GPU{'s' if n > 1 else ''} {value}", "gpu-youki",
                        gy, bundle(name, env), cfg(n))
            plan = gpu_plan(gy, case.bundle, cfg(n)["GPU_YOUKI_CONFIG"])
            sizes.append(f"{n}/{caps} {len(plan['devices'])}/{len(plan['mounts'])}")
            cases.append(case)
    notes.append("GPU plans (GPUs/capabilities devices/mounts): " + ", ".join(sizes))
    # runc with the 8-GPU plan written into its config by hand.
    env8 = (GPU_ENV, f"NVIDIA_DRIVER_CAPABILITIES={CAPS['cu']}")
    runc_gpu = bundle("runc-8-cu", env8)
    plan8 = gpu_plan(gy, runc_gpu, cfg(8)["GPU_YOUKI_CONFIG"])
    devices, mounts = add_plan_by_hand(os.path.join(runc_gpu, "config.json"), plan8)
    cases.append(Case("runc-8-cu", "runc + 8-GPU plan by hand", "runc", runtimes["runc"],
                      runc_gpu))
    notes.append(f"runc + 8-GPU plan by hand: {devices} device nodes and {mounts} bind mounts "
                 "from `gpu-youki gpu plan`; no ld.so.cache, links or /proc/driver/nvidia view")
    ops = os.path.join(args.work, "floor-8-cu.ops")
    floor_devices, floor_mounts = floor_ops(plan8, ops)
    floor = FloorCase("floor-8-cu", "floor: 8-GPU plan's syscalls", args.floor, ops)
    notes.append(f"floor: {floor_devices} mknod + {floor_mounts} bind mounts (bind + read-only "
                 "remount each) in a fresh mount namespace, by scripts/bench.d/floor.c")
    if not shutil.which("nvidia-container-runtime"):
        notes.append("nvidia-container-runtime is not on PATH: its case (with a CDI spec) is "
                     "skipped")
        log(notes[-1])
    else:
        notes.append("nvidia-container-runtime is on PATH but this benchmark has no CDI spec "
                     "for the fake driver: its case is not run")
        log(notes[-1])

    ctr_cases = []
    if not args.no_containerd:
        # The shim passes containerd's environment on to the runtime: GPU_YOUKI_CONFIG is set
        # there, so gpu-youki is run directly (no wrapper script, no extra exec).
        env = dict(os.environ, **cfg(8))
        _, ctr = start_containerd(env)
        output(ctr + ["images", "import", args.image])
        # The GPU case must really get GPUs through containerd: its last device node.
        output(ctr + ["run", "--rm", "--runtime", "io.containerd.runc.v2", "--runc-binary", gy,
                      "--env", GPU_ENV, "--env", f"NVIDIA_DRIVER_CAPABILITIES={CAPS['cu']}",
                      args.image_ref, "gyb-ctr-check", "test", "-c", "/dev/nvidia7"])
        ctr_cases = [
            CtrCase("ctr-runc", "ctr: runc (no GPU)", "runc", runtimes["runc"], ctr,
                    args.image_ref),
            CtrCase("ctr-gy", "ctr: gpu-youki (no GPU)", "gpu-youki", gy, ctr,
                    args.image_ref),
            CtrCase("ctr-gy-8-cu", "ctr: gpu-youki 8 GPUs compute,utility", "gpu-youki", gy,
                    ctr, args.image_ref,
                    [GPU_ENV, f"NVIDIA_DRIVER_CAPABILITIES={CAPS['cu']}"]),
        ]
        notes.append("ctr cases: GPU_YOUKI_CONFIG is set on containerd, whose shim passes it "
                     "on: no wrapper script")

    # The interleaved items: (case, mode, function).
    items = [(c, "cycle", c.cycle) for c in cases] + [(c, "run", c.run) for c in cases]
    items += [(c, "ctr run --rm", c.run) for c in ctr_cases] + [(floor, "floor", floor.run)]
    samples = {(c.name, mode): [] for c, mode, _ in items}
    rounds = args.warmup + args.runs
    log(f"{len(items)} measurements x {rounds} rounds ({args.warmup} warm-up), interleaved")
    started = time.monotonic()
    hung = {}
    for r in range(rounds):
        for case, mode, measure in shuffled(items, r):
            sample = measure()
            if sample is None:
                hung[(case.name, mode)] = hung.get((case.name, mode), 0) + 1
                log(f"{case.label} {mode}: hung, killed after {RUN_TIMEOUT}s (not counted)")
                continue
            if r >= args.warmup:
                sample["round"] = r - args.warmup
                samples[(case.name, mode)].append(sample)
        if r == 0 or (r + 1) % 5 == 0 or r + 1 == rounds:
            log(f"round {r + 1}/{rounds} done ({time.monotonic() - started:.0f}s)")

    named = {c.name: c for c in cases}

    def phase(title, names, measure):
        """Interleaved rounds of measure(case) over the named cases, warm-up dropped."""
        chosen = [named[n] for n in names]
        log(f"{title}: {len(chosen)} cases x {args.runs} runs")
        kept = {n: [] for n in names}
        for r in range(args.warmup + args.runs):
            for case in shuffled(chosen, r):
                value = measure(case)
                if r >= args.warmup:
                    kept[case.name].append(value)
        return kept

    # Peak RSS of create, under GNU time.
    rss_file = os.path.join(STATE, "logs", "maxrss")

    def create_rss(case):
        case.cycle(rss_file=rss_file)
        return int(open(rss_file).read().split()[-1])

    rss = phase("peak RSS of create", ["runc", "youki", "gy", "gy-8-cu", "gy-64-cu"],
                create_rss)

    # gpu-youki's own spans (--debug logging costs time).
    span_log = os.path.join(STATE, "logs", "spans.log")

    def create_spans(case):
        if os.path.exists(span_log):
            os.unlink(span_log)
        case.cycle(debug_log=span_log)
        per_run = {}
        for name, busy, idle in parse_spans(span_log):
            total = per_run.setdefault(name, [0.0, 0.0, 0])
            total[0] += busy
            total[1] += idle
            total[2] += 1
        return per_run

    span_runs = phase("gpu-youki spans (--debug)", ["gy", "gy-1-cu", "gy-8-cu", "gy-64-cu",
                                                    "gy-8-all"], create_spans)
    spans = {}
    for name, runs in span_runs.items():
        for per_run in runs:
            for span, values in per_run.items():
                spans.setdefault(name, {}).setdefault(span, []).append(values)

    for (name, mode), count in hung.items():
        notes.append(f"{named[name].label} {mode}: {count} of {rounds} hung (killed after "
                     f"{RUN_TIMEOUT}s, not counted; youki 0.7.0's `run` blocks signals only "
                     "after start, so it can miss the SIGCHLD of a container that already "
                     "exited)")
    return report(args, cases, ctr_cases, floor, items, samples, spans, rss, notes)


def report(args, cases, ctr_cases, floor, items, samples, spans, rss, notes):
    rows = []
    by = {}
    for case, mode, _ in items:
        data = samples[(case.name, mode)]
        if not data:
            continue
        s = {k: (ms(v) if k != "n" else v) for k, v in stats([d["total"] for d in data]).items()}
        row = {"case": case.name, "label": case.label, "runtime": getattr(case, "runtime", ""),
               "mode": mode, "stats": s}
        if mode == "cycle":
            for part in ("create", "start", "wait", "delete", "cpu"):
                row[f"{part}_median_ms"] = ms(statistics.median(d[part] for d in data))
            if case.name in rss:
                row["create_maxrss_kib_median"] = statistics.median(rss[case.name])
        if mode == "floor":
            row["ns_us_median"] = statistics.median(d["ns_us"] for d in data)
            row["work_us_median"] = statistics.median(d["work_us"] for d in data)
        rows.append(row)
        by[(case.name, mode)] = row
    for row in rows:
        ref = by.get(("ctr-runc" if row["mode"] == "ctr run --rm" else "runc", row["mode"]))
        row["ratio_to_runc"] = (row["stats"]["median"] / ref["stats"]["median"]) if ref else None

    def med(name, mode="cycle"):
        return by[(name, mode)]["stats"]["median"]

    def peak(name):
        return statistics.median(rss[name])

    gpu_slope = slope(list(GPU_COUNTS), [med(f"gy-{n}-cu") for n in GPU_COUNTS])
    targets = [
        ("8 GPUs compute,utility / gpu-youki no GPU (cycle medians)",
         med("gy-8-cu") / med("gy"), "<=", 1.05, ""),
        ("slope of the cycle median over 1, 8, 64 GPUs (compute,utility)",
         gpu_slope, "<=", 0.1, " ms/GPU"),
        ("gpu-youki no GPU / runc no GPU", med("gy") / med("runc"), "<=", 0.8, ""),
        ("gpu-youki no GPU / youki no GPU", med("gy") / med("youki"), "<=", 1.0, ""),
        ("gpu-youki 8 GPUs compute,utility / runc no GPU",
         med("gy-8-cu") / med("runc"), "<=", 0.85, ""),
        ("peak RSS of create: gpu-youki no GPU - youki", (peak("gy") - peak("youki")) / 1024,
         "<=", 2.0, " MiB"),
        ("peak RSS of create: gpu-youki 8 GPUs - youki", (peak("gy-8-cu") - peak("youki")) / 1024,
         "<=", 2.0, " MiB"),
    ]
    target_rows = [{"target": t, "measured": v, "limit": lim, "unit": unit.strip(),
                    "pass": v <= lim} for t, v, _, lim, unit in targets]

    span_rows = []
    for case, per in spans.items():
        for name, values in sorted(per.items()):
            span_rows.append({
                "case": case, "span": name, "n": len(values),
                "busy_median_ms": ms(statistics.median(v[0] for v in values)),
                "idle_median_ms": ms(statistics.median(v[1] for v in values)),
                "closes_per_create": statistics.median(v[2] for v in values),
            })

    m = machine()
    m["loadavg_end"] = open("/proc/loadavg").read().split()[:3]
    lines = []
    p = lines.append
    p(f"gpu-youki container start benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC")
    p(f"machine: {m['cpu']}, {m['cpus']} CPUs, {m['memory_gib']} GiB, {m['os']}, kernel "
      f"{m['kernel']}, cgroup {m['cgroup']}; load {' '.join(m['loadavg_end'])} at the end")
    versions = json.loads(args.versions)
    p("versions: " + "; ".join(f"{k} {v}" for k, v in versions.items()))
    p(f"{args.runs} runs per case after {args.warmup} warm-up rounds, interleaved; times in ms")
    p("")
    p(f"{'case':<40} {'mode':<13} {'n':>3} {'min':>7} {'median':>7} {'p90':>7} {'max':>7} "
      f"{'x runc':>7} {'RSS MiB':>7}")
    for row in rows:
        s = row["stats"]
        ratio = f"{row['ratio_to_runc']:.2f}" if row["ratio_to_runc"] else "-"
        rss_text = (f"{row['create_maxrss_kib_median'] / 1024:.1f}"
                    if "create_maxrss_kib_median" in row else "")
        p(f"{row['label']:<40} {row['mode']:<13} {s['n']:>3} {s['min']:>7.2f} "
          f"{s['median']:>7.2f} {s['p90']:>7.2f} {s['max']:>7.2f} {ratio:>7} {rss_text:>7}")
    p("")
    p("cycle = create + start + wait for exit + delete; RSS = peak RSS of `create` (median, "
      "GNU time, separate runs); CPU = user + system time of all the cycle's processes; "
      "x runc = median / runc's median of the same mode (ctr: / ctr with runc)")
    p("")
    p(f"{'cycle parts (medians, ms)':<40} {'create':>7} {'start':>7} {'wait':>7} {'delete':>7}"
      f" {'CPU':>7}")
    for row in rows:
        if row["mode"] == "cycle":
            p(f"{row['label']:<40} {row['create_median_ms']:>7.2f} {row['start_median_ms']:>7.2f}"
              f" {row['wait_median_ms']:>7.2f} {row['delete_median_ms']:>7.2f}"
              f" {row['cpu_median_ms']:>7.2f}")
    p("")
    fl = by[(floor.name, "floor")]
    extra = med("gy-8-cu") - med("gy")
    extra_cpu = by[("gy-8-cu", "cycle")]["cpu_median_ms"] - by[("gy", "cycle")]["cpu_median_ms"]
    stage = sum(r["busy_median_ms"] for r in span_rows if r["case"] == "gy-8-cu"
                and r["span"] in ("gpu_stage", "mount_into_container"))
    p(f"floor (8 GPUs compute,utility): namespace {fl['ns_us_median'] / 1000:.3f} ms, mknod + "
      f"mounts {fl['work_us_median'] / 1000:.3f} ms (medians, measured inside the program)")
    p(f"gpu-youki 8 GPUs compute,utility: cycle {extra:+.2f} ms (CPU {extra_cpu:+.2f} ms) over no "
      f"GPU; spans gpu_stage + mount_into_container {stage:.3f} ms")
    p("")
    p("gpu-youki's spans (create with --debug, separate runs; medians, ms):")
    p(f"{'case':<12} {'span':<28} {'busy':>8} {'idle':>8} {'closes':>6}")
    for s in span_rows:
        p(f"{s['case']:<12} {s['span']:<28} {s['busy_median_ms']:>8.3f} "
          f"{s['idle_median_ms']:>8.3f} {s['closes_per_create']:>6g}")
    p("")
    p("targets (from whole-cycle medians):")
    for t in target_rows:
        verdict = "PASS" if t["pass"] else "FAIL"
        unit = f" {t['unit']}" if t["unit"] else ""
        p(f"  {verdict}  {t['target']}: {t['measured']:.3f}{unit} (limit <= {t['limit']:g}"
          f"{unit})")
    p("")
    p("notes:")
    for n in notes:
        p(f"  - {n}")
    text = "\n".join(lines) + "\n"
    print(text, end="")

    out = args.out
    with open(os.path.join(out, "report.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({"machine": m, "versions": versions, "runs": args.runs,
                   "warmup": args.warmup, "cases": rows, "spans": span_rows,
                   "targets": target_rows, "notes": notes,
                   "create_maxrss_kib": rss,
                   "samples": {f"{k[0]}/{k[1]}": v for k, v in samples.items()}}, f, indent=1)
    with open(os.path.join(out, "samples.csv"), "w") as f:
        f.write("case,mode,round,total_ms,create_ms,start_ms,wait_ms,delete_ms,cpu_ms\n")
        for (name, mode), data in samples.items():
            for d in data:
                parts = [f"{ms(d[k]):.4f}" if k in d else ""
                         for k in ("total", "create", "start", "wait", "delete", "cpu")]
                f.write(f"{name},{mode},{d['round']},{','.join(parts)}\n")
    with open(os.path.join(out, "spans.csv"), "w") as f:
        f.write("case,span,n,busy_median_ms,idle_median_ms,closes_per_create\n")
        for s in span_rows:
            f.write(f"{s['case']},{s['span']},{s['n']},{s['busy_median_ms']:.4f},"
                    f"{s['idle_median_ms']:.4f},{s['closes_per_create']:g}\n")
    svg_chart(rows, f"Container start with `true`, {args.runs} runs each "
              f"({m['cpus']} CPUs, load {m['loadavg_end'][0]})", os.path.join(out, "chart.svg"))
    log(f"results in {out}: report.txt results.json samples.csv spans.csv chart.svg")
    return rows


def run_main(main, prog):
    """Runs a script's main; a BenchError ends it with its message and exit code 1."""
    try:
        main()
    except BenchError as err:
        print(f"{prog}: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    run_main(main, "bench")
