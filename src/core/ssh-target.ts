// Where and as whom to open an SSH connection, and which host key the host must offer: what SkyPilot's SSH
// config (or a deployment's state) says about one host. Pure data, shared by rank assignment and the SSH adapter.
import type { HostKeyPolicy } from "./host-keys.js";

export interface SshEndpoint {
  alias: string;
  hostName: string;
  port: number;
  user: string;
  identityFile: string; // already tilde-expanded (expandTilde in core/ssh-config)
  /** SkyPilot's ProxyCommand for this host (gcp.ssh_proxy_command, Docker images), %-tokens unexpanded. */
  proxyCommand?: string | undefined;
}

export interface SshTarget extends SshEndpoint {
  /** Checked in the handshake, before the key is offered to the host or anything is sent. */
  hostKeys: HostKeyPolicy;
}
