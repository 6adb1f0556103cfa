"""What the real runtime learns from the TPU itself: which VM of which slice this is, and how many devices.

libtpu and JAX read the worker number from GCE metadata at `http://$GCE_METADATA_IP` or, unset, at
`http://metadata.google.internal` (jax-ml/jax jax/_src/clusters/cloud_tpu_cluster.py get_metadata); the double reads
the same server the same way (never GCE_METADATA_HOST, which only Google's auth libraries read) and derives
the JAX device count from the accelerator type (docs/upstream/tpu.md): v6e has 1 device per chip, TPU7x has 2.
"""

import fcntl
import ipaddress
import os
import re
import socket
import struct
import time
import urllib.error
import urllib.request


class TopologyError(Exception):
    pass


_V6E_SINGLE_VM = {1: 1, 4: 4, 8: 8}
_V6E_MULTI_VM = (16, 32, 64, 128, 256)
_TPU7X = (2, 8, 16, 32, 64, 128, 256, 512)


def slice_shape(accelerator_type):
    """(VMs in the slice, JAX devices per VM) for a metadata accelerator-type such as v6e-16 or tpu7x-16."""
    kind, _, count_s = accelerator_type.rpartition("-")
    try:
        count = int(count_s)
    except ValueError:
        count = -1
    if kind == "v6e":
        if count in _V6E_SINGLE_VM:
            return 1, _V6E_SINGLE_VM[count]
        if count in _V6E_MULTI_VM:
            return count // 4, 4  # 4-chip VMs, 1 device per chip
    if kind == "tpu7x" and count in _TPU7X:
        # The suffix counts TensorCores (= JAX devices, 2 per chip); 4-chip VMs except the 1-chip shape.
        if count == 2:
            return 1, 2
        return count // 8, 8
    raise TopologyError(f"unknown accelerator type {accelerator_type!r} (expected v6e-1/4/8/16/.../256 or tpu7x-2/8/16/.../512)")


_MACHINE_TYPE = re.compile(r"^(tpu7x|ct6e)-standard-(\d+)t$")


def machine_shape(machine_type):
    """JAX devices of one VM from a GCE TPU machine type (tpu7x-standard-4t: 4 chips, 8 devices). The slice
    size is not in the name, so the caller gets None for it."""
    m = _MACHINE_TYPE.match(machine_type)
    if not m:
        raise TopologyError(f"machine type {machine_type!r} is not a TPU machine type (tpu7x-standard-Nt or ct6e-standard-Nt)")
    chips = int(m.group(2))
    return None, chips * (2 if m.group(1) == "tpu7x" else 1)


class Metadata:
    def __init__(self, host):
        self.host = host

    def get(self, path, optional=False):
        url = f"http://{self.host}/computeMetadata/v1/instance/{path}"
        last = None
        for attempt in range(5):
            req = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
            try:
                with urllib.request.urlopen(req, timeout=5) as resp:
                    return resp.read().decode("utf-8").strip()
            except urllib.error.HTTPError as err:
                if err.code == 404 and optional:
                    return None
                raise TopologyError(f"GCE metadata {url} answered HTTP {err.code}") from err
            except (OSError, urllib.error.URLError) as err:
                last = err
                time.sleep(0.2 * (attempt + 1))
        raise TopologyError(f"GCE metadata server unreachable at {url}: {last}")


def read_identity():
    # cloud_tpu_cluster.get_metadata: 'http://' + os.environ.get('GCE_METADATA_IP', 'metadata.google.internal')
    md = Metadata(os.environ.get("GCE_METADATA_IP") or "metadata.google.internal")
    worker_s = md.get("attributes/agent-worker-number")
    try:
        worker_id = int(worker_s)
    except ValueError:
        raise TopologyError(f"metadata attributes/agent-worker-number is {worker_s!r}, not an integer") from None
    # TPU API VMs carry attributes/accelerator-type; TPU7x VMs are plain GCE VMs with only a machine type.
    accelerator_type = md.get("attributes/accelerator-type", optional=True)
    if accelerator_type:
        vms, devices = slice_shape(accelerator_type)
    else:
        machine_path = md.get("machine-type", optional=True)
        if not machine_path:
            raise TopologyError("metadata has neither attributes/accelerator-type nor a machine-type: not a TPU VM")
        accelerator_type = machine_path.rsplit("/", 1)[-1]
        vms, devices = machine_shape(accelerator_type)
    internal_ip = md.get("network-interfaces/0/ip")
    external_ip = md.get("network-interfaces/0/access-configs/0/external-ip", optional=True) or None
    zone_path = md.get("zone", optional=True)
    zone = zone_path.rsplit("/", 1)[-1] if zone_path else None
    slice_id = md.get("attributes/slice-id", optional=True) or None
    if slice_id is None:
        # Cloud TPU VMs are named t1v-n-<node id>-w-<worker>: the prefix names the slice (TPU node), so two
        # separate slices of the same type in one zone stay apart.
        name = md.get("name", optional=True) or ""
        m = re.match(r"^(t1v-n-[0-9a-f]+)-w-\d+$", name)
        if m:
            slice_id = f"{m.group(1)}@{zone}" if zone else m.group(1)
        else:
            slice_id = f"{accelerator_type}@{zone}" if zone else accelerator_type
    return {
        "worker_id": worker_id,
        "accelerator_type": accelerator_type,
        "internal_ip": internal_ip,
        "external_ip": external_ip,
        "zone": zone,
        "slice_id": slice_id,
        "slice_vms": vms,
        "devices": devices,
        "hostname": socket.gethostname(),
        "pid": os.getpid(),
    }


def local_ipv4_networks():
    """(interface, IPv4Interface) for each interface's primary IPv4 address (SIOCGIFADDR/SIOCGIFNETMASK)."""
    out = []
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _, name in socket.if_nameindex():
            req = struct.pack("256s", name.encode()[:15])
            try:
                addr = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x8915, req)[20:24])
                mask = socket.inet_ntoa(fcntl.ioctl(sock.fileno(), 0x891B, req)[20:24])
            except OSError:
                continue
            out.append((name, ipaddress.IPv4Interface(f"{addr}/{mask}")))
    finally:
        sock.close()
    return out


def network_of(ip):
    """The local network (interface, IPv4Network) that holds ip, or None."""
    try:
        addr = ipaddress.IPv4Address(ip)
    except ValueError:
        return None
    for name, iface in local_ipv4_networks():
        if addr in iface.network:
            return name, iface.network
    return None


def is_ipv4(text):
    try:
        ipaddress.IPv4Address(text)
        return True
    except ValueError:
        return False


def _who(info):
    return f"rank {info['rank']} ({info['internal_ip']}, worker {info['worker_id']} of {info['slice_id']})"


def slices_of(world):
    """slice id -> ranks, in rank order."""
    slices = {}
    for r in sorted(world):
        slices.setdefault(world[r]["slice_id"], []).append(r)
    return slices


def mesh_exception(world, tp_size, dp_size):
    """The exception a rank's Scheduler raises building its mesh when the ranks span several slices.

    Without Megascale (the MEGASCALE_* environment of a multislice job) each JAX process sees only the devices
    of its own slice, and sglang-jax builds its mesh over jax.devices() with dcn_parallelism [1, 1]
    (sgl-project/sglang-jax sgl_jax/srt/utils/mesh_utils.py create_device_mesh -> jax-ml/jax
    jax/_src/mesh_utils.py create_device_mesh, which
    raises this ValueError when the device count is not the product of the mesh shape)."""
    slices = slices_of(world)
    if len(slices) <= 1:
        return None
    own = sum(world[r]["devices"] for r in slices[world[0]["slice_id"]]) if 0 in world else 0
    dp = dp_size if dp_size > 0 else 1
    return f"ValueError: Number of devices {own} must equal the product of mesh_shape [{dp}, {tp_size // dp}]"


def validate_world(world, tp_size, dp_size):
    """Problems with the whole job, given every rank's info; [] when JAX would build its mesh."""
    problems = []
    ranks = sorted(world)
    slices = slices_of(world)
    if len(slices) > 1:
        # The slice of each host comes from the cloud (metadata instance name t1v-n-<node>-w-<worker>, or
        # slice-id / machine type and zone), never from the launcher's arguments.
        listing = "; ".join(
            f"{sid}: ranks {members} ({world[members[0]]['accelerator_type']}, "
            f"{sum(world[r]['devices'] for r in members)} devices)"
            for sid, members in slices.items()
        )
        return [
            f"the ranks span {len(slices)} TPU slices [{listing}]: without Megascale (multislice) JAX sees only "
            f"the devices of its own slice, so --tp-size {tp_size} cannot be one mesh; one job must run on one slice"
        ]
    total = sum(world[r]["devices"] for r in ranks)
    if tp_size != total:
        per_host = ", ".join(f"rank {r}: {world[r]['devices']} ({world[r]['accelerator_type']})" for r in ranks)
        problems.append(
            f"--tp-size {tp_size} != global JAX device count {total} over {len(ranks)} host(s) [{per_host}]: "
            "--tp-size must equal the devices of all hosts"
        )
    elif dp_size <= 0 or tp_size % dp_size != 0:
        problems.append(f"mesh [dp_size={dp_size}, tp_size // dp_size] does not cover {tp_size} devices: --tp-size must be divisible by --dp-size")
    for slice_id, members in slices.items():
        types = {world[r]["accelerator_type"] for r in members}
        if len(types) > 1:
            problems.append(f"slice {slice_id} reports several accelerator types {sorted(types)}")
        # None: a GCE TPU VM that does not know its slice size; then the workers must at least be 0..k-1.
        vms = world[members[0]]["slice_vms"] or len(members)
        workers = {}
        for r in members:
            workers.setdefault(world[r]["worker_id"], []).append(r)
        for w, rs in sorted(workers.items()):
            if len(rs) > 1:
                problems.append(f"ranks {rs} all run on TPU worker {w} of slice {slice_id}: one rank per VM")
        missing = sorted(set(range(vms)) - set(workers))
        if missing or len(members) != vms:
            size = f"has {vms} VMs" if world[members[0]]["slice_vms"] else "needs workers 0..k-1"
            problems.append(
                f"slice {slice_id} ({world[members[0]]['accelerator_type']}) {size} but ranks {members} "
                f"(workers {sorted(workers)}) joined; missing workers {missing}: --nnodes must cover whole slices"
            )
    # rank = slice offset + TPU worker number, slices in the order of their lowest rank.
    offset = 0
    for slice_id, members in sorted(slices.items(), key=lambda kv: min(kv[1])):
        for r in members:
            expected = offset + world[r]["worker_id"]
            if r != expected:
                problems.append(
                    f"{_who(world[r])} should be --node-rank {expected} (slice offset {offset} + worker "
                    f"{world[r]['worker_id']}): ranks of a slice must follow TPU worker order"
                )
        offset += world[members[0]]["slice_vms"] or len(members)
    return problems
