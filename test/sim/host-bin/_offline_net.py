# Shared by the offline curl and wget of the simulated TPU VMs (not a command itself).
# The hosts have no Internet: names other than astral.sh's uv installer do not resolve. Addresses that
# exist in the sim (IP literals such as the metadata server or another host, localhost) are passed to
# the real tool, and so are metadata.google.internal / metadata / 169.254.169.254: the host's /etc/hosts
# names 169.254.169.254, which the host DNATs to the metadata emulator (hosts.ts), as a GCE VM reaches it
# whatever GCE_METADATA_HOST says.
import ipaddress
import os
import sys
from urllib.parse import urlsplit

HERE = os.path.dirname(os.path.realpath(__file__))
INSTALLERS = {("astral.sh", "/uv/install.sh")}
METADATA_NAMES = {"metadata.google.internal", "metadata", "169.254.169.254"}


def classify(url):
    """'real', 'installer' or 'unresolvable'; plus the host name."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    host = (parts.hostname or "").lower()
    if host == "localhost" or host in METADATA_NAMES or is_ip(host):
        return "real", host
    path = parts.path
    if host == "astral.sh" and (path == "/uv/install.sh" or (path.startswith("/uv/") and path.endswith("/install.sh"))):
        return "installer", host
    return "unresolvable", host


def is_ip(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def installer_text():
    with open(os.path.join(HERE, "install-uv.sh"), encoding="utf-8") as f:
        return f.read()


def write_output(text, path):
    if path in (None, "-"):
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
