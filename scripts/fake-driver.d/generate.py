"""Writes the non-compiled part of a fake driver tree (called by scripts/fake-driver):
/proc/driver/nvidia, /proc/devices, /dev nodes, GSP firmware, the persistenced socket,
config.toml and manifest.json. Must run as root (mknod).

usage: generate.py TREE ROOT GPUS VERSION CUDA_VERSION SCRIPT_VERSION MIG EXTRA
  TREE  the directory being built; ROOT  the path it will have once renamed into place
  MIG   comma list of GPU indices in MIG mode, or -; EXTRA  yes to add the other devices
"""
import hashlib
import json
import os
import socket
import stat
import sys

LIBDIR = "/usr/lib/x86_64-linux-gnu"
MODEL = "NVIDIA H100 80GB HBM3"
MAJORS = {"nvidia": 195, "nvidia-uvm": 510, "nvidia-caps": 509, "nvidia-caps-imex-channels": 508}
# Instances of a GPU in MIG mode: GPU instance id -> compute instance ids.
MIG_INSTANCES = {1: [0], 2: [0, 1]}
IMEX_CHANNELS = [0, 1, 3]  # channel 2 is missing, for the error path
VIDEO_GID, RENDER_GID = 44, 109
# The feature-gated families' nodes (path, major, minor) and GDS's files.
FEATURE_DEVICES = {
    "gds": [("/dev/nvidia-fs0", 241, 0), ("/dev/nvidia-fs1", 241, 1)],
    "mofed": [("/dev/infiniband/uverbs0", 231, 192), ("/dev/infiniband/rdma_cm", 10, 58)],
    "nvswitch": [("/dev/nvidia-nvswitchctl", 507, 255), ("/dev/nvidia-nvswitch0", 507, 0),
                 ("/dev/nvidia-nvswitch1", 507, 1)],
    "gdrcopy": [("/dev/gdrdrv", 234, 0)],
}
CUFILE = '{ "logging": { "level": "ERROR" }, "properties": { "use_compat_mode": true } }\n'

FIRMWARE = ["gsp_ga10x.bin", "gsp_tu10x.bin"]
SOCKET = "/run/nvidia-persistenced/socket"

PARAMS = """ResmanDebugLevel: 4294967295
RmLogonRC: 1
ModifyDeviceFiles: 1
DeviceFileUID: 0
DeviceFileGID: 0
DeviceFileMode: 438
InitializeSystemMemoryAllocations: 1
UsePageAttributeTable: 4294967295
EnableMSI: 1
EnablePCIeGen3: 0
MemoryPoolSize: 0
KMallocHeapMaxSize: 0
VMallocHeapMaxSize: 0
IgnoreMMIOCheck: 0
EnableStreamMemOPs: 0
EnableUserNUMAManagement: 1
NvLinkDisable: 0
RmProfilingAdminOnly: 1
PreserveVideoMemoryAllocations: 0
EnableS0ixPowerManagement: 0
S0ixPowerManagementVideoMemoryThreshold: 256
DynamicPowerManagement: 3
DynamicPowerManagementVideoMemoryThreshold: 200
RegisterPCIDriver: 1
EnablePCIERelaxedOrderingMode: 0
EnableResizableBar: 0
EnableGpuFirmware: 18
EnableGpuFirmwareLogs: 2
RmNvlinkBandwidthLinkCount: 0
EnableDbgBreakpoint: 0
OpenRmEnableUnsupportedGpus: 1
DmaRemapPeerMmio: 1
ImexChannelCount: 2048
CreateImexChannel0: 0
GrdmaPciTopoCheckOverride: 0
RegistryDwords: ""
RegistryDwordsPerDevice: ""
RmMsg: ""
GpuBlacklist: ""
TemporaryFilePath: ""
ExcludedGpus: ""
"""

# Character majors are listed in ascending order, as the kernel does.
PROC_DEVICES = """Character devices:
  1 mem
  4 /dev/vc/0
  4 tty
  4 ttyS
  5 /dev/tty
  5 /dev/console
  5 /dev/ptmx
  7 vcs
 10 misc
 13 input
 21 sg
 29 fb
128 ptm
136 pts
180 usb
189 usb_device
195 nvidia
226 drm
240 aux
241 cec
242 lirc
243 ipmidev
244 hidraw
245 ttyDBC
246 wwan_port
247 bsg
248 watchdog
249 ptp
250 pps
251 rtc
252 dax
253 tpm
254 gpiochip
508 nvidia-caps-imex-channels
509 nvidia-caps
510 nvidia-uvm

Block devices:
  7 loop
  8 sd
  9 md
 11 sr
 65 sd
253 device-mapper
254 mdp
259 blkext
"""


def write(tree, path, content, mode=0o644):
    full = tree + path
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb" if isinstance(content, bytes) else "w") as f:
        f.write(content)
    os.chmod(full, mode)


def gpu(i):
    h = hashlib.sha256(f"gpu-youki-fake-gpu-{i}".encode()).hexdigest()
    return {
        "index": i,
        "minor": i,
        "uuid": f"GPU-{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}",
        "bus_id": f"0000:{0x10 + 3 * i:02x}:00.0",
        "model": MODEL,
        "device": f"/dev/nvidia{i}",
        "information": f"/proc/driver/nvidia/gpus/0000:{0x10 + 3 * i:02x}:00.0/information",
    }


def information(g, version):
    # Field order and separators of the kernel module's nv-procfs.c.
    return (f"Model: \t\t {g['model']}\n"
            f"IRQ:   \t\t {120 + g['index']}\n"
            f"GPU UUID: \t {g['uuid']}\n"
            f"Video BIOS: \t 96.00.99.00.01\n"
            f"Bus Type: \t PCIe\n"
            f"DMA Size: \t 52 bits\n"
            f"DMA Mask: \t 0xfffffffffffff\n"
            f"Bus Location: \t {g['bus_id']}\n"
            f"Device Minor: \t {g['minor']}\n"
            f"GPU Firmware: \t {version}\n"
            f"GPU Excluded:\t No\n")


def mig_minor(gpu_minor, gi, ci=None):
    """The driver's numbering in mig-minors: config 1, monitor 2, then per GPU minor 15 GPU
    instances of 1 + 8 entries each."""
    base = 3 + gpu_minor * 135 + gi * 9
    return base if ci is None else base + 1 + ci


def mig_devices(g):
    """A MIG GPU's devices in the fake NVML's index order (GPU instance descending)."""
    out = []
    for gi in sorted(MIG_INSTANCES, reverse=True):
        for ci in MIG_INSTANCES[gi]:
            out.append({"gpu": g["index"], "gi": gi, "ci": ci, "index": len(out),
                        "uuid": f"MIG-{g['uuid'][4:36]}{gi:02x}{ci:02x}",
                        "gi_minor": mig_minor(g["minor"], gi),
                        "ci_minor": mig_minor(g["minor"], gi, ci)})
    return out


def access(minor):
    return f"DeviceFileMinor: {minor}\nDeviceFileMode: 292\nDeviceFileModify: 1\n"


def mknod(tree, path, major, minor, mode=0o666, gid=0):
    os.makedirs(os.path.dirname(tree + path), exist_ok=True)
    os.mknod(tree + path, mode | stat.S_IFCHR, os.makedev(major, minor))
    os.chmod(tree + path, mode)  # mknod's mode is masked by the umask
    os.chown(tree + path, 0, gid)


def write_mig(tree, gpus, mig_gpus):
    """mig-minors for every GPU, capability files and nodes for the MIG GPUs' instances."""
    caps = "/proc/driver/nvidia/capabilities"
    lines = ["config 1", "monitor 2"]
    for g in gpus:
        for gi in range(15):
            lines.append(f"gpu{g['minor']}/gi{gi}/access {mig_minor(g['minor'], gi)}")
            lines += [f"gpu{g['minor']}/gi{gi}/ci{ci}/access {mig_minor(g['minor'], gi, ci)}"
                      for ci in range(8)]
    write(tree, "/proc/driver/nvidia-caps/mig-minors", "\n".join(lines) + "\n", 0o444)
    write(tree, f"{caps}/mig/config", access(1), 0o444)
    write(tree, f"{caps}/mig/monitor", access(2), 0o444)
    minors = [1, 2]
    devices = []
    for g in gpus:
        if g["index"] not in mig_gpus:
            continue
        for m in mig_devices(g):
            gi_dir = f"{caps}/gpu{g['minor']}/mig/gi{m['gi']}"
            write(tree, f"{gi_dir}/access", access(m["gi_minor"]), 0o444)
            write(tree, f"{gi_dir}/ci{m['ci']}/access", access(m["ci_minor"]), 0o444)
            minors += [m["gi_minor"], m["ci_minor"]]
            devices.append(m)
    for minor in sorted(set(minors)):
        mknod(tree, f"/dev/nvidia-caps/nvidia-cap{minor}", MAJORS["nvidia-caps"], minor, 0o444)
    return devices


def write_extra_devices(tree, gpus):
    """IMEX channels, the feature-gated families, GDS's files and DRM nodes with by-path
    links; returns their manifest entries."""
    imex = []
    for channel in IMEX_CHANNELS:
        path = f"/dev/nvidia-caps-imex-channels/channel{channel}"
        mknod(tree, path, MAJORS["nvidia-caps-imex-channels"], channel)
        imex.append(path)
    features = {}
    for feature, nodes in FEATURE_DEVICES.items():
        for path, major, minor in nodes:
            mknod(tree, path, major, minor)
        features[feature] = [path for path, _, _ in nodes]
    write(tree, "/etc/cufile.json", CUFILE)
    write(tree, "/run/udev/data/c226:1", "E:ID_FOR_SEAT=drm-pci-0000_10_00_0\n")
    drm = []
    for g in gpus:
        card, render = g["minor"] + 1, 129 + g["minor"]
        entries = [("card", f"card{card}", card, VIDEO_GID),
                   ("render", f"renderD{render}", render, RENDER_GID)]
        for kind, name, minor, gid in entries:
            mknod(tree, f"/dev/dri/{name}", 226, minor, 0o660, gid)
            link = f"/dev/dri/by-path/pci-{g['bus_id']}-{kind}"
            os.makedirs(os.path.dirname(tree + link), exist_ok=True)
            os.symlink(f"../{name}", tree + link)
            drm.append({"gpu": g["index"], "path": f"/dev/dri/{name}", "gid": gid})
    return {"imex_channels": imex, "feature_devices": features, "drm": drm,
            "gds_files": ["/etc/cufile.json", "/run/udev"]}


def libraries_and_binaries(version):
    table = os.path.join(os.path.dirname(os.path.abspath(__file__)), "driver-files")
    libs, bins = [], []
    for line in open(table):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        kind, name, soname, capability, devlink, _ = fields
        if kind == "bin":
            bins.append({"path": f"/usr/bin/{name}", "name": name, "capability": capability})
            continue
        subdir, base = os.path.split(name)
        d = os.path.join(LIBDIR, subdir)
        file = f"{base}.so.{version}"
        soname = file if soname == "=" else soname
        links = [] if soname == file else [os.path.join(d, soname)]
        if devlink == "yes":
            links.append(os.path.join(d, f"{base}.so"))
        libs.append({"path": os.path.join(d, file), "file": file, "soname": soname,
                     "capability": capability, "links": links})
    return libs, bins


def main():
    tree, root, gpus, version, cuda, script_version, mig, extra = sys.argv[1:]
    gpus = [gpu(i) for i in range(int(gpus))]
    mig_gpus = [] if mig == "-" else [int(i) for i in mig.split(",")]
    proc = "/proc/driver/nvidia"
    write(tree, f"{proc}/version",
          f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {version}  Tue Sep 23 09:29:43 UTC 2025\n"
          "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n", 0o444)
    write(tree, f"{proc}/params", PARAMS, 0o444)
    write(tree, f"{proc}/registry", 'Binary: ""\n', 0o644)
    for g in gpus:
        write(tree, g["information"], information(g, version), 0o444)
    write(tree, "/proc/devices", PROC_DEVICES, 0o444)

    nvidia, uvm = MAJORS["nvidia"], MAJORS["nvidia-uvm"]
    devices = [(g["device"], nvidia, g["minor"]) for g in gpus] + [
        ("/dev/nvidiactl", nvidia, 255), ("/dev/nvidia-modeset", nvidia, 254),
        ("/dev/nvidia-uvm", uvm, 0), ("/dev/nvidia-uvm-tools", uvm, 1)]
    os.makedirs(tree + "/dev", exist_ok=True)
    for path, major, minor in devices:
        mknod(tree, path, major, minor)
    migs = write_mig(tree, gpus, mig_gpus) if mig_gpus else []
    extras = write_extra_devices(tree, gpus) if extra == "yes" else {}

    firmware = []
    for name in FIRMWARE:
        path = f"/lib/firmware/nvidia/{version}/{name}"
        seed = f"{name} {version}".encode()
        blob = b"".join(hashlib.sha256(seed + n.to_bytes(4, "big")).digest() for n in range(128))
        write(tree, path, blob)
        firmware.append(path)

    # A real socket inode; bind with a relative name so a deep TREE cannot exceed sun_path.
    os.makedirs(tree + os.path.dirname(SOCKET), exist_ok=True)
    cwd = os.getcwd()
    os.chdir(tree + os.path.dirname(SOCKET))
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(os.path.basename(SOCKET))
    os.chdir(cwd)
    os.makedirs(tree + "/var", exist_ok=True)
    os.symlink("../run", tree + "/var/run")

    q = json.dumps(root)  # a JSON string is a valid TOML basic string
    write(tree, "/config.toml", f"[driver]\nroot = {q}\ndev-root = {q}\nproc-root = {q}\n")

    libs, bins = libraries_and_binaries(version)
    manifest = {
        "generator": "scripts/fake-driver",
        "script_version": script_version,
        "root": root,
        "version": version,
        "cuda_version": int(cuda),
        "majors": MAJORS,
        "gpus": [{k: g[k] for k in ("index", "minor", "uuid", "bus_id", "model", "device")} for g in gpus],
        "devices": [{"path": p, "type": "c", "major": ma, "minor": mi, "mode": "0666"} for p, ma, mi in devices],
        "proc": [f"{proc}/version", f"{proc}/params", f"{proc}/registry", "/proc/devices"]
                + [g["information"] for g in gpus],
        "libraries": libs,
        "binaries": bins,
        "firmware": firmware,
        "ipc": [SOCKET],
        "ld_cache": "/etc/ld.so.cache",
        "config": "/config.toml",
        "mig_gpus": mig_gpus,
        "mig_devices": migs,
        **extras,
    }
    write(tree, "/manifest.json", json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
