#!/usr/bin/python3
"""The bounded load run (issue 6; scripts/load prepares its inputs and runs this as root).

Two phases, each WORKERS processes in parallel, each worker with its own bundles and ids:
- direct: gpu-youki `create`, `start`, wait for the init, `delete` of a `true` container
  asking for GPUs (NVIDIA_VISIBLE_DEVICES one GPU or all, alternately; compute,utility),
  the way containerd's shim drives a runtime (scripts/bench.d/bench.py's Case.cycle);
- ctr: `ctr run --rm` of the busybox image with the same requests, through a private
  containerd whose runc v2 shim runs gpu-youki.

Start latency: direct, from spawning `create` until `start` returned (the workload runs);
ctr, the wall time of `ctr run --rm` (its whole cycle). Each phase stops at --count cycles
or at --max-seconds, whichever comes first; stopping short of --count is a failure.

Leaks: before the phases (after a warm-up that checks every request really gets its device
nodes) and after them, the host's mount points, every cgroup directory of every hierarchy,
gpu-youki's state directories (its --root and the shim's), containerd's open file descriptors,
shim processes, task directories, containers and snapshots are recorded; any difference that
does not go away within SETTLE seconds is a leak. With --shared-host, mount and cgroup changes
that name none of this run's paths are printed but not counted (other users of the machine).

Writes OUT/results.json and OUT/report.txt; exits non-zero on any failure or leak. Uses
bench.py's helpers, with a scratch area of its own (/run/gpu-youki-load, cgroup parent and
containerd namespace gpu-youki-load), cleaned up at the end and before starting.
"""

import argparse
import collections
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import traceback

sys.dont_write_bytecode = True  # no __pycache__ in the checkout
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench.d"))
import bench  # noqa: E402  (scripts/bench.d is not a package)
from bench import BenchError  # noqa: E402

# Its own scratch area, lock and cgroup parent: it can run beside scripts/bench.
bench.use_scratch("gpu-youki-load")
GPUS = 8
CAPS_ENV = "NVIDIA_DRIVER_CAPABILITIES=compute,utility"
# How long counts may take to come back to their value before the run (exited shims, cgroups
# the kernel still releases) before a difference is a leak.
SETTLE = 10
# A worker's cycle that outlives the phase's deadline by this much is killed: each runtime
# command already has bench.wait's own 60 s limit.
GRACE = 300
LATENCY = ("direct: from spawning `create` until `start` returned (the workload runs); ctr: "
           "the wall time of `ctr run --rm`")
TASK_DIR = os.path.join(bench.CONTAINERD_DIR, "state", "io.containerd.runtime.v2.task",
                        bench.NAMESPACE)


def log(msg):
    print(f"load: {msg}", flush=True)


def visible(worker, cycle):
    """NVIDIA_VISIBLE_DEVICES of a worker's cycle: one GPU (each worker its own) or all."""
    return str(worker % GPUS) if cycle % 2 == 0 else "all"


def device_check(value):
    """A shell test that passes only in a container that got exactly the GPUs asked for."""
    if value == "all":
        return f"test -c /dev/nvidiactl && test -c /dev/nvidia{GPUS - 1}"
    other = (int(value) + 1) % GPUS
    return f"test -c /dev/nvidiactl && test -c /dev/nvidia{value} && ! test -e /dev/nvidia{other}"


# --- what must not change --------------------------------------------------------------------


def cgroup_tree():
    """Every directory of every cgroup hierarchy (each v1 controller, systemd's, unified)."""
    found, seen = [], set()
    for hierarchy in sorted(os.listdir("/sys/fs/cgroup")):
        top = os.path.join("/sys/fs/cgroup", hierarchy)
        if not os.path.isdir(top) or os.path.realpath(top) in seen:
            continue
        seen.add(os.path.realpath(top))
        found += [dirpath for dirpath, _, _ in os.walk(top)]
    return found


def entries(path):
    """Every path under a directory, hidden ones too (gpu-youki's lock files, shadow bundles
    and overlays)."""
    found = []
    for dirpath, dirs, files in os.walk(path):
        found += [os.path.relpath(os.path.join(dirpath, n), path) for n in dirs + files]
    return found


def open_fds(pid):
    """The targets of a process's open descriptors, sockets and pipes without their inode."""
    fds = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            fds.append(re.sub(r":\[\d+\]$", "", os.readlink(f"/proc/{pid}/fd/{fd}")))
        except FileNotFoundError:
            pass
    return fds


def snapshot(roots, containerd, ctr):
    """What a leak would change, each as a list of items compared as a multiset."""
    taken = {
        "mount points": bench.mountpoints(),
        "cgroup directories": cgroup_tree(),
    }
    for root in roots:
        taken[f"gpu-youki state in {root}"] = entries(root)
    if containerd is not None:
        taken["containerd open fds"] = open_fds(containerd.pid)
        taken["shim processes"] = [str(p) for p in bench.containerd_processes()
                                   if p != containerd.pid]
        taken[f"task directories in {TASK_DIR}"] = entries(TASK_DIR)
        taken["ctr containers"] = bench.output(ctr + ["containers", "ls", "-q"]).split()
        taken["ctr snapshots"] = bench.output(ctr + ["snapshots", "ls"]).splitlines()[1:]
    return taken


def differences(before, after, ours, shared_host):
    """{what: (count before, count after, [+item / -item], ignored)} for every changed item;
    ignored: on a shared host, the mount and cgroup changes that name none of `ours`."""
    found = {}
    for what in before:
        was, now = collections.Counter(before[what]), collections.Counter(after[what])
        changed = [f"+{i}" for i in (now - was).elements()] + \
                  [f"-{i}" for i in (was - now).elements()]
        if not changed:
            continue
        foreign = shared_host and what in ("mount points", "cgroup directories") and \
            not any(marker in item for item in changed for marker in ours)
        found[what] = (len(before[what]), len(after[what]), changed, foreign)
    return found


def settled(before, take, ours, shared_host):
    """The differences left once they stop going away, or after SETTLE seconds."""
    deadline = time.monotonic() + SETTLE
    while True:
        diff = differences(before, take(), ours, shared_host)
        if not any(not foreign for *_, foreign in diff.values()) or time.monotonic() > deadline:
            return diff
        time.sleep(0.5)


# --- workers ---------------------------------------------------------------------------------


class DirectLoad:
    """A worker's direct cycles: one bench.Case per request, alternately."""

    def __init__(self, worker, bundles, gpu_youki, config):
        self.cases = []
        for slot in range(2):
            value = visible(worker, slot)
            name = f"load-w{worker}-{'all' if value == 'all' else 'one'}"
            path = os.path.join(bundles, name)
            os.makedirs(path)
            bench.make_bundle(path, name, (f"NVIDIA_VISIBLE_DEVICES={value}", CAPS_ENV))
            self.cases.append(bench.Case(name, name, "gpu-youki", gpu_youki, path,
                                         {"GPU_YOUKI_CONFIG": config}))

    def measure(self, cycle):
        parts = self.cases[cycle % 2].cycle()
        return {"latency": parts["create"] + parts["start"], "cycle": parts["total"]}

    def recover(self, cycle):
        """After a failed cycle: removes its container, whatever state it is in."""
        case = self.cases[cycle % 2]
        subprocess.run(case.base() + ["delete", "--force", case.last_id], capture_output=True)
        bench.reap_orphans()
        return case.last_id


class CtrLoad:
    """A worker's `ctr run --rm` cycles: one bench.CtrCase per request, alternately."""

    def __init__(self, worker, gpu_youki, ctr, image):
        self.ctr = ctr
        self.cases = []
        for slot in range(2):
            value = visible(worker, slot)
            name = f"load-ctr-w{worker}-{'all' if value == 'all' else 'one'}"
            self.cases.append(bench.CtrCase(name, name, "gpu-youki", gpu_youki, ctr, image,
                                            [f"NVIDIA_VISIBLE_DEVICES={value}", CAPS_ENV]))

    def measure(self, cycle):
        ns = self.cases[cycle % 2].run()["total"]
        return {"latency": ns, "cycle": ns}

    def recover(self, cycle):
        """After a failed cycle: removes its task and container, whatever state they are in."""
        cid = self.cases[cycle % 2].last_id
        for argv in (["tasks", "kill", "-s", "KILL", cid], ["tasks", "rm", "-f", cid],
                     ["containers", "rm", cid]):
            subprocess.run(self.ctr + argv, capture_output=True)
        return cid


def work(load, quota, deadline, result_path):
    """A worker process: up to quota cycles until the deadline; writes its samples and
    failures as JSON."""
    samples, failures = [], []
    cycle = 0
    while cycle < quota and time.monotonic() < deadline:
        try:
            samples.append(load.measure(cycle))
        except Exception as err:  # any failure of a cycle is counted, and the run goes on
            failures.append(f"{load.recover(cycle)}: {type(err).__name__}: {err}")
        cycle += 1
    with open(result_path, "w") as f:
        json.dump({"samples": samples, "failures": failures, "attempted": cycle}, f)


def run_phase(name, loads, count, max_seconds, containerd):
    """Runs one worker process per load, count cycles among them, and merges their results."""
    results = os.path.join(bench.STATE, "load")
    os.makedirs(results, exist_ok=True)
    parallel = len(loads)
    quotas = [count // parallel + (1 if k < count % parallel else 0) for k in range(parallel)]
    started = time.monotonic()
    deadline = started + max_seconds
    workers = {}
    log(f"{name}: {count} cycles, {parallel} workers in parallel, at most {max_seconds}s")
    for k, load in enumerate(loads):
        path = os.path.join(results, f"{name}-{k}.json")
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.signal(signal.SIGINT, signal.SIG_IGN)
                for sig in (signal.SIGTERM, signal.SIGHUP):
                    signal.signal(sig, signal.SIG_DFL)
                bench.become_subreaper()
                work(load, quotas[k], deadline, path)
                code = 0
            except BaseException:
                traceback.print_exc()
            finally:
                os._exit(code)
        workers[pid] = path
    problems, killed = [], False
    try:
        while workers:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                if not killed and time.monotonic() > deadline + GRACE:
                    problems.append(f"{len(workers)} workers still running {GRACE}s after the "
                                    "deadline; killed")
                    for worker in workers:
                        bench.kill_pid(worker)
                    killed = True
                time.sleep(0.05)
            elif pid in workers:
                path = workers.pop(pid)
                if os.waitstatus_to_exitcode(status) != 0:
                    problems.append(f"worker {os.path.basename(path)} exited with "
                                    f"{os.waitstatus_to_exitcode(status)}")
            elif containerd is not None and pid == containerd.pid:
                problems.append(f"containerd exited with {os.waitstatus_to_exitcode(status)}")
            # Anything else is a shim that exited after being reparented to this subreaper.
    except KeyboardInterrupt:
        for worker in workers:
            bench.kill_pid(worker)
        for worker in workers:
            os.waitpid(worker, 0)
        raise
    wall = time.monotonic() - started
    samples, failures, attempted = [], list(problems), 0
    for k in range(parallel):
        path = os.path.join(results, f"{name}-{k}.json")
        if not os.path.exists(path):
            continue
        with open(path) as f:
            part = json.load(f)
        samples += part["samples"]
        failures += part["failures"]
        attempted += part["attempted"]
    if attempted < count:
        cause = f"the time cap of {max_seconds}s was reached" if wall >= max_seconds else \
            "the workers stopped"
        failures.append(f"{cause} after {attempted} of {count} cycles")
    return summary(name, count, parallel, wall, samples, failures, attempted)


def summary(name, count, parallel, wall, samples, failures, attempted):
    result = {"phase": name, "asked": count, "parallel": parallel, "attempted": attempted,
              "completed": len(samples), "failures": failures, "wall_s": round(wall, 2),
              "throughput_per_s": round(len(samples) / wall, 2) if wall else 0.0}
    for key in ("latency", "cycle"):
        if samples:
            result[f"{key}_ms"] = {k: (round(bench.ms(v), 2) if k != "n" else v)
                                   for k, v in bench.stats([s[key] for s in samples]).items()}
    return result


# --- main ------------------------------------------------------------------------------------


def checks(gpu_youki, config, bundles, ctr, image):
    """Warm-up: each request once, directly and through containerd, in a container that fails
    unless it got exactly the device nodes asked for."""
    env = {"GPU_YOUKI_CONFIG": config}
    for value in ("0", "all"):
        name = f"load-check-{value}"
        path = os.path.join(bundles, name)
        os.makedirs(path)
        config_json = bench.make_bundle(path, name, (f"NVIDIA_VISIBLE_DEVICES={value}",
                                                     CAPS_ENV))
        config_json["process"]["args"] = ["sh", "-c", device_check(value)]
        with open(os.path.join(path, "config.json"), "w") as f:
            json.dump(config_json, f)
        if bench.Case(name, name, "gpu-youki", gpu_youki, path, env).run() is None:
            raise BenchError(f"`gpu-youki run` of {name} hung")
        if ctr:
            bench.output(ctr + ["run", "--rm", "--runtime", "io.containerd.runc.v2",
                                "--runc-binary", gpu_youki, "--env",
                                f"NVIDIA_VISIBLE_DEVICES={value}", "--env", CAPS_ENV, image,
                                f"gyb-{name}", "sh", "-c", device_check(value)])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=500, help="cycles per phase (500)")
    parser.add_argument("--workers", type=int, default=8, help="in parallel (8)")
    parser.add_argument("--max-seconds", type=int, default=300,
                        help="time cap of each phase (300)")
    parser.add_argument("--no-containerd", action="store_true", help="the direct phase only")
    parser.add_argument("--shared-host", action="store_true",
                        help="count only mount and cgroup changes that name this run's paths")
    parser.add_argument("--out", required=True)
    parser.add_argument("--work", required=True, help="where bundles are made")
    parser.add_argument("--gpu-youki", required=True)
    parser.add_argument("--config", required=True, help="gpu-youki config of an 8-GPU fake driver")
    parser.add_argument("--image", required=True, help="busybox OCI archive for ctr")
    parser.add_argument("--image-ref", required=True)
    args = parser.parse_args()
    if args.count < 1 or args.workers < 1 or args.max_seconds < 1:
        parser.error("--count, --workers and --max-seconds must be at least 1")
    runtimes = {"gpu-youki": args.gpu_youki}
    lock = bench.take_scratch(runtimes)
    bench.become_subreaper()
    bench.interrupt_on_signals()
    started = time.monotonic()
    try:
        result = load(args)
    except KeyboardInterrupt:
        log("interrupted; cleaning up")
        result = None
    finally:
        left = bench.cleanup(runtimes)
        lock.close()
    if result is None:
        sys.exit(130)
    if left:
        result["leftovers"] = left
        log("could not remove:\n  " + "\n  ".join(left))
    result["duration_s"] = round(time.monotonic() - started, 1)
    ok = report(args, result)
    sys.exit(0 if ok else 1)


def load(args):
    for d in ("roots", "logs", "pid"):
        os.makedirs(os.path.join(bench.STATE, d), exist_ok=True)
    bundles = os.path.join(args.work, "bundles")
    shutil.rmtree(bundles, ignore_errors=True)
    os.makedirs(bundles)
    containerd, ctr = None, None
    if not args.no_containerd:
        containerd, ctr = bench.start_containerd(dict(os.environ, GPU_YOUKI_CONFIG=args.config))
        bench.output(ctr + ["images", "import", args.image])
    checks(args.gpu_youki, args.config, bundles, ctr, args.image_ref)
    direct = [DirectLoad(k, bundles, args.gpu_youki, args.config) for k in range(args.workers)]
    # One cycle of each direct case before counting: the cgroup parent the runtime makes and
    # keeps (as runc does) exists from then on.
    for worker in direct:
        for cycle in range(2):
            worker.measure(cycle)
    roots = [os.path.join(bench.STATE, "roots", "gpu-youki")]
    if ctr:
        roots.append(bench.SHIM_RUNTIME_ROOT)
    ours = (bench.STATE, bench.CONTAINERD_DIR, bench.CGROUP_PARENT, args.work,
            bench.SHIM_RUNTIME_ROOT)

    def take():
        return snapshot(roots, containerd, ctr)

    before = take()
    phases = [run_phase("direct", direct, args.count, args.max_seconds, containerd)]
    if ctr:
        loads = [CtrLoad(k, args.gpu_youki, ctr, args.image_ref) for k in range(args.workers)]
        phases.append(run_phase("ctr", loads, args.count, args.max_seconds, containerd))
    leaks = settled(before, take, ours, args.shared_host)
    return {"phases": phases, "leaks": {what: {"before": b, "after": a, "changed": changed,
                                               "ignored (not ours)": foreign}
                                        for what, (b, a, changed, foreign) in leaks.items()},
            "counted": {what: len(items) for what, items in before.items()}}


def report(args, result):
    """Prints and writes the report; whether the run passed."""
    lines = []
    p = lines.append
    m = bench.machine()
    p(f"gpu-youki load run, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; "
      f"{m['cpus']} CPUs, kernel {m['kernel']}, cgroup {m['cgroup']}; "
      f"{result['duration_s']}s in all")
    p(f"start latency: {LATENCY}")
    ok = True
    for phase in result["phases"]:
        lat = phase.get("latency_ms", {})
        p(f"{phase['phase']:<7} {phase['completed']}/{phase['asked']} cycles, "
          f"{len(phase['failures'])} failures, {phase['parallel']} in parallel, "
          f"{phase['wall_s']}s, {phase['throughput_per_s']}/s; start latency ms: median "
          f"{lat.get('median', '-')} p90 {lat.get('p90', '-')} p99 {lat.get('p99', '-')} "
          f"max {lat.get('max', '-')}")
        for failure in phase["failures"][:20]:
            p(f"  FAIL {failure[-1500:]}")
        if len(phase["failures"]) > 20:
            p(f"  … and {len(phase['failures']) - 20} more (results.json)")
        ok = ok and not phase["failures"] and phase["completed"] >= phase["asked"]
    p("before/after: " + ", ".join(f"{what} {n}" for what, n in result["counted"].items()))
    for what, leak in result["leaks"].items():
        verdict = "ignored (not this run's)" if leak["ignored (not ours)"] else "LEAK"
        p(f"  {verdict}: {what}: {leak['before']} before, {leak['after']} after")
        for item in leak["changed"][:20]:
            p(f"    {item}")
        ok = ok and leak["ignored (not ours)"]
    if not any(not leak["ignored (not ours)"] for leak in result["leaks"].values()):
        p("no leaks")
    for item in result.get("leftovers", []):
        p(f"  LEFT AFTER CLEANUP: {item}")
    ok = ok and not result.get("leftovers")
    p("PASS" if ok else "FAIL")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "report.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(dict(result, machine=m, settings=vars(args), start_latency=LATENCY,
                       passed=ok), f, indent=1)
    return ok


if __name__ == "__main__":
    bench.run_main(main, "load")
